"""The group writer's own connections (raw asyncpg on PostgreSQL, sqlite3 on a
thread of its own on SQLite) store exactly what the engine would store, fail a
bad write as the engine would, and recover from a broken connection."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, StatementError

from issuer.audit import AuditEvent, audit_row
from issuer.store.bounds import unavailable
from issuer.store.db import create_engine
from issuer.store.models import AuditEventRow, IssuedToken
from issuer.store.pg_inserter import PostgresInserter
from issuer.store.sqlite_inserter import SqliteInserter
from issuer.store.writer import EngineInserter, GroupWriter, inserter_for
from tests.conftest import BACKENDS

AUDIT = AuditEventRow.__table__
TOKENS = IssuedToken.__table__
postgres_only = pytest.mark.parametrize("database_url", [b for b in BACKENDS if b == "postgres"],
                                        indirect=True)
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _token_rows(jti: str, at: datetime) -> list[tuple[Any, dict[str, Any]]]:
    """Rows as POST /token writes them (issuer.oauth.endpoints.granted_rows)."""
    token = {"jti": jti, "client_id": "c-1", "tenant_id": "t-1", "scope": "a:read b:write",
             "audience": ["https://api.example.com", "ünï"], "kid": "k-1",
             "issued_at": at, "expires_at": at + timedelta(seconds=3600), "revoked_at": None}
    event = audit_row(AuditEvent.M2M_TOKEN_GENERATED, at=at.timestamp(), actor="c-1",
                      tenant_id="t-1", client_id="c-1", source="203.0.113.7",
                      request_id=f"req-{jti}",
                      details={"jti": "same", "scopes": ["a:read", "b:write"], "n": 1.5,
                               "text": "é\"\\\n", "none": None, "secret_used": "current"})
    return [(TOKENS, token), (AUDIT, event)]


async def _stored(url: str, jti: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The token record's and audit event's columns as the database holds them:
    SQLite's type and SQL literal of each value, PostgreSQL's text form of each."""
    columns = {"issued_tokens": [c.name for c in TOKENS.columns],
               "audit_events": [c.name for c in AUDIT.columns if c.name != "id"]}
    where = {"issued_tokens": "jti", "audit_events": "request_id"}
    key = {"issued_tokens": jti, "audit_events": f"req-{jti}"}
    found: list[dict[str, Any] | None] = []
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.split("///", 1)[1])) as database:
            for table, names in columns.items():
                row = database.execute(
                    f"SELECT {', '.join(f'typeof({c}) || quote({c})' for c in names)} "
                    f"FROM {table} WHERE {where[table]} = ?", (key[table],)).fetchone()
                found.append(None if row is None else dict(zip(names, row, strict=True)))
        return found[0], found[1]
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await connection.execute("SET TIME ZONE 'UTC'")
        for table, names in columns.items():
            row = await connection.fetchrow(
                f"SELECT {', '.join(f'{c}::text' for c in names)} "
                f"FROM {table} WHERE {where[table]} = $1", key[table])
            found.append(None if row is None else dict(zip(names, row, strict=True)))
    finally:
        await connection.close()
    return found[0], found[1]


def _but(row: dict[str, Any] | None, *names: str) -> dict[str, Any]:
    assert row is not None
    return {name: value for name, value in row.items() if name not in names}


async def test_the_writers_connection_stores_byte_for_byte_what_the_engine_stores(
        engine, database_url):
    at = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    through_engine = EngineInserter(engine)
    await through_engine.insert([_token_rows("via-engine", at)])
    own = inserter_for(engine)
    assert not isinstance(own, EngineInserter)
    try:
        await own.insert([_token_rows("via-writer", at)])
    finally:
        await own.close()

    engine_token, engine_event = await _stored(database_url, "via-engine")
    writer_token, writer_event = await _stored(database_url, "via-writer")
    assert _but(writer_token, "jti") == _but(engine_token, "jti")
    assert _but(writer_event, "request_id") == _but(engine_event, "request_id")
    assert engine_event is not None and "ünï" not in engine_event["details"]  # JSON-escaped


async def test_one_batch_of_many_writes_commits_every_row(engine, database_url, clock):
    writer = GroupWriter(engine)
    await writer.start()
    at = datetime.fromtimestamp(clock.now(), UTC)
    await asyncio.gather(*(writer.write(_token_rows(f"j-{n}", at)) for n in range(300)))
    await writer.close()
    for n in (0, 150, 299):
        token, event = await _stored(database_url, f"j-{n}")
        assert token is not None and event is not None


async def test_a_bad_row_fails_its_write_alone_with_the_engines_exception(engine, clock):
    at = datetime.fromtimestamp(clock.now(), UTC)
    writer = GroupWriter(engine)
    await writer.start()
    await writer.write(_token_rows("dup", at))
    too_long = _token_rows("long", at)
    too_long[0][1]["jti"] = "x" * 65  # VARCHAR(64): refused on PostgreSQL, kept by SQLite
    results = await asyncio.gather(
        writer.write(_token_rows("ok-1", at)), writer.write(_token_rows("dup", at)),
        writer.write(too_long), writer.write(_token_rows("ok-2", at)), return_exceptions=True)
    await writer.close()
    assert results[0] is None and results[3] is None
    assert isinstance(results[1], IntegrityError) and not unavailable(results[1])
    if engine.dialect.name == "postgresql":
        assert isinstance(results[2], DataError) and not unavailable(results[2])
    # The error names the statement, never a value.
    assert "INSERT INTO issued_tokens" in str(results[1])
    assert "SQL parameters hidden" in str(results[1])
    assert "dup" not in str(results[1]).split("[SQL", 1)[1]


