"""A tenant's trusted issuers: ``/api/v1/trusted-issuers``.

An external token issuer (a Kubernetes cluster, a CI system, a SPIFFE trust domain)
whose tokens may authenticate the tenant's clients that name it in a federated
credential (``federated_jwt``, ``issuer.oauth.federation``). Roles and tenant
isolation as for clients: platform admins reach every tenant's, a tenant admin its
own tenant's, and another tenant's trusted issuer answers 404 like a missing one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from issuer import trusted_issuers
from issuer.admin.auth import ADMIN, require
from issuer.admin.clients import VISIBLE
from issuer.admin.handlers import (
    OBJECT_ID,
    PageQuery,
    PatchModel,
    actor,
    iso,
    listed_tenant,
    object_id,
    parse_query,
    registration_errors,
    services,
    transaction,
)
from issuer.admin.http import (
    Endpoint,
    RequestModel,
    ResponseModel,
    json_response,
    page_limit,
    parse_body,
    read_cursor,
)
from issuer.errors import NO_STORE, NotFound
from issuer.store import tenants
from issuer.store import trusted_issuers as store
from issuer.store.records import TrustedIssuerRecord

TAG = "trusted-issuers"
Url = Annotated[str, StringConstraints(min_length=1, max_length=trusted_issuers.MAX_URL_LENGTH,
                                       pattern=rf"^https?://{VISIBLE}+$")]
Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                    "ES512", "EdDSA"]
MaxTokenAge = Annotated[int, Field(ge=trusted_issuers.MIN_MAX_TOKEN_AGE,
                                   le=trusted_issuers.MAX_MAX_TOKEN_AGE,
                                   description="seconds: an external token issued (iat) "
                                               "longer ago is refused")]
Status = Literal["active", "disabled"]
_ISSUER = ("the external tokens' iss, compared exactly (https; http is accepted outside "
           "production)")
_JWKS_URI = ("where the issuer's public JWK Set is served; default: the jwks_uri of "
             "{issuer}/.well-known/openid-configuration")


class TrustedIssuerCreate(RequestModel):
    model_config = ConfigDict(strict=True)

    tenant_id: str | None = Field(None, pattern=OBJECT_ID,
                                  description="default: the caller's tenant")
    issuer: Url = Field(description=_ISSUER)
    jwks_uri: Url | None = Field(None, description=_JWKS_URI)
    allowed_algorithms: list[Algorithm] = Field(
        ["RS256", "ES256"], min_length=1, max_length=10,
        description="asymmetric JWS algorithms the external tokens may be signed with")
    max_token_age: MaxTokenAge = trusted_issuers.DEFAULT_MAX_TOKEN_AGE
    status: Status = "active"


class TrustedIssuerPatch(PatchModel):
    """Left-out fields keep their value; a null ``jwks_uri`` means discovery."""

    not_null = ("issuer", "allowed_algorithms", "max_token_age", "status")

    issuer: Url | None = Field(None, description=_ISSUER)
    jwks_uri: Url | None = Field(None, description=_JWKS_URI)
    allowed_algorithms: list[Algorithm] | None = Field(None, min_length=1, max_length=10)
    max_token_age: MaxTokenAge | None = None
    status: Status | None = None


class TrustedIssuerQuery(PageQuery):
    tenant_id: str | None = Field(
        None, description="only this tenant's trusted issuers (an impossible id: 404)")


class TrustedIssuer(ResponseModel):
    id: str
    tenant_id: str
    issuer: str
    jwks_uri: str | None
    allowed_algorithms: list[str]
    max_token_age: int
    status: Status
    created_at: str = Field(description="ISO 8601, UTC")
    updated_at: str = Field(description="ISO 8601, UTC")


class TrustedIssuerPage(ResponseModel):
    items: list[TrustedIssuer]
    next_cursor: str | None


def _allow_http(request: Request) -> bool:
    return not services(request).settings.production


async def create_trusted_issuer(request: Request) -> Response:
    principal = await require(request, ADMIN)
    body = await parse_body(request, TrustedIssuerCreate)
    tenant_id = body.tenant_id or principal.tenant_id
    principal.check_tenant(tenant_id)
    with registration_errors():
        async with transaction(request) as session:
            record = await trusted_issuers.create_trusted_issuer(
                session, tenant_id, issuer=body.issuer, jwks_uri=body.jwks_uri,
                allowed_algorithms=body.allowed_algorithms, max_token_age=body.max_token_age,
                status=body.status, clock=services(request).clock,
                actor=actor(request, principal), allow_http=_allow_http(request))
    response = json_response(trusted_issuer_json(record), 201)
    response.headers["Location"] = f"{PATH}/{record.id}"
    return response


async def list_trusted_issuers(request: Request) -> Response:
    """Platform admins page through every tenant's (or one tenant's); a tenant admin
    through its own tenant's."""
    principal = await require(request, ADMIN)
    query = parse_query(request, TrustedIssuerQuery)
    limit = page_limit(request)
    after = read_cursor(store.ORDER, query.cursor)
    tenant_id = listed_tenant(request, principal)
    async with AsyncSession(services(request).engine) as session:
        if tenant_id is not None and await tenants.get(session, tenant_id) is None:
            raise NotFound(reason="unknown_tenant")
        page = await store.page(session, after=after, limit=limit, tenant_id=tenant_id)
    return json_response({"items": [trusted_issuer_json(record) for record in page.items],
                          "next_cursor": page.next_cursor})


