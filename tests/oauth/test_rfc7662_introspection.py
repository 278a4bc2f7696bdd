"""RFC 7662 (OAuth 2.0 Token Introspection) at POST /introspect, through HTTP.

§2.1 the request (client authentication, ``token``, ``token_type_hint``), §2.2 the
response (active members; ``{"active": false}`` for everything the caller may not
learn about), §2.3 errors, §4 the checks the server must make (signature,
expiry, revocation), plus the tenancy rule (another tenant's token is inactive, except
to the platform) and the audit event.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jws
from joserfc.jwk import RSAKey
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from issuer.crypto import encryptor_for
from issuer.keys.ring import KeyRing
from issuer.registration import ClientSpec, create_client
from issuer.store.models import AuditEventRow, Client
from tests.conftest import ISSUER, Registered, issue_token, store_independent

INACTIVE = {"active": False}
GENERIC_INVALID_CLIENT = {"error": "invalid_client",
                          "error_description": "Client authentication failed"}
BASIC_CHALLENGE = 'Basic realm="m2m-issuer", charset="UTF-8"'
FORM = "application/x-www-form-urlencoded"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload)
                                                                                  % 4)))
    return decoded


async def introspect(http: Any, caller: Registered, token: str, **extra: str) -> Any:
    return await http.post("/introspect", data={"token": token, **extra}, auth=caller.basic)


def assert_no_store(response: Any) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def used_events(engine: Any) -> list[AuditEventRow]:
    async with async_sessionmaker(engine)() as session:
        rows = await session.execute(select(AuditEventRow).where(
            AuditEventRow.event == "M2M_TOKEN_USED").order_by(AuditEventRow.id))
        return list(rows.scalars())


async def platform_client(engine: Any, clock: Any, admin: Registered,
                          scopes: list[str]) -> Registered:
    """Another client of the platform tenant (the fixture's ``register`` cannot
    place a client there)."""
    async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        created = await create_client(session, ClientSpec(
            tenant_id=admin.tenant_id, name="platform reader", allowed_scopes=scopes), clock)
    return Registered(created.record.client_id, created.client_secret, admin.tenant_id)


# §2.2 -- an active token ----------------------------------------------------------------


async def test_s2_2_active_token_has_every_member(client, register, clock):
    owner = await register(allowed_scopes=["orders:read", "orders:write"])
    token = await issue_token(client, owner, "orders:read orders:write")
    now = int(clock.now())

    response = await introspect(client, owner, token)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert_no_store(response)
    assert response.json() == {
        "active": True, "scope": "orders:read orders:write", "client_id": owner.client_id,
        "sub": owner.client_id, "aud": ISSUER, "iss": ISSUER, "exp": now + 3600, "iat": now,
        "nbf": now, "jti": claims_of(token)["jti"], "token_type": "Bearer",
        "tenant_id": owner.tenant_id,
    }


async def test_s2_1_a_resource_server_of_the_same_tenant_introspects(client, register):
    owner = await register()
    resource_server = await register(name="orders api", allowed_scopes=["orders:audit"])
    token = await issue_token(client, owner)

    body = (await introspect(client, resource_server, token)).json()

    assert body["active"] is True
    assert body["client_id"] == owner.client_id


async def test_s2_1_client_secret_post_authenticates_the_caller(client, register):
    owner = await register()
    token = await issue_token(client, owner)
    response = await client.post("/introspect", data={
        "token": token, "client_id": owner.client_id, "client_secret": owner.client_secret})
    assert response.status_code == 200
    assert response.json()["active"] is True


async def test_s2_2_audience_list_is_returned_as_issued(client, register):
    owner = await register(allowed_audiences=["https://a.example", "https://b.example"])
    response = await client.post(
        "/token", auth=owner.basic, headers={"Content-Type": FORM},
        content="grant_type=client_credentials&resource=https%3A%2F%2Fa.example"
                "&resource=https%3A%2F%2Fb.example")
    token = response.json()["access_token"]
    body = (await introspect(client, owner, token)).json()
    assert body["aud"] == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "something_else"])
async def test_s2_1_token_type_hint_is_ignored(client, register, hint):
    owner = await register()
    token = await issue_token(client, owner)
    response = await introspect(client, owner, token, token_type_hint=hint)
    assert response.status_code == 200
    assert response.json()["active"] is True


# §2.2 / §4 -- {"active": false}, and nothing else ----------------------------------------


@pytest.mark.parametrize("token", [
    "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "x" * 4000, "ünïcode.tö.ken",
    # header {"alg": "", "crit": 0}: joserfc raised TypeError on it, which was a 500
    "eyJhbGciOiAiIiwgIi00ICI6ICIiLCAiY3JpdCI6IDB9.000.",
])
async def test_s2_2_unknown_or_garbage_token_is_inactive(client, register, token):
    caller = await register()
    response = await introspect(client, caller, token)
    assert response.status_code == 200
    assert response.json() == INACTIVE
    assert_no_store(response)


async def test_s4_token_signed_by_a_foreign_key_is_inactive(client, register, clock):
    owner = await register()
    genuine = claims_of(await issue_token(client, owner))
    key = RSAKey.generate_key(2048, parameters={"kid": "attacker"})
    header = {"alg": "RS256", "kid": "attacker", "typ": "at+jwt"}
    forged = jws.serialize_compact(header, json.dumps(genuine).encode(), key)
    assert (await introspect(client, owner, forged)).json() == INACTIVE


@pytest.fixture
async def issuer_key(engine, settings, clock):
    """The issuer's own active signing key, to sign tokens /token would never issue."""
    keyring = KeyRing(engine, encryptor_for(settings), clock, alg="RS256")
    await keyring.load()
    return keyring.active


