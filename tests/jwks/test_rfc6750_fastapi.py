"""jwks.fastapi: the Bearer-token dependency of a FastAPI resource server. RFC 6750 §2.1
(the Authorization header), §3 and §3.1 error responses (exact status, body and
headers), scopes gathered along FastAPI's dependency chain, the OpenAPI security
scheme, and README's FastAPI example run as written.

No ``from __future__ import annotations``: FastAPI reads the routes' parameter types
at run time.
"""

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Security

from jwks.fastapi import BearerToken
from jwks.verifier import VerifiedToken
from tests.jwks.conftest import ROOT, FakeIssuer

INVALID = 'Bearer error="invalid_token"'


def make_app(bearer: BearerToken) -> FastAPI:
    app = FastAPI()

    @app.get("/orders")
    async def list_orders(
            token: Annotated[VerifiedToken, Security(bearer, scopes=["orders:read"])],
    ) -> dict[str, Any]:
        return {"client_id": token.client_id, "tenant_id": token.tenant_id,
                "scopes": sorted(token.scopes)}

    @app.get("/whoami")
    async def whoami(token: Annotated[VerifiedToken, Depends(bearer)]) -> dict[str, Any]:
        return {"client_id": token.client_id}

    # A router's guard and a path's guard: each is checked.
    admin = APIRouter(prefix="/admin", dependencies=[Security(bearer, scopes=["orders:read"])])

    @admin.delete("/orders")
    async def purge(
            token: Annotated[VerifiedToken, Security(bearer, scopes=["orders:write"])],
    ) -> dict[str, Any]:
        return {"purged_by": token.client_id}

    app.include_router(admin)

    # Scopes add up along a chain: a dependency asks for one, the path for another.
    async def writer(
            token: Annotated[VerifiedToken, Security(bearer, scopes=["orders:write"])],
    ) -> VerifiedToken:
        return token

    @app.put("/orders")
    async def replace(
            token: Annotated[VerifiedToken, Security(writer, scopes=["orders:read"])],
    ) -> dict[str, Any]:
        return {"replaced_by": token.client_id}

    return app


