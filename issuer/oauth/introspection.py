"""POST /introspect: OAuth 2.0 Token Introspection (RFC 7662) as a list of named steps.

parse the form -> identify the caller -> load it (async, cached) -> verify the
token and load its record, client and tenant (async) -> run Authlib's
``IntrospectionEndpoint`` on those values (sync, no I/O; ``tokens.Introspection``)
-> record ``M2M_TOKEN_USED`` for an active token -> answer, ``Cache-Control: no-store``.

RFC 7662 §2.1: "To prevent token scanning attacks, the endpoint MUST also
require some form of authorization to access this endpoint" -- the caller
authenticates as a client, exactly as at /token (RFC 6749 §2.3). A bad caller
gets /token's ``invalid_client``; any token it may not learn about gets
``{"active": false}`` and nothing more (§2.2). Tenancy: a client introspects its
own tenant's tokens; only a client of the platform tenant allowed the
``introspect`` scope introspects every tenant's.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from issuer.admin.http import Endpoint, ResponseModel
from issuer.audit import AuditEvent, audit_row
from issuer.errors import (
    NO_STORE,
)
from issuer.oauth.client_endpoint import client_endpoint
from issuer.oauth.endpoints import request_id, request_source
from issuer.oauth.server import _Request
from issuer.oauth.tokens import (
    PresentedToken,
    is_platform_tenant,
)
from issuer.openapi import ClientAuthForm
from issuer.services import Services
from issuer.store.bounds import bounded
from issuer.store.models import AuditEventRow
from issuer.store.records import ClientRecord


async def _introspect(services: Services, request: Request, caller: ClientRecord,
                      call: _Request) -> Response:
    presented: PresentedToken | None = call.presented
    # Only a foreign token needs to know whether the caller speaks for the platform.
    call.caller_platform = (presented is not None and presented.tenant_id != caller.tenant_id
                            and await bounded(is_platform_tenant(services.engine,
                                                                 caller.tenant_id)))
    body = services.authorization_server.introspection.respond(call)
    services.metrics.introspections.labels("true" if body.get("active") is True else "false").inc()
    if body.get("active") is True:
        assert presented is not None
        await services.writer.write([(AuditEventRow.__table__,
                                      _used_event(services, request, caller, presented))])
    return Response(json.dumps(body, separators=(",", ":")), status_code=200,
                    media_type="application/json", headers=NO_STORE)


introspect = client_endpoint("introspection", _introspect)


def _used_event(services: Services, request: Request, caller: ClientRecord,
                token: PresentedToken) -> dict[str, Any]:
    """``M2M_TOKEN_USED`` (severity low): in the token's tenant's log, the caller as actor."""
    return audit_row(
        AuditEvent.M2M_TOKEN_USED, at=services.clock.now(), actor=caller.client_id,
        tenant_id=token.tenant_id, client_id=token.client_id,
        source=request_source(request), request_id=request_id(request),
        details={"jti": token.jti, "via": "introspection",
                 "caller_client_id": caller.client_id, "caller_tenant_id": caller.tenant_id},
    )


# OpenAPI -------------------------------------------------------------------------------


class IntrospectionForm(ClientAuthForm):
    """RFC 7662 §2.1 introspection request (form-encoded)."""

    token: str = Field(description="the access token to introspect")
    token_type_hint: str | None = Field(
        default=None, description="accepted and ignored: every token here is an access token")


class IntrospectionResponse(ResponseModel):
    """RFC 7662 §2.2. An inactive token is ``{"active": false}`` and nothing else."""

    active: bool
    scope: str | None = None
    client_id: str | None = None
    sub: str | None = None
    aud: str | list[str] | None = None
    iss: str | None = None
    exp: int | None = None
    iat: int | None = None
    nbf: int | None = None
    jti: str | None = None
    token_type: str | None = Field(default=None, examples=["Bearer"])
    tenant_id: str | None = None


endpoints: list[Endpoint] = [
    Endpoint("POST", "/introspect", introspect, "Introspect an access token (RFC 7662)",
             "oauth", request=IntrospectionForm, response=IntrospectionResponse, auth="client",
             form=True, errors=(400, 401, 429, 503)),
]
