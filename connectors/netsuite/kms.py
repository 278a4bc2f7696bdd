"""KeyManagementService: connectors' private keys in ``encrypted_keys``.

Each private key is PKCS#8, sealed with AES-256-GCM under the master key
(``issuer.crypto``), and the ciphertext is bound to its tenant, connector and key id
(associated data): a value copied into another row, connector or tenant does not
decrypt there. Only the public certificate is stored in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from connectors.netsuite.keys import PrivateKey, certificate_pem, load_private_pem, private_pem
from connectors.netsuite.tables import EncryptedKeyRow
from issuer.clock import Clock, utc
from issuer.crypto import Encryptor


class KeyNotFound(LookupError):
    """No such key for this tenant and connector."""


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    algorithm: str
    certificate_pem: str
    certificate_not_after: datetime


def bound(tenant_id: str, connector_id: str, key_id: str) -> bytes:
    """The associated data a key's ciphertext is bound to (also ``issuer reencrypt``'s)."""
    return f"netsuite_key:{tenant_id}:{connector_id}:{key_id}".encode()


class KeyManagementService:
    def __init__(self, engine: AsyncEngine, encryptor: Encryptor, clock: Clock) -> None:
        self._engine = engine
        self._encryptor = encryptor
        self._clock = clock

    async def store(self, session: AsyncSession, *, tenant_id: str, connector_id: str,
                    key_id: str, algorithm: str, key: PrivateKey,
                    certificate: x509.Certificate) -> StoredKey:
        """Add the key in the caller's transaction (with the change that uses it)."""
        row = EncryptedKeyRow(
            key_id=key_id, tenant_id=tenant_id, connector_id=connector_id, algorithm=algorithm,
            private_key_encrypted=self._encryptor.encrypt(
                private_pem(key), bound(tenant_id, connector_id, key_id)),
            certificate_pem=certificate_pem(certificate),
            certificate_not_after=certificate.not_valid_after_utc,
            created_at=utc(self._clock.now()))
        session.add(row)
        await session.flush()
        return _stored(row)

    async def get(self, *, tenant_id: str, connector_id: str, key_id: str) -> PrivateKey:
        async with self._engine.connect() as connection:
            sealed = (await connection.execute(select(EncryptedKeyRow.private_key_encrypted).where(
                EncryptedKeyRow.key_id == key_id, EncryptedKeyRow.tenant_id == tenant_id,
                EncryptedKeyRow.connector_id == connector_id))).scalar_one_or_none()
        if sealed is None:
            raise KeyNotFound(key_id)
        return load_private_pem(self._encryptor.decrypt(sealed,
                                                        bound(tenant_id, connector_id, key_id)))

    async def describe(self, session: AsyncSession, *, tenant_id: str, connector_id: str,
                       key_id: str) -> StoredKey:
        """The key's public half and metadata (never the private key)."""
        row = (await session.execute(select(EncryptedKeyRow).where(
            EncryptedKeyRow.key_id == key_id, EncryptedKeyRow.tenant_id == tenant_id,
            EncryptedKeyRow.connector_id == connector_id))).scalar_one_or_none()
        if row is None:
            raise KeyNotFound(key_id)
        return _stored(row)

    async def delete(self, *, tenant_id: str, connector_id: str, key_id: str) -> bool:
        """Delete one key in a transaction of its own; True when a row went."""
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(EncryptedKeyRow).where(
                EncryptedKeyRow.key_id == key_id, EncryptedKeyRow.tenant_id == tenant_id,
                EncryptedKeyRow.connector_id == connector_id))
        return bool(result.rowcount)


def _stored(row: EncryptedKeyRow) -> StoredKey:
    return StoredKey(key_id=row.key_id, algorithm=row.algorithm,
                     certificate_pem=row.certificate_pem,
                     certificate_not_after=row.certificate_not_after)
