"""``GET /api/v1/audit-events``: the audit log as a product.

Filters: ``event``, ``severity``, ``client_id``, ``since`` (inclusive) and
``until`` (exclusive), RFC 3339 date-times with their zone; newest first;
``?cursor=`` pages on, stable while events keep being recorded
(``issuer.store.audit_events``). A tenant's admin sees its own tenant's events
only (``tenant_id`` is forced to it); a platform admin sees every event, including
those of no tenant (signing keys, requests from unknown clients), and may filter
with ``tenant_id``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, create_model
from starlette.requests import Request
from starlette.responses import Response

from issuer import audit
from issuer.admin.auth import ADMIN, require
from issuer.admin.handlers import OBJECT_ID, parse_query, services
from issuer.admin.http import (
    Endpoint,
    RequestModel,
    ResponseModel,
    json_response,
    read_cursor,
)
from issuer.audit import AuditQuery
from issuer.store import audit_events

TAG = "audit"
PATH = "/api/v1/audit-events"

#: RFC 3339 §5.6 date-time, the zone included (what OpenAPI's "date-time" means).
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _date_time(value: Any) -> Any:
    """A query's text as a time: RFC 3339 only (not a number, not a bare date)."""
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        raise ValueError("an RFC 3339 date-time with its zone, e.g. 2026-12-01T00:00:00Z")
    try:  # in UTC, as the database compares it (year 1 to 9999)
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None


Timestamp = Annotated[datetime, BeforeValidator(_date_time)]


class AuditEventsQuery(RequestModel):
    """The filters; ``event`` is one of the app's vocabulary (:func:`query_model`)."""

    event: str | None = Field(None, description="Only this event")
    severity: Literal["low", "medium", "high"] | None = None
    client_id: str | None = Field(None, max_length=64, pattern=OBJECT_ID)
    tenant_id: str | None = Field(None, max_length=64, pattern=OBJECT_ID,
                                  description="Platform admins: only this tenant's events")
    since: Timestamp | None = Field(None, description="RFC 3339; events at or after")
    until: Timestamp | None = Field(None, description="RFC 3339; events before")
    cursor: str | None = Field(None, max_length=512, description="next_cursor of the last page")
    limit: int = Field(50, ge=1, le=200)


class AuditEventItem(ResponseModel):
    id: int
    at: str = Field(description="ISO 8601, UTC, milliseconds")
    event: str
    severity: Literal["low", "medium", "high"]
    actor: str | None = Field(description="who acted: the client, or the admin's client")
    tenant_id: str | None
    client_id: str | None
    source: str | None = Field(description="the caller's address")
    request_id: str | None
    details: dict[str, Any] = Field(description="identifiers and reasons; never a secret")


class AuditEventPage(ResponseModel):
    items: list[AuditEventItem]
    next_cursor: str | None


def query_model(events: Sequence[str]) -> type[AuditEventsQuery]:
    """The filters of an app whose audit vocabulary is ``events`` (the core's and its
    connectors', ``issuer.audit.vocabulary``): any other ``event`` is a 422."""
    name = Literal[tuple(events)]  # type: ignore[valid-type]  # built at run time
    model: type[AuditEventsQuery] = create_model(
        "AuditEventsQuery", __base__=AuditEventsQuery,
        event=(name | None, Field(None, description="Only this event")))  # type: ignore[arg-type]  # `name` is built at run time
    return model


async def list_audit_events(request: Request, query_model: type[AuditEventsQuery]) -> Response:
    principal = await require(request, ADMIN)
    params = parse_query(request, query_model)
    tenant_id = params.tenant_id if principal.platform else principal.tenant_id
    query = AuditQuery(tenant_id=tenant_id, event=params.event, severity=params.severity,
                       client_id=params.client_id, since=params.since, until=params.until)
    after = read_cursor(audit_events.ORDER, params.cursor)
    async with services(request).engine.connect() as connection:
        page = await audit_events.page(connection, query, after=after, limit=params.limit)
    return json_response({"items": [audit.event_json(row) for row in page.items],
                          "next_cursor": page.next_cursor})


def endpoints(events: Sequence[str]) -> list[Endpoint]:
    """The endpoint of an app whose audit vocabulary is ``events``."""
    query = query_model(events)

    async def handler(request: Request) -> Response:
        return await list_audit_events(request, query)

    return [Endpoint("GET", PATH, handler, "Audit events, newest first (a tenant admin sees "
                     "its tenant's)", TAG, query=query, response=AuditEventPage,
                     roles=(ADMIN,), errors=(401, 403, 422))]
