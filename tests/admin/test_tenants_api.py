"""``/api/v1/tenants``, through HTTP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.store.models import AuditEventRow
from tests.conftest import Registered, issue_token, store_independent

TENANTS = "/api/v1/tenants"
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Client authentication failed"}
INVALID_TOKEN = {"error": "invalid_token",
                 "error_description": "The access token is missing, expired, revoked or not "
                                      "for this API"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def invalid_body(*errors: tuple[str, str]) -> dict[str, Any]:
    """The exact 422 body naming each bad field."""
    return {"error": "invalid_request", "error_description": "The request body is invalid",
            "details": {"errors": [{"field": field, "message": message}
                                   for field, message in errors]}}


async def audit_events(engine: AsyncEngine, event: str) -> list[Any]:
    """The stored rows of ``event``, oldest first."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(AuditEventRow).where(AuditEventRow.event == event).order_by(AuditEventRow.id))
        return list(rows.all())


async def token_status(http: httpx.AsyncClient, registered: Registered) -> int:
    response = await http.post("/token", data={"grant_type": "client_credentials"},
                               auth=registered.basic)
    return response.status_code


@pytest.fixture
async def root(client: httpx.AsyncClient,
               platform_admin: Callable[[], Awaitable[Registered]]) -> dict[str, str]:
    """The platform admin's Bearer header."""
    admin = await platform_admin()
    return bearer(await issue_token(client, admin, "admin"))


async def test_platform_admin_creates_a_tenant_and_gets_its_exact_json(client, root, clock):
    response = await client.post(TENANTS, json={"name": "globex"}, headers=root)
    assert response.status_code == 201
    body = response.json()
    assert body == {"tenant_id": body["tenant_id"], "name": "globex", "status": "active",
                    "created_at": iso(clock.now())}
    assert response.headers["location"] == f"{TENANTS}/{body['tenant_id']}"
    assert response.headers["cache-control"] == "no-store"
    shown = await client.get(f"{TENANTS}/{body['tenant_id']}", headers=root)
    assert shown.status_code == 200
    assert shown.json() == body


async def test_creating_a_tenant_is_audited_with_actor_source_and_request_id(
        client, engine, platform_admin):
    admin = await platform_admin()
    headers = {**bearer(await issue_token(client, admin, "admin")), "X-Request-ID": "req-42"}
    response = await client.post(TENANTS, json={"name": "globex"}, headers=headers)
    [event] = await audit_events(engine, "TENANT_CREATED")
    assert (event.actor, event.source, event.request_id) == (admin.client_id, "203.0.113.7",
                                                             "req-42")
    assert (event.tenant_id, event.details) == (response.json()["tenant_id"], {"name": "globex"})


async def test_a_taken_tenant_name_is_409_conflict(client, root):
    assert (await client.post(TENANTS, json={"name": "globex"}, headers=root)).status_code == 201
    response = await client.post(TENANTS, json={"name": "globex"}, headers=root)
    assert response.status_code == 409
    assert response.json() == {"error": "conflict",
                               "error_description": "a tenant named 'globex' exists already"}


