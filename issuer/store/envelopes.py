"""Reading and swapping encrypted values column by column (``issuer reencrypt``):
batches in primary-key order, each value rewritten only if it still holds what was
read (compare-and-swap), so a concurrent writer's newer value is never overwritten."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class Column:
    """One column of envelopes: its ``table``, the single-column primary ``key``, and
    the further ``context`` columns a row's associated data is made of."""

    table: Table
    key: str
    column: str
    context: tuple[str, ...] = ()


async def batch(connection: AsyncConnection, column: Column, after: Any,
                size: int) -> Sequence[Mapping[str, Any]]:
    """Up to ``size`` rows holding a value, past primary key ``after`` (None: from the
    start), in key order: the key, the value and the context columns of each."""
    key, value = column.table.c[column.key], column.table.c[column.column]
    context = [column.table.c[name] for name in column.context]
    statement = select(key, value, *context).where(value.is_not(None)).order_by(key).limit(size)
    if after is not None:
        statement = statement.where(key > after)
    return [dict(row) for row in (await connection.execute(statement)).mappings()]


async def swap(connection: AsyncConnection, column: Column, primary_key: Any, old: bytes,
               new: bytes) -> bool:
    """Set the row's value to ``new`` if it still is ``old``; whether it was."""
    key, value = column.table.c[column.key], column.table.c[column.column]
    result = await connection.execute(
        update(column.table).where(key == primary_key, value == old)
        .values({column.column: new}))
    return bool(result.rowcount == 1)
