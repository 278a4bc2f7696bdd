"""The issued-tokens repository: the reads and the revocations of ``issued_tokens``.

The token endpoint's inserts are not here: they are group-committed with their
audit events by ``issuer.store.writer``. Token records outlive deleted clients and
tenants, hence the outer joins: a missing client or tenant reads as ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Row, and_, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from issuer.store.cursor import INSTANT, Identifier, Key, Keyset, Page, page_of
from issuer.store.models import Client, IssuedToken, Tenant

#: Client ids, tenant ids and jtis are visible ASCII (and PostgreSQL refuses NUL in text).
JTI = r"[\x21-\x7e]+"
#: The listing's order: newest first. (issued_at, jti) is unique (jti is the key), so a
#: page's position is exact: a token committed while a caller pages sorts before the
#: cursor or after it, once; no token is repeated or skipped.
ORDER = Keyset((IssuedToken.issued_at, IssuedToken.jti), (INSTANT, Identifier(JTI)),
               descending=True)


@dataclass(frozen=True)
class TokenListing:
    """One token's metadata as the admin API lists it (never the token)."""

    jti: str
    client_id: str
    tenant_id: str
    scope: str
    audience: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    #: What introspection answers: not revoked, not expired, client and tenant active
    #: and not disabled since the token was issued.
    active: bool


@dataclass(frozen=True)
class TokenStanding:
    """A token's record and what its client and tenant say of it now (``None``:
    deleted). ``allowed_scopes`` and ``platform`` are read only by :func:`standing`'s
    ``for_admin`` form."""

    client_id: str
    tenant_id: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    client_status: str | None
    client_valid_after: datetime | None
    tenant_status: str | None
    tenant_valid_after: datetime | None
    allowed_scopes: tuple[str, ...] = ()
    platform: bool = False


@dataclass(frozen=True)
class TokenOwner:
    client_id: str
    tenant_id: str
    revoked_at: datetime | None


def _not_killed() -> ColumnElement[bool]:
    """The kill switch: a token issued before its client or tenant was disabled stays
    inactive after a re-enable (``issuer.registration``)."""
    return and_(
        or_(Client.tokens_valid_after.is_(None),
            IssuedToken.issued_at >= Client.tokens_valid_after),
        or_(Tenant.tokens_valid_after.is_(None),
            IssuedToken.issued_at >= Tenant.tokens_valid_after))


async def page(session: AsyncSession, *, now: datetime, after: Key | None, limit: int,
               tenant_id: str | None = None, client_id: str | None = None,
               active: bool | None = None) -> Page[TokenListing]:
    """Up to ``limit`` token records past ``after`` in :data:`ORDER`, of ``tenant_id``
    and ``client_id`` when given; ``active`` keeps only the active (True) or only the
    inactive (False) ones, as of ``now``."""
    client_status = func.coalesce(Client.status, "deleted")
    tenant_status = func.coalesce(Tenant.status, "deleted")
    not_killed = _not_killed()
    statement = (
        select(IssuedToken, client_status, tenant_status, not_killed)
        .outerjoin(Client, Client.id == IssuedToken.client_id)
        .outerjoin(Tenant, Tenant.id == IssuedToken.tenant_id)
    )
    if tenant_id is not None:
        statement = statement.where(IssuedToken.tenant_id == tenant_id)
    if client_id is not None:
        statement = statement.where(IssuedToken.client_id == client_id)
    live = and_(IssuedToken.revoked_at.is_(None), IssuedToken.expires_at > now,
                client_status == "active", tenant_status == "active", not_killed)
    if active is not None:
        statement = statement.where(live if active else not_(live))
    rows = (await session.execute(ORDER.page(statement, after, limit))).all()

    def listing(row: Row[IssuedToken, str, str, bool]) -> TokenListing:
        token, client, tenant, alive = row
        return TokenListing(
            jti=token.jti, client_id=token.client_id, tenant_id=token.tenant_id,
            scope=token.scope, audience=tuple(token.audience), issued_at=token.issued_at,
            expires_at=token.expires_at, revoked_at=token.revoked_at,
            active=(token.revoked_at is None and token.expires_at > now
                    and client == "active" and tenant == "active" and bool(alive)))

    return page_of(ORDER, rows, limit, lambda row: (row[0].issued_at, row[0].jti), listing)


