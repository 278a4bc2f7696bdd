"""RFC 9068 JWT access tokens: header, claims, lifetime, verification via the JWKS."""

from __future__ import annotations

from dataclasses import replace

import httpx
import jwt as pyjwt
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import ISSUER, app_client


async def _token(client, c, **extra) -> str:
    response = await client.post("/token", data={"grant_type": "client_credentials", **extra},
                                 auth=c.basic)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def _verified(client, token: str, algorithms=("RS256",)) -> jwt.Token:
    jwks = (await client.get("/.well-known/jwks.json")).json()
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=list(algorithms))


async def test_s2_1_header_has_typ_at_jwt_kid_and_alg(client, register):
    c = await register()
    token = await _verified(client, await _token(client, c))
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert token.header["typ"] == "at+jwt"
    assert token.header["alg"] == "RS256"
    assert token.header["kid"] in {key["kid"] for key in jwks["keys"]}


async def test_s2_2_every_claim_is_present_and_right(client, register, clock):
    c = await register(allowed_scopes=["orders:read", "orders:write"],
                       allowed_audiences=["https://api.example.com"])
    token = await _verified(client, await _token(client, c, scope="orders:write"))
    claims = token.claims
    now = int(clock.now())
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id",
                           "scope", "tenant_id", "mode"}
    assert claims["iss"] == ISSUER
    assert claims["sub"] == c.client_id
    assert claims["client_id"] == c.client_id
    assert claims["aud"] == "https://api.example.com"
    assert claims["iat"] == claims["nbf"] == now
    assert claims["exp"] == now + 3600
    assert claims["scope"] == "orders:write"
    assert claims["tenant_id"] == c.tenant_id
    assert claims["mode"] == "m2m"
    assert len(claims["jti"]) >= 16


async def test_s2_2_exp_minus_iat_is_the_client_ttl(client, register):
    c = await register(token_ttl=900)
    claims = (await _verified(client, await _token(client, c))).claims
    assert claims["exp"] - claims["iat"] == 900


async def test_s2_2_every_token_has_a_fresh_jti(client, register):
    c = await register()
    first = (await _verified(client, await _token(client, c))).claims["jti"]
    second = (await _verified(client, await _token(client, c))).claims["jti"]
    assert first != second


async def test_default_ttl_comes_from_settings(settings, clock, register):
    c = await register()
    async with app_client(replace(settings, token_ttl=120), clock) as client:
        claims = (await _verified(client, await _token(client, c))).claims
    assert claims["exp"] - claims["iat"] == 120


async def test_signature_fails_with_a_tampered_payload(client, register):
    c = await register()
    token = await _token(client, c)
    header, payload, signature = token.split(".")
    forged = ".".join([header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"),
                       signature])
    with pytest.raises(Exception):  # noqa: B017 - joserfc raises BadSignatureError or a decode error
        await _verified(client, forged)


@pytest.mark.parametrize(("alg", "kty", "crv"), [("ES256", "EC", "P-256"),
                                                 ("EdDSA", "OKP", "Ed25519")])
async def test_signing_alg_is_selectable(settings, clock, register, alg, kty, crv):
    c = await register()
    async with app_client(replace(settings, signing_alg=alg), clock) as client:
        token = await _token(client, c)
        jwks = (await client.get("/.well-known/jwks.json")).json()
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc warns that RFC 9864 deprecates "EdDSA"
            verified = await _verified(client, token, algorithms=[alg])
    assert verified.header["alg"] == alg
    key = next(k for k in jwks["keys"] if k["kid"] == verified.header["kid"])
    assert (key["kty"], key.get("crv")) == (kty, crv)
    assert "d" not in key


async def test_verified_independently_with_pyjwt_jwk_client(live_server, register):
    """An independent library (PyJWT), fetching the JWKS over real HTTP, accepts the token."""
    c = await register(allowed_audiences=["https://api.example.com"])
    async with httpx.AsyncClient(base_url=live_server) as http:
        response = await http.post("/token", data={"grant_type": "client_credentials"},
                                   auth=c.basic)
        assert response.status_code == 200
        token = response.json()["access_token"]
        metadata = (await http.get("/.well-known/oauth-authorization-server")).json()
    jwk_client = pyjwt.PyJWKClient(metadata["jwks_uri"])
    signing_key = jwk_client.get_signing_key_from_jwt(token)
    claims = pyjwt.decode(token, signing_key.key, algorithms=["RS256"],
                          audience="https://api.example.com", issuer=live_server,
                          options={"require": ["exp", "iat", "nbf", "jti", "sub"]})
    assert claims["client_id"] == c.client_id
    assert pyjwt.get_unverified_header(token)["typ"] == "at+jwt"
