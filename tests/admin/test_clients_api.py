"""``/api/v1/clients``, through HTTP."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from issuer.admin.clients import VISIBLE
from issuer.store.models import IssuedToken
from tests.admin.test_tenants_api import (
    INVALID_CLIENT,
    INVALID_TOKEN,
    NO_CONTROLS,
    audit_events,
    bearer,
    invalid_body,
    iso,
    token_status,
)
from tests.conftest import Registered, issue_token, store_independent

CLIENTS = "/api/v1/clients"
DEFAULTS = {"default_scopes": None, "allowed_audiences": [], "default_audience": None,
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_methods": ["client_secret_basic", "client_secret_post"],
            "token_ttl": None, "rate_limit": None, "status": "active",
            "previous_secret_expires_at": None, "jwks": None, "jwks_uri": None,
            "dpop_bound_access_tokens": False,
            "federated_credentials": []}


@pytest.fixture
async def platform(client: httpx.AsyncClient,
                   platform_admin: Callable[[], Awaitable[Registered]]) -> Registered:
    return await platform_admin()


@pytest.fixture
async def root(client: httpx.AsyncClient, platform: Registered) -> dict[str, str]:
    """The platform admin's Bearer header."""
    return bearer(await issue_token(client, platform, "admin"))


async def create(http: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("name", "orders sync")
    body.setdefault("allowed_scopes", ["orders:read"])
    response = await http.post(CLIENTS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def as_registered(created: dict[str, Any]) -> Registered:
    return Registered(created["client_id"], created["client_secret"], created["tenant_id"])


async def token_claims(http: httpx.AsyncClient, registered: Registered,
                       scope: str | None = None) -> dict[str, Any]:
    token = await issue_token(http, registered, scope)
    keys = (await http.get("/.well-known/jwks.json")).json()
    claims: dict[str, Any] = jwt.decode(token, KeySet.import_key_set(keys)).claims
    return claims


async def test_creating_a_client_returns_it_with_its_secret_once(client, root, register, clock):
    acme = await register(tenant="acme")
    response = await client.post(CLIENTS, json={"tenant_id": acme.tenant_id, "name": "sync",
                                                "allowed_scopes": ["orders:read"]},
                                 headers=root)
    assert response.status_code == 201
    body = response.json()
    assert body == {**DEFAULTS, "client_id": body["client_id"], "tenant_id": acme.tenant_id,
                    "name": "sync", "allowed_scopes": ["orders:read"],
                    "created_at": iso(clock.now()), "client_secret": body["client_secret"]}
    assert body["client_id"].startswith("m2m_") and body["client_secret"].startswith("m2ms_")
    assert response.headers["location"] == f"{CLIENTS}/{body['client_id']}"
    assert response.headers["cache-control"] == "no-store"
    assert await token_status(client, as_registered(body)) == 200
    shown = await client.get(f"{CLIENTS}/{body['client_id']}", headers=root)
    assert shown.json() == {key: value for key, value in body.items() if key != "client_secret"}


async def test_no_answer_ever_carries_a_secret_digest(client, root):
    created = await create(client, root)
    rotated = await client.post(f"{CLIENTS}/{created['client_id']}/secret", headers=root)
    listed = await client.get(CLIENTS, headers=root)
    for text in (json.dumps(created), rotated.text, listed.text):
        assert "sha256$" not in text and "hash" not in text


async def test_every_field_is_stored_and_used_at_the_token_endpoint(client, root, platform):
    created = await create(
        client, root, name="reporting", allowed_scopes=["reports:*", "orders:read"],
        default_scopes=["orders:read"], allowed_audiences=["https://a.example", "urn:b"],
        default_audience="urn:b", token_endpoint_auth_methods=["client_secret_post"],
        token_ttl=600, rate_limit="600/minute")
    assert {key: created[key] for key in (
        "tenant_id", "allowed_scopes", "default_scopes", "allowed_audiences", "default_audience",
        "token_endpoint_auth_methods", "token_ttl", "rate_limit")} == {
        "tenant_id": platform.tenant_id, "allowed_scopes": ["reports:*", "orders:read"],
        "default_scopes": ["orders:read"], "allowed_audiences": ["https://a.example", "urn:b"],
        "default_audience": "urn:b", "token_endpoint_auth_methods": ["client_secret_post"],
        "token_ttl": 600, "rate_limit": "600/minute"}
    response = await client.post("/token", data={
        "grant_type": "client_credentials", "client_id": created["client_id"],
        "client_secret": created["client_secret"]})
    assert response.json()["scope"] == "orders:read"
    assert response.json()["expires_in"] == 600
    basic = await client.post("/token", data={"grant_type": "client_credentials"},
                              auth=(created["client_id"], created["client_secret"]))
    assert basic.status_code == 401  # client_secret_basic is not among its methods


async def test_a_tenant_admin_creates_clients_in_its_own_tenant_by_default(client, register):
    admin = await register(tenant="acme", allowed_scopes=["admin"])
    headers = bearer(await issue_token(client, admin, "admin"))
    created = await create(client, headers)
    assert created["tenant_id"] == admin.tenant_id
    named = await create(client, headers, tenant_id=admin.tenant_id)
    assert named["tenant_id"] == admin.tenant_id


async def test_creating_a_client_is_audited_with_its_context(client, platform, engine):
    headers = {**bearer(await issue_token(client, platform, "admin")), "X-Request-ID": "r-7"}
    created = await create(client, headers)
    event = (await audit_events(engine, "CLIENT_CREATED"))[-1]
    assert (event.actor, event.source, event.request_id, event.client_id, event.tenant_id) == (
        platform.client_id, "203.0.113.7", "r-7", created["client_id"], platform.tenant_id)
    assert created["client_secret"] not in json.dumps(event.details)


async def test_an_unknown_tenant_is_404(client, root):
    response = await client.post(CLIENTS, json={"tenant_id": "nope", "name": "x",
                                                "allowed_scopes": []}, headers=root)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "error_description": "No such object"}


@pytest.mark.parametrize(("body", "description"), [
    ({"allowed_scopes": ["orders*"]}, "scope 'orders*': a wildcard is '*' or 'prefix:*'"),
    ({"allowed_scopes": ["orders:*"], "default_scopes": ["orders:*"]},
     "default scope 'orders:*' is not an exact scope"),
    ({"default_scopes": ["billing:read"]},
     "default scope 'billing:read' is not among the allowed"),
    ({"allowed_audiences": ["urn:a"], "default_audience": "urn:b"},
     "the default audience must be one of the allowed audiences"),
])
async def test_inconsistent_metadata_is_400_invalid_request_saying_why(client, root, body,
                                                                       description):
    response = await client.post(CLIENTS, json={"name": "x", "allowed_scopes": ["orders:read"],
                                                **body}, headers=root)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": description}


RATE_PATTERN = "String should match pattern '^[1-9][0-9]{0,8}/(second|minute|hour|day)$'"


@store_independent  # refused by the body's validation, before the store is asked
@pytest.mark.parametrize(("method", "body", "errors"), [
    ("POST", {"allowed_scopes": []}, [("name", "Field required")]),
    ("POST", {"name": "x"}, [("allowed_scopes", "Field required")]),
    ("POST", {"name": "x", "allowed_scopes": "orders:read"},
     [("allowed_scopes", "Input should be a valid list")]),
    ("POST", {"name": "x", "allowed_scopes": ["a b"]},
     [("allowed_scopes.0", "String should match pattern '^[\\x21\\x23-\\x5B\\x5D-\\x7E]+$'")]),
    ("POST", {"name": "x", "allowed_scopes": [], "token_ttl": "600"},
     [("token_ttl", "Input should be a valid integer")]),
    ("POST", {"name": "x", "allowed_scopes": [], "token_ttl": 59},
     [("token_ttl", "Input should be greater than or equal to 60")]),
    ("POST", {"name": "x", "allowed_scopes": [], "rate_limit": "10/week"},
     [("rate_limit", RATE_PATTERN)]),
    ("POST", {"name": "x", "allowed_scopes": [], "rate_limit": "0/minute"},
     [("rate_limit", RATE_PATTERN)]),
    ("POST", {"name": "x", "allowed_scopes": [], "grant_types": ["password"]},
     [("grant_types.0", "Input should be 'client_credentials'")]),
    ("POST", {"name": "x", "allowed_scopes": [], "token_endpoint_auth_methods": []},
     [("token_endpoint_auth_methods", "List should have at least 1 item after validation, "
                                      "not 0")]),
    ("POST", {"name": "line\nbreak", "allowed_scopes": []}, [("name", NO_CONTROLS)]),
    ("POST", {"name": "x", "allowed_scopes": [], "allowed_audiences": ["urn:\u0000"]},
     [("allowed_audiences.0", f"String should match pattern '^{VISIBLE}+$'")]),
    ("POST", {"name": "x", "allowed_scopes": [], "tenant_id": "a/b"},
     [("tenant_id", "String should match pattern '^[A-Za-z0-9_.:-]{1,64}$'")]),
    ("POST", {"name": "x", "allowed_scopes": [], "client_secret": "mine"},
     [("client_secret", "Extra inputs are not permitted")]),
    ("PATCH", {"status": "paused"}, [("status", "Input should be 'active' or 'disabled'")]),
    ("PATCH", {"allowed_scopes": None},
     [("allowed_scopes", "Value error, may be left out but not null")]),
    ("PATCH", {"token_ttl": 1.5}, [("token_ttl", "Input should be a valid integer")]),
    ("PATCH", {"tenant_id": "other"}, [("tenant_id", "Extra inputs are not permitted")]),
])
async def test_a_bad_body_is_422_naming_the_field(client, root, method, body, errors):
    path = CLIENTS
    if method == "PATCH":
        path = f"{CLIENTS}/{(await create(client, root))['client_id']}"
    response = await client.request(method, path, json=body, headers=root)
    assert response.status_code == 422
    assert response.json() == invalid_body(*errors)


async def test_clients_page_in_creation_order_and_filter_by_tenant(client, root, register,
                                                                   platform):
    acme = await register(tenant="acme")
    made = [(await create(client, root, name=f"c{n}"))["client_id"] for n in range(4)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get(CLIENTS, params=params, headers=root)).json()
        seen += [item["client_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([platform.client_id, acme.client_id, *made])
    assert len(seen) == len(set(seen)) == 6
    only_acme = (await client.get(CLIENTS, params={"tenant_id": acme.tenant_id},
                                  headers=root)).json()
    assert [item["client_id"] for item in only_acme["items"]] == [acme.client_id]
    assert only_acme["next_cursor"] is None


async def test_a_tenant_admin_lists_its_tenants_clients_only(client, register):
    admin = await register(tenant="acme", allowed_scopes=["admin"])
    worker = await register(tenant="acme")
    await register(tenant="globex")
    headers = bearer(await issue_token(client, admin, "admin"))
    listed = (await client.get(CLIENTS, headers=headers)).json()
    assert sorted(item["client_id"] for item in listed["items"]) == sorted(
        [admin.client_id, worker.client_id])


async def test_listing_an_unknown_tenants_clients_is_404(client, root):
    response = await client.get(CLIENTS, params={"tenant_id": "nope"}, headers=root)
    assert response.status_code == 404


async def test_patch_changes_scopes_for_the_next_token_at_once(client, root, engine):
    created = await create(client, root, allowed_scopes=["orders:read"])
    c = as_registered(created)
    assert (await token_claims(client, c))["scope"] == "orders:read"  # cached now
    response = await client.patch(f"{CLIENTS}/{c.client_id}", headers=root,
                                  json={"allowed_scopes": ["orders:read", "orders:write"]})
    assert response.status_code == 200
    assert response.json()["allowed_scopes"] == ["orders:read", "orders:write"]
    assert (await token_claims(client, c))["scope"] == "orders:read orders:write"
    [event] = await audit_events(engine, "CLIENT_UPDATED")
    assert event.details == {"changes": {"allowed_scopes": {
        "from": ["orders:read"], "to": ["orders:read", "orders:write"]}}}


async def test_disabling_a_client_refuses_it_at_once_and_enabling_restores_it(client, root):
    c = as_registered(await create(client, root))
    assert await token_status(client, c) == 200
    disabled = await client.patch(f"{CLIENTS}/{c.client_id}", json={"status": "disabled"},
                                  headers=root)
    assert disabled.json()["status"] == "disabled"
    refused = await client.post("/token", data={"grant_type": "client_credentials"},
                                auth=c.basic)
    assert (refused.status_code, refused.json()) == (401, INVALID_CLIENT)
    await client.patch(f"{CLIENTS}/{c.client_id}", json={"status": "active"}, headers=root)
    assert await token_status(client, c) == 200


async def test_null_resets_a_nullable_field_to_the_issuer_default(client, root):
    c = as_registered(await create(client, root, token_ttl=600, rate_limit="10/second",
                                   default_scopes=["orders:read"]))
    response = await client.patch(f"{CLIENTS}/{c.client_id}", headers=root, json={
        "token_ttl": None, "rate_limit": None, "default_scopes": None})
    assert {k: response.json()[k] for k in ("token_ttl", "rate_limit", "default_scopes")} == {
        "token_ttl": None, "rate_limit": None, "default_scopes": None}
    token = await client.post("/token", data={"grant_type": "client_credentials"}, auth=c.basic)
    assert token.json()["expires_in"] == 3600


async def test_dropping_the_default_audience_makes_the_first_allowed_one_default(client, root):
    created = await create(client, root, allowed_audiences=["urn:a", "urn:b"],
                           default_audience="urn:a")
    response = await client.patch(f"{CLIENTS}/{created['client_id']}", headers=root,
                                  json={"allowed_audiences": ["urn:b", "urn:c"]})
    assert response.json()["default_audience"] == "urn:b"
    assert (await token_claims(client, as_registered(created)))["aud"] == "urn:b"


async def test_a_patch_leaving_default_scopes_unallowed_is_400(client, root):
    created = await create(client, root, allowed_scopes=["orders:read", "orders:write"],
                           default_scopes=["orders:write"])
    response = await client.patch(f"{CLIENTS}/{created['client_id']}", headers=root,
                                  json={"allowed_scopes": ["orders:read"]})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description":
                               "default scope 'orders:write' is not among the allowed"}
    shown = (await client.get(f"{CLIENTS}/{created['client_id']}", headers=root)).json()
    assert shown["allowed_scopes"] == ["orders:read", "orders:write"]


async def test_an_unchanged_patch_is_not_audited(client, root, engine):
    created = await create(client, root, name="same")
    response = await client.patch(f"{CLIENTS}/{created['client_id']}", json={"name": "same"},
                                  headers=root)
    assert response.status_code == 200
    assert await audit_events(engine, "CLIENT_UPDATED") == []


async def test_deleting_a_client_removes_it_and_revokes_its_tokens(client, root, register,
                                                                   engine):
    tenant_admin = await register(tenant="acme", allowed_scopes=["admin"])
    token = await issue_token(client, tenant_admin, "admin")
    response = await client.delete(f"{CLIENTS}/{tenant_admin.client_id}", headers=root)
    assert (response.status_code, response.content) == (204, b"")
    gone = await client.get(f"{CLIENTS}/{tenant_admin.client_id}", headers=root)
    assert gone.status_code == 404
    refused = await client.post("/token", data={"grant_type": "client_credentials"},
                                auth=tenant_admin.basic)
    assert (refused.status_code, refused.json()) == (401, INVALID_CLIENT)
    locked_out = await client.get(CLIENTS, headers=bearer(token))
    assert (locked_out.status_code, locked_out.json()) == (401, INVALID_TOKEN)
    async with engine.connect() as connection:
        revoked = (await connection.execute(select(IssuedToken.revoked_at).where(
            IssuedToken.client_id == tenant_admin.client_id))).scalars().all()
    assert revoked and all(at is not None for at in revoked)
    [event] = await audit_events(engine, "CLIENT_DELETED")
    assert event.details == {"name": "test client", "issued_revoked": 1}
    again = await client.delete(f"{CLIENTS}/{tenant_admin.client_id}", headers=root)
    assert again.status_code == 404


async def test_an_admin_cannot_delete_or_disable_its_own_client(client, root, platform):
    deleted = await client.delete(f"{CLIENTS}/{platform.client_id}", headers=root)
    assert deleted.status_code == 409
    assert deleted.json() == {"error": "conflict",
                              "error_description": "a client cannot delete itself"}
    disabled = await client.patch(f"{CLIENTS}/{platform.client_id}",
                                  json={"status": "disabled"}, headers=root)
    assert disabled.status_code == 409
    assert disabled.json()["error_description"] == "a client cannot disable itself"
    assert (await client.get(CLIENTS, headers=root)).status_code == 200


@pytest.mark.parametrize("client_id", ["m2m_nope", "%00", "m2m_%ED%A0%80", "x" * 65])
async def test_an_unknown_or_impossible_client_id_is_404_everywhere(client, root, client_id):
    for method, path in (("GET", f"{CLIENTS}/{client_id}"), ("PATCH", f"{CLIENTS}/{client_id}"),
                         ("DELETE", f"{CLIENTS}/{client_id}"),
                         ("POST", f"{CLIENTS}/{client_id}/secret"),
                         ("DELETE", f"{CLIENTS}/{client_id}/secret/previous"),
                         ("GET", f"{CLIENTS}?tenant_id={client_id}")):
        response = await client.request(method, path, json={} if method == "PATCH" else None,
                                        headers=root)
        assert (response.status_code, response.json()) == (
            404, {"error": "not_found", "error_description": "No such object"}), (method, path)
