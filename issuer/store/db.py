"""Engine creation: one async engine per process, tuned per backend.

Every engine hides SQL parameters from its error messages (``hide_parameters``):
an error that reaches a log names the statement, never a value bound to it.

``timeout`` bounds every database call (issuer.store.bounds): the serving process
passes ``ISSUER_STORE_TIMEOUT``. The CLI passes none -- a migration may rightly run
for minutes -- and SQLite then waits :data:`SQLITE_BUSY_TIMEOUT` for a lock.

The group writer makes connections of its own beside the engine's pool
(issuer.store.writer): :func:`store_options` gives them what the engine was
made with (the same timeouts), :func:`sqlite_pragmas` the same SQLite settings.

A new SQLite file is created with mode 0600 before SQLite opens it: it holds the
encrypted signing keys and the clients' secret digests. SQLite gives its ``-wal``
and ``-shm`` files the database file's mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from weakref import WeakKeyDictionary

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

#: Seconds SQLite waits for another connection's lock when no timeout is given
#: (the CLI and the server share the file).
SQLITE_BUSY_TIMEOUT = 10.0


@dataclass(frozen=True)
class StoreOptions:
    """What :func:`create_engine` was given, for connections made beside the engine's
    pool (the group writer's own: issuer.store.pg_inserter, issuer.store.sqlite_inserter).
    ``timeout`` is ``ISSUER_STORE_TIMEOUT`` (None: unbounded, as for the CLI);
    ``connect_args`` the driver's keyword arguments (asyncpg's timeouts)."""

    timeout: float | None = None
    connect_args: dict[str, Any] = field(default_factory=dict)

    @property
    def sqlite_busy_timeout(self) -> float:
        return SQLITE_BUSY_TIMEOUT if self.timeout is None else self.timeout


_OPTIONS: WeakKeyDictionary[Engine, StoreOptions] = WeakKeyDictionary()


def store_options(engine: AsyncEngine) -> StoreOptions:
    """The options ``engine`` was made with (defaults for an engine made elsewhere)."""
    return _OPTIONS.get(engine.sync_engine, StoreOptions())


def create_engine(database_url: str, *, timeout: float | None = None,
                  **options: Any) -> AsyncEngine:
    options.setdefault("hide_parameters", True)
    if timeout is not None and not _in_memory(database_url):
        options.setdefault("pool_timeout", timeout)  # waiting for a pooled connection
    if database_url.startswith("sqlite"):
        if not _in_memory(database_url):
            _create_private_file(make_url(database_url).database or "")
        engine = create_async_engine(database_url, **options)
        stored = StoreOptions(timeout, dict(options.get("connect_args", {})))
        _OPTIONS[engine.sync_engine] = stored
        event.listen(engine.sync_engine, "connect",
                     partial(_sqlite_pragmas, stored.sqlite_busy_timeout))
        return engine
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 10)
    options.setdefault("pool_pre_ping", True)
    if timeout is not None:
        # asyncpg: ``timeout`` bounds connecting, ``command_timeout`` every statement
        # (BEGIN, the ping, COMMIT included).
        options.setdefault("connect_args", {"timeout": timeout, "command_timeout": timeout})
    engine = create_async_engine(database_url, **options)
    _OPTIONS[engine.sync_engine] = StoreOptions(timeout, dict(options.get("connect_args", {})))
    return engine


def asyncpg_arguments(engine: AsyncEngine) -> dict[str, Any]:
    """``asyncpg.connect`` keyword arguments for a PostgreSQL connection beside
    ``engine``'s pool (the group writer's, the LISTEN of change notices): the URL's,
    plus what the engine was made with (its timeouts)."""
    _, params = engine.dialect.create_connect_args(engine.url)
    arguments: dict[str, Any] = {**params, **store_options(engine).connect_args}
    # SQLAlchemy's own arguments of its asyncpg adapter (from the URL's query).
    cache_size = arguments.pop("prepared_statement_cache_size", None)
    if cache_size is not None:
        arguments["statement_cache_size"] = int(cache_size)
    for name in ("prepared_statement_name_func", "async_creator_fn"):
        arguments.pop(name, None)
    return arguments


async def connect_raw(arguments: dict[str, Any]) -> asyncpg.Connection:
    """``asyncpg.connect(**arguments)`` (:func:`asyncpg_arguments`). Cancelled mid-connect
    (an app stopping as it starts), it lets the connect end -- bounded by its
    ``timeout`` -- and closes what it opened: a connect cut short leaves asyncpg a failed
    future nobody reads, logged as "Future exception was never retrieved"."""
    connecting = asyncio.ensure_future(asyncpg.connect(**arguments))
    try:
        return await asyncio.shield(connecting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            (await connecting).terminate()
        raise


def is_sqlite_file(database_url: str) -> bool:
    """A SQLite database in a plain file, which a connection beside the engine's sees."""
    return database_url.startswith("sqlite") and not _in_memory(database_url)


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database (the readiness probe); raises if it fails."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def _in_memory(database_url: str) -> bool:
    """An SQLite database that is no plain file (memory, or a URI SQLite resolves)."""
    url = make_url(database_url)
    path = url.database
    return url.get_backend_name() == "sqlite" and (
        not path or path == ":memory:" or path.startswith("file:") or "uri" in url.query)


def _create_private_file(path: str) -> None:
    """Create a new SQLite database file with mode 0600 (an existing one is left as is)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (FileExistsError, FileNotFoundError):
        return  # there already, or no such directory (SQLite will say so)
    os.close(descriptor)


def _sqlite_pragmas(busy_timeout: float, dbapi_connection: DBAPIConnection,
                    _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    for statement in sqlite_pragmas(busy_timeout):
        cursor.execute(statement)
    cursor.close()


def sqlite_pragmas(busy_timeout: float) -> list[str]:
    """What every connection to a SQLite store runs first (the engine's and the
    group writer's own)."""
    return [
        # WAL lets readers run while the group writer commits; synchronous=FULL keeps
        # every commit durable (group commit pays one fsync per batch, not per token).
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        # How long a statement waits for another connection's lock before "database is locked".
        f"PRAGMA busy_timeout={round(busy_timeout * 1000)}",
        "PRAGMA foreign_keys=ON",
    ]
