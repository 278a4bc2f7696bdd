"""The issuer's own CPU per POST /token, in process: the ASGI app called directly.

No HTTP server and no load generator share the measurement: the app (every
middleware, the real store, the real signing) runs under uvloop in this process,
``--concurrency`` requests at a time, and the process's CPU time (every thread:
the event loop, signing threads, aiosqlite's thread) is divided by the tokens
issued. The same process then measures one RS256 signature's CPU time with the
active key, so ``excl_sign`` (CPU per token minus one signature) is the path's
own cost, comparable across runs on a busy machine::

    .venv/bin/python bench/profile_token_path.py                    # SQLite
    .venv/bin/python bench/profile_token_path.py --postgres postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python bench/profile_token_path.py --cprofile /tmp/token.prof

Output: ``key=value`` lines (``cpu_us/token``, ``sign_cpu_us``, ``excl_sign``).
HTTP parsing (Granian, in Rust) is not in these figures; ``token_endpoint.py``
measures the whole server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import gc
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import uvloop
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import async_sessionmaker

from issuer.app import create_app
from issuer.clock import SystemClock
from issuer.crypto import encryptor_for
from issuer.registration import ClientSpec, create_client, create_tenant
from issuer.serving import SWITCH_INTERVAL
from issuer.settings import Settings
from issuer.store.db import create_engine
from issuer.store.migrate import upgrade

BODY = b"grant_type=client_credentials&scope=read"


async def _prepare(settings: Settings) -> str:
    """Migrate, register one client allowed ``read``; its Basic credentials."""
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        clock = SystemClock()
        async with sessions() as session, session.begin():
            tenant = await create_tenant(session, "bench", clock)
            created = await create_client(
                session, ClientSpec(tenant_id=tenant.id, name="bench", allowed_scopes=["read"]),
                clock, encryptor=encryptor_for(settings))
    finally:
        await engine.dispose()
    assert created.client_secret is not None
    pair = f"{quote(created.record.client_id, safe='')}:{quote(created.client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _scope(authorization: str, number: int) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/token",
        "raw_path": b"/token", "root_path": "", "query_string": b"",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 40000 + number % 1000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"),
                    (b"authorization", authorization.encode()),
                    (b"content-type", b"application/x-www-form-urlencoded"),
                    (b"content-length", str(len(BODY)).encode())],
    }


async def _one(app: Any, authorization: str, number: int) -> int:
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # a disconnect that never comes
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(authorization, number), receive, send)
    return status


async def _drive(app: Any, authorization: str, requests: int, concurrency: int) -> int:
    issued = 0
    counter = iter(range(requests))

    async def worker() -> None:
        nonlocal issued
        for number in counter:
            if await _one(app, authorization, number) == 200:
                issued += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return issued


def _thread_cpu() -> dict[str, float]:
    """CPU seconds so far of each of this process's threads, summed by thread name."""
    ticks = os.sysconf("SC_CLK_TCK")
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    seen: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        name = names.get(int(task.name), name).split("_")[0].rstrip("-0123456789")
        seen[name] = seen.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return seen


