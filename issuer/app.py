"""The composition root: ``create_app(settings)`` builds everything, in one place.

The lifespan is the dependency container: it opens the database,
loads the key ring and starts the group writer, and hands them to handlers as the
core's ``Services`` (read through ``issuer.services.services_of``); each connector's
lifespan builds its own services beside them. Nothing is built at import time.

The connectors are listed here (:data:`CONNECTORS`), explicitly: this module and
``issuer.cli`` are the only ones of the core that import ``connectors``. Each is an
``issuer.connector.Connector``: its endpoints join the routes and the document, its
audit events the vocabulary, its error entries the error table.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
from granian.utils.proxies import wrap_asgi_with_proxy_headers
from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from connectors.erp.plugin import ERP
from connectors.netsuite.plugin import NETSUITE
from issuer import audit, serving
from issuer.admin import audit_events, clients, keys, m2m_tokens, tenants, trusted_issuers
from issuer.admin.auth import admin_verifier
from issuer.admin.http import Endpoint
from issuer.admin.http import routes as http_routes
from issuer.background import every
from issuer.changes import ChangeNotices
from issuer.clock import Clock, SystemClock
from issuer.connector import Connector, ConnectorContext, Sleep
from issuer.crypto import encryptor_for
from issuer.errors import ErrorTable, OAuthError, ServerError, StoreUnavailable, error_response
from issuer.health import healthz, readyz
from issuer.http_errors import http_exception, without_slash_redirects
from issuer.keys.endpoint import jwks
from issuer.keys.policy import RotationPolicy
from issuer.keys.ring import KeyRing, Signer
from issuer.metrics import Metrics, metrics_endpoint
from issuer.middleware import BodySizeLimitMiddleware, BodyTimeoutMiddleware, RequestIdMiddleware
from issuer.oauth import introspection, revocation
from issuer.oauth.assertions import AssertionAuthenticator, ClientKeys
from issuer.oauth.discovery import authorization_server_metadata
from issuer.oauth.dpop import dpop_binding
from issuer.oauth.endpoints import token
from issuer.oauth.federation import FederatedAuthenticator, FederationKeys
from issuer.oauth.replay import PRUNE_INTERVAL, ReplayStore
from issuer.oauth.server import IssuerAuthorizationServer
from issuer.oauth.token_route import TokenRoute
from issuer.openapi import (
    Health,
    JWKSet,
    Readiness,
    TokenForm,
    TokenResponse,
    openapi_endpoint,
)
from issuer.outbound import OutboundPolicy, guarded_transport, tls_context
from issuer.ratelimit import (
    MAINTAIN_EVERY,
    FallbackRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RatePolicies,
    RedisRateLimiter,
    Unlimited,
)
from issuer.reencrypt import ENCRYPTED_COLUMNS as CORE_ENCRYPTED_COLUMNS
from issuer.reencrypt import EncryptedColumn
from issuer.retention import PRUNE_EVERY, prune
from issuer.services import SERVICES, Services, services_of
from issuer.settings import Settings
from issuer.store.bounds import unavailable
from issuer.store.clients import ClientStore
from issuer.store.db import create_engine
from issuer.store.failures import StoreFailures
from issuer.store.writer import GroupWriter

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 1.0  # seconds, connect and each command
#: The largest request body any route accepts (413 past it).
MAX_BODY_BYTES = 1024 * 1024
#: Outbound HTTP (a private_key_jwt client's jwks_uri): seconds before giving up.
OUTBOUND_TIMEOUT = 5.0


def create_app(settings: Settings, *, clock: Clock | None = None,
               http_client: httpx.AsyncClient | None = None,
               outbound: httpx.AsyncClient | None = None,
               sleep: Sleep | None = None, sign_threads: int | None = None,
               freeze_gc: bool = False) -> Starlette:
    """Outbound HTTP, each used as given (never closed here) or made per lifespan:
    ``http_client`` fetches private_key_jwt clients' ``jwks_uri`` (by default
    :data:`OUTBOUND_TIMEOUT`, no redirects); ``outbound`` calls outside systems
    (NetSuite; by default 30 s, no redirects). Tests bind them to simulators, and give
    ``sleep`` (the connectors' back-off waits) one that moves their clock instead.
    ``sign_threads``: the :class:`Signer`'s threads (0: sign on the event loop);
    ``freeze_gc``: once started, move what start-up built out of the garbage
    collector's view (``gc.freeze``), as ``issuer serve`` does."""
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        encryptor = encryptor_for(settings)
        # Every database call and every wait for the writer is bounded (issuer.store.bounds).
        engine = create_engine(settings.database_url, timeout=settings.store_timeout)
        writer = GroupWriter(engine, max_pending=settings.store_max_pending_writes,
                             max_wait=settings.store_timeout)
        signer = Signer(sign_threads)
        # Short timeouts: a hung Redis must cost a token request little (the limiter
        # then decides in memory, or refuses, for a second: issuer.ratelimit).
        redis = Redis.from_url(settings.redis_url, socket_timeout=REDIS_TIMEOUT,
                               socket_connect_timeout=REDIS_TIMEOUT) if settings.redis_url else None
        metrics = Metrics()
        # Clients' jwks_uri are chosen by tenants: public addresses only (issuer.outbound).
        jwks_http = http_client or httpx.AsyncClient(
            transport=guarded_transport(
                OutboundPolicy.allowing(settings.outbound_allowed_networks)),
            timeout=OUTBOUND_TIMEOUT,
            follow_redirects=False)
        outbound_http = outbound or httpx.AsyncClient(timeout=httpx.Timeout(30.0),
                                                      follow_redirects=False,
                                                      verify=tls_context())
        try:
            keyring = KeyRing(engine, encryptor, clock, alg=settings.signing_alg,
                              rsa_bits=settings.rsa_key_size,
                              policy=RotationPolicy(rotation_days=settings.key_rotation_days,
                                                    token_ttl=settings.token_ttl))
            await keyring.ensure_active()
            metrics.watch_keys(keyring, clock)
            _watch_store(metrics, engine, writer)
            await writer.start()
            authorization_server = IssuerAuthorizationServer(
                issuer=settings.issuer_url, default_audience=settings.audience,
                default_ttl=settings.token_ttl, keyring=keyring, clock=clock,
            )
            replay = ReplayStore(engine, clock)
            limiter = _limiter(settings, clock, redis, metrics)
            clients = ClientStore(engine, clock, settings.client_cache_ttl)
            notices = ChangeNotices(clients, engine, redis_url=settings.redis_url, redis=redis,
                                    redis_prefix=settings.redis_key_prefix)
            dpop = dpop_binding(settings, clock, replay, redis, encryptor.current)
            services = Services(
                settings=settings, clock=clock, engine=engine, encryptor=encryptor,
                keyring=keyring, signer=signer,
                clients=clients,
                notices=notices,
                writer=writer,
                authorization_server=authorization_server,
                limiter=limiter,
                rate_policies=RatePolicies.from_settings(settings),
                metrics=metrics,
                store_failures=StoreFailures(clock, metrics.store_unavailable.inc),
                admin_verifier=admin_verifier(settings, keyring, clock, dpop.replay),
                assertions=AssertionAuthenticator(
                    ClientKeys(jwks_http, clock, encryptor), replay, authorization_server,
                    FederatedAuthenticator(engine, FederationKeys(jwks_http, clock), replay,
                                           authorization_server,
                                           token_endpoint=f"{settings.issuer_url}/token")),
                dpop=dpop,
                redis=redis,
            )
            context = ConnectorContext(settings=settings, clock=clock, engine=engine,
                                       encryptor=encryptor, metrics=metrics,
                                       outbound=outbound_http, redis=redis, sleep=sleep)
            # Background tasks: the key ring's reload, scheduled rotation and
            # pruning (issuer.keys.ring); expired token records and old audit events
            # (issuer.retention); spent client-assertion and DPoP proof jtis
            # (issuer.oauth.replay, issuer.oauth.dpop);
            # ended rate-limit leases' unused slots (issuer.ratelimit.leases); the
            # connectors' own (their lifespans); client and tenant change notices
            # (issuer.changes).
            async with every(lambda: keyring.policy.reload_every, keyring.maintain,
                             name="key-ring"), \
                    every(PRUNE_EVERY, lambda: prune(
                        engine, clock, audit_retention_days=settings.audit_retention_days),
                        name="retention"), \
                    every(PRUNE_INTERVAL, replay.prune, name="assertion-jtis"), \
                    every(MAINTAIN_EVERY, limiter.maintain, name="rate-limit-leases"), \
                    _started(CONNECTORS, context) as connector_state, \
                    notices.listening():
                if freeze_gc:
                    gc.freeze()
                try:
                    yield {**SERVICES.entry(services), **connector_state}
                finally:
                    # Leased rate-limit slots go back to Redis for the other processes.
                    await limiter.aclose()
        finally:
            if http_client is None:
                await jwks_http.aclose()
            if outbound is None:
                await outbound_http.aclose()
            await writer.close()
            signer.close()
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    errors = ErrorTable(connector.errors for connector in CONNECTORS)
    routes = http_routes(ENDPOINTS)
    routes.append(Route("/openapi.json", openapi_endpoint(settings.issuer_url, ENDPOINTS),
                        methods=["GET"]))
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(BodySizeLimitMiddleware, max_bytes=MAX_BODY_BYTES),
        Middleware(BodyTimeoutMiddleware, seconds=settings.http_body_timeout),
    ]
    trusted = settings.trusted_proxies
    if trusted:
        # X-Forwarded-For is believed only from these addresses (Granian's parser:
        # the right-most address not itself a trusted proxy is the client).
        middleware.append(Middleware(_proxy_headers, trusted=trusted))
    return without_slash_redirects(_Issuer(
        # POST /token is answered ahead of the stack, under the same rules.
        lambda stack: TokenRoute(
            stack, max_body=MAX_BODY_BYTES, body_timeout=settings.http_body_timeout,
            wrap=(lambda handler: _proxy_headers(handler, trusted)) if trusted else None),
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={OAuthError: _oauth_error, HTTPException: http_exception,
                            SQLAlchemyError: _store_error, OSError: _store_error,
                            **dict.fromkeys(errors.exceptions, _translated(errors)),
                            Exception: _server_error},
    ))


