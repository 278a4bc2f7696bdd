"""Key pairs and certificate rotation through the service: state
changes of initiate/confirm/cancel, the overlap window at the simulator, and concurrent
confirmations -- exactly one wins, on Redis and on the database fallback."""

from __future__ import annotations

import asyncio
import logging

import pytest
from cryptography import x509
from sqlalchemy import select

from connectors.netsuite import (
    KeyPairExists,
    NoKeyPair,
    NoRotationInProgress,
    RotationBusy,
    RotationInProgress,
)
from connectors.netsuite.cache import rotation_lock_key
from connectors.netsuite.kms import KeyNotFound
from connectors.netsuite.tables import EncryptedKeyRow
from issuer.store.models import AuditEventRow
from tests.netsuite.conftest import ACTOR


async def _keys(engine, connector_id: str) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(EncryptedKeyRow.key_id)
                                        .where(EncryptedKeyRow.connector_id == connector_id))
        return set(rows.scalars())


async def _events(engine) -> list[tuple[str, dict]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(AuditEventRow.event, AuditEventRow.details)
                                        .order_by(AuditEventRow.id))
        return [(event, details) for event, details in rows if event.startswith("NETSUITE")]


async def test_a_second_key_pair_is_refused(service, ready_connector):
    record = await ready_connector(service)
    with pytest.raises(KeyPairExists, match="Use the rotation endpoint"):
        await service.generate_key_pair(record.id, ACTOR)


async def test_initiate_confirm_state_changes(service, ready_connector, simulator, engine,
                                             clock):
    record = await ready_connector(service)
    old_token = await service.get_or_refresh_access_token(record.id)
    pem = await service.initiate_rotation(record.id, ACTOR)
    pending = await service.get(record.id)
    assert pending.rotation_in_progress and pending.secondary_key_id is not None
    assert pending.rotation_initiated_at == clock.now()
    assert (pending.primary_key_id, pending.active_key_id, pending.active_certificate_id) == (
        record.primary_key_id, record.active_key_id, record.active_certificate_id)
    assert x509.load_pem_x509_certificate(pem.encode())  # the new certificate to upload
    assert await service.get_or_refresh_access_token(record.id) == old_token  # still the old

    new_certificate_id = simulator.upload(pem, record.client_id)  # overlap: both active
    clock.advance(10)
    confirmed = await service.confirm_rotation(record.id, new_certificate_id, ACTOR)
    assert confirmed.primary_key_id == confirmed.active_key_id == pending.secondary_key_id
    assert confirmed.secondary_key_id is None and confirmed.rotation_initiated_at is None
    assert confirmed.active_certificate_id == new_certificate_id
    assert confirmed.certificate_expires_at == x509.load_pem_x509_certificate(
        pem.encode()).not_valid_after_utc.timestamp()
    assert await _keys(engine, record.id) == {pending.secondary_key_id}  # old key deleted

    fresh = await service.get_or_refresh_access_token(record.id)  # cache was busted
    assert fresh != old_token and simulator.token_requests == 2
    assert simulator.tokens[fresh.access_token].certificate_id == new_certificate_id
    events = [event for event, _ in await _events(engine)]
    assert events[-2:] == ["NETSUITE_ROTATION_INITIATED", "NETSUITE_ROTATION_CONFIRMED"]


async def test_initiate_twice_is_refused_and_cancel_discards_the_pending_key(
        service, ready_connector, engine):
    record = await ready_connector(service)
    await service.initiate_rotation(record.id, ACTOR)
    with pytest.raises(RotationInProgress, match="Rotation already in progress"):
        await service.initiate_rotation(record.id, ACTOR)
    pending = await service.get(record.id)
    cancelled = await service.cancel_rotation(record.id, ACTOR)
    assert not cancelled.rotation_in_progress and cancelled.rotation_initiated_at is None
    assert cancelled.active_key_id == record.active_key_id
    assert await _keys(engine, record.id) == {record.primary_key_id}
    assert pending.secondary_key_id not in await _keys(engine, record.id)
    with pytest.raises(NoRotationInProgress):
        await service.cancel_rotation(record.id, ACTOR)
    with pytest.raises(NoRotationInProgress):
        await service.confirm_rotation(record.id, "abc", ACTOR)
    assert [event for event, _ in await _events(engine)][-2:] == [
        "NETSUITE_ROTATION_INITIATED", "NETSUITE_ROTATION_CANCELLED"]


async def test_no_rotation_without_a_key_pair(service, ready_connector, tenant_id):
    from connectors.netsuite import ConnectorSpec
    created = await service.create(ConnectorSpec(
        tenant_id=tenant_id, name="n", account_id="1234567", client_id="c",
        scopes=["restlets"], algorithm="ES256"), ACTOR)
    with pytest.raises(NoKeyPair):
        await service.initiate_rotation(created.id, ACTOR)
    with pytest.raises(NoKeyPair):
        await service.certificate(created.id)


