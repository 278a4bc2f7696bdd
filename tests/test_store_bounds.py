"""A frozen or locked database costs a request a bounded wait (ISSUER_STORE_TIMEOUT),
never a pile of waiting requests: past the bound the answer is 503
``temporarily_unavailable`` with ``Retry-After``; the writer's queue and the
database connections stay capped; after the store comes back every 200 has its
token record and audit event. Store failures are counted and logged once per
interval, and no SQL parameter reaches a log line.

The frozen database is a PostgreSQL cluster of this module's own (``initdb`` +
``postgres`` on a free loopback port) stopped with SIGSTOP and resumed with
SIGCONT -- the shared server is never touched. The locked one is SQLite with a
write lock held by another connection.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, closing, contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import jwt as pyjwt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import async_sessionmaker

from issuer.bootstrap import bootstrap
from issuer.registration import ClientSpec, create_client, create_tenant
from issuer.settings import Settings
from issuer.store.db import create_engine
from tests.conftest import (
    ISSUER,
    PG_URL,
    SEEN_SECRETS,
    TEST_MASTER_KEY,
    FakeClock,
    _admin,
    _migrate_and_key,
    app_client,
    run,
)

GRANT = {"grant_type": "client_credentials"}
UNAVAILABLE = {"error": "temporarily_unavailable",
               "error_description": "The service is temporarily unavailable, try again later"}
#: The tests' bound: short, so that waiting on a frozen server is quick.
TIMEOUT = 1.0
#: What a loaded test machine may add to a bounded wait before the answer is out.
SLACK = 1.5
PENDING_CAP = 16


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE
    assert response.headers["retry-after"] == "5"
    assert response.headers["cache-control"] == "no-store"


def _value(text: str, name: str) -> float:
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name)


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response and how many seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await request
    return response, loop.time() - started


async def granted_again(http: httpx.AsyncClient, basic: tuple[str, str]) -> httpx.Response:
    """Ask for a token until one is granted (a store coming back), for at most 10 s;
    between two tries, ``/readyz`` makes a round trip to the store."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        response = await http.post("/token", data=GRANT, auth=basic)
        if response.status_code != 503 or loop.time() > deadline:
            return response
        await http.get("/readyz")


# A PostgreSQL of this module's own ---------------------------------------------------