#: The connectors this issuer hosts (``issuer.connector.Connector``), in order.
CONNECTORS: tuple[Connector, ...] = (NETSUITE, ERP)  # ERP's NETSUITE_REST_V1 uses NetSuite's
#: Every audit event name: the core's, then each connector's.
AUDIT_EVENTS = audit.vocabulary(*(connector.audit_events for connector in CONNECTORS))
#: Every endpoint but /openapi.json, in the order the routes match; the routes and the
#: document are both built from these records.
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/token", token, "Get an access token (client_credentials, RFC 6749 "
             "§4.4)", "oauth", request=TokenForm, response=TokenResponse, auth="client",
             form=True, errors=(400, 401, 403, 429, 503)),
    Endpoint("GET", "/.well-known/jwks.json", jwks, "Public signing keys (RFC 7517)",
             "discovery", response=JWKSet, auth="none", errors=(),
             media_type="application/jwk-set+json"),  # RFC 7517 §8.5.1
    Endpoint("GET", "/.well-known/oauth-authorization-server", authorization_server_metadata,
             "Authorization server metadata (RFC 8414)", "discovery", auth="none", errors=()),
    Endpoint("GET", "/.well-known/openid-configuration", authorization_server_metadata,
             "The same metadata", "discovery", auth="none", errors=()),
    Endpoint("GET", "/healthz", healthz, "Liveness", "ops", response=Health, auth="none",
             errors=()),
    Endpoint("GET", "/readyz", readyz, "Readiness: database, Redis, signing key (503 when "
             "not ready)", "ops", response=Readiness, auth="none", errors=()),
    Endpoint("GET", "/metrics", metrics_endpoint, "Prometheus metrics (text exposition "
             "format)", "ops", auth="none", errors=(), media_type="text/plain"),
    *introspection.endpoints,
    *revocation.endpoints,
    *tenants.endpoints,
    *clients.endpoints,
    *trusted_issuers.endpoints,
    *m2m_tokens.endpoints,
    *keys.endpoints,
    *audit_events.endpoints(AUDIT_EVENTS),
    *(endpoint for connector in CONNECTORS for endpoint in connector.endpoints),
)
#: What ``issuer reencrypt`` rewraps: the core's columns and every connector's.
ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    *CORE_ENCRYPTED_COLUMNS,
    *(column for connector in CONNECTORS for column in connector.encrypted_columns),
)


