"""ERP connections and pushes over HTTP.

``/api/v1/connectors/{connector}`` creates a connection of a registered type (its
slug: ``dropzone-json-v1``, ``mock``); the body is the connector's config, flat, plus
``org_id`` (platform admins; default the caller's tenant) and ``test_on_save``.
Config problems are 400 naming the field; malformed JSON is 422 as
elsewhere. No answer carries a config or a credential. Admin or
integrator of the org only; another org's connection or export is 404.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from connectors.erp import store
from connectors.erp.models import DraftOrder, DropzoneConfig
from connectors.erp.service import TEST_PASSED, ErpServices
from connectors.erp.state import ERP_SERVICES
from issuer.admin.auth import ADMIN, INTEGRATOR, Principal, require_connector_role
from issuer.admin.handlers import (
    OBJECT_ID,
    PageQuery,
    actor,
    iso,
    page_json,
    page_params,
    parse_query,
)
from issuer.admin.http import Endpoint, RequestModel, ResponseModel, json_response, parse_body
from issuer.errors import NotFound

TAG = "erp-connectors"
Status = Literal["ACTIVE", "DISABLED"]


class _Envelope(RequestModel):
    """What every connector body carries besides the config (kept in ``model_extra``)."""

    model_config = ConfigDict(extra="allow", strict=True)

    org_id: str | None = Field(None, pattern=OBJECT_ID,
                               description="platform admins: the org; default the caller's")


class _Patch(RequestModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _CreateEnvelope(_Envelope):
    test_on_save: bool = False


class _PushRequest(RequestModel):
    org_id: str | None = Field(None, pattern=OBJECT_ID,
                               description="platform admins: the org; default the caller's")
    draft_order: DraftOrder


class DropzoneCreate(DropzoneConfig):
    """DROPZONE_JSON_V1 connection (documentation of the flat body)."""

    org_id: str | None = Field(None, pattern=OBJECT_ID,
                               description="platform admins: the org; default the caller's")
    test_on_save: bool = Field(False, description="test first; on failure nothing is saved")


class DropzoneTest(DropzoneConfig):
    """A config to test without saving; leave every config field out to test the org's
    active DROPZONE_JSON_V1 connection instead."""

    org_id: str | None = Field(None, pattern=OBJECT_ID)


def _optional_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Every field of ``model`` as optional with a None default, in create_model's form."""
    fields: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        assert field.annotation is not None  # a declared field always has one
        fields[name] = (field.annotation | None, None)
    return fields


DropzonePatch = create_model(  # every field optional: a merge patch of the config
    "DropzonePatch", __config__=ConfigDict(extra="forbid"), **_optional_fields(DropzoneConfig))


class TestSummary(ResponseModel):
    success: bool
    latency_ms: float


class Connection(ResponseModel):
    id: str
    org_id: str
    connector_type: str
    status: Status
    last_test_at: str | None = Field(description="last passed test (ISO 8601, UTC)")
    created_at: str
    updated_at: str


class ConnectionCreated(Connection):
    test_result: TestSummary | None = Field(None, description="with test_on_save")


class ConnectionPage(ResponseModel):
    items: list[Connection]
    next_cursor: str | None


class ConnectionQuery(PageQuery):
    org_id: str | None = Field(None, pattern=OBJECT_ID,
                               description="platform admins: one org (default: all)")


class TestPassed(ResponseModel):
    success: bool
    message: str
    latency_ms: float


class Export(ResponseModel):
    id: str
    org_id: str
    connection_id: str
    connector_type: str
    draft_order_id: str
    status: Literal["SUCCESS", "FAILED"]
    error_json: dict[str, Any] | None
    dropzone_path: str | None
    storage_key: str | None
    connector_metadata: dict[str, Any]
    created_at: str
    completed_at: str


def _erp(request: Request) -> ErpServices:
    return ERP_SERVICES(request)


def _org(principal: Principal, org_id: str | None) -> str:
    org = org_id or principal.tenant_id
    principal.check_tenant(org)
    return org


