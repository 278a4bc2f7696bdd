"""The tenants repository: every query and write of the ``tenants`` table.

Callers pass the session (or engine) whose transaction the work belongs to: a
change and its audit event commit together (``issuer.registration``). Reads hand
out :class:`TenantRecord`; :func:`lock` hands out the row itself, for a change
that the caller's transaction then flushes.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from issuer import tenant_names
from issuer.store.cursor import INSTANT, Identifier, Key, Keyset, Page, page_of
from issuer.store.models import Tenant
from issuer.store.records import TenantRecord

#: What a tenant id (a uuid4) or a client id looks like: anything else names nothing.
OBJECT_ID = r"[A-Za-z0-9_.:-]{1,64}"
#: The listing's order: oldest first, ties broken by id.
ORDER = Keyset((Tenant.created_at, Tenant.id), (INSTANT, Identifier(OBJECT_ID)))


def tenant_record(row: Tenant) -> TenantRecord:
    return TenantRecord(id=row.id, name=row.name, status=row.status,
                        created_at=row.created_at.timestamp())


async def get(session: AsyncSession, tenant_id: str) -> TenantRecord | None:
    row = await session.get(Tenant, tenant_id)
    return tenant_record(row) if row else None


async def find(session: AsyncSession, name_or_id: str) -> TenantRecord | None:
    """The tenant of this id, or of this name (as compared: :func:`tenant_names.key`)."""
    statement = select(Tenant).where((Tenant.name_key == tenant_names.key(name_or_id))
                                     | (Tenant.id == name_or_id))
    row = (await session.execute(statement)).scalars().first()
    return tenant_record(row) if row else None


async def list_all(session: AsyncSession) -> list[TenantRecord]:
    rows = (await session.execute(select(Tenant).order_by(Tenant.created_at))).scalars()
    return [tenant_record(row) for row in rows]


async def page(session: AsyncSession, *, after: Key | None, limit: int,
               tenant_id: str | None = None) -> Page[TenantRecord]:
    """Up to ``limit`` tenants past ``after`` in :data:`ORDER` (only ``tenant_id``
    when given)."""
    statement = select(Tenant)
    if tenant_id is not None:
        statement = statement.where(Tenant.id == tenant_id)
    rows = (await session.execute(ORDER.page(statement, after, limit))).scalars().all()
    return page_of(ORDER, rows, limit, lambda row: (row.created_at, row.id), tenant_record)


async def status(session: AsyncSession, tenant_id: str) -> str:
    """The status of a tenant that exists (in this transaction)."""
    found: str = (await session.execute(
        select(Tenant.status).where(Tenant.id == tenant_id))).scalar_one()
    return found


async def holder_of_name(session: AsyncSession, name: str,
                         other_than: str | None = None) -> str | None:
    """The name of the tenant whose name is the same as ``name`` once compared
    (:func:`tenant_names.key`), other than ``other_than``; None when it is free."""
    statement = select(Tenant.name).where(Tenant.name_key == tenant_names.key(name))
    if other_than is not None:
        statement = statement.where(Tenant.id != other_than)
    taken: str | None = (await session.execute(statement)).scalar()
    return taken


async def platform_tenant_id(engine: AsyncEngine) -> str | None:
    """The id of the platform (bootstrap) tenant, None before the bootstrap."""
    async with engine.connect() as connection:
        found = (await connection.execute(select(Tenant.id).where(Tenant.platform))).first()
    return None if found is None else str(found[0])


async def is_platform(engine: AsyncEngine, tenant_id: str) -> bool:
    """Whether ``tenant_id`` is the platform (bootstrap) tenant."""
    statement = select(Tenant.platform).where(Tenant.id == tenant_id)
    async with engine.connect() as connection:
        return bool((await connection.execute(statement)).scalar())


async def lock(session: AsyncSession, tenant_id: str) -> Tenant | None:
    """The row, locked for this transaction (PostgreSQL; SQLite serialises writers)."""
    statement = select(Tenant).where(Tenant.id == tenant_id).with_for_update()
    row: Tenant | None = (await session.execute(statement)).scalars().first()
    return row


async def add(session: AsyncSession, row: Tenant) -> None:
    """Insert ``row`` in this transaction (flushed: a taken name raises
    ``IntegrityError`` here)."""
    session.add(row)
    await session.flush()
