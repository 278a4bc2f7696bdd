"""Unit tests: config encryption, rotation and ``reencrypt``, the registry, the
PushService with the MOCK and with failing connectors, config validation."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import select, update

from connectors.erp import store
from connectors.erp.dropzone import DropzoneConnector
from connectors.erp.errors import ConnectorBlocked
from connectors.erp.mock import MockConnector
from connectors.erp.models import DropzoneConfig
from connectors.erp.port import ConfigError, ConnectorError
from connectors.erp.registry import (
    DROPZONE_JSON_V1,
    MOCK,
    ConnectorRegistry,
    UnknownConnectorType,
)
from connectors.erp.service import ConnectionService, PushService
from connectors.erp.tables import ErpConnectionRow, ErpExportRow
from issuer.app import ENCRYPTED_COLUMNS
from issuer.crypto import DecryptionError, Encryptor
from issuer.errors import Conflict
from issuer.reencrypt import reencrypt
from issuer.registration import Actor
from issuer.store.models import AuditEventRow, SigningKeyRow
from tests.conftest import NEW_KEY, TEST_MASTER_KEY
from tests.erp.conftest import draft_order

OTHER_KEY = bytes(range(7, 39))
ACTOR = Actor("tester", "127.0.0.1", "req-1")

# Encryption ---------------------------------------------------------------------------

configs = st.fixed_dictionaries({
    "mode": st.just("sftp"), "host": st.from_regex(r"\A[a-z0-9.-]{1,40}\Z"),
    "username": st.text(min_size=1, max_size=40).filter(str.isprintable),
    "password": st.text(min_size=12, max_size=200),  # long enough never to occur by chance
    "insecure_skip_host_key": st.just(True),
    "export_path": st.text(min_size=1, max_size=300).filter(str.isprintable),
    "timeout_seconds": st.floats(min_value=0.01, max_value=60),
})


@settings(max_examples=300, deadline=None)
@given(config=configs, connection_id=st.uuids())
def test_config_encryption_round_trips_over_many_payloads(config, connection_id):
    box = Encryptor(current=TEST_MASTER_KEY)
    parsed = DropzoneConfig.model_validate(config)
    plaintext = json.dumps(parsed.plaintext()).encode()
    sealed = box.encrypt(plaintext, store.associated_data(connection_id))
    assert config["password"].encode() not in sealed
    again = json.loads(box.decrypt(sealed, store.associated_data(connection_id)))
    assert DropzoneConfig.model_validate(again) == parsed
    assert again["password"] == config["password"]


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(min_size=1, max_size=2000), data=st.data())
def test_any_flipped_bit_is_an_authentication_failure(payload, data):
    box = Encryptor(current=TEST_MASTER_KEY)
    context = store.associated_data(uuid.uuid4())
    sealed = bytearray(box.encrypt(payload, context))
    position = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1))
    sealed[position // 8] ^= 1 << (position % 8)
    with pytest.raises(DecryptionError):
        box.decrypt(bytes(sealed), context)


def test_a_wrong_key_or_another_row_does_not_decrypt():
    connection_id = uuid.uuid4()
    sealed = Encryptor(current=TEST_MASTER_KEY).encrypt(b'{"a":1}',
                                                        store.associated_data(connection_id))
    with pytest.raises(DecryptionError, match="unknown master key"):
        Encryptor(current=OTHER_KEY).decrypt(sealed, store.associated_data(connection_id))
    with pytest.raises(DecryptionError, match="altered or belongs elsewhere"):
        Encryptor(current=TEST_MASTER_KEY).decrypt(sealed, store.associated_data(uuid.uuid4()))


def test_each_encryption_uses_a_fresh_nonce():
    box, context = Encryptor(current=TEST_MASTER_KEY), b"erp_connection:x"
    nonces = {box.encrypt(b"same", context)[5:17] for _ in range(1000)}
    assert len(nonces) == 1000


# Registry -----------------------------------------------------------------------------


def test_registry_register_get_and_unknown(tmp_path: Path):
    registry = ConnectorRegistry()
    dropzone, mock = DropzoneConnector(clock=None, filesystem_root=tmp_path), MockConnector()  # type: ignore[arg-type]
    registry.register(DROPZONE_JSON_V1, dropzone)
    registry.register(MOCK, mock)
    assert registry.get(DROPZONE_JSON_V1) is dropzone and registry.get(MOCK) is mock
    assert registry.types() == ("DROPZONE_JSON_V1", "MOCK")
    with pytest.raises(UnknownConnectorType) as unknown:
        registry.get("SAP_IDOC")
    assert unknown.value.message == ("Unknown connector type 'SAP_IDOC' (registered: "
                                     "DROPZONE_JSON_V1, MOCK)")
    with pytest.raises(ValueError, match="registered already"):
        registry.register(MOCK, MockConnector())


# Config validation ---------------------------------------------------------------------------

SFTP = {"mode": "sftp", "host": "sftp.example.com", "username": "erp", "password": "pw",
        "host_key": "sftp.example.com ssh-ed25519 "
                    "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "export_path": "/inbound"}


@pytest.mark.parametrize(("body", "field", "message"), [
    ({**SFTP, "mode": None}, "mode", "Input should be 'sftp' or 'filesystem'"),
    ({k: v for k, v in SFTP.items() if k != "mode"}, "mode", "Field required"),
    ({**SFTP, "mode": "ftp"}, "mode", "Input should be 'sftp' or 'filesystem'"),
    ({**SFTP, "host": None}, "host", "Value error, required when mode is sftp"),
    ({**SFTP, "host": "bad host"}, "host", "String should match pattern"),
    ({**SFTP, "username": None}, "username", "Value error, required when mode is sftp"),
    ({**SFTP, "password": None}, "private_key",
     "Value error, password or private_key is required when mode is sftp"),
    ({**SFTP, "private_key": "not a key"}, "private_key",
     "Value error, not an unencrypted OpenSSH or PEM private key"),
    ({**SFTP, "host_key": None}, "host_key",
     "Value error, required when mode is sftp (or set insecure_skip_host_key)"),
    ({**SFTP, "host_key": "example.com ssh-ed25519 AAAA"}, "host_key",
     "Value error, not a known_hosts line or public key"),
    ({k: v for k, v in SFTP.items() if k != "export_path"}, "export_path", "Field required"),
    ({**SFTP, "export_path": ""}, "export_path", "String should have at least 1 character"),
    ({**SFTP, "export_path": "/" + "a" * 1024}, "export_path",
     "String should have at most 1024 characters"),
    ({**SFTP, "ack_path": "/" + "a" * 1024}, "ack_path",
     "String should have at most 1024 characters"),
    ({**SFTP, "export_path": "/in\x00"}, "export_path", "String should match pattern"),
    ({**SFTP, "port": 0}, "port", "Input should be greater than or equal to 1"),
    ({**SFTP, "port": "22"}, "port", "Input should be a valid integer"),
    ({**SFTP, "timeout_seconds": 0}, "timeout_seconds", "Input should be greater than 0"),
    ({**SFTP, "timeout_seconds": 61}, "timeout_seconds", "Input should be less than or equal"),
    ({**SFTP, "colour": "red"}, "colour", "Extra inputs are not permitted"),
])
def test_config_validation_names_the_field(body, field, message):
    with pytest.raises(ValidationError) as raised:
        DropzoneConfig.model_validate(body)
    problems = {".".join(map(str, error["loc"])): error["msg"] for error in raised.value.errors()}
    assert problems[field].startswith(message), problems


@pytest.mark.parametrize(("root", "body", "field", "message"), [
    (None, {"mode": "filesystem", "export_path": "orders"}, "mode",
     "filesystem mode is not enabled on this issuer (ISSUER_ERP_DROPZONE_ROOT is unset)"),
    ("root", {"mode": "filesystem", "export_path": "../../etc"}, "export_path",
     "'.' and '..' are not allowed: the path is inside the org's folder"),
    ("root", {"mode": "filesystem", "export_path": "orders", "ack_path": "/../x"}, "ack_path",
     "'.' and '..' are not allowed: the path is inside the org's folder"),
    ("root", {"mode": "filesystem", "export_path": "a\\b"}, "export_path",
     "backslashes are not allowed (the separator is /)"),
    ("root", {"mode": "filesystem", "export_path": "%2E%2e/x"}, "export_path",
     "percent-encoding is not decoded: write the characters themselves"),
    ("root", {"mode": "filesystem", "export_path": "in\u200bbound"}, "export_path",
     "control and invisible characters are not allowed"),
    ("root", {"mode": "filesystem", "export_path": "\uff0e\uff0e/x"}, "export_path",
     "characters that stand for others (NFKC) are not allowed, e.g. full-width forms"),
])
def test_filesystem_paths_the_rules_refuse_name_their_field(tmp_path, root, body, field,
                                                            message):
    connector = DropzoneConnector(clock=None, filesystem_root=tmp_path if root else None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as raised:
        connector.parse_config(body)
    assert (raised.value.field, raised.value.reason) == (field, message)


def test_a_config_never_prints_its_credentials():
    config = DropzoneConfig.model_validate(SFTP)
    assert "pw" not in repr(config) and "pw" not in str(config)
    assert config.plaintext()["password"] == "pw"


# PushService and reencrypt, on the store ------------------------------------------------


class BrokenConnector(MockConnector):
    async def export(self, draft_order: Any, config: Any, *, org_id: str) -> Any:
        raise RuntimeError(f"boom with {config!r} and hunter2")


def _services(engine, clock, encryptor=None, registry=None):
    encryptor = encryptor or Encryptor(current=TEST_MASTER_KEY)
    if registry is None:
        registry = ConnectorRegistry()
        registry.register(MOCK, MockConnector())
    return (ConnectionService(engine, encryptor, registry, clock),
            PushService(engine, encryptor, registry, clock))


async def test_push_through_the_mock_records_a_success(engine, clock, register):
    org = (await register(tenant="acme")).tenant_id
    connections, pushes = _services(engine, clock)
    await connections.create(org, MOCK, {}, test_on_save=True, actor=ACTOR)
    order = draft_order(org)
    exported = await pushes.push(org, order, actor=ACTOR)
    assert exported.status == "SUCCESS" and exported.error_json is None
    assert exported.storage_key == f"mock/{order.id}.json"
    assert connections.registry.get(MOCK).exported == [order]  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        row = (await connection.execute(select(ErpExportRow))).mappings().one()
        events = (await connection.execute(select(AuditEventRow.event).where(
            AuditEventRow.event.like("ERP_%")).order_by(AuditEventRow.id))).scalars().all()
    assert (row["id"], row["status"], row["draft_order_id"]) == (exported.id, "SUCCESS",
                                                                 order.id)
    assert events == ["ERP_CONNECTION_TESTED", "ERP_CONNECTION_CREATED", "ERP_EXPORT_SUCCEEDED"]


@pytest.mark.parametrize(("connector", "config", "error"), [
    (MockConnector(), {"fail": True, "error_message": "ERP rejected the order"},
     {"code": "connector_error", "message": "ERP rejected the order"}),
    (BrokenConnector(), {}, {"code": "connector_exception",
                             "message": "Unexpected connector error (RuntimeError)"}),
])
async def test_a_failing_connector_is_a_failed_export_not_an_error(engine, clock, register,
                                                                   caplog, connector, config,
                                                                   error):
    org = (await register(tenant="acme")).tenant_id
    registry = ConnectorRegistry()
    registry.register(MOCK, connector)
    connections, pushes = _services(engine, clock, registry=registry)
    await connections.create(org, MOCK, config, test_on_save=False, actor=ACTOR)
    exported = await pushes.push(org, draft_order(org), actor=ACTOR)
    assert (exported.status, exported.error_json) == ("FAILED", error)
    assert exported.storage_key is None and exported.dropzone_path is None
    assert "hunter2" not in caplog.text
    async with engine.connect() as connection:
        stored = (await connection.execute(select(ErpExportRow.status, ErpExportRow.error_json)
                                           )).one()
        event = (await connection.execute(select(AuditEventRow.details).where(
            AuditEventRow.event == "ERP_EXPORT_FAILED"))).scalar_one()
    assert tuple(stored) == ("FAILED", error)
    assert event["error"] == error


async def test_no_active_connection_is_a_clear_error(engine, clock, register):
    org = (await register(tenant="acme")).tenant_id
    _, pushes = _services(engine, clock)
    with pytest.raises(Conflict, match="No active connector"):
        await pushes.push(org, draft_order(org), actor=ACTOR)


async def test_a_tampered_config_blocks_the_connection(engine, clock, register, caplog):
    org = (await register(tenant="acme")).tenant_id
    connections, pushes = _services(engine, clock)
    created = await connections.create(org, MOCK, {}, test_on_save=False, actor=ACTOR)
    tampered = bytearray(created.connection.config_encrypted)
    tampered[-3] ^= 0x10
    async with engine.begin() as connection:
        await connection.execute(update(ErpConnectionRow).values(config_encrypted=bytes(tampered)))
    with pytest.raises(ConnectorBlocked):
        await pushes.push(org, draft_order(org), actor=ACTOR)
    assert f"ERP connection {created.connection.id}" in caplog.text
    assert "request_id=req-1" in caplog.text


async def _seal_many(engine, clock, register, count: int) -> list[uuid.UUID]:
    """``count`` orgs, each with a MOCK connection under the test master key."""
    connections, _ = _services(engine, clock)
    ids = []
    for number in range(count):
        org = (await register(tenant=f"org-{number}")).tenant_id
        created = await connections.create(org, MOCK, {"error_message": f"org {number}"},
                                           test_on_save=False, actor=ACTOR)
        ids.append(created.connection.id)
    return ids


async def _envelopes(engine) -> dict[str, tuple[Any, bytes]]:
    found = {}
    async with engine.connect() as connection:
        for spec in ENCRYPTED_COLUMNS:
            rows = await connection.execute(select(
                spec.table.c[spec.key], spec.table.c[spec.column],
                *[spec.table.c[name] for name in spec.context]))
            for row in rows.mappings():
                if row[spec.column] is not None:
                    found[f"{spec.name}:{row[spec.key]}"] = (spec.associated_data(row),
                                                             row[spec.column])
    return found


async def test_rotation_previous_key_decrypts_and_reencrypt_rewraps_everything_once(
        engine, clock, register, restore_master_key):
    await _seal_many(engine, clock, register, 3)
    # A client_secret_jwt client: its secret is kept encrypted too (issuer/secrets.py).
    await register(tenant="hmac", auth_methods=["client_secret_jwt"])
    rotated = Encryptor(current=NEW_KEY, previous=TEST_MASTER_KEY)
    before = await _envelopes(engine)
    assert not any(rotated.is_current(value) for _, value in before.values())
    for context, value in before.values():  # the previous key still decrypts
        rotated.decrypt(value, context)

    report = await reencrypt(engine, rotated, clock, columns=ENCRYPTED_COLUMNS, batch_size=2)
    assert {name: (item.rewrapped, item.current, item.failed)
            for name, item in report.items()} == {
        "signing_keys.private_jwk_encrypted": (len(before) - 4, 0, []),
        "erp_connection.config_encrypted": (3, 0, []),
        "clients.secret_encrypted": (1, 0, []),
        "clients.previous_secret_encrypted": (0, 0, []),
        "encrypted_keys.private_key_encrypted": (0, 0, [])}
    only_new = Encryptor(current=NEW_KEY)
    after = await _envelopes(engine)
    for name, (context, value) in after.items():
        assert only_new.decrypt(value, context) == rotated.decrypt(before[name][1], context)

    again = await reencrypt(engine, rotated, clock, columns=ENCRYPTED_COLUMNS)  # idempotent
    assert {name: (item.rewrapped, item.current) for name, item in again.items()} == {
        "signing_keys.private_jwk_encrypted": (0, len(before) - 4),
        "erp_connection.config_encrypted": (0, 3),
        "clients.secret_encrypted": (0, 1),
        "clients.previous_secret_encrypted": (0, 0),
        "encrypted_keys.private_key_encrypted": (0, 0)}
    assert await _envelopes(engine) == after


class CrashingEncryptor:
    """Encrypts ``budget`` values, then dies like a killed process would."""

    def __init__(self, inner: Encryptor, budget: int) -> None:
        self._inner, self._budget = inner, budget

    def is_current(self, envelope: bytes) -> bool:
        return self._inner.is_current(envelope)

    def decrypt(self, envelope: bytes, associated_data: bytes) -> bytes:
        return self._inner.decrypt(envelope, associated_data)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        if self._budget == 0:
            raise KeyboardInterrupt("killed")
        self._budget -= 1
        return self._inner.encrypt(plaintext, associated_data)


async def test_reencrypt_is_resumable_after_a_crash_midway(engine, clock, register,
                                                          restore_master_key):
    await _seal_many(engine, clock, register, 5)
    rotated = Encryptor(current=NEW_KEY, previous=TEST_MASTER_KEY)
    with pytest.raises(KeyboardInterrupt):
        await reencrypt(engine, CrashingEncryptor(rotated, budget=4), clock,  # type: ignore[arg-type]
                        columns=ENCRYPTED_COLUMNS, batch_size=2)
    midway = await _envelopes(engine)
    done = [name for name, (_, value) in midway.items() if rotated.is_current(value)]
    assert 0 < len(done) < len(midway)  # committed batches stay, the rest waits
    for context, value in midway.values():
        rotated.decrypt(value, context)  # every row still decrypts

    report = await reencrypt(engine, rotated, clock, columns=ENCRYPTED_COLUMNS, batch_size=2)
    assert sum(item.rewrapped + item.current for item in report.values()) == len(midway)
    assert all(rotated.is_current(value) for _, value in (await _envelopes(engine)).values())


async def test_reencrypt_reports_and_keeps_a_value_that_does_not_decrypt(
        engine, clock, register, restore_master_key):
    (connection_id,) = await _seal_many(engine, clock, register, 1)
    foreign = Encryptor(current=OTHER_KEY).encrypt(b"{}", store.associated_data(connection_id))
    async with engine.begin() as connection:
        await connection.execute(update(ErpConnectionRow).values(config_encrypted=foreign))
    report = await reencrypt(engine, Encryptor(current=NEW_KEY, previous=TEST_MASTER_KEY),
                             clock, columns=ENCRYPTED_COLUMNS)
    assert report["erp_connection.config_encrypted"].failed == [str(connection_id)]
    async with engine.connect() as connection:
        assert (await connection.execute(select(ErpConnectionRow.config_encrypted))
                ).scalar_one() == foreign
        keys = (await connection.execute(select(SigningKeyRow.private_jwk_encrypted))
                ).scalars().all()
    assert all(Encryptor(current=NEW_KEY).is_current(value) for value in keys)


async def test_connector_error_message_and_code():
    error = ConnectorError("Permission denied", code="permission_denied")
    assert (str(error), error.message, error.code) == ("Permission denied", "Permission denied",
                                                       "permission_denied")


class BrokenTester(MockConnector):
    async def test_connection(self, config: Any, *, org_id: str) -> Any:
        raise RuntimeError("hunter2")


async def test_a_connector_crashing_in_its_test_is_a_failed_test(engine, clock, register,
                                                                 caplog):
    from connectors.erp.errors import ConnectionTestFailed

    org = (await register(tenant="acme")).tenant_id
    registry = ConnectorRegistry()
    registry.register(MOCK, BrokenTester())
    connections, _ = _services(engine, clock, registry=registry)
    with pytest.raises(ConnectionTestFailed) as raised:
        await connections.create(org, MOCK, {}, test_on_save=True, actor=ACTOR)
    assert raised.value.error_description == "Unexpected connector error (RuntimeError)"
    assert "hunter2" not in caplog.text


def test_the_public_names_are_sorted_and_real():
    import connectors.erp

    names = connectors.erp.__all__
    assert names == sorted(names, key=lambda name: (not name.isupper(), name))  # ruff RUF022
    assert all(hasattr(connectors.erp, name) for name in connectors.erp.__all__)


@pytest.mark.parametrize(("environ", "message"), [
    ({"ISSUER_ERP_MOCK_CONNECTOR": "maybe"}, "ISSUER_ERP_MOCK_CONNECTOR must be true or false"),
    ({"ISSUER_ERP_MOCK_CONNECTOR": "true", "ISSUER_ENV": "production",
      "ISSUER_URL": "https://id.example.com", "ENCRYPTION_MASTER_KEY": "00" * 32},
     "ISSUER_ERP_MOCK_CONNECTOR must not be enabled when ISSUER_ENV=production"),
    ({"ISSUER_ERP_DROPZONE_ROOT": "relative/dir"},
     "ISSUER_ERP_DROPZONE_ROOT must be the absolute path of an existing directory"),
    ({"ISSUER_ERP_DROPZONE_ROOT": "/no/such/dir"},
     "ISSUER_ERP_DROPZONE_ROOT must be the absolute path of an existing directory"),
])
def test_erp_settings_are_checked(environ, message):
    from issuer.settings import Settings, SettingsError

    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    assert str(raised.value).startswith(message)


def test_erp_settings_defaults_and_values(tmp_path):
    from issuer.settings import Settings

    assert (Settings.from_env({}, env_file=None).erp_mock_connector,
            Settings.from_env({}, env_file=None).erp_dropzone_root) == (False, None)
    settings = Settings.from_env({"ISSUER_ERP_MOCK_CONNECTOR": "true",
                                  "ISSUER_ERP_DROPZONE_ROOT": str(tmp_path)}, env_file=None)
    assert (settings.erp_mock_connector, settings.erp_dropzone_root) == (True, tmp_path)