async def test_confirming_with_the_current_certificate_id_is_refused(service, ready_connector):
    from connectors.netsuite import InvalidConnector
    record = await ready_connector(service)
    await service.initiate_rotation(record.id, ACTOR)
    with pytest.raises(InvalidConnector, match="current certificate"):
        await service.confirm_rotation(record.id, record.active_certificate_id, ACTOR)
    assert (await service.get(record.id)).rotation_in_progress


@pytest.mark.parametrize("redis", [True, False], ids=["redis-lock", "database-fallback"])
async def test_ten_concurrent_confirms_exactly_one_succeeds(make_service, ready_connector,
                                                            simulator, engine, redis):
    service = make_service(redis=redis)
    record = await ready_connector(service)
    pem = await service.initiate_rotation(record.id, ACTOR)
    certificate_id = simulator.upload(pem, record.client_id)
    results = await asyncio.gather(*(service.confirm_rotation(record.id, certificate_id, ACTOR)
                                     for _ in range(10)), return_exceptions=True)
    wins = [result for result in results if not isinstance(result, Exception)]
    losses = [result for result in results if isinstance(result, Exception)]
    assert len(wins) == 1
    assert all(isinstance(loss, NoRotationInProgress | RotationBusy) for loss in losses), losses
    confirmed = [event for event, _ in await _events(engine)
                 if event == "NETSUITE_ROTATION_CONFIRMED"]
    assert len(confirmed) == 1
    final = await service.get(record.id)
    assert final.active_certificate_id == certificate_id and not final.rotation_in_progress


async def test_ten_concurrent_confirms_on_two_instances_sharing_redis(
        make_service, ready_connector, simulator, engine):
    first, second = make_service(redis=True), make_service(redis=True)
    record = await ready_connector(first)
    certificate_id = simulator.upload(await first.initiate_rotation(record.id, ACTOR),
                                      record.client_id)
    results = await asyncio.gather(*(service.confirm_rotation(record.id, certificate_id, ACTOR)
                                     for _ in range(5) for service in (first, second)),
                                   return_exceptions=True)
    assert sum(not isinstance(result, Exception) for result in results) == 1


async def test_a_held_rotation_lock_is_503_busy(make_service, ready_connector, simulator,
                                                redis_url):
    from redis.asyncio import Redis
    service = make_service(redis=True)
    record = await ready_connector(service)
    await service.initiate_rotation(record.id, ACTOR)
    other = Redis.from_url(redis_url)
    try:
        lock = other.lock(rotation_lock_key(record.id), timeout=30)
        assert await lock.acquire(blocking=False)
        with pytest.raises(RotationBusy):
            await service.confirm_rotation(record.id, "NewCertificateId", ACTOR)
        assert await other.pttl(rotation_lock_key(record.id)) > 29_000  # 30 s lock
        await lock.release()
    finally:
        await other.aclose()
    assert (await service.confirm_rotation(record.id, "NewCertificateId", ACTOR)).secondary_key_id \
        is None


async def test_a_failed_delete_of_the_old_key_is_logged_not_raised(
        service, ready_connector, simulator, caplog):
    record = await ready_connector(service)
    pem = await service.initiate_rotation(record.id, ACTOR)

    async def broken_delete(**_: str) -> bool:
        raise OSError("disk on fire")

    service.kms.delete = broken_delete  # type: ignore[method-assign]
    confirmed = await service.confirm_rotation(record.id, simulator.upload(pem, record.client_id),
                                               ACTOR)
    assert confirmed.active_key_id != record.active_key_id
    assert "could not delete NetSuite key" in caplog.text


async def test_keys_are_encrypted_and_bound_to_their_connector(service, ready_connector,
                                                              engine):
    record = await ready_connector(service)
    async with engine.connect() as connection:
        sealed = (await connection.execute(select(EncryptedKeyRow.private_key_encrypted)
                                           .where(EncryptedKeyRow.key_id ==
                                                  record.active_key_id))).scalar_one()
    assert b"PRIVATE KEY" not in sealed
    with pytest.raises(KeyNotFound):
        await service.kms.get(tenant_id=record.tenant_id, connector_id="other",
                              key_id=record.active_key_id)
    assert await service.kms.get(tenant_id=record.tenant_id, connector_id=record.id,
                                 key_id=record.active_key_id)


async def test_the_audit_log_never_holds_key_material(service, ready_connector, engine):
    logging.getLogger().setLevel(logging.INFO)
    record = await ready_connector(service)
    await service.initiate_rotation(record.id, ACTOR)
    for event, details in await _events(engine):
        assert "PRIVATE" not in str(details) and "BEGIN" not in str(details), event
