"""AES-256-GCM envelope encryption under a versioned master key.

Envelope layout (bytes)::

    version (1, = 0x01) | key id (4) | nonce (12) | ciphertext || tag (16)

The key id is the first four bytes of SHA-256 over the master key, so a value
written under ``ENCRYPTION_MASTER_KEY_PREVIOUS`` still decrypts during a key
rotation and ``issuer reencrypt`` can find what to rewrap. Every call binds the
ciphertext to its context (``associated_data``, e.g. ``b"signing_key:<kid>"``):
a value copied into another row does not decrypt there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from issuer.settings import Settings, SettingsError

log = logging.getLogger(__name__)

_VERSION = b"\x01"
_NONCE_BYTES = 12


class DecryptionError(Exception):
    """The value was not encrypted under a known key, or was altered."""


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


@dataclass(frozen=True)
class Encryptor:
    """Encrypts under the current master key; decrypts under current or previous."""

    current: bytes = field(repr=False)
    previous: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for key in (self.current, self.previous):
            if key is not None and len(key) != 32:
                raise ValueError("master keys are 32 bytes (AES-256)")

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self.current).encrypt(nonce, plaintext, associated_data)
        return _VERSION + _key_id(self.current) + nonce + sealed

    def decrypt(self, envelope: bytes, associated_data: bytes) -> bytes:
        if len(envelope) < 1 + 4 + _NONCE_BYTES + 16 or envelope[:1] != _VERSION:
            raise DecryptionError("not an encryption envelope of a known version")
        key_id, nonce, sealed = envelope[1:5], envelope[5:17], envelope[17:]
        for key in (self.current, self.previous):
            if key is not None and secrets.compare_digest(_key_id(key), key_id):
                try:
                    return AESGCM(key).decrypt(nonce, sealed, associated_data)
                except InvalidTag:
                    raise DecryptionError("the value was altered or belongs elsewhere") from None
        raise DecryptionError("the value was encrypted under an unknown master key")

    def is_current(self, envelope: bytes) -> bool:
        return envelope[1:5] == _key_id(self.current)


def encryptor_for(settings: Settings) -> Encryptor:
    """The encryptor for these settings.

    With no ``ENCRYPTION_MASTER_KEY`` and the default SQLite store (a developer's
    machine), a key file is created beside the database with mode 0600 and a
    warning; anywhere else a missing key is an error.
    """
    check_master_key(settings)
    key = settings.encryption_master_key
    if key is None:
        key = _development_key(default_key_file(settings))
    return Encryptor(current=key, previous=settings.encryption_master_key_previous)


def check_master_key(settings: Settings) -> None:
    """Refuse settings that need ``ENCRYPTION_MASTER_KEY`` and lack it, touching
    nothing: the CLI checks this before it opens (or creates) the store."""
    if settings.encryption_master_key is None and (
            not settings.uses_default_sqlite or settings.production):
        raise SettingsError(
            "ENCRYPTION_MASTER_KEY is required unless the store is the default SQLite file")


def default_key_file(settings: Settings) -> Path:
    database = settings.database_url.split("///", 1)[1]
    return Path(database).with_name(Path(database).name + ".master-key")


def _development_key(path: Path) -> bytes:
    if path.exists():
        text = path.read_text().strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise SettingsError(f"{path} must hold 64 hexadecimal characters (32 bytes)")
        return key
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key.hex() + "\n")
    log.warning(
        "ENCRYPTION_MASTER_KEY is not set: created a development master key in %s (mode 0600). "
        "Set ENCRYPTION_MASTER_KEY for any shared or production deployment.",
        path,
    )
    return key