@asynccontextmanager
async def _started(connectors: Sequence[Connector], context: ConnectorContext
                   ) -> AsyncIterator[Mapping[str, object]]:
    """Every connector's lifespan, entered in order and left in reverse; the state
    entries they yield, together."""
    state: dict[str, object] = {}
    async with AsyncExitStack() as stack:
        for connector in connectors:
            entries = await stack.enter_async_context(
                connector.lifespan(replace(context, state=dict(state))))
            if state.keys() & entries.keys():
                raise ValueError(f"connector {connector.name} reuses a state key")
            state.update(entries)
        yield state


class _Issuer(Starlette):
    """Starlette, with ``front`` put ahead of its middleware stack (the token route)."""

    def __init__(self, front: Callable[[ASGIApp], ASGIApp], **options: Any) -> None:
        super().__init__(**options)
        self._front = front

    def build_middleware_stack(self) -> ASGIApp:
        return self._front(super().build_middleware_stack())


def _proxy_headers(app: ASGIApp, trusted: tuple[str, ...]) -> ASGIApp:
    # Networks in canonical form: the parser takes "10.1.2.3/8" for a host name.
    networks = [str(ipaddress.ip_network(value, strict=False)) for value in trusted]
    wrapped: ASGIApp = wrap_asgi_with_proxy_headers(app, trusted_hosts=networks)
    return wrapped


