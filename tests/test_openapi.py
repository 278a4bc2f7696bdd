"""GET /openapi.json documents every endpoint (OpenAPI 3.1), and a schema-driven run
(schemathesis) over the whole documented API, as a platform admin, finds no 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from issuer.bootstrap import bootstrap
from issuer.clock import SystemClock
from issuer.store.db import create_engine
from tests.conftest import store_independent

ADMIN_PATHS = ("/api/v1/tenants", "/api/v1/clients", "/api/v1/clients/{client_id}/secret",
               "/auth/m2m/token", "/auth/m2m/tokens", "/auth/m2m/token/revoke",
               "/introspect", "/revoke")


@store_independent
async def test_document_is_openapi_3_1_and_covers_every_endpoint(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "https://issuer.test"}]
    paths = document["paths"]
    for path in ("/token", "/.well-known/jwks.json", "/.well-known/oauth-authorization-server",
                 "/healthz"):
        assert path in paths
    for path, methods in paths.items():
        for method, operation in methods.items():
            assert operation["responses"], f"{method} {path} documents no response"


@pytest.fixture
def admin_headers(live_server: str, database_url: str) -> Iterator[dict[str, str]]:
    """A platform admin's bearer token from the live server."""

    async def make_admin() -> tuple[str, str]:
        engine = create_engine(database_url)
        try:
            created = await bootstrap(engine, SystemClock())
        finally:
            await engine.dispose()
        assert created is not None
        return created.record.client_id, created.client_secret

    client_id, secret = asyncio.run(make_admin())
    token = httpx.post(f"{live_server}/token", data={"grant_type": "client_credentials",
                                                     "scope": "admin"},
                       auth=(client_id, secret)).json()["access_token"]
    yield {"Authorization": f"Bearer {token}"}


def test_schema_driven_requests_never_get_a_server_error(live_server, admin_headers):
    """Every documented operation, with bodies, paths and queries generated from the
    document (valid and invalid alike), answers below 500."""
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5

    for operation in operations:
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(case=operation.as_strategy())
        def never_5xx(case: schemathesis.Case) -> None:
            response = case.call(base_url=live_server, headers=admin_headers, timeout=30)
            assert response.status_code < 500, (case.method, case.path, response.text)

        never_5xx()
