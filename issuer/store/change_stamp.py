"""The change stamp and the change notices' SQL (``issuer.changes``): a NOTIFY on
PostgreSQL, the ``change_stamp`` row's bump and its reader on SQLite."""

from __future__ import annotations

import aiosqlite
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import ChangeStamp

#: Seconds a read waits for SQLite's lock.
TIMEOUT = 2.0


async def notify(session: AsyncSession, channel: str, payload: str) -> None:
    """PostgreSQL: NOTIFY ``channel`` with ``payload`` when the transaction commits."""
    await session.execute(select(func.pg_notify(channel, payload)))


async def bump(session: AsyncSession) -> None:
    """SQLite: bump the stamp in the session's transaction (readers see it after the
    commit)."""
    await session.execute(update(ChangeStamp).where(ChangeStamp.id == 1)
                          .values(version=ChangeStamp.version + 1))


class StampReader:
    """Reads SQLite's change stamp on an ``aiosqlite`` connection of its own: one
    round trip to its thread per read (``execute_fetchall``), where the engine's
    pooled connection makes several (checkout, execute, fetch, reset) -- ten times
    the CPU (``bench/change_stamp.py``). Read-only (``query_only``)."""

    _SQL = "SELECT version FROM change_stamp WHERE id = 1"

    def __init__(self, path: str, *, timeout: float = TIMEOUT) -> None:
        self._path = path
        self._timeout = timeout
        self._connection: aiosqlite.Connection | None = None

    async def read(self) -> int | None:
        if self._connection is None:
            connection = await aiosqlite.connect(self._path, timeout=self._timeout)
            try:
                await connection.execute("PRAGMA query_only=ON")
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
        rows = list(await self._connection.execute_fetchall(self._SQL))
        return int(rows[0][0]) if rows else None

    async def close(self) -> None:
        """Closes the connection once the reads before it are done (its thread runs
        them in order)."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()