def _uuid(request: Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError:
        raise NotFound(reason="malformed_id") from None


def _connector_type(request: Request) -> str:
    slug: str = request.path_params["connector"]
    return slug.upper().replace("-", "_")


async def create_connection(request: Request) -> Response:
    principal = await require_connector_role(request)
    body = await parse_body(request, _CreateEnvelope)
    created = await _erp(request).connections.create(
        _org(principal, body.org_id), _connector_type(request), body.model_extra or {},
        test_on_save=body.test_on_save, actor=actor(request, principal))
    data = connection_json(created.connection)
    if created.test is not None:
        data["test_result"] = {"success": True, "latency_ms": created.test.latency_ms}
    response = json_response(ConnectionCreated.model_validate(data).model_dump(mode="json"), 201)
    response.headers["Location"] = f"{CONNECTIONS}/{created.connection.id}"
    return response


async def test_connection(request: Request) -> Response:
    principal = await require_connector_role(request)
    body = await parse_body(request, _Envelope)
    result = await _erp(request).connections.test(
        _org(principal, body.org_id), _connector_type(request), body.model_extra or None,
        actor=actor(request, principal))
    return json_response({"success": True, "message": TEST_PASSED,
                          "latency_ms": result.latency_ms})


async def list_connections(request: Request) -> Response:
    principal = await require_connector_role(request)
    org_id = parse_query(request, ConnectionQuery).org_id
    limit, after = page_params(request)
    if org_id is not None or not principal.platform:
        org_id = _org(principal, org_id)
    try:
        async with AsyncSession(_erp(request).engine) as session:
            records, next_key = await store.connection_page(session, org_id=org_id,
                                                            after=after, limit=limit)
    except ValueError:  # a cursor whose id is not a UUID
        raise NotFound(reason="malformed_cursor") from None
    return json_response(page_json([connection_json(record) for record in records], next_key))


async def get_connection(request: Request) -> Response:
    principal = await require_connector_role(request)
    record = await _erp(request).connections.visible(_uuid(request, "connection_id"),
                                                     principal.sees)
    return json_response(connection_json(record))


async def update_connection(request: Request) -> Response:
    principal = await require_connector_role(request)
    connection_id = _uuid(request, "connection_id")
    body = await parse_body(request, _Patch)
    record = await _erp(request).connections.update(
        connection_id, body.model_extra or {}, sees=principal.sees,
        actor=actor(request, principal))
    return json_response(connection_json(record))


def _status_change(status: str) -> Any:
    async def change(request: Request) -> Response:
        principal = await require_connector_role(request)
        record = await _erp(request).connections.set_status(
            _uuid(request, "connection_id"), status, sees=principal.sees,
            actor=actor(request, principal))
        return json_response(connection_json(record))

    return change


async def create_export(request: Request) -> Response:
    principal = await require_connector_role(request)
    body = await parse_body(request, _PushRequest)
    record = await _erp(request).pushes.push(_org(principal, body.org_id), body.draft_order,
                                             actor=actor(request, principal))
    response = json_response(export_json(record), 201)
    response.headers["Location"] = f"{EXPORTS}/{record.id}"
    return response


async def get_export(request: Request) -> Response:
    principal = await require_connector_role(request)
    record = await _erp(request).pushes.get(_uuid(request, "export_id"), sees=principal.sees)
    return json_response(export_json(record))


def connection_json(record: store.ConnectionRecord) -> dict[str, Any]:
    """The documented shape, checked: metadata only, never the config."""
    return Connection.model_validate({
        "id": str(record.id), "org_id": record.org_id, "connector_type": record.connector_type,
        "status": record.status,
        "last_test_at": iso(record.last_test_at) if record.last_test_at is not None else None,
        "created_at": iso(record.created_at), "updated_at": iso(record.updated_at),
    }).model_dump(mode="json")


def export_json(record: store.ExportRecord) -> dict[str, Any]:
    return Export.model_validate({
        "id": str(record.id), "org_id": record.org_id,
        "connection_id": str(record.connection_id), "connector_type": record.connector_type,
        "draft_order_id": str(record.draft_order_id), "status": record.status,
        "error_json": record.error_json, "dropzone_path": record.dropzone_path,
        "storage_key": record.storage_key, "connector_metadata": record.connector_metadata,
        "created_at": iso(record.created_at), "completed_at": iso(record.completed_at),
    }).model_dump(mode="json")


CONNECTIONS = "/api/v1/connectors"
CREATE = "/api/v1/connectors/{connector}"
TEST = "/api/v1/connectors/{connector}/test"
ITEM = "/api/v1/connectors/{connection_id}"
EXPORTS = "/api/v1/erp-exports"
EXPORT = "/api/v1/erp-exports/{export_id}"
DROPZONE = "/api/v1/connectors/dropzone-json-v1"

_ERRORS = (400, 401, 403, 404, 409, 422)
#: Admins and integrators of the org.
_ROLES = (ADMIN, INTEGRATOR)
#: In the order the routes match; ``{connector}`` is documented as the dropzone's slug.
endpoints: list[Endpoint] = [
    Endpoint("GET", CONNECTIONS, list_connections, "List connections (never their config)",
             TAG, query=ConnectionQuery, response=ConnectionPage, roles=_ROLES,
             errors=(401, 403, 404, 422)),
    Endpoint("POST", CREATE, create_connection, "Create the org's DROPZONE_JSON_V1 "
             "connection (ACTIVE; one active per org)", TAG, status=201,
             request=DropzoneCreate, response=ConnectionCreated, roles=_ROLES,
             errors=_ERRORS, documented_path=DROPZONE),
    Endpoint("GET", ITEM, get_connection, "Show a connection (never its config)", TAG,
             response=Connection, roles=_ROLES, errors=(401, 403, 404)),
    Endpoint("PATCH", ITEM, update_connection, "Change a connection's config (merge patch; "
             "re-encrypted)", TAG, request=DropzonePatch, response=Connection, roles=_ROLES,
             errors=_ERRORS),
    Endpoint("POST", TEST, test_connection, "Test a dropzone config, or the org's active "
             "dropzone connection: write and delete a test file", TAG, request=DropzoneTest,
             response=TestPassed, roles=_ROLES, errors=_ERRORS,
             documented_path=f"{DROPZONE}/test"),
    Endpoint("POST", f"{ITEM}/disable", _status_change(store.DISABLED), "Disable a "
             "connection", TAG, response=Connection, roles=_ROLES,
             errors=(401, 403, 404, 409)),
    Endpoint("POST", f"{ITEM}/enable", _status_change(store.ACTIVE), "Enable a connection "
             "(409 if another is active)", TAG, response=Connection, roles=_ROLES,
             errors=(401, 403, 404, 409)),
    Endpoint("POST", EXPORTS, create_export, "Push a draft order through the org's active "
             "connection (status SUCCESS or FAILED)", TAG, status=201, request=_PushRequest,
             response=Export, roles=_ROLES, errors=_ERRORS),
    Endpoint("GET", EXPORT, get_export, "Show an export", TAG, response=Export, roles=_ROLES,
             errors=(401, 403, 404)),
]
