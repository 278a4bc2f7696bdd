"""Automatic rotation through NetSuite's certificate API, the revocation of the old
certificate after the overlap, and expiry warnings."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from connectors.netsuite import InvalidConnector, NoRotationInProgress
from connectors.netsuite.autorotation import AutoRotationUnavailable, check_expiry
from connectors.netsuite.certificates_api import CertificateApiFailed
from connectors.netsuite.keys import generate_key_pair
from connectors.netsuite.token_client import TokenRequestFailed
from issuer.store.models import AuditEventRow
from tests.admin.test_tenants_api import bearer
from tests.conftest import issue_token
from tests.netsuite.conftest import ACTOR
from tests.netsuite.test_api import BASE, ready

ENTITY, ROLE = -5, 3


def active(simulator, client_id: str) -> set[str]:
    return {c.certificate_id for c in simulator.certificates.values()
            if c.client_id == client_id and not c.revoked}


async def events(engine, name: str) -> list[dict]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(AuditEventRow.details)
                                        .where(AuditEventRow.event == name))
        return list(rows.scalars())


async def test_auto_rotation_uploads_proves_switches_then_revokes_after_the_overlap(
        service, ready_connector, simulator, clock, engine):
    record = await ready_connector(service)
    old = record.active_certificate_id
    await service.get_or_refresh_access_token(record.id)
    rotated = await service.auto_rotate(record.id, entity=ENTITY, role=ROLE, actor=ACTOR)
    new = rotated.active_certificate_id
    assert new != old and active(simulator, record.client_id) == {old, new}  # the overlap
    uploaded = simulator.certificates[new]
    assert (uploaded.entity, uploaded.role) == (ENTITY, ROLE)
    assert rotated.retiring_certificate_id == old
    assert rotated.retiring_certificate_revoke_at == clock.now() + 3900
    assert not rotated.rotation_in_progress and rotated.active_key_id != record.active_key_id
    cached = await service.get_or_refresh_access_token(record.id)
    assert simulator.tokens[cached.access_token].certificate_id == new
    assert simulator.token_requests == 2  # the old token, and the proof of the new certificate

    clock.advance(3899)
    await service.maintain()
    assert active(simulator, record.client_id) == {old, new}
    clock.advance(1)
    await service.maintain()
    assert active(simulator, record.client_id) == {new}
    done = await service.get(record.id)
    assert done.retiring_certificate_id is None and done.retiring_certificate_revoke_at is None
    assert await events(engine, "NETSUITE_CERTIFICATE_REVOKED") == [
        {"connector_id": record.id, "certificate_id": old}]
    confirmed = await events(engine, "NETSUITE_ROTATION_CONFIRMED")
    assert confirmed[-1]["automatic"] is True
    await service.maintain()  # nothing left to do
    assert len(await events(engine, "NETSUITE_CERTIFICATE_REVOKED")) == 1


async def test_a_refused_upload_leaves_everything_as_it_was(service, ready_connector,
                                                           simulator):
    record = await ready_connector(service)
    for _ in range(4):  # the integration's 5 active certificates are all taken
        from datetime import UTC, datetime

        from tests.netsuite.test_simulator import SUBJECT, certificate_pem, generate_certificate
        simulator.upload(certificate_pem(generate_certificate(
            generate_key_pair("ES256"), "ES256", SUBJECT, datetime.now(UTC))), record.client_id)
    with pytest.raises(CertificateApiFailed, match="HTTP 400: at most 5 active certificates"):
        await service.auto_rotate(record.id, entity=ENTITY, role=ROLE, actor=ACTOR)
    after = await service.get(record.id)
    assert after.active_certificate_id == record.active_certificate_id
    assert not after.rotation_in_progress and after.retiring_certificate_id is None


async def test_a_new_certificate_that_does_not_work_is_revoked_and_nothing_switches(
        service, ready_connector, simulator):
    record = await ready_connector(service)
    upload = simulator.upload

    def upload_then_break(*args, **options):  # NetSuite takes it but will not honour it
        certificate_id = upload(*args, **options)
        simulator.certificates[certificate_id].not_after = 0
        return certificate_id

    simulator.upload = upload_then_break
    seen: list[str | None] = []
    authenticate = service.authenticate

    async def watch(connector):  # the uploaded Certificate ID is on record before the proof
        seen.append((await service.get(record.id)).pending_certificate_id)
        return await authenticate(connector)

    service.authenticate = watch
    with pytest.raises(TokenRequestFailed, match="invalid_grant"):
        await service.auto_rotate(record.id, entity=ENTITY, role=ROLE, actor=ACTOR)
    assert seen[-1] in simulator.certificates  # seen[0]: the token for the upload itself
    after = await service.get(record.id)
    assert after.active_certificate_id == record.active_certificate_id
    assert not after.rotation_in_progress and after.pending_certificate_id is None
    assert active(simulator, record.client_id) == {record.active_certificate_id}
    with pytest.raises(NoRotationInProgress):
        await service.cancel_rotation(record.id, ACTOR)


async def test_auto_rotation_preconditions(service, ready_connector):
    restlets_only = await ready_connector(service, scopes=("restlets",))
    with pytest.raises(AutoRotationUnavailable, match="rest_webservices"):
        await service.auto_rotate(restlets_only.id, entity=ENTITY, role=ROLE, actor=ACTOR)
    record = await ready_connector(service)
    with pytest.raises(InvalidConnector, match="3600"):
        await service.auto_rotate(record.id, entity=ENTITY, role=ROLE, actor=ACTOR,
                                  overlap=600)
    await service.auto_rotate(record.id, entity=ENTITY, role=ROLE, actor=ACTOR)
    with pytest.raises(AutoRotationUnavailable, match="still to be revoked"):
        await service.auto_rotate(record.id, entity=ENTITY, role=ROLE, actor=ACTOR)


async def test_expiry_within_60_days_is_warned_once_per_certificate(
        service, ready_connector, clock, engine, caplog):
    record = await ready_connector(service)
    assert await check_expiry(service) == [] and service.expiring_certificates == 0
    clock.advance((729 - 61) * 86400)
    assert await check_expiry(service) == []
    clock.advance(2 * 86400)
    [warned] = await check_expiry(service)
    assert warned.id == record.id and service.expiring_certificates == 1
    assert "expires in 58 days: rotate it" in caplog.text
    assert await check_expiry(service) == []  # once per certificate
    [event] = await events(engine, "NETSUITE_CERTIFICATE_EXPIRING")
    assert event["certificate_id"] == record.active_certificate_id
    assert event["days_left"] == 58  # 729 days from notBefore, 5 minutes before issue
    await service.auto_rotate(record.id, entity=ENTITY, role=ROLE, actor=ACTOR)
    assert await check_expiry(service) == [] and service.expiring_certificates == 0


async def test_post_rotation_auto(api, register, simulator, clock):
    admin = await register(tenant="tenant-a", allowed_scopes=["integrator"])
    headers = bearer(await issue_token(api, admin, "integrator"))
    created = await ready(api, headers, simulator)
    item = f"{BASE}/{created['id']}/m2m/rotation/auto"
    bad = await api.post(item, headers=headers, json={"entity": ENTITY, "role": ROLE,
                                                      "overlap_seconds": 60})
    assert bad.status_code == 422
    response = await api.post(item, headers=headers, json={"entity": ENTITY, "role": ROLE})
    assert response.status_code == 200
    body = response.json()
    assert body == {"success": True,
                    "message": "Certificate rotated. The previous certificate is revoked at "
                               "NetSuite when the overlap ends.",
                    "certificate_id": body["certificate_id"],
                    "previous_certificate_id": created["active_certificate_id"],
                    "revoke_previous_at": body["revoke_previous_at"]}
    shown = (await api.get(f"{BASE}/{created['id']}", headers=headers)).json()
    assert shown["active_certificate_id"] == body["certificate_id"]
    assert shown["retiring_certificate_id"] == created["active_certificate_id"]
    again = await api.post(item, headers=headers, json={"entity": ENTITY, "role": ROLE})
    assert again.status_code == 422 and again.json()["error"] == "invalid_state"
    other = await register(tenant="tenant-b", allowed_scopes=["admin"])
    foreign = await api.post(item, headers=bearer(await issue_token(api, other, "admin")),
                             json={"entity": ENTITY, "role": ROLE})
    assert foreign.status_code == 404
