"""Audience selection: RFC 8707 ``resource`` / ``audience``; never an empty ``aud``."""

from __future__ import annotations

import base64
import json

from tests.conftest import ISSUER


def _unverified_claims(token: str) -> dict:
    """The claims, unverified: signatures are tested in test_rfc9068_access_token."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def _aud(client, c, **extra) -> tuple[int, dict]:
    response = await client.post("/token", data={"grant_type": "client_credentials", **extra},
                                 auth=c.basic)
    if response.status_code != 200:
        return response.status_code, response.json()
    return 200, _unverified_claims(response.json()["access_token"])


async def test_client_without_audiences_gets_the_issuer_default_audience(client, register):
    c = await register()
    status, claims = await _aud(client, c)
    assert status == 200
    assert claims["aud"] == ISSUER


async def test_client_default_audience_is_used_when_none_requested(client, register):
    c = await register(allowed_audiences=["https://api.example.com", "https://b.example.com"])
    _, claims = await _aud(client, c)
    assert claims["aud"] == "https://api.example.com"


async def test_s2_resource_selects_an_allowed_audience(client, register):
    c = await register(allowed_audiences=["https://api.example.com", "https://b.example.com"])
    _, claims = await _aud(client, c, resource="https://b.example.com")
    assert claims["aud"] == "https://b.example.com"


async def test_s2_several_resources_give_several_audiences(client, register):
    c = await register(allowed_audiences=["https://a.example.com", "https://b.example.com"])
    response = await client.post(
        "/token", content="grant_type=client_credentials&resource=https%3A%2F%2Fa.example.com"
        "&resource=https%3A%2F%2Fb.example.com", auth=c.basic,
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    claims = _unverified_claims(response.json()["access_token"])
    assert claims["aud"] == ["https://a.example.com", "https://b.example.com"]


async def test_audience_parameter_selects_an_allowed_audience(client, register):
    c = await register(allowed_audiences=["orders-api", "billing-api"])
    _, claims = await _aud(client, c, audience="billing-api")
    assert claims["aud"] == "billing-api"


async def test_s2_resource_not_allowed_is_invalid_target(client, register):
    c = await register(allowed_audiences=["https://api.example.com"])
    status, body = await _aud(client, c, resource="https://evil.example.com")
    assert status == 400
    assert body == {
        "error": "invalid_target",
        "error_description": "The requested resource is invalid or not allowed for this client",
        "details": {"invalidTargets": ["https://evil.example.com"]},
    }


async def test_s2_resource_must_be_absolute_without_fragment(client, register):
    c = await register(allowed_audiences=["https://api.example.com"])
    for bad in ("api.example.com", "https://api.example.com#frag"):
        status, body = await _aud(client, c, resource=bad)
        assert status == 400
        assert body["error"] == "invalid_target"


async def test_resource_and_audience_together_are_invalid_request(client, register):
    c = await register(allowed_audiences=["https://api.example.com"])
    status, body = await _aud(client, c, resource="https://api.example.com",
                              audience="https://api.example.com")
    assert status == 400
    assert body["error"] == "invalid_request"
