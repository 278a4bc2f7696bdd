"""POST /token side by side: m2m-issuer against node-oidc-provider, the reference.

Not a test: CI does not run it. One run, on one machine:

1. node-oidc-provider (``bench/peers/node-oidc-provider``, a node:cluster of
   ``--peer-workers`` processes, RS256 JWT access tokens, not stored) and
   ``issuer serve --workers N`` (a throwaway SQLite file, or with ``--store
   postgres`` a throwaway database; ``--alg`` RS256 or ES256), both on free ports
   of 127.0.0.1, each in its own process group, each with one client
   (client_secret_basic) allowed the scope ``read``;
2. one token from each, verified against the server's own JWKS;
3. ``--rounds`` rounds: the raw RS256 and ES256 signing rates of one core while
   both servers are idle, then per concurrency the same ``wrk`` script against
   each server in turn (the first server alternates from round to round),
   ``--warmup`` seconds unmeasured and ``--duration`` measured;
4. one line per run, one summary line per server and concurrency (medians of
   the rounds; the ratio to the reference paired by round), a Markdown table, and
   the check that every 200 of m2m-issuer has its stored row and audit event.

Run: ``.venv/bin/python bench/side_by_side.py [--store postgres] [--alg ES256]``
after ``npm ci`` in ``bench/peers/node-oidc-provider``.
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
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

# The token benchmark's helpers (wrk script and parsing, process-group CPU time,
# the throwaway PostgreSQL database, the issuer CLI); it sits beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import token_endpoint as bench
from procstats import RssSampler, group_cpu

SCOPE = "read"
BODY = "grant_type=client_credentials&scope=read"
PEER = "node-oidc-provider"
ISSUER = "m2m-issuer"
PEER_DIR = Path(__file__).resolve().parent / "peers" / "node-oidc-provider"
SIGN_ALGS = ("RS256", "ES256")
SIGNING_INPUT_BYTES = 300


@dataclass
class Server:
    """A server under load: its process group and the wrk script with its credentials."""

    name: str
    alg: str
    base_url: str
    jwks_path: str
    process: subprocess.Popen[bytes]
    log_path: Path
    authorization: str
    script: Path


@dataclass
class Run:
    server: str
    round: int
    result: bench.LoadResult
    cpu_s: float
    cpu_split: list[float]  # share of the group's CPU time per process, largest first

    @property
    def cpu_us_per_token(self) -> float:
        return self.cpu_s / self.result.requests * 1e6 if self.result.requests else 0.0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.sign_rate is not None:
        alg, seconds = args.sign_rate.split(":", 1)
        rate, cpu_us = _signing_rate(alg, float(seconds))
        print(f"{rate:.1f} {cpu_us:.1f}")
        return 0
    try:
        levels = [int(level) for level in args.connections.split(",") if level.strip()]
    except ValueError:
        print("--connections must look like 16,64", file=sys.stderr)
        return 2
    wrk = shutil.which("wrk")
    if wrk is None:
        print(bench.WRK_INSTALL_HINT.replace("token_endpoint.py", "side_by_side.py"),
              file=sys.stderr)
        return 3
    issuer = bench._issuer_executable()
    node = shutil.which("node")
    peer_dir = Path(args.peer_dir)
    if issuer is None:
        print("side_by_side.py: the `issuer` command was not found next to this Python or "
              "on PATH; install the project (pip install -e .) first", file=sys.stderr)
        return 3
    if node is None:
        print("side_by_side.py: `node` (Node.js 20 or later) is not on PATH", file=sys.stderr)
        return 3
    if not (peer_dir / "node_modules" / "oidc-provider").is_dir():
        print(f"side_by_side.py: node-oidc-provider is not installed: "
              f"(cd {peer_dir} && npm ci)", file=sys.stderr)
        return 3
    signal.signal(signal.SIGTERM, bench._terminate)
    try:
        return _run(args, wrk, issuer, node, peer_dir, levels)
    except bench.BenchError as error:
        print(f"side_by_side.py: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2,
                        help="issuer serve --workers, and the peer's cluster size unless "
                        "--peer-workers says otherwise (default 2)")
    parser.add_argument("--peer-workers", type=int, default=None,
                        help="node-oidc-provider's cluster size (default: --workers)")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                        help="m2m-issuer's store (default sqlite: a file in a temp dir)")
    parser.add_argument("--postgres", metavar="URL",
                        default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="the PostgreSQL server of --store postgres; a throwaway "
                        "database is created on it and dropped at the end")
    parser.add_argument("--alg", choices=SIGN_ALGS, default="RS256",
                        help="m2m-issuer's signing algorithm (the reference stays RS256)")
    parser.add_argument("--log-level", default="warning",
                        choices=["critical", "error", "warning", "info", "debug"],
                        help="issuer serve --log-level (default warning: no access-log "
                        "line per request, like the reference)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per server, concurrency and round (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="unmeasured seconds of load before each measured run (default 3)")
    parser.add_argument("--connections", default="16,64",
                        help="comma-separated concurrencies (default 16,64)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1: leave the other cores to the servers)")
    parser.add_argument("--sign-seconds", type=float, default=2.0,
                        help="length of each raw signing loop, per algorithm and round "
                        "(default 2)")
    parser.add_argument("--rss-every", type=float, default=10.0, metavar="SECONDS",
                        help="sample the resident memory of each server process this often "
                        "during each measured run (default 10); one line per process")
    parser.add_argument("--peer-dir", default=str(PEER_DIR), help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (server logs, wrk scripts) for inspection")
    parser.add_argument("--sign-rate", default=None, help=argparse.SUPPRESS)
    return parser


def _run(args: argparse.Namespace, wrk: str, issuer: str, node: str, peer_dir: Path,
         levels: list[int]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="issuer-side-by-side-"))
    servers: list[Server] = []
    pg_admin: tuple[str, str] | None = None
    peer_workers = args.peer_workers or args.workers
    try:
        if args.store == "postgres":
            pg_admin, database_url = bench._create_pg_database(args.postgres)
        else:
            database_url = f"sqlite+aiosqlite:///{workdir / 'issuer.db'}"
        peer = _start_peer(node, peer_dir, workdir, peer_workers)
        servers.append(peer)
        ours = _start_issuer(issuer, workdir, database_url, args)
        servers.append(ours)
        for server in servers:
            print(_probe(server), flush=True)

        print(f"bench=side_by_side store={args.store} alg={args.alg} workers={args.workers} "
              f"peer={PEER}@{_peer_version(peer_dir)} peer_workers={peer_workers} peer_alg=RS256 "
              f"rounds={args.rounds} duration={args.duration:g}s warmup={args.warmup:g}s "
              f"connections={','.join(map(str, levels))} wrk_threads={args.wrk_threads} "
              f"log_level={args.log_level} "
              f"cpus={os.cpu_count()} "
              f"python={platform.python_version()} node={_node_version(node)}", flush=True)

        runs: dict[tuple[str, int], list[Run]] = {}
        sign_rates: dict[str, list[float]] = {alg: [] for alg in SIGN_ALGS}
        sign_costs: dict[str, list[float]] = {alg: [] for alg in SIGN_ALGS}
        issued = 1  # the probe
        in_flight = 0
        for round_ in range(1, args.rounds + 1):
            # Both servers idle: the raw rate of one core in this minute of the machine.
            for alg in SIGN_ALGS:
                rate, cost = _measure_signing_rate(alg, args.sign_seconds)
                sign_rates[alg].append(rate)
                sign_costs[alg].append(cost)
            print(f"round={round_} raw_sign/s RS256={sign_rates['RS256'][-1]:.1f} "
                  f"ES256={sign_rates['ES256'][-1]:.1f} sign_cpu_us RS256="
                  f"{sign_costs['RS256'][-1]:.0f} ES256={sign_costs['ES256'][-1]:.0f} "
                  "(one thread; RSA-2048 PKCS1v15, P-256 ECDSA; SHA-256)", flush=True)
            # The first server alternates, so that neither always runs on the cooler
            # (or the less loaded) minutes.
            order = servers if round_ % 2 else servers[::-1]
            for connections in levels:
                threads = max(1, min(args.wrk_threads, connections))
                for server in order:
                    if args.warmup > 0:
                        warm = bench._wrk(wrk, server.script, server.base_url, connections,
                                          threads, args.warmup)
                        if server is ours:
                            issued += warm.ok
                            in_flight += connections
                    before = _cpu_by_pid(server.process.pid)
                    with RssSampler(server.process.pid, args.rss_every) as memory:
                        result = bench._wrk(wrk, server.script, server.base_url, connections,
                                            threads, args.duration)
                    spent = _cpu_delta(before, _cpu_by_pid(server.process.pid))
                    if server is ours:
                        issued += result.ok
                        in_flight += connections
                    total = sum(spent)
                    run = Run(server.name, round_, result, total,
                              [share / total for share in spent] if total else [])
                    runs.setdefault((server.name, connections), []).append(run)
                    print(_run_line(run, server.alg, sign_costs[server.alg][-1]), flush=True)
                    for line in bench._rss_lines(memory, server.process.pid, set()):
                        print(f"round={round_} c={connections} server={server.name} "
                              + line.replace("role=other", "role=worker"), flush=True)
                    _check_alive(server)

        for connections in levels:
            for server in servers:
                print(_summary_line(server, connections, runs, sign_costs), flush=True)
        print(flush=True)
        print(f"raw_sign/s RS256={statistics.median(sign_rates['RS256']):.1f} "
              f"ES256={statistics.median(sign_rates['ES256']):.1f} "
              f"sign_cpu_us RS256={statistics.median(sign_costs['RS256']):.0f} "
              f"ES256={statistics.median(sign_costs['ES256']):.0f} (medians of the rounds)",
              flush=True)
        print(flush=True)
        for line in _table(servers, levels, runs, sign_costs, args):
            print(line, flush=True)
        print(flush=True)

        tokens, events = _count_stored(database_url)
        durable = issued <= tokens <= issued + in_flight and events == tokens
        print(f"stored issued_tokens={tokens} token_events={events} counted_200={issued} "
              f"in_flight<={in_flight} durable={'yes' if durable else 'NO'}", flush=True)
        for server in servers:
            if _log_has_errors(server.log_path):
                print(f"# {server.name} logged errors; see {server.log_path} (kept)",
                      flush=True)
                args.keep = True
        return 0 if durable else 1
    finally:
        for server in servers:
            bench._stop(server.process)
        if pg_admin is not None:
            with contextlib.suppress(Exception):
                bench._drop_pg_database(*pg_admin)
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# The servers ------------------------------------------------------------------------


def _basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: both form-urlencoded, then HTTP Basic."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _write_script(workdir: Path, name: str, authorization: str) -> Path:
    script = workdir / f"{name}.lua"
    script.write_text(bench.WRK_SCRIPT % {"body": BODY, "authorization": authorization})
    return script


def _start_peer(node: str, peer_dir: Path, workdir: Path, workers: int) -> Server:
    port = bench._free_port()
    client_id, secret = "bench", secrets.token_urlsafe(32)
    log_path = workdir / "peer.log"
    env = {**os.environ, "PEER_CLIENT_ID": client_id, "PEER_CLIENT_SECRET": secret,
           "NODE_ENV": "production"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [node, "server.js", "--port", str(port), "--workers", str(workers)],
            cwd=peer_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: the cluster dies with it
    authorization = _basic(client_id, secret)
    server = Server(PEER, "RS256", f"http://127.0.0.1:{port}", "/jwks", process, log_path,
                    authorization, _write_script(workdir, "peer", authorization))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise bench.BenchError(f"the {PEER} server exited with {process.returncode}:\n"
                                   f"{bench._tail(log_path)}")
        if "peer: ready" in log_path.read_text(errors="replace"):
            return server
        time.sleep(0.1)
    bench._stop(process)
    raise bench.BenchError(f"the {PEER} server was not ready within 300 s:\n"
                           f"{bench._tail(log_path)}")


def _start_issuer(issuer: str, workdir: Path, database_url: str,
                  args: argparse.Namespace) -> Server:
    port = bench._free_port()
    base_url = f"http://127.0.0.1:{port}"
    # Nothing of the caller's issuer configuration leaks in: defaults except for
    # what is set here.
    env = {
        **{name: value for name, value in os.environ.items()
           if not name.startswith(("ISSUER_", "ENCRYPTION_"))},
        "ISSUER_URL": base_url,
        "ISSUER_DATABASE_URL": database_url,
        "ISSUER_SIGNING_ALG": args.alg,
        "ENCRYPTION_MASTER_KEY": secrets.token_hex(32),
        # One client takes all the load: keep its rate limit from answering 429
        # (the limiter still runs on every request).
        "ISSUER_RATE_LIMIT": "1000000000/minute",
        "PYTHONUNBUFFERED": "1",
    }
    # cwd=workdir: Settings also reads ./.env, which must not leak in from the caller.
    bench._cli(issuer, ["migrate"], env, workdir)
    bench._cli(issuer, ["tenants", "create", "bench"], env, workdir)
    client = json.loads(bench._cli(issuer, ["clients", "create", "--tenant", "bench",
                                            "--scope", SCOPE, "--json"], env, workdir))
    log_path = workdir / "issuer.log"
    command = [issuer]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*command, "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(args.workers), "--log-level", args.log_level],
            env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: workers die with it
    authorization = _basic(client["client_id"], client["client_secret"])
    server = Server(ISSUER, args.alg, base_url, "/.well-known/jwks.json", process, log_path,
                    authorization, _write_script(workdir, "issuer", authorization))
    try:
        bench._wait_healthy(base_url, process, log_path, deadline_s=300.0)
    except bench.BenchError:
        bench._stop(process)
        raise
    return server


def _probe(server: Server) -> str:
    """One token, its signature checked against the server's JWKS: a line to print."""
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    response = httpx.post(f"{server.base_url}/token", content=BODY, timeout=10.0, headers={
        "Authorization": server.authorization,
        "Content-Type": "application/x-www-form-urlencoded"})
    if response.status_code != 200 or "access_token" not in response.json():
        raise bench.BenchError(f"{server.name}: a first POST /token answered "
                               f"{response.status_code}: {response.text[:300]}\n"
                               f"{bench._tail(server.log_path)}")
    access_token = response.json()["access_token"]
    keys = KeySet.import_key_set(httpx.get(server.base_url + server.jwks_path,
                                           timeout=10.0).json())
    try:
        decoded = jwt.decode(access_token, keys, algorithms=[server.alg])
    except JoseError as error:
        raise bench.BenchError(f"{server.name}: its token does not verify against its "
                               f"JWKS: {error}") from None
    return (f"probe server={server.name} status=200 alg={decoded.header['alg']} "
            f"typ={decoded.header.get('typ')} verified=yes scope={decoded.claims.get('scope')} "
            f"token_bytes={len(access_token)} response_bytes={len(response.content)}")


