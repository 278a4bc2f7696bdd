"""RFC 7009 (OAuth 2.0 Token Revocation) at POST /revoke, through HTTP.

§2.1 the request (client authentication, ``token``, ``token_type_hint``, the
token must have been issued to the caller), §2.2 the response (200, also for
invalid tokens; hints never change it), §2.2.1 errors; revocation is immediate
(§2.1) and audited (``M2M_TOKEN_REVOKED``, same transaction as ``revoked_at``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from issuer.store.models import AuditEventRow, IssuedToken
from tests.conftest import ISSUER, Registered, issue_token, store_independent

INACTIVE = {"active": False}
GENERIC_INVALID_CLIENT = {"error": "invalid_client",
                          "error_description": "Client authentication failed"}
NOT_YOURS = {"error": "invalid_grant",
             "error_description": "The token was not issued to this client"}
FORM = "application/x-www-form-urlencoded"


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    jti: str = claims["jti"]
    return jti


async def revoke(http: Any, caller: Registered, token: str, **extra: str) -> Any:
    return await http.post("/revoke", data={"token": token, **extra}, auth=caller.basic)


async def active(http: Any, owner: Registered, token: str) -> bool:
    response = await http.post("/introspect", data={"token": token}, auth=owner.basic)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    if body["active"] is False:
        assert body == INACTIVE
    return bool(body["active"])


def assert_empty_200(response: Any) -> None:
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"


async def revoked_events(engine: Any) -> list[AuditEventRow]:
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(select(AuditEventRow).where(
            AuditEventRow.event == "M2M_TOKEN_REVOKED").order_by(AuditEventRow.id))
        return list(rows.scalars())


async def revoked_at(engine: Any, token: str) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(select(IssuedToken.revoked_at).where(
            IssuedToken.jti == jti_of(token)))).scalar_one()


# §2.1 -- a client revokes its own token, at once ----------------------------------------


async def test_s2_1_own_token_is_revoked_and_inactive_at_once(client, register, engine, clock):
    owner = await register()
    token = await issue_token(client, owner)
    assert await active(client, owner, token)

    response = await revoke(client, owner, token)

    assert_empty_200(response)
    assert not await active(client, owner, token)
    assert (await revoked_at(engine, token)).timestamp() == clock.now()


async def test_s2_1_revoking_one_token_leaves_the_clients_others_active(client, register):
    owner = await register()
    first, second = await issue_token(client, owner), await issue_token(client, owner)
    assert_empty_200(await revoke(client, owner, first))
    assert not await active(client, owner, first)
    assert await active(client, owner, second)


async def test_s2_1_client_secret_post_authenticates_the_caller(client, register):
    owner = await register()
    token = await issue_token(client, owner)
    response = await client.post("/revoke", data={
        "token": token, "client_id": owner.client_id, "client_secret": owner.client_secret})
    assert_empty_200(response)
    assert not await active(client, owner, token)


async def test_s2_1_a_revoked_admin_token_no_longer_opens_the_admin_api(
        client, platform_admin):
    admin = await platform_admin()
    token = await issue_token(client, admin, "admin")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/tenants", headers=headers)).status_code == 200
    assert_empty_200(await revoke(client, admin, token))
    response = await client.get("/api/v1/tenants", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "id_token", "no_such_type"])
async def test_s2_1_token_type_hint_never_changes_the_outcome(client, register, hint):
    # §2.1: a hint that does not find the token "MUST extend its search across all
    # of its supported token types"; §2.2: "An invalid token type hint value is
    # ignored by the authorization server and does not influence the revocation
    # response." So no hint is unsupported_token_type here.
    owner = await register()
    token = await issue_token(client, owner)
    assert_empty_200(await revoke(client, owner, token, token_type_hint=hint))
    assert not await active(client, owner, token)


# §2.2 -- invalid tokens are 200 ---------------------------------------------------------


@pytest.mark.parametrize("token", [
    "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "x" * 4000,
    "eyJhbGciOiAiIiwgIi00ICI6ICIiLCAiY3JpdCI6IDB9.000.",
])
async def test_s2_2_unknown_or_garbage_token_is_200(client, register, engine, token):
    caller = await register()
    assert_empty_200(await revoke(client, caller, token))
    assert await revoked_events(engine) == []


async def test_s2_2_an_expired_token_is_200(client, register, clock):
    owner = await register()
    token = await issue_token(client, owner)
    clock.advance(3600)
    assert_empty_200(await revoke(client, owner, token))


async def test_s2_2_revoking_twice_is_200_and_audited_once(client, register, engine):
    owner = await register()
    token = await issue_token(client, owner)
    assert_empty_200(await revoke(client, owner, token))
    assert_empty_200(await revoke(client, owner, token))
    assert len(await revoked_events(engine)) == 1


# §2.1 -- another client's token is refused and stays active -----------------------------


@pytest.mark.parametrize("tenant", ["acme", "globex"])
async def test_s2_1_another_clients_token_is_refused_and_stays_active(
        client, register, engine, tenant):
    owner = await register(tenant="acme")
    other = await register(tenant=tenant, name="other client")
    token = await issue_token(client, owner)

    response = await revoke(client, other, token)

    assert response.status_code == 400
    assert response.json() == NOT_YOURS
    assert response.headers["cache-control"] == "no-store"
    assert await active(client, owner, token)
    assert await revoked_at(engine, token) is None
    assert await revoked_events(engine) == []


async def test_s2_1_not_even_the_platform_admin_revokes_another_clients_token_here(
        client, register, platform_admin):
    # Administrators revoke through POST /auth/m2m/token/revoke; /revoke is RFC 7009's
    # "a client revokes its own tokens".
    admin = await platform_admin()
    owner = await register()
    token = await issue_token(client, owner)
    response = await revoke(client, admin, token)
    assert response.status_code == 400
    assert response.json() == NOT_YOURS
    assert await active(client, owner, token)


# Audit: M2M_TOKEN_REVOKED ---------------------------------------------------------------


async def test_revocation_is_audited(client, register, engine, clock):
    owner = await register()
    token = await issue_token(client, owner)
    clock.advance(10)

    await revoke(client, owner, token)

    [event] = await revoked_events(engine)
    assert event.severity == "medium"
    assert event.actor == owner.client_id
    assert (event.tenant_id, event.client_id) == (owner.tenant_id, owner.client_id)
    assert event.at.timestamp() == clock.now()
    assert event.source == "203.0.113.7"
    assert event.details == {"jti": jti_of(token), "via": "revocation"}
    assert event.at == await revoked_at(engine, token)


# §2.2.1 -- errors -----------------------------------------------------------------------


async def test_s2_2_1_wrong_secret_is_invalid_client_and_revokes_nothing(client, register):
    owner = await register()
    token = await issue_token(client, owner)
    response = await client.post("/revoke", data={"token": token},
                                 auth=(owner.client_id, owner.client_secret + "x"))
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT
    assert response.headers["www-authenticate"] == 'Basic realm="m2m-issuer", charset="UTF-8"'
    assert await active(client, owner, token)


async def test_s2_2_1_wrong_secret_with_post_is_invalid_client_without_challenge(
        client, register):
    owner = await register()
    response = await client.post("/revoke", data={
        "token": "garbage", "client_id": owner.client_id, "client_secret": "m2ms_wrong"})
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT
    assert "www-authenticate" not in response.headers


async def test_s2_2_1_unknown_caller_is_invalid_client(client):
    response = await client.post("/revoke", data={"token": "garbage"},
                                 auth=("m2m_does-not-exist", "m2ms_whatever"))
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT


async def test_s2_2_1_a_disabled_client_cannot_revoke(client, register, set_status, settings,
                                                     clock):
    owner = await register()
    token = await issue_token(client, owner)
    await set_status(client_id=owner.client_id)
    clock.advance(settings.client_cache_ttl + 1)  # as at /token: seen once the cache expires
    response = await revoke(client, owner, token)
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT


@store_independent
async def test_s2_2_1_missing_credentials_is_invalid_request(client):
    response = await client.post("/revoke", data={"token": "garbage"})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Client authentication is required"}


@pytest.mark.parametrize("body", ["", "token=", "token_type_hint=access_token"])
async def test_s2_2_1_missing_token_is_invalid_request(client, register, body):
    caller = await register()
    response = await client.post("/revoke", content=body, headers={"Content-Type": FORM},
                                 auth=caller.basic)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Missing 'token' parameter"}
    assert response.headers["cache-control"] == "no-store"


async def test_s2_1_the_token_is_never_taken_from_the_query(client, register):
    owner = await register()
    token = await issue_token(client, owner)
    response = await client.post(f"/revoke?token={token}", content="",
                                 headers={"Content-Type": FORM}, auth=owner.basic)
    assert response.status_code == 400
    assert await active(client, owner, token)



async def test_two_authorization_headers_are_invalid_request(client, register):
    # RFC 9110 §5.3: Authorization is no list field; the caller is authenticated
    # from one header or not at all.
    caller = await register()
    token = await issue_token(client, caller)
    basic = "Basic " + base64.b64encode(
        f"{caller.client_id}:{caller.client_secret}".encode()).decode()
    response = await client.post("/revoke", content=f"token={token}", headers=[
        ("Authorization", basic), ("Authorization", basic), ("Content-Type", FORM)])
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Send one Authorization header"}
    assert response.headers["cache-control"] == "no-store"
    assert await active(client, caller, token)

# An independent client: Authlib's own client-side helper ---------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_client_revokes(client, register, method):
    owner = await register()
    token = await issue_token(client, owner)
    async with AsyncOAuth2Client(owner.client_id, owner.client_secret,
                                 token_endpoint_auth_method=method,
                                 revocation_endpoint_auth_method=method,
                                 transport=client._transport) as oauth:
        response = await oauth.revoke_token(f"{ISSUER}/revoke", token=token,
                                            token_type_hint="access_token")
        unknown = await oauth.revoke_token(f"{ISSUER}/revoke", token="not-a-token")
        introspected = await oauth.introspect_token(f"{ISSUER}/introspect", token=token)
    assert response.status_code == 200
    assert unknown.status_code == 200
    assert introspected.json() == INACTIVE
