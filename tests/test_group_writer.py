"""Group commit: concurrent writes share transactions, none is lost, none fails another."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from issuer.audit import AuditEvent, audit_row
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
