"""Tenant isolation and bearer authentication over EVERY tenants/clients/trusted-issuers
endpoint (RFC 6750 §3.1).

- a tenant-A admin on tenant-B objects: 404, exactly like a missing object, and
  nothing changes; on platform-only endpoints: 403;
- an ``integrator`` token: 403 ``insufficient_scope``;
- no token, an expired one, one of the wrong ``typ``, one signed by a key this
  issuer never published: 401 ``invalid_token`` with its Bearer challenge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from issuer.admin import clients, tenants, trusted_issuers
from issuer.crypto import encryptor_for
from issuer.keys.ring import KeyRing
from issuer.registration import Actor
from issuer.settings import Settings
from issuer.trusted_issuers import create_trusted_issuer
from tests.admin.test_admin_auth import forged_token
from tests.admin.test_tenants_api import INVALID_TOKEN, bearer, token_status
from tests.conftest import FakeClock, Registered, issue_token, store_independent

NOT_FOUND = {"error": "not_found", "error_description": "No such object"}
INSUFFICIENT_SCOPE = {"error": "insufficient_scope",
                      "error_description": "The access token does not grant this operation"}
INVALID_TOKEN_CHALLENGE = 'Bearer realm="m2m-issuer", error="invalid_token"'
INSUFFICIENT_SCOPE_CHALLENGE = ('Bearer realm="m2m-issuer", error="insufficient_scope", '
                                'scope="admin"')
MISSING = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Endpoint:
    """One route; ``<tenant>``, ``<client>`` and ``<issuer>`` (a trusted issuer) in
    ``path``/``body`` name the target."""

    method: str
    route: str  # the route's path, as registered
    path: str
    body: dict[str, Any] | None = None

    def request(self, tenant_id: str, client_id: str,
                issuer_id: str = "") -> tuple[str, str, Any]:
        def fill(text: str) -> str:
            return (text.replace("<tenant>", tenant_id).replace("<client>", client_id)
                    .replace("<issuer>", issuer_id or MISSING))

        body = json.loads(fill(json.dumps(self.body))) if self.body is not None else None
        return self.method, fill(self.path), body

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


T, C, TI = "/api/v1/tenants", "/api/v1/clients", "/api/v1/trusted-issuers"
# Endpoints that name another tenant's object: a tenant admin gets 404 from each.
OBJECT_ENDPOINTS = [
    Endpoint("GET", f"{T}/{{tenant_id}}", f"{T}/<tenant>"),
    Endpoint("PATCH", f"{T}/{{tenant_id}}", f"{T}/<tenant>", {"status": "disabled"}),
    Endpoint("POST", C, C, {"tenant_id": "<tenant>", "name": "intruder",
                            "allowed_scopes": ["admin"]}),
    Endpoint("GET", C, f"{C}?tenant_id=<tenant>"),
    Endpoint("GET", f"{C}/{{client_id}}", f"{C}/<client>"),
    Endpoint("PATCH", f"{C}/{{client_id}}", f"{C}/<client>", {"status": "disabled"}),
    Endpoint("DELETE", f"{C}/{{client_id}}", f"{C}/<client>"),
    Endpoint("POST", f"{C}/{{client_id}}/secret", f"{C}/<client>/secret", {"grace_seconds": 0}),
    Endpoint("DELETE", f"{C}/{{client_id}}/secret/previous", f"{C}/<client>/secret/previous"),
    Endpoint("POST", TI, TI, {"tenant_id": "<tenant>", "issuer": "https://intruder.example"}),
    Endpoint("GET", TI, f"{TI}?tenant_id=<tenant>"),
    Endpoint("GET", f"{TI}/{{trusted_issuer_id}}", f"{TI}/<issuer>"),
    Endpoint("PATCH", f"{TI}/{{trusted_issuer_id}}", f"{TI}/<issuer>", {"status": "disabled"}),
    Endpoint("DELETE", f"{TI}/{{trusted_issuer_id}}", f"{TI}/<issuer>"),
]
# Endpoints with no object in the path: platform-only, or listing the caller's own.
PLATFORM_ONLY = [Endpoint("POST", T, T, {"name": "newco"})]
LISTS = [Endpoint("GET", T, T), Endpoint("GET", C, C), Endpoint("GET", TI, TI)]
EVERY_ENDPOINT = OBJECT_ENDPOINTS + PLATFORM_ONLY + LISTS


@dataclass(frozen=True)
class World:
    """Tenant A (its admin, integrator and worker) and tenant B (its admin, worker and
    trusted issuer)."""

    a_admin: Registered
    a_integrator: Registered
    a_worker: Registered
    b_admin: Registered
    b_worker: Registered
    b_trusted_issuer: str


@pytest.fixture
async def world(register: Any, engine: AsyncEngine, clock: FakeClock) -> World:
    b_admin, b_worker, a_admin, a_integrator, a_worker = await register.many(
        {"tenant": "tenant-b", "allowed_scopes": ["admin"]}, {"tenant": "tenant-b"},
        {"tenant": "tenant-a", "allowed_scopes": ["admin"]},
        {"tenant": "tenant-a", "allowed_scopes": ["integrator"]}, {"tenant": "tenant-a"})
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        b_trusted = await create_trusted_issuer(
            session, b_admin.tenant_id, issuer="https://cluster-b.example", clock=clock,
            actor=Actor("test"), allow_http=False)
    return World(a_admin=a_admin, a_integrator=a_integrator, a_worker=a_worker,
                 b_admin=b_admin, b_worker=b_worker, b_trusted_issuer=b_trusted.id)


async def call(http: httpx.AsyncClient, endpoint: Endpoint, headers: dict[str, str],
               tenant_id: str, client_id: str, issuer_id: str = "") -> httpx.Response:
    method, path, body = endpoint.request(tenant_id, client_id, issuer_id)
    return await http.request(method, path, json=body, headers=headers)


def test_the_matrix_covers_every_tenants_clients_and_trusted_issuers_route() -> None:
    declared = {(endpoint.method, endpoint.path)
                for endpoint in [*tenants.endpoints, *clients.endpoints,
                                 *trusted_issuers.endpoints]}
    assert {(endpoint.method, endpoint.route) for endpoint in EVERY_ENDPOINT} == declared


@pytest.mark.parametrize("endpoint", OBJECT_ENDPOINTS, ids=str)
async def test_a_tenant_admin_gets_404_for_another_tenants_object_and_changes_nothing(
        client, world, endpoint):
    token = await issue_token(client, world.a_admin, "admin")
    response = await call(client, endpoint, bearer(token), world.b_worker.tenant_id,
                          world.b_worker.client_id, world.b_trusted_issuer)
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert "www-authenticate" not in response.headers
    assert await token_status(client, world.b_worker) == 200  # B's client is untouched
    b_token = await issue_token(client, world.b_admin, "admin")
    listed = (await client.get(C, headers=bearer(b_token))).json()["items"]
    assert sorted(item["client_id"] for item in listed) == sorted(
        [world.b_admin.client_id, world.b_worker.client_id])  # nothing was added to B
    issuers = (await client.get(TI, headers=bearer(b_token))).json()["items"]
    # B's trusted issuer is there, unchanged, and nothing was added.
    assert [(item["id"], item["status"]) for item in issuers] == [
        (world.b_trusted_issuer, "active")]


@pytest.mark.parametrize("endpoint", OBJECT_ENDPOINTS, ids=str)
async def test_another_tenants_object_answers_exactly_like_a_missing_one(
        client, world, endpoint):
    token = await issue_token(client, world.a_admin, "admin")
    foreign = await call(client, endpoint, bearer(token), world.b_worker.tenant_id,
                         world.b_worker.client_id, world.b_trusted_issuer)
    missing = await call(client, endpoint, bearer(token), MISSING, "m2m_missing")
    assert (foreign.status_code, foreign.json(), foreign.headers.get("www-authenticate")) == (
        missing.status_code, missing.json(), missing.headers.get("www-authenticate"))


@pytest.mark.parametrize("endpoint", PLATFORM_ONLY, ids=str)
async def test_a_tenant_admin_gets_403_from_platform_only_endpoints(client, world, endpoint):
    token = await issue_token(client, world.a_admin, "admin")
    response = await call(client, endpoint, bearer(token), world.a_admin.tenant_id,
                          world.a_admin.client_id)
    assert (response.status_code, response.json()) == (403, INSUFFICIENT_SCOPE)
    assert response.headers["www-authenticate"] == INSUFFICIENT_SCOPE_CHALLENGE


async def test_a_tenant_admin_lists_nothing_of_another_tenant(client, world):
    token = await issue_token(client, world.a_admin, "admin")
    tenants_seen = (await client.get(T, headers=bearer(token))).json()["items"]
    clients_seen = (await client.get(C, headers=bearer(token))).json()["items"]
    issuers_seen = (await client.get(TI, headers=bearer(token))).json()["items"]
    assert {item["tenant_id"] for item in tenants_seen} == {world.a_admin.tenant_id}
    assert {item["tenant_id"] for item in clients_seen} == {world.a_admin.tenant_id}
    assert issuers_seen == []  # B's trusted issuer is not listed


@pytest.mark.parametrize("endpoint", EVERY_ENDPOINT, ids=str)
async def test_an_integrator_token_gets_403_insufficient_scope(client, world, endpoint):
    token = await issue_token(client, world.a_integrator, "integrator")
    # Its own tenant's objects: the scope, not the tenant, is what is missing.
    response = await call(client, endpoint, bearer(token), world.a_worker.tenant_id,
                          world.a_worker.client_id)
    assert (response.status_code, response.json()) == (403, INSUFFICIENT_SCOPE)
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert await token_status(client, world.a_worker) == 200


async def _wrong_typ(engine: AsyncEngine, settings: Settings, clock: FakeClock,
                     token: str) -> str:
    """The same claims signed by the issuer's own active key, but ``typ: JWT``."""
    ring = KeyRing(engine, encryptor_for(settings), clock, alg="RS256")
    await ring.load()
    assert ring.public_keyset is not None
    return ring.active.sign(dict(jwt.decode(token, ring.public_keyset).claims), typ="JWT")


