"""Interop: Authlib's own AsyncOAuth2Client obtains tokens from the issuer."""

from __future__ import annotations

import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.conftest import ISSUER


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_async_client_fetches_a_token(client, register, method):
    c = await register(allowed_scopes=["orders:read"])
    transport = client._transport  # the app, over ASGI, lifespan entered
    async with AsyncOAuth2Client(c.client_id, c.client_secret, scope="orders:read",
                                 token_endpoint_auth_method=method,
                                 transport=transport) as oauth:
        token = await oauth.fetch_token(f"{ISSUER}/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "orders:read"
    assert token["expires_in"] == 3600
    assert isinstance(token["access_token"], str)


async def test_authlib_client_secret_wrong_raises_invalid_client(client, register):
    from authlib.integrations.base_client.errors import OAuthError

    c = await register()
    async with AsyncOAuth2Client(c.client_id, "m2ms_wrong", transport=client._transport) as oauth:
        with pytest.raises(OAuthError) as raised:
            await oauth.fetch_token(f"{ISSUER}/token", grant_type="client_credentials")
    assert raised.value.error == "invalid_client"