@pytest.fixture
async def api(idp: FakeIssuer) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(BearerToken(idp.verifier()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://orders.example.com") as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"detail"}, body
    detail: dict[str, str] = body["detail"]
    return detail


async def test_token_with_the_scope_gets_200_and_the_verified_token(api, idp, keys):
    response = await api.get("/orders", headers=bearer(idp.token(keys.rsa, scope="orders:read")))
    assert response.status_code == 200
    assert response.json() == {"client_id": "client-1", "tenant_id": "tenant-1",
                               "scopes": ["orders:read"]}


async def test_depends_without_scopes_accepts_any_valid_token(api, idp, keys):
    response = await api.get("/whoami", headers=bearer(idp.token(keys.okp, scope="")))
    assert (response.status_code, response.json()) == (200, {"client_id": "client-1"})


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic YTpi"}],
                         ids=["no Authorization", "another scheme"])
async def test_s3_1_missing_token_is_401_invalid_token(api, headers):
    response = await api.get("/orders", headers=headers)
    assert response.status_code == 401
    assert error_of(response) == {"error": "invalid_token",
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
    assert error_of(response) == {"error": "invalid_token", "error_description": description}
    assert response.headers["WWW-Authenticate"] == INVALID


async def test_bearer_scheme_is_case_insensitive(api, idp, keys):
    token = idp.token(keys.rsa, scope="orders:read")
    response = await api.get("/orders", headers={"Authorization": f"bEaReR {token}"})
    assert response.status_code == 200


async def test_s3_1_token_without_the_scope_is_403_insufficient_scope(api, idp, keys):
    response = await api.get("/orders", headers=bearer(idp.token(keys.rsa, scope="orders:write")))
    assert response.status_code == 403
    assert error_of(response) == {
        "error": "insufficient_scope",
        "error_description": "The access token does not grant orders:read"}
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="orders:read"')
    assert response.headers["Cache-Control"] == "no-store"


async def test_s3_router_and_path_guards_are_each_required(api, idp, keys):
    def purge(scope: str) -> Any:
        return api.delete("/admin/orders", headers=bearer(idp.token(keys.rsa, scope=scope)))

    no_read, no_write, both = (await purge("orders:write"), await purge("orders:read"),
                               await purge("orders:read orders:write"))
    assert (no_read.status_code, no_write.status_code) == (403, 403)
    assert no_read.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="orders:read"')
    assert no_write.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="orders:write"')
    assert (both.status_code, both.json()) == (200, {"purged_by": "client-1"})


async def test_s3_scopes_add_up_along_a_chain_and_are_all_named(api, idp, keys):
    partial = await api.put("/orders", headers=bearer(idp.token(keys.rsa, scope="orders:write")))
    full = await api.put("/orders", headers=bearer(idp.token(keys.ec)))
    assert partial.status_code == 403
    assert error_of(partial)["error_description"] == (
        "The access token does not grant orders:read orders:write")
    assert partial.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="orders:read orders:write"')
    assert (full.status_code, full.json()) == (200, {"replaced_by": "client-1"})


async def test_s3_1_two_authorization_headers_are_400_invalid_request(api, idp, keys):
    """The first header carries a good token: neither is believed."""
    good = idp.token(keys.rsa, scope="orders:read")
    response = await api.get("/orders", headers=[("Authorization", f"Bearer {good}"),
                                                 ("Authorization", "Bearer other")])
    assert response.status_code == 400
    assert error_of(response) == {"error": "invalid_request",
                                  "error_description": "Send one Authorization header"}
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_request"'


async def test_s3_1_a_token_in_the_header_and_the_query_is_400_invalid_request(api, idp, keys):
    good = idp.token(keys.rsa, scope="orders:read")
    response = await api.get("/orders", params={"access_token": good}, headers=bearer(good))
    assert response.status_code == 400
    assert error_of(response) == {
        "error": "invalid_request",
        "error_description": "Send the access token in the Authorization header only"}


async def test_s2_3_a_token_in_the_query_string_alone_is_not_accepted(api, idp, keys):
    good = idp.token(keys.rsa, scope="orders:read")
    response = await api.get("/orders", params={"access_token": good})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == INVALID


async def test_unavailable_keys_are_503_and_the_request_is_refused(api, idp, keys):
    idp.down = True
    response = await api.get("/orders", headers=bearer(idp.token(keys.rsa)))
    assert response.status_code == 503
    assert error_of(response) == {
        "error": "temporarily_unavailable",
        "error_description": "The issuer's signing keys are unavailable"}
    assert response.headers["Retry-After"] == "30"


async def test_openapi_document_declares_the_bearer_scheme_on_guarded_paths(api):
    document = (await api.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"] == {
        "BearerToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    assert document["paths"]["/orders"]["get"]["security"] == [{"BearerToken": ["orders:read"]}]
    assert "security" in document["paths"]["/whoami"]["get"]
    # The token is a header, not a parameter the caller fills in.
    assert "parameters" not in document["paths"]["/orders"]["get"]


@pytest.mark.parametrize("scope", ["two scopes", "", 'quote"d'])
async def test_a_malformed_scope_in_the_app_is_an_error_of_the_app(idp, keys, scope):
    app = FastAPI()
    guard = BearerToken(idp.verifier())

    @app.get("/x")
    async def x(token: Annotated[VerifiedToken, Security(guard, scopes=[scope])]) -> None:
        raise AssertionError("never reached")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://api.test") as http:
        with pytest.raises(ValueError, match="scope tokens"):
            await http.get("/x", headers=bearer(idp.token(keys.rsa)))


def _readme_fastapi_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Validating tokens in your API", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    fastapi_blocks = [block for block in blocks if "jwks.fastapi" in block]
    assert len(fastapi_blocks) == 1
    return fastapi_blocks[0]


async def test_readme_fastapi_example_runs_as_written(idp, keys):
    namespace: dict[str, Any] = {"verifier": idp.verifier()}
    exec(compile(_readme_fastapi_example(), "README.md", "exec"), namespace)  # noqa: S102
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=namespace["app"]),
                                 base_url="https://orders.example.com") as http:
        ok = await http.get("/orders", headers=bearer(idp.token(keys.rsa, scope="orders:read")))
        denied = await http.get("/orders",
                                headers=bearer(idp.token(keys.rsa, scope="orders:write")))
        missing = await http.get("/orders")
    assert ok.status_code == 200 and ok.json()["caller"] == "client-1"
    assert denied.status_code == 403
    assert missing.status_code == 401