async def test_platform_admin_pages_through_every_tenant_in_creation_order(client, root, clock):
    for name in ("t1", "t2", "t3", "t4", "t5"):
        clock.advance(1 if name in ("t2", "t4") else 0)  # ties are ordered by id
        assert (await client.post(TENANTS, json={"name": name}, headers=root)).status_code == 201
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get(TENANTS, params=params, headers=root)
        assert response.status_code == 200
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= 2
        seen += [item["name"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everything = (await client.get(TENANTS, headers=root)).json()
    assert everything["next_cursor"] is None
    assert seen == [item["name"] for item in everything["items"]]
    assert sorted(seen) == ["default", "t1", "t2", "t3", "t4", "t5"]
    assert pages == 3


async def test_a_tenant_admin_lists_only_its_own_tenant(client, register, clock):
    acme_admin = await register(tenant="acme", allowed_scopes=["admin"])
    await register(tenant="globex")
    token = await issue_token(client, acme_admin, "admin")
    response = await client.get(TENANTS, headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {"items": [{"tenant_id": acme_admin.tenant_id, "name": "acme",
                                          "status": "active", "created_at": iso(clock.now())}],
                               "next_cursor": None}


@pytest.mark.parametrize(("params", "field"), [
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "WyJ4Il0"}, "cursor"),  # base64url of ["x"]: JSON, but not our key
    ({"limit": "0"}, "limit"),
    ({"limit": "201"}, "limit"),
    ({"limit": "ten"}, "limit"),
])
async def test_malformed_paging_parameters_are_422_naming_them(client, root, params, field):
    response = await client.get(TENANTS, params=params, headers=root)
    assert response.status_code == 422
    assert response.json()["details"]["errors"][0]["field"] == field


@pytest.mark.parametrize("tenant_id", ["00000000-0000-0000-0000-000000000000", "%00", "x" * 65])
async def test_an_unknown_or_impossible_tenant_id_is_404(client, root, tenant_id):
    for method in ("GET", "PATCH"):
        response = await client.request(method, f"{TENANTS}/{tenant_id}", headers=root,
                                        json={} if method == "PATCH" else None)
        assert response.status_code == 404
        assert response.json() == {"error": "not_found", "error_description": "No such object"}


async def test_a_tenant_admin_reads_its_own_tenant(client, register):
    admin = await register(tenant="acme", allowed_scopes=["admin"])
    token = await issue_token(client, admin, "admin")
    response = await client.get(f"{TENANTS}/{admin.tenant_id}", headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["name"] == "acme"


async def test_patch_renames_a_tenant_and_audits_the_change(client, root, register, engine):
    acme = await register(tenant="acme")
    response = await client.patch(f"{TENANTS}/{acme.tenant_id}", json={"name": "acme-eu"},
                                  headers=root)
    assert response.status_code == 200
    assert response.json()["name"] == "acme-eu"
    [event] = await audit_events(engine, "TENANT_UPDATED")
    assert event.details == {"changes": {"name": {"from": "acme", "to": "acme-eu"}}}
    assert event.tenant_id == acme.tenant_id


async def test_an_empty_patch_changes_nothing_and_audits_nothing(client, root, register, engine):
    acme = await register(tenant="acme")
    response = await client.patch(f"{TENANTS}/{acme.tenant_id}", json={}, headers=root)
    assert response.status_code == 200
    assert response.json()["status"] == "active"
    assert await audit_events(engine, "TENANT_UPDATED") == []


async def test_renaming_to_a_taken_name_is_409(client, root, register):
    acme = await register(tenant="acme")
    await register(tenant="globex")
    response = await client.patch(f"{TENANTS}/{acme.tenant_id}", json={"name": "globex"},
                                  headers=root)
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"


async def test_disabling_a_tenant_refuses_its_clients_tokens_at_once(client, root, register):
    worker = await register(tenant="acme")
    tenant_admin = await register(tenant="acme", allowed_scopes=["admin"])
    admin_token = await issue_token(client, tenant_admin, "admin")
    assert await token_status(client, worker) == 200  # now cached by the token endpoint
    response = await client.patch(f"{TENANTS}/{worker.tenant_id}", json={"status": "disabled"},
                                  headers=root)
    assert response.status_code == 200
    assert response.json()["status"] == "disabled"
    # No clock advance: the cached client is forgotten, not merely left to expire.
    refused = await client.post("/token", data={"grant_type": "client_credentials"},
                                auth=worker.basic)
    assert (refused.status_code, refused.json()) == (401, INVALID_CLIENT)
    locked_out = await client.get(TENANTS, headers=bearer(admin_token))
    assert (locked_out.status_code, locked_out.json()) == (401, INVALID_TOKEN)
    enabled = await client.patch(f"{TENANTS}/{worker.tenant_id}", json={"status": "active"},
                                 headers=root)
    assert enabled.json()["status"] == "active"
    assert await token_status(client, worker) == 200


async def test_the_platform_tenant_cannot_be_disabled(client, root):
    [platform] = (await client.get(TENANTS, headers=root)).json()["items"]
    response = await client.patch(f"{TENANTS}/{platform['tenant_id']}",
                                  json={"status": "disabled"}, headers=root)
    assert response.status_code == 409
    assert response.json() == {"error": "conflict",
                               "error_description": "the platform tenant cannot be disabled"}
    assert (await client.get(TENANTS, headers=root)).json()["items"][0]["status"] == "active"


async def test_a_tenant_admin_cannot_change_its_own_tenant(client, register):
    admin = await register(tenant="acme", allowed_scopes=["admin"])
    token = await issue_token(client, admin, "admin")
    response = await client.patch(f"{TENANTS}/{admin.tenant_id}", json={"name": "mine"},
                                  headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"


NO_CONTROLS = "String should match pattern '^[^\\x00-\\x1F\\x7F]*$'"


@store_independent  # refused by the body's validation, before the store is asked
@pytest.mark.parametrize(("method", "body", "errors"), [
    ("POST", {}, [("name", "Field required")]),
    ("POST", {"name": 7}, [("name", "Input should be a valid string")]),
    ("POST", {"name": ""}, [("name", "String should have at least 1 character")]),
    ("POST", {"name": "x" * 201}, [("name", "String should have at most 200 characters")]),
    ("POST", {"name": "x", "plan": "gold"}, [("plan", "Extra inputs are not permitted")]),
    ("POST", {"name": "nul\u0000"}, [("name", NO_CONTROLS)]),
    ("PATCH", {"status": "deleted"}, [("status", "Input should be 'active' or 'disabled'")]),
    ("PATCH", {"status": None}, [("status", "Value error, may be left out but not null")]),
    ("PATCH", {"name": ["x"]}, [("name", "Input should be a valid string")]),
    ("PATCH", {"name": "tab\there"}, [("name", NO_CONTROLS)]),
    ("PATCH", {"id": "x"}, [("id", "Extra inputs are not permitted")]),
])
async def test_a_bad_body_is_422_naming_the_field(client, root, register, method, body, errors):
    acme = await register(tenant="acme")
    path = TENANTS if method == "POST" else f"{TENANTS}/{acme.tenant_id}"
    response = await client.request(method, path, json=body, headers=root)
    assert response.status_code == 422
    assert response.json() == invalid_body(*errors)


async def test_a_body_that_is_not_json_is_422(client, root):
    response = await client.post(TENANTS, content=b"name=globex", headers=root)
    assert response.status_code == 422
    assert response.json() == invalid_body(("", "the body is not JSON"))
