"""Tenants: ``/api/v1/tenants`` (DESIGN §4.1, §4.5; issue 3 item 3).

Creating and changing tenants is the platform admin's; a tenant admin reads its
own tenant only, and another tenant answers 404 exactly like a missing one.
Disabling a tenant refuses its clients at ``POST /token`` (RFC 6749 §5.2
``invalid_client``) and its live tokens at the admin API at once; this process
forgets its cached clients, other processes within the client-cache TTL.

The helpers at the end (transaction, actor, error mapping, pagination) are shared
with :mod:`issuer.admin.clients`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, StringConstraints, ValidationInfo, field_validator
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from issuer import registration
from issuer.admin.auth import ADMIN, Principal, require, require_platform
from issuer.admin.http import (
    InvalidBody,
    Operation,
    RequestModel,
    ResponseModel,
    decode_cursor,
    encode_cursor,
    json_response,
    page_limit,
    parse_body,
)
from issuer.clock import utc
from issuer.errors import Conflict, InsufficientScope, InvalidRequest, NotFound
from issuer.services import Services
from issuer.store import clients as queries
from issuer.store.records import TenantRecord

TAG = "tenants"
#: Text a person reads: no control characters (PostgreSQL refuses NUL in text).
TEXT = r"^[^\x00-\x1F\x7F]*$"
#: What our identifiers look like (uuid4 tenants, ``m2m_...`` clients).
OBJECT_ID = r"^[A-Za-z0-9_.:-]{1,64}$"
TenantName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT)]
Status = Literal["active", "disabled"]


def _patch_schema(schema: dict[str, Any], model: type[Any]) -> None:
    """A left-out field keeps its value, so none has a default; ``not_null`` ones
    are not nullable."""
    for name, field in schema.get("properties", {}).items():
        field.pop("default", None)
        if name in model.not_null and "anyOf" in field:
            kept = [branch for branch in field.pop("anyOf") if branch != {"type": "null"}]
            if len(kept) == 1:
                field.update(kept[0])
            else:
                field["anyOf"] = kept


class PatchModel(RequestModel):
    """A merge-patch body: a left-out field keeps its value, null resets a nullable
    one; the fields in ``not_null`` may be left out but not set to null."""

    model_config = ConfigDict(strict=True, json_schema_extra=_patch_schema)
    not_null: ClassVar[tuple[str, ...]] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name in cls.not_null:
            raise ValueError("may be left out but not null")
        return value


class TenantCreate(RequestModel):
    model_config = ConfigDict(strict=True)

    name: TenantName


class TenantPatch(PatchModel):
    """Rename a tenant, or disable or enable it; left-out fields keep their value."""

    not_null = ("name", "status")

    name: TenantName | None = None
    status: Status | None = None


class PageQuery(RequestModel):
    cursor: str | None = Field(None, description="next_cursor of the previous page")
    limit: int = Field(50, ge=1, le=200)


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
    limit, after = page_params(request)
    async with AsyncSession(services(request).engine) as session:
        records, next_key = await queries.tenant_page(
            session, after=after, limit=limit,
            tenant_id=None if principal.platform else principal.tenant_id)
    return json_response(page_json([tenant_json(record) for record in records], next_key))


async def get_tenant(request: Request) -> Response:
    principal = await require(request, ADMIN)
    tenant_id = object_id(request.path_params["tenant_id"])
    principal.check_tenant(tenant_id)
    async with AsyncSession(services(request).engine) as session:
        record = await queries.get_tenant(session, tenant_id)
    if record is None:
        raise NotFound(reason="unknown_tenant")
    return json_response(tenant_json(record))


async def update_tenant(request: Request) -> Response:
    principal = await require(request, ADMIN)
    tenant_id = object_id(request.path_params["tenant_id"])
    principal.check_tenant(tenant_id)  # another tenant: 404 before 403 (DESIGN §4.5)
    if not principal.platform:
        raise InsufficientScope(ADMIN)
    body = await parse_body(request, TenantPatch)
    with registration_errors():
        async with transaction(request) as session:
            record = await registration.update_tenant(
                session, tenant_id, body.model_dump(exclude_unset=True),
                services(request).clock, actor(request, principal))
    services(request).clients.forget_tenant(tenant_id)
    return json_response(tenant_json(record))


def tenant_json(record: TenantRecord) -> dict[str, Any]:
    """The documented shape, checked: a drift from the schema fails here, not later."""
    return Tenant.model_validate({
        "tenant_id": record.id, "name": record.name, "status": record.status,
        "created_at": iso(record.created_at)}).model_dump(mode="json")


# Shared with issuer.admin.clients -------------------------------------------------


def services(request: Request) -> Services:
    found: Services = request.state.services
    return found


def actor(request: Request, principal: Principal) -> registration.Actor:
    """The audit context of a change: the admin's client, its address, the request id."""
    request_id = request.scope.get("request_id")
    return registration.Actor(
        client_id=principal.client_id,
        source=request.client.host if request.client else None,
        request_id=request_id if isinstance(request_id, str) else None,
    )