class OwnPostgres:
    """A throwaway PostgreSQL cluster on a free loopback port. Run as the ``postgres``
    user when the tests run as root (PostgreSQL refuses root). Start-up is awaited by
    reading the server's "ready to accept connections" line, not by sleeping."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            pytest.skip("needs PostgreSQL's initdb (/usr/lib/postgresql/*/bin)")
        self._bin = Path(found[-1]).parent
        self._user = "postgres" if os.geteuid() == 0 else None
        self._directory = Path(tempfile.mkdtemp(prefix="issuer-pg-"))
        if self._user is not None:
            account = pwd.getpwnam(self._user)
            os.chown(self._directory, account.pw_uid, account.pw_gid)
        self._data = self._directory / "data"
        subprocess.run([str(self._bin / "initdb"), "-D", str(self._data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"],
                       user=self._user, check=True, capture_output=True, timeout=120)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._process = subprocess.Popen(
            [str(self._bin / "postgres"), "-D", str(self._data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "fsync=off", "-c", "full_page_writes=off"],
            user=self._user, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self._process.stdout is not None
        seen = []
        for line in self._process.stdout:
            seen.append(line)
            if "ready to accept connections" in line:
                break
        else:
            raise RuntimeError("postgres did not start:\n" + "".join(seen))
        self._drain = threading.Thread(target=self._process.stdout.read, daemon=True)
        self._drain.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _processes(self) -> list[int]:
        """The postmaster and its children (each backend leads its own process group)."""
        pids = [self._process.pid]
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self._process.pid:
                pids.append(int(entry))
        return pids

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP every process of the cluster; SIGCONT on leaving."""
        for pid in self._processes():
            _signal(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in self._processes():
                _signal(pid, signal.SIGCONT)

    def stop(self) -> None:
        for pid in self._processes():
            _signal(pid, signal.SIGCONT)
        self._process.send_signal(signal.SIGQUIT)  # immediate shutdown: it is thrown away
        self._process.wait(timeout=60)
        self._drain.join(timeout=30)
        assert self._process.stdout is not None
        self._process.stdout.close()
        shutil.rmtree(self._directory, ignore_errors=True)


def _signal(pid: int, signum: int) -> None:
    """A backend listed a moment ago may have exited since: nothing to signal then."""
    with suppress(ProcessLookupError):
        os.kill(pid, signum)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    if PG_URL is None:
        pytest.skip("needs ISSUER_TEST_DATABASE_URL")
    server = OwnPostgres()
    yield server
    server.stop()


class Store:
    """A migrated store with one client, and what a test needs to read it back."""

    def __init__(self, url: str, client_id: str, client_secret: str) -> None:
        self.url = url
        self.basic = (client_id, client_secret)

    async def issued_jtis(self) -> set[str]:
        """The jti of every token record that has its M2M_TOKEN_GENERATED event."""
        sql = ("SELECT t.jti FROM issued_tokens t JOIN audit_events e "
               "ON e.event = 'M2M_TOKEN_GENERATED' AND e.client_id = t.client_id")
        if self.url.startswith("sqlite"):
            with closing(sqlite3.connect(self.url.split("///", 1)[1])) as database:
                rows = database.execute(
                    sql + " AND json_extract(e.details, '$.jti') = t.jti").fetchall()
            return {row[0] for row in rows}
        connection = await asyncpg.connect(self.url.replace("+asyncpg", ""))
        try:
            rows = await connection.fetch(sql + " AND e.details->>'jti' = t.jti")
        finally:
            await connection.close()
        return {row[0] for row in rows}


async def _store(url: str, clock: FakeClock) -> Store:
    await _migrate_and_key(url)
    engine = create_engine(url)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            tenant = await create_tenant(session, "acme", clock)
            created = await create_client(session, ClientSpec(
                tenant_id=tenant.id, name="c", allowed_scopes=["orders:read"]), clock)
    finally:
        await engine.dispose()
    SEEN_SECRETS.add(created.client_secret)
    return Store(url, created.record.client_id, created.client_secret)


@pytest.fixture
def frozen_store(own_postgres: OwnPostgres, clock: FakeClock) -> Store:
    """A database of this test's own on the freezable server."""
    name = f"issuer_{os.urandom(6).hex()}"
    run(_admin(own_postgres.url(), f'CREATE DATABASE "{name}"'))
    return run(_store(own_postgres.url(name), clock))


@pytest.fixture
def sqlite_store(tmp_path: Path, clock: FakeClock) -> Store:
    return run(_store(f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}", clock))


def bounded_settings(url: str) -> Settings:
    return Settings(issuer_url=ISSUER, database_url=url, encryption_master_key=TEST_MASTER_KEY,
                    env="test", store_timeout=TIMEOUT, store_max_pending_writes=PENDING_CAP)


@asynccontextmanager
async def served(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    # A guard: an unbounded wait fails the test instead of hanging it.
    async with asyncio.timeout(120), app_client(settings, clock) as http:
        yield http


@contextmanager
def sqlite_write_lock(url: str) -> Iterator[None]:
    """Another connection holds the database's write lock (as a CLI command may)."""
    with closing(sqlite3.connect(url.split("///", 1)[1], isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


def jti(response: httpx.Response) -> str:
    token = response.json()["access_token"]
    SEEN_SECRETS.add(token)
    return str(pyjwt.decode(token, options={"verify_signature": False})["jti"])


# The token endpoint --------------------------------------------------------------------


async def test_a_frozen_database_answers_503_with_retry_after_within_the_bound(
        own_postgres, frozen_store, clock):
    async with served(bounded_settings(frozen_store.url), clock) as http:
        granted = [await http.post("/token", data=GRANT, auth=frozen_store.basic)]
        assert granted[0].status_code == 200

        # Requests already in flight when the database freezes, then a burst while
        # it is frozen: more than the writer's queue may hold.
        in_flight = [asyncio.create_task(timed(http.post("/token", data=GRANT,
                                                         auth=frozen_store.basic)))
                     for _ in range(10)]
        await asyncio.sleep(0)  # let them start (a yield: no time is waited for)
        with own_postgres.frozen():
            burst = await asyncio.gather(*[
                timed(http.post("/token", data=GRANT, auth=frozen_store.basic))
                for _ in range(3 * PENDING_CAP)])
            started = await asyncio.gather(*in_flight)
            # The client's cached record expires: now the requests wait (together) for
            # the database to load it, not for the writer.
            clock.advance(60)
            burst += await asyncio.gather(*[
                timed(http.post("/token", data=GRANT, auth=frozen_store.basic))
                for _ in range(PENDING_CAP)])
            metrics = (await http.get("/metrics")).text
        for response, seconds in burst:
            assert_unavailable(response)
            assert seconds <= TIMEOUT + SLACK
        for response, seconds in started:
            assert response.status_code in (200, 503)
            assert seconds <= TIMEOUT + SLACK
        granted += [response for response, _ in started if response.status_code == 200]
        # Nothing piled up: the queue stayed under its cap, connections under the pool's.
        assert _value(metrics, "issuer_store_pending_writes") <= PENDING_CAP
        assert _value(metrics, "issuer_store_connections_in_use") <= 20
        refused = 4 * PENDING_CAP + sum(r.status_code == 503 for r, _ in started)
        assert _value(metrics, "issuer_store_unavailable_total") == refused
        assert _value(metrics, "issuer_token_failures_total") == refused

        # SIGCONT: the service recovers by itself, once the writer has drained what
        # the freeze left queued.
        recovered, seconds = await timed(granted_again(http, frozen_store.basic))
        assert recovered.status_code == 200
        assert seconds <= 2 * TIMEOUT + SLACK
        granted.append(recovered)

    # Every 200 has its record and audit event (a 503's may have landed late: allowed).
    assert {jti(response) for response in granted} <= await frozen_store.issued_jtis()


async def test_a_locked_sqlite_store_answers_503_with_retry_after_then_recovers(
        sqlite_store, clock):
    async with served(bounded_settings(sqlite_store.url), clock) as http:
        first = await http.post("/token", data=GRANT, auth=sqlite_store.basic)
        assert first.status_code == 200
        with sqlite_write_lock(sqlite_store.url):
            locked = await asyncio.gather(*[
                timed(http.post("/token", data=GRANT, auth=sqlite_store.basic))
                for _ in range(5)])
        for response, seconds in locked:
            assert_unavailable(response)
            assert seconds <= TIMEOUT + SLACK
        again, seconds = await timed(granted_again(http, sqlite_store.basic))
        assert again.status_code == 200
        assert seconds <= 2 * TIMEOUT + SLACK
    assert {jti(first), jti(again)} <= await sqlite_store.issued_jtis()


async def test_a_full_writer_queue_refuses_at_once(sqlite_store, clock):
    """Past ISSUER_STORE_MAX_PENDING_WRITES a token request is not queued at all: it is
    refused while the queued ones still wait for the locked store, and those are
    granted once the lock goes. (A long store timeout keeps the queued ones waiting, so
    "at once" is shown by order, not by a wall-clock threshold a busy machine breaks.)"""
    settings = replace(bounded_settings(sqlite_store.url), store_timeout=60.0)
    async with served(settings, clock) as http:
        assert (await http.post("/token", data=GRANT, auth=sqlite_store.basic)).status_code == 200
        with sqlite_write_lock(sqlite_store.url):
            # The first PENDING_CAP + 1 fill the writer (one in its transaction); the
            # rest are refused before they could wait.
            waiting = {asyncio.ensure_future(http.post("/token", data=GRANT,
                                                       auth=sqlite_store.basic))
                       for _ in range(PENDING_CAP + 1 + 20)}
            refused: list[httpx.Response] = []
            while len(refused) < 20:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                refused.extend(task.result() for task in done)
            metrics = (await http.get("/metrics")).text
            assert len(refused) == 20 and len(waiting) == PENDING_CAP + 1
        granted = await asyncio.gather(*waiting)
    for response in refused:
        assert_unavailable(response)
    assert _value(metrics, "issuer_store_pending_writes") <= PENDING_CAP
    assert [response.status_code for response in granted] == [200] * (PENDING_CAP + 1)
    assert {jti(response) for response in granted} <= await sqlite_store.issued_jtis()


# The other endpoints that touch the store ----------------------------------------------


async def test_introspection_revocation_and_the_admin_api_answer_503_while_frozen(
        own_postgres, frozen_store, clock):
    settings = bounded_settings(frozen_store.url)
    engine = create_engine(frozen_store.url)
    admin = await bootstrap(engine, clock)
    await engine.dispose()
    assert admin is not None
    SEEN_SECRETS.add(admin.client_secret)
    admin_basic = (admin.record.client_id, admin.client_secret)
    async with served(settings, clock) as http:
        token = (await http.post("/token", data={**GRANT, "scope": "admin"},
                                 auth=admin_basic)).json()["access_token"]
        SEEN_SECRETS.add(token)
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/api/v1/tenants", headers=bearer)).status_code == 200
        with own_postgres.frozen():
            answers = await asyncio.gather(
                timed(http.post("/introspect", data={"token": token}, auth=admin_basic)),
                timed(http.post("/revoke", data={"token": token}, auth=admin_basic)),
                timed(http.get("/api/v1/tenants", headers=bearer)),
                timed(http.post("/api/v1/tenants", headers=bearer, json={"name": "globex"})),
            )
            metrics = (await http.get("/metrics")).text
        for response, seconds in answers[:2]:
            assert_unavailable(response)
            assert seconds <= TIMEOUT + SLACK
        # The admin API: each database call is bounded (the pool's ping, a reconnect).
        for response, seconds in answers[2:]:
            assert_unavailable(response)
            assert seconds <= 3 * TIMEOUT + SLACK
        assert _value(metrics, "issuer_store_unavailable_total") == 4

        # SIGCONT: answered again.
        assert (await http.get("/api/v1/tenants", headers=bearer)).status_code == 200
        assert (await http.post("/introspect", data={"token": token},
                                auth=admin_basic)).status_code == 200


# Quiet failure modes and secrets in logs ----------------------------------------------


@asynccontextmanager
async def issued_tokens_table_missing(url: str) -> AsyncIterator[None]:
    """Every token write fails (its table renamed away), until the block ends."""
    rename = "ALTER TABLE {} RENAME TO {}"
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.split("///", 1)[1], isolation_level=None)) as db:
            db.execute(rename.format("issued_tokens", "issued_tokens_away"))
            try:
                yield
            finally:
                db.execute(rename.format("issued_tokens_away", "issued_tokens"))
    else:
        await _admin(url, rename.format("issued_tokens", "issued_tokens_away"))
        try:
            yield
        finally:
            await _admin(url, rename.format("issued_tokens_away", "issued_tokens"))


async def test_store_failures_are_logged_once_per_interval_and_all_counted(
        database_url, register, clock, caplog):
    registered = await register()
    settings = Settings(issuer_url=ISSUER, database_url=database_url,
                        encryption_master_key=TEST_MASTER_KEY, env="test")
    caplog.set_level(logging.ERROR, logger="issuer.store.failures")
    async with served(settings, clock) as http:
        async with issued_tokens_table_missing(database_url):
            for _ in range(25):
                assert_unavailable(await http.post("/token", data=GRANT, auth=registered.basic))
            lines = [r for r in caplog.records if r.name == "issuer.store.failures"]
            assert len(lines) == 1  # not 25 tracebacks
            assert lines[0].fields["unlogged"] == 0  # type: ignore[attr-defined]
            clock.advance(10)
            assert_unavailable(await http.post("/token", data=GRANT, auth=registered.basic))
        lines = [r for r in caplog.records if r.name == "issuer.store.failures"]
        assert len(lines) == 2
        assert lines[1].fields["unlogged"] == 24  # type: ignore[attr-defined]
        assert "24 more refused requests" in lines[1].getMessage()
        metrics = (await http.get("/metrics")).text
        assert _value(metrics, "issuer_store_unavailable_total") == 26
        assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 200


async def test_no_sql_parameter_reaches_a_log_line_on_a_store_error(
        database_url, register, clock, caplog):
    registered = await register()
    settings = Settings(issuer_url=ISSUER, database_url=database_url,
                        encryption_master_key=TEST_MASTER_KEY, env="test")
    caplog.set_level(logging.INFO)  # what `issuer serve` logs by default
    async with served(settings, clock) as http, issued_tokens_table_missing(database_url):
        refused = await http.post("/token", data={**GRANT, "scope": "orders:read"},
                                  auth=registered.basic)
    assert_unavailable(refused)
    logged = caplog.text  # messages and tracebacks
    # The failing statement is in the log, its values are not.
    assert "INSERT INTO issued_tokens" in logged
    assert "SQL parameters hidden" in logged
    assert "[parameters:" not in logged
    assert registered.tenant_id not in logged
    assert "orders:read" not in logged


async def test_a_database_call_outside_a_request_is_bounded_too(own_postgres, frozen_store):
    """Background tasks (retention, key reloads) use the same engine: bounded."""
    engine = create_engine(frozen_store.url, timeout=TIMEOUT)
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
        loop = asyncio.get_running_loop()
        with own_postgres.frozen():
            started = loop.time()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(30), engine.connect() as connection:
                    await connection.exec_driver_sql("SELECT 1")
            assert loop.time() - started <= 2 * TIMEOUT + SLACK
    finally:
        await engine.dispose()

