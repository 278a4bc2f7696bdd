"""Starlette integration of the verifier: RFC 6750 Bearer tokens for resource servers.

``Middleware(BearerAuthMiddleware, verifier=JWKSVerifier(...))`` reads
``Authorization: Bearer <token>`` (RFC 6750 §2.1; never the query string, §2.3 being
discouraged), verifies it and sets ``request.user`` (:class:`BearerUser`) and
``request.auth`` (the token's scopes). ``@requires_scope("orders:read")`` guards an
endpoint. Errors follow RFC 6750 §3 and §3.1:

- a missing token on a guarded endpoint, or an invalid token on any endpoint: 401
  ``invalid_token`` with ``WWW-Authenticate: Bearer error="invalid_token"``;
- a valid token without the scope: 403 ``insufficient_scope`` with
  ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."``;
- the issuer's keys unobtainable (never fetched, or stale past ``max_stale``): 503
  ``temporarily_unavailable`` -- the request is still refused.

DPoP (RFC 9449 §7), when the verifier has ``verify_dpop`` (``JWKSVerifier`` has):
``Authorization: DPoP <token>`` with one ``DPoP`` proof header for this request's
method and URL (``request.url`` as Starlette sees it: behind a proxy, let the server
apply its forwarded headers). A refusal is 401 with ``WWW-Authenticate: DPoP
error="invalid_dpop_proof", algs="..."`` for a bad or missing proof, ``DPoP
error="invalid_token", algs="..."`` for a bad token (§7.1) -- a DPoP-bound token sent
as a Bearer token included.

Imports nothing from ``issuer``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from jwks.verifier import (
    DPoPBoundTokenAsBearer,
    DPoPProofInvalid,
    DPoPVerifier,
    InvalidTokenError,
    KeySetUnavailable,
    MalformedToken,
    TokenError,
    TokenVerifier,
    VerifiedToken,
)

__all__ = [
    "BearerAuthMiddleware",
    "BearerAuthenticationError",
    "BearerTokenBackend",
    "BearerUser",
    "bearer_error_response",
    "dpop_error_response",
    "insufficient_scope_response",
    "invalid_token_response",
    "requires_scope",
]

log = logging.getLogger(__name__)
Endpoint = Callable[..., Awaitable[Response]]

_NO_STORE = {"Cache-Control": "no-store"}
MISSING_TOKEN = "A bearer access token is required"
#: Seconds a client should wait when the issuer's keys are unavailable (the verifier's
#: default ``min_refetch_interval``).
RETRY_AFTER = 30


class BearerUser(BaseUser):
    """The machine client a verified token speaks for."""

    def __init__(self, token: VerifiedToken) -> None:
        self.token = token

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.token.client_id

    @property
    def identity(self) -> str:
        return self.token.client_id


class BearerAuthenticationError(AuthenticationError):
    """Carries the verifier's typed error to :func:`bearer_error_response`."""

    def __init__(self, error: TokenError, *, dpop_algs: str | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        #: Set when the answer is a DPoP challenge (RFC 9449 §7.1): the algs it lists.
        self.dpop_algs = dpop_algs


class BearerTokenBackend(AuthenticationBackend):
    """Starlette ``AuthenticationBackend``: no ``Authorization`` header, or another
    scheme, is anonymous; a Bearer token is verified or the request is refused."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier
        # The DPoP scheme is accepted when the verifier can check proofs.
        self._dpop = verifier if isinstance(verifier, DPoPVerifier) else None

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if header is None:
            return None
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()  # RFC 7235 §2.1: the scheme is case-insensitive
        verifier, dpop = self.verifier, self._dpop
        algs = " ".join(sorted(dpop.dpop_algorithms)) if dpop is not None else None
        if scheme not in ("bearer", "dpop") or (scheme == "dpop" and dpop is None):
            return None
        token = credentials.strip()
        if not token:
            raise BearerAuthenticationError(MalformedToken("an empty access token"),
                                            dpop_algs=algs if scheme == "dpop" else None)
        try:
            if dpop is not None and scheme == "dpop":
                verified = await dpop.verify_dpop(
                    token, conn.headers.getlist("dpop"), method=conn.scope["method"],
                    url=str(conn.url))
            else:
                verified = await verifier.verify(token)
        except TokenError as error:
            # The detail (which check failed) stays in the log; callers get fixed text.
            log.info("%s token rejected: %s: %s", scheme, type(error).__name__, error)
            challenge_dpop = scheme == "dpop" or isinstance(error, DPoPBoundTokenAsBearer)
            raise BearerAuthenticationError(
                error, dpop_algs=algs if challenge_dpop else None) from error
        return AuthCredentials(sorted(verified.scopes)), BearerUser(verified)


def bearer_error_response(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """``on_error`` for ``AuthenticationMiddleware``: RFC 6750 §3.1 responses."""
    error = exc.error if isinstance(exc, BearerAuthenticationError) else InvalidTokenError()
    if isinstance(error, KeySetUnavailable):
        return JSONResponse(
            {"error": "temporarily_unavailable", "error_description": error.description},
            status_code=503, headers={**_NO_STORE, "Retry-After": str(RETRY_AFTER)})
    if isinstance(exc, BearerAuthenticationError) and exc.dpop_algs is not None:
        return dpop_error_response(error, exc.dpop_algs)
    return invalid_token_response(error.description)


def dpop_error_response(error: TokenError, algs: str) -> Response:
    """RFC 9449 §7.1: 401 with a DPoP challenge naming the error and the accepted proof
    algorithms; ``invalid_dpop_proof`` for the proof's failures, else ``invalid_token``."""
    code = "invalid_dpop_proof" if isinstance(error, DPoPProofInvalid) else "invalid_token"
    return JSONResponse({"error": code, "error_description": error.description},
                        status_code=401,
                        headers={**_NO_STORE,
                                 "WWW-Authenticate": f'DPoP error="{code}", algs="{algs}"'})


def invalid_token_response(description: str) -> Response:
    # RFC 6750 §3.1 would leave the error code out when no token was sent at all; like
    # the issuer's own admin API (issuer/errors.py), every 401 names invalid_token.
    return JSONResponse({"error": "invalid_token", "error_description": description},
                        status_code=401,
                        headers={**_NO_STORE, "WWW-Authenticate": 'Bearer error="invalid_token"'})


def insufficient_scope_response(scope: str) -> Response:
    # RFC 6750 §3: the scope attribute lists the scopes needed, space-delimited.
    return JSONResponse(
        {"error": "insufficient_scope",
         "error_description": f"The access token does not grant {scope}"},
        status_code=403,
        headers={**_NO_STORE,
                 "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})


class BearerAuthMiddleware:
    """Pure ASGI: Starlette's ``AuthenticationMiddleware`` with the Bearer backend and
    RFC 6750 errors. ``Middleware(BearerAuthMiddleware, verifier=...)``."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier) -> None:
        self.app = AuthenticationMiddleware(app, backend=BearerTokenBackend(verifier),
                                            on_error=bearer_error_response)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def requires_scope(*scopes: str) -> Callable[[Endpoint], Endpoint]:
    """Guard an async endpoint (function or ``HTTPEndpoint`` method): every scope is
    needed. No token: 401 ``invalid_token``; too few scopes: 403 ``insufficient_scope``."""
    if not scopes or not all(isinstance(s, str) and s and " " not in s for s in scopes):
        raise ValueError("requires_scope needs one or more scope tokens")
    needed = " ".join(scopes)

    def decorator(endpoint: Endpoint) -> Endpoint:
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError("requires_scope guards async endpoints only")

        @functools.wraps(endpoint)
        async def guarded(*args: Any, **kwargs: Any) -> Response:
            request = next((a for a in (*args, *kwargs.values()) if isinstance(a, Request)),
                           None)
            if request is None:
                raise TypeError("requires_scope: the endpoint received no Request")
            if "user" not in request.scope:
                raise RuntimeError("requires_scope needs BearerAuthMiddleware on the app")
            if not request.user.is_authenticated:
                return invalid_token_response(MISSING_TOKEN)
            granted = set(request.auth.scopes)
            if not granted.issuperset(scopes):
                return insufficient_scope_response(needed)
            return await endpoint(*args, **kwargs)

        return guarded

    return decorator
