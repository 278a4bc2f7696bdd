"""Access tokens presented back to the issuer: RFC 7662 introspection, RFC 7009 revocation.

Async outside, pure inside. :func:`load_presented` verifies the token
offline and loads its issued-token record with its client's and tenant's status
(async, before Authlib runs); the Authlib endpoints below decide on those
preloaded values with no I/O; the HTTP handlers in ``introspection.py`` and
``revocation.py`` write the outcome afterwards.

:func:`decode_access_token` checks only what introspection needs (signature, ``typ``,
``iss``): introspection must not demand an audience, and judges time itself
(RFC 7662 §4). The admin API verifies its Bearer tokens with ``jwks.verifier`` instead
(``issuer.admin.auth``), every resource-server check included.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import TokenEndpoint, TokenMixin
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from issuer.errors import (
    InvalidClient,
    InvalidRequest,
    InvalidToken,
    OAuthError,
    TokenOfAnotherClient,
    error_response,
    from_authlib,
)
from issuer.keys.ring import KeyRing
from issuer.oauth.client_auth import ClaimedClient, basic_challenge
from issuer.oauth.scopes import scope_allowed
from issuer.store import issued_tokens, tenants

#: The scope that lets a client of the platform tenant introspect every tenant's tokens.
INTROSPECT = "introspect"
#: Seconds a token's ``nbf`` may lie ahead of this process's clock (another
#: issuer process may have signed it a moment "later").
NOT_BEFORE_LEEWAY = 30


# Offline verification ------------------------------------------------------------------


def decode_access_token(token: str, keyring: KeyRing, issuer: str) -> dict[str, Any]:
    """The claims of an access token this issuer signed: signature by a published
    key, ``typ`` and ``iss`` checked; nothing else. Raises :class:`InvalidToken`."""
    if keyring.public_keyset is None:
        raise InvalidToken(reason="no_published_keys")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc's notice that RFC 9864 renames EdDSA
            decoded = jwt.decode(token, keyring.public_keyset,
                                 algorithms=sorted({k.alg for k in keyring.keys}))
    # joserfc parses attacker-controlled headers before it checks the signature, and
    # some malformed ones escape as TypeError/KeyError (e.g. ``"crit": 0``): every
    # failure to parse is an invalid token, never a 500.
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise InvalidToken(reason=f"undecodable: {type(error).__name__}") from None
    # RFC 9068 §4: "Resource servers MUST verify that the 'typ' header value is
    # 'at+jwt' ... and reject tokens carrying any other type value."
    if decoded.header.get("typ") != "at+jwt":
        raise InvalidToken(reason="wrong_typ")
    claims: dict[str, Any] = decoded.claims
    if claims.get("iss") != issuer:
        raise InvalidToken(reason="wrong_issuer")
    return claims


# Preloading (async) --------------------------------------------------------------------


@dataclass(frozen=True)
class PresentedToken:
    """A verified token of this issuer and what the store says about it now."""

    claims: Mapping[str, Any]  # signature, typ and iss verified
    jti: str
    client_id: str
    tenant_id: str
    expires_at: float
    revoked: bool
    client_active: bool  # False when the client is disabled or deleted, or was disabled
    tenant_active: bool  # since the token was issued (see :func:`live`)


async def load_presented(engine: AsyncEngine, keyring: KeyRing, issuer: str,
                         token: str | None) -> PresentedToken | None:
    """The token's verified claims and record; None for anything this issuer cannot
    vouch for (not a JWT, bad signature, unpublished key, no record)."""
    if not token:
        return None
    try:
        # RFC 7662 §4: "If the token has been signed, the authorization server
        # MUST validate the signature."
        claims = decode_access_token(token, keyring, issuer)
    except InvalidToken:
        return None
    jti, client_id = claims.get("jti"), claims.get("client_id")
    if not isinstance(jti, str) or not isinstance(client_id, str):
        return None
    record = await issued_tokens.standing(engine, jti)
    if record is None:
        return None
    if record.client_id != client_id or record.tenant_id != claims.get("tenant_id"):
        return None  # a signed token that disagrees with its record is not vouched for
    return PresentedToken(
        claims=claims, jti=jti, client_id=record.client_id, tenant_id=record.tenant_id,
        expires_at=record.expires_at.timestamp(), revoked=record.revoked_at is not None,
        client_active=live(record.client_status, record.client_valid_after, record.issued_at),
        tenant_active=live(record.tenant_status, record.tenant_valid_after, record.issued_at),
    )


def live(status: str | None, tokens_valid_after: datetime | None, issued_at: datetime) -> bool:
    """Whether a client or tenant (``status`` None: deleted) vouches for a token issued
    at ``issued_at``: active, and not disabled since then (the kill switch,
    ``issuer.registration``)."""
    return status == "active" and (tokens_valid_after is None or issued_at >= tokens_valid_after)


async def is_platform_tenant(engine: AsyncEngine, tenant_id: str) -> bool:
    """Whether ``tenant_id`` is the platform (bootstrap) tenant."""
    return await tenants.is_platform(engine, tenant_id)


# The Authlib endpoints (sync, no I/O) ----------------------------------------------------


class _PresentedView(TokenMixin):  # type: ignore[misc]  # Authlib's classes are untyped
    """Authlib's view of a :class:`PresentedToken` at one moment."""

    def __init__(self, token: PresentedToken, now: float) -> None:
        self.token = token
        self._now = now

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.token.client_id)

    def get_scope(self) -> str:
        return str(self.token.claims.get("scope", ""))

    def get_expires_in(self) -> int:
        return max(0, int(self.token.expires_at - self._now))

    def is_expired(self) -> bool:
        """Outside its validity window. RFC 7662 §4: "If the token can expire, the
        authorization server MUST determine whether or not the token has expired."""
        not_before = self.token.claims.get("nbf", self.token.claims.get("iat"))
        if isinstance(not_before, int | float) and not_before - NOT_BEFORE_LEEWAY > self._now:
            return True
        # RFC 7519 §4.1.4: not to be accepted "on or after" the expiration time.
        return self._now >= self.token.expires_at

    def is_revoked(self) -> bool:
        """Revoked, or its client or tenant no longer active (treated alike).

        RFC 7662 §4: "If the token can be revoked after it was issued, the
        authorization server MUST determine whether or not such a revocation has
        taken place."
        """
        token = self.token
        return token.revoked or not token.client_active or not token.tenant_active


