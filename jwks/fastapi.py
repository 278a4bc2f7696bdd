"""FastAPI integration of the verifier: a dependency that accepts RFC 6750 Bearer tokens.

::

    bearer = BearerToken(JWKSVerifier(...))

    @app.get("/orders")
    async def list_orders(token: VerifiedToken = Security(bearer, scopes=["orders:read"])):
        return {"caller": token.client_id}

The dependency reads ``Authorization: Bearer <token>`` (RFC 6750 §2.1; never the query
string), verifies it, checks that it grants every scope the path asks for (FastAPI's
``Security(..., scopes=[...])``, collected along the dependency chain; ``Depends(bearer)``
asks for none) and returns the :class:`~jwks.verifier.VerifiedToken`. Refusals are
``HTTPException``\\ s whose ``detail`` is ``{"error": ..., "error_description": ...}``
(FastAPI answers ``{"detail": {...}}``), following RFC 6750 §3 and §3.1:

- no Bearer token, or an invalid one: 401 ``invalid_token`` with
  ``WWW-Authenticate: Bearer error="invalid_token"``;
- a valid token without a scope: 403 ``insufficient_scope`` with
  ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."``;
- two ``Authorization`` headers, or a Bearer header and an ``access_token`` query
  parameter (more than one way of sending a token): 400 ``invalid_request``;
- the issuer's keys unobtainable: 503 ``temporarily_unavailable`` with ``Retry-After``.

DPoP (RFC 9449 §7), when the verifier has ``verify_dpop`` (``JWKSVerifier`` has):
``Authorization: DPoP <token>`` and one ``DPoP`` proof for this request's method and
URL; a refusal is 401 with ``WWW-Authenticate: DPoP error="invalid_dpop_proof",
algs="..."`` (the proof) or ``DPoP error="invalid_token", algs="..."`` (the token, or a
DPoP-bound token sent as Bearer) (§7.1).

The dependency is a FastAPI security scheme (HTTP bearer, JWT), so the OpenAPI document
and its "Authorize" button know about it.

FastAPI is not a dependency of ``jwks``: only this module imports it, and it says how
to install it when it is missing. Imports nothing from ``issuer``. No
``from __future__ import annotations`` here: FastAPI reads the dependency's parameter
types at run time.
"""

import logging
from collections.abc import Collection

try:
    from fastapi import HTTPException, Request
    from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
    from fastapi.security import SecurityScopes
    from fastapi.security.base import SecurityBase
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        "jwks.fastapi needs FastAPI: pip install fastapi (or the m2m-jwks[fastapi] extra)",
        name=missing.name) from missing

from jwks.starlette import MISSING_TOKEN, RETRY_AFTER
from jwks.verifier import (
    DPoPBoundTokenAsBearer,
    DPoPProofInvalid,
    DPoPVerifier,
    KeySetUnavailable,
    MalformedToken,
    TokenError,
    TokenVerifier,
    VerifiedToken,
)

__all__ = ["BearerToken"]

log = logging.getLogger(__name__)

_NO_STORE = {"Cache-Control": "no-store"}
ONE_HEADER = "Send one Authorization header"
ONE_METHOD = "Send the access token in the Authorization header only"


class BearerToken(SecurityBase):
    """The dependency: ``Security(bearer, scopes=[...])`` or ``Depends(bearer)``.

    One instance per verifier, shared by every path; ``scheme_name`` names the security
    scheme in the OpenAPI document (default ``BearerToken``).
    """

    def __init__(self, verifier: TokenVerifier, *, scheme_name: str | None = None,
                 description: str | None = None) -> None:
        self.verifier = verifier
        # The DPoP scheme is accepted when the verifier can check proofs.
        self._dpop = verifier if isinstance(verifier, DPoPVerifier) else None
        self.model = HTTPBearerModel(bearerFormat="JWT", description=description)
        self.scheme_name = scheme_name or type(self).__name__

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> VerifiedToken:
        needed = _scopes(security_scopes.scopes)
        headers = request.headers.getlist("authorization")
        # RFC 6750 §3.1 invalid_request: "repeats the same parameter, uses more than one
        # method for including an access token" -- which token would count is unclear.
        if len(headers) > 1:
            raise invalid_request(ONE_HEADER)
        scheme, _, credentials = (headers[0] if headers else "").partition(" ")
        scheme = scheme.lower()  # RFC 7235 §2.1: the scheme is case-insensitive
        verifier, dpop = self.verifier, self._dpop
        algs = " ".join(sorted(dpop.dpop_algorithms)) if dpop is not None else ""
        if scheme != "bearer" and (scheme != "dpop" or dpop is None):
            raise invalid_token(MISSING_TOKEN)
        if "access_token" in request.query_params:
            raise invalid_request(ONE_METHOD)
        token = credentials.strip()
        if not token:
            raise invalid_token(MalformedToken.description)
        try:
            if dpop is not None and scheme == "dpop":
                verified = await dpop.verify_dpop(token, request.headers.getlist("dpop"),
                                                  method=request.method, url=str(request.url))
            else:
                verified = await verifier.verify(token)
        except TokenError as error:
            # The detail (which check failed) stays in the log; callers get fixed text.
            log.info("bearer token rejected: %s: %s", type(error).__name__, error)
            if isinstance(error, KeySetUnavailable):
                raise HTTPException(503, {"error": "temporarily_unavailable",
                                          "error_description": error.description},
                                    headers={**_NO_STORE, "Retry-After": str(RETRY_AFTER)}
                                    ) from None
            if scheme == "dpop" or isinstance(error, DPoPBoundTokenAsBearer):
                code = ("invalid_dpop_proof" if isinstance(error, DPoPProofInvalid)
                        else "invalid_token")
                raise _error(401, code, error.description, "DPoP",
                             f', algs="{algs}"') from None
            raise invalid_token(error.description) from None
        if not verified.scopes.issuperset(needed):
            raise insufficient_scope(" ".join(needed))
        return verified


def invalid_token(description: str) -> HTTPException:
    """401 ``invalid_token`` (RFC 6750 §3.1). Like ``jwks.starlette``, a request without
    any token is answered with the error code too."""
    return _bearer_error(401, "invalid_token", description)


def insufficient_scope(scope: str) -> HTTPException:
    """403 ``insufficient_scope``; ``scope`` lists every scope needed (RFC 6750 §3)."""
    return _bearer_error(403, "insufficient_scope", f"The access token does not grant {scope}",
                         f', scope="{scope}"')


def invalid_request(description: str) -> HTTPException:
    """400 ``invalid_request`` (RFC 6750 §3.1)."""
    return _bearer_error(400, "invalid_request", description)


def _bearer_error(status: int, error: str, description: str, extra: str = "") -> HTTPException:
    return _error(status, error, description, "Bearer", extra)


def _error(status: int, error: str, description: str, scheme: str,
           extra: str = "") -> HTTPException:
    return HTTPException(status, {"error": error, "error_description": description},
                         headers={**_NO_STORE,
                                  "WWW-Authenticate": f'{scheme} error="{error}"{extra}'})


def _scopes(scopes: Collection[str]) -> list[str]:
    """The scopes a path asks for, in order, each once; a malformed one is a bug in the
    app (RFC 6749 §3.3 scope tokens have no spaces or quotes), not the caller's fault."""
    if not all(isinstance(s, str) and s and not set(s) & {" ", '"', "\\"} for s in scopes):
        raise ValueError(f"scopes must be RFC 6749 scope tokens: {list(scopes)!r}")
    return list(dict.fromkeys(scopes))
