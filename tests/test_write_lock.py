"""The SQLite group writers of several processes take turns through a ``flock``
(issuer.store.write_lock): a writer waits while another holds the turn, commits
as soon as it is released, and gives its own turn back after every transaction,
committed or failed."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from issuer.audit import AuditEvent, audit_row
from issuer.store.checkpoint import Checkpointer
from issuer.store.models import AuditEventRow, IssuedToken
from issuer.store.sqlite_inserter import SqliteInserter
from issuer.store.write_lock import SUFFIX, WriteLock

AUDIT = AuditEventRow.__table__
TOKENS = IssuedToken.__table__
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _rows(jti: str, at: datetime) -> list[tuple[Any, dict[str, Any]]]:
    token = {"jti": jti, "client_id": "c-1", "tenant_id": "t-1", "scope": "a:read",
             "audience": ["https://api.example.com"], "kid": "k-1", "issued_at": at,
             "expires_at": at, "revoked_at": None}
    event = audit_row(AuditEvent.M2M_TOKEN_GENERATED, at=at.timestamp(), actor="c-1",
                      tenant_id="t-1", client_id="c-1", request_id=f"req-{jti}",
                      details={"jti": jti})
    return [(TOKENS, token), (AUDIT, event)]


@contextmanager
def _turn_held_elsewhere(database: str) -> Iterator[int]:
    """The writers' lock taken as another process's writer takes it (an open file
    description of its own)."""
    fd = os.open(database + SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _free(database: str) -> bool:
    """Whether the turn can be taken right now."""
    fd = os.open(database + SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _count(database: str) -> int:
    with closing(sqlite3.connect(database)) as connection:
        return int(connection.execute("SELECT count(*) FROM issued_tokens").fetchone()[0])


@sqlite_only
async def test_a_writer_waits_for_another_writers_turn_and_commits_once_it_is_released(
        engine, database_url, clock):
    database = database_url.split("///", 1)[1]
    at = datetime.fromtimestamp(clock.now(), UTC)
    inserter = SqliteInserter(engine)
    try:
        with _turn_held_elsewhere(database) as fd:
            insert = asyncio.ensure_future(inserter.insert([_rows("waited", at)]))
            done, _ = await asyncio.wait({insert}, timeout=0.2)
            assert not done and _count(database) == 0
            fcntl.flock(fd, fcntl.LOCK_UN)
            await insert
        assert _count(database) == 1
        assert _free(database)  # given back after the commit
    finally:
        await inserter.close()


@sqlite_only
async def test_a_failed_transaction_gives_the_turn_back(engine, database_url, clock):
    database = database_url.split("///", 1)[1]
    at = datetime.fromtimestamp(clock.now(), UTC)
    inserter = SqliteInserter(engine)
    try:
        await inserter.insert([_rows("once", at)])
        with pytest.raises(IntegrityError):
            await inserter.insert([_rows("once", at)])
        assert _free(database)
        await inserter.insert([_rows("twice", at)])
    finally:
        await inserter.close()
    assert _count(database) == 2


def test_the_lock_file_lies_beside_the_database_and_is_opened_once(tmp_path):
    database = str(tmp_path / "issuer.db")
    lock = WriteLock(database)
    for _ in range(2):
        lock.acquire()
        assert not _free(database)
        lock.release()
        assert _free(database)
    assert (tmp_path / "issuer.db-writer.lock").is_file()
    lock.close()
    lock.close()



def test_a_checkpoint_lets_the_wal_start_over_while_writers_keep_writing(tmp_path):
    """The checkpoint's second pass holds the writers' turn and copies what a writer
    appended during the first: the next transaction rewinds the WAL, so a store
    written to without a pause keeps a short WAL instead of one that grows to the
    writer's automatic checkpoint."""
    database = str(tmp_path / "wal.db")
    lock = WriteLock(database)
    with closing(sqlite3.connect(database, isolation_level=None,
                                 check_same_thread=False)) as writer:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("CREATE TABLE t (v TEXT)")

        def commit(size: int) -> None:
            lock.acquire()
            try:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("INSERT INTO t VALUES (?)", ("x" * size,))
                writer.execute("COMMIT")
            finally:
                lock.release()

        for n in range(1, 50):
            commit(2000 * n)
        checkpointer = Checkpointer(database, busy_timeout=1.0, interval=3600)
        turn = checkpointer._write_lock
        take, give_back = turn.acquire, turn.release
        passed = threading.Event()

        def acquire() -> None:
            commit(100_000)  # a writer's commit between the two passes
            take()

        def release() -> None:
            give_back()
            passed.set()

        turn.acquire, turn.release = acquire, release  # type: ignore[method-assign]
        checkpointer.start()
        checkpointer.committed()
        assert passed.wait(10)
        commit(10)
        frames = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        checkpointer.close()
    lock.close()
    assert frames <= 3  # the WAL started over: the last commit's frames only