def _raw_sign_cpu_us(raw: Any = None, count: int = 300) -> float:
    """CPU microseconds (this thread's) of one RSA-2048 PKCS#1 v1.5 SHA-256 signature
    over ~300 bytes with ``cryptography``: what every RS256 token costs at least."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    if raw is None:
        raw = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = base64.urlsafe_b64encode(os.urandom(225))
    pad, digest = padding.PKCS1v15(), hashes.SHA256()
    for _ in range(20):
        raw.sign(message, pad, digest)
    started = time.thread_time()
    for _ in range(count):
        raw.sign(message, pad, digest)
    return (time.thread_time() - started) / count * 1e6


def _sign_cpu_us(app_state: dict[str, Any], count: int = 300) -> tuple[float, float]:
    """CPU microseconds of one raw RS256 signature (:func:`_raw_sign_cpu_us`) and of
    one :meth:`SigningKey.sign` over real claims, with the active key."""
    key = app_state["services"].keyring.active
    raw_us = _raw_sign_cpu_us(key.private.private_key, count)
    claims = {"iss": "http://127.0.0.1:8000", "sub": "m2m_x" * 5, "aud": "api", "exp": 1,
              "iat": 1, "nbf": 1, "jti": "j" * 22, "client_id": "m2m_x" * 5, "scope": "read",
              "tenant_id": "t" * 36, "mode": "m2m"}
    started = time.thread_time()
    for _ in range(count):
        key.sign(claims)
    key_us = (time.thread_time() - started) / count * 1e6
    return raw_us, key_us


async def _run(args: argparse.Namespace, database_url: str) -> None:
    settings = Settings(issuer_url="http://127.0.0.1:8000", database_url=database_url,
                        encryption_master_key=secrets.token_bytes(32),
                        rate_limit="1000000000/minute")
    authorization = await _prepare(settings)
    # Only when given: the option is newer than the app some comparisons run against.
    options = {} if args.sign_threads is None else {"sign_threads": args.sign_threads}
    app = create_app(settings, **options)
    async with LifespanManager(app, startup_timeout=120) as manager:
        state = manager._state  # the lifespan's state (services)
        wrapped = manager.app
        await _drive(wrapped, authorization, args.warmup, args.concurrency)
        # The garbage collector and switch interval as `issuer serve` sets them
        # (issuer.app.create_app_from_env).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        sys.setswitchinterval(SWITCH_INTERVAL)
        profiler = cProfile.Profile() if args.cprofile else None
        wall = time.perf_counter()
        cpu = time.process_time()
        threads = _thread_cpu()
        if profiler:
            profiler.enable()
        issued = await _drive(wrapped, authorization, args.requests, args.concurrency)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
        cpu = time.process_time() - cpu
        after = _thread_cpu()
        split = {name: (after[name] - threads.get(name, 0.0)) / max(issued, 1) * 1e6
                 for name in after}
        wall = time.perf_counter() - wall
        raw_us, key_us = _sign_cpu_us(state)
    per_token = cpu / max(issued, 1) * 1e6
    store = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    print(f"bench=profile_token_path store={store} requests={args.requests} "
          f"sign_threads={'cpus' if args.sign_threads is None else args.sign_threads} "
          f"concurrency={args.concurrency} issued={issued} tokens/s={issued / wall:.0f} "
          f"cpu_us/token={per_token:.0f} sign_cpu_us={raw_us:.0f} "
          f"key_sign_cpu_us={key_us:.0f} excl_sign={per_token - raw_us:.0f}"
          f"{' (cProfile on)' if args.cprofile else ''}")
    print("thread_cpu_us/token " + " ".join(
        f"{name}={value:.0f}" for name, value in sorted(split.items(), key=lambda kv: -kv[1])
        if value >= 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="a PostgreSQL server; a throwaway database is made on it")
    parser.add_argument("--cprofile", metavar="FILE", default=None,
                        help="write a cProfile of the measured requests (slows them)")
    parser.add_argument("--sign-threads", type=int, default=None,
                        help="the app's signing threads (0: sign on the event loop; "
                             "default: one per CPU)")
    parser.add_argument("--sign-only", action="store_true",
                        help="print only the CPU microseconds of one raw RS256 signature "
                             "(to subtract from another benchmark's CPU per token)")
    args = parser.parse_args()
    if args.sign_only:
        print(f"sign_cpu_us={_raw_sign_cpu_us():.0f}")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="issuer-profile-"))
    admin_dsn = name = None
    try:
        if args.postgres:
            admin_dsn = args.postgres
            name = f"issuer_profile_{uuid.uuid4().hex[:12]}"
            asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
            base = admin_dsn.rpartition("/")[0].replace("postgresql://", "postgresql+asyncpg://")
            database_url = f"{base}/{name}"
        else:
            database_url = f"sqlite+aiosqlite:///{workdir / 'issuer.db'}"
        uvloop.run(_run(args, database_url))
    finally:
        if admin_dsn and name:
            asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


async def _admin(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


if __name__ == "__main__":
    sys.exit(main())
