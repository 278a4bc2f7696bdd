"""Fixtures: the app over HTTP (lifespan entered), a store on SQLite and -- when
``ISSUER_TEST_DATABASE_URL`` is set -- PostgreSQL, an injectable clock.

Every store-dependent test runs once per backend (a fixture parameter). Each
test process (pytest-xdist runs one per CPU) uses a PostgreSQL database of its own,
created for the session and dropped after, and tables are emptied between tests;
each SQLite test gets a fresh file copied from a migrated template. Each test
process has its own Redis key prefix, too.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing, suppress
from dataclasses import replace
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.applications import Starlette

from issuer.app import create_app
from issuer.bootstrap import bootstrap
from issuer.clock import SystemClock
from issuer.crypto import Encryptor, encryptor_for
from issuer.keys.ring import KeyRing
from issuer.registration import ClientSpec, NewClient, create_client, create_tenant
from issuer.settings import Settings
from issuer.store.db import create_engine
from issuer.store.migrate import upgrade
from issuer.store.models import Client, Tenant
from tests.fake_oidc import FakeOIDC

TEST_MASTER_KEY = bytes.fromhex("5f" * 16 + "a3" * 16)
#: The master key rotation tests rotate to (and back from, see restore_master_key).
NEW_KEY = bytes(range(100, 132))
ISSUER = "https://issuer.test"
PG_URL = os.environ.get("ISSUER_TEST_DATABASE_URL")
BACKENDS = ["sqlite", *(["postgres"] if PG_URL else [])]
#: ``@store_independent``: for a test that needs the app (so a store) but whose check
#: never depends on what the store does -- the same on every backend: it runs once,
#: on SQLite, instead of once per backend.
store_independent = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
# The real Redis of the tests (.ci/run sets it and checks it answers). Tests never
# FLUSHDB: their keys are unique by construction (random client, connector ids).
REDIS_URL = os.environ.get("ISSUER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def delete_redis_keys(prefix: str) -> None:
    """Delete every key under ``prefix`` on the test Redis (one test's namespace)."""
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, start: float | None = None) -> None:
        self._now = float(int(start if start is not None else time.time()))

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run(coroutine: Awaitable[Any]) -> Any:
    async def wrapper() -> Any:
        return await coroutine

    return asyncio.run(wrapper())


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(url: str, sql: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


class _KeptConnections:
    """One raw asyncpg connection per database, kept for the whole test process on an
    event loop of its own thread: the per-test reset and audit scan of a PostgreSQL
    store would otherwise each open (and pay for) a new connection."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: dict[str, asyncpg.Connection] = {}
        self._engines: dict[str, AsyncEngine] = {}
        self._lock = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="kept-pg-connections",
                                 daemon=True).start()
                self._loop = loop
            return self._loop

    def execute(self, url: str, sql: str) -> None:
        """Run ``sql`` (statements separated by ``;``) on ``url``'s kept connection."""
        self._call(url, lambda connection: connection.execute(sql))

    def fetch(self, url: str, *statements: str) -> list[list[tuple[Any, ...]]]:
        """The rows of each statement, on ``url``'s kept connection."""
        async def rows(connection: asyncpg.Connection) -> list[list[tuple[Any, ...]]]:
            return [[tuple(row) for row in await connection.fetch(statement)]
                    for statement in statements]

        result: list[list[tuple[Any, ...]]] = self._call(url, rows)
        return result

    def _call(self, url: str, use: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        future = asyncio.run_coroutine_threadsafe(self._use(url, use), self._running_loop())
        return future.result(timeout=LIFESPAN_TIMEOUT)

    async def _use(self, url: str, use: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        for attempt in (1, 2):
            connection = self._connections.get(url)
            if connection is None or connection.is_closed():
                connection = await asyncpg.connect(_asyncpg_dsn(url))
                self._connections[url] = connection
            try:
                return await use(connection)
            except (asyncpg.exceptions.ConnectionDoesNotExistError,
                    asyncpg.exceptions.AdminShutdownError, ConnectionError):
                # The database was restarted or dropped under it: connect again, once.
                self._connections.pop(url, None)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def with_engine(self, url: str, work: Callable[[AsyncEngine], Awaitable[Any]]) -> Any:
        """``await work(engine)`` on this thread's loop with the engine kept for ``url``,
        awaited from the caller's loop: its pooled connection serves every test of the
        process, where a test's own engine would connect (and set up its dialect) anew."""
        async def call() -> Any:
            engine = self._engines.get(url)
            if engine is None:
                engine = self._engines[url] = create_engine(url)
            return await work(engine)

        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(call(), self._running_loop()))

    def close(self) -> None:
        if self._loop is None:
            return

        async def close_all() -> None:
            for connection in self._connections.values():
                with suppress(Exception):
                    await connection.close(timeout=5)
            for engine in self._engines.values():
                with suppress(Exception):
                    await asyncio.wait_for(engine.dispose(), 5)

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)


KEPT = _KeptConnections()


def pytest_sessionfinish(session: pytest.Session) -> None:
    KEPT.close()


@pytest.fixture(scope="session")
def fresh_postgres() -> Iterator[Callable[[], str]]:
    """Makes empty PostgreSQL databases for this run; drops them at the end."""
    assert PG_URL is not None
    made: list[str] = []

    def make() -> str:
        name = f"issuer_test_{uuid.uuid4().hex[:12]}"
        run(_admin(PG_URL, f'CREATE DATABASE "{name}"'))
        # A throwaway database: its commits need not wait for the WAL flush (what
        # the tests check is what was committed, not that the disk kept it).
        run(_admin(PG_URL, f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        made.append(name)
        return _with_database(PG_URL, name)

    yield make
    for name in made:
        run(_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _migrate_and_key(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        settings = Settings(database_url=url, encryption_master_key=TEST_MASTER_KEY)
        await KeyRing(engine, encryptor_for(settings), SystemClock(), alg="RS256").ensure_active()
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url(fresh_postgres: Callable[[], str]) -> str:
    url = fresh_postgres()
    run(_migrate_and_key(url))
    return url


async def reset_sql(url: str, *, keep_rs256_key: bool = True) -> str:
    """SQL that empties the store between tests: DELETE from every table but the
    schema version and the signing keys (the RS256 key stays unless
    ``keep_rs256_key`` is false, keys of other algorithms go), referencing tables
    before the ones they reference, and every sequence restarted (so ids start where
    they do in a new database). DELETE, not TRUNCATE: on tables this small it is an
    order of magnitude cheaper."""
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        tables = [row[0] for row in await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        references = await connection.fetch(
            "SELECT child.relname, parent.relname FROM pg_constraint "
            "JOIN pg_class child ON child.oid = conrelid "
            "JOIN pg_class parent ON parent.oid = confrelid "
            "WHERE contype = 'f' AND connamespace = 'public'::regnamespace")
        sequences = [row[0] for row in await connection.fetch(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")]
    finally:
        await connection.close()
    referenced_by: dict[str, set[str]] = {table: set() for table in tables}
    for child, parent in references:
        if child != parent:
            referenced_by[parent].add(child)
    order = [table for table in TopologicalSorter(referenced_by).static_order()
             if table not in ("alembic_version", "signing_keys")]
    return "; ".join([*(f'DELETE FROM "{table}"' for table in order),
                      "DELETE FROM signing_keys"
                      + (" WHERE alg <> 'RS256'" if keep_rs256_key else ""),
                      *(f'ALTER SEQUENCE "{sequence}" RESTART' for sequence in sequences)])


@pytest.fixture(scope="session")
def postgres_reset(postgres_url: str) -> str:
    """The statement that empties the session's PostgreSQL store (:func:`reset_sql`)."""
    return str(run(reset_sql(postgres_url)))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "issuer.db"
    run(_migrate_and_key(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated store holding one RS256 signing key and nothing else.

    After the test, every audit event it produced is scanned for secrets
    (:func:`assert_no_secrets_in_audit_log`): the whole suite is the sample."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "issuer.db"
        shutil.copyfile(template, target)
        url = f"sqlite+aiosqlite:///{target}"
    else:
        url = request.getfixturevalue("postgres_url")
        KEPT.execute(url, request.getfixturevalue("postgres_reset"))
    yield url
    assert_no_secrets_in_audit_log(url)


# Secrets a test saw (client secrets, tokens): none may appear in an audit event.
SEEN_SECRETS: set[str] = set()
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_SECRET_LIKE = ("m2ms_", "sha256$", "PRIVATE KEY")


def assert_no_secrets_in_audit_log(url: str) -> None:
    leaks = run(find_audit_leaks(url))
    assert not leaks, f"the audit log carries {', '.join(sorted(set(leaks)))}"


async def find_audit_leaks(url: str) -> list[str]:
    """Any client secret (``m2ms_...``), secret hash, stored hash digest, JWT, private
    key or secret a test saw, in any column of any audit event of the store."""
    events, hashes = await _audit_text_and_hashes(url)
    leaks = [marker for marker in _SECRET_LIKE if marker in events]
    leaks += ["a JWT" for _ in _JWT.finditer(events)]
    leaks += [f"the hash {value[:12]}..." for value in hashes
              if value and value.split("$")[-1] in events]
    # Every secret the run saw so far, against this store's events: looked up by its
    # first characters in a set of the text's slices first (one pass over the text),
    # not searched for one by one -- the run sees thousands.
    slices = {events[i:i + _PROBE] for i in range(len(events) - _PROBE + 1)}
    leaks += [f"the secret {value[:8]}..." for value in SEEN_SECRETS
              if (len(value) < _PROBE or value[:_PROBE] in slices) and value in events]
    return leaks


#: Characters of a secret looked up in :func:`find_audit_leaks`'s set of slices.
_PROBE = 8


async def _audit_text_and_hashes(url: str) -> tuple[str, list[str]]:
    """Every audit column as one text, and every stored secret hash, read with the
    raw driver (the test's own engine may be gone)."""
    events_sql = ("SELECT event, actor, tenant_id, client_id, source, request_id, "
                  "CAST(details AS TEXT) FROM audit_events")
    hashes_sql = "SELECT secret_hash, previous_secret_hash FROM clients"
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.split("///", 1)[1])) as database:
            events = database.execute(events_sql).fetchall()
            hashes = database.execute(hashes_sql).fetchall()
    else:
        events, hashes = KEPT.fetch(url, events_sql, hashes_sql)
    text = "\n".join(" ".join(str(value) for value in row) for row in events)
    return text, [value for row in hashes for value in row if value]


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


class RedisServer:
    """A redis-server of the test's own on a free loopback port, to stop and start
    again (the shared Redis is never stopped). Start-up is awaited by reading the
    server's "Ready to accept connections" line, not by sleeping."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._process: subprocess.Popen[str] | None = None
        self._drain = threading.Thread()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self._process is None
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._directory)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self._process.stdout is not None
        seen = []
        for line in self._process.stdout:
            seen.append(line)
            if "Ready to accept connections" in line:
                # Keep reading its log, so that a full pipe never blocks the server.
                self._drain = threading.Thread(target=self._process.stdout.read, daemon=True)
                self._drain.start()
                return
        raise RuntimeError("redis-server did not start:\n" + "".join(seen))

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._drain.join(timeout=30)
            assert self._process.stdout is not None
            self._process.stdout.close()
            self._process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started redis-server of this test's own (see :class:`RedisServer`)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def restore_master_key(engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[None]:
    """Rotation tests rewrap the store's signing key, which the PostgreSQL session
    database keeps between tests: rewrap it back under the test master key after."""
    from issuer.app import ENCRYPTED_COLUMNS
    from issuer.reencrypt import reencrypt

    yield
    await reencrypt(engine, Encryptor(current=TEST_MASTER_KEY, previous=NEW_KEY), clock,
                    columns=ENCRYPTED_COLUMNS)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_key_prefix() -> Iterator[str]:
    """The Redis key prefix of this test process (each xdist worker has its own, and
    so has each run), for :func:`settings`; its keys are deleted at the end."""
    prefix = f"test:{os.environ.get('PYTEST_XDIST_WORKER', 'main')}:{uuid.uuid4().hex[:12]}:"
    yield prefix
    with suppress(RedisConnectionError):  # a run that never needed Redis may have none
        run(delete_redis_keys(prefix))


@pytest.fixture
def settings(database_url: str, redis_key_prefix: str) -> Settings:
    return Settings(issuer_url=ISSUER, database_url=database_url,
                    encryption_master_key=TEST_MASTER_KEY, env="test",
                    redis_key_prefix=redis_key_prefix)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def client(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client bound to the app, with its lifespan entered."""
    async with app_client(settings, clock) as http:
        yield http


#: Seconds an app may take to start or stop before the test fails: generous, because a
#: start can generate a signing key on a machine busy with other test processes.
LIFESPAN_TIMEOUT = 60.0


def lifespan(app: Starlette) -> LifespanManager:
    """``async with lifespan(app)``: ``app`` started, stopped on leaving."""
    return LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT,
                           shutdown_timeout=LIFESPAN_TIMEOUT)


class app_client:
    """``async with app_client(settings, clock) as http``: the app over ASGI."""

    def __init__(self, settings: Settings, clock: FakeClock, *,
                 http_client: httpx.AsyncClient | None = None) -> None:
        # http_client: the app's outbound HTTP (e.g. to a client's jwks_uri).
        self._manager = lifespan(create_app(settings, clock=clock, http_client=http_client))
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        await self._manager.__aenter__()
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._manager.app, client=("203.0.113.7", 4711)),
            base_url=ISSUER,
        )
        return self._http

    async def __aexit__(self, *exc: object) -> None:
        assert self._http is not None
        await self._http.aclose()
        await self._manager.__aexit__(*exc)


class Registered:
    """A registered client and its one-time secret."""

    def __init__(self, client_id: str, client_secret: str, tenant_id: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.tenant_id = tenant_id

    @property
    def basic(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)


async def on_store(engine: AsyncEngine, work: Callable[[AsyncEngine], Awaitable[Any]]) -> Any:
    """``await work(engine)``; on this run's PostgreSQL server with the engine kept for
    the whole test process instead (:meth:`_KeptConnections.with_engine`): a test's own
    engine is left unused, so it never connects."""
    if engine.url.get_backend_name() == "postgresql" and (
            engine.url.host, engine.url.port) == _PG_SERVER:
        return await KEPT.with_engine(engine.url.render_as_string(hide_password=False), work)
    return await work(engine)


#: The host and port of this run's PostgreSQL server (None when there is none).
_PG_SERVER = (make_url(PG_URL).host, make_url(PG_URL).port) if PG_URL else None


class Registrar:
    """``await register(tenant="acme", **spec)``: a tenant (reused by name) and a client;
    ``await register.many({"tenant": ..., **spec}, ...)``: several, in one transaction."""

    def __init__(self, engine: AsyncEngine, clock: FakeClock) -> None:
        self._engine = engine
        self._clock = clock
        self._tenants: dict[str, str] = {}

    async def __call__(self, tenant: str = "acme", **spec: Any) -> Registered:
        [registered] = await self.many({"tenant": tenant, **spec})
        return registered

    async def many(self, *specs: dict[str, Any]) -> list[Registered]:
        async def write(engine: AsyncEngine) -> list[tuple[str, NewClient]]:
            made = []
            async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
                for given in specs:
                    spec = {"name": "test client", "allowed_scopes": ["orders:read"], **given}
                    tenant = spec.pop("tenant", "acme")
                    if tenant not in self._tenants:
                        self._tenants[tenant] = (
                            await create_tenant(session, tenant, self._clock)).id
                    made.append((tenant, await create_client(
                        session, ClientSpec(tenant_id=self._tenants[tenant], **spec),
                        self._clock, encryptor=Encryptor(current=TEST_MASTER_KEY))))
            return made

        registered = []
        for tenant, created in await on_store(self._engine, write):
            if created.client_secret:
                SEEN_SECRETS.add(created.client_secret)
            registered.append(Registered(created.record.client_id, created.client_secret,
                                         self._tenants[tenant]))
        return registered


@pytest.fixture
def register(engine: AsyncEngine, clock: FakeClock) -> Registrar:
    """A :class:`Registrar` on the test's store."""
    return Registrar(engine, clock)


@pytest.fixture
def platform_admin(engine: AsyncEngine, clock: FakeClock) -> Callable[[], Awaitable[Registered]]:
    """``await platform_admin()``: the bootstrap tenant and its admin client
    (scopes ``admin introspect``), as ``issuer serve`` creates them on first start."""

    async def make() -> Registered:
        created = await on_store(engine, lambda engine: bootstrap(engine, clock))
        assert created is not None, "bootstrap runs once per store"
        record = created.record
        if created.client_secret:
            SEEN_SECRETS.add(created.client_secret)
        return Registered(record.client_id, created.client_secret, record.tenant_id)

    return make


async def issue_token(http: httpx.AsyncClient, registered: Registered,
                      scope: str | None = None) -> str:
    """A Bearer token for ``registered`` from POST /token (client_secret_basic)."""
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    response = await http.post("/token", data=form, auth=registered.basic)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    SEEN_SECRETS.add(token)
    return token


@pytest.fixture
def set_status(engine: AsyncEngine) -> Callable[..., Awaitable[None]]:
    """Flip a client's or tenant's status (what the admin API will do)."""

    async def flip(*, client_id: str | None = None, tenant_id: str | None = None,
                   status: str = "disabled", grant_types: list[str] | None = None) -> None:
        async with engine.begin() as connection:
            if client_id is not None:
                values: dict[str, Any] = {"status": status}
                if grant_types is not None:
                    values = {"grant_types": grant_types}
                await connection.execute(update(Client).where(Client.id == client_id)
                                         .values(**values))
            if tenant_id is not None:
                await connection.execute(update(Tenant).where(Tenant.id == tenant_id)
                                         .values(status=status))

    return flip


@pytest.fixture(scope="session")
def fake_oidc() -> Iterator[FakeOIDC]:
    """External OIDC issuers on one loopback HTTP server, for federated credentials
    (``tests.fake_oidc``): shared by the session, so a test pays nothing to start one."""
    fake = FakeOIDC()
    yield fake
    fake.close()


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The app on a real loopback socket (for clients that do their own HTTP)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue here until uvicorn accepts: no start-up wait
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app = create_app(replace(settings, issuer_url=url))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield url
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


_SERVING = re.compile(r"issuer: serving \S+ on (http://127\.0\.0\.1:\d+)")


class ServeProcess:
    """``issuer serve --port 0`` in a process of its own. Its URL is read from its
    start-up line; every line it writes to stderr is kept in :attr:`log`."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str, wait: bool = True) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "issuer", "serve", "--host", "127.0.0.1", "--port", "0",
             *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        if wait:
            self.wait_until_serving()

    @classmethod
    def several(cls, env: dict[str, str], cwd: Path, count: int, *args: str) -> list[ServeProcess]:
        """``count`` servers started at once (their start-ups overlap), each answering."""
        servers = [cls(env, cwd, *args, wait=False) for _ in range(count)]
        try:
            for server in servers:
                server.wait_until_serving()
        except BaseException:
            for server in servers:
                server.process.kill()
                server.process.wait(timeout=60)
            raise
        return servers

    def wait_until_serving(self) -> None:
        """Read the start-up line (the URL), then poll until a worker answers."""
        assert self.process.stderr is not None
        seen = []
        for line in self.process.stderr:
            seen.append(line)
            match = _SERVING.search(line)
            if match:
                self.url = match[1]
                break
        else:
            raise RuntimeError("issuer serve did not start:\n" + "".join(seen))
        self.log: list[str] = []
        self._lines = threading.Condition()
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()
        self._wait_until_answering()

    def _wait_until_answering(self, attempts: int = 600) -> None:
        """The start-up line comes before a worker listens: poll ``/healthz`` (each
        attempt bounded by its connect timeout) until one answers."""
        for _ in range(attempts):
            try:
                httpx.get(f"{self.url}/healthz", timeout=1.0)
                return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    break
                with self._lines:  # wait for the next log line, or 0.1 s
                    self._lines.wait(0.1)
        raise RuntimeError("issuer serve never answered:\n" + "".join(self.log[-30:]))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lines:
                self.log.append(line)
                self._lines.notify_all()

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        """The first line of the log that satisfies ``predicate``, waiting for it."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self.log if predicate(line)][:1]
            return bool(found)

        with self._lines:
            if not self._lines.wait_for(seen, timeout):
                raise AssertionError("no such line in the server's log:\n" + "".join(self.log))
        return found[0]

    def scrape_workers(self, workers: int, *, attempts: int = 200) -> dict[str, str]:
        """``/metrics`` of each worker process, by pid: fresh connections until
        ``workers`` different processes have answered (the kernel picks one per
        connection). Connections refused while workers start are retried."""
        pages: dict[str, str] = {}
        for _ in range(attempts):
            try:
                page = httpx.get(f"{self.url}/metrics", headers={"Connection": "close"},
                                 timeout=10.0).text
            except httpx.TransportError:
                if self.process.poll() is not None:
                    break
                continue
            (pid,) = [sample.labels["pid"] for family in text_string_to_metric_families(page)
                      for sample in family.samples if sample.name == "issuer_process_info"]
            pages[pid] = page
            if len(pages) == workers:
                return pages
        raise AssertionError(f"{len(pages)} of {workers} workers answered:\n"
                             + "".join(self.log[-30:]))

    def stop(self) -> int | None:
        """SIGTERM, then wait for the process to exit; its exit status."""
        if self.process.returncode is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self._drain.join(timeout=30)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return self.process.returncode
