"""Group commit: many requests' inserts in one transaction.

A token request hands its rows (the issued-token record and its audit event) to
:meth:`GroupWriter.write` and waits. A single task takes everything queued so
far, inserts it in one transaction, commits once, and wakes every waiter.
Under load one commit (and one fsync) serves a whole batch; a lone request is
committed at once. Rows of one ``write`` call are
always in the same transaction: losing one of them without the other is not
possible. If a batch fails because of its rows, each write is retried alone so
that one bad row cannot fail its neighbours; if it fails because the store is
unavailable (:func:`issuer.store.bounds.unavailable`), the whole batch fails at
once (retrying writes one by one against a frozen database would hold the
writer for a timeout per write).

Bounds: at most ``max_pending`` writes wait in the queue (a write beyond that
is refused at once, so a stalled store cannot make the process hold more and
more); a caller waits at most ``max_wait`` seconds for its commit -- or, inside a
request's store budget, what is left of the budget (issuer.store.bounds). A
caller that stops waiting leaves its rows queued: they may still commit, late.

Who inserts a batch (:func:`inserter_for`): on PostgreSQL, a raw asyncpg
connection of the writer's own, one statement per batch
(issuer.store.pg_inserter); on a SQLite file, a sqlite3 connection on a thread
of its own, WAL checkpoints on another (issuer.store.sqlite_inserter,
issuer.store.checkpoint); otherwise (an in-memory SQLite, which only the
engine's connections see) the engine, one ``executemany`` per table
(:class:`EngineInserter`). They skip SQLAlchemy's statement layer -- about two
thirds of the writer's CPU per token (bench/writer.py) -- yet store the same
values as the engine (issuer.store.rowcodec) and raise SQLAlchemy's exceptions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.store.bounds import StoreTimeout, bounded_wait, unavailable
from issuer.store.db import is_sqlite_file
from issuer.store.pg_inserter import PostgresInserter
from issuer.store.rowcodec import Rows
from issuer.store.sqlite_inserter import SqliteInserter

__all__ = ["EngineInserter", "GroupWriter", "Inserter", "Rows", "WriterClosed", "inserter_for"]

log = logging.getLogger(__name__)


class Inserter(Protocol):
    """Inserts the rows of some writes in one transaction (all or none)."""

    async def insert(self, writes: list[Rows]) -> None: ...

    async def close(self) -> None: ...


class EngineInserter:
    """Through the engine: one ``executemany`` per table in one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert(self, writes: list[Rows]) -> None:
        by_table: dict[Table, list[dict[str, Any]]] = {}
        for rows in writes:
            for table, values in rows:
                by_table.setdefault(table, []).append(values)
        async with self._engine.begin() as connection:
            for table, values_list in by_table.items():
                await connection.execute(table.insert(), values_list)

    async def close(self) -> None:
        return None


def inserter_for(engine: AsyncEngine) -> Inserter:
    """The fastest inserter that sees what the engine sees."""
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
        return PostgresInserter(engine)
    if engine.dialect.name == "sqlite" and is_sqlite_file(str(engine.url)):
        return SqliteInserter(engine)
    return EngineInserter(engine)


class WriterClosed(RuntimeError):
    pass


class GroupWriter:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 512, max_pending: int = 4096,
                 max_wait: float | None = None, inserter: Inserter | None = None) -> None:
        self._inserter = inserter if inserter is not None else inserter_for(engine)
        self._max_batch = max_batch
        self._max_wait = max_wait
        # One slot more than max_pending, kept for close()'s end marker.
        self._queue: asyncio.Queue[tuple[Rows, asyncio.Future[None]] | None] = asyncio.Queue(
            max_pending + 1)
        self._max_pending = max_pending
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Writes queued and not yet taken into a transaction."""
        return self._queue.qsize()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-writer")

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._closed:
            return
        self._closed = True
        await self._queue.put(None)
        try:
            if self._task is not None:
                await self._task
        finally:
            await self._inserter.close()

    async def write(self, rows: Rows) -> None:
        """Insert ``rows`` atomically; returns once they are committed. Raises
        :class:`StoreTimeout` at once when the queue is full, or when the commit
        takes longer than the caller may wait (the rows stay queued)."""
        if self._closed or self._task is None or self._task.done():
            raise WriterClosed("the group writer is not running")
        if self._queue.qsize() >= self._max_pending:
            raise StoreTimeout("the group writer's queue is full")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((rows, future))
        # A waiter that gives up (or is cancelled) cancels its future; _settle skips it.
        await bounded_wait(future, self._max_wait)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Rows, asyncio.Future[None]]]) -> None:
        try:
            await self._insert([rows for rows, _ in batch])
        except Exception as error:
            if len(batch) == 1 or unavailable(error):
                for _, future in batch:
                    _settle(future, error)
                return
            log.warning("group commit of %d writes failed; retrying them one by one", len(batch))
            for rows, future in batch:
                try:
                    await self._insert([rows])
                except Exception as error:
                    _settle(future, error)
                else:
                    _settle(future, None)
            return
        for _, future in batch:
            _settle(future, None)

    async def _insert(self, writes: list[Rows]) -> None:
        await self._inserter.insert(writes)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the waiter gave up (timed out, or its client went away)
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
