"""What the benchmarks read about the server's processes from /proc (Linux).

The server runs as its own process group (``issuer serve`` and its workers);
these helpers find its processes by group id, read their CPU time and resident
memory, and sample the memory in a background thread during a measured run.
Elsewhere than Linux they find nothing (empty results), and the benchmarks
print no memory line.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu(pgid: int) -> dict[int, float]:
    """User + system CPU seconds of each live process of process group ``pgid``
    (Linux /proc; empty elsewhere)."""
    seconds: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # After "pid (comm)": state, ppid, pgrp, ... utime (14th), stime (15th).
        if int(fields[2]) == pgid:
            seconds[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return seconds


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    return sorted(group_cpu(pgid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (``VmRSS``), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class RssSeries:
    """One process's resident memory, sampled over a run."""

    pid: int
    samples: list[float] = field(default_factory=list)

    @property
    def first(self) -> float:
        return self.samples[0]

    @property
    def last(self) -> float:
        return self.samples[-1]

    @property
    def peak(self) -> float:
        return max(self.samples)

    @property
    def drift_percent(self) -> float:
        """Last over first, in percent: growth during the run."""
        return (self.last / self.first - 1) * 100 if self.first else 0.0


class RssSampler:
    """``with RssSampler(pgid, every=10) as sampler: ...``: samples the RSS of every
    process of the group at the start, every ``every`` seconds, and at the end."""

    def __init__(self, pgid: int, every: float) -> None:
        self._pgid = pgid
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self.series: dict[int, RssSeries] = {}

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def _sample(self) -> None:
        for pid in group_pids(self._pgid):
            value = rss_mb(pid)
            if value is not None:
                self.series.setdefault(pid, RssSeries(pid)).samples.append(value)