@pytest.mark.parametrize("change", [
    {"typ": "JWT"},  # RFC 9068 §4: any other typ is rejected
    {"iss": "https://other-issuer.test"},
    {"jti": "never-issued"},  # validly signed, but this issuer has no record of it
    {"client_id": "m2m_someone_else"},  # disagrees with the record of its jti
])
async def test_s4_signed_by_the_issuer_but_not_an_issued_token_is_inactive(
        client, register, issuer_key, change):
    owner = await register()
    claims = claims_of(await issue_token(client, owner))
    control = issuer_key.sign(claims)  # the same claims, re-signed unchanged: active
    assert (await introspect(client, owner, control)).json()["active"] is True
    changed = {name: value for name, value in change.items() if name != "typ"}
    token = issuer_key.sign({**claims, **changed}, typ=change.get("typ", "at+jwt"))
    assert (await introspect(client, owner, token)).json() == INACTIVE


async def test_s4_expired_token_is_inactive(client, register, clock):
    owner = await register()
    token = await issue_token(client, owner)
    clock.advance(3599)
    assert (await introspect(client, owner, token)).json()["active"] is True
    clock.advance(1)  # RFC 7519 §4.1.4: not accepted "on or after" exp
    assert (await introspect(client, owner, token)).json() == INACTIVE


async def test_s4_revoked_token_is_inactive(client, register):
    owner = await register()
    token = await issue_token(client, owner)
    revoked = await client.post("/revoke", data={"token": token}, auth=owner.basic)
    assert revoked.status_code == 200
    assert (await introspect(client, owner, token)).json() == INACTIVE


@pytest.mark.parametrize("status", ["disabled", "deleted"])
async def test_s4_token_of_a_disabled_client_is_inactive(client, register, set_status, status):
    owner = await register()
    resource_server = await register(name="orders api")
    token = await issue_token(client, owner)
    await set_status(client_id=owner.client_id, status=status)
    assert (await introspect(client, resource_server, token)).json() == INACTIVE


async def test_s4_token_of_a_deleted_client_row_is_inactive(client, register, engine):
    owner = await register()
    resource_server = await register(name="orders api")
    token = await issue_token(client, owner)
    async with engine.begin() as connection:
        await connection.execute(delete(Client).where(Client.id == owner.client_id))
    assert (await introspect(client, resource_server, token)).json() == INACTIVE


async def test_s4_token_of_a_disabled_tenant_is_inactive(client, register, platform_admin,
                                                         set_status):
    admin = await platform_admin()
    owner = await register()
    token = await issue_token(client, owner)
    assert (await introspect(client, admin, token)).json()["active"] is True
    await set_status(tenant_id=owner.tenant_id)
    assert (await introspect(client, admin, token)).json() == INACTIVE


