"""With the store down, the token endpoint answers 503
``temporarily_unavailable`` -- JSON, no stack trace -- ``/readyz`` answers 503 with
the reason, and both recover after."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from issuer.registration import ClientSpec, create_client, create_tenant
from issuer.settings import Settings
from issuer.store.db import create_engine
from tests.conftest import (
    ISSUER,
    PG_URL,
    TEST_MASTER_KEY,
    FakeClock,
    _admin,
    _migrate_and_key,
    app_client,
    run,
)

pytestmark = pytest.mark.skipif(PG_URL is None, reason="needs ISSUER_TEST_DATABASE_URL")


@pytest.fixture
def own_database(fresh_postgres, clock: FakeClock) -> tuple[str, tuple[str, str]]:
    """A PostgreSQL database of this test's own (it will be cut off) with one client."""
    url = fresh_postgres()

    async def prepare() -> tuple[str, str]:
        await _migrate_and_key(url)
        engine = create_engine(url)
        async with async_sessionmaker(engine)() as session, session.begin():
            tenant = await create_tenant(session, "acme", clock)
            created = await create_client(session, ClientSpec(
                tenant_id=tenant.id, name="c", allowed_scopes=["a"]), clock)
        await engine.dispose()
        return created.record.client_id, created.client_secret

    return url, run(prepare())


async def test_store_down_is_temporarily_unavailable_503_then_recovers(own_database, clock):
    url, basic = own_database
    name = url.rsplit("/", 1)[1]
    form = {"grant_type": "client_credentials"}
    settings = Settings(issuer_url=ISSUER, database_url=url, encryption_master_key=TEST_MASTER_KEY)
    async with app_client(settings, clock) as client:
        assert (await client.post("/token", data=form, auth=basic)).status_code == 200
        clock.advance(60)  # past the client cache: the next request must reach the store
        await _admin(PG_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await _admin(PG_URL, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             f"WHERE datname = '{name}'")
        try:
            down = await client.post("/token", data=form, auth=basic)
            ready = await client.get("/readyz")
        finally:
            await _admin(PG_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert down.status_code == 503
        assert down.json() == {
            "error": "temporarily_unavailable",
            "error_description": "The service is temporarily unavailable, try again later",
        }
        assert down.headers["cache-control"] == "no-store"
        assert down.headers["retry-after"] == "5"  # RFC 9110 §10.2.3
        # Readiness says why: the process is alive, its store is not reachable.
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"]["database"].startswith("unreachable")
        assert ready.json()["checks"]["signing_key"] == "ok"
        assert (await client.post("/token", data=form, auth=basic)).status_code == 200
        assert (await client.get("/readyz")).json()["status"] == "ok"
