"""Retention: the background task that prunes what no one needs any more.

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

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from issuer.clock import Clock, utc
from issuer.store import purge
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
    batches = 0

    async def between() -> None:
        await sleep(pause)

    async def until(column: InstrumentedAttribute[datetime], cutoff: datetime) -> int:
        nonlocal batches
        if batches:
            await between()  # the pause also separates the two tables' passes
        batches += 1
        return await purge.delete_until(engine, column, cutoff, batch, between)

    tokens = await until(IssuedToken.expires_at, utc(now - TOKEN_RECORD_GRACE))
    events = await until(AuditEventRow.at, utc(now - audit_retention_days * 86400))
    if tokens or events:
        log.info("pruned %d expired token records and %d audit events", tokens, events)
    return Pruned(tokens=tokens, audit_events=events)
