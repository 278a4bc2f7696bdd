"""Tenants and clients: queries and inserts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from issuer.clock import Clock
from issuer.store.models import Client, Tenant
from issuer.store.records import ClientRecord, TenantRecord


def tenant_record(row: Tenant) -> TenantRecord:
    return TenantRecord(id=row.id, name=row.name, status=row.status,
                        created_at=row.created_at.timestamp())


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
    )


async def find_tenant(session: AsyncSession, name_or_id: str) -> TenantRecord | None:
    statement = select(Tenant).where((Tenant.name == name_or_id) | (Tenant.id == name_or_id))
    row = (await session.execute(statement)).scalars().first()
    return tenant_record(row) if row else None


async def list_tenants(session: AsyncSession) -> list[TenantRecord]:
    rows = (await session.execute(select(Tenant).order_by(Tenant.created_at))).scalars()
    return [tenant_record(row) for row in rows]


async def get_client(session: AsyncSession, client_id: str) -> ClientRecord | None:
    statement = (select(Client, Tenant.status).join(Tenant, Tenant.id == Client.tenant_id)
                 .where(Client.id == client_id))
    found = (await session.execute(statement)).first()
    return client_record(found[0], found[1]) if found else None


async def list_clients(session: AsyncSession, tenant_id: str | None = None) -> list[ClientRecord]:
    statement = select(Client, Tenant.status).join(Tenant, Tenant.id == Client.tenant_id)
    if tenant_id is not None:
        statement = statement.where(Client.tenant_id == tenant_id)
    rows: Sequence[tuple[Client, str]] = (
        await session.execute(statement.order_by(Client.created_at))
    ).tuples().all()
    return [client_record(client, status) for client, status in rows]


class ClientStore:
    """Loads clients for the token endpoint, cached briefly in this process.

    The cache is a read optimisation with bounded staleness (``ttl`` seconds): a
    client disabled or rotated through another process is seen here within
    ``ttl``. Only found clients are cached, so a client created a moment ago is
    usable at once. Nothing here is needed by another process for correctness.
    """

    def __init__(self, engine: AsyncEngine, clock: Clock, ttl: float) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, ClientRecord]] = {}
        self._scopes: tuple[float, list[str]] | None = None
        self._loading: dict[str, asyncio.Future[ClientRecord | None]] = {}

    async def get(self, client_id: str) -> ClientRecord | None:
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
            del self._loading[client_id]
        return record

    async def _load(self, client_id: str, now: float) -> ClientRecord | None:
        async with self._sessions() as session:
            record = await get_client(session, client_id)
        if record is None:
            self._cache.pop(client_id, None)
        else:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[client_id] = (now + self._ttl, record)
        return record

    async def supported_scopes(self) -> list[str]:
        """Every exact scope an active client may request (cached for ``ttl``)."""
        now = self._clock.now()
        if self._scopes is not None and self._scopes[0] > now:
            return self._scopes[1]
        statement = select(Client.allowed_scopes).where(Client.status == "active")
        async with self._sessions() as session:
            rows = (await session.execute(statement)).scalars().all()
        scopes = sorted({scope for entries in rows for scope in entries if "*" not in scope})
        self._scopes = (now + self._ttl, scopes)
        return scopes

    def forget(self, client_id: str) -> None:
        self._cache.pop(client_id, None)
