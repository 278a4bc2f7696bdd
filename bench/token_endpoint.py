"""Benchmark of POST /token against a real ``issuer serve``.

Not a test: CI does not run it. One run, on one machine:

1. a throwaway store (SQLite file in a temp dir, or a fresh PostgreSQL database
   with ``--postgres URL``), ``issuer migrate``, one tenant, one client;
2. ``issuer serve`` on a free port of 127.0.0.1, as its own process group;
3. the raw RS256 rate of one core (``cryptography``, RSA-2048, PKCS#1 v1.5 with
   SHA-256, ~300-byte message) in a separate process while the server is idle;
4. ``wrk`` driving ``POST /token`` (client_credentials, client_secret_basic) at
   each concurrency for ``--duration`` seconds after a ``--warmup``;
5. one greppable line per concurrency, and one with the tokens each worker
   process issued (from its ``/metrics``), then everything is torn down.

``--dpop``: every request also carries a fresh RFC 9449 DPoP proof (ES256), so each
token costs the proof's signature check and its jti's replay-store write too. wrk's
Lua cannot sign, so before each wrk run ``--dpop-proofs`` proofs (unique jti, iat
now) are written to a file that each wrk thread cycles through its share of; the
server accepts proofs up to 600 s old (``ISSUER_DPOP_PROOF_MAX_AGE``). A run that
uses more proofs than were made replays them: those answers count as non-200.

Run: ``.venv/bin/python bench/token_endpoint.py [--workers 2] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

# The process-table and seeding helpers beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstats import RssSampler, cpu_seconds, group_cpu

SCOPE = "orders:read"
BODY = "grant_type=client_credentials&scope=orders%3Aread"
WRK_INSTALL_HINT = (
    "token_endpoint.py: `wrk` is not installed (or not on PATH).\n"
    "Install it with:  apt-get update && apt-get install -y wrk   (Debian/Ubuntu, as root)\n"
    "               or brew install wrk                          (macOS)"
)

# wrk runs one Lua state per thread. ``response`` counts every status other than
# 200 (wrk itself only counts socket errors and statuses >= 400); ``done`` runs in
# the main state and sums the threads' counters. One line, key=value, microseconds.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = "%(body)s"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "%(authorization)s"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non200")
  end
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%%d duration_us=%%d non200=%%d connect=%%d read=%%d write=%%d " ..
    "timeout=%%d p50_us=%%d p90_us=%%d p99_us=%%d max_us=%%d\\n",
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# ``--dpop``: appended to WRK_SCRIPT. Each thread (``id`` set by ``setup``) reads every
# ``threads``-th line of the proof file and sends the next one with each request.
WRK_DPOP_SCRIPT = """
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
  proofs = {}
  local n = 0
  for line in io.lines("%(proofs)s") do
    if n %% %(threads)d == id then
      table.insert(proofs, line)
    end
    n = n + 1
  end
  next_proof = 0
end

function request()
  next_proof = next_proof %% #proofs + 1
  wrk.headers["DPoP"] = proofs[next_proof]
  return wrk.format()