class _ClientAuthenticated(TokenEndpoint):  # type: ignore[misc]  # Authlib's classes are untyped
    """Client authentication at both endpoints, with the token endpoint's rules."""

    # RFC 7662 §2.1 / RFC 7009 §2.1: the client authenticates as at the token
    # endpoint (RFC 6749 §2.3); every method /token accepts.
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt",
                           "client_secret_jwt"]

    def authenticate_endpoint_client(self, request: Any) -> Any:
        client = request.authenticated
        if client is not None:
            # A client assertion, verified (and its jti spent) before Authlib ran.
            request.client = client
        else:
            client = super().authenticate_endpoint_client(request)
        record = client.record
        if not record.active:
            raise InvalidClient(reason="client_disabled")
        if record.tenant_status != "active":
            raise InvalidClient(reason="tenant_disabled")
        return client

    def respond(self, request: Any) -> dict[str, Any]:
        """Run the endpoint on a preloaded request; the response body. Pure CPU."""
        try:
            _, body, _ = self.create_endpoint_response(request)
        except OAuth2Error as error:
            raise from_authlib(error) from None
        return dict(body)

    @staticmethod
    def require_token(request: Any) -> None:
        if "token" not in request.form:  # the form parser drops empty values (§3.1)
            raise InvalidRequest("Missing 'token' parameter", reason="missing_token")


