"""The one error table: exception -> RFC error code, HTTP status, public text.

Endpoints raise these; :func:`error_response` renders them. Public texts are
generic where detail would help an attacker (every ``invalid_client`` reads the
same, so nobody can probe which clients exist); the real reason travels in
``reason`` to the audit log and never to the caller.

Deliberate departures from the RFCs are commented at the row. A connector's own
exceptions reach the table through the entries it registers (:class:`ErrorTable`);
its own rows are subclasses of :class:`OAuthError` like these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from authlib.oauth2 import OAuth2Error
from starlette.responses import Response

from jwks.dpop import DPOP_ALGORITHMS

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """Base of every error a caller may see. Subclasses are the table's rows."""

    error: ClassVar[str] = "server_error"
    status: ClassVar[int] = 500
    public_text: ClassVar[str] = "The server could not handle the request"
    #: True when ``description`` (caller-supplied detail) may be shown to the caller.
    exposes_description: ClassVar[bool] = False

    def __init__(
        self,
        description: str | None = None,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description or self.public_text)
        self.description = description
        #: Server-side reason: goes to the audit event, never to the response.
        self.reason = reason or self.error
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    @property
    def error_description(self) -> str:
        if self.exposes_description and self.description:
            return self.description
        return self.public_text

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "error_description": self.error_description}
        if self.details:
            body["details"] = self.details
        return body


# RFC 6749 §5.2 ------------------------------------------------------------------


class InvalidRequest(OAuthError):
    error = "invalid_request"
    status = 400
    public_text = "The request is missing a parameter or is malformed"
    exposes_description = True


class InvalidClient(OAuthError):
    error = "invalid_client"
    # RFC 6749 §5.2: 401 when the client tried to authenticate via the
    # Authorization header; we answer 401 for every invalid_client so that the
    # status does not reveal anything either.
    status = 401
    public_text = "Client authentication failed"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"
    # Departure: RFC 6749 §5.2 answers 400; this issuer answers 403 to a client
    # that authenticated but may not use this grant type (the platform's error table).
    status = 403
    public_text = "The client is not allowed to use this grant type"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"
    status = 400
    public_text = "The grant type is not supported by this server"


class TokenOfAnotherClient(OAuthError):
    """RFC 7009 §2.1: the token was not issued to the client asking to revoke it;
    "the request is refused and the client is informed of the error". Of the
    RFC 6749 §5.2 codes, ``invalid_grant`` covers a credential "issued to another
    client"."""

    error = "invalid_grant"
    status = 400
    public_text = "The token was not issued to this client"


class InvalidScope(OAuthError):
    error = "invalid_scope"
    status = 400
    public_text = "The requested scope is invalid or not allowed for this client"
    exposes_description = True


class InvalidTarget(OAuthError):
    """RFC 8707 §2: the requested resource/audience is not allowed."""

    error = "invalid_target"
    status = 400
    public_text = "The requested resource is invalid or not allowed for this client"
    exposes_description = True


class InvalidDPoPProof(OAuthError):
    """RFC 9449 §5: the ``DPoP`` proof at the token endpoint failed a check of §4.3;
    the description names the check (fixed text, never the caller's input)."""

    error = "invalid_dpop_proof"
    status = 400
    public_text = "The DPoP proof is invalid"
    exposes_description = True


class UseDPoPNonce(OAuthError):
    """RFC 9449 §8: the server requires a nonce in DPoP proofs and the proof had none,
    or a stale one. The next nonce travels in the ``DPoP-Nonce`` header, which every
    token response carries while nonces are required (``issuer.oauth.endpoints``)."""

    error = "use_dpop_nonce"
    status = 400
    public_text = "Authorization server requires nonce in DPoP proof"


class TooManyRequests(OAuthError):
    """A rate limit refused the request (``issuer.ratelimit``): RFC 6585 §4, with
    ``Retry-After`` and the ``RateLimit-*`` headers of the decision. The policy
    that refused goes to the audit event and the metrics, not to the caller."""

    # Not an RFC 6749 code: the platform's error table names it.
    error = "too_many_requests"
    status = 429
    public_text = "Too many token requests"

    def __init__(self, *, policy: str = "default", first_refusal: bool = True,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason="rate_limited", headers=headers)
        self.policy = policy
        #: Only the first refusal of a key per window is audited (issuer.ratelimit).
        self.first_refusal = first_refusal


class TooManyAdminRequests(TooManyRequests):
    """The admin API's rate limit: same code and headers, a text about requests."""

    public_text = "Too many requests"


class RequestTimeout(OAuthError):
    """RFC 9110 §15.5.9: the request body did not arrive in time
    (``ISSUER_HTTP_BODY_TIMEOUT``); the connection is closed after this answer."""

    error = "invalid_request"
    status = 408
    public_text = "The request body did not arrive in time"


