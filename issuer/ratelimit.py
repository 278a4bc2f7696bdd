"""Rate limiting: one ``RateLimiter`` protocol, an in-process sliding-window backend.

Handlers ask ``await limiter.hit(key, rate)`` and get a :class:`Decision` they can
render as ``429 Too Many Requests`` (RFC 6585 §4) with ``Retry-After`` (RFC 9110
§10.2.3) and the ``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset``
fields of draft-ietf-httpapi-ratelimit-headers. A refused hit costs nothing: a
caller that keeps knocking is not locked out for longer.

:class:`MemoryRateLimiter` is a sliding-window log: it keeps the times of the
last ``limit`` hits per key, so "10/hour" means at most 10 in *any* 60 minutes
(a GCRA with a burst of 10 would allow up to 19 in the first hour). Its state
lives in one process; the Redis backend of the rate-limiting work replaces it
behind the same protocol where several processes share a budget (DESIGN §8).
Time comes from the injected :class:`~issuer.clock.Clock`, so tests move a fake
clock instead of sleeping.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from issuer.clock import Clock

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(
    r"^\s*(?P<limit>\d+)\s*(?:/|\s+per\s+)\s*(?P<count>\d+)?\s*"
    r"(?P<unit>second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    """``limit`` hits per ``period`` seconds, e.g. ``Rate.parse("10/hour")``."""

    limit: int
    period: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period < 1:
            raise ValueError("a rate needs a limit and a period of at least 1")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"10/hour"``, ``"1200/minute"``, ``"5 per second"``, ``"100/2 hours"``."""
        match = _RATE.match(text)
        if match is None:
            raise ValueError(f"a rate looks like '10/hour' or '1200/minute', got {text!r}")
        count = int(match["count"]) if match["count"] else 1
        return cls(limit=int(match["limit"]), period=count * _UNITS[match["unit"].lower()])

    def __str__(self) -> str:
        for unit, seconds in reversed(_UNITS.items()):
            if self.period % seconds == 0:
                count = self.period // seconds
                return f"{self.limit}/{unit}" if count == 1 else f"{self.limit}/{count} {unit}s"
        raise AssertionError("unreachable: every period is a whole number of seconds")


@dataclass(frozen=True)
class Decision:
    """The answer to one hit. Times are seconds from now."""

    allowed: bool
    limit: int
    remaining: int  # hits still allowed in the current window, after this one
    reset_after: float  # until one more hit becomes available (0 with nothing counted)
    retry_after: float  # until a refused caller may try again; 0 when allowed

    def headers(self) -> dict[str, str]:
        """RateLimit-* fields, plus ``Retry-After`` on a refusal (whole seconds, >= 1)."""
        headers = {"RateLimit-Limit": str(self.limit),
                   "RateLimit-Remaining": str(self.remaining),
                   "RateLimit-Reset": str(math.ceil(self.reset_after))}
        if not self.allowed:
            # RFC 9110 §10.2.3: delay-seconds is a non-negative integer; round
            # up so that a caller who waits exactly that long is let in.
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: Rate) -> Decision:
        """Count one hit on ``key`` if ``limit`` allows it; say whether it did."""
        ...


class MemoryRateLimiter:
    """Sliding-window log in this process's memory (single process only).

    ``hit`` never awaits, so on one event loop it is atomic without a lock.
    Memory is bounded by ``limit`` timestamps per live key; keys whose window
    has emptied are dropped by a sweep every ``sweep_every`` hits.
    """

    def __init__(self, clock: Clock, *, sweep_every: int = 4096) -> None:
        self._clock = clock
        self._sweep_every = sweep_every
        self._hits_since_sweep = 0
        self._windows: dict[str, tuple[Rate, deque[float]]] = {}

    def __len__(self) -> int:
        """How many keys are tracked (for tests and metrics)."""
        return len(self._windows)

    async def hit(self, key: str, limit: Rate) -> Decision:
        now = self._clock.now()
        self._hits_since_sweep += 1
        if self._hits_since_sweep >= self._sweep_every:
            self._sweep(now)
        entry = self._windows.get(key)
        if entry is None or entry[0] != limit:
            # New key, or its policy changed: start a fresh window under the new rate.
            kept = entry[1] if entry is not None else ()
            entry = (limit, deque(kept, maxlen=limit.limit))
            self._windows[key] = entry
        stamps = entry[1]
        cutoff = now - limit.period
        while stamps and stamps[0] <= cutoff:
            stamps.popleft()
        if len(stamps) >= limit.limit:
            wait = stamps[0] + limit.period - now
            return Decision(allowed=False, limit=limit.limit, remaining=0,
                            reset_after=wait, retry_after=wait)
        stamps.append(now)
        return Decision(allowed=True, limit=limit.limit, remaining=limit.limit - len(stamps),
                        reset_after=stamps[0] + limit.period - now, retry_after=0.0)

    def _sweep(self, now: float) -> None:
        self._hits_since_sweep = 0
        stale = [key for key, (rate, stamps) in self._windows.items()
                 if not stamps or stamps[-1] <= now - rate.period]
        for key in stale:
            del self._windows[key]
