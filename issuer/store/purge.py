"""Deleting old rows in batches (``issuer.retention``), each batch its own short
transaction: pruning a large backlog never holds a long lock on a table the token
endpoint writes to, and processes pruning at once delete each row once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute


async def delete_batches(engine: AsyncEngine, key: InstrumentedAttribute[Any],
                         column: InstrumentedAttribute[datetime], before: datetime,
                         batch_size: int) -> int:
    """Delete the rows whose ``column`` is at or before ``before``, ``batch_size`` at a
    time (by primary ``key``); how many went."""
    total = 0
    while True:
        batch = select(key).where(column <= before).limit(batch_size).scalar_subquery()
        async with engine.begin() as connection:
            result = await connection.execute(
                delete(key.class_).where(key.in_(batch))
                .execution_options(synchronize_session=False))
        deleted = int(result.rowcount or 0)
        total += deleted
        if deleted < batch_size:
            return total
