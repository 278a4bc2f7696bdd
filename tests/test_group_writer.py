"""Group commit: concurrent writes share transactions, none is lost, none fails another."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from contextlib import closing

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from issuer.audit import AuditEvent, audit_row
from issuer.store.bounds import StoreTimeout
from issuer.store.db import create_engine
from issuer.store.models import AuditEventRow, Tenant
from issuer.store.writer import GroupWriter, WriterClosed
from tests.conftest import store_independent

AUDIT = AuditEventRow.__table__


async def _count(engine, event: AuditEvent) -> int:
    statement = select(func.count()).select_from(AUDIT).where(AUDIT.c.event == event.value)
    async with engine.connect() as connection:
        return (await connection.execute(statement)).scalar_one()


async def test_concurrent_writes_are_all_committed(engine, clock):
    writer = GroupWriter(engine)
    await writer.start()
    rows = [[(AUDIT, audit_row(AuditEvent.M2M_TOKEN_DENIED, at=clock.now(),
                               details={"n": i}))] for i in range(200)]
    await asyncio.gather(*(writer.write(r) for r in rows))
    await writer.close()
    assert await _count(engine, AuditEvent.M2M_TOKEN_DENIED) == 200


async def test_a_failing_write_does_not_fail_its_neighbours(engine, clock):
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    tenant = {"id": "t1", "name": "dup", "name_key": "dup", "status": "active", "created_at": now,
              "updated_at": now}
    writer = GroupWriter(engine)
    await writer.start()
    await writer.write([(Tenant.__table__, tenant)])
    good = [(AUDIT, audit_row(AuditEvent.M2M_TOKEN_DENIED, at=clock.now()))]
    # The duplicate tenant and its audit row must fail together (one transaction),
    # and the good writes queued beside it must land.
    bad = [(AUDIT, audit_row(AuditEvent.TENANT_CREATED, at=clock.now())),
           (Tenant.__table__, tenant)]
    results = await asyncio.gather(writer.write(good), writer.write(bad), writer.write(good),
                                   return_exceptions=True)
    await writer.close()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], IntegrityError)
    assert await _count(engine, AuditEvent.M2M_TOKEN_DENIED) == 2
    assert await _count(engine, AuditEvent.TENANT_CREATED) == 0


@store_independent
async def test_writing_after_close_is_refused(engine):
    writer = GroupWriter(engine)
    await writer.start()
    await writer.close()
    with pytest.raises(WriterClosed):
        await writer.write([])


@pytest.fixture
def locked_sqlite(tmp_path, sqlite_template):
    """A SQLite store whose write lock another connection holds, and its URL."""
    path = tmp_path / "locked.db"
    shutil.copyfile(sqlite_template, path)
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        yield f"sqlite+aiosqlite:///{path}"
        other.execute("ROLLBACK")


async def test_a_batch_that_meets_an_unavailable_store_fails_at_once(locked_sqlite, clock):
    """Retrying 40 writes one by one would wait for the lock 40 times."""
    engine = create_engine(locked_sqlite, timeout=0.2)
    writer = GroupWriter(engine)
    await writer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(writer.write(
        [(AUDIT, audit_row(AuditEvent.M2M_TOKEN_DENIED, at=clock.now()))]) for _ in range(40)),
        return_exceptions=True)
    elapsed = loop.time() - started
    await writer.close()
    await engine.dispose()
    assert all(isinstance(result, OperationalError) for result in results)
    assert "database is locked" in str(results[0])
    assert elapsed < 3  # two batches (the first write alone, then 39) of 0.2 s each


async def test_a_full_queue_refuses_a_write_at_once_and_a_wait_is_bounded(locked_sqlite, clock):
    engine = create_engine(locked_sqlite, timeout=1.0)
    writer = GroupWriter(engine, max_pending=16, max_wait=0.2)
    await writer.start()
    rows = [(AUDIT, audit_row(AuditEvent.M2M_TOKEN_DENIED, at=clock.now()))]
    waiting = [asyncio.create_task(writer.write(rows)) for _ in range(16)]
    await asyncio.sleep(0)  # one turn of the loop: the 16 are queued, none taken yet
    assert writer.pending == 16
    with pytest.raises(StoreTimeout, match="queue is full"):
        await writer.write(rows)
    # The 16 wait for the lock (1 s) no longer than max_wait.
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert [type(result) for result in results] == [StoreTimeout] * 16
    await writer.close()
    await engine.dispose()
