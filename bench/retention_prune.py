"""Retention pruning on a large PostgreSQL store, with token traffic running.

Not a test: CI does not run it. One run, on one machine:

1. a throwaway PostgreSQL database, ``issuer migrate``, one tenant and client;
   ``--rows`` token records and audit events (``bench/preload.py``), of which
   ``--expired-share`` lie past retention;
2. ``issuer serve --workers N`` and ``wrk`` (``POST /token``, c=``--connections``)
   for ``--duration`` seconds: latency without pruning;
3. the same load again, in slices of ``--slice`` seconds, while ``--pruners``
   concurrent calls of ``issuer.retention.prune`` (the code the issuer's workers
   run every ten minutes, one per worker) make one pass; meanwhile every 100 ms
   the locks held by the pruners' backends (``pg_locks``), their open
   transaction's age, and any backend of the database waiting for a lock;
4. one ``key=value`` line per phase and a check that exactly the rows past
   retention went.

Run: ``.venv/bin/python bench/retention_prune.py --rows 5000000 --expired-share 0.2``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
import preload
import token_endpoint as bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="the server on which a throwaway database is made")
    parser.add_argument("--rows", type=int, default=200_000,
                        help="rows seeded into each of issued_tokens and audit_events")
    parser.add_argument("--expired-share", type=float, default=0.2,
                        help="fraction of the rows past retention (default 0.2)")
    parser.add_argument("--workers", type=int, default=2, help="issuer serve --workers")
    parser.add_argument("--pruners", type=int, default=None,
                        help="concurrent pruning passes (default: --workers, as the issuer "
                        "runs one per worker process)")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of load without pruning (default 20)")
    parser.add_argument("--slice", type=float, default=5.0,
                        help="seconds of each wrk run while pruning (default 5)")
    parser.add_argument("--batch", type=int, default=None,
                        help="rows per batch (default: issuer.retention's)")
    parser.add_argument("--pause", type=float, default=None,
                        help="seconds between batches (default: issuer.retention.PAUSE)")
    parser.add_argument("--prune-from", metavar="FILE", default=None,
                        help="time the prune() of this file instead of issuer.retention's, "
                        "e.g. an earlier version: git show main:issuer/retention.py > FILE")
    parser.add_argument("--no-load", action="store_true",
                        help="prune with no token traffic (and no server)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and database")
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    issuer = bench._issuer_executable()
    if (wrk is None and not args.no_load) or issuer is None:
        print("retention_prune.py: needs `wrk` and the `issuer` command (see "
              "bench/README.md)", file=sys.stderr)
        return 3
    signal.signal(signal.SIGTERM, bench._terminate)
    try:
        return _run(args, wrk or "", issuer)
    except bench.BenchError as error:
        print(f"retention_prune.py: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, wrk: str, issuer: str) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="issuer-prune-"))
    pg_admin: tuple[str, str] | None = None
    server: subprocess.Popen[bytes] | None = None
    try:
        pg_admin, database_url = bench._create_pg_database(args.postgres)
        dsn = bench._asyncpg_dsn(database_url)
        port = bench._free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {
            **{name: value for name, value in os.environ.items()
               if not name.startswith(("ISSUER_", "ENCRYPTION_"))},
            "ISSUER_URL": base_url, "ISSUER_DATABASE_URL": database_url,
            "ENCRYPTION_MASTER_KEY": os.urandom(32).hex(),
            "ISSUER_RATE_LIMIT": "1000000000/minute", "PYTHONUNBUFFERED": "1",
        }
        bench._cli(issuer, ["migrate"], env, workdir)
        bench._cli(issuer, ["tenants", "create", "bench"], env, workdir)
        client = json.loads(bench._cli(issuer, ["clients", "create", "--tenant", "bench",
                                                "--scope", bench.SCOPE, "--json"],
                                       env, workdir))
        authorization = "Basic " + base64.b64encode(
            f"{quote(client['client_id'], safe='')}:{quote(client['client_secret'], safe='')}"
            .encode()).decode()
        script = workdir / "token.lua"
        script.write_text(bench.WRK_SCRIPT % {"body": bench.BODY,
                                              "authorization": authorization})
        seeded = asyncio.run(preload.preload(dsn, args.rows, expired_share=args.expired_share))
        print(preload.describe(seeded), flush=True)
        pruners = args.pruners or args.workers
        from issuer import retention

        default_batch = "default" if args.prune_from else retention.BATCH
        default_pause = "default" if args.prune_from else f"{retention.PAUSE:g}s"
        print(f"bench=retention_prune prune_from={args.prune_from or 'issuer.retention'} "
              f"rows={args.rows} expired_share={args.expired_share:g} "
              f"batch={args.batch or default_batch} "
              f"pause={default_pause if args.pause is None else f'{args.pause:g}s'} "
              f"workers={args.workers} pruners={pruners} c={args.connections} "
              f"cpus={os.cpu_count()} load={'none' if args.no_load else 'wrk'}", flush=True)

        if not args.no_load:
            log_path = workdir / "server.log"
            with log_path.open("ab") as log:
                server = subprocess.Popen(
                    [issuer, "serve", "--host", "127.0.0.1", "--port", str(port),
                     "--workers", str(args.workers), "--log-level", "warning"],
                    env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            bench._wait_healthy(base_url, server, log_path, deadline_s=120.0)
            bench._wrk(wrk, script, base_url, args.connections, 1, 3)  # warm-up
            quiet = bench._wrk(wrk, script, base_url, args.connections, 1, args.duration)
            print(_load_line("without_prune", [quiet]), flush=True)

        before = asyncio.run(_counts(dsn))
        load = _SlicedLoad(wrk, script, base_url, args.connections, args.slice)
        if not args.no_load:
            load.start()
        try:
            report = asyncio.run(_prune_watched(database_url, dsn, pruners, args.batch,
                                                args.pause, args.prune_from))
        finally:
            load.stop()
        if not args.no_load:
            print(_load_line("during_prune", load.results), flush=True)
        after = asyncio.run(_counts(dsn))
        print(report.line(), flush=True)
        for line in report.lock_lines():
            print(line, flush=True)
        exact = (report.tokens == before.expired_tokens and after.expired_tokens == 0
                 and report.events == before.expired_events and after.expired_events == 0
                 and after.kept_tokens >= before.kept_tokens
                 and after.kept_events >= before.kept_events)
        print(f"check expired_tokens_before={before.expired_tokens} pruned_tokens="
              f"{report.tokens} expired_events_before={before.expired_events} "
              f"pruned_events={report.events} kept_tokens={before.kept_tokens}->"
              f"{after.kept_tokens} kept_events={before.kept_events}->{after.kept_events} "
              f"left_expired={after.expired_tokens + after.expired_events} "
              f"exact={'yes' if exact else 'NO'}", flush=True)
        print(await_sizes(dsn), flush=True)
        return 0 if exact else 1
    finally:
        if server is not None:
            bench._stop(server)
        if pg_admin is not None and not args.keep:
            with contextlib.suppress(Exception):
                bench._drop_pg_database(*pg_admin)
        if args.keep:
            print(f"# kept {workdir} and database {pg_admin[1] if pg_admin else '-'}",
                  file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# Load ------------------------------------------------------------------------------------


class _SlicedLoad:
    """wrk runs of ``slice`` seconds, one after the other, until stopped (the last
    one finishes its slice)."""

    def __init__(self, wrk: str, script: Path, base_url: str, connections: int,
                 slice_s: float) -> None:
        self._args = (wrk, script, base_url, connections, 1, slice_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.results: list[bench.LoadResult] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.results.append(bench._wrk(*self._args))
            except bench.BenchError as error:
                print(f"# load stopped: {error}", file=sys.stderr, flush=True)
                return


def _load_line(phase: str, results: list[bench.LoadResult]) -> str:
    if not results:
        return f"{phase} no load ran"
    requests = sum(result.requests for result in results)
    ok = sum(result.ok for result in results)
    seconds = sum(result.duration_s for result in results)
    return (f"{phase} runs={len(results)} seconds={seconds:.0f} tokens/s={ok / seconds:.1f} "
            f"p50={max(result.p50_ms for result in results):.1f}ms "
            f"p99={max(result.p99_ms for result in results):.1f}ms "
            f"max={max(result.max_ms for result in results):.1f}ms "
            f"errors={sum(result.errors for result in results)} requests={requests} "
            "(p50/p99: the worst wrk run's)")


# Pruning, watched ------------------------------------------------------------------------

PRUNER = "retention-bench-pruner"


@dataclass
class _Counts:
    expired_tokens: int
    kept_tokens: int
    expired_events: int
    kept_events: int


async def _counts(dsn: str) -> _Counts:
    import asyncpg  # type: ignore[import-untyped]

    from issuer.retention import TOKEN_RECORD_GRACE

    now = datetime.now(UTC).timestamp()
    token_cut = datetime.fromtimestamp(now - TOKEN_RECORD_GRACE, UTC)
    event_cut = datetime.fromtimestamp(now - preload.AUDIT_RETENTION_DAYS * 86400, UTC)
    connection = await asyncpg.connect(dsn)
    try:
        tokens = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE expires_at <= $1) AS expired, "
            "count(*) FILTER (WHERE expires_at > $1) AS kept FROM issued_tokens", token_cut)
        events = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE at <= $1) AS expired, "
            "count(*) FILTER (WHERE at > $1) AS kept FROM audit_events", event_cut)
    finally:
        await connection.close()
    return _Counts(tokens["expired"], tokens["kept"], events["expired"], events["kept"])


@dataclass
class _Report:
    seconds: float = 0.0
    tokens: int = 0
    events: int = 0
    samples: int = 0
    longest_xact_s: float = 0.0
    locks: dict[str, int] = field(default_factory=dict)  # "mode on relation" -> samples
    waiting: dict[str, int] = field(default_factory=dict)  # "wait on what" -> samples
    pruner_waiting: int = 0
    batch_s: list[float] = field(default_factory=list)  # each batch's time, sorted

    def line(self) -> str:
        rate = (self.tokens + self.events) / self.seconds if self.seconds else 0.0
        batches = self.batch_s
        p99 = batches[min(len(batches) - 1, len(batches) * 99 // 100)] if batches else 0.0
        timed = (f"batches={len(batches)} "
                 f"batch_p50={batches[len(batches) // 2] * 1000:.0f}ms "
                 f"batch_p99={p99 * 1000:.0f}ms "
                 f"batch_max={batches[-1] * 1000:.0f}ms " if batches else "batches=untimed ")
        return (f"prune seconds={self.seconds:.1f} tokens={self.tokens} events={self.events} "
                f"rows/s={rate:.0f} {timed}"
                f"longest_transaction={self.longest_xact_s * 1000:.0f}ms "
                f"lock_samples={self.samples} samples_other_backends_waiting="
                f"{sum(self.waiting.values())} samples_pruners_waiting={self.pruner_waiting}")

    def lock_lines(self) -> list[str]:
        lines = [f"#   pruner holds {what} in {count}/{self.samples} samples"
                 for what, count in sorted(self.locks.items(), key=lambda item: -item[1])]
        lines += [f"#   a backend waited for {what} in {count}/{self.samples} samples"
                  for what, count in sorted(self.waiting.items(), key=lambda item: -item[1])]
        return lines


def _prune_function(path: str | None) -> Callable[..., Awaitable[Any]]:
    """``issuer.retention.prune``, or the ``prune`` of the file at ``path`` (another
    version of the module, to compare with)."""
    if path is None:
        from issuer import retention

        return retention.prune
    spec = importlib.util.spec_from_file_location("retention_under_test", path)
    if spec is None or spec.loader is None:
        raise bench.BenchError(f"--prune-from: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    function: Callable[..., Awaitable[Any]] = module.prune
    return function


async def _prune_watched(database_url: str, dsn: str, pruners: int, batch: int | None,
                         pause: float | None, prune_from: str | None) -> _Report:
    """``pruners`` concurrent passes of the issuer's own pruning, each on its own
    engine (as each worker process has its own); a watcher samples pg_locks."""
    import asyncpg

    from issuer.clock import SystemClock
    from issuer.store.db import create_engine

    prune = _prune_function(prune_from)
    accepted = inspect.signature(prune).parameters
    # The pruners' backends are known by their application_name.
    engines = [create_engine(database_url, connect_args={
        "server_settings": {"application_name": PRUNER}}) for _ in range(pruners)]
    report = _Report()
    watcher = await asyncpg.connect(dsn)
    # Per pruner: its start, the moments each pause began and ended, its end; the
    # batches are the stretches between a pause's end and the next one's start.
    marks: list[list[float]] = [[] for _ in engines]

    async def watched(index: int, engine: Any) -> Any:
        async def pause_recorded(seconds: float) -> None:
            marks[index].append(time.perf_counter())
            await asyncio.sleep(seconds)
            marks[index].append(time.perf_counter())

        options: dict[str, Any] = {"audit_retention_days": preload.AUDIT_RETENTION_DAYS}
        for name, value in (("batch", batch), ("pause", pause), ("sleep", pause_recorded)):
            if name in accepted and value is not None:
                options[name] = value
        marks[index].append(time.perf_counter())
        try:
            return await prune(engine, SystemClock(), **options)
        finally:
            marks[index].append(time.perf_counter())

    try:
        start = time.perf_counter()
        tasks = [asyncio.create_task(watched(index, engine))
                 for index, engine in enumerate(engines)]
        while not all(task.done() for task in tasks):
            await _sample(watcher, report)
            await asyncio.sleep(0.1)
        report.seconds = time.perf_counter() - start
        for task in tasks:
            pruned = task.result()
            report.tokens += pruned.tokens
            report.events += pruned.audit_events
        if "sleep" in accepted:  # else the pass's batches cannot be told apart
            report.batch_s = sorted(
                end - begin for pruner in marks
                for begin, end in zip(pruner[::2], pruner[1::2], strict=True))
    finally:
        await watcher.close()
        for engine in engines:
            await engine.dispose()
    return report


async def _sample(watcher: object, report: _Report) -> None:
    rows = await watcher.fetch(  # type: ignore[attr-defined]
        "SELECT a.pid, a.application_name, a.state, "
        "extract(epoch FROM now() - a.xact_start) AS xact_age, "
        "a.wait_event_type, a.wait_event, l.mode, l.granted, l.locktype, "
        "c.relname, c.relkind::text AS relkind "
        "FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid "
        "LEFT JOIN pg_class c ON c.oid = l.relation "
        "WHERE a.datname = current_database() AND a.backend_type = 'client backend'")
    report.samples += 1
    held: set[str] = set()
    waits: set[str] = set()
    pruner_waiting = False
    for row in rows:
        pruner = row["application_name"] == PRUNER
        if pruner and row["xact_age"] is not None:
            report.longest_xact_s = max(report.longest_xact_s, float(row["xact_age"]))
        if pruner and row["mode"] and row["granted"] and row["locktype"] == "relation" \
                and row["relkind"] == "r" and not row["relname"].startswith("pg_"):
            held.add(f"{row['mode']} on {row['relname']} (and its indexes)")
        if row["wait_event_type"] == "Lock":
            if pruner:
                pruner_waiting = True
            else:
                waits.add(f"{row['wait_event']}")
    for what in held:
        report.locks[what] = report.locks.get(what, 0) + 1
    for what in waits:
        report.waiting[what] = report.waiting.get(what, 0) + 1
    report.pruner_waiting += pruner_waiting


def await_sizes(dsn: str) -> str:
    """Table sizes and dead rows after the pass (autovacuum reclaims them later)."""
    import asyncpg

    async def run() -> str:
        connection = await asyncpg.connect(dsn)
        try:
            rows = await connection.fetch(
                "SELECT relname, n_live_tup, n_dead_tup, "
                "pg_total_relation_size(relid) / 1048576.0 AS mb FROM pg_stat_user_tables "
                "WHERE relname IN ('issued_tokens', 'audit_events') ORDER BY relname")
        finally:
            await connection.close()
        return "after " + " ".join(
            f"{row['relname']}_mb={row['mb']:.0f} {row['relname']}_dead_rows={row['n_dead_tup']}"
            for row in rows)

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