async def _foreign(http: httpx.AsyncClient, token: str) -> str:
    """The same claims signed by a key this issuer never published."""
    keys = KeySet.import_key_set((await http.get("/.well-known/jwks.json")).json())
    return forged_token(dict(jwt.decode(token, keys).claims))


BAD_TOKENS = ["none", "not-bearer", "garbage", "expired", "wrong-typ", "foreign-key"]


# The bearer token is refused offline, before any store is read: once, on SQLite.
@store_independent
@pytest.mark.parametrize("kind", BAD_TOKENS)
@pytest.mark.parametrize("endpoint", EVERY_ENDPOINT, ids=str)
async def test_a_missing_or_invalid_token_gets_401_invalid_token(
        client, world, engine, settings, clock, endpoint, kind):
    token = await issue_token(client, world.a_admin, "admin")
    headers: dict[str, str] = {}
    if kind == "not-bearer":
        headers = {"Authorization": f"Basic {token}"}
    elif kind == "garbage":
        headers = bearer("not.a.jwt")
    elif kind == "expired":
        headers = bearer(token)
        clock.advance(3600 + 31)  # past exp and the 30 s leeway
    elif kind == "wrong-typ":
        headers = bearer(await _wrong_typ(engine, settings, clock, token))
    elif kind == "foreign-key":
        headers = bearer(await _foreign(client, token))
    response = await call(client, endpoint, headers, world.a_worker.tenant_id,
                          world.a_worker.client_id)
    assert (response.status_code, response.json()) == (401, INVALID_TOKEN)
    assert response.headers["www-authenticate"] == INVALID_TOKEN_CHALLENGE
    assert response.headers["cache-control"] == "no-store"


async def test_the_same_token_is_accepted_before_it_expires(client, world, clock):
    """The expired case above fails for the expiry alone: just before, it works."""
    token = await issue_token(client, world.a_admin, "admin")
    clock.advance(3600 + 29)
    assert (await client.get(C, headers=bearer(token))).status_code == 200
