"""Retention: the background task that prunes what no one needs any more (DESIGN §7).

- ``issued_tokens`` rows a day after their token expired (an expired token is
  inactive anyway; the day keeps yesterday's tokens listable by the admin API);
- ``audit_events`` older than ``ISSUER_AUDIT_RETENTION_DAYS`` (default 365).

Deletes go in batches of about :data:`BATCH` rows (:data:`SQLITE_BATCH` on
SQLite, whose one writer at a time makes the token endpoint's commits wait for
a batch), oldest first, each its own short transaction, with a pause of
:data:`PAUSE` seconds between two batches, so that pruning a large backlog
never holds a long lock on a table the token endpoint writes to, nor takes the
store's time in one long burst. Each batch is a range of the table's time
column (``expires_at``, ``at``; both indexed): the time of the batch's last row
is looked up first (``ORDER BY ... OFFSET``), then every row from the previous
batch's end up to it is deleted, so that no batch scans the index entries of
rows deleted before it (keyset, not ``LIMIT`` from the start each time). Rows
that share a time go in the same batch, which may therefore be a little larger.

Several processes may prune at once (every worker runs the task): a row is
deleted once; a pass that finds its range already deleted by another one stops
and leaves the rest to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from issuer.clock import Clock, utc
from issuer.store.models import AuditEventRow, IssuedToken

log = logging.getLogger(__name__)

#: Rows per batch (rows sharing the last row's time go with it). A batch of 5000
#: takes PostgreSQL well under a second and locks nothing the token endpoint needs.
BATCH = 5000
#: On SQLite a batch holds the database's only write lock: token records wait for
#: it. 1000 rows keep that wait around a few hundred milliseconds on a busy machine.
SQLITE_BATCH = 1000
#: Seconds between two batches: the token endpoint's writes get the store meanwhile.
PAUSE = 0.05
#: Seconds between two pruning passes.
PRUNE_EVERY = 600.0
#: How long a token record outlives its token.
TOKEN_RECORD_GRACE = 86400


@dataclass(frozen=True)
class Pruned:
    tokens: int
    audit_events: int


async def prune(engine: AsyncEngine, clock: Clock, *, audit_retention_days: int,
                batch: int | None = None, pause: float = PAUSE,
                sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> Pruned:
    """One pruning pass; returns how many rows went. ``batch`` defaults to
    :data:`BATCH` (:data:`SQLITE_BATCH` on SQLite); ``sleep`` waits ``pause``
    seconds between two batches (tests give one that records the calls)."""
    if batch is None:
        batch = SQLITE_BATCH if engine.dialect.name == "sqlite" else BATCH
    if batch < 1:
        raise ValueError("batch must be at least 1")
    now = clock.now()
    pruner = _Pruner(engine, batch, pause, sleep)
    tokens = await pruner.delete_until(IssuedToken.expires_at, utc(now - TOKEN_RECORD_GRACE))
    events = await pruner.delete_until(AuditEventRow.at,
                                       utc(now - audit_retention_days * 86400))
    if tokens or events:
        log.info("pruned %d expired token records and %d audit events", tokens, events)
    return Pruned(tokens=tokens, audit_events=events)


class _Pruner:
    def __init__(self, engine: AsyncEngine, batch: int, pause: float,
                 sleep: Callable[[float], Awaitable[Any]]) -> None:
        self._engine = engine
        self._batch = batch
        self._pause = pause
        self._sleep = sleep
        self._batches = 0

    async def delete_until(self, column: InstrumentedAttribute[datetime],
                           cutoff: datetime) -> int:
        """Delete every row whose ``column`` is at or before ``cutoff``, oldest first."""
        table = column.class_
        total = 0
        after: datetime | None = None  # the previous batch's last time
        while True:
            if self._batches:
                await self._sleep(self._pause)
            self._batches += 1
            in_range = [column <= cutoff] + ([column > after] if after is not None else [])
            async with self._engine.begin() as connection:
                # The time of the batch's last row, or None when fewer rows are left.
                last = (await connection.execute(
                    select(column).where(*in_range).order_by(column)
                    .offset(self._batch - 1).limit(1))).scalar_one_or_none()
                end = [column <= last] if last is not None else []
                deleted = int((await connection.execute(
                    delete(table).where(*in_range, *end)
                    .execution_options(synchronize_session=False))).rowcount or 0)
            total += deleted
            if last is None:
                return total  # that was the rest
            if deleted < self._batch:
                return total  # another pass deleted them first: it carries on
            after = last