def _watch_store(metrics: Metrics, engine: AsyncEngine, writer: GroupWriter) -> None:
    """The store's bounded resources, read at every scrape."""
    metrics.watch_value("issuer_store_pending_writes",
                        "Writes queued for the group writer (capped by "
                        "ISSUER_STORE_MAX_PENDING_WRITES)", lambda: float(writer.pending))
    pool = engine.pool
    if isinstance(pool, QueuePool):
        metrics.watch_value("issuer_store_connections_in_use",
                            "Database connections checked out of this process's pool",
                            lambda: float(pool.checkedout()))


def _limiter(settings: Settings, clock: Clock, redis: Redis | None,
             metrics: Metrics) -> RateLimiter:
    """Redis (shared by every process) with this process's memory behind it, or
    memory alone when there is no Redis (a single process)."""
    if not settings.rate_limiting:
        return Unlimited()
    memory = MemoryRateLimiter(clock)
    if redis is None:
        return memory
    shared = RedisRateLimiter(redis, clock, prefix=settings.redis_key_prefix + "rl:")
    return FallbackRateLimiter(shared, memory, clock,
                               fail_closed=settings.rate_limit_fail == "closed",
                               on_fallback=metrics.rate_limit_fallback.inc)


def create_app_from_env() -> Starlette:
    """The app factory ``issuer serve`` runs in each worker process (issuer.serving).

    Long-lived start-up objects (modules, settings, the app, and once the lifespan
    has started, its services) leave the garbage collector's view, and young
    collections run less often: the token path allocates many short-lived objects
    and creates no cycles worth chasing. Tokens are signed on the event loop when
    every CPU has a worker of its own (:func:`issuer.serving.sign_threads`). The
    interpreter's switch interval is :data:`issuer.serving.SWITCH_INTERVAL`.
    """
    app = create_app(Settings.from_env(), sign_threads=serving.sign_threads(),
                     freeze_gc=True)
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    sys.setswitchinterval(serving.SWITCH_INTERVAL)
    return app


async def _oauth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    if isinstance(exc, StoreUnavailable):
        services_of(request).store_failures.report(f"{request.method} {request.url.path}",
                                                   exc.__cause__ or exc)
    return error_response(exc)


async def _store_error(request: Request, exc: Exception) -> Response:
    """A handler that met an unavailable store (issuer.store.bounds) answers 503 with
    Retry-After; the failure is counted and logged once per interval. Any other
    database or OS error is a bug: 500, its traceback in the log."""
    if not unavailable(exc):
        raise exc
    services_of(request).store_failures.report(f"{request.method} {request.url.path}", exc)
    return error_response(StoreUnavailable())


async def _server_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server log (ServerErrorMiddleware), never to the caller.
    return Response(json.dumps(ServerError().body()), status_code=500,
                    media_type="application/json", headers={"Cache-Control": "no-store"})


def _translated(table: ErrorTable) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The handler of the connectors' exceptions: each answered as the row its
    connector registered for it (``issuer.errors.ErrorTable``)."""

    async def handler(request: Request, exc: Exception) -> Response:
        error = table.translate(exc)
        if error is None:  # cannot happen: only registered classes reach this handler
            raise exc
        return error_response(error)

    return handler
