"""``issuer reencrypt`` covers NetSuite connectors' private keys too: after a master-key
rotation the key is rewrapped under the new key, still bound to its tenant, connector
and key id, and the connector keeps signing assertions NetSuite accepts."""

from __future__ import annotations

from sqlalchemy import select

from connectors.netsuite.kms import bound
from connectors.netsuite.tables import EncryptedKeyRow
from issuer.app import ENCRYPTED_COLUMNS
from issuer.crypto import DecryptionError, Encryptor
from issuer.reencrypt import reencrypt
from tests.conftest import NEW_KEY, TEST_MASTER_KEY


async def test_reencrypt_rewraps_a_connector_key_and_the_connector_still_works(
        make_service, ready_connector, engine, clock, restore_master_key):
    service = make_service()
    record = await ready_connector(service)
    async with engine.connect() as connection:
        (before,) = (await connection.execute(select(EncryptedKeyRow))).mappings().all()
    context = bound(before["tenant_id"], before["connector_id"], before["key_id"])

    rotated = Encryptor(current=NEW_KEY, previous=TEST_MASTER_KEY)
    report = await reencrypt(engine, rotated, clock, columns=ENCRYPTED_COLUMNS)
    assert report["encrypted_keys.private_key_encrypted"].rewrapped == 1
    assert report["encrypted_keys.private_key_encrypted"].failed == []

    async with engine.connect() as connection:
        (after,) = (await connection.execute(select(EncryptedKeyRow))).mappings().all()
    only_new = Encryptor(current=NEW_KEY)
    assert only_new.decrypt(after["private_key_encrypted"], context) == rotated.decrypt(
        before["private_key_encrypted"], context)
    try:
        Encryptor(current=TEST_MASTER_KEY).decrypt(after["private_key_encrypted"], context)
    except DecryptionError:
        pass
    else:
        raise AssertionError("the old master key still decrypts the rewrapped key")

    # A service under the new master key signs with the rewrapped key: NetSuite says yes.
    after_rotation = make_service(encryptor=only_new)
    token = await after_rotation.get_or_refresh_access_token(record.id)
    assert token.access_token
    again = await reencrypt(engine, rotated, clock, columns=ENCRYPTED_COLUMNS)  # idempotent
    assert again["encrypted_keys.private_key_encrypted"].current == 1
