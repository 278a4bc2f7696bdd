"""An admin change reaches every process (issuer.changes), through two real
``issuer serve`` processes on one store: SQLite or PostgreSQL, each with Redis
(pub/sub) and without (SQLite's change stamp, PostgreSQL's LISTEN/NOTIFY).

A change is made through the admin API of the first process; the second, which
had the client cached, refuses it within :data:`BOUND` seconds of the admin's
answer (polled, the bound asserted). The two processes start once per store and
notice channel; each test makes a tenant and clients of its own.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from issuer.bootstrap import bootstrap
from issuer.changes import PG_APPLICATION, RECONNECT, REDIS_CHANNEL, TIMEOUT
from issuer.clock import SystemClock
from issuer.store.db import create_engine
from tests.conftest import (
    BACKENDS,
    PG_URL,
    REDIS_URL,
    SEEN_SECRETS,
    TEST_MASTER_KEY,
    ServeProcess,
    _asyncpg_dsn,
    _migrate_and_key,
    app_client,
    assert_no_secrets_in_audit_log,
    delete_redis_keys,
    run,
)

#: Seconds within which the other process must refuse a changed client.
BOUND = 1.0
GRANT = {"grant_type": "client_credentials"}
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Client authentication failed"}
INVALID_TOKEN = {"error": "invalid_token",
                 "error_description": "The access token is missing, expired, revoked or not "
                                      "for this API"}
INSUFFICIENT_SCOPE = {"error": "insufficient_scope",
                      "error_description": "The access token does not grant this operation"}


@dataclass
class Cluster:
    """Two ``issuer serve`` processes on one store, and the platform admin's credentials."""

    first: ServeProcess
    second: ServeProcess
    admin: tuple[str, str]


@dataclass
class Client:
    client_id: str
    secret: str
    tenant_id: str

    @property
    def basic(self) -> tuple[str, str]:
        return (self.client_id, self.secret)


async def _bootstrap(url: str) -> tuple[str, str]:
    engine = create_engine(url)
    try:
        created = await bootstrap(engine, SystemClock())
    finally:
        await engine.dispose()
    assert created is not None and created.client_secret is not None
    SEEN_SECRETS.add(created.client_secret)
    return created.record.client_id, created.client_secret


@pytest.fixture(scope="module",
                params=[(backend, notices) for backend in BACKENDS
                        for notices in ("redis", "no-redis")],
                ids=lambda param: "-".join(param))
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    backend, notices = request.param
    directory = tmp_path_factory.mktemp("cluster")
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, directory / "issuer.db")
        url = f"sqlite+aiosqlite:///{directory / 'issuer.db'}"
    else:
        assert PG_URL is not None
        url = request.getfixturevalue("fresh_postgres")()
        run(_migrate_and_key(url))
    admin = run(_bootstrap(url))
    prefix = f"test:{uuid.uuid4().hex}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "ENCRYPTION_"))}
    env.update({"ISSUER_DATABASE_URL": url, "ENCRYPTION_MASTER_KEY": TEST_MASTER_KEY.hex(),
                # The polls below fail authentications on purpose: no brute-force guard.
                "ISSUER_RATE_LIMITING": "off"})
    if notices == "redis":
        env.update({"ISSUER_REDIS_URL": REDIS_URL, "ISSUER_REDIS_KEY_PREFIX": prefix})
    servers: list[ServeProcess] = []
    try:
        servers.extend(ServeProcess.several(env, directory, 2, "--workers", "1"))
        yield Cluster(servers[0], servers[1], admin)
    finally:
        for server in servers:
            server.stop()
        if notices == "redis":
            run(delete_redis_keys(prefix))
    assert_no_secrets_in_audit_log(url)


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=10) as session:
        yield session


async def token(http: httpx.AsyncClient, base: str, basic: tuple[str, str],
                **form: str) -> httpx.Response:
    return await http.post(f"{base}/token", data={**GRANT, **form}, auth=basic)


