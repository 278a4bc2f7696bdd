"""Scope rules: RFC 6749 §3.3 and ours (exact, prefix:*, *, defaults)."""

from __future__ import annotations

import pytest

from issuer.oauth.scopes import ScopeDenied, resolve_scopes


async def _token(client, c, scope=None):
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    return await client.post("/token", data=data, auth=c.basic)


async def test_exact_scope_is_granted(client, register):
    c = await register(allowed_scopes=["orders:read", "orders:write"])
    response = await _token(client, c, "orders:write")
    assert response.status_code == 200
    assert response.json()["scope"] == "orders:write"


async def test_prefix_wildcard_allows_any_scope_under_the_prefix(client, register):
    c = await register(allowed_scopes=["orders:*"])
    response = await _token(client, c, "orders:read orders:write:bulk")
    assert response.status_code == 200
    assert response.json()["scope"] == "orders:read orders:write:bulk"


@pytest.mark.parametrize("scope", ["orders", "orders:", "ordersx:read", "invoices:read"])
async def test_prefix_wildcard_does_not_allow_outside_the_prefix(client, register, scope):
    c = await register(allowed_scopes=["orders:*"])
    response = await _token(client, c, scope)
    assert response.status_code == 400
    assert response.json()["details"] == {"invalidScopes": [scope]}


async def test_star_allows_any_scope(client, register):
    c = await register(allowed_scopes=["*"])
    response = await _token(client, c, "anything:at-all other")
    assert response.status_code == 200
    assert response.json()["scope"] == "anything:at-all other"


async def test_a_request_cannot_ask_for_a_wildcard_itself(client, register):
    c = await register(allowed_scopes=["*"])
    response = await _token(client, c, "orders:*")
    assert response.status_code == 400
    assert response.json()["details"] == {"invalidScopes": ["orders:*"]}


async def test_no_scope_requested_grants_every_exact_allowed_scope(client, register):
    c = await register(allowed_scopes=["orders:read", "orders:*", "invoices:read"])
    response = await _token(client, c)
    assert response.status_code == 200
    assert response.json()["scope"] == "orders:read invoices:read"


async def test_no_scope_requested_grants_the_configured_defaults(client, register):
    c = await register(allowed_scopes=["orders:read", "orders:write"],
                       default_scopes=["orders:read"])
    response = await _token(client, c)
    assert response.json()["scope"] == "orders:read"


async def test_every_denied_scope_is_listed_in_request_order(client, register):
    c = await register(allowed_scopes=["orders:read"])
    response = await _token(client, c, "b:x orders:read a:y")
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_scope",
        "error_description": "Scope not allowed for this client: b:x a:y",
        "details": {"invalidScopes": ["b:x", "a:y"]},
    }


async def test_s3_3_repeated_scope_tokens_are_granted_once(client, register):
    c = await register(allowed_scopes=["orders:read"])
    response = await _token(client, c, "orders:read orders:read")
    assert response.json()["scope"] == "orders:read"


def test_s3_3_scope_tokens_with_forbidden_characters_are_denied():
    with pytest.raises(ScopeDenied) as denied:
        resolve_scopes('orders:read ba"d', ["*"], None)
    assert denied.value.denied == ['ba"d']
