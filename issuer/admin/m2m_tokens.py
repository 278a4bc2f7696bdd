"""The platform's M2M token-management endpoints.

``POST /auth/m2m/token``         mint a token for a client, as if it had asked itself
``GET  /auth/m2m/tokens``        issued tokens' metadata (never a token), newest first
``POST /auth/m2m/token/revoke``  revoke one token, named by the token or by its ``jti``

Callers hold an access token of this issuer with scope ``admin``: the platform
admin acts on every tenant, a tenant's admin on its own tenant only. Without a
valid token: 401 with the RFC 6750 §3 challenge; without ``admin``: 403
``insufficient_scope``.

One rule for the error statuses of all three endpoints:

* **404 not_found** when the request names something the caller cannot see -- an
  unknown client or ``jti``, a client or token of another tenant, a ``tenantId``
  that is not the client's. Another tenant's object answers exactly like a
  missing one.
* **400 invalid_request** when the request contradicts itself: the ``clientId``
  is not the client of the named token, or the ``token`` is not one this issuer
  signed (so there is no ``jti`` to look up).
* **422** when the body or query does not match its schema (naming the field).

Minting runs the grant of POST /token (:meth:`IssuerAuthorizationServer.mint`): a disabled
client or tenant, or a client not allowed ``client_credentials``, is 403
``unauthorized_client``; scopes are checked as at /token (400 ``invalid_scope``
with ``details.invalidScopes``). Mints are limited per target client (10 an
hour, the platform's M2M spec); only a mint that would otherwise succeed counts,
and the check comes before signing and before any write. The token record and
its ``M2M_TOKEN_GENERATED`` event (actor and ``userId`` = the admin's client id)
are group-committed together, as at /token; refusals after the client is known
are audited as ``M2M_TOKEN_DENIED``.

``active`` in the listing means what introspection answers: not revoked, not
expired, and the client and its tenant still active and not disabled since the
token was issued.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from issuer import audit
from issuer.admin.auth import ADMIN, Principal, require
from issuer.admin.handlers import parse_query
from issuer.admin.http import (
    Endpoint,
    InvalidBody,
    RequestModel,
    ResponseModel,
    json_response,
    parse_body,
    read_cursor,
    without_null,
)
from issuer.audit import AuditEvent
from issuer.clock import utc
from issuer.errors import (
    NO_STORE,
    InvalidRequest,
    InvalidToken,
    NotFound,
    OAuthError,
    StoreUnavailable,
)
from issuer.oauth.endpoints import audit_denial, granted_rows, request_id, request_source
from issuer.oauth.tokens import decode_access_token
from issuer.ratelimit import enforce
from issuer.services import Services, services_of
from issuer.store import issued_tokens
from issuer.store.clients import get_client
from issuer.store.records import ClientRecord

TAG = "M2M tokens"
#: Client ids, tenant ids and jtis are visible ASCII (and PostgreSQL refuses NUL in text).
ID_PATTERN = r"^[\x21-\x7e]+$"


# Schemas (they validate the requests and generate /openapi.json) -------------------


class MintTokenRequest(RequestModel):
    clientId: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN,
                          description="The client to mint for")
    scopes: list[str] = Field(default_factory=list, max_length=100,
                              description="Scopes to grant; empty = the client's defaults")
    tenantId: str = Field(min_length=1, max_length=36, pattern=ID_PATTERN,
                          description="The client's tenant")


class MintTokenResponse(ResponseModel):
    """RFC 6749 §5.1, as POST /token answers."""

    access_token: str
    expires_in: int
    scope: str
    token_type: Literal["Bearer"]


class ListTokensQuery(RequestModel):
    clientId: str | None = Field(None, min_length=1, max_length=64, pattern=ID_PATTERN,
                                 description="Only this client's tokens")
    active: bool | None = Field(None, description="true: only active tokens; false: only "
                                                  "revoked, expired or disabled ones")
    cursor: str | None = Field(None, max_length=512, description="nextCursor of the last page")
    limit: int = Field(50, ge=1, le=200, description="Page size")


class TokenMetadata(ResponseModel):
    jti: str
    clientId: str
    tenantId: str
    scopes: list[str]
    audience: list[str]
    issuedAt: datetime
    expiresAt: datetime
    revokedAt: datetime | None
    active: bool


class TokenPage(ResponseModel):
    items: list[TokenMetadata]
    nextCursor: str | None = Field(description="Cursor of the next page; null on the last")


def _one_of_token_or_jti(schema: dict[str, Any], model: type[Any]) -> None:
    for name in model.not_null:
        without_null(schema["properties"][name])
    schema["oneOf"] = [{"required": ["token"]}, {"required": ["jti"]}]


class RevokeTokenRequest(RequestModel):
    model_config = ConfigDict(json_schema_extra=_one_of_token_or_jti)
    not_null = ("token", "jti")

    token: str | None = Field(None, min_length=1, max_length=16384,
                              description="The access token (give this or jti)")
    jti: str | None = Field(None, min_length=1, max_length=64, pattern=ID_PATTERN,
                            description="The token's jti (give this or token)")
    clientId: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN,
                          description="The token's client; must match the token")


class RevokeTokenResponse(ResponseModel):
    revoked: Literal[True]
    jti: str


# Handlers ---------------------------------------------------------------------------


async def mint_token(request: Request) -> Response:
    principal = await require(request, ADMIN)
    body = await parse_body(request, MintTokenRequest)
    services = services_of(request)
    with _store_errors_as_503():
        record = await _visible_client(services, principal, body.clientId)
        if record.tenant_id != body.tenantId:
            raise NotFound(reason="tenant_mismatch")
        userid = {"userId": principal.client_id}
        try:
            issued = services.authorization_server.mint(record, body.scopes)
            # Counted only now, when the mint would succeed; still before any
            # signing or write.
            decision = await enforce(services.limiter,
                                     services.rate_policies.mint(record.client_id))
        except OAuthError as error:
            await audit_denial(services, request, error, None, record,
                               actor=principal.client_id, details=userid)
            raise
        access_token, _ = await asyncio.gather(
            services.signer.sign(issued.key, issued.claims),
            services.writer.write(granted_rows(issued, request, actor=principal.client_id,
                                               details=userid)),
        )
    services.metrics.tokens_issued.labels(record.tenant_id, "admin_mint").inc()
    return Response(json.dumps(issued.response(access_token), separators=(",", ":")),
                    media_type="application/json", headers={**NO_STORE, **decision.headers()})


async def list_tokens(request: Request) -> Response:
    principal = await require(request, ADMIN)
    query = parse_query(request, ListTokensQuery)
    after = read_cursor(issued_tokens.ORDER, query.cursor)
    services = services_of(request)
    with _store_errors_as_503():
        client_id = None
        if query.clientId is not None:
            client_id = (await _visible_client(services, principal, query.clientId)).client_id
        async with AsyncSession(services.engine) as session:
            page = await issued_tokens.page(
                session, now=utc(services.clock.now()), after=after, limit=query.limit,
                tenant_id=None if principal.platform else principal.tenant_id,
                client_id=client_id, active=query.active)
    items = [TokenMetadata(
        jti=token.jti, clientId=token.client_id, tenantId=token.tenant_id,
        scopes=token.scope.split(), audience=list(token.audience), issuedAt=token.issued_at,
        expiresAt=token.expires_at, revokedAt=token.revoked_at, active=token.active,
    ) for token in page.items]
    return json_response(TokenPage(items=items, nextCursor=page.next_cursor)
                         .model_dump(mode="json"))


async def revoke_token(request: Request) -> Response:
    principal = await require(request, ADMIN)
    body = await parse_body(request, RevokeTokenRequest)
    if (body.token is None) == (body.jti is None):
        message = "give exactly one of 'token' and 'jti'"
        raise InvalidBody(details={"errors": [{"field": "token", "message": message},
                                              {"field": "jti", "message": message}]})
    services = services_of(request)
    jti = body.jti if body.jti is not None else _jti_of(body.token or "", services)
    with _store_errors_as_503():
        await _revoke(services, request, principal, jti, body.clientId,
                      identified_by="jti" if body.jti is not None else "token")
    return json_response(RevokeTokenResponse(revoked=True, jti=jti).model_dump(mode="json"))


# Store work -------------------------------------------------------------------------


async def _revoke(services: Services, request: Request, principal: Principal, jti: str,
                  client_id: str, *, identified_by: str) -> None:
    """Set ``revoked_at`` and record ``M2M_TOKEN_REVOKED``, in one transaction."""
    async with services.engine.begin() as connection:
        found = await issued_tokens.owner(connection, jti)
        if found is None:
            raise NotFound(reason="unknown_jti")
        principal.check_tenant(found.tenant_id)
        if found.client_id != client_id:
            raise InvalidRequest("'clientId' does not match the token",
                                 reason="client_id_mismatch")
        if found.revoked_at is not None:
            return  # idempotent: already revoked, nothing changes, nothing to record
        now = services.clock.now()
        if not await issued_tokens.revoke(connection, jti, utc(now)):
            return  # a concurrent revocation got there first and recorded it
        await audit.record(
            connection, AuditEvent.M2M_TOKEN_REVOKED, at=now, actor=principal.client_id,
            tenant_id=found.tenant_id, client_id=found.client_id,
            source=request_source(request), request_id=request_id(request),
            details={"jti": jti, "userId": principal.client_id, "identifiedBy": identified_by})


# Helpers ----------------------------------------------------------------------------


async def _visible_client(services: Services, principal: Principal,
                          client_id: str) -> ClientRecord:
    """The client, read fresh (not from the token path's cache: a client disabled a
    moment ago must not be minted for), or 404 if missing or of another tenant."""
    async with AsyncSession(services.engine) as session:
        record = await get_client(session, client_id)
    if record is None:
        raise NotFound(reason="unknown_client")
    principal.check_tenant(record.tenant_id)
    return record



def _jti_of(token: str, services: Services) -> str:
    """The ``jti`` of an access token this issuer signed (signature by a published
    key, ``typ``, ``iss``; an expired token may still be revoked), else a 400."""
    try:
        claims = decode_access_token(token, services.keyring, services.settings.issuer_url)
    except InvalidToken:
        claims = {}
    jti = claims.get("jti")
    if not isinstance(jti, str):
        raise InvalidRequest("The token was not issued by this server",
                             reason="token_not_ours")
    return jti


@contextmanager
def _store_errors_as_503() -> Iterator[None]:
    """As at POST /token: a store that is down is a 503, no stack trace."""
    try:
        yield
    except (SQLAlchemyError, OSError) as error:
        raise StoreUnavailable() from error  # counted and logged by the app's handler


# Wiring -----------------------------------------------------------------------------

endpoints: list[Endpoint] = [
    Endpoint("POST", "/auth/m2m/token", mint_token, "Mint an access token for a client", TAG,
             request=MintTokenRequest, response=MintTokenResponse, roles=(ADMIN,),
             errors=(400, 401, 403, 404, 422, 429, 503)),
    Endpoint("GET", "/auth/m2m/tokens", list_tokens, "List issued tokens (metadata, never "
             "the token)", TAG, query=ListTokensQuery, response=TokenPage, roles=(ADMIN,),
             errors=(401, 403, 404, 422, 503)),
    Endpoint("POST", "/auth/m2m/token/revoke", revoke_token, "Revoke an issued token", TAG,
             request=RevokeTokenRequest, response=RevokeTokenResponse, roles=(ADMIN,),
             errors=(400, 401, 403, 404, 422, 503)),
]