@pytest.mark.parametrize("target", ["client", "tenant"])
async def test_s4_a_token_issued_before_a_disable_stays_inactive_after_the_re_enable(
        client, register, platform_admin, clock, target):
    """Disabling is a kill switch: re-enabling revives the client, not its old tokens."""
    root = {"Authorization": f"Bearer {await issue_token(client, await platform_admin(), 'admin')}"}
    owner = await register()
    resource_server = await register(name="orders api")
    token = await issue_token(client, owner)
    path = (f"/api/v1/clients/{owner.client_id}" if target == "client"
            else f"/api/v1/tenants/{owner.tenant_id}")
    for status in ("disabled", "active"):
        changed = await client.patch(path, json={"status": status}, headers=root)
        assert (changed.status_code, changed.json()["status"]) == (200, status)
    assert (await introspect(client, resource_server, token)).json() == INACTIVE
    # Tokens carry whole-second iat: a token of the disable's own second counts as
    # issued before it, so the re-enabled client's tokens are good from the next one.
    clock.advance(1)
    fresh = await issue_token(client, owner)
    assert (await introspect(client, resource_server, fresh)).json()["active"] is True
    assert (await introspect(client, resource_server, token)).json() == INACTIVE


# Tenancy: another tenant's token is inactive, except for the platform ------


async def test_s2_2_another_tenants_token_is_inactive(client, register):
    owner = await register(tenant="acme")
    outsider = await register(tenant="globex")
    token = await issue_token(client, owner)
    assert (await introspect(client, outsider, token)).json() == INACTIVE


async def test_s2_2_the_introspect_scope_outside_the_platform_tenant_is_not_enough(
        client, register):
    owner = await register(tenant="acme")
    outsider = await register(tenant="globex", allowed_scopes=["introspect"])
    token = await issue_token(client, owner)
    assert (await introspect(client, outsider, token)).json() == INACTIVE


async def test_s2_2_a_platform_client_without_introspect_sees_only_its_tenant(
        client, register, platform_admin, engine, clock):
    admin = await platform_admin()
    reader = await platform_client(engine, clock, admin, ["reports:read"])
    token = await issue_token(client, await register(tenant="acme"))
    assert (await introspect(client, reader, token)).json() == INACTIVE
    own = await issue_token(client, admin, "admin")
    assert (await introspect(client, reader, own)).json()["active"] is True


async def test_s2_2_the_platform_introspect_client_sees_every_tenant(
        client, register, platform_admin):
    admin = await platform_admin()  # scopes: admin introspect
    acme = await register(tenant="acme")
    globex = await register(tenant="globex")
    for owner in (acme, globex):
        token = await issue_token(client, owner)
        body = (await introspect(client, admin, token)).json()
        assert body["active"] is True
        assert (body["client_id"], body["tenant_id"]) == (owner.client_id, owner.tenant_id)


# Audit: M2M_TOKEN_USED for each active introspection ------------------------------------


async def test_active_introspection_is_audited_as_token_used(client, register, platform_admin,
                                                             engine, clock):
    admin = await platform_admin()
    owner = await register()
    token = await issue_token(client, owner)
    jti = claims_of(token)["jti"]

    await introspect(client, admin, token)

    [event] = await used_events(engine)
    assert event.severity == "low"
    assert event.actor == admin.client_id
    assert (event.tenant_id, event.client_id) == (owner.tenant_id, owner.client_id)
    assert event.at.timestamp() == clock.now()
    assert event.source == "203.0.113.7"
    assert event.details == {"jti": jti, "via": "introspection",
                             "caller_client_id": admin.client_id,
                             "caller_tenant_id": admin.tenant_id}
    assert token not in json.dumps(event.details)


async def test_each_active_introspection_is_audited_and_inactive_ones_are_not(
        client, register, engine, clock):
    owner = await register()
    outsider = await register(tenant="globex")
    token = await issue_token(client, owner)
    await introspect(client, owner, token)
    await introspect(client, owner, token)
    await introspect(client, outsider, token)  # foreign: inactive
    await introspect(client, owner, "garbage")
    clock.advance(3600)
    await introspect(client, owner, token)  # expired
    assert len(await used_events(engine)) == 2


# §2.3 -- errors ------------------------------------------------------------------------


async def test_s2_3_wrong_secret_with_basic_is_invalid_client_401_with_challenge(
        client, register):
    owner = await register()
    token = await issue_token(client, owner)
    response = await client.post("/introspect", data={"token": token},
                                 auth=(owner.client_id, owner.client_secret + "x"))
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT
    assert response.headers["www-authenticate"] == BASIC_CHALLENGE
    assert_no_store(response)


