"""``NetSuiteAuth``: httpx authentication with the connector's cached M2M token.

NetSuite's rule for clients: on a 401, mint a new token once, retry once, then fail. The refresh
names the token that was refused, so when many requests meet the same 401 at once
only one new token is minted and the others reuse it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Protocol

import httpx

from connectors.netsuite.token_client import AccessToken


class TokenSource(Protocol):
    async def get_or_refresh_access_token(self, connector_id: str,
                                          stale: str | None = None) -> AccessToken: ...


class NetSuiteAuth(httpx.Auth):
    def __init__(self, tokens: TokenSource, connector_id: str) -> None:
        self._tokens = tokens
        self._connector_id = connector_id

    async def async_auth_flow(
            self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._tokens.get_or_refresh_access_token(self._connector_id)
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if response.status_code == 401:
            fresh = await self._tokens.get_or_refresh_access_token(
                self._connector_id, stale=token.access_token)
            request.headers["Authorization"] = f"Bearer {fresh.access_token}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("NetSuiteAuth is for httpx.AsyncClient only")
