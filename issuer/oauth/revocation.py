"""POST /revoke: OAuth 2.0 Token Revocation (RFC 7009) as a list of named steps.

parse the form -> identify the caller -> load it (async, cached) -> verify the
token and load its record (async) -> run Authlib's ``RevocationEndpoint`` on
those values (sync, no I/O; ``tokens.Revocation``) -> mark the record revoked
and record ``M2M_TOKEN_REVOKED`` in one transaction -> answer 200, empty body.

Decisions, each from the RFC:

- The caller authenticates as at /token (§2.1: "The client also includes its
  authentication credentials as described in Section 2.3. of [RFC6749]").
- An unknown, garbage, expired or already revoked token answers 200 (§2.2:
  "invalid tokens do not cause an error response").
- A valid token of *another* client is refused, as §2.1 says ("the request is
  refused and the client is informed of the error"): 400 ``invalid_grant`` and
  the token stays active. The caller learns nothing new: it holds the token, and
  the token's own (signed, unencrypted) claims name its client.
- ``token_type_hint`` is ignored (§2.1 MAY; §2.2: "An invalid token type hint
  value is ignored ... and does not influence the revocation response").
- §2.1: "The invalidation takes place immediately": introspection reads the
  record on every call, so a revoked token is inactive from the next request.
"""

from __future__ import annotations

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from issuer import audit
from issuer.admin.http import Endpoint
from issuer.audit import AuditEvent
from issuer.clock import utc
from issuer.errors import (
    NO_STORE,
)
from issuer.oauth.client_endpoint import client_endpoint
from issuer.oauth.endpoints import request_id, request_source
from issuer.oauth.server import _Request
from issuer.oauth.tokens import PresentedToken
from issuer.openapi import ClientAuthForm
from issuer.services import Services
from issuer.store import issued_tokens
from issuer.store.bounds import bounded
from issuer.store.records import ClientRecord


async def _revoke(services: Services, request: Request, caller: ClientRecord,
                  call: _Request) -> Response:
    call.revoked = None
    services.authorization_server.revocation.respond(call)
    revoked: PresentedToken | None = call.revoked
    if revoked is not None:
        await bounded(_mark_revoked(services, request, caller, revoked))
    # §2.2: "The content of the response body is ignored by the client as all
    # necessary information is conveyed in the response code."
    return Response(b"", status_code=200, headers=NO_STORE)


revoke = client_endpoint("revocation", _revoke)


async def _mark_revoked(services: Services, request: Request, caller: ClientRecord,
                        token: PresentedToken) -> None:
    """Set ``revoked_at`` and record ``M2M_TOKEN_REVOKED``, in one transaction.

    Revoking twice changes nothing and records nothing the second time.
    """
    now = services.clock.now()
    async with services.engine.begin() as connection:
        if await issued_tokens.revoke(connection, token.jti, utc(now)):
            await audit.record(
                connection, AuditEvent.M2M_TOKEN_REVOKED, at=now, actor=caller.client_id,
                tenant_id=token.tenant_id, client_id=token.client_id,
                source=request_source(request), request_id=request_id(request),
                details={"jti": token.jti, "via": "revocation"},
            )


# OpenAPI -------------------------------------------------------------------------------


class RevocationForm(ClientAuthForm):
    """RFC 7009 §2.1 revocation request (form-encoded)."""

    token: str = Field(description="the access token to revoke (one of the caller's own)")
    token_type_hint: str | None = Field(
        default=None, description="accepted and ignored (RFC 7009 §2.2)")


endpoints: list[Endpoint] = [
    Endpoint("POST", "/revoke", revoke, "Revoke one of the caller's access tokens (RFC 7009); "
             "200 with an empty body, also for unknown tokens", "oauth",
             request=RevocationForm, response=None, auth="client", form=True,
             errors=(400, 401, 429, 503)),
]