@asynccontextmanager
async def transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction: the change and its audit event commit together or not at all."""
    async with AsyncSession(services(request).engine, expire_on_commit=False) as session, \
            session.begin():
        yield session


@contextmanager
def registration_errors() -> Iterator[None]:
    """Registration's refusals as the error table's rows."""
    try:
        yield
    except registration.UnknownObject as error:
        raise NotFound(reason=str(error)) from None
    except registration.RegistrationConflict as error:
        raise Conflict(str(error)) from None
    except registration.RegistrationError as error:
        raise InvalidRequest(str(error)) from None


def object_id(value: str) -> str:
    """An identifier from a URL: one that cannot be ours names nothing (404), and never
    reaches the database (where a NUL would be an error, not a miss)."""
    if not re.match(OBJECT_ID, value):
        raise NotFound(reason="malformed_id")
    return value


def page_params(request: Request) -> tuple[int, queries.PageKey | None]:
    """``?limit=`` and ``?cursor=``; a 422 naming the parameter when malformed."""
    limit = page_limit(request)
    try:
        key = queries.page_key(decode_cursor(request.query_params.get("cursor")))
        if key is not None and not re.match(OBJECT_ID, key[1]):
            raise ValueError("malformed cursor")
        return limit, key
    except ValueError:
        raise InvalidBody(details={"errors": [{"field": "cursor",
                                               "message": "malformed"}]}) from None


def page_json(items: list[dict[str, Any]], next_key: list[str] | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": encode_cursor(*next_key) if next_key else None}


def iso(timestamp: float) -> str:
    return utc(timestamp).isoformat(timespec="seconds").replace("+00:00", "Z")


PATH = "/api/v1/tenants"
ITEM = "/api/v1/tenants/{tenant_id}"

routes: list[BaseRoute] = [
    Route(PATH, create_tenant, methods=["POST"]),
    Route(PATH, list_tenants, methods=["GET"]),
    Route(ITEM, get_tenant, methods=["GET"]),
    Route(ITEM, update_tenant, methods=["PATCH"]),
]

operations: list[Operation] = [
    Operation("POST", PATH, "Create a tenant (platform admin)", TAG, status=201,
              request=TenantCreate, response=Tenant, errors=(400, 401, 403, 409, 422)),
    Operation("GET", PATH, "List tenants (a tenant admin sees its own)", TAG, query=PageQuery,
              response=TenantPage, errors=(401, 403, 422)),
    Operation("GET", ITEM, "Show a tenant", TAG, response=Tenant, errors=(401, 403, 404)),
    Operation("PATCH", ITEM, "Rename, disable or enable a tenant (platform admin)", TAG,
              request=TenantPatch, response=Tenant, errors=(400, 401, 403, 404, 409, 422)),
]
