"""Auth strategies by auth type: the plan's strategy switch, as a registry.

A caller asks the registry for the strategy of a connector's auth type and gets an
``httpx.Auth`` (or a header value) from it; a new auth type is one more strategy given
to the registry where the app is composed -- no caller changes, nothing registered by
import side effect.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import httpx

from connectors.netsuite.auth import NetSuiteAuth, TokenSource

NETSUITE_M2M = "netsuite_m2m"


class UnknownAuthType(LookupError):
    """No strategy for this auth type."""


class AuthStrategy(Protocol):
    auth_type: str

    def http_auth(self, connector_id: str) -> httpx.Auth: ...

    async def authorization(self, connector_id: str) -> str: ...


class NetSuiteM2MStrategy:
    """NetSuite OAuth 2.0 client credentials (M2M): a cached Bearer token."""

    auth_type = NETSUITE_M2M

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    def http_auth(self, connector_id: str) -> httpx.Auth:
        return NetSuiteAuth(self._tokens, connector_id)

    async def authorization(self, connector_id: str) -> str:
        """The ``Authorization`` header value for one request."""
        token = await self._tokens.get_or_refresh_access_token(connector_id)
        return f"Bearer {token.access_token}"


class AuthStrategies:
    def __init__(self, strategies: Iterable[AuthStrategy] = ()) -> None:
        self._by_type: dict[str, AuthStrategy] = {}
        for strategy in strategies:
            self.register(strategy)

    def register(self, strategy: AuthStrategy) -> None:
        if strategy.auth_type in self._by_type:
            raise ValueError(f"auth type {strategy.auth_type!r} is registered already")
        self._by_type[strategy.auth_type] = strategy

    def get(self, auth_type: str) -> AuthStrategy:
        try:
            return self._by_type[auth_type]
        except KeyError:
            raise UnknownAuthType(auth_type) from None

    @property
    def auth_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_type))
