"""The clients repository: every query and write of the ``clients`` table, and the
token endpoint's cached view of it (:class:`ClientStore`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from issuer.clock import Clock, utc
from issuer.store import tenants
from issuer.store.cursor import INSTANT, Identifier, Key, Keyset, Page, page_of
from issuer.store.models import Client, Tenant
from issuer.store.records import ClientRecord, FederatedCredential, TenantRecord
from issuer.store.tenants import OBJECT_ID

#: Every client_id this issuer issues matches this; anything else is unknown without a query.
CLIENT_ID = re.compile(rf"^{OBJECT_ID}$")
#: The listing's order: oldest first, ties broken by client_id.
ORDER = Keyset((Client.created_at, Client.id), (INSTANT, Identifier(OBJECT_ID)))


def client_record(row: Client, tenant_status: str) -> ClientRecord:
    expires = row.previous_secret_expires_at
    return ClientRecord(
        client_id=row.id,
        tenant_id=row.tenant_id,
        tenant_status=tenant_status,
        name=row.name,
        secret_hash=row.secret_hash,
        previous_secret_hash=row.previous_secret_hash,
        previous_secret_expires_at=expires.timestamp() if expires else None,
        allowed_scopes=tuple(row.allowed_scopes),
        default_scopes=tuple(row.default_scopes) if row.default_scopes is not None else None,
        allowed_audiences=tuple(row.allowed_audiences),
        default_audience=row.default_audience,
        grant_types=tuple(row.grant_types),
        auth_methods=tuple(row.auth_methods),
        token_ttl=row.token_ttl,
        rate_limit=row.rate_limit,
        status=row.status,
        created_at=row.created_at.timestamp(),
        jwks=row.jwks,
        jwks_uri=row.jwks_uri,
        secret_encrypted=row.secret_encrypted,
        previous_secret_encrypted=row.previous_secret_encrypted,
        dpop_bound=bool(row.dpop_bound_access_tokens),
        federated_credentials=federated_credentials(row.federated_credentials),
    )


def federated_credentials(stored: list[dict[str, Any]] | None
                          ) -> tuple[FederatedCredential, ...]:
    """The ``federated_credentials`` column's JSON as records."""
    return tuple(FederatedCredential(entry["trusted_issuer_id"], entry["subject"],
                                     entry.get("audience")) for entry in stored or ())


async def find_tenant(session: AsyncSession, name_or_id: str) -> TenantRecord | None:
    """:func:`issuer.store.tenants.find`, under the name the connectors' CLI knows."""
    return await tenants.find(session, name_or_id)


async def get_client(session: AsyncSession, client_id: str) -> ClientRecord | None:
    statement = (select(Client, Tenant.status).join(Tenant, Tenant.id == Client.tenant_id)
                 .where(Client.id == client_id))
    found = (await session.execute(statement)).first()
    return client_record(found[0], found[1]) if found else None


async def list_clients(session: AsyncSession, tenant_id: str | None = None) -> list[ClientRecord]:
    statement = select(Client, Tenant.status).join(Tenant, Tenant.id == Client.tenant_id)
    if tenant_id is not None:
        statement = statement.where(Client.tenant_id == tenant_id)
    rows = (await session.execute(statement.order_by(Client.created_at))).all()
    return [client_record(client, status) for client, status in rows]


async def page(session: AsyncSession, *, after: Key | None, limit: int,
               tenant_id: str | None = None) -> Page[ClientRecord]:
    """Up to ``limit`` clients past ``after`` in :data:`ORDER` (of ``tenant_id`` when
    given)."""
    statement = select(Client, Tenant.status).join(Tenant, Tenant.id == Client.tenant_id)
    if tenant_id is not None:
        statement = statement.where(Client.tenant_id == tenant_id)
    rows = (await session.execute(ORDER.page(statement, after, limit))).all()
    return page_of(ORDER, rows, limit, lambda row: (row[0].created_at, row[0].id),
                   lambda row: client_record(row[0], row[1]))


async def lock(session: AsyncSession, client_id: str) -> Client | None:
    """The row, locked for this transaction (PostgreSQL; SQLite serialises writers)."""
    statement = select(Client).where(Client.id == client_id).with_for_update()
    row: Client | None = (await session.execute(statement)).scalars().first()
    return row


async def add(session: AsyncSession, row: Client) -> None:
    """Insert ``row`` in this transaction (flushed)."""
    session.add(row)
    await session.flush()


async def remove(session: AsyncSession, row: Client) -> None:
    """Delete ``row`` in this transaction (flushed)."""
    await session.delete(row)
    await session.flush()


async def active_scopes(session: AsyncSession) -> list[list[str]]:
    """The allowed scopes of every active client."""
    statement = select(Client.allowed_scopes).where(Client.status == "active")
    return [list(entries) for entries in (await session.execute(statement)).scalars().all()]