async def standing(engine: AsyncEngine, jti: str) -> TokenStanding | None:
    """The record of ``jti`` and its client's and tenant's state (introspection,
    revocation); None when there is no record."""
    statement = (
        select(IssuedToken.client_id, IssuedToken.tenant_id, IssuedToken.issued_at,
               IssuedToken.expires_at, IssuedToken.revoked_at, Client.status,
               Client.tokens_valid_after, Tenant.status, Tenant.tokens_valid_after)
        .outerjoin(Client, Client.id == IssuedToken.client_id)
        .outerjoin(Tenant, Tenant.id == IssuedToken.tenant_id)
        .where(IssuedToken.jti == jti)
    )
    async with engine.connect() as connection:
        row = (await connection.execute(statement)).first()
    return None if row is None else TokenStanding(*row)


async def admin_standing(engine: AsyncEngine, jti: str, client_id: str,
                         tenant_id: str) -> TokenStanding | None:
    """As :func:`standing`, for an admin's own token: only when its client and tenant
    exist and are the ones named, with the client's current allowed scopes and whether
    the tenant is the platform's. One query, read fresh on every admin request."""
    statement = (
        select(IssuedToken.client_id, IssuedToken.tenant_id, IssuedToken.issued_at,
               IssuedToken.expires_at, IssuedToken.revoked_at, Client.status,
               Client.tokens_valid_after, Tenant.status, Tenant.tokens_valid_after,
               Client.allowed_scopes, Tenant.platform)
        .join(Client, Client.id == IssuedToken.client_id)
        .join(Tenant, Tenant.id == Client.tenant_id)
        .where(IssuedToken.jti == jti, IssuedToken.client_id == client_id,
               Tenant.id == tenant_id)
    )
    async with engine.connect() as connection:
        row = (await connection.execute(statement)).first()
    if row is None:
        return None
    (token_client, token_tenant, issued_at, expires_at, revoked_at, client_status,
     client_valid_after, tenant_status, tenant_valid_after, allowed_scopes, platform) = row
    return TokenStanding(
        client_id=token_client, tenant_id=token_tenant, issued_at=issued_at,
        expires_at=expires_at, revoked_at=revoked_at, client_status=client_status,
        client_valid_after=client_valid_after, tenant_status=tenant_status,
        tenant_valid_after=tenant_valid_after, allowed_scopes=tuple(allowed_scopes),
        platform=bool(platform))


async def owner(connection: AsyncConnection, jti: str) -> TokenOwner | None:
    """Whose token ``jti`` is, and whether it is revoked (in the caller's transaction)."""
    found = (await connection.execute(
        select(IssuedToken.client_id, IssuedToken.tenant_id, IssuedToken.revoked_at)
        .where(IssuedToken.jti == jti))).first()
    return None if found is None else TokenOwner(*found)


async def revoke(connection: AsyncConnection, jti: str, at: datetime) -> bool:
    """Mark ``jti`` revoked at ``at``; False when it was revoked already (or has no
    record), so that a revocation is recorded once however many race."""
    result = await connection.execute(
        update(IssuedToken).where(IssuedToken.jti == jti, IssuedToken.revoked_at.is_(None))
        .values(revoked_at=at))
    return bool(result.rowcount == 1)


async def revoke_live_of_client(session: AsyncSession, client_id: str,
                                at: datetime) -> int | None:
    """Revoke every unexpired, unrevoked token of ``client_id`` at ``at`` (in the
    caller's transaction); how many, where the driver says."""
    revoked = await session.execute(
        update(IssuedToken)
        .where(IssuedToken.client_id == client_id, IssuedToken.revoked_at.is_(None),
               IssuedToken.expires_at > at)
        .values(revoked_at=at).execution_options(synchronize_session=False))
    count: int | None = getattr(revoked, "rowcount", None)
    return count