async def access_token(http: httpx.AsyncClient, base: str, basic: tuple[str, str],
                       **form: str) -> str:
    response = await token(http, base, basic, **form)
    assert response.status_code == 200, response.text
    value: str = response.json()["access_token"]
    SEEN_SECRETS.add(value)
    return value


class Admin:
    """The admin API of ``base`` as the platform admin."""

    def __init__(self, http: httpx.AsyncClient, base: str, bearer: str) -> None:
        self.http, self.base = http, base
        self.headers = {"Authorization": f"Bearer {bearer}"}

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.http.request(method, f"{self.base}{path}", json=body,
                                           headers=self.headers)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    async def tenant(self) -> str:
        created = await self.call("POST", "/api/v1/tenants",
                                  {"name": f"t-{uuid.uuid4().hex[:12]}"}, status=201)
        return str(created["tenant_id"])

    async def client(self, tenant_id: str, scopes: list[str]) -> Client:
        created = await self.call("POST", "/api/v1/clients", {
            "tenant_id": tenant_id, "name": "worker", "allowed_scopes": scopes}, status=201)
        SEEN_SECRETS.add(created["client_secret"])
        return Client(created["client_id"], created["client_secret"], tenant_id)


@pytest.fixture
async def admin(cluster: Cluster, http: httpx.AsyncClient) -> Admin:
    """The platform admin, through the first process."""
    bearer = await access_token(http, cluster.first.url, cluster.admin, scope="admin")
    return Admin(http, cluster.first.url, bearer)


