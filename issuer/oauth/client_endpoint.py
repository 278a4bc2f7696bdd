"""The steps shared by the client-authenticated token endpoints (RFC 7662 §2.1,
RFC 7009 §2.1): parse the form, authenticate the caller as at /token, preload the
presented token, then hand a ready Authlib request to the endpoint's own step.
Failed authentications spend the source address's budget, as at /token.
Errors render as /token renders them; a store outage is 503 (RFC 7009 §2.2.1:
the token still exists and the client may retry)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from issuer.errors import (
    InvalidClient,
    OAuthError,
    StoreUnavailable,
    TooManyRequests,
    error_response,
)
from issuer.oauth.client_auth import ClaimedClient, identify
from issuer.oauth.endpoints import parse_form, request_source
from issuer.oauth.server import _Client, _Request
from issuer.oauth.tokens import client_error_response, load_presented
from issuer.ratelimit import enforce
from issuer.services import Services, services_of
from issuer.store.bounds import bounded, request_budget
from issuer.store.records import ClientRecord

#: The endpoint's own step: the caller is authenticated and ``call.presented`` loaded.
Step = Callable[[Services, Request, ClientRecord, _Request], Awaitable[Response]]


def client_endpoint(name: str, step: Step) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        services = services_of(request)
        # Every wait for the store below draws on one budget (issuer.store.bounds).
        with request_budget(services.settings.store_timeout):
            return await _handle(request, services)

    async def _handle(request: Request, services: Services) -> Response:
        claimed: ClaimedClient | None = None
        address = request_source(request) or "unknown"
        limits = services.rate_policies
        try:
            form, _ = await parse_form(request)
            claimed = identify(request.headers, form, request.query_params)
            # The brute-force guard of /token covers these endpoints too, or they
            # would be the place to guess secrets (issuer.ratelimit.policy).
            await enforce(services.limiter, limits.guard(address))
            try:
                caller = await bounded(services.clients.get(claimed.client_id))
                if caller is None:
                    raise InvalidClient(reason="unknown_client")
                client = _Client(caller, services.clock.now())
                authenticated = None
                if claimed.assertion is not None:
                    authenticated = await services.assertions.authenticate(
                        form, request.headers, claimed, caller, name)
                    client = authenticated
                call = _Request(form, (), request.headers, claimed, client)
                call.authenticated = authenticated
                call.presented = await bounded(load_presented(
                    services.engine, services.keyring, services.settings.issuer_url,
                    form.get("token")))
                return await step(services, request, caller, call)
            except InvalidClient:
                await enforce(services.limiter, limits.failure(address))
                raise
        except OAuthError as error:
            if isinstance(error, TooManyRequests):
                services.metrics.rate_limited.labels(error.policy).inc()
            return client_error_response(error, claimed)
        except (SQLAlchemyError, OSError) as failure:
            services.store_failures.report(f"POST {request.url.path}", failure)
            return error_response(StoreUnavailable())

    return handle
