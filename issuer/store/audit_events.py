"""The audit-events repository: the insert and the reads of ``audit_events``.

Events are written in the caller's transaction (a change and its event commit
together); the token endpoint's are group-committed by ``issuer.store.writer``.
Reads hand out each event's column values as a plain dict (``issuer.audit.event_json``
makes the public shape of one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from issuer.store.cursor import INT64, Key, Keyset, Page, page_of
from issuer.store.models import AuditEventRow

_TABLE: Table = AuditEventRow.__table__
#: The listing's order: newest first, by id (assigned at insert): events recorded while
#: a reader pages get larger ids, so they never shift its pages, and nothing is seen
#: twice or skipped.
ORDER = Keyset((AuditEventRow.id,), (INT64,), descending=True)
#: The export's order: oldest first.
EXPORT_ORDER = Keyset((AuditEventRow.id,), (INT64,))


@dataclass(frozen=True)
class AuditQuery:
    """Filters of ``GET /api/v1/audit-events`` and ``issuer audit export``.

    ``since`` is inclusive and ``until`` exclusive, so consecutive windows
    (``--since`` = the last ``--until``) neither repeat nor miss an event.
    ``tenant_id`` scopes to one tenant: a tenant admin always has it set to its own.
    """

    tenant_id: str | None = None
    event: str | None = None
    severity: str | None = None
    client_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[ColumnElement[bool]]:
        table = AuditEventRow
        conditions: list[ColumnElement[bool]] = []
        if self.tenant_id is not None:
            conditions.append(table.tenant_id == self.tenant_id)
        if self.event is not None:
            conditions.append(table.event == self.event)
        if self.severity is not None:
            conditions.append(table.severity == self.severity)
        if self.client_id is not None:
            conditions.append(table.client_id == self.client_id)
        if self.since is not None:
            conditions.append(table.at >= self.since)
        if self.until is not None:
            conditions.append(table.at < self.until)
        return conditions


async def insert(target: AsyncConnection | AsyncSession,
                 rows: list[Mapping[str, Any]]) -> None:
    """Insert events (``issuer.audit.audit_row``'s column values) through ``target``,
    inside the caller's transaction."""
    await target.execute(_TABLE.insert(), rows)


async def page(connection: AsyncConnection, query: AuditQuery, *, after: Key | None,
               limit: int) -> Page[dict[str, Any]]:
    """Up to ``limit`` matching events past ``after`` in :data:`ORDER`."""
    statement = ORDER.page(select(AuditEventRow).where(*query.where()), after, limit)
    rows = (await connection.execute(statement)).mappings().all()
    return page_of(ORDER, rows, limit, lambda row: (row["id"],), dict)


async def oldest_first(connection: AsyncConnection, query: AuditQuery, *,
                       batch: int = 1000) -> AsyncIterator[dict[str, Any]]:
    """Every matching event, oldest first, read in keyset batches (for export)."""
    after: Key | None = None
    while True:
        statement = EXPORT_ORDER.page(select(AuditEventRow).where(*query.where()), after, batch)
        rows = (await connection.execute(statement)).mappings().all()
        for row in rows[:batch]:
            yield dict(row)
        if len(rows) <= batch:
            return
        after = (rows[batch - 1]["id"],)
