"""Tenants: ``/api/v1/tenants``.

Creating and changing tenants is the platform admin's; a tenant admin reads its
own tenant only, and another tenant answers 404 exactly like a missing one. A name
that is the same as another's once normalized (``ACME`` beside ``acme``) is a 409; one
with invisible or control characters, or mixing scripts, a 422 (``issuer.tenant_names``).
Disabling a tenant refuses its clients at ``POST /token`` (RFC 6749 §5.2
``invalid_client``) in every process within about a second (``issuer.changes``), and
its tokens at introspection and the admin API at once -- for good: tokens issued
before a disable stay inactive after a re-enable (``tokens_valid_after``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from issuer import changes, registration, tenant_names
from issuer.admin.auth import ADMIN, require, require_platform
from issuer.admin.handlers import (
    TEXT,
    PageQuery,
    PatchModel,
    actor,
    iso,
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
from issuer.errors import InsufficientScope, NotFound
from issuer.store import tenants
from issuer.store.records import TenantRecord

TAG = "tenants"
#: Refused: invisible and control characters, mixed scripts (``issuer.tenant_names``).
TenantName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT),
                       AfterValidator(tenant_names.check),
                       Field(description="no invisible or control characters, one script "
                             "(Latin may mix with Han, kana, Bopomofo, Hangul); unique after "
                             "NFKC, case folding and without accents")]
Status = Literal["active", "disabled"]


class TenantCreate(RequestModel):
    model_config = ConfigDict(strict=True)

    name: TenantName


class TenantPatch(PatchModel):
    """Rename a tenant, or disable or enable it; left-out fields keep their value."""

    not_null = ("name", "status")

    name: TenantName | None = None
    status: Status | None = None


class Tenant(ResponseModel):
    tenant_id: str
    name: str
    status: Status
    created_at: str = Field(description="ISO 8601, UTC")


class TenantPage(ResponseModel):
    items: list[Tenant]
    next_cursor: str | None


async def create_tenant(request: Request) -> Response:
    principal = await require_platform(request)
    body = await parse_body(request, TenantCreate)
    with registration_errors():
        async with transaction(request) as session:
            record = await registration.register_tenant(
                session, body.name, services(request).clock, actor(request, principal))
    response = json_response(tenant_json(record), 201)
    response.headers["Location"] = f"/api/v1/tenants/{record.id}"
    return response


async def list_tenants(request: Request) -> Response:
    """Platform admins page through every tenant; a tenant admin sees its own."""
    principal = await require(request, ADMIN)
    query = parse_query(request, PageQuery)
    limit = page_limit(request)
    after = read_cursor(tenants.ORDER, query.cursor)
    async with AsyncSession(services(request).engine) as session:
        page = await tenants.page(session, after=after, limit=limit,
                                  tenant_id=None if principal.platform else principal.tenant_id)
    return json_response({"items": [tenant_json(record) for record in page.items],
                          "next_cursor": page.next_cursor})


async def get_tenant(request: Request) -> Response:
    principal = await require(request, ADMIN)
    tenant_id = object_id(request.path_params["tenant_id"])
    principal.check_tenant(tenant_id)
    async with AsyncSession(services(request).engine) as session:
        record = await tenants.get(session, tenant_id)
    if record is None:
        raise NotFound(reason="unknown_tenant")
    return json_response(tenant_json(record))


async def update_tenant(request: Request) -> Response:
    principal = await require(request, ADMIN)
    tenant_id = object_id(request.path_params["tenant_id"])
    principal.check_tenant(tenant_id)  # another tenant: 404 before 403
    if not principal.platform:
        raise InsufficientScope(ADMIN, dpop=principal.dpop)
    body = await parse_body(request, TenantPatch)
    with registration_errors():
        async with transaction(request) as session:
            record = await registration.update_tenant(
                session, tenant_id, body.model_dump(exclude_unset=True),
                services(request).clock, actor(request, principal))
            await changes.record(session, changes.tenant_changed(tenant_id))
    return json_response(tenant_json(record))


def tenant_json(record: TenantRecord) -> dict[str, Any]:
    """The documented shape, checked: a drift from the schema fails here, not later."""
    return Tenant.model_validate({
        "tenant_id": record.id, "name": record.name, "status": record.status,
        "created_at": iso(record.created_at)}).model_dump(mode="json")


PATH = "/api/v1/tenants"
ITEM = "/api/v1/tenants/{tenant_id}"

endpoints: list[Endpoint] = [
    Endpoint("POST", PATH, create_tenant, "Create a tenant (platform admin)", TAG, status=201,
             request=TenantCreate, response=Tenant, roles=(ADMIN,),
             errors=(400, 401, 403, 409, 422)),
    Endpoint("GET", PATH, list_tenants, "List tenants (a tenant admin sees its own)", TAG,
             query=PageQuery, response=TenantPage, roles=(ADMIN,), errors=(401, 403, 422)),
    Endpoint("GET", ITEM, get_tenant, "Show a tenant", TAG, response=Tenant, roles=(ADMIN,),
             errors=(401, 403, 404)),
    Endpoint("PATCH", ITEM, update_tenant, "Rename, disable or enable a tenant (platform "
             "admin)", TAG, request=TenantPatch, response=Tenant, roles=(ADMIN,),
             errors=(400, 401, 403, 404, 409, 422)),
]
