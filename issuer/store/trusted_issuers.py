"""The trusted-issuers repository: every query and write of the ``trusted_issuers``
table (a tenant's external token issuers, ``issuer.federation``).

Callers pass the session whose transaction the work belongs to: a change and its
audit event commit together (``issuer.trusted_issuers``)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.cursor import INSTANT, Identifier, Key, Keyset, Page, page_of
from issuer.store.models import TrustedIssuer
from issuer.store.records import TrustedIssuerRecord
from issuer.store.tenants import OBJECT_ID

#: The listing's order: oldest first, ties broken by id.
ORDER = Keyset((TrustedIssuer.created_at, TrustedIssuer.id), (INSTANT, Identifier(OBJECT_ID)))


def trusted_issuer_record(row: TrustedIssuer) -> TrustedIssuerRecord:
    return TrustedIssuerRecord(
        id=row.id, tenant_id=row.tenant_id, issuer=row.issuer, jwks_uri=row.jwks_uri,
        allowed_algorithms=tuple(row.allowed_algorithms), max_token_age=row.max_token_age,
        status=row.status, created_at=row.created_at.timestamp(),
        updated_at=row.updated_at.timestamp())


async def get(session: AsyncSession, trusted_issuer_id: str) -> TrustedIssuerRecord | None:
    row = await session.get(TrustedIssuer, trusted_issuer_id)
    return trusted_issuer_record(row) if row else None


async def lock(session: AsyncSession, trusted_issuer_id: str) -> TrustedIssuer | None:
    """The row, locked for this transaction (PostgreSQL; SQLite serialises writers)."""
    statement = (select(TrustedIssuer).where(TrustedIssuer.id == trusted_issuer_id)
                 .with_for_update())
    row: TrustedIssuer | None = (await session.execute(statement)).scalars().first()
    return row


async def of_tenant(session: AsyncSession, tenant_id: str,
                    ids: Iterable[str]) -> dict[str, TrustedIssuerRecord]:
    """Those of ``ids`` that are ``tenant_id``'s trusted issuers, by id."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    statement = select(TrustedIssuer).where(TrustedIssuer.tenant_id == tenant_id,
                                            TrustedIssuer.id.in_(wanted))
    rows = (await session.execute(statement)).scalars().all()
    return {row.id: trusted_issuer_record(row) for row in rows}


async def by_issuer(session: AsyncSession, tenant_id: str,
                    issuer: str) -> TrustedIssuerRecord | None:
    """``tenant_id``'s trusted issuer whose ``iss`` is exactly ``issuer`` (any status)."""
    statement = select(TrustedIssuer).where(TrustedIssuer.tenant_id == tenant_id,
                                            TrustedIssuer.issuer == issuer)
    row = (await session.execute(statement)).scalars().first()
    return trusted_issuer_record(row) if row else None


async def page(session: AsyncSession, *, after: Key | None, limit: int,
               tenant_id: str | None = None) -> Page[TrustedIssuerRecord]:
    """Up to ``limit`` trusted issuers past ``after`` in :data:`ORDER` (of ``tenant_id``
    when given)."""
    statement = select(TrustedIssuer)
    if tenant_id is not None:
        statement = statement.where(TrustedIssuer.tenant_id == tenant_id)
    rows = (await session.execute(ORDER.page(statement, after, limit))).scalars().all()
    return page_of(ORDER, rows, limit, lambda row: (row.created_at, row.id),
                   trusted_issuer_record)


async def add(session: AsyncSession, row: TrustedIssuer) -> None:
    """Insert ``row`` in this transaction (flushed)."""
    session.add(row)
    await session.flush()


async def remove(session: AsyncSession, row: TrustedIssuer) -> None:
    """Delete ``row`` in this transaction (flushed)."""
    await session.delete(row)
    await session.flush()
