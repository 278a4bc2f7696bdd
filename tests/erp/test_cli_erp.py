"""``decrypt_connector_config`` (the console script) and ``issuer reencrypt``, run as
an operator runs them (through their entry points, in process) against the store."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

from sqlalchemy import select

from connectors.erp.registry import MOCK
from issuer.cli import decrypt_connector_config
from issuer.crypto import Encryptor
from issuer.store.models import AuditEventRow, ErpConnectionRow
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
