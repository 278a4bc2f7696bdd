"""The connectors' repository: rows in, frozen :class:`ConnectorRecord` out."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.netsuite.connector import ConnectorRecord
from connectors.netsuite.tables import NetSuiteConnectorRow
from issuer.clock import utc
from issuer.store.clients import PageKey, key_values, keyset

_TIMES = ("certificate_expires_at", "rotation_initiated_at", "retiring_certificate_revoke_at",
          "created_at", "updated_at")


def record(row: NetSuiteConnectorRow) -> ConnectorRecord:
    values: dict[str, Any] = {name: getattr(row, name)
                              for name in ConnectorRecord.__dataclass_fields__}
    for name in _TIMES:
        value: datetime | None = values[name]
        values[name] = value.timestamp() if value is not None else None
    values["scopes"] = tuple(values["scopes"])
    return ConnectorRecord(**values)


async def insert(session: AsyncSession, tenant_id: str, columns: Mapping[str, Any],
                 now: float) -> ConnectorRecord:
    row = NetSuiteConnectorRow(id=str(uuid.uuid4()), tenant_id=tenant_id,
                               created_at=utc(now), updated_at=utc(now), **columns)
    session.add(row)
    await session.flush()
    return record(row)


async def get(session: AsyncSession, connector_id: str, *,
              for_update: bool = False) -> ConnectorRecord | None:
    statement = select(NetSuiteConnectorRow).where(NetSuiteConnectorRow.id == connector_id)
    if for_update:
        statement = statement.with_for_update()
    row = (await session.execute(statement)).scalar_one_or_none()
    return record(row) if row is not None else None


async def page(session: AsyncSession, *, after: PageKey | None, limit: int,
               tenant_id: str | None) -> tuple[list[ConnectorRecord], list[str] | None]:
    """Up to ``limit`` connectors in (created_at, id) order after ``after``."""
    table = NetSuiteConnectorRow
    statement = select(table)
    if tenant_id is not None:
        statement = statement.where(table.tenant_id == tenant_id)
    rows = (await session.execute(
        keyset(statement, table.created_at, table.id, after, limit))).scalars().all()
    records = [record(row) for row in rows[:limit]]
    if len(rows) <= limit:
        return records, None
    return records, key_values(records[-1].created_at, records[-1].id)


async def change(session: AsyncSession, connector_id: str, values: Mapping[str, Any], now: float,
                 *, expect: Mapping[str, Any] | None = None) -> bool:
    """Set ``values`` (timestamps as epoch seconds) if the row still has ``expect``; True
    when it did. The optimistic check: of two changes made from the same state, one wins."""
    table = NetSuiteConnectorRow
    columns = {name: (utc(value) if name in _TIMES and value is not None else value)
               for name, value in values.items()}
    conditions = [table.id == connector_id]
    for name, value in (expect or {}).items():
        column = getattr(table, name)
        if value is None:
            conditions.append(column.is_(None))
        else:
            conditions.append(column == (utc(value) if name in _TIMES else value))
    result = await session.execute(update(table).where(*conditions)
                                   .values(**columns, updated_at=utc(now)))
    return bool(cast(CursorResult[Any], result).rowcount)


async def delete(session: AsyncSession, connector_id: str) -> None:
    row = await session.get(NetSuiteConnectorRow, connector_id)
    if row is not None:
        await session.delete(row)
        await session.flush()


async def due_revocations(session: AsyncSession, now: float) -> list[ConnectorRecord]:
    """Connectors whose previous certificate is due to be revoked at NetSuite."""
    table = NetSuiteConnectorRow
    rows = (await session.execute(select(table).where(
        table.retiring_certificate_revoke_at <= utc(now)).order_by(table.id))).scalars()
    return [record(row) for row in rows]


async def expiring(session: AsyncSession, horizon: float) -> list[ConnectorRecord]:
    """Connectors whose active certificate expires before ``horizon``."""
    table = NetSuiteConnectorRow
    rows = (await session.execute(select(table).where(
        table.active_certificate_id.is_not(None),
        table.certificate_expires_at <= utc(horizon)).order_by(table.id))).scalars()
    return [record(row) for row in rows]