@postgres_only
async def test_a_postgres_connection_lost_mid_batch_fails_it_as_unavailable_then_reconnects(
        engine, database_url, clock):
    """The batch waits for a table lock; its connection is killed meanwhile."""
    inserter = PostgresInserter(engine)
    at = datetime.fromtimestamp(clock.now(), UTC)
    admin = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await inserter.insert([_token_rows("before", at)])
        locking = admin.transaction()
        await locking.start()
        await admin.execute("LOCK TABLE issued_tokens IN ACCESS EXCLUSIVE MODE")
        batch = asyncio.create_task(inserter.insert([_token_rows("lost", at)]))
        while not (waiting := await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")):
            assert not batch.done()
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", waiting)
        with pytest.raises(OperationalError) as failed:
            await batch
        assert unavailable(failed.value)
        await locking.rollback()
        await inserter.insert([_token_rows("after", at)])
    finally:
        await admin.close()
        await inserter.close()
    assert (await _stored(database_url, "lost"))[0] is None
    assert (await _stored(database_url, "after"))[0] is not None


@postgres_only
async def test_postgres_executemany_mode_stores_the_same_as_one_statement(
        engine, database_url):
    at = datetime(2026, 3, 4, 5, 6, 7, 1, tzinfo=UTC)
    for mode, jti in (("unnest", "one-statement"), ("executemany", "executemany")):
        inserter = PostgresInserter(engine, mode=mode)
        try:
            await inserter.insert([_token_rows(jti, at)])
        finally:
            await inserter.close()
    one_token, one_event = await _stored(database_url, "one-statement")
    many_token, many_event = await _stored(database_url, "executemany")
    assert _but(one_token, "jti") == _but(many_token, "jti")
    assert _but(one_event, "request_id") == _but(many_event, "request_id")


@sqlite_only
async def test_the_sqlite_writer_recovers_after_its_file_was_locked(database_url, clock):
    path = database_url.split("///", 1)[1]
    at = datetime.fromtimestamp(clock.now(), UTC)
    bounded = create_engine(database_url, timeout=0.1)
    inserter = SqliteInserter(bounded)
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(OperationalError, match="database is locked") as failed:
                await inserter.insert([_token_rows("locked", at)])
            assert unavailable(failed.value)
            other.execute("ROLLBACK")
        await inserter.insert([_token_rows("unlocked", at)])
    finally:
        await inserter.close()
        await bounded.dispose()
    assert (await _stored(database_url, "unlocked"))[0] is not None
    assert (await _stored(database_url, "locked"))[0] is None


@sqlite_only
async def test_the_sqlite_writers_commits_reach_the_database_file_by_the_checkpoint_thread(
        engine, database_url, clock, tmp_path):
    """The writer's connection leaves WAL checkpoints to a thread of their own (its
    commits only append to the WAL, far below SQLite's automatic checkpoint): by the
    time the writer is closed, every committed page was copied into the database
    file -- a copy of that file alone, without its WAL, holds every row."""
    path = database_url.split("///", 1)[1]
    writer = GroupWriter(engine)
    await writer.start()
    at = datetime.fromtimestamp(clock.now(), UTC)
    # Another connection stays open: the writer's is not the last one to close (the
    # last one checkpoints as it closes).
    with closing(sqlite3.connect(path)) as other:
        other.execute("SELECT count(*) FROM tenants").fetchone()
        for n in range(20):
            await asyncio.gather(*(writer.write(_token_rows(f"c-{n}-{m}", at))
                                   for m in range(8)))
        await writer.close()
        alone = tmp_path / "file-alone.db"
        shutil.copyfile(path, alone)
    with closing(sqlite3.connect(alone)) as database:
        assert database.execute("SELECT count(*) FROM issued_tokens").fetchone() == (160,)
        assert database.execute("SELECT count(*) FROM audit_events "
                                "WHERE event = 'M2M_TOKEN_GENERATED'").fetchone() == (160,)


async def test_a_value_its_type_refuses_fails_its_write_alone_as_a_statement_error(
        engine, clock):
    at = datetime.fromtimestamp(clock.now(), UTC)
    naive = _token_rows("naive", at)
    naive[0][1]["issued_at"] = at.replace(tzinfo=None)
    writer = GroupWriter(engine)
    await writer.start()
    results = await asyncio.gather(writer.write(_token_rows("fine", at)), writer.write(naive),
                                   return_exceptions=True)
    await writer.close()
    assert results[0] is None
    assert isinstance(results[1], StatementError) and not unavailable(results[1])
    assert "naive datetimes are not stored" in str(results[1])
