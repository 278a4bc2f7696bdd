"""Deleting old rows in batches (``issuer.retention``), oldest first, each batch its own
short transaction: pruning a large backlog never holds a long lock on a table the token
endpoint writes to, and processes pruning at once delete each row once.

A batch is a range of the table's indexed time column: the time of the batch's last row
is looked up first (``ORDER BY ... OFFSET``), then every row from the previous batch's
end up to it is deleted -- a keyset, so no batch scans the index entries of rows deleted
before it. Rows that share a time go in the same batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute


async def delete_until(engine: AsyncEngine, column: InstrumentedAttribute[datetime],
                       cutoff: datetime, batch: int,
                       between: Callable[[], Awaitable[None]]) -> int:
    """Delete every row whose ``column`` is at or before ``cutoff``, about ``batch`` rows
    per transaction, awaiting ``between()`` before each batch after the first; how many
    went. A batch that finds fewer rows than it counted (another process deleted them
    first) ends the pass: that process carries on."""
    table = column.class_
    total = 0
    after: datetime | None = None  # the previous batch's last time
    first = True
    while True:
        if not first:
            await between()
        first = False
        in_range = [column <= cutoff] + ([column > after] if after is not None else [])
        async with engine.begin() as connection:
            # The time of the batch's last row, or None when fewer rows are left.
            last = (await connection.execute(
                select(column).where(*in_range).order_by(column)
                .offset(batch - 1).limit(1))).scalar_one_or_none()
            end = [column <= last] if last is not None else []
            deleted = int((await connection.execute(
                delete(table).where(*in_range, *end)
                .execution_options(synchronize_session=False))).rowcount or 0)
        total += deleted
        if last is None or deleted < batch:
            return total
        after = last
