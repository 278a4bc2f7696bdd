"""A foreign issuer for the verifier's tests: RFC 8414 metadata and a JWK Set served by
``httpx.MockTransport``, counting requests, able to go down or hold a fetch open, and
signing tokens with test keys (made once per session)."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from jwks.verifier import JWKSVerifier, metadata_url
from tests.conftest import FakeClock

ROOT = Path(__file__).resolve().parents[2]
IDP = "https://idp.example"
AUDIENCE = "https://orders.example.com"
DROP = object()  # a claim or header value meaning "leave it out"


@dataclass(frozen=True)
class TestKeys:
    rsa: RSAKey
    rsa_next: RSAKey  # published later: a rotation
    attacker: RSAKey  # never published
    ec: ECKey
    okp: OKPKey


@pytest.fixture(scope="session")
def keys() -> TestKeys:
    def rsa() -> RSAKey:
        return RSAKey.generate_key(2048, {"use": "sig"}, private=True, auto_kid=True)

    return TestKeys(
        rsa=rsa(), rsa_next=rsa(), attacker=rsa(),
        ec=ECKey.generate_key("P-256", {"use": "sig"}, private=True, auto_kid=True),
        okp=OKPKey.generate_key("Ed25519", {"use": "sig"}, private=True, auto_kid=True),
    )


def default_alg(key: Key) -> str:
    return {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[key.key_type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def sign(key: Key, header: dict[str, Any], payload: bytes) -> str:
    """A compact JWS over any header, even one joserfc would refuse to produce."""
    signing_input = f"{b64json(header)}.{b64(payload)}"
    signature = JWSRegistry.algorithms[header["alg"]].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


class FakeIssuer:
    """Another authorization server, reachable only through its MockTransport."""

    def __init__(self, clock: FakeClock, published: list[Key], url: str = IDP) -> None:
        self.clock = clock
        self.url = url
        self.published = list(published)
        self.cache_control: str | None = "public, max-age=600"
        self.extra_headers: dict[str, str] = {}
        self.metadata_issuer = url
        self.jwks_status = 200
        self.raw_keys: list[dict[str, Any]] = []  # JWKs published as given
        self.jwks_body: Any = None  # replaces the whole JWK Set document when set
        self.down = False
        self.gate: asyncio.Event | None = None  # set: fetches wait on it
        self.entered = asyncio.Event()  # a fetch reached the server
        self.requests: Counter[str] = Counter()
        self._clients: list[httpx.AsyncClient] = []

    @property
    def jwks_uri(self) -> str:
        return f"{httpx.URL(self.url).copy_with(path='/keys', query=None)}"

    @property
    def jwks_fetches(self) -> int:
        return self.requests["/keys"]

    @property
    def discoveries(self) -> int:
        return self.requests[httpx.URL(metadata_url(self.url)).path]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests[request.url.path] += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise httpx.ConnectError("issuer unreachable", request=request)
        if str(request.url) == metadata_url(self.url):
            return httpx.Response(200, json={"issuer": self.metadata_issuer,
                                             "jwks_uri": self.jwks_uri})
        if request.url.path == "/keys":
            headers = dict(self.extra_headers)
            if self.cache_control is not None:
                headers["Cache-Control"] = self.cache_control
            document = self.jwks_body or {
                "keys": [key.as_dict(private=False) for key in self.published] + self.raw_keys}
            return httpx.Response(self.jwks_status, json=document, headers=headers)
        return httpx.Response(404)

    def http_client(self) -> httpx.AsyncClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        self._clients.append(http)
        return http

    def verifier(self, **options: Any) -> JWKSVerifier:
        options.setdefault("http_client", self.http_client())
        options.setdefault("clock", self.clock)
        return JWKSVerifier(self.url, options.pop("audience", AUDIENCE), **options)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.now())
        claims = {"iss": self.url, "sub": "client-1", "aud": AUDIENCE, "exp": now + 300,
                  "iat": now, "nbf": now, "jti": "jti-1", "client_id": "client-1",
                  "scope": "orders:read orders:write", "tenant_id": "tenant-1", "mode": "m2m"}
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not DROP}

    def token(self, key: Key, *, header: dict[str, Any] | None = None,
              claims: dict[str, Any] | None = None, **overrides: Any) -> str:
        """A token signed by ``key``: an RFC 9068 header unless ``header`` overrides it."""
        full = {"alg": default_alg(key), "kid": key.kid, "typ": "at+jwt", **(header or {})}
        full = {name: value for name, value in full.items() if value is not DROP}
        body = claims if claims is not None else self.claims(**overrides)
        return sign(key, full, json.dumps(body).encode())

    async def aclose(self) -> None:
        for http in self._clients:
            await http.aclose()


@pytest.fixture
async def idp(clock: FakeClock, keys: TestKeys) -> AsyncIterator[FakeIssuer]:
    """A foreign issuer publishing the RSA, EC and OKP test keys."""
    issuer = FakeIssuer(clock, [keys.rsa, keys.ec, keys.okp])
    yield issuer
    await issuer.aclose()


@pytest.fixture(scope="session")
def example() -> ModuleType:
    """examples/resource_server.py, loaded from its path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("example_resource_server",
                                                  ROOT / "examples" / "resource_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CountingTransport(httpx.AsyncBaseTransport):
    """Wraps a transport and counts requests by path (does not close the wrapped one)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.paths: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        return await self.inner.handle_async_request(request)