async def test_s2_3_unknown_caller_reads_exactly_like_a_wrong_secret(client, register):
    owner = await register()
    token = await issue_token(client, owner)
    unknown = await client.post("/introspect", data={"token": token},
                                auth=("m2m_does-not-exist", owner.client_secret))
    wrong = await client.post("/introspect", data={"token": token},
                              auth=(owner.client_id, "m2ms_wrong"))
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json() == GENERIC_INVALID_CLIENT
    assert unknown.headers["www-authenticate"] == wrong.headers["www-authenticate"]


async def test_s2_3_wrong_secret_with_post_is_invalid_client_401_without_challenge(
        client, register):
    owner = await register()
    token = await issue_token(client, owner)
    response = await client.post("/introspect", data={
        "token": token, "client_id": owner.client_id, "client_secret": "m2ms_wrong"})
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("target", ["client", "tenant"])
async def test_s2_3_a_disabled_caller_is_invalid_client(client, register, set_status, target):
    owner = await register(tenant="acme")
    caller = await register(tenant="globex")
    token = await issue_token(client, owner)
    if target == "client":
        await set_status(client_id=caller.client_id)
    else:
        await set_status(tenant_id=caller.tenant_id)
    response = await introspect(client, caller, token)
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT


async def test_s2_3_a_caller_not_allowed_the_auth_method_is_invalid_client(client, register):
    caller = await register(auth_methods=["client_secret_post"])
    response = await introspect(client, caller, "garbage")
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT


async def test_s2_1_missing_credentials_is_invalid_request(client, register):
    token = await issue_token(client, await register())
    response = await client.post("/introspect", data={"token": token})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Client authentication is required"}
    assert_no_store(response)


async def test_s2_1_credentials_in_the_query_are_refused(client, register):
    caller = await register()
    response = await client.post(
        f"/introspect?client_id={caller.client_id}&client_secret={caller.client_secret}",
        data={"token": "garbage"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "Client credentials must not be sent in the request URI"}



async def test_two_authorization_headers_are_invalid_request(client, register):
    # RFC 9110 §5.3: Authorization is no list field; the caller is authenticated
    # from one header or not at all.
    caller = await register()
    token = await issue_token(client, caller)
    basic = "Basic " + base64.b64encode(
        f"{caller.client_id}:{caller.client_secret}".encode()).decode()
    response = await client.post("/introspect", content=f"token={token}", headers=[
        ("Authorization", basic), ("Authorization", basic), ("Content-Type", FORM)])
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Send one Authorization header"}
    assert response.headers["cache-control"] == "no-store"

@pytest.mark.parametrize("body", ["", "token=", "token_type_hint=access_token"])
async def test_s2_1_missing_token_is_invalid_request(client, register, body):
    caller = await register()
    response = await client.post("/introspect", content=body, headers={"Content-Type": FORM},
                                 auth=caller.basic)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Missing 'token' parameter"}
    assert_no_store(response)


async def test_s2_1_bad_credentials_are_checked_before_the_token(client, register):
    caller = await register()
    response = await client.post("/introspect", data={"token_type_hint": "access_token"},
                                 auth=(caller.client_id, "m2ms_wrong"))
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT


async def test_s2_1_the_body_must_be_form_encoded(client, register):
    caller = await register()
    response = await client.post("/introspect", json={"token": "garbage"}, auth=caller.basic)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "The body must be "
                                                    "application/x-www-form-urlencoded"}


@store_independent
async def test_s2_1_only_post_is_served(client):
    assert (await client.get("/introspect", params={"token": "garbage"})).status_code == 405


# An independent client: Authlib's own client-side helper ---------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_client_introspects(client, register, method):
    owner = await register()
    token = await issue_token(client, owner)
    async with AsyncOAuth2Client(owner.client_id, owner.client_secret,
                                 token_endpoint_auth_method=method,
                                 transport=client._transport) as oauth:
        active = await oauth.introspect_token(f"{ISSUER}/introspect", token=token)
        revoked = await oauth.revoke_token(f"{ISSUER}/revoke", token=token)
        inactive = await oauth.introspect_token(f"{ISSUER}/introspect", token=token,
                                                token_type_hint="access_token")
    assert active.status_code == 200
    assert active.json()["active"] is True
    assert active.json()["jti"] == claims_of(token)["jti"]
    assert revoked.status_code == 200
    assert inactive.json() == INACTIVE
