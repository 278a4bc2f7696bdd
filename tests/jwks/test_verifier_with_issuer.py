"""JWKSVerifier against the real issuer app (over ASGI): discovery, the JWKS max-age the
issuer sends, every signing algorithm it offers, and the example resource server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import httpx
import pytest

from issuer.keys.endpoint import JWKS_MAX_AGE
from jwks.verifier import JWKSVerifier, WrongAudience
from tests.conftest import ISSUER, app_client, issue_token
from tests.jwks.conftest import AUDIENCE, CountingTransport

METADATA = "/.well-known/oauth-authorization-server"
JWKS = "/.well-known/jwks.json"


@pytest.fixture
async def counting(client: httpx.AsyncClient) -> AsyncIterator[CountingTransport]:
    yield CountingTransport(client._transport)


@pytest.fixture
async def make_verifier(counting, clock) -> AsyncIterator[Callable[..., JWKSVerifier]]:
    """Verifiers whose discovery and JWKS requests go to the issuer app, counted."""
    clients: list[httpx.AsyncClient] = []

    def make(audience: str = AUDIENCE, transport: httpx.AsyncBaseTransport | None = None,
             **options) -> JWKSVerifier:
        http = httpx.AsyncClient(transport=transport or counting, base_url=ISSUER)
        clients.append(http)
        return JWKSVerifier(ISSUER, audience, http_client=http, clock=clock, **options)

    yield make
    for http in clients:
        await http.aclose()


async def test_verifies_an_issued_token_via_rfc8414_discovery(client, register, make_verifier):
    c = await register(allowed_scopes=["orders:read", "orders:write"],
                       allowed_audiences=[AUDIENCE])
    token = await issue_token(client, c, scope="orders:read orders:write")
    jwks = (await client.get(JWKS)).json()

    result = await make_verifier().verify(token)

    assert result.client_id == c.client_id
    assert result.tenant_id == c.tenant_id
    assert result.scopes == {"orders:read", "orders:write"}
    assert result.kid in {key["kid"] for key in jwks["keys"]}
    assert result.claims["iss"] == ISSUER
    assert result.claims["aud"] == AUDIENCE
    assert result.claims["sub"] == c.client_id
    assert result.claims["mode"] == "m2m"


async def test_issuer_jwks_max_age_is_honoured(client, register, make_verifier, counting, clock):
    c = await register(allowed_audiences=[AUDIENCE])
    verifier = make_verifier()
    await verifier.verify(await issue_token(client, c))
    for _ in range(5):
        await verifier.verify(await issue_token(client, c))
    clock.advance(JWKS_MAX_AGE - 1)
    await verifier.verify(await issue_token(client, c))
    assert counting.paths[METADATA] == 1 and counting.paths[JWKS] == 1
    clock.advance(1)
    await verifier.verify(await issue_token(client, c))
    assert counting.paths[METADATA] == 1 and counting.paths[JWKS] == 2


async def test_token_for_the_issuers_default_audience_is_refused_by_an_api(
        client, register, make_verifier):
    c = await register()  # no audience of its own: aud = ISSUER_URL
    with pytest.raises(WrongAudience):
        await make_verifier().verify(await issue_token(client, c))
    assert await make_verifier(audience=ISSUER).verify(await issue_token(client, c))


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_tokens_signed_with_each_issuer_algorithm_verify(settings, clock, register,
                                                               make_verifier, alg):
    c = await register(allowed_audiences=[AUDIENCE])
    async with app_client(replace(settings, signing_alg=alg), clock) as issuer:
        token = await issue_token(issuer, c)
        result = await make_verifier(transport=issuer._transport).verify(token)
    assert result.client_id == c.client_id


async def test_example_resource_server_accepts_issuer_tokens_end_to_end(
        client, register, make_verifier, example):
    reader = await register(allowed_scopes=["orders:read", "orders:write"],
                            allowed_audiences=[AUDIENCE])
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=example.create_app(make_verifier())),
                            base_url="https://orders.example.com")
    async with api:
        read = await issue_token(client, reader, scope="orders:read")
        write_only = await issue_token(client, reader, scope="orders:write")
        ok = await api.get("/orders", headers={"Authorization": f"Bearer {read}"})
        denied = await api.get("/orders", headers={"Authorization": f"Bearer {write_only}"})
    assert ok.status_code == 200
    assert ok.json()["caller"] == {"client_id": reader.client_id, "tenant_id": reader.tenant_id}
    assert denied.status_code == 403
    assert denied.json()["error"] == "insufficient_scope"