# The connectors' listings page in (created_at, id) order too, through these: a page's
# key is the last item's (created_at ISO 8601, id), opaque to callers.
PageKey = tuple[datetime, str]


def page_key(values: Sequence[Any] | None) -> PageKey | None:
    """A decoded cursor as a key; ValueError when it is not one of ours."""
    if values is None:
        return None
    if len(values) != 2 or not all(isinstance(value, str) for value in values):
        raise ValueError("malformed cursor")
    at = datetime.fromisoformat(values[0])
    if at.tzinfo is None:
        raise ValueError("malformed cursor")
    return at, values[1]


def key_values(created_at: float, object_id: str) -> list[str]:
    """A page key as it goes into a cursor."""
    return [utc(created_at).isoformat(), object_id]


def keyset(statement: Select[Any], created_at: Any, object_id: Any,
           after: tuple[datetime, Any] | None, limit: int) -> Select[Any]:
    """``statement`` in (created_at, id) order after ``after``: ``limit`` + 1 rows, the
    extra one saying whether another page follows."""
    order = Keyset((created_at, object_id), (INSTANT, Identifier(OBJECT_ID)))
    return order.page(statement, after, limit)


class ClientStore:
    """Loads clients for the token endpoint, cached briefly in this process.

    The cache is a read optimisation: a client or tenant change drops the entries
    it made stale, in this process at once and in every other within about a second
    (``issuer.store.changes`` calls :meth:`forget`, :meth:`forget_tenant` and
    :meth:`forget_all`). Entries also expire after ``ttl`` seconds, which bounds
    staleness when a notice is lost. Only found clients are cached, so a client
    created a moment ago is usable at once.
    """

    def __init__(self, engine: AsyncEngine, clock: Clock, ttl: float) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, ClientRecord]] = {}
        self._scopes: tuple[float, list[str]] | None = None
        self._loading: dict[str, asyncio.Future[ClientRecord | None]] = {}
        # Bumped by every forget: a load that began before one may have read the
        # old row, so its result answers its own callers but is not cached.
        self._generation = 0

    def cached(self, client_id: str) -> ClientRecord | None:
        """The client when this process holds a fresh entry for it (no store wait, no
        await); None when :meth:`get` must load it."""
        cached = self._cache.get(client_id)
        if cached is not None and cached[0] > self._clock.now():
            return cached[1]
        return None

    async def get(self, client_id: str) -> ClientRecord | None:
        if not CLIENT_ID.match(client_id):
            return None  # cannot be one of ours (e.g. a NUL, which PostgreSQL refuses)
        now = self._clock.now()
        cached = self._cache.get(client_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        # Single flight: when an entry expires under load, one query reloads it
        # and every concurrent request for that client waits for that one.
        pending = self._loading.get(client_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ClientRecord | None] = asyncio.get_running_loop().create_future()
        self._loading[client_id] = future
        try:
            record = await self._load(client_id, now)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved here, so an unawaited failure is not reported twice
            raise
        else:
            future.set_result(record)
        finally:
            if self._loading.get(client_id) is future:  # a forget may have dropped it
                del self._loading[client_id]
        return record

    async def _load(self, client_id: str, now: float) -> ClientRecord | None:
        generation = self._generation
        async with self._sessions() as session:
            record = await get_client(session, client_id)
        if record is None:
            self._cache.pop(client_id, None)
        elif generation == self._generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[client_id] = (now + self._ttl, record)
        return record

    async def supported_scopes(self) -> list[str]:
        """Every exact scope an active client may request (cached for ``ttl``)."""
        now = self._clock.now()
        if self._scopes is not None and self._scopes[0] > now:
            return self._scopes[1]
        generation = self._generation
        async with self._sessions() as session:
            rows = await active_scopes(session)
        scopes = sorted({scope for entries in rows for scope in entries if "*" not in scope})
        if generation == self._generation:
            self._scopes = (now + self._ttl, scopes)
        return scopes

    def forget(self, client_id: str) -> None:
        """The client changed (or is gone): its next request reads it again."""
        self._invalidate()
        self._cache.pop(client_id, None)
        self._loading.pop(client_id, None)

    def forget_tenant(self, tenant_id: str) -> None:
        """The tenant changed: drop every cached client of it."""
        self._invalidate()
        self._loading.clear()  # an in-flight load's tenant is not known yet
        for client_id in [key for key, (_, record) in self._cache.items()
                          if record.tenant_id == tenant_id]:
            self._cache.pop(client_id, None)

    def forget_all(self) -> None:
        """Drop everything: changes may have been missed (a notice channel reconnected)."""
        self._invalidate()
        self._loading.clear()
        self._cache.clear()

    def _invalidate(self) -> None:
        self._generation += 1
        self._scopes = None
