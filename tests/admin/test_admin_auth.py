"""RFC 6750 bearer authentication of the admin API, through a real route."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import issue_token


@pytest.fixture
async def admin_bearer(client, platform_admin):
    admin = await platform_admin()
    return await issue_token(client, admin, "admin")


async def test_admin_token_carries_the_issuer_audience(client, platform_admin):
    admin = await platform_admin()
    token = await issue_token(client, admin, "admin")
    claims = jwt.decode(token, (await _keyset(client))).claims
    assert claims["aud"] == "https://issuer.test"


async def test_rfc6750_s3_1_two_authorization_headers_are_invalid_request(client,
                                                                        admin_bearer):
    """Two headers, the first a good admin token: neither is believed."""
    response = await client.get("/api/v1/tenants", headers=[
        ("Authorization", f"Bearer {admin_bearer}"), ("Authorization", "Bearer other")])
    assert (response.status_code, response.json()) == (400, {
        "error": "invalid_request", "error_description": "Send one Authorization header"})
    assert response.headers["cache-control"] == "no-store"


async def test_a_wildcard_client_cannot_grant_itself_admin(client, register):
    c = await register(allowed_scopes=["*"])
    response = await client.post("/token", data={"grant_type": "client_credentials",
                                                 "scope": "admin"}, auth=c.basic)
    assert response.status_code == 400
    assert response.json()["details"] == {"invalidScopes": ["admin"]}


async def _keyset(client):
    from joserfc.jwk import KeySet
    return KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())


def forged_token(claims: dict) -> str:
    """A well-formed at+jwt signed by a key this issuer never published."""
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"}, claims, key)