async def within(bound: float, attempt: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until ``attempt`` says yes, tried again at once until then; fails past
    ``bound``. Between two attempts the event loop runs what is due (an attempt answered
    without I/O -- a 429 from the in-process app -- would otherwise keep the app's own
    timers, such as its reconnect, from ever firing)."""
    started = time.monotonic()
    while not await attempt():
        assert time.monotonic() - started < bound, f"not within {bound} s"
        await asyncio.sleep(0)
    elapsed = time.monotonic() - started
    assert elapsed < bound, f"took {elapsed:.3f} s"
    return elapsed


async def refused_within_bound(http: httpx.AsyncClient, base: str, basic: tuple[str, str],
                               status: int = 401, **form: str) -> float:
    """Polls the token endpoint of ``base`` until it refuses with ``status``; each answer
    before that is a grant (the change not yet seen), never another error."""
    async def refused() -> bool:
        response = await token(http, base, basic, **form)
        if response.status_code == 200:
            return False
        assert response.status_code == status, response.text
        if status == 401:
            assert response.json() == INVALID_CLIENT
        return True

    return await within(BOUND, refused)


async def test_every_client_and_tenant_change_reaches_the_other_process_within_a_second(
        cluster, http, admin):
    other = cluster.second.url
    tenant_id = await admin.tenant()
    worker = await admin.client(tenant_id, ["orders:read", "orders:write"])
    rotated = await admin.client(tenant_id, ["orders:read"])
    graced = await admin.client(tenant_id, ["orders:read"])
    deleted = await admin.client(tenant_id, ["orders:read"])
    bystander = await admin.client(tenant_id, ["orders:read"])
    for client in (worker, rotated, graced, deleted, bystander):
        await access_token(http, other, client.basic)  # now cached by the other process

    # Scopes narrowed: the dropped scope is invalid_scope there.
    await access_token(http, other, worker.basic, scope="orders:write")
    await admin.call("PATCH", f"/api/v1/clients/{worker.client_id}",
                     {"allowed_scopes": ["orders:read"]})
    await refused_within_bound(http, other, worker.basic, status=400, scope="orders:write")

    # A secret rotated with no grace: the old one is refused there, the new one works.
    renewed = await admin.call("POST", f"/api/v1/clients/{rotated.client_id}/secret",
                               {"grace_seconds": 0})
    SEEN_SECRETS.add(renewed["client_secret"])
    await refused_within_bound(http, other, rotated.basic)
    await access_token(http, other, (rotated.client_id, renewed["client_secret"]))

    # The previous secret's grace ended early.
    renewed = await admin.call("POST", f"/api/v1/clients/{graced.client_id}/secret",
                               {"grace_seconds": 3600})
    SEEN_SECRETS.add(renewed["client_secret"])
    await access_token(http, other, graced.basic)
    await admin.call("DELETE", f"/api/v1/clients/{graced.client_id}/secret/previous", status=204)
    await refused_within_bound(http, other, graced.basic)

    # A client disabled, a client deleted.
    await admin.call("PATCH", f"/api/v1/clients/{worker.client_id}", {"status": "disabled"})
    await refused_within_bound(http, other, worker.basic)
    await admin.call("DELETE", f"/api/v1/clients/{deleted.client_id}", status=204)
    await refused_within_bound(http, other, deleted.basic)

    # The tenant disabled: its other clients too.
    await access_token(http, other, bystander.basic)
    await admin.call("PATCH", f"/api/v1/tenants/{tenant_id}", {"status": "disabled"})
    await refused_within_bound(http, other, bystander.basic)


@pytest.mark.parametrize("target", ["client", "tenant"])
async def test_a_disable_through_one_process_kills_the_tokens_issued_by_the_other(
        cluster, http, admin, target):
    """Issue at the second process, disable and re-enable at the first: the old token
    is inactive at both processes' /introspect, and the re-enabled client gets
    working tokens again from the second."""
    other = cluster.second.url
    tenant_id = await admin.tenant()
    owner = await admin.client(tenant_id, ["orders:read"])
    resource_server = await admin.client(tenant_id, ["orders:read"])
    old = await access_token(http, other, owner.basic)
    path = (f"/api/v1/clients/{owner.client_id}" if target == "client"
            else f"/api/v1/tenants/{tenant_id}")
    await admin.call("PATCH", path, {"status": "disabled"})
    await admin.call("PATCH", path, {"status": "active"})

    async def active(base: str, access: str) -> bool:
        response = await http.post(f"{base}/introspect", data={"token": access},
                                   auth=resource_server.basic)
        assert response.status_code == 200, response.text
        return bool(response.json()["active"])

    for base in (cluster.first.url, other):
        assert not await active(base, old)

    async def fresh_token_works() -> bool:
        response = await token(http, other, owner.basic)
        if response.status_code != 200:  # the re-enable not yet seen there
            assert response.json() == INVALID_CLIENT
            return False
        SEEN_SECRETS.add(response.json()["access_token"])
        # A token of the disable's own second counts as older than the disable.
        return await active(other, response.json()["access_token"])

    # The re-enable's notice (within BOUND), plus at most the rest of the disable's second.
    await within(BOUND + 1.0, fresh_token_works)
    assert not await active(other, old)


async def test_an_admin_token_loses_its_power_in_the_other_process_at_once(
        cluster, http, admin):
    """The admin API reads the token's client afresh on every request: its scope taken
    away or its client disabled through the first process, the second refuses the
    token at its next request -- no wait at all."""
    other = cluster.second.url
    tenant_id = await admin.tenant()
    tenant_admin = await admin.client(tenant_id, ["admin", "orders:read"])
    issued = await access_token(http, other, tenant_admin.basic, scope="admin")
    bearer = {"Authorization": f"Bearer {issued}"}
    assert (await http.get(f"{other}/api/v1/clients", headers=bearer)).status_code == 200

    await admin.call("PATCH", f"/api/v1/clients/{tenant_admin.client_id}",
                     {"allowed_scopes": ["orders:read"]})
    refused = await http.get(f"{other}/api/v1/clients", headers=bearer)
    assert (refused.status_code, refused.json()) == (403, INSUFFICIENT_SCOPE)

    await admin.call("PATCH", f"/api/v1/clients/{tenant_admin.client_id}",
                     {"allowed_scopes": ["admin", "orders:read"], "status": "disabled"})
    refused = await http.get(f"{other}/api/v1/clients", headers=bearer)
    assert (refused.status_code, refused.json()) == (401, INVALID_TOKEN)
    await admin.call("PATCH", f"/api/v1/clients/{tenant_admin.client_id}", {"status": "active"})
    refused = await http.get(f"{other}/api/v1/clients", headers=bearer)
    assert (refused.status_code, refused.json()) == (401, INVALID_TOKEN)


# A lost notice: the cache is dropped when the channel is back ------------------------
#
# One process (in-test, over ASGI) whose clock stands still, so no cached entry ever
# expires: a client changed behind the issuer's back (no notice at all) while the
# notice channel is down is refused only because the reconnection dropped the cache.


async def test_after_a_redis_outage_the_cache_is_dropped_and_missed_changes_apply(
        settings, clock, register, set_status, redis_server):
    registered = await register()
    prefix = f"test:{uuid.uuid4().hex}:"
    served = replace(settings, redis_url=redis_server.url, redis_key_prefix=prefix)
    async with app_client(served, clock) as http:
        subscriber = Redis.from_url(redis_server.url)
        try:
            async def subscribed() -> bool:
                counts = await subscriber.pubsub_numsub(prefix + REDIS_CHANNEL)
                return bool(counts[0][1] == 1)

            await within(TIMEOUT, subscribed)  # its first subscription drops the cache
        finally:
            await subscriber.aclose()
        assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 200
        redis_server.stop()
        await set_status(client_id=registered.client_id)
        stale = await http.post("/token", data=GRANT, auth=registered.basic)
        assert stale.status_code == 200  # cached, and no notice will ever come
        redis_server.start()

        async def refused() -> bool:
            response = await http.post("/token", data=GRANT, auth=registered.basic)
            return response.status_code == 401

        await within(RECONNECT + 2.0, refused)


async def _listener_pids(url: str) -> list[int]:
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = $1", PG_APPLICATION)
        return [row["pid"] for row in rows]
    finally:
        await connection.close()


# LISTEN/NOTIFY is PostgreSQL's (SQLite's change stamp has no connection to drop).
@pytest.mark.parametrize("database_url", [b for b in BACKENDS if b == "postgres"],
                         indirect=True)
async def test_after_the_listen_connection_drops_the_cache_is_dropped_and_missed_changes_apply(
        settings, clock, register, set_status):
    registered = await register()
    async with app_client(settings, clock) as http:
        async def listening() -> bool:
            return len(await _listener_pids(settings.database_url)) == 1

        await within(TIMEOUT, listening)  # its first LISTEN drops the cache
        assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 200
        [pid] = await _listener_pids(settings.database_url)
        connection = await asyncpg.connect(_asyncpg_dsn(settings.database_url))
        try:
            assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid) is True
        finally:
            await connection.close()
        # A change no notice announces (set_status writes the row directly), and a
        # clock that never lets the cached entry expire: only the drop of the cache
        # when the listener reconnects can make this process see it.
        await set_status(client_id=registered.client_id)

        async def refused() -> bool:
            response = await http.post("/token", data=GRANT, auth=registered.basic)
            return response.status_code == 401

        await within(RECONNECT + 2.0, refused)

        async def listening_again() -> bool:
            return (await _listener_pids(settings.database_url)) not in ([], [pid])

        await within(RECONNECT + 2.0, listening_again)


@pytest.mark.parametrize("database_url", [b for b in BACKENDS if b == "postgres"],
                         indirect=True)
async def test_an_app_stopped_as_it_starts_leaves_no_listen_connection_and_no_unread_error(
        settings, clock):
    """Stopped while its LISTEN connection is still being made, the app lets the connect
    end and closes it: a connect cut short would leave asyncpg a failed future nobody
    reads (logged at garbage collection as "Future exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    unread: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unread.append(context["message"]))
    try:
        for _ in range(5):
            async with app_client(settings, clock):
                pass
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert unread == []

    async def no_listener() -> bool:
        return await _listener_pids(settings.database_url) == []

    await within(TIMEOUT, no_listener)