async def get_trusted_issuer(request: Request) -> Response:
    principal = await require(request, ADMIN)
    async with AsyncSession(services(request).engine) as session:
        record = await store.get(session, object_id(request.path_params["trusted_issuer_id"]))
    if record is None or not principal.sees(record.tenant_id):
        raise NotFound(reason="unknown_or_other_tenant_trusted_issuer")
    return json_response(trusted_issuer_json(record))


async def update_trusted_issuer(request: Request) -> Response:
    principal = await require(request, ADMIN)
    body = await parse_body(request, TrustedIssuerPatch)
    trusted_issuer_id = object_id(request.path_params["trusted_issuer_id"])
    with registration_errors():
        async with transaction(request) as session:
            record = await trusted_issuers.update_trusted_issuer(
                session, trusted_issuer_id, body.model_dump(exclude_unset=True),
                services(request).clock, actor(request, principal),
                allow_http=_allow_http(request), visible=principal.sees)
    return json_response(trusted_issuer_json(record))


async def delete_trusted_issuer(request: Request) -> Response:
    """The issuer is no longer trusted: credentials naming it authenticate nobody."""
    principal = await require(request, ADMIN)
    trusted_issuer_id = object_id(request.path_params["trusted_issuer_id"])
    with registration_errors():
        async with transaction(request) as session:
            await trusted_issuers.delete_trusted_issuer(
                session, trusted_issuer_id, services(request).clock,
                actor(request, principal), visible=principal.sees)
    return Response(status_code=204, headers=NO_STORE)


def trusted_issuer_json(record: TrustedIssuerRecord) -> dict[str, Any]:
    """The documented shape, checked."""
    return TrustedIssuer.model_validate({
        "id": record.id, "tenant_id": record.tenant_id, "issuer": record.issuer,
        "jwks_uri": record.jwks_uri, "allowed_algorithms": list(record.allowed_algorithms),
        "max_token_age": record.max_token_age, "status": record.status,
        "created_at": iso(record.created_at), "updated_at": iso(record.updated_at),
    }).model_dump(mode="json")


PATH = "/api/v1/trusted-issuers"
ITEM = "/api/v1/trusted-issuers/{trusted_issuer_id}"

endpoints: list[Endpoint] = [
    Endpoint("POST", PATH, create_trusted_issuer, "Trust an external token issuer for a "
             "tenant's federated credentials", TAG, status=201, request=TrustedIssuerCreate,
             response=TrustedIssuer, roles=(ADMIN,), errors=(400, 401, 403, 404, 409, 422)),
    Endpoint("GET", PATH, list_trusted_issuers, "List trusted issuers (a tenant admin sees "
             "its tenant's)", TAG, query=TrustedIssuerQuery, response=TrustedIssuerPage,
             roles=(ADMIN,), errors=(401, 403, 404, 422)),
    Endpoint("GET", ITEM, get_trusted_issuer, "Show a trusted issuer", TAG,
             response=TrustedIssuer, roles=(ADMIN,), errors=(401, 403, 404)),
    Endpoint("PATCH", ITEM, update_trusted_issuer, "Change a trusted issuer", TAG,
             request=TrustedIssuerPatch, response=TrustedIssuer, roles=(ADMIN,),
             errors=(400, 401, 403, 404, 409, 422)),
    Endpoint("DELETE", ITEM, delete_trusted_issuer, "Stop trusting an issuer", TAG,
             status=204, roles=(ADMIN,), errors=(401, 403, 404, 409)),
]
