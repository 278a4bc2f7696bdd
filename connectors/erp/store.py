"""The ``erp_connection`` and ``erp_export`` tables: records and queries.

Every write here is the first statement of its transaction (no read before it), so
SQLite's single writer queues concurrent requests on its busy timeout instead of
failing them, and the partial unique index alone decides which of two concurrent
ACTIVE connections wins, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.erp.tables import ErpConnectionRow, ErpExportRow
from issuer.clock import utc
from issuer.store.clients import PageKey, key_values, keyset

ACTIVE = "ACTIVE"
DISABLED = "DISABLED"
SUCCESS = "SUCCESS"
FAILED = "FAILED"


def associated_data(connection_id: uuid.UUID) -> bytes:
    """What a connection's config ciphertext is bound to: copied into another row, it
    does not decrypt."""
    return f"erp_connection:{connection_id}".encode()


@dataclass(frozen=True)
class ConnectionRecord:
    id: uuid.UUID
    org_id: str
    connector_type: str
    status: str
    last_test_at: float | None
    created_at: float
    updated_at: float
    config_encrypted: bytes  # never rendered; decrypted by ConnectionService only


@dataclass(frozen=True)
class ExportRecord:
    id: uuid.UUID
    org_id: str
    connection_id: uuid.UUID
    connector_type: str
    draft_order_id: uuid.UUID
    status: str
    error_json: dict[str, Any] | None
    dropzone_path: str | None
    storage_key: str | None
    connector_metadata: dict[str, Any]
    created_at: float
    completed_at: float


def _stamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def connection_record(row: ErpConnectionRow) -> ConnectionRecord:
    return ConnectionRecord(
        id=row.id, org_id=row.org_id, connector_type=row.connector_type, status=row.status,
        last_test_at=_stamp(row.last_test_at), created_at=row.created_at.timestamp(),
        updated_at=row.updated_at.timestamp(), config_encrypted=row.config_encrypted)


def export_record(row: ErpExportRow) -> ExportRecord:
    return ExportRecord(
        id=row.id, org_id=row.org_id, connection_id=row.connection_id,
        connector_type=row.connector_type, draft_order_id=row.draft_order_id,
        status=row.status, error_json=row.error_json, dropzone_path=row.dropzone_path,
        storage_key=row.storage_key, connector_metadata=dict(row.connector_metadata),
        created_at=row.created_at.timestamp(), completed_at=row.completed_at.timestamp())


async def insert_connection(session: AsyncSession, *, connection_id: uuid.UUID, org_id: str,
                            connector_type: str, config_encrypted: bytes, now: float,
                            tested: bool) -> None:
    """Raises IntegrityError when the org has an ACTIVE connection already."""
    await session.execute(insert(ErpConnectionRow).values(
        id=connection_id, org_id=org_id, connector_type=connector_type,
        config_encrypted=config_encrypted, status=ACTIVE,
        last_test_at=utc(now) if tested else None, created_at=utc(now), updated_at=utc(now)))


async def get_connection(session: AsyncSession, connection_id: uuid.UUID
                         ) -> ConnectionRecord | None:
    row = await session.get(ErpConnectionRow, connection_id)
    return connection_record(row) if row is not None else None


async def active_connection(session: AsyncSession, org_id: str) -> ConnectionRecord | None:
    row = (await session.execute(select(ErpConnectionRow).where(
        ErpConnectionRow.org_id == org_id, ErpConnectionRow.status == ACTIVE))).scalar()
    return connection_record(row) if row is not None else None


async def connection_page(session: AsyncSession, *, org_id: str | None,
                          after: PageKey | None, limit: int
                          ) -> tuple[list[ConnectionRecord], list[str] | None]:
    """Oldest first; ``org_id`` None = every org's (platform admins)."""
    statement = select(ErpConnectionRow)
    if org_id is not None:
        statement = statement.where(ErpConnectionRow.org_id == org_id)
    position = (after[0], uuid.UUID(after[1])) if after is not None else None
    rows = (await session.execute(keyset(statement, ErpConnectionRow.created_at,
                                         ErpConnectionRow.id, position, limit))).scalars().all()
    records = [connection_record(row) for row in rows[:limit]]
    last = records[-1] if records and len(rows) > limit else None
    return records, (key_values(last.created_at, str(last.id)) if last else None)


async def set_status(session: AsyncSession, connection_id: uuid.UUID, *, old: str, new: str,
                     now: float) -> bool:
    """False when the status is no longer ``old``; IntegrityError when ``new`` is ACTIVE
    and another connection of the org is."""
    result = await session.execute(
        update(ErpConnectionRow)
        .where(ErpConnectionRow.id == connection_id, ErpConnectionRow.status == old)
        .values(status=new, updated_at=utc(now)).execution_options(synchronize_session=False))
    return _changed(result)


async def replace_config(session: AsyncSession, connection_id: uuid.UUID, *, old: bytes,
                         new: bytes, now: float) -> bool:
    """Swap the ciphertext only if it is still ``old`` (a concurrent update loses)."""
    result = await session.execute(
        update(ErpConnectionRow)
        .where(ErpConnectionRow.id == connection_id, ErpConnectionRow.config_encrypted == old)
        .values(config_encrypted=new, updated_at=utc(now))
        .execution_options(synchronize_session=False))
    return _changed(result)


async def record_test(session: AsyncSession, connection_id: uuid.UUID, now: float) -> None:
    await session.execute(
        update(ErpConnectionRow).where(ErpConnectionRow.id == connection_id)
        .values(last_test_at=utc(now)).execution_options(synchronize_session=False))


async def insert_export(session: AsyncSession, record: ExportRecord) -> None:
    await session.execute(insert(ErpExportRow).values(
        id=record.id, org_id=record.org_id, connection_id=record.connection_id,
        connector_type=record.connector_type, draft_order_id=record.draft_order_id,
        status=record.status, error_json=record.error_json,
        dropzone_path=record.dropzone_path, storage_key=record.storage_key,
        connector_metadata=record.connector_metadata, created_at=utc(record.created_at),
        completed_at=utc(record.completed_at)))


async def get_export(session: AsyncSession, export_id: uuid.UUID) -> ExportRecord | None:
    row = await session.get(ErpExportRow, export_id)
    return export_record(row) if row is not None else None


def _changed(result: Any) -> bool:
    count: int = result.rowcount
    return count == 1
