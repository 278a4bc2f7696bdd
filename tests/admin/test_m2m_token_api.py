"""The platform's M2M token-management endpoints, through HTTP:
POST /auth/m2m/token, GET /auth/m2m/tokens, POST /auth/m2m/token/revoke."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from issuer.admin import m2m_tokens
from issuer.store.models import AuditEventRow, IssuedToken
from tests.admin.conftest import Admin
from tests.admin.test_admin_auth import forged_token
from tests.admin.test_tenants_api import invalid_body
from tests.conftest import ISSUER, Registered, issue_token, store_independent

NOT_FOUND = {"error": "not_found", "error_description": "No such object"}
UNAUTHORIZED_CLIENT = {"error": "unauthorized_client",
                       "error_description": "The client is not allowed to use this grant type"}
TOO_MANY = {"error": "too_many_requests", "error_description": "Too many token requests"}
INVALID_TOKEN = {"error": "invalid_token", "error_description":
                 "The access token is missing, expired, revoked or not for this API"}
INSUFFICIENT_SCOPE = {"error": "insufficient_scope",
                      "error_description": "The access token does not grant this operation"}
MISMATCH = {"error": "invalid_request",
            "error_description": "'clientId' does not match the token"}
NOT_OURS = {"error": "invalid_request",
            "error_description": "The token was not issued by this server"}


async def _rows(engine, model, *where):
    async with engine.connect() as connection:
        return (await connection.execute(select(model).where(*where))).mappings().all()


async def _mint(http, admin: Admin, target: Registered, scopes=(), **extra):
    body = {"clientId": target.client_id, "scopes": list(scopes),
            "tenantId": target.tenant_id, **extra}
    return await http.post("/auth/m2m/token", json=body, headers=admin.headers)


def _assert_no_store(response) -> None:
    assert response.headers["cache-control"] == "no-store"


# Who may call: the same for all three endpoints ----------------------------------------

ENDPOINTS = [("POST", "/auth/m2m/token", {"clientId": "c", "scopes": [], "tenantId": "t"}),
             ("GET", "/auth/m2m/tokens", None),
             ("POST", "/auth/m2m/token/revoke", {"jti": "j", "clientId": "c"})]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer not-a-jwt", "Basic YTpi",
                                           "forged"])
@store_independent
async def test_no_or_invalid_bearer_token_is_401(client, platform, method, path, body,
                                                 authorization):
    claims = {"iss": ISSUER, "aud": ISSUER, "sub": platform.client.client_id,
              "client_id": platform.client.client_id, "tenant_id": platform.client.tenant_id,
              "scope": "admin", "jti": "x", "iat": 0, "exp": 2**40}
    if authorization == "forged":
        authorization = f"Bearer {forged_token(claims)}"
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert response.headers["www-authenticate"] == (
        'Bearer realm="m2m-issuer", error="invalid_token"')


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize("scope", ["integrator", "orders:read"])
async def test_a_token_without_admin_is_403_insufficient_scope(client, register, method, path,
                                                                 body, scope):
    caller = await register(tenant="acme", allowed_scopes=[scope])
    token = await issue_token(client, caller, scope)
    response = await client.request(method, path, json=body,
                                    headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json() == INSUFFICIENT_SCOPE
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_a_revoked_admin_token_is_401(client, platform, acme_admin):
    claims = jwt.decode(acme_admin.token, await _keyset(client)).claims
    revoked = await client.post("/auth/m2m/token/revoke", headers=platform.headers, json={
        "jti": claims["jti"], "clientId": acme_admin.client.client_id})
    assert revoked.status_code == 200
    response = await client.get("/auth/m2m/tokens", headers=acme_admin.headers)
    assert response.status_code == 401


# POST /auth/m2m/token ------------------------------------------------------------------


async def test_mint_answers_like_the_token_endpoint(client, register, platform):
    target = await register(tenant="acme", allowed_scopes=["orders:read", "orders:write"],
                            allowed_audiences=["https://api.acme.test"])
    response = await _mint(client, platform, target, ["orders:write"])
    assert response.status_code == 200
    body = response.json()
    assert body == {"access_token": body["access_token"], "expires_in": 3600,
                    "scope": "orders:write", "token_type": "Bearer"}
    assert list(body) == ["access_token", "token_type", "expires_in", "scope"]
    assert response.headers["content-type"] == "application/json"
    _assert_no_store(response)
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["ratelimit-limit"] == "10"
    assert response.headers["ratelimit-remaining"] == "9"
    assert response.headers["ratelimit-reset"] == "3600"

    decoded = jwt.decode(body["access_token"], await _keyset(client))
    assert decoded.header["typ"] == "at+jwt"
    claims = decoded.claims
    assert claims["sub"] == claims["client_id"] == target.client_id
    assert claims["tenant_id"] == target.tenant_id
    assert claims["aud"] == "https://api.acme.test"
    assert claims["scope"] == "orders:write"
    assert claims["iss"] == ISSUER
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["mode"] == "m2m"


async def test_mint_with_no_scopes_grants_the_client_defaults(client, register, platform):
    target = await register(tenant="acme", allowed_scopes=["orders:read", "orders:write"],
                            default_scopes=["orders:read"], token_ttl=600)
    response = await _mint(client, platform, target, [])
    assert response.status_code == 200
    assert (response.json()["scope"], response.json()["expires_in"]) == ("orders:read", 600)
    without_field = await client.post("/auth/m2m/token", headers=platform.headers, json={
        "clientId": target.client_id, "tenantId": target.tenant_id})
    assert without_field.json()["scope"] == "orders:read"


async def test_mint_of_an_admin_client_carries_the_issuer_audience(client, register,
                                                                   platform):
    target = await register(tenant="acme", allowed_scopes=["admin"])
    response = await _mint(client, platform, target, ["admin"])
    assert response.status_code == 200
    claims = jwt.decode(response.json()["access_token"], await _keyset(client)).claims
    assert claims["aud"] == ISSUER
    # ... and it works as a bearer token of the admin API, for acme only.
    minted = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert (await client.get("/auth/m2m/tokens", headers=minted)).status_code == 200


async def test_mint_records_the_token_and_an_audit_event_naming_the_admin(
        client, register, platform, engine, clock):
    target = await register(tenant="acme")
    response = await client.post("/auth/m2m/token", headers={**platform.headers,
                                                             "X-Request-ID": "mint-1"},
                                 json={"clientId": target.client_id, "scopes": ["orders:read"],
                                       "tenantId": target.tenant_id})
    assert response.status_code == 200
    jti = jwt.decode(response.json()["access_token"], await _keyset(client)).claims["jti"]
    (record,) = await _rows(engine, IssuedToken, IssuedToken.jti == jti)
    assert (record["client_id"], record["tenant_id"], record["scope"]) == (
        target.client_id, target.tenant_id, "orders:read")
    assert record["audience"] == [ISSUER]
    assert record["issued_at"].timestamp() == clock.now()
    assert record["expires_at"].timestamp() == clock.now() + 3600
    assert record["revoked_at"] is None
    (event,) = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_GENERATED",
                           AuditEventRow.client_id == target.client_id)
    assert event["actor"] == platform.client.client_id
    assert event["tenant_id"] == target.tenant_id
    assert event["severity"] == "medium"
    assert event["source"] == "203.0.113.7"
    assert event["request_id"] == "mint-1"
    assert event["details"] == {
        "client_id": target.client_id, "tenant_id": target.tenant_id,
        "scopes": ["orders:read"], "audience": [ISSUER], "jti": jti,
        "kid": record["kid"], "expiresAt": record["expires_at"].isoformat(),
        "secret_used": "none", "userId": platform.client.client_id}


async def test_a_tenant_admin_mints_for_its_own_tenant(client, register, acme_admin, engine):
    target = await register(tenant="acme")
    response = await _mint(client, acme_admin, target)
    assert response.status_code == 200
    (event,) = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_GENERATED",
                           AuditEventRow.client_id == target.client_id)
    assert event["actor"] == event["details"]["userId"] == acme_admin.client.client_id


async def test_mint_denied_scopes_are_invalid_scope_with_details(client, register, platform,
                                                                 engine):
    target = await register(tenant="acme", allowed_scopes=["orders:*"])
    response = await _mint(client, platform, target, ["orders:read", "billing:read", "admin"])
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_scope",
        "error_description": "Scope not allowed for this client: billing:read admin",
        "details": {"invalidScopes": ["billing:read", "admin"]}}
    _assert_no_store(response)
    assert await _rows(engine, IssuedToken, IssuedToken.client_id == target.client_id) == []
    (denial,) = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_DENIED")
    assert denial["actor"] == platform.client.client_id
    assert denial["client_id"] == target.client_id
    assert denial["details"] == {"error": "invalid_scope", "reason": "scope_not_allowed",
                                 "invalidScopes": ["billing:read", "admin"],
                                 "userId": platform.client.client_id}


@pytest.mark.parametrize(("scopes", "invalid"), [
    (["orders:read orders:write"], ["orders:read orders:write"]),
    ([""], [""]),
    (["orders:read", "bad\"quote"], ["bad\"quote"]),
])
async def test_mint_refuses_scopes_that_are_not_single_scope_tokens(client, register,
                                                                    platform, scopes,
                                                                    invalid):
    target = await register(tenant="acme", allowed_scopes=["orders:read", "orders:write"])
    response = await _mint(client, platform, target, scopes)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert response.json()["details"] == {"invalidScopes": invalid}


async def test_mint_for_a_client_not_allowed_client_credentials_is_403(client, register,
                                                                       platform, set_status):
    target = await register(tenant="acme")
    await set_status(client_id=target.client_id, grant_types=["urn:example:other"])
    response = await _mint(client, platform, target)
    assert response.status_code == 403
    assert response.json() == UNAUTHORIZED_CLIENT
    _assert_no_store(response)


async def test_mint_for_a_disabled_client_is_403_at_once(client, register, platform,
                                                         set_status):
    target = await register(tenant="acme")
    assert (await _mint(client, platform, target)).status_code == 200
    await set_status(client_id=target.client_id)  # no wait for the token path's cache
    response = await _mint(client, platform, target)
    assert response.status_code == 403
    assert response.json() == UNAUTHORIZED_CLIENT


async def test_mint_for_a_client_of_a_disabled_tenant_is_403(client, register, platform,
                                                             set_status, engine):
    target = await register(tenant="acme")
    await set_status(tenant_id=target.tenant_id)
    response = await _mint(client, platform, target)
    assert response.status_code == 403
    assert response.json() == UNAUTHORIZED_CLIENT
    (denial,) = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_DENIED")
    assert denial["details"]["reason"] == "tenant_disabled"


async def test_mint_names_nothing_the_caller_cannot_see(client, register, platform,
                                                        acme_admin, engine):
    acme = await register(tenant="acme")
    globex = await register(tenant="globex")
    cases = [
        (platform, {"clientId": "m2m_nobody", "tenantId": acme.tenant_id}),
        (platform, {"clientId": acme.client_id, "tenantId": globex.tenant_id}),
        (platform, {"clientId": acme.client_id, "tenantId": "no-such-tenant"}),
        (acme_admin, {"clientId": globex.client_id, "tenantId": globex.tenant_id}),
        (acme_admin, {"clientId": globex.client_id, "tenantId": acme.tenant_id}),
        (acme_admin, {"clientId": "m2m_nobody", "tenantId": acme.tenant_id}),
    ]
    for admin, body in cases:
        response = await client.post("/auth/m2m/token", headers=admin.headers,
                                     json={**body, "scopes": []})
        assert response.status_code == 404, body
        assert response.json() == NOT_FOUND
    assert await _rows(engine, IssuedToken, IssuedToken.client_id.in_(
        [acme.client_id, globex.client_id])) == []


@store_independent  # refused by the body's validation, before the store is asked
@pytest.mark.parametrize(("body", "field"), [
    ({"scopes": [], "tenantId": "t"}, "clientId"),
    ({"clientId": "c", "scopes": []}, "tenantId"),
    ({"clientId": "c", "scopes": "orders:read", "tenantId": "t"}, "scopes"),
    ({"clientId": "c", "scopes": [1], "tenantId": "t"}, "scopes.0"),
    ({"clientId": 7, "scopes": [], "tenantId": "t"}, "clientId"),
    ({"clientId": "", "scopes": [], "tenantId": "t"}, "clientId"),
    ({"clientId": "c", "scopes": [], "tenantId": "t", "ttl": 60}, "ttl"),
    ({"clientId": "m2m_\u0000", "scopes": [], "tenantId": "t"}, "clientId"),
    ({"clientId": "c", "scopes": [], "tenantId": "t e"}, "tenantId"),
])
async def test_mint_body_errors_are_422_naming_the_field(client, platform, body, field):
    response = await client.post("/auth/m2m/token", json=body, headers=platform.headers)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert field in [e["field"] for e in response.json()["details"]["errors"]]


async def test_mint_body_that_is_not_json_is_422(client, platform):
    response = await client.post("/auth/m2m/token", content=b"clientId=c",
                                 headers=platform.headers)
    assert response.status_code == 422
    assert response.json()["details"] == {"errors": [{"field": "",
                                                      "message": "the body is not JSON"}]}


# Rate limit ----------------------------------------------------------------------------


async def test_the_eleventh_mint_in_an_hour_is_429_until_the_hour_has_passed(
        client, register, platform_admin, engine, clock):
    admin = await platform_admin()
    target = await register(tenant="acme")
    other = await register(tenant="acme")
    caller = Admin(admin, await issue_token(client, admin, "admin"))
    for number in range(10):
        response = await _mint(client, caller, target)
        assert response.status_code == 200
        assert response.headers["ratelimit-remaining"] == str(9 - number)
        clock.advance(60)  # mints at 0, 60, ..., 540 s

    refused = await _mint(client, caller, target)
    assert refused.status_code == 429
    assert refused.json() == TOO_MANY
    _assert_no_store(refused)
    # The first mint leaves the window 3600 s after it, 600 s from now.
    assert refused.headers["retry-after"] == "3000"
    assert refused.headers["ratelimit-limit"] == "10"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == "3000"
    assert len(await _rows(engine, IssuedToken, IssuedToken.client_id == target.client_id)) == 10
    denial = (await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_DENIED"))[-1]
    assert (denial["details"]["error"], denial["details"]["reason"]) == (
        "too_many_requests", "rate_limited")

    # The budget is per target client, not per admin.
    assert (await _mint(client, caller, other)).status_code == 200

    clock.advance(3000 - 1)
    assert (await _mint(client, caller, target)).headers["retry-after"] == "1"
    clock.advance(3600)
    caller = Admin(admin, await issue_token(client, admin, "admin"))
    allowed = await _mint(client, caller, target)
    assert allowed.status_code == 200
    assert allowed.headers["ratelimit-remaining"] == "9"


async def test_the_budget_is_shared_by_every_admin_of_the_client(client, register, platform,
                                                                  acme_admin):
    target = await register(tenant="acme")
    for _ in range(5):
        assert (await _mint(client, platform, target)).status_code == 200
        assert (await _mint(client, acme_admin, target)).status_code == 200
    assert (await _mint(client, acme_admin, target)).status_code == 429
    assert (await _mint(client, platform, target)).status_code == 429


async def test_concurrent_mints_never_exceed_the_budget(client, register, platform, engine):
    target = await register(tenant="acme")
    responses = await asyncio.gather(*[_mint(client, platform, target) for _ in range(14)])
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 4
    assert len(await _rows(engine, IssuedToken, IssuedToken.client_id == target.client_id)) == 10
    assert len(await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_GENERATED",
                           AuditEventRow.client_id == target.client_id)) == 10


async def test_refused_mints_do_not_use_up_the_budget(client, register, platform):
    target = await register(tenant="acme")
    for _ in range(12):
        assert (await _mint(client, platform, target, ["billing:read"])).status_code == 400
    response = await _mint(client, platform, target)
    assert response.status_code == 200
    assert response.headers["ratelimit-remaining"] == "9"


# GET /auth/m2m/tokens ------------------------------------------------------------------


async def test_list_shows_metadata_newest_first_and_never_the_token(client, register,
                                                                    platform, clock):
    target = await register(tenant="acme", allowed_scopes=["orders:read", "orders:write"],
                            allowed_audiences=["https://a.test", "https://b.test"])
    first = await client.post("/token", auth=target.basic, data={
        "grant_type": "client_credentials", "scope": "orders:read orders:write",
        "resource": ["https://a.test", "https://b.test"]})
    clock.advance(5)
    second = await _mint(client, platform, target, ["orders:read"])
    keyset = await _keyset(client)
    tokens = [first.json()["access_token"], second.json()["access_token"]]
    jtis = [jwt.decode(token, keyset).claims["jti"] for token in tokens]

    response = await client.get("/auth/m2m/tokens", headers=platform.headers,
                                params={"clientId": target.client_id})
    assert response.status_code == 200
    _assert_no_store(response)
    now = clock.now()
    assert response.json() == {"items": [
        {"jti": jtis[1], "clientId": target.client_id, "tenantId": target.tenant_id,
         "scopes": ["orders:read"], "audience": ["https://a.test"],
         "issuedAt": _iso(now), "expiresAt": _iso(now + 3600), "revokedAt": None,
         "active": True},
        {"jti": jtis[0], "clientId": target.client_id, "tenantId": target.tenant_id,
         "scopes": ["orders:read", "orders:write"],
         "audience": ["https://a.test", "https://b.test"],
         "issuedAt": _iso(now - 5), "expiresAt": _iso(now - 5 + 3600), "revokedAt": None,
         "active": True},
    ], "nextCursor": None}
    for token in tokens:
        assert token not in response.text
        assert token.split(".")[2] not in response.text


async def test_list_filters_on_active(client, register, platform, clock, set_status):
    target = await register(tenant="acme", token_ttl=600)
    other = await register(tenant="acme")
    expired = await _jti(client, await _mint(client, platform, target))
    clock.advance(601)
    revoked = await _jti(client, await _mint(client, platform, target))
    live = await _jti(client, await _mint(client, platform, target))
    of_disabled = await _jti(client, await _mint(client, platform, other))
    await set_status(client_id=other.client_id)
    assert (await client.post("/auth/m2m/token/revoke", headers=platform.headers, json={
        "jti": revoked, "clientId": target.client_id})).status_code == 200

    async def listed(**params):
        response = await client.get("/auth/m2m/tokens", headers=platform.headers,
                                    params=params)
        assert response.status_code == 200
        return {item["jti"]: item["active"] for item in response.json()["items"]
                if item["clientId"] in (target.client_id, other.client_id)}

    assert await listed() == {expired: False, revoked: False, live: True, of_disabled: False}
    assert await listed(active="true") == {live: True}
    assert await listed(active="false") == {expired: False, revoked: False,
                                            of_disabled: False}
    assert await listed(active="true", clientId=target.client_id) == {live: True}
    # An empty parameter is a value, and no client id is empty (?clientId=&active=true).
    response = await client.get("/auth/m2m/tokens?clientId=&active=true",
                                headers=platform.headers)
    assert (response.status_code, response.json()) == (422, invalid_body(
        ("clientId", "String should have at least 1 character")))


async def test_list_is_scoped_to_the_callers_tenant(client, register, platform, acme_admin,
                                                   globex_admin):
    acme = await register(tenant="acme")
    globex = await register(tenant="globex")
    await _mint(client, platform, acme)
    await _mint(client, platform, globex)

    async def tenants_seen(admin: Admin, **params):
        response = await client.get("/auth/m2m/tokens", headers=admin.headers, params=params)
        assert response.status_code == 200
        return {item["tenantId"] for item in response.json()["items"]}

    assert await tenants_seen(acme_admin) == {acme.tenant_id}
    assert await tenants_seen(globex_admin) == {globex.tenant_id}
    assert await tenants_seen(platform) == {acme.tenant_id, globex.tenant_id,
                                            platform.client.tenant_id}
    assert await tenants_seen(platform, clientId=globex.client_id) == {globex.tenant_id}
    for admin, client_id in [(acme_admin, globex.client_id), (globex_admin, acme.client_id),
                             (acme_admin, platform.client.client_id),
                             (platform, "m2m_nobody")]:
        response = await client.get("/auth/m2m/tokens", headers=admin.headers,
                                    params={"clientId": client_id})
        assert response.status_code == 404
        assert response.json() == NOT_FOUND


async def test_pages_are_stable_while_tokens_are_issued(client, register, platform, clock):
    target = await register(tenant="acme")
    # Seven tokens, four of them in the same second: the cursor breaks ties on jti.
    for number in range(7):
        await _mint(client, platform, target)
        if number >= 3:
            clock.advance(1)
    everything = await client.get("/auth/m2m/tokens", headers=platform.headers,
                                  params={"clientId": target.client_id})
    expected = [item["jti"] for item in everything.json()["items"]]
    assert len(expected) == 7
    stamps = [item["issuedAt"] for item in everything.json()["items"]]
    assert stamps == sorted(stamps, reverse=True)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"clientId": target.client_id, "limit": "3",
                  **({"cursor": cursor} if cursor else {})}
        response = await client.get("/auth/m2m/tokens", headers=platform.headers,
                                    params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= 3
        seen += [item["jti"] for item in page["items"]]
        pages += 1
        # Meanwhile, more tokens are issued (newer, and in the same second).
        await _mint(client, platform, target)
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == expected


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=201", "limit"), ("limit=ten", "limit"),
    ("active=maybe", "active"), ("cursor=%25%25%25", "cursor"),
    ("cursor=WyJub3QtYS1kYXRlIiwgImoiXQ", "cursor"),  # ["not-a-date", "j"]
    ("cursor=WzFd", "cursor"),  # [1]
    ("client_id=m2m_x", "client_id"), ("clientId=a&clientId=b", "clientId"),
    ("clientId=m2m%00", "clientId"),
    ("cursor=WyIyMDI0LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgImpcdTAwMDAiXQ",  # jti with NUL
     "cursor"),
    ("cursor=WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzE0OjAwIiwgImoiXQ", "cursor"),  # before year 1 UTC
])
async def test_list_query_errors_are_422_naming_the_parameter(client, platform, query, field):
    response = await client.get(f"/auth/m2m/tokens?{query}", headers=platform.headers)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert field in [e["field"] for e in response.json()["details"]["errors"]]


# POST /auth/m2m/token/revoke -----------------------------------------------------------


async def test_revoke_by_jti(client, register, platform, engine, clock):
    target = await register(tenant="acme")
    jti = await _jti(client, await _mint(client, platform, target))
    clock.advance(10)
    response = await client.post("/auth/m2m/token/revoke", headers=platform.headers,
                                 json={"jti": jti, "clientId": target.client_id})
    assert response.status_code == 200
    assert response.json() == {"revoked": True, "jti": jti}
    _assert_no_store(response)
    (record,) = await _rows(engine, IssuedToken, IssuedToken.jti == jti)
    assert record["revoked_at"].timestamp() == clock.now()
    (event,) = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_REVOKED")
    assert event["actor"] == platform.client.client_id
    assert (event["client_id"], event["tenant_id"]) == (target.client_id, target.tenant_id)
    assert event["severity"] == "medium"
    assert event["details"] == {"jti": jti, "userId": platform.client.client_id,
                                "identifiedBy": "jti"}

    listed = await client.get("/auth/m2m/tokens", headers=platform.headers,
                              params={"clientId": target.client_id})
    (item,) = listed.json()["items"]
    assert (item["active"], item["revokedAt"]) == (False, _iso(clock.now()))


async def test_revoke_is_idempotent(client, register, platform, engine, clock):
    target = await register(tenant="acme")
    jti = await _jti(client, await _mint(client, platform, target))
    body = {"jti": jti, "clientId": target.client_id}
    first = await client.post("/auth/m2m/token/revoke", headers=platform.headers, json=body)
    revoked_at = (await _rows(engine, IssuedToken, IssuedToken.jti == jti))[0]["revoked_at"]
    clock.advance(30)
    again = await client.post("/auth/m2m/token/revoke", headers=platform.headers, json=body)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"revoked": True, "jti": jti}
    assert (await _rows(engine, IssuedToken, IssuedToken.jti == jti))[0]["revoked_at"] == (
        revoked_at)
    assert len(await _rows(engine, AuditEventRow,
                           AuditEventRow.event == "M2M_TOKEN_REVOKED")) == 1


async def test_revoke_by_token_string(client, register, acme_admin, engine):
    target = await register(tenant="acme")
    minted = await _mint(client, acme_admin, target)
    token = minted.json()["access_token"]
    response = await client.post("/auth/m2m/token/revoke", headers=acme_admin.headers,
                                 json={"token": token, "clientId": target.client_id})
    jti = await _jti(client, minted)
    assert response.status_code == 200
    assert response.json() == {"revoked": True, "jti": jti}
    (event,) = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_REVOKED")
    assert event["actor"] == acme_admin.client.client_id
    assert event["details"]["identifiedBy"] == "token"
    assert token not in repr(event)


async def test_revoke_by_the_token_of_an_expired_token_still_works(client, register,
                                                                   platform, clock):
    target = await register(tenant="acme", token_ttl=60)
    minted = await _mint(client, platform, target)
    clock.advance(120)
    platform = Admin(platform.client, await issue_token(client, platform.client, "admin"))
    response = await client.post("/auth/m2m/token/revoke", headers=platform.headers, json={
        "token": minted.json()["access_token"], "clientId": target.client_id})
    assert response.status_code == 200


async def test_revoke_with_the_wrong_client_is_400_and_revokes_nothing(client, register,
                                                                       platform, engine):
    target = await register(tenant="acme")
    other = await register(tenant="acme")
    minted = await _mint(client, platform, target)
    jti = await _jti(client, minted)
    for body in ({"jti": jti, "clientId": other.client_id},
                 {"token": minted.json()["access_token"], "clientId": other.client_id},
                 {"jti": jti, "clientId": "m2m_nobody"}):
        response = await client.post("/auth/m2m/token/revoke", headers=platform.headers,
                                     json=body)
        assert response.status_code == 400
        assert response.json() == MISMATCH
    assert (await _rows(engine, IssuedToken, IssuedToken.jti == jti))[0]["revoked_at"] is None
    assert await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_REVOKED") == []


async def test_revoke_names_nothing_the_caller_cannot_see(client, register, platform,
                                                          acme_admin, engine):
    globex = await register(tenant="globex")
    acme = await register(tenant="acme")
    globex_jti = await _jti(client, await _mint(client, platform, globex))
    for body in ({"jti": globex_jti, "clientId": globex.client_id},
                 {"jti": globex_jti, "clientId": acme.client_id},
                 {"jti": "no-such-jti", "clientId": acme.client_id}):
        response = await client.post("/auth/m2m/token/revoke", headers=acme_admin.headers,
                                     json=body)
        assert response.status_code == 404, body
        assert response.json() == NOT_FOUND
    unknown = await client.post("/auth/m2m/token/revoke", headers=platform.headers,
                                json={"jti": "no-such-jti", "clientId": acme.client_id})
    assert unknown.status_code == 404
    assert (await _rows(engine, IssuedToken, IssuedToken.jti == globex_jti))[0][
        "revoked_at"] is None


async def test_revoke_of_a_token_this_issuer_did_not_sign_is_400(client, register,
                                                                  platform):
    target = await register(tenant="acme")
    jti = await _jti(client, await _mint(client, platform, target))
    forged = forged_token({"iss": ISSUER, "jti": jti, "client_id": target.client_id})
    for token in (forged, "not-a-jwt", "a.b.c"):
        response = await client.post("/auth/m2m/token/revoke", headers=platform.headers,
                                     json={"token": token, "clientId": target.client_id})
        assert response.status_code == 400
        assert response.json() == NOT_OURS


@store_independent  # refused by the body's validation, before the store is asked
@pytest.mark.parametrize(("body", "fields"), [
    ({"clientId": "c"}, {"token", "jti"}),
    ({"token": "t", "jti": "j", "clientId": "c"}, {"token", "jti"}),
    ({"jti": "j"}, {"clientId"}),
    ({"jti": "", "clientId": "c"}, {"jti"}),
    ({"jti": "j", "clientId": "c", "reason": "x"}, {"reason"}),
    ({"jti": ["j"], "clientId": "c"}, {"jti"}),
    ({"jti": "j\u0000", "clientId": "c"}, {"jti"}),
])
async def test_revoke_body_errors_are_422_naming_the_field(client, platform, body, fields):
    response = await client.post("/auth/m2m/token/revoke", json=body,
                                 headers=platform.headers)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert {e["field"] for e in response.json()["details"]["errors"]} == fields


# The module's public face ----------------------------------------------------------------


def test_the_module_declares_the_three_documented_endpoints():
    assert {(endpoint.method, endpoint.path) for endpoint in m2m_tokens.endpoints} == {
        ("POST", "/auth/m2m/token"), ("GET", "/auth/m2m/tokens"),
        ("POST", "/auth/m2m/token/revoke")}
    for endpoint in m2m_tokens.endpoints:
        assert endpoint.response is not None
        assert endpoint.tag == "M2M tokens"


def test_the_schemas_use_the_platform_field_names():
    assert set(m2m_tokens.MintTokenRequest.model_json_schema()["properties"]) == {
        "clientId", "scopes", "tenantId"}
    assert set(m2m_tokens.TokenMetadata.model_json_schema()["properties"]) == {
        "jti", "clientId", "tenantId", "scopes", "audience", "issuedAt", "expiresAt",
        "revokedAt", "active"}
    assert m2m_tokens.RevokeTokenRequest.model_json_schema()["oneOf"] == [
        {"required": ["token"]}, {"required": ["jti"]}]


# Helpers ---------------------------------------------------------------------------------


async def _keyset(client) -> KeySet:
    return KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())


async def _jti(client, minted) -> str:
    assert minted.status_code == 200, minted.text
    return str(jwt.decode(minted.json()["access_token"], await _keyset(client)).claims["jti"])


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat().replace("+00:00", "Z")
