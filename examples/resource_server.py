"""A tiny orders API that accepts m2m-issuer access tokens (RFC 9068 §4, RFC 6750).

Run it beside ``issuer serve`` (see examples/README.md)::

    ISSUER_URL=http://127.0.0.1:8000 AUDIENCE=https://orders.example.com \\
        .venv/bin/uvicorn --factory examples.resource_server:create_app --port 8001

or ``.venv/bin/python examples/resource_server.py``. Settings (environment):
``ISSUER_URL`` (default ``http://127.0.0.1:8000``; keys are found through its RFC 8414
metadata), ``AUDIENCE`` (this API's identifier, which the token's ``aud`` must contain;
default ``https://orders.example.com``), ``HOST``/``PORT`` (``__main__`` only).

Uses nothing from ``issuer``: only ``jwks.verifier`` and ``jwks.starlette``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jwks.starlette import BearerAuthMiddleware, BearerUser, requires_scope
from jwks.verifier import JWKSVerifier

DEFAULT_ISSUER_URL = "http://127.0.0.1:8000"
DEFAULT_AUDIENCE = "https://orders.example.com"
ORDERS = ({"id": "o-1001", "sku": "WIDGET-7", "quantity": 3},
          {"id": "o-1002", "sku": "GADGET-2", "quantity": 1})


def _caller(request: Request) -> dict[str, str | None]:
    user = request.user
    assert isinstance(user, BearerUser)
    return {"client_id": user.token.client_id, "tenant_id": user.token.tenant_id}


@requires_scope("orders:read")
async def list_orders(request: Request) -> Response:
    return JSONResponse({"orders": list(ORDERS), "caller": _caller(request),
                         "scopes": sorted(request.auth.scopes)})


@requires_scope("orders:write")
async def create_order(request: Request) -> Response:
    try:
        order = await request.json()
    except ValueError:
        return JSONResponse({"error": "invalid_request",
                             "error_description": "The body is not JSON"}, status_code=400)
    return JSONResponse({"order": order, "caller": _caller(request)}, status_code=201)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(verifier: JWKSVerifier | None = None) -> Starlette:
    """The API; ``verifier`` defaults to one configured from the environment."""
    owned = verifier is None
    tokens = verifier or JWKSVerifier(os.environ.get("ISSUER_URL", DEFAULT_ISSUER_URL),
                                      os.environ.get("AUDIENCE", DEFAULT_AUDIENCE))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                await tokens.aclose()  # closes only the HTTP client it opened

    return Starlette(
        routes=[Route("/orders", list_orders, methods=["GET"]),
                Route("/orders", create_order, methods=["POST"]),
                Route("/healthz", healthz, methods=["GET"])],
        middleware=[Middleware(BearerAuthMiddleware, verifier=tokens)],
        lifespan=lifespan,
    )


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host=os.environ.get("HOST", "127.0.0.1"),
                port=int(os.environ.get("PORT", "8001")))
