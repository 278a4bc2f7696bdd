"""Cost of SQLite's change-stamp check (``issuer.changes``), per token request.

Not a test: CI does not run it. Without Redis, a process on SQLite learns of client
and tenant changes by reading the one-row ``change_stamp`` every ``STAMP_POLL``
seconds in a background task; the token path itself reads nothing. One run:

1. a migrated throwaway SQLite store in a temp dir, opened as ``issuer serve`` opens it;
2. ``--rounds`` rounds of ``--reads`` stamp reads exactly as the poller makes them
   (``StampReader``: an aiosqlite connection of its own, one round trip to its
   thread), and as many of the same SELECT through the engine's pool for comparison,
   one at a time on one event loop: wall time and process CPU time (every thread
   included);
3. one greppable line: the medians per read, the poller's CPU per second, and that
   CPU spread over the token requests of a second at ``--tokens-per-second``.

Run: ``.venv/bin/python bench/change_stamp.py [--reads 2000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import select

from issuer.changes import STAMP_POLL
from issuer.store.change_stamp import StampReader
from issuer.store.db import create_engine
from issuer.store.migrate import upgrade
from issuer.store.models import ChangeStamp


async def _timed(read: Callable[[], Awaitable[object]], reads: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(reads):
        await read()
    return (time.perf_counter() - wall) / reads * 1e6, (time.process_time() - cpu) / reads * 1e6


async def measure(path: Path, reads: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) microseconds per stamp read: the poller's reader, and for
    comparison the same SELECT through the engine's pool."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    reader = StampReader(str(path))
    try:
        await upgrade(engine)
        statement = select(ChangeStamp.version).where(ChangeStamp.id == 1)

        async def pooled() -> object:
            async with engine.connect() as connection:
                return (await connection.execute(statement)).scalar()

        samples: dict[str, list[tuple[float, float]]] = {"reader": [], "pooled": []}
        for _ in range(rounds):  # interleaved, so that neither always runs first
            samples["reader"].append(await _timed(reader.read, reads))
            samples["pooled"].append(await _timed(pooled, reads))
        return {name: (statistics.median(w for w, _ in values),
                       statistics.median(c for _, c in values))
                for name, values in samples.items()}
    finally:
        await reader.close()
        await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens-per-second", type=float, default=500.0,
                        help="a worker's token rate to spread the poller's cost over")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        figures = asyncio.run(measure(Path(directory) / "issuer.db", args.reads, args.rounds))
    (wall_us, cpu_us), (pooled_wall_us, pooled_cpu_us) = figures["reader"], figures["pooled"]
    per_second = cpu_us / STAMP_POLL
    print(f"bench=change_stamp python={platform.python_version()} reads={args.reads} "
          f"rounds={args.rounds} read_wall_us={wall_us:.1f} read_cpu_us={cpu_us:.1f} "
          f"pooled_read_wall_us={pooled_wall_us:.1f} pooled_read_cpu_us={pooled_cpu_us:.1f} "
          f"poll_every_s={STAMP_POLL} poller_cpu_us_per_s={per_second:.0f} "
          f"tokens_per_s={args.tokens_per_second:g} "
          f"cpu_us_per_token={per_second / args.tokens_per_second:.2f} token_path_reads=0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
