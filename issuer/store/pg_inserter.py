"""The group writer on PostgreSQL: one raw asyncpg connection, one statement per batch.

Each batch is one statement: a data-modifying ``WITH`` per table (and set of
columns) and a last ``INSERT``, each inserting ``SELECT * FROM unnest(...)`` of
one array per column. A lone statement is its own transaction: every row of the
batch commits, or none does, in one round trip (no ``BEGIN``/``COMMIT``), and
asyncpg prepares it once per shape. ``mode="executemany"`` (one prepared
``executemany`` per table inside ``BEGIN``/``COMMIT``) is kept for comparison
(bench/writer.py).

The connection is made from the engine's URL and connect arguments
(issuer.store.db): the same connect and command timeouts, ``ISSUER_STORE_TIMEOUT``.
A connection that breaks or times out is dropped and the batch fails as the store
being unavailable; the next batch connects anew. Driver errors are raised as
SQLAlchemy's (``IntegrityError``, ``OperationalError``, ...) with parameters
hidden, as the engine raises them, so callers and
:func:`issuer.store.bounds.unavailable` see no difference.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import asyncpg
from sqlalchemy import Column
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.store.db import asyncpg_arguments, connect_raw, store_options
from issuer.store.rowcodec import InsertPlan, RowEncoder, Rows

Mode = Literal["unnest", "executemany"]

#: asyncpg's errors of one statement or row, as SQLAlchemy names them; any other
#: server error is an OperationalError (the store is unavailable).
_STATEMENT_ERRORS: tuple[tuple[type[Exception], type[DBAPIError]], ...] = (
    (asyncpg.IntegrityConstraintViolationError, IntegrityError),
    (asyncpg.DataError, DataError),
    (asyncpg.exceptions.SyntaxOrAccessError, ProgrammingError),
    (asyncpg.FeatureNotSupportedError, NotSupportedError),
)
#: Errors after which the connection is not trusted again.
_BROKEN = (OSError, asyncpg.InterfaceError, asyncpg.exceptions.PostgresConnectionError,
           asyncpg.exceptions.ConnectionDoesNotExistError)


class PostgresInserter:
    def __init__(self, engine: AsyncEngine, *, mode: Mode = "unnest") -> None:
        options = store_options(engine)
        self._connect_args = asyncpg_arguments(engine)
        self._close_timeout = options.timeout
        self._encoder = RowEncoder(engine.dialect)
        self._preparer = engine.dialect.identifier_preparer
        self._mode = mode
        self._sql: dict[tuple[InsertPlan, ...], str | None] = {}
        self._connection: asyncpg.Connection | None = None

    async def insert(self, writes: list[Rows]) -> None:
        groups = self._encoder.group(writes)
        if not groups:
            return
        connection = await self._connect()
        sql = self._unnest_sql(tuple(plan for plan, _ in groups)) \
            if self._mode == "unnest" else None
        if sql is not None:
            arguments: list[Any] = []
            for plan, values in groups:
                arguments.extend(plan.columns_of(values))
            try:
                await connection.execute(sql, *arguments)
            except Exception as error:
                raise self._failed(error, sql, arguments) from error
            return
        sql = ""
        try:
            async with connection.transaction():
                for plan, values in groups:
                    sql = self._values_sql(plan)
                    await connection.executemany(sql, plan.rows(values))
        except Exception as error:
            raise self._failed(error, sql, [values for _, values in groups]) from error

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=self._close_timeout)
            except Exception:
                connection.terminate()

    async def _connect(self) -> asyncpg.Connection:
        connection = self._connection
        if connection is not None and not connection.is_closed():
            return connection
        self._connection = None
        try:
            self._connection = await connect_raw(self._connect_args)
        except Exception as error:
            raise OperationalError(None, None, error, hide_parameters=True,
                                   connection_invalidated=True) from error
        return self._connection

    def _failed(self, error: Exception, sql: str, parameters: Any) -> DBAPIError:
        """``error`` as SQLAlchemy raises it; a broken connection is dropped."""
        for driver_error, translated in _STATEMENT_ERRORS:
            if isinstance(error, driver_error):
                return translated(sql, parameters, error, hide_parameters=True)
        broken = isinstance(error, (*_BROKEN, TimeoutError))
        if broken or (self._connection is not None and self._connection.is_closed()):
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.terminate()
            broken = True
        return OperationalError(sql, parameters, error, hide_parameters=True,
                                connection_invalidated=broken)

    def _unnest_sql(self, plans: tuple[InsertPlan, ...]) -> str | None:
        """One statement for every plan: ``WITH w0 AS (INSERT ...), ... INSERT ...``;
        None if a plan has an array column (unnest would flatten it)."""
        if plans in self._sql:
            return self._sql[plans]
        inserts, number = [], 1
        for plan in plans:
            arrays = []
            for column in plan.columns:
                array = _array_type(column, self._preparer.dialect)
                if array.endswith("[][]"):
                    self._sql[plans] = None
                    return None
                arrays.append(f"${number}::{array}")
                number += 1
            # Identifiers quoted by the dialect; every value is a bound parameter.
            inserts.append(f"INSERT INTO {self._table(plan)} ({self._names(plan)}) "  # noqa: S608
                           f"SELECT * FROM unnest({', '.join(arrays)})")
        *first, last = inserts
        ctes = ", ".join(f"w{index} AS ({insert})" for index, insert in enumerate(first))
        sql = self._sql[plans] = f"WITH {ctes} {last}" if first else last
        return sql

    def _values_sql(self, plan: InsertPlan) -> str:
        placeholders = ", ".join(f"${n}" for n in range(1, len(plan.columns) + 1))
        return (f"INSERT INTO {self._table(plan)} ({self._names(plan)}) "  # noqa: S608
                f"VALUES ({placeholders})")

    def _table(self, plan: InsertPlan) -> str:
        return self._preparer.format_table(plan.table)

    def _names(self, plan: InsertPlan) -> str:
        return ", ".join(self._preparer.quote(column.name) for column in plan.columns)


def _array_type(column: Column[Any], dialect: Any) -> str:
    """The column's type as an array of its unbounded base type: a cast to
    ``varchar(64)[]`` would cut a longer value silently, where the insert into
    the column itself refuses it (DataError), as a plain insert does."""
    base = re.sub(r"\(.*?\)", "", column.type.compile(dialect=dialect)).strip()
    return f"{base}[]"