end
"""

# Runs in a child process (``--sign-rate SECONDS``): nothing else in it competes.
SIGNING_INPUT_BYTES = 300


@dataclass
class LoadResult:
    connections: int
    requests: int
    duration_s: float
    non200: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.non200

    @property
    def tokens_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return self.non200 + self.socket_errors


class BenchError(Exception):
    """A setup step failed; the message says which."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.sign_rate is not None:
        rate, cpu_us = _signing_rate(args.sign_rate)
        print(f"{rate:.1f} {cpu_us:.1f}")
        return 0
    wrk = shutil.which("wrk")
    if wrk is None:
        print(WRK_INSTALL_HINT, file=sys.stderr)
        return 3
    issuer = _issuer_executable()
    if issuer is None:
        print("token_endpoint.py: the `issuer` command was not found next to this Python "
              "or on PATH; install the project (pip install -e .) first", file=sys.stderr)
        return 3
    try:
        levels = [int(level) for level in args.connections.split(",") if level.strip()]
    except ValueError:
        print("--connections must look like 16,64", file=sys.stderr)
        return 2
    # Ctrl-C raises KeyboardInterrupt; make SIGTERM unwind too, so cleanup runs.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args, wrk, issuer, levels)
    except BenchError as error:
        print(f"token_endpoint.py: {error}", file=sys.stderr)
        return 1


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per concurrency (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unmeasured seconds of load before each level (default 2)")
    parser.add_argument("--connections", default="16,64",
                        help="comma-separated concurrencies (default 16,64)")
    parser.add_argument("--workers", type=int, default=1, help="issuer serve --workers")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1: leave the other cores to the server)")
    parser.add_argument("--sign-seconds", type=float, default=3.0,
                        help="length of the raw signing loop (default 3)")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="PostgreSQL server to use instead of SQLite, e.g. "
                        "postgresql://postgres@127.0.0.1/postgres; a throwaway database is "
                        "created on it and dropped at the end")
    parser.add_argument("--py-spy", metavar="FILE", default=None,
                        help="record the server with py-spy (raw/collapsed stacks) during "
                        "the first level's measured run; slows the server a little")
    parser.add_argument("--limiting", default="memory",
                        help="comma-separated rate-limiting modes to compare, each on its own "
                        "server in the same run: off (ISSUER_RATE_LIMITING=off), memory "
                        "(in-process), redis (ISSUER_REDIS_URL=--redis); default memory")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15",
                        help="the Redis of --limiting redis (keys under a throwaway prefix, "
                        "deleted at the end)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every mode this many times, alternating (default 1)")
    parser.add_argument("--server-cpus", metavar="LIST", default=None,
                        help="pin `issuer serve` to these CPUs (taskset list, e.g. 0), so that "
                        "wrk and Redis, pinned elsewhere, do not take the server's cores")
    parser.add_argument("--load-cpus", metavar="LIST", default=None,
                        help="pin wrk to these CPUs (e.g. 1); pin a local redis-server there "
                        "too, by hand: taskset -a -p -c 1 $(pidof redis-server)")
    parser.add_argument("--preload-rows", type=int, default=0, metavar="N",
                        help="with --postgres: run every mode on two stores in alternating "
                        "rounds, an empty one and one seeded with N issued_tokens rows and "
                        "N audit_events (bench/preload.py), and print the ratio")
    parser.add_argument("--expired-share", type=float, default=0.0,
                        help="fraction of the preloaded rows already past retention "
                        "(default 0: none, as in a store pruned every 10 minutes)")
    parser.add_argument("--rss-every", type=float, default=10.0, metavar="SECONDS",
                        help="sample the resident memory of each server process this often "
                        "during each measured run (default 10); one line per process")
    parser.add_argument("--dpop", action="store_true",
                        help="every request carries a fresh DPoP proof (RFC 9449), made "
                        "before each wrk run")
    parser.add_argument("--dpop-proofs", type=int, default=30_000, metavar="N",
                        help="--dpop: proofs made per wrk run (~0.15 ms each); more than "
                        "the run's requests, or the rest are replays (default 30000)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (server log, wrk script) for inspection")
    parser.add_argument("--sign-rate", type=float, default=None, help=argparse.SUPPRESS)
    return parser


@dataclass
class Store:
    """One throwaway store under test, with its bench client."""

    label: str  # "empty", or "rows=N" when preloaded
    database_url: str
    pg_admin: tuple[str, str] | None
    env: dict[str, str]
    client_id: str = ""
    script: Path = Path()
    proofs: Path | None = None  # --dpop: the proof file the wrk script reads
    issued: int = 0  # 200s counted (probes, warm-ups, measured runs)
    in_flight: int = 0  # requests possibly in flight when wrk stopped


