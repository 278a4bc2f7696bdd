"""``decrypt_connector_config`` (the console script), ``issuer reencrypt`` and
``issuer erp check-dropzone-paths``, run as an operator runs them (through their entry
points, in process) against the store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.erp import store
from connectors.erp.dropzone import DropzoneConnector
from connectors.erp.registry import DROPZONE_JSON_V1, MOCK, ConnectorRegistry
from connectors.erp.service import ConnectionService
from connectors.erp.tables import ErpConnectionRow
from issuer.cli import decrypt_connector_config
from issuer.crypto import Encryptor
from issuer.store.models import AuditEventRow
from tests.conftest import NEW_KEY, TEST_MASTER_KEY
from tests.erp.conftest import PASSWORD
from tests.erp.test_units import ACTOR, _services
from tests.test_cli import issuer, run_in_process


async def _issuer(*args: str, **options: Any) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(lambda: issuer(*args, **options))


async def test_decrypt_connector_config_round_trip(engine, clock, register, database_url,
                                                   tmp_path):
    org = (await register(tenant="acme")).tenant_id
    connections, _ = _services(engine, clock)
    config = {"fail": True, "error_message": PASSWORD}
    created = await connections.create(org, MOCK, config, test_on_save=False, actor=ACTOR)
    connection_id = str(created.connection.id)

    result = await asyncio.to_thread(
        run_in_process, decrypt_connector_config, ["decrypt_connector_config", connection_id],
        database_url=database_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == config
    async with engine.connect() as connection:
        (event,) = (await connection.execute(select(AuditEventRow).where(
            AuditEventRow.event == "ERP_CONNECTION_DECRYPTED"))).mappings().all()
    assert event["details"] == {"connection_id": connection_id, "connector_type": "MOCK"}
    assert event["actor"].startswith("cli:") and event["tenant_id"] == org
    assert PASSWORD not in json.dumps(event["details"])

    where = {"database_url": database_url, "cwd": tmp_path}
    same = await _issuer("decrypt-connector-config", connection_id, **where)
    assert json.loads(same.stdout) == config
    missing = await _issuer("decrypt-connector-config", "not-a-uuid", **where)
    assert (missing.returncode, missing.stderr) == (
        1, "issuer: error: 'not-a-uuid' is not a connection id (a UUID)\n")
    other = await _issuer("decrypt-connector-config", "00000000-0000-4000-8000-000000000000",
                          **where)
    assert other.returncode == 1 and "No such object" in other.stderr


async def test_reencrypt_command_rewraps_then_finds_nothing_to_do(
        engine, clock, register, database_url, tmp_path, restore_master_key):
    org = (await register(tenant="acme")).tenant_id
    connections, _ = _services(engine, clock)
    await connections.create(org, MOCK, {}, test_on_save=False, actor=ACTOR)
    rotated = {"ENCRYPTION_MASTER_KEY": NEW_KEY.hex(),
               "ENCRYPTION_MASTER_KEY_PREVIOUS": TEST_MASTER_KEY.hex()}
    first = await _issuer("reencrypt", "--json", database_url=database_url, cwd=tmp_path, **rotated)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["erp_connection.config_encrypted"] == {"rewrapped": 1, "current": 0,
                                                         "failed": []}
    assert report["signing_keys.private_jwk_encrypted"]["rewrapped"] >= 1
    second = await _issuer("reencrypt", database_url=database_url, cwd=tmp_path, **rotated)
    assert second.returncode == 0
    assert "erp_connection.config_encrypted: rewrapped 0, already current 1, failed 0" in (
        second.stdout)
    async with engine.connect() as connection:
        stored = (await connection.execute(select(ErpConnectionRow.config_encrypted))
                  ).scalar_one()
    assert Encryptor(current=NEW_KEY).is_current(stored)


async def test_check_dropzone_paths_lists_what_the_move_to_org_folders_left_behind(
        engine, clock, register, database_url, tmp_path, dropzone_root):
    """Connections saved when paths were relative to the root itself: the report (and
    ``issuer migrate``) names each path that needs the operator, with the old and the
    new place, and exits 0 once nothing does."""
    where = {"database_url": database_url, "cwd": tmp_path,
             "ISSUER_ERP_DROPZONE_ROOT": str(dropzone_root)}
    orgs = {name: (await register(tenant=name)).tenant_id
            for name in ("acme", "globex", "initech", "hooli", "umbrella")}
    acme = await plant(engine, orgs["acme"], {"mode": "filesystem", "export_path": "orders",
                                              "ack_path": "/acks"}, now=1)
    (dropzone_root / orgs["globex"] / "inbound").mkdir(parents=True)
    globex = await plant(engine, orgs["globex"], {"mode": "filesystem",
                                                  "export_path": "/inbound"}, now=2)
    initech = await plant(engine, orgs["initech"], {"mode": "filesystem",
                                                    "export_path": "x/../orders"}, now=3)
    await plant(engine, orgs["hooli"], {"mode": "sftp", "export_path": "/orders"}, now=4)
    umbrella = await plant(engine, orgs["umbrella"], None, now=5)
    root = str(dropzone_root.resolve())

    def entry(connection_id, org, field, configured, state, old, new, detail=None):
        return {"connection_id": str(connection_id), "org_id": orgs[org], "status": "ACTIVE",
                "field": field, "configured": configured, "state": state, "old_path": old,
                "new_path": new, "detail": detail}

    report = await _issuer("erp", "check-dropzone-paths", "--all", "--json", **where)
    assert report.returncode == 1, report.stderr
    assert json.loads(report.stdout) == [
        entry(acme, "acme", "export_path", "orders", "move", f"{root}/orders",
              f"{root}/{orgs['acme']}/orders"),
        entry(acme, "acme", "ack_path", "/acks", "missing", f"{root}/acks",
              f"{root}/{orgs['acme']}/acks"),
        entry(globex, "globex", "export_path", "/inbound", "ok", f"{root}/inbound",
              f"{root}/{orgs['globex']}/inbound"),
        entry(initech, "initech", "export_path", "x/../orders", "refused", f"{root}/orders",
              None, "'.' and '..' are not allowed: the path is inside the org's folder"),
        entry(umbrella, "umbrella", None, None, "blocked", None, None,
              "the stored config does not decrypt"),
    ]
    assert report.stderr == "5 filesystem dropzone path(s) checked, 4 need action\n"

    migrated = await _issuer("migrate", **where)
    assert migrated.returncode == 0, migrated.stderr
    head = "(org {}, ACTIVE)".format
    assert migrated.stdout.splitlines()[-5:] == [
        f"4 filesystem dropzone path(s) need the operator: each org now writes inside "
        f"{dropzone_root}/<org_id>/ (`issuer erp check-dropzone-paths` lists them again):",
        f"  {acme} {head(orgs['acme'])} export_path 'orders': move: {root}/orders to "
        f"{root}/{orgs['acme']}/orders",
        f"  {acme} {head(orgs['acme'])} ack_path '/acks': missing: {root}/{orgs['acme']}/acks",
        f"  {initech} {head(orgs['initech'])} export_path 'x/../orders': refused: '.' and "
        "'..' are not allowed: the path is inside the org's folder",
        f"  {umbrella} {head(orgs['umbrella'])}: blocked: the stored config does not decrypt"]

    # The operator moves the folder and makes the other; the org mends its path; the
    # connection that no longer decrypts is removed.
    (dropzone_root / orgs["acme"]).mkdir()
    (dropzone_root / "orders").rename(dropzone_root / orgs["acme"] / "orders")
    (dropzone_root / orgs["acme"] / "acks").mkdir()
    registry = ConnectorRegistry()
    registry.register(DROPZONE_JSON_V1, DropzoneConnector(clock, dropzone_root))
    (dropzone_root / orgs["initech"] / "orders").mkdir(parents=True)
    await ConnectionService(engine, Encryptor(current=TEST_MASTER_KEY), registry, clock
                            ).update(initech, {"export_path": "orders"},
                                     sees=lambda org: True, actor=ACTOR)
    async with engine.begin() as connection:
        await connection.execute(delete(ErpConnectionRow).where(
            ErpConnectionRow.id == umbrella))
    done = await _issuer("erp", "check-dropzone-paths", **where)
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "", "4 filesystem dropzone path(s) checked, 0 need action\n")


async def plant(engine, org_id: str, config: dict[str, Any] | None, *, now: float
                ) -> uuid.UUID:
    """A stored DROPZONE_JSON_V1 connection as an older issuer saved it (``None``: a
    config that does not decrypt)."""
    connection_id = uuid.uuid4()
    sealed = (Encryptor(current=TEST_MASTER_KEY).encrypt(
        json.dumps(config).encode(), store.associated_data(connection_id))
        if config is not None else Encryptor(current=NEW_KEY).encrypt(
            b"{}", store.associated_data(connection_id)))
    async with AsyncSession(engine) as session, session.begin():
        await store.insert_connection(session, connection_id=connection_id, org_id=org_id,
                                      connector_type=DROPZONE_JSON_V1, config_encrypted=sealed,
                                      now=now, tested=False)
    return connection_id
