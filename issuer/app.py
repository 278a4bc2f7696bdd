"""The composition root: ``create_app(settings)`` builds everything, in one place.

The lifespan is the dependency container (STYLE.md): it opens the database,
loads the key ring and starts the group writer, and hands them to handlers as
``request.state.services``. Nothing is built at import time.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.netsuite import from_services as netsuite_service
from connectors.netsuite import routes as netsuite
from issuer.admin import clients, keys, m2m_tokens, tenants
from issuer.clock import Clock, SystemClock
from issuer.crypto import encryptor_for
from issuer.errors import OAuthError, ServerError, error_response
from issuer.health import healthz
from issuer.middleware import BodySizeLimitMiddleware, RequestIdMiddleware
from issuer.oauth import introspection, revocation
from issuer.oauth.discovery import authorization_server_metadata
from issuer.oauth.endpoints import token
from issuer.oauth.server import TokenIssuer
from issuer.openapi import CORE_OPERATIONS, openapi_endpoint
from issuer.ratelimit import MemoryRateLimiter
from issuer.services import Services
from issuer.settings import Settings
from issuer.store.clients import ClientStore
from issuer.store.db import create_engine
from issuer.store.writer import GroupWriter
from jwks.endpoint import jwks
from jwks.keys import KeyRing, RotationPolicy, Signer, maintained

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock | None = None,
               outbound: httpx.AsyncClient | None = None) -> Starlette:
    """``outbound``: the HTTP client for calls to outside systems (NetSuite); by default
    one is made here and closed with the app. Tests pass one bound to a simulator."""
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        encryptor = encryptor_for(settings)
        engine = create_engine(settings.database_url)
        writer = GroupWriter(engine)
        signer = Signer()
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        http = outbound or httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=False)
        try:
            keyring = KeyRing(engine, encryptor, clock, alg=settings.signing_alg,
                              rsa_bits=settings.rsa_key_size,
                              policy=RotationPolicy(rotation_days=settings.key_rotation_days,
                                                    token_ttl=settings.token_ttl))
            await keyring.ensure_active()
            await writer.start()
            services = Services(
                settings=settings, clock=clock, engine=engine, encryptor=encryptor,
                keyring=keyring, signer=signer,
                clients=ClientStore(engine, clock, settings.client_cache_ttl),
                writer=writer,
                token_issuer=TokenIssuer(
                    issuer=settings.issuer_url, default_audience=settings.audience,
                    default_ttl=settings.token_ttl, keyring=keyring, clock=clock,
                ),
                limiter=MemoryRateLimiter(clock),
                redis=redis,
            )
            netsuite_connectors = netsuite_service(services, http)
            # Reload, scheduled rotation and pruning of the key ring (jwks.keys); NetSuite
            # certificates' revocation after an overlap and expiry warnings.
            async with maintained(keyring), netsuite_connectors.maintained():
                yield {"services": services, "netsuite": netsuite_connectors}
        finally:
            if outbound is None:
                await http.aclose()
            await writer.close()
            signer.close()
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    routes = [
        Route("/token", token, methods=["POST"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", authorization_server_metadata,
              methods=["GET"]),
        Route("/.well-known/openid-configuration", authorization_server_metadata,
              methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        *introspection.routes,
        *revocation.routes,
        *tenants.routes,
        *clients.routes,
        *m2m_tokens.routes,
        *keys.routes,
        *netsuite.routes,
    ]
    operations = [*CORE_OPERATIONS, *introspection.operations, *revocation.operations,
                  *tenants.operations, *clients.operations, *m2m_tokens.operations,
                  *keys.operations, *netsuite.operations]
    routes.append(Route("/openapi.json", openapi_endpoint(settings.issuer_url, operations),
                        methods=["GET"]))
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(BodySizeLimitMiddleware, max_bytes=1024 * 1024),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={OAuthError: _oauth_error, Exception: _server_error},
    )


def create_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (``issuer serve``), run in each worker process.

    Long-lived start-up objects (modules, settings, the app) leave the garbage
    collector's view, and young collections run less often: the token path
    allocates many short-lived objects and creates no cycles worth chasing.
    """
    app = create_app(Settings.from_env())
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    return app


async def _oauth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return error_response(exc)


async def _server_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server log (ServerErrorMiddleware), never to the caller.
    return Response(json.dumps(ServerError().body()), status_code=500,
                    media_type="application/json", headers={"Cache-Control": "no-store"})
