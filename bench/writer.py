"""Benchmark of the group writer: CPU microseconds per written token, per inserter.

Not a test: CI does not run it. ``--concurrency`` tasks each write ``--tokens`` /
concurrency tokens, one after the other, through one :class:`GroupWriter`; each
token is the two rows POST /token writes (its record in ``issued_tokens`` and its
``M2M_TOKEN_GENERATED`` event), so batches are about ``--concurrency`` writes, as
with that many connections to the server. Per store and inserter, it measures
this process's CPU time (user + system, every thread: ``/proc`` via
``time.process_time``) and subtracts a ``null`` inserter's (one that stores
nothing: the queue, futures and rows cost the same everywhere), run in the same
rounds. The inserters run in alternating order over ``--rounds`` (medians
reported) on a throwaway store:

- ``engine``: the SQLAlchemy path (Core ``insert()``, ``executemany`` per table,
  AsyncEngine; aiosqlite on SQLite) -- the writer before its own connections;
- ``raw``: :func:`issuer.store.writer.inserter_for` (one unnest statement per
  batch on an own asyncpg connection; sqlite3 on a thread of its own);
- ``executemany`` (PostgreSQL): the own asyncpg connection, one prepared
  ``executemany`` per table inside BEGIN/COMMIT.

The PostgreSQL server's own CPU is not counted (another process).

``--stalls SECONDS`` measures instead how long a write waits for its commit on
SQLite, the ``engine`` and ``raw`` writers side by side *at the same time*
(each on a store of its own, ``--concurrency`` writers each, every writer
pausing ``--pause`` seconds between two writes): a disk that other processes
keep busy slows both alike, so the comparison holds on a shared machine where
two runs one after the other would not.

Run: ``.venv/bin/python bench/writer.py [--postgres postgresql://postgres@127.0.0.1/postgres]``
or ``.venv/bin/python bench/writer.py --stalls 120``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.audit import AuditEvent, audit_row
from issuer.store.db import create_engine
from issuer.store.migrate import upgrade
from issuer.store.models import AuditEventRow, IssuedToken
from issuer.store.pg_inserter import PostgresInserter
from issuer.store.rowcodec import Rows
from issuer.store.writer import EngineInserter, GroupWriter, Inserter, inserter_for

TOKENS = cast(Table, IssuedToken.__table__)
AUDIT = cast(Table, AuditEventRow.__table__)


class NullInserter:
    """Stores nothing: what the writer costs around the insert."""

    async def insert(self, writes: list[Rows]) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        return None


def token_rows(n: int) -> Rows:
    """What POST /token writes for one token (issuer.oauth.endpoints.granted_rows)."""
    now = datetime.now(UTC)
    jti = uuid.uuid4().hex
    client_id, tenant_id = "bench-client-0123456789", str(uuid.UUID(int=1))
    token: dict[str, Any] = {
        "jti": jti, "client_id": client_id, "tenant_id": tenant_id, "scope": "orders:read",
        "audience": ["https://api.example.com"],
        "kid": "kid-2026-01-01", "issued_at": now, "expires_at": now + timedelta(hours=1),
        "revoked_at": None}
    event = audit_row(
        AuditEvent.M2M_TOKEN_GENERATED, at=now.timestamp(), actor=client_id,
        tenant_id=tenant_id, client_id=client_id, source="127.0.0.1",
        request_id=uuid.uuid4().hex,
        details={"client_id": client_id, "tenant_id": tenant_id,
                 "scopes": ["orders:read"], "audience": ["https://api.example.com"],
                 "jti": jti, "kid": token["kid"],
                 "expiresAt": token["expires_at"].isoformat(), "secret_used": "current"})
    return [(TOKENS, token), (AUDIT, event)]


async def measure(engine: AsyncEngine, make: Callable[[AsyncEngine], Inserter], tokens: int,
                  concurrency: int) -> tuple[float, float]:
    """CPU seconds and wall seconds for ``tokens`` written."""
    writer = GroupWriter(engine, inserter=make(engine), max_pending=max(4096, 2 * concurrency))
    await writer.start()
    share = tokens // concurrency
    rows = [[token_rows(n) for n in range(share)] for _ in range(concurrency)]

    async def client(mine: list[Rows]) -> None:
        for one in mine:
            await writer.write(one)

    await writer.write(token_rows(0))  # connect, prepare: not measured
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(mine) for mine in rows))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await writer.close()
    return cpu, wall


async def run_store(name: str, url: str, modes: dict[str, Callable[[AsyncEngine], Inserter]],
                    args: argparse.Namespace) -> None:
    engine = create_engine(url, timeout=5.0)
    try:
        await upgrade(engine)
        costs: dict[str, list[float]] = {mode: [] for mode in modes}
        walls: dict[str, list[float]] = {mode: [] for mode in modes}
        order = list(modes)
        for round_ in range(args.rounds):
            turn = order[round_ % len(order):] + order[:round_ % len(order)]
            for mode in turn:
                cpu, wall = await measure(engine, modes[mode], args.tokens, args.concurrency)
                costs[mode].append(cpu / args.tokens)
                walls[mode].append(wall / args.tokens)
        null = statistics.median(costs["null"])
        writer_cost = {mode: statistics.median(costs[mode]) - null
                       for mode in modes if mode != "null"}
        print(f"bench=writer store={name} tokens={args.tokens} concurrency={args.concurrency} "
              f"rounds={args.rounds} null_cpu_us/token={null * 1e6:.1f}", flush=True)
        for mode, cost in writer_cost.items():
            print(f"store={name} inserter={mode} writer_cpu_us/token={cost * 1e6:.1f} "
                  f"total_cpu_us/token={statistics.median(costs[mode]) * 1e6:.1f} "
                  f"wall_us/token={statistics.median(walls[mode]) * 1e6:.1f} "
                  f"ratio_to_engine={cost / writer_cost['engine']:.2f}", flush=True)
    finally:
        await engine.dispose()


async def stalls(args: argparse.Namespace) -> None:
    """Per-write waits of the engine and raw writers, loaded side by side."""
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as directory:
        engines = {mode: create_engine(f"sqlite+aiosqlite:///{Path(directory) / mode}.db",
                                       timeout=30.0) for mode in ("engine", "raw")}
        waits: dict[str, list[float]] = {mode: [] for mode in engines}
        try:
            for engine in engines.values():
                await upgrade(engine)
            writers = {"engine": GroupWriter(engines["engine"],
                                             inserter=EngineInserter(engines["engine"])),
                       "raw": GroupWriter(engines["raw"])}
            for writer in writers.values():
                await writer.start()
            loop = asyncio.get_running_loop()
            end = loop.time() + args.stalls

            async def client(mode: str) -> None:
                while loop.time() < end:
                    started = loop.time()
                    await writers[mode].write(token_rows(0))
                    waits[mode].append(loop.time() - started)
                    await asyncio.sleep(args.pause)

            await asyncio.gather(*(client(mode) for mode in writers
                                   for _ in range(args.concurrency)))
            for writer in writers.values():
                await writer.close()
        finally:
            for engine in engines.values():
                await engine.dispose()
    print(f"bench=writer_stalls store=sqlite seconds={args.stalls} "
          f"concurrency={args.concurrency} pause={args.pause}", flush=True)
    for mode, measured in waits.items():
        measured.sort()
        print(f"store=sqlite inserter={mode} writes={len(measured)} "
              f"p50={statistics.median(measured) * 1e3:.1f}ms "
              f"p99={measured[int(len(measured) * 0.99)] * 1e3:.1f}ms "
              f"max={measured[-1] * 1e3:.1f}ms "
              f"over_250ms={sum(wait > 0.25 for wait in measured)}", flush=True)


async def amain(args: argparse.Namespace) -> None:
    if args.stalls:
        await stalls(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as directory:
        await run_store("sqlite", f"sqlite+aiosqlite:///{Path(directory) / 'issuer.db'}", {
            "null": lambda engine: NullInserter(),
            "engine": EngineInserter,
            "raw": inserter_for,
        }, args)
    if args.postgres:
        name = f"bench_writer_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(args.postgres)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            base = args.postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
            url = f"{base.rsplit('/', 1)[0]}/{name}"
            await run_store("postgresql", url, {
                "null": lambda engine: NullInserter(),
                "engine": EngineInserter,
                "raw": inserter_for,
                "executemany": lambda engine: PostgresInserter(engine, mode="executemany"),
            }, args)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--tokens", type=int, default=4000, help="tokens per run (default 4000)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="concurrent writers (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--postgres", metavar="URL",
                        help="also PostgreSQL: a throwaway database on this server, e.g. "
                             "postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--stalls", type=float, metavar="SECONDS",
                        help="instead: SQLite commit waits, engine and raw side by side")
    parser.add_argument("--pause", type=float, default=0.03,
                        help="--stalls: seconds each writer pauses between writes (0.03)")
    args = parser.parse_args(argv)
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