def _run(args: argparse.Namespace, wrk: str, issuer: str, levels: list[int]) -> int:
    modes = [mode.strip() for mode in args.limiting.split(",") if mode.strip()]
    unknown = set(modes) - set(LIMITING_MODES)
    if unknown or not modes:
        raise BenchError(f"--limiting takes {', '.join(LIMITING_MODES)}; got {args.limiting!r}")
    if args.preload_rows and not args.postgres:
        raise BenchError("--preload-rows needs --postgres")
    redis_prefix = f"issuer-bench-{uuid.uuid4().hex[:12]}:"
    workdir = Path(tempfile.mkdtemp(prefix="issuer-bench-"))
    server: subprocess.Popen[bytes] | None = None
    stores: list[Store] = []
    try:
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        labels = ["empty", f"rows={args.preload_rows}"] if args.preload_rows else ["empty"]
        for index, label in enumerate(labels):
            if args.postgres:
                pg_admin, database_url = _create_pg_database(args.postgres)
            else:
                pg_admin, database_url = None, f"sqlite+aiosqlite:///{workdir / 'issuer.db'}"
            # Nothing of the caller's issuer configuration leaks in: defaults (RS256,
            # RSA-2048, in-process cache) except for what is set here.
            env = {
                **{name: value for name, value in os.environ.items()
                   if not name.startswith(("ISSUER_", "ENCRYPTION_"))},
                "ISSUER_URL": base_url,
                "ISSUER_DATABASE_URL": database_url,
                "ENCRYPTION_MASTER_KEY": secrets.token_hex(32),
                # One client takes all the load: keep a per-client limit from answering 429.
                "ISSUER_RATE_LIMIT": "1000000000/minute",
                # --dpop: proofs are made before each wrk run and used during it.
                **({"ISSUER_DPOP_PROOF_MAX_AGE": "600"} if args.dpop else {}),
                "PYTHONUNBUFFERED": "1",
            }
            stores.append(Store(label, database_url, pg_admin, env))
            # cwd=workdir: Settings also reads ./.env, which must not leak in from the caller.
            _cli(issuer, ["migrate"], env, workdir)
            _cli(issuer, ["tenants", "create", "bench"], env, workdir)
            client = json.loads(_cli(issuer, ["clients", "create", "--tenant", "bench",
                                              "--scope", SCOPE, "--json"], env, workdir))
            authorization = "Basic " + base64.b64encode(
                f"{quote(client['client_id'], safe='')}:{quote(client['client_secret'], safe='')}"
                .encode()).decode()
            stores[-1].client_id = client["client_id"]
            stores[-1].script = workdir / f"token{index}.lua"
            stores[-1].script.write_text(WRK_SCRIPT % {"body": BODY,
                                                       "authorization": authorization})
            if args.dpop:
                stores[-1].proofs = workdir / f"proofs{index}.txt"
                with stores[-1].script.open("a") as script:
                    script.write(WRK_DPOP_SCRIPT % {"proofs": stores[-1].proofs,
                                                    "threads": args.wrk_threads})
            if label != "empty":
                print(_preload(database_url, args.preload_rows, args.expired_share), flush=True)
        store = "postgresql" if args.postgres else "sqlite"

        sign_rate, sign_cpu_us = _measure_signing_rate(args.sign_seconds)
        print(f"bench=token_endpoint store={store} workers={args.workers} "
              f"duration={args.duration:g}s warmup={args.warmup:g}s "
              f"wrk_threads={args.wrk_threads} cpus={os.cpu_count()} "
              f"server_cpus={args.server_cpus or 'any'} load_cpus={args.load_cpus or 'any'} "
              f"stores={','.join(labels)} dpop={'on' if args.dpop else 'off'} "
              f"python={platform.python_version()} "
              f"raw_rs256_sign/s={sign_rate:.1f} sign_cpu_us={sign_cpu_us:.0f} "
              "(1 core, RSA-2048 PKCS1v15 SHA-256)", flush=True)

        rates: dict[tuple[str, str, int], list[float]] = {}
        costs: dict[tuple[str, str, int], list[float]] = {}
        db_costs: dict[tuple[str, str, int], list[float]] = {}
        log_path = workdir / "server.log"
        # Stores and modes alternate, round by round, so that a drift of the
        # machine's speed during the run touches every one alike; each round starts
        # one later (off, memory, redis; then memory, redis, off; ...), so that none
        # always runs first, on the smallest store and the coolest machine.
        runs = [(one, mode) for one in stores for mode in modes]
        for round_ in range(args.rounds):
            shift = round_ % len(runs)
            for one, mode in runs[shift:] + runs[:shift]:
                mode_env = {**one.env, **_limiting_env(mode, args.redis, redis_prefix)}
                with log_path.open("ab") as log:
                    server = subprocess.Popen(
                        [*_pinned(args.server_cpus), issuer, "serve", "--host", "127.0.0.1",
                         "--port", str(port),
                         "--workers", str(args.workers), "--log-level", "warning"],
                        env=mode_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group: workers die with it
                    )
                _wait_healthy(base_url, server, log_path, deadline_s=60.0)
                _probe_token(base_url, _authorization(one.script), log_path)
                one.issued += 1  # the probe
                prefix = (f"store={one.label} " if len(stores) > 1 else "") + f"limiting={mode}"
                for index, connections in enumerate(levels):
                    threads = max(1, min(args.wrk_threads, connections))
                    if args.warmup > 0:
                        _write_proofs(one, base_url, args.dpop_proofs)
                        warm = _wrk(wrk, one.script, base_url, connections, threads,
                                    args.warmup, cpus=args.load_cpus)
                        one.issued += warm.ok
                        one.in_flight += connections
                    profiler = None
                    if args.py_spy and index == 0 and round_ == 0 and (one, mode) == runs[0]:
                        profiler = _start_py_spy(args.py_spy, server.pid, args.duration)
                    scripts = _redis_script_calls(args.redis) if mode == "redis" else 0
                    by_worker = _tokens_by_worker(base_url, args.workers)
                    cpu = _group_cpu_seconds(server.pid)
                    db_cpu = _db_cpu_by_pid(one.pg_admin)
                    _write_proofs(one, base_url, args.dpop_proofs)
                    with RssSampler(server.pid, args.rss_every) as memory:
                        result = _wrk(wrk, one.script, base_url, connections, threads,
                                      args.duration, cpus=args.load_cpus)
                    cpu = _group_cpu_seconds(server.pid) - cpu
                    db_cpu_s = _cpu_spent(db_cpu, _db_cpu_by_pid(one.pg_admin))
                    if mode == "redis":
                        scripts = _redis_script_calls(args.redis) - scripts
                    if profiler is not None:
                        profiler.wait(timeout=args.duration + 30)
                    one.issued += result.ok
                    one.in_flight += connections
                    key = (one.label, mode, connections)
                    rates.setdefault(key, []).append(result.tokens_per_s)
                    cpu_per_token = cpu / result.requests if result.requests else 0.0
                    costs.setdefault(key, []).append(cpu_per_token)
                    ratio = result.tokens_per_s / sign_rate if sign_rate else 0.0
                    if one.pg_admin is not None and result.requests:
                        db_costs.setdefault(key, []).append(db_cpu_s / result.requests)
                    print(f"{prefix} round={round_ + 1} c={connections} "
                          f"tokens/s={result.tokens_per_s:.1f} "
                          f"p50={result.p50_ms:.1f}ms p99={result.p99_ms:.1f}ms "
                          f"max={result.max_ms:.1f}ms "
                          f"errors={result.errors} ratio={ratio:.2f} "
                          f"server_cpu_us/token={cpu_per_token * 1e6:.0f} "
                          f"excl_rs256_sign={cpu_per_token * 1e6 - sign_cpu_us:.0f}"
                          + (f" db_cpu_us/token={db_cpu_s / result.requests * 1e6:.0f}"
                             if one.pg_admin is not None and result.requests else "")
                          + (f" redis_scripts/token={scripts / result.requests:.3f}"
                             if mode == "redis" and result.requests else ""), flush=True)
                    after = _tokens_by_worker(base_url, args.workers)
                    split = _split(by_worker, after)
                    print(f"{prefix} round={round_ + 1} c={connections} "
                          f"workers_seen={len(split)}/{args.workers} tokens_by_worker="
                          f"{','.join(f'{count:.0f}' for count in split.values())} "
                          f"balance={_balance(split):.2f}", flush=True)
                    for line in _rss_lines(memory, server.pid, set(after) | set(by_worker)):
                        print(f"{prefix} round={round_ + 1} c={connections} {line}",
                              flush=True)
                    if result.errors:
                        print(f"#   c={connections} non200={result.non200} "
                              f"socket_errors={result.socket_errors} of {result.requests} "
                              "requests", flush=True)
                _stop(server)
                server = None
        if "off" in modes:
            # Each mode against the "off" run of its own round (the same minutes of
            # the machine), then the median over the rounds.
            for one in stores:
                for connections in levels:
                    others = [mode for mode in modes if mode != "off"]
                    at = (f"store={one.label} " if len(stores) > 1 else "") + f"c={connections}"
                    c = connections
                    off = (one.label, "off", c)
                    compared = " ".join(
                        f"{mode}/off={_paired_median(rates, (one.label, mode, c), off):.3f}"
                        for mode in others)
                    print(f"limiting_ratio {at} {compared} (median of {args.rounds} "
                          "paired rounds; 1.0 = limiting costs nothing)", flush=True)
                    compared = " ".join(
                        f"{mode}/off={_paired_median(costs, (one.label, mode, c), off):.3f}"
                        for mode in others)
                    print(f"server_cpu_ratio {at} {compared} (CPU time of the server "
                          "per request, median of paired rounds; 1.0 = limiting costs nothing)",
                          flush=True)
        if len(stores) > 1:
            # The preloaded store against the empty one in the same round.
            full = stores[1].label
            for mode in modes:
                for connections in levels:
                    pair = ((full, mode, connections), ("empty", mode, connections))
                    print(f"store_ratio limiting={mode} c={connections} "
                          f"tokens/s {full}/empty={_paired_median(rates, *pair):.3f} "
                          f"server_cpu_us/token {full}/empty={_paired_median(costs, *pair):.3f} "
                          f"db_cpu_us/token {full}/empty={_paired_median(db_costs, *pair):.3f} "
                          f"(median of {args.rounds} paired rounds; 1.0 = the rows cost "
                          "nothing)", flush=True)

        # wrk counts only the responses that came back within its duration: the
        # requests still in flight when it stops (at most one per connection) were
        # issued and stored too, but are not among the counted 200s.
        failed = False
        for one in stores:
            stored = _count_issued_tokens(one.database_url, one.client_id)
            durable = one.issued <= stored <= one.issued + one.in_flight
            failed = failed or not durable
            print((f"store={one.label} " if len(stores) > 1 else "")
                  + f"stored issued_tokens={stored} counted_200={one.issued} "
                  f"in_flight<={one.in_flight} durable={'yes' if durable else 'NO'}",
                  flush=True)
        if _server_log_has_errors(log_path):
            print(f"# the server logged errors; see {log_path} (kept)", flush=True)
            args.keep = True
        return 1 if failed else 0
    finally:
        if server is not None:
            _stop(server)
        for one in stores:
            if one.pg_admin is not None:
                with contextlib.suppress(Exception):
                    _drop_pg_database(*one.pg_admin)
        if "redis" in modes:
            with contextlib.suppress(Exception):
                _delete_redis_keys(args.redis, redis_prefix)
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _db_cpu_by_pid(pg_admin: tuple[str, str] | None) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the bench database (from
    /proc: the server must run on this machine; empty for SQLite)."""
    if pg_admin is None:
        return {}
    import asyncpg  # type: ignore[import-untyped]

    admin, name = pg_admin

    async def run() -> list[int]:
        connection = await asyncpg.connect(admin, timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
            return [row["pid"] for row in rows]
        finally:
            await connection.close()

    return {pid: cpu_seconds(pid) for pid in asyncio.run(run())}


def _cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the processes spent between two readings (new ones: all of theirs)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _authorization(script: Path) -> str:
    """The Authorization header written into a wrk script."""
    for line in script.read_text().splitlines():
        if line.startswith('wrk.headers["Authorization"]'):
            return line.split('"')[3]
    raise BenchError(f"no Authorization header in {script}")


def _preload(database_url: str, rows: int, expired_share: float) -> str:
    """Seed the store (bench/preload.py); its one-line report."""
    import preload

    return preload.describe(asyncio.run(preload.preload(
        _asyncpg_dsn(database_url), rows, expired_share=expired_share)))


def _rss_lines(memory: RssSampler, supervisor: int, workers: set[str]) -> list[str]:
    """One line per server process: its resident memory over the measured run."""
    lines = []
    for pid, series in sorted(memory.series.items()):
        role = ("worker" if str(pid) in workers
                else "supervisor" if pid == supervisor else "other")
        lines.append(f"rss pid={pid} role={role} samples={len(series.samples)} "
                     f"first_mb={series.first:.1f} last_mb={series.last:.1f} "
                     f"max_mb={series.peak:.1f} drift={series.drift_percent:+.1f}%")
    return lines


# Setup -------------------------------------------------------------------------------


LIMITING_MODES = ("off", "memory", "redis")


def _limiting_env(mode: str, redis_url: str, prefix: str) -> dict[str, str]:
    if mode == "off":
        return {"ISSUER_RATE_LIMITING": "off"}
    if mode == "redis":
        return {"ISSUER_REDIS_URL": redis_url, "ISSUER_REDIS_KEY_PREFIX": prefix}
    return {}


def _delete_redis_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _paired_median(figures: dict[tuple[str, str, int], list[float]], key: tuple[str, str, int],
                   reference: tuple[str, str, int]) -> float:
    """The median over rounds of ``key``'s figure over the same round's ``reference``."""
    pairs = zip(figures[key], figures[reference], strict=True)
    return statistics.median(run / ref if ref else 0.0 for run, ref in pairs)


def _group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``
    (the server and its workers), from /proc (Linux; 0.0 elsewhere)."""
    return sum(group_cpu(pgid).values())


