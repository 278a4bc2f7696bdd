"""The group writer on SQLite: one sqlite3 connection on one thread of its own.

Every batch is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on that connection, with
one ``executemany`` per table (and set of columns): one hop to the thread per
batch, not one per statement as through aiosqlite, and no SQLAlchemy statement
compilation. Each transaction is taken under :class:`issuer.store.write_lock.WriteLock`,
so the writers of several worker processes hand the file's write lock to each
other without SQLite's sleep-and-retry. The connection runs the pragmas of every store connection
(issuer.store.db: WAL, ``synchronous=FULL``, ``busy_timeout`` from
``ISSUER_STORE_TIMEOUT``, foreign keys), and leaves WAL checkpoints to
:class:`issuer.store.checkpoint.Checkpointer`, off the commit path.

sqlite3's errors are raised as SQLAlchemy's (``IntegrityError``,
``OperationalError``, ...) with parameters hidden, as the engine raises them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.store.checkpoint import WRITER_AUTOCHECKPOINT, Checkpointer
from issuer.store.db import sqlite_pragmas, store_options
from issuer.store.rowcodec import InsertPlan, RowEncoder, Rows
from issuer.store.write_lock import WriteLock


class SqliteInserter:
    def __init__(self, engine: AsyncEngine, *, checkpoints: bool = True) -> None:
        self._path = engine.url.database or ""
        self._busy_timeout = store_options(engine).sqlite_busy_timeout
        self._encoder = RowEncoder(engine.dialect)
        self._preparer = engine.dialect.identifier_preparer
        self._sql: dict[InsertPlan, str] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._connection: sqlite3.Connection | None = None  # used on the executor's thread only
        self._write_lock = WriteLock(self._path)  # the writers of other processes take turns
        self._checkpointer = Checkpointer(self._path, busy_timeout=self._busy_timeout) \
            if checkpoints else None
        self._checkpointer_started = False

    async def insert(self, writes: list[Rows]) -> None:
        groups = self._encoder.group(writes)
        if not groups:
            return
        statements = [(self._statement(plan), plan.rows(values)) for plan, values in groups]
        await asyncio.get_running_loop().run_in_executor(self._executor, self._insert, statements)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._stop)
        self._executor.shutdown(wait=True)

    def _statement(self, plan: InsertPlan) -> str:
        found = self._sql.get(plan)
        if found is None:
            names = ", ".join(self._preparer.quote(column.name) for column in plan.columns)
            marks = ", ".join("?" * len(plan.columns))
            # Identifiers quoted by the dialect; every value is a bound parameter.
            table = self._preparer.format_table(plan.table)
            found = self._sql[plan] = f"INSERT INTO {table} ({names}) VALUES ({marks})"  # noqa: S608
        return found

    # On the writer's thread ---------------------------------------------------------

    def _insert(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        connection = self._connection or self._open()
        try:
            self._write_lock.acquire()
        except OSError as error:
            raise exc.OperationalError(None, None, error, hide_parameters=True) from error
        sql = "BEGIN IMMEDIATE"
        try:
            connection.execute(sql)
            for sql, rows in statements:
                connection.executemany(sql, rows)
            sql = "COMMIT"
            connection.execute(sql)
        except sqlite3.Error as error:
            self._rollback(connection)
            raise _translated(error, sql, [rows for _, rows in statements]) from error
        finally:
            self._write_lock.release()
        if self._checkpointer is not None:
            self._checkpointer.committed()

    def _open(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self._path, isolation_level=None,
                                         check_same_thread=False, cached_statements=64)
            for pragma in sqlite_pragmas(self._busy_timeout):
                connection.execute(pragma)
            if self._checkpointer is not None:
                connection.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT}")
        except sqlite3.Error as error:
            raise _translated(error, None, None) from error
        self._connection = connection
        if self._checkpointer is not None and not self._checkpointer_started:
            self._checkpointer_started = True
            self._checkpointer.start()
        return connection

    def _rollback(self, connection: sqlite3.Connection) -> None:
        if not connection.in_transaction:
            return
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            self._close()  # a fresh connection for the next batch

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _stop(self) -> None:
        self._close()
        self._write_lock.close()
        if self._checkpointer is not None and self._checkpointer_started:
            self._checkpointer.close()


def _translated(error: sqlite3.Error, sql: str | None, parameters: Any) -> exc.DBAPIError:
    """``error`` as SQLAlchemy's exception of the same name (sqlite3's names are the
    DB-API's), parameters hidden."""
    for kind in type(error).__mro__:
        translated = getattr(exc, kind.__name__, None)
        if isinstance(translated, type) and issubclass(translated, exc.DBAPIError):
            return translated(sql, parameters, error, hide_parameters=True)
    return exc.DBAPIError(sql, parameters, error, hide_parameters=True)