def _check_alive(server: Server) -> None:
    if server.process.poll() is not None:
        raise bench.BenchError(f"{server.name} exited with {server.process.returncode}:\n"
                               f"{bench._tail(server.log_path)}")


def _log_has_errors(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return ('"level":"error"' in text or "ERROR" in text or "Traceback" in text
            or "server_error" in text)


def _peer_version(peer_dir: Path) -> str:
    try:
        package = json.loads((peer_dir / "node_modules" / "oidc-provider" / "package.json")
                             .read_text())
        return str(package["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def _node_version(node: str) -> str:
    completed = subprocess.run([node, "--version"], capture_output=True, text=True,
                               timeout=30, check=False)
    return completed.stdout.strip().lstrip("v") or "unknown"


# Measuring ---------------------------------------------------------------------------


def _cpu_by_pid(pgid: int) -> dict[int, float]:
    """User + system CPU seconds of each live process in process group ``pgid``."""
    return group_cpu(pgid)


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """CPU seconds each process spent between the two readings, largest first."""
    return sorted((after[pid] - before.get(pid, 0.0) for pid in after), reverse=True)


def _measure_signing_rate(alg: str, seconds: float) -> tuple[float, float]:
    """Signatures per second of one thread, and the CPU microseconds of one, in a
    fresh interpreter so nothing else shares it. On a shared machine the rate
    also says how much of a core the process got; the CPU time does not."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--sign-rate", f"{alg}:{seconds}"],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    if completed.returncode != 0:
        raise bench.BenchError(f"the signing-rate process failed:\n{completed.stderr}")
    rate, cpu_us = completed.stdout.split()
    return float(rate), float(cpu_us)


def _signing_rate(alg: str, seconds: float) -> tuple[float, float]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    # About the size of a real JWS signing input: base64url(header) "." base64url(claims).
    message = base64.urlsafe_b64encode(os.urandom(SIGNING_INPUT_BYTES * 3 // 4))
    if alg == "RS256":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pad, digest = padding.PKCS1v15(), hashes.SHA256()

        def sign() -> None:
            rsa_key.sign(message, pad, digest)
    else:
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ecdsa = ec.ECDSA(hashes.SHA256())

        def sign() -> None:
            ec_key.sign(message, ecdsa)

    warm_until = time.perf_counter() + 0.3
    while time.perf_counter() < warm_until:
        sign()
    count = 0
    start = now = time.perf_counter()
    cpu = time.process_time()
    end = start + seconds
    while now < end:
        sign()
        count += 1
        now = time.perf_counter()
    return count / (now - start), (time.process_time() - cpu) / count * 1e6


def _count_stored(database_url: str) -> tuple[int, int]:
    """The issued-token rows and their M2M_TOKEN_GENERATED audit events, counted in one
    statement: one snapshot, so a late commit (a request still in flight when wrk
    stopped) cannot land between the two counts."""
    both_sql = ("SELECT (SELECT count(*) FROM issued_tokens), (SELECT count(*) FROM "
                "audit_events WHERE event = 'M2M_TOKEN_GENERATED')")
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as connection:
            tokens, events = connection.execute(both_sql).fetchone()
            return tokens, events
    import asyncpg  # type: ignore[import-untyped]

    async def run() -> tuple[int, int]:
        connection = await asyncpg.connect(bench._asyncpg_dsn(database_url), timeout=10)
        try:
            tokens, events = await connection.fetchrow(both_sql)
            return tokens, events
        finally:
            await connection.close()

    return asyncio.run(run())


# Output ------------------------------------------------------------------------------


def _run_line(run: Run, alg: str, sign_cpu_us: float) -> str:
    result = run.result
    split = "/".join(f"{share * 100:.0f}" for share in run.cpu_split)
    line = (f"round={run.round} c={result.connections} server={run.server} "
            f"tokens/s={result.tokens_per_s:.1f} p50={result.p50_ms:.1f}ms "
            f"p99={result.p99_ms:.1f}ms max={result.max_ms:.1f}ms errors={result.errors} "
            f"server_cpu_us/token={run.cpu_us_per_token:.0f} "
            f"excl_{alg.lower()}_sign={run.cpu_us_per_token - sign_cpu_us:.0f} "
            f"cpu_split%={split}")
    if result.errors:
        line += f"\n#   non200={result.non200} socket_errors={result.socket_errors}"
    return line


def _ratios(runs: dict[tuple[str, int], list[Run]], name: str, connections: int) -> list[float]:
    """tokens/s of ``name`` over the reference's, round by round."""
    pairs = zip(runs[(name, connections)], runs[(PEER, connections)], strict=True)
    return [ours.result.tokens_per_s / peer.result.tokens_per_s
            if peer.result.tokens_per_s else 0.0 for ours, peer in pairs]


def _summary(server: Server, connections: int, runs: dict[tuple[str, int], list[Run]],
             sign_costs: dict[str, list[float]]) -> dict[str, float]:
    mine = runs[(server.name, connections)]
    costs = sign_costs[server.alg]
    return {
        "tokens_s": statistics.median(run.result.tokens_per_s for run in mine),
        "p50": statistics.median(run.result.p50_ms for run in mine),
        "p99": statistics.median(run.result.p99_ms for run in mine),
        "max": max(run.result.max_ms for run in mine),
        "errors": sum(run.result.errors for run in mine),
        "cpu_us": statistics.median(run.cpu_us_per_token for run in mine),
        "cpu_excl_sign_us": statistics.median(
            run.cpu_us_per_token - costs[run.round - 1] for run in mine),
        "ratio": statistics.median(_ratios(runs, server.name, connections)),
    }


def _summary_line(server: Server, connections: int, runs: dict[tuple[str, int], list[Run]],
                  sign_costs: dict[str, list[float]]) -> str:
    figures = _summary(server, connections, runs, sign_costs)
    rounds = len(runs[(server.name, connections)])
    return (f"summary c={connections} server={server.name} alg={server.alg} "
            f"tokens/s={figures['tokens_s']:.1f} p50={figures['p50']:.1f}ms "
            f"p99={figures['p99']:.1f}ms max={figures['max']:.1f}ms "
            f"errors={figures['errors']:.0f} server_cpu_us/token={figures['cpu_us']:.0f} "
            f"excl_sign={figures['cpu_excl_sign_us']:.0f} "
            f"ratio={figures['ratio']:.2f} (medians of {rounds} rounds; max = the worst "
            "round's; ratio = tokens/s over the reference's in the same round)")


def _table(servers: list[Server], levels: list[int], runs: dict[tuple[str, int], list[Run]],
           sign_costs: dict[str, list[float]], args: argparse.Namespace) -> list[str]:
    peer_workers = args.peer_workers or args.workers
    labels = {
        PEER: f"{PEER}, cluster of {peer_workers}, RS256",
        ISSUER: f"{ISSUER} --workers {args.workers}, {args.store}, {args.alg}",
    }
    lines = ["| server | c | tokens/s | ratio | p50 | p99 | max | errors | CPU µs/token |",
             "|---|---|---|---|---|---|---|---|---|"]
    for server in servers:
        for connections in levels:
            figures = _summary(server, connections, runs, sign_costs)
            lines.append(
                f"| {labels[server.name]} | {connections} | {figures['tokens_s']:,.0f} | "
                f"{figures['ratio']:.2f}x | {figures['p50']:.1f} ms | {figures['p99']:.1f} ms | "
                f"{figures['max']:.0f} ms | {figures['errors']:.0f} | {figures['cpu_us']:.0f} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