def _tokens_by_worker(base_url: str, workers: int) -> dict[str, float]:
    """Tokens each worker process has issued so far, by pid. Every process counts
    its own and names itself (``issuer_process_info{pid}``); the kernel picks
    the worker of each new connection, so ``/metrics`` is asked over fresh
    connections until every worker has answered (or 50 tries per worker)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for _ in range(50 * workers):
        try:
            page = httpx.get(f"{base_url}/metrics", headers={"Connection": "close"},
                             timeout=10.0).text
        except httpx.TransportError:
            continue
        pid, issued = None, 0.0
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                if sample.name == "issuer_process_info":
                    pid = sample.labels["pid"]
                elif sample.name == "issuer_tokens_issued_total":
                    issued += sample.value
        if pid is not None:
            counts[pid] = issued
        if len(counts) == workers:
            break
    return counts


def _split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Tokens per worker between two scrapes (workers seen both times)."""
    return {pid: after[pid] - before[pid] for pid in sorted(after) if pid in before}


def _balance(split: dict[str, float]) -> float:
    """The least busy worker's tokens over the mean: 1.0 is an even split, 0.0 a
    worker that issued nothing."""
    total = sum(split.values())
    return min(split.values()) * len(split) / total if total else 0.0


def _redis_script_calls(url: str) -> int:
    """EVALSHA calls the Redis server has run (every rate-limit check that went to
    Redis is one; a leased one is none)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _issuer_executable() -> str | None:
    beside = Path(sys.executable).parent / "issuer"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("issuer")


def _cli(issuer: str, arguments: list[str], env: dict[str, str], cwd: Path) -> str:
    completed = subprocess.run([issuer, *arguments], env=env, cwd=cwd, capture_output=True,
                               text=True, timeout=120, check=False)
    if completed.returncode != 0:
        raise BenchError(f"`issuer {' '.join(arguments)}` failed ({completed.returncode}):\n"
                         f"{completed.stderr.strip()}")
    return completed.stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(base_url: str, server: subprocess.Popen[bytes], log_path: Path, *,
                  deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"`issuer serve` exited with {server.returncode}:\n"
                             f"{_tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise BenchError(f"`issuer serve` did not answer /healthz within {deadline_s:g}s:\n"
                     f"{_tail(log_path)}")


def _probe_token(base_url: str, authorization: str, log_path: Path) -> None:
    response = httpx.post(f"{base_url}/token", content=BODY, timeout=10.0, headers={
        "Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"})
    if response.status_code != 200 or "access_token" not in response.json():
        raise BenchError(f"a first POST /token answered {response.status_code}: "
                         f"{response.text[:300]}\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _server_log_has_errors(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return '"level":"error"' in text or "ERROR" in text or "Traceback" in text


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (Granian and its workers), then SIGKILL."""
    if server.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=5)


