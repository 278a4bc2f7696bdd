"""GET /openapi.json documents every endpoint (OpenAPI 3.1), and the server answers as
it documents: a schema-driven run (schemathesis) over the whole API, as a platform
admin, with valid and invalid requests, checks every response against the document --
status, media type, headers, body schema -- and that invalid input is refused and
valid input is not."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.python.asgi import shutdown_lifespans
from starlette.applications import Starlette

from issuer.app import ENDPOINTS, create_app
from issuer.bootstrap import bootstrap
from issuer.clock import SystemClock
from issuer.openapi import build_document
from issuer.settings import Settings
from issuer.store.db import create_engine
from tests.conftest import (
    ISSUER,
    TEST_MASTER_KEY,
    FakeClock,
    Registered,
    app_client,
    issue_token,
    store_independent,
)

#: Examples per operation and generation mode: enough to hit each documented branch,
#: few enough that the whole run stays well under a minute.
EXAMPLES = 10
#: Rules a JSON Schema cannot state, refused with 422 naming the field: a tenant name's
#: characters and scripts (``issuer.tenant_names``, described in words), NetSuite
#: connector settings (each scope once, mcp alone, URLs on NetSuite's hosts unless
#: allow-listed).
UNDOCUMENTED_RULES = {("POST", "/api/v1/tenants"), ("PATCH", "/api/v1/tenants/{tenant_id}"),
                      ("POST", "/api/v1/ipaas/connectors"),
                      ("PATCH", "/api/v1/ipaas/connectors/{connector_id}")}
CHECKS = [schemathesis.checks.not_a_server_error,
          schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance,
          schemathesis.checks.response_headers_conformance,
          schemathesis.checks.response_schema_conformance,
          schemathesis.checks.negative_data_rejection,
          schemathesis.checks.positive_data_acceptance]


@store_independent
async def test_document_is_openapi_3_1_and_covers_every_endpoint(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document == build_document(ISSUER, ENDPOINTS)
    paths = document["paths"]
    for path in ("/token", "/.well-known/jwks.json", "/.well-known/oauth-authorization-server",
                 "/healthz"):
        assert path in paths
    for path, methods in paths.items():
        for method, operation in methods.items():
            assert operation["responses"], f"{method} {path} documents no response"
            # A bearer-token call names the scopes of which the token must carry one.
            for requirement in operation.get("security", []):
                if "bearer" in requirement:
                    assert set(requirement["bearer"]) in ({"admin"}, {"admin", "integrator"})
    assert paths["/api/v1/tenants"]["post"]["security"] == [{"bearer": ["admin"]}]
    assert paths["/api/v1/ipaas/connectors"]["post"]["security"] == [
        {"bearer": ["admin", "integrator"]}]


@pytest.fixture(scope="module")
def api(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[Starlette, dict[str, str]]]:
    """The app on a SQLite store of its own, without rate limits (the run sends hundreds
    of admin calls a minute), and a platform admin's bearer header. Schemathesis runs
    the app's lifespan on its first call; it ends with the module."""
    store = tmp_path_factory.mktemp("openapi") / "issuer.db"
    shutil.copyfile(sqlite_template, store)
    settings = Settings(issuer_url=ISSUER, database_url=f"sqlite+aiosqlite:///{store}",
                        encryption_master_key=TEST_MASTER_KEY, env="test", rate_limiting=False)

    async def admin_token() -> str:
        engine = create_engine(settings.database_url)
        try:
            created = await bootstrap(engine, SystemClock())
        finally:
            await engine.dispose()
        assert created is not None
        admin = Registered(created.record.client_id, created.client_secret,
                           created.record.tenant_id)
        async with app_client(settings, FakeClock()) as http:
            return await issue_token(http, admin, "admin")

    headers = {"Authorization": f"Bearer {asyncio.run(admin_token())}"}
    yield create_app(settings), headers
    shutdown_lifespans()


#: The document the app serves (the first test proves it is the same).
schema = schemathesis.openapi.from_dict(build_document(ISSUER, ENDPOINTS))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=EXAMPLES, deterministic=True)
# A request the document allows is never refused as malformed (422); it may still be
# refused for what the document cannot say: a body that contradicts itself (400), an
# object that does not exist (404), a conflict (409).
# Schemathesis's coverage phase (boundary values of every parameter) is built when the
# tests are collected, for every operation: 30 s of CPU on every run that collects this
# file. The boundaries it found are hand-made tests (tests/admin/test_bad_input.py,
# test_documented_answers.py); the run here is random valid and invalid requests.
schema.config.phases.coverage.enabled = False
schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
    expected_statuses=["2xx", "400", "401", "403", "404", "409", "429"])


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_response_conforms_to_the_document(case, api):
    app, headers = api
    if case.meta.generation.mode.is_positive and case.query:
        case.query.pop("cursor", None)  # opaque: only the server's own cursors are valid
    checks = CHECKS
    if (case.method, case.path) in UNDOCUMENTED_RULES:
        checks = [check for check in CHECKS
                  if check is not schemathesis.checks.positive_data_acceptance]
    case.call_and_validate(app=app, headers=headers, checks=checks)
