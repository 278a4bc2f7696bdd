"""AES-256-GCM envelopes (issuer.crypto) and private keys encrypted at rest."""

from __future__ import annotations

import json
import os
import stat

import pytest
from sqlalchemy import select, update

from issuer.crypto import DecryptionError, Encryptor, default_key_file, encryptor_for
from issuer.keys.ring import KeyRing, associated_data
from issuer.settings import Settings, SettingsError
from issuer.store.models import SigningKeyRow

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_round_trip_and_fresh_nonce_each_time():
    box = Encryptor(current=KEY_A)
    one = box.encrypt(b"secret", b"ctx")
    two = box.encrypt(b"secret", b"ctx")
    assert one != two
    assert box.decrypt(one, b"ctx") == box.decrypt(two, b"ctx") == b"secret"


def test_a_value_bound_to_one_context_does_not_decrypt_in_another():
    box = Encryptor(current=KEY_A)
    with pytest.raises(DecryptionError):
        box.decrypt(box.encrypt(b"secret", b"signing_key:a"), b"signing_key:b")


def test_tampering_is_detected():
    box = Encryptor(current=KEY_A)
    sealed = bytearray(box.encrypt(b"secret", b"ctx"))
    sealed[-1] ^= 1
    with pytest.raises(DecryptionError):
        box.decrypt(bytes(sealed), b"ctx")


def test_previous_master_key_still_decrypts_during_rotation():
    old = Encryptor(current=KEY_A).encrypt(b"secret", b"ctx")
    rotated = Encryptor(current=KEY_B, previous=KEY_A)
    assert rotated.decrypt(old, b"ctx") == b"secret"
    assert not rotated.is_current(old)
    with pytest.raises(DecryptionError):
        Encryptor(current=KEY_B).decrypt(old, b"ctx")


def test_development_key_file_is_created_once_with_mode_0600(tmp_path, caplog):
    settings = Settings(database_url="sqlite+aiosqlite:///./issuer.db")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        first = encryptor_for(settings)
        second = encryptor_for(settings)
        path = tmp_path / default_key_file(settings)
        mode = stat.S_IMODE(path.stat().st_mode)
    finally:
        os.chdir(cwd)
    assert first.current == second.current
    assert mode == 0o600
    assert "ENCRYPTION_MASTER_KEY is not set" in caplog.text


def test_a_missing_master_key_is_an_error_outside_the_default_sqlite_store():
    with pytest.raises(SettingsError, match="ENCRYPTION_MASTER_KEY is required"):
        encryptor_for(Settings(database_url="postgresql+asyncpg://db/issuer"))


async def test_signing_private_key_is_stored_encrypted(client, engine):
    async with engine.connect() as connection:
        active = select(SigningKeyRow).where(SigningKeyRow.state == "active")
        (row,) = (await connection.execute(active)).mappings().all()
    stored = row["private_jwk_encrypted"]
    public = row["public_jwk"]
    assert stored[:1] == b"\x01"
    assert b'"d"' not in stored and public["n"].encode() not in stored
    with pytest.raises(json.JSONDecodeError):
        json.loads(stored[17:].decode("latin-1"))


async def test_a_stored_rsa_key_that_fails_its_consistency_check_is_refused_at_load(
        engine, settings, clock):
    """A key ring reuses a key it already checked only for the very same bytes: a
    stored key whose CRT parameters do not match its primes is refused, even in a
    process that has just loaded the good one."""
    encryptor = encryptor_for(settings)
    good = await KeyRing(engine, encryptor, clock, alg="RS256").ensure_active()
    async with engine.begin() as connection:
        stored = (await connection.execute(select(SigningKeyRow.private_jwk_encrypted)
                                           .where(SigningKeyRow.kid == good.kid))).scalar_one()
    jwk = json.loads(encryptor.decrypt(stored, associated_data(good.kid)))
    jwk["dp"], jwk["dq"] = jwk["dq"], jwk["dp"]
    inconsistent = encryptor.encrypt(json.dumps(jwk).encode(), associated_data(good.kid))
    statement = update(SigningKeyRow).where(SigningKeyRow.kid == good.kid)
    async with engine.begin() as connection:
        await connection.execute(statement.values(private_jwk_encrypted=inconsistent))
    try:
        with pytest.raises(ValueError, match="Invalid private key"):
            await KeyRing(engine, encryptor, clock, alg="RS256").load()
    finally:  # the PostgreSQL store keeps its RS256 key between tests
        async with engine.begin() as connection:
            await connection.execute(statement.values(private_jwk_encrypted=stored))