# PostgreSQL ----------------------------------------------------------------------------


def _asyncpg_dsn(url: str) -> str:
    scheme, rest = url.split("://", 1)
    if not scheme.startswith(("postgresql", "postgres")):
        raise BenchError(f"--postgres wants a postgresql:// URL, got {scheme}://")
    return f"postgresql://{rest}"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _pg_execute(dsn: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def _create_pg_database(url: str) -> tuple[tuple[str, str], str]:
    """Make an empty database on the server of ``url``: ((admin DSN, name), issuer URL)."""
    admin = _with_database(_asyncpg_dsn(url), "postgres")
    name = f"issuer_bench_{uuid.uuid4().hex[:12]}"
    try:
        _pg_execute(admin, f'CREATE DATABASE "{name}"')
    except Exception as error:
        raise BenchError(f"could not create a database on {urlsplit(admin).hostname}: "
                         f"{type(error).__name__}: {error}") from None
    issuer_url = _with_database(_asyncpg_dsn(url), name).replace(
        "postgresql://", "postgresql+asyncpg://", 1)
    return (admin, name), issuer_url


def _drop_pg_database(admin: str, name: str) -> None:
    _pg_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _count_issued_tokens(database_url: str, client_id: str) -> int:
    """The bench client's token records (a preloaded store holds others)."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as connection:
            count: int = connection.execute(
                "SELECT count(*) FROM issued_tokens WHERE client_id = ?", (client_id,)
            ).fetchone()[0]
            return count
    import asyncpg

    async def run() -> int:
        connection = await asyncpg.connect(_asyncpg_dsn(database_url), timeout=10)
        try:
            value: int = await connection.fetchval(
                "SELECT count(*) FROM issued_tokens WHERE client_id = $1", client_id)
            return value
        finally:
            await connection.close()

    return asyncio.run(run())


# Load ----------------------------------------------------------------------------------


def _pinned(cpus: str | None) -> list[str]:
    """The ``taskset`` prefix that runs a command on ``cpus`` (nothing without)."""
    if cpus is None:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise BenchError("--server-cpus/--load-cpus need `taskset` (util-linux)")
    return [taskset, "-c", cpus]


def _write_proofs(store: Store, base_url: str, count: int) -> None:
    """``--dpop``: ``count`` fresh ES256 proofs for POST /token, one a line, where the
    store's wrk script reads them (each with its own jti, iat now)."""
    if store.proofs is None:
        return
    import warnings

    from joserfc import jwt
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", private=True)
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    now = int(time.time())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines = [jwt.encode(header, {"jti": uuid.uuid4().hex, "htm": "POST",
                                     "htu": f"{base_url}/token", "iat": now},
                            key, algorithms=["ES256"]) for _ in range(count)]
    store.proofs.write_text("\n".join(lines) + "\n")


def _wrk(wrk: str, script: Path, base_url: str, connections: int, threads: int,
         seconds: float, *, cpus: str | None = None) -> LoadResult:
    command = [*_pinned(cpus), wrk, "-t", str(threads), "-c", str(connections),
               "-d", f"{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(script), f"{base_url}/token"]
    completed = subprocess.run(command, capture_output=True, text=True,
                               timeout=seconds + 60, check=False)
    line = next((text for text in completed.stdout.splitlines() if text.startswith("WRK ")),
                None)
    if completed.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({completed.returncode}):\n{completed.stdout}\n"
                         f"{completed.stderr}")
    fields = dict(item.split("=", 1) for item in line.split()[1:])
    value = {key: int(float(raw)) for key, raw in fields.items()}
    return LoadResult(
        connections=connections, requests=value["requests"],
        duration_s=value["duration_us"] / 1e6, non200=value["non200"],
        socket_errors=value["connect"] + value["read"] + value["write"] + value["timeout"],
        p50_ms=value["p50_us"] / 1e3, p90_ms=value["p90_us"] / 1e3,
        p99_ms=value["p99_us"] / 1e3, max_ms=value["max_us"] / 1e3,
    )


def _start_py_spy(output: str, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).parent / "py-spy"
    executable = str(py_spy) if py_spy.is_file() else shutil.which("py-spy")
    if executable is None:
        raise BenchError("--py-spy: py-spy is not installed (pip install py-spy)")
    return subprocess.Popen(
        [executable, "record", "--pid", str(pid), "--subprocesses", "--rate", "100",
         "--threads",
         "--duration", str(max(1, round(seconds))), "--format", "raw", "--output", output],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Raw signing rate ------------------------------------------------------------------------


def _measure_signing_rate(seconds: float) -> tuple[float, float]:
    """One core's RS256 rate, and the CPU microseconds of one signature, in a fresh
    interpreter so nothing else shares it."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--sign-rate", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    if completed.returncode != 0:
        raise BenchError(f"the signing-rate process failed:\n{completed.stderr}")
    rate, cpu_us = completed.stdout.split()
    return float(rate), float(cpu_us)


def _signing_rate(seconds: float) -> tuple[float, float]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # About the size of a real JWS signing input: base64url(header) "." base64url(claims).
    message = base64.urlsafe_b64encode(os.urandom(SIGNING_INPUT_BYTES * 3 // 4))
    pad, digest = padding.PKCS1v15(), hashes.SHA256()
    warm_until = time.perf_counter() + 0.3
    while time.perf_counter() < warm_until:
        key.sign(message, pad, digest)
    count = 0
    start = time.perf_counter()
    cpu = time.process_time()
    end = start + seconds
    now = start
    while now < end:
        key.sign(message, pad, digest)
        count += 1
        now = time.perf_counter()
    return count / (now - start), (time.process_time() - cpu) / count * 1e6


if __name__ == "__main__":
    sys.exit(main())
