"""Group commit: many requests' inserts in one transaction (DESIGN §3.7).

A token request hands its rows (the issued-token record and its audit event) to
:meth:`GroupWriter.write` and waits. A single task takes everything queued so
far, inserts it in one transaction with one ``executemany`` per table, commits
once, and wakes every waiter. Under load one commit (and one fsync) serves a
whole batch; a lone request is committed at once. Rows of one ``write`` call are
always in the same transaction: losing one of them without the other is not
possible. If a batch fails, each write is retried alone so that one bad row
cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

Rows = Sequence[tuple[Table, dict[str, Any]]]


class WriterClosed(RuntimeError):
    pass


class GroupWriter:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 512) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Rows, asyncio.Future[None]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-writer")

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._closed:
            return
        self._closed = True
        await self._queue.put(None)
        if self._task is not None:
            await self._task

    async def write(self, rows: Rows) -> None:
        """Insert ``rows`` atomically; returns once they are committed."""
        if self._closed or self._task is None or self._task.done():
            raise WriterClosed("the group writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, future))
        await future

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
            if len(batch) == 1:
                _settle(batch[0][1], error)
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
        by_table: dict[Table, list[dict[str, Any]]] = {}
        for rows in writes:
            for table, values in rows:
                by_table.setdefault(table, []).append(values)
        async with self._engine.begin() as connection:
            for table, values_list in by_table.items():
                await connection.execute(table.insert(), values_list)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the waiter was cancelled (client went away); the rows still landed
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
