"""Plumbing shared by the admin API's handlers: the transaction of a change, its
audit context, registration's refusals as error-table rows, identifiers from URLs,
keyset pagination, merge-patch bodies."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError
from starlette.requests import Request

from issuer import registration
from issuer.admin.auth import Principal
from issuer.admin.http import (
    InvalidBody,
    RequestModel,
    decode_cursor,
    encode_cursor,
    page_limit,
    validation_problems,
    without_null,
)
from issuer.clock import utc
from issuer.errors import Conflict, InvalidRequest, NotFound
from issuer.services import Services, services_of
from issuer.store import clients as queries

Q = TypeVar("Q", bound=BaseModel)

#: Text a person reads: no control characters (PostgreSQL refuses NUL in text).
TEXT = r"^[^\x00-\x1F\x7F]*$"
#: What our identifiers look like (uuid4 tenants, ``m2m_...`` clients).
OBJECT_ID = r"^[A-Za-z0-9_.:-]{1,64}$"

def _patch_schema(schema: dict[str, Any], model: type[Any]) -> None:
    """A left-out field keeps its value, so none has a default; ``not_null`` ones
    are not nullable."""
    for name, field in schema.get("properties", {}).items():
        field.pop("default", None)
        if name in model.not_null:
            without_null(field)


class PatchModel(RequestModel):
    """A merge-patch body: a left-out field keeps its value, null resets a nullable
    one; the fields in ``not_null`` may be left out but not set to null."""

    model_config = ConfigDict(strict=True, json_schema_extra=_patch_schema)


class PageQuery(RequestModel):
    cursor: str | None = Field(None, description="next_cursor of the previous page")
    limit: int = Field(50, ge=1, le=200)


def services(request: Request) -> Services:
    """The core's services, typed (``issuer.services.services_of``)."""
    return services_of(request)


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
    """One transaction: the change and its audit event commit together or not at all.

    SQLite has no row locks (``SELECT ... FOR UPDATE`` is a no-op there, and the driver
    opens a transaction only at the first write), so the transaction takes the
    database's write lock first: a row it reads cannot change before it writes.
    The client and tenant changes it recorded (``issuer.changes.record``) are announced
    after the commit: at once in this process, within about a second in the others."""
    async with AsyncSession(services(request).engine, expire_on_commit=False) as session:
        async with session.begin():
            if session.get_bind().dialect.name == "sqlite":
                await session.execute(text("BEGIN IMMEDIATE"))
            yield session
        await services(request).notices.published(session)


@contextmanager
def registration_errors() -> Iterator[None]:
    """Registration's refusals as the error table's rows; a row that another request
    changed or deleted between this one's read and its write (SQLite takes no row
    lock) is a 409, to be retried."""
    try:
        yield
    except StaleDataError:
        raise Conflict("the object was changed by another request at the same time; "
                       "try again", reason="concurrent_change") from None
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


def listed_tenant(request: Request, principal: Principal) -> str | None:
    """The tenant a listing is limited to: ``?tenant_id=`` if the caller may see it (else
    404), else the caller's own -- or None, every tenant, for a platform admin."""
    tenant_id = request.query_params.get("tenant_id") or None
    if tenant_id is not None:
        principal.check_tenant(object_id(tenant_id))
        return tenant_id
    return None if principal.platform else principal.tenant_id


def page_params(request: Request) -> tuple[int, queries.PageKey | None]:
    """``?limit=`` and ``?cursor=``; a 422 naming the parameter when malformed."""
    limit = page_limit(request)
    try:
        key = queries.page_key(decode_cursor(request.query_params.get("cursor")))
        if key is not None and not re.match(OBJECT_ID, key[1]):
            raise ValueError("malformed cursor")
        if key is not None:  # a time the database can hold (year 1..9999 in UTC)
            key = (key[0].astimezone(UTC), key[1])
        return limit, key
    except (ValueError, OverflowError):
        raise InvalidBody(details={"errors": [{"field": "cursor",
                                               "message": "malformed"}]}) from None


def page_json(items: list[dict[str, Any]], next_key: list[str] | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": encode_cursor(*next_key) if next_key else None}


def iso(timestamp: float) -> str:
    return utc(timestamp).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_query(request: Request, model: type[Q]) -> Q:
    """Query parameters as ``model``: a 422 naming each bad one. A repeated one is
    refused; an empty one is a value like any other (``?clientId=`` is not absent)."""
    params = request.query_params
    problems = [{"field": name, "message": "given more than once"}
                for name in dict.fromkeys(params.keys()) if len(params.getlist(name)) > 1]
    if problems:
        raise InvalidBody(details={"errors": problems})
    try:
        return model.model_validate(dict(params.items()))
    except ValidationError as error:
        raise InvalidBody(details={"errors": validation_problems(error)}) from None
