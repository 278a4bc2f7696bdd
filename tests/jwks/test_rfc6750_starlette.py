"""jwks.starlette on the example resource server: RFC 6750 §2.1 Bearer tokens, §3 and
§3.1 error responses (exact bodies and headers), scopes on request.auth."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jwks.starlette import BearerAuthMiddleware, requires_scope
from tests.jwks.conftest import FakeIssuer

INVALID = 'Bearer error="invalid_token"'


@pytest.fixture
async def api(idp: FakeIssuer, example) -> AsyncIterator[httpx.AsyncClient]:
    app = example.create_app(idp.verifier())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://orders.example.com") as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_with_the_scope_gets_200_and_the_caller(api, idp, keys):
    response = await api.get("/orders", headers=bearer(idp.token(keys.rsa, scope="orders:read")))
    assert response.status_code == 200
    body = response.json()
    assert body["caller"] == {"client_id": "client-1", "tenant_id": "tenant-1"}
    assert body["scopes"] == ["orders:read"]
    assert len(body["orders"]) == 2


async def test_write_endpoint_needs_its_own_scope(api, idp, keys):
    token = idp.token(keys.ec, scope="orders:write")
    response = await api.post("/orders", json={"sku": "X"}, headers=bearer(token))
    assert response.status_code == 201
    assert response.json()["order"] == {"sku": "X"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic YTpi"}],
                         ids=["no Authorization", "another scheme"])
async def test_s3_1_missing_token_is_401_invalid_token(api, headers):
    response = await api.get("/orders", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token",
                               "error_description": "A bearer access token is required"}
    assert response.headers["WWW-Authenticate"] == INVALID
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("make", "description"), [
    (lambda idp, k: idp.token(k.rsa, exp=1_000_000), "The access token expired"),
    (lambda idp, k: idp.token(k.rsa, aud="https://other.example"),
     "The access token is not meant for this resource server"),
    (lambda idp, k: idp.token(k.rsa, header={"typ": "JWT"}),
     "The token is not a JWT access token (typ must be at+jwt)"),
    (lambda idp, k: idp.token(k.attacker), "The access token was signed by an unknown key"),
    (lambda idp, k: "not-a-jwt", "The access token is not a well-formed signed JWT"),
    (lambda idp, k: "   ", "The access token is not a well-formed signed JWT"),
], ids=["expired", "wrong aud", "wrong typ", "unknown key", "garbage", "empty"])
async def test_s3_1_invalid_token_is_401_with_a_fixed_description(api, idp, keys, make,
                                                                  description):
    response = await api.get("/orders", headers=bearer(make(idp, keys)))
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token", "error_description": description}
    assert response.headers["WWW-Authenticate"] == INVALID


async def test_bearer_scheme_is_case_insensitive(api, idp, keys):
    token = idp.token(keys.rsa, scope="orders:read")
    response = await api.get("/orders", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


async def test_s3_1_token_without_the_scope_is_403_insufficient_scope(api, idp, keys):
    response = await api.get("/orders", headers=bearer(idp.token(keys.rsa, scope="orders:write")))
    assert response.status_code == 403
    assert response.json() == {"error": "insufficient_scope",
                               "error_description": "The access token does not grant orders:read"}
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="orders:read"')


async def test_public_endpoint_needs_no_token_but_refuses_an_invalid_one(api, idp, keys):
    assert (await api.get("/healthz")).status_code == 200
    response = await api.get("/healthz", headers=bearer(idp.token(keys.rsa, exp=1_000_000)))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == INVALID


async def test_unavailable_keys_are_503_and_the_request_is_refused(api, idp, keys):
    idp.down = True
    response = await api.get("/orders", headers=bearer(idp.token(keys.rsa)))
    assert response.status_code == 503
    assert response.json() == {"error": "temporarily_unavailable",
                               "error_description": "The issuer's signing keys are unavailable"}
    assert response.headers["Retry-After"] == "30"


async def test_several_scopes_are_all_required_and_named_in_the_challenge(idp, keys):
    @requires_scope("orders:read", "orders:write")
    async def both(request: Request) -> Response:
        return JSONResponse({"user": request.user.display_name})

    app = Starlette(routes=[Route("/both", both)],
                    middleware=[Middleware(BearerAuthMiddleware, verifier=idp.verifier())])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://api.test") as http:
        partial = await http.get("/both", headers=bearer(idp.token(keys.rsa, scope="orders:read")))
        full = await http.get("/both", headers=bearer(idp.token(keys.rsa)))
    assert partial.status_code == 403
    assert partial.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="orders:read orders:write"')
    assert full.json() == {"user": "client-1"}


def test_requires_scope_refuses_bad_arguments_at_decoration():
    with pytest.raises(ValueError):
        requires_scope()
    with pytest.raises(ValueError):
        requires_scope("two scopes")
    with pytest.raises(TypeError):
        requires_scope("orders:read")(lambda request: None)  # type: ignore[arg-type,return-value]


async def test_requires_scope_without_the_middleware_fails_loudly():
    @requires_scope("orders:read")
    async def orders(request: Request) -> Response:
        return JSONResponse({})

    app = Starlette(routes=[Route("/orders", orders)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://api.test") as http:
        with pytest.raises(RuntimeError, match="BearerAuthMiddleware"):
            await http.get("/orders")