class TemporarilyUnavailable(OAuthError):
    """A dependency is down or too slow; RFC 9110 §15.6.4: "The server MAY send a
    Retry-After header field to suggest an appropriate amount of time for the
    client to wait before retrying the request" -- it always does here."""

    error = "temporarily_unavailable"
    status = 503
    public_text = "The service is temporarily unavailable, try again later"
    #: Seconds a client is asked to wait (``Retry-After``).
    retry_after: ClassVar[int] = 5

    def __init__(self, description: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(description, reason=reason,
                         headers={"Retry-After": str(self.retry_after)})


class StoreUnavailable(TemporarilyUnavailable):
    """The database failed, or did not answer within ``ISSUER_STORE_TIMEOUT``, or the
    group writer's queue is full (``issuer.store.bounds``)."""

    def __init__(self) -> None:
        super().__init__(reason="store_unavailable")


class RateLimitUnavailable(TemporarilyUnavailable):
    """Redis is down under ``ISSUER_RATE_LIMIT_FAIL=closed`` (``issuer.ratelimit``)."""

    def __init__(self, *, first_refusal: bool = True) -> None:
        super().__init__(reason="rate_limit_store_unavailable")
        #: Only the first refusal of an interval is audited, as with 429s.
        self.first_refusal = first_refusal


class ServerError(OAuthError):
    error = "server_error"
    status = 500
    public_text = "The server could not handle the request"


# Authlib's errors, by code, onto ours. Authlib's own descriptions are dropped:
# some of them say whether a client exists.
_FROM_AUTHLIB: dict[str, type[OAuthError]] = {
    "invalid_request": InvalidRequest,
    "invalid_client": InvalidClient,
    "unauthorized_client": UnauthorizedClient,
    "unsupported_grant_type": UnsupportedGrantType,
    "invalid_scope": InvalidScope,
}


def from_authlib(error: OAuth2Error) -> OAuthError:
    cls = _FROM_AUTHLIB.get(error.error or "", ServerError)
    description = error.description if cls is InvalidRequest else None
    return cls(description, reason=f"{error.error}: {error.description}")


def error_response(error: OAuthError, *, headers: Mapping[str, str] | None = None) -> Response:
    """Render an error as RFC 6749 §5.2 JSON, never cached."""
    return Response(
        json.dumps(error.body(), separators=(",", ":")),
        status_code=error.status,
        media_type="application/json",
        headers={**NO_STORE, **error.headers, **(headers or {})},
    )


# RFC 6750 §3.1 -- bearer-token errors at the admin API -------------------------------


class InvalidToken(OAuthError):
    error = "invalid_token"
    status = 401
    public_text = "The access token is missing, expired, revoked or not for this API"

    def __init__(self, description: str | None = None, *, reason: str | None = None,
                 dpop: bool = False) -> None:
        super().__init__(description, reason=reason, headers={
            # RFC 6750 §3: a 401 carries the Bearer challenge with the error code; a
            # request made with the DPoP scheme gets the DPoP one (RFC 9449 §7.1).
            "WWW-Authenticate": _challenge(self.error, dpop)})


class InvalidDPoPProofAtAdmin(InvalidToken):
    """RFC 9449 §7.1: the admin API's request came with the DPoP scheme and its proof
    failed a check (missing, another method or URL, a wrong ``ath``, another key than
    the token's ``cnf.jkt``, replayed)."""

    error = "invalid_dpop_proof"
    public_text = "The DPoP proof is invalid"

    def __init__(self, *, reason: str | None = None) -> None:
        super().__init__(reason=reason, dpop=True)


def _challenge(error: str, dpop: bool, *, scope: str | None = None) -> str:
    scheme = "DPoP" if dpop else "Bearer"
    challenge = f'{scheme} realm="m2m-issuer", error="{error}"'
    if scope is not None:
        challenge += f', scope="{scope}"'
    if dpop:
        challenge += f', algs="{" ".join(DPOP_ALGORITHMS)}"'
    return challenge


class InsufficientScope(OAuthError):
    """RFC 6750 §3.1: the token is valid but grants none of ``scope``; a request made
    with the DPoP scheme gets the DPoP challenge (RFC 9449 §7.1)."""

    error = "insufficient_scope"
    status = 403
    public_text = "The access token does not grant this operation"

    def __init__(self, scope: str, *, dpop: bool = False) -> None:
        super().__init__(reason=f"needs {scope}", headers={
            "WWW-Authenticate": _challenge(self.error, dpop, scope=scope)})


class NotFound(OAuthError):
    # Another tenant's object answers exactly like a missing one.
    error = "not_found"
    status = 404
    public_text = "No such object"


class MethodNotAllowed(OAuthError):
    """RFC 9110 §15.5.6: the path exists but not with this method; ``Allow`` lists
    every method it has."""

    error = "method_not_allowed"
    status = 405
    public_text = "The method is not allowed for this resource"


class Conflict(OAuthError):
    error = "conflict"
    status = 409
    public_text = "The request conflicts with the current state"
    exposes_description = True


# States and locks -----------------------------------------------------------------


class InvalidState(OAuthError):
    """The object is not in a state that allows the operation (e.g. a NetSuite rotation
    already in progress, or none to confirm); the description says which."""

    error = "invalid_state"
    status = 422
    public_text = "The object is not in a state that allows this operation"
    exposes_description = True


class Busy(OAuthError):
    """Another request holds the object's lock (e.g. a rotation being confirmed)."""

    error = "temporarily_unavailable"
    status = 503
    public_text = "The object is being changed by another request, try again shortly"
    exposes_description = True


# Connectors' entries -------------------------------------------------------------------

#: One entry: an exception of a connector's domain onto a row of the table.
Translation = Callable[[Exception], OAuthError]


class ErrorTable:
    """The connectors' exceptions onto rows of this table, registered by each connector
    (``Connector.errors``) and applied by the app's exception handler: the most
    specific registered class of an exception decides (as an ``except`` chain would,
    subclasses first)."""

    def __init__(self, entries: Iterable[Mapping[type[Exception], Translation]] = ()) -> None:
        self._entries: dict[type[Exception], Translation] = {}
        for mapping in entries:
            for kind, translation in mapping.items():
                if kind in self._entries:
                    raise ValueError(f"{kind.__name__} has two entries in the error table")
                self._entries[kind] = translation

    @property
    def exceptions(self) -> tuple[type[Exception], ...]:
        return tuple(self._entries)

    def translate(self, error: Exception) -> OAuthError | None:
        """The row ``error`` is answered with; None for an exception with no entry."""
        for kind in type(error).__mro__:
            translation = self._entries.get(kind)
            if translation is not None:
                return translation(error)
        return None