class Introspection(_ClientAuthenticated, IntrospectionEndpoint):  # type: ignore[misc]  # Authlib's classes are untyped
    """RFC 7662 on Authlib's ``IntrospectionEndpoint``.

    The request carries ``presented`` (a :class:`PresentedToken` or None) and
    ``caller_platform`` (the caller's tenant is the platform tenant), both loaded
    before Authlib runs.
    """

    def check_params(self, request: Any, client: Any) -> None:
        # RFC 7662 §2.1: "token REQUIRED". Of token_type_hint: "An authorization
        # server MAY ignore this parameter" -- we do: every token here is an
        # access token, so no hint can narrow or widen the search.
        self.require_token(request)

    def authenticate_token(self, request: Any, client: Any) -> _PresentedView | None:
        self.check_params(request, client)
        presented: PresentedToken | None = request.presented
        if presented is None:
            return None
        token = _PresentedView(presented, self.server.clock.now())
        return token if self.check_permission(token, client, request) else None

    def check_permission(self, token: _PresentedView, client: Any, request: Any) -> bool:
        """A client may introspect its own tenant's tokens; a platform-tenant client
        allowed ``introspect`` may introspect every tenant's. RFC 7662 §2.2: when
        "the protected resource is not allowed to introspect this particular token,
        then the authorization server MUST return an introspection response with the
        'active' field set to 'false'"."""
        record = client.record
        if token.token.tenant_id == record.tenant_id:
            return True
        return bool(request.caller_platform) and scope_allowed(INTROSPECT, record.allowed_scopes)

    def introspect_token(self, token: _PresentedView) -> dict[str, Any]:
        """RFC 7662 §2.2 members, from the verified claims."""
        claims = token.token.claims
        payload: dict[str, Any] = {"active": True}
        for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti"):
            if name in claims:
                payload[name] = claims[name]
        # §2.2 token_type: "Type of the token as defined in Section 5.1 of OAuth 2.0";
        # RFC 9449 §6.2: a DPoP-bound token is "DPoP" and its cnf is returned.
        cnf = claims.get("cnf")
        if isinstance(cnf, dict) and isinstance(cnf.get("jkt"), str):
            payload["token_type"] = "DPoP"
            payload["cnf"] = {"jkt": cnf["jkt"]}
        else:
            payload["token_type"] = "Bearer"
        payload["tenant_id"] = token.token.tenant_id
        return payload


class Revocation(_ClientAuthenticated, RevocationEndpoint):  # type: ignore[misc]  # Authlib's classes are untyped
    """RFC 7009 on Authlib's ``RevocationEndpoint``.

    Nothing is written here: ``revoke_token`` leaves the token on
    ``request.revoked`` and the handler marks it revoked (one transaction with
    its audit event) after Authlib returns.
    """

    def check_params(self, request: Any, client: Any) -> None:
        # RFC 7009 §2.1: "token REQUIRED".
        self.require_token(request)
        # token_type_hint is not checked against a list. RFC 7009 §2.1: "If the
        # server is unable to locate the token using the given hint, it MUST extend
        # its search across all of its supported token types"; §2.2: "An invalid
        # token type hint value is ignored by the authorization server and does not
        # influence the revocation response." Access tokens are the only kind this
        # server issues, and it revokes them, so ``unsupported_token_type``
        # (§2.2.1) has no case here.

    def authenticate_token(self, request: Any, client: Any) -> _PresentedView | None:
        self.check_params(request, client)
        presented: PresentedToken | None = request.presented
        if presented is None:
            # RFC 7009 §2.2: "The authorization server responds with HTTP status
            # code 200 if ... the client submitted an invalid token."
            return None
        token = _PresentedView(presented, self.server.clock.now())
        # RFC 7009 §2.1: the server "verifies whether the token was issued to the
        # client making the revocation request. If this validation fails, the
        # request is refused and the client is informed of the error".
        if not token.check_client(client):
            raise TokenOfAnotherClient(reason="token_of_another_client")
        return token

    def revoke_token(self, token: _PresentedView, request: Any) -> None:
        request.revoked = token.token


# Rendering -----------------------------------------------------------------------------


def client_error_response(error: OAuthError, claimed: ClaimedClient | None) -> Response:
    """An error at a client-authenticated endpoint, rendered as /token renders it."""
    headers = basic_challenge() if (
        isinstance(error, InvalidClient) and claimed is not None
        and claimed.method == "client_secret_basic"
    ) else None
    return error_response(error, headers=headers)
