"""Token-signing keys: generation, encrypted storage, and the in-process key ring.

States (DESIGN §1, issue 5): ``next`` (published, not signing) -> ``active``
(signing; exactly one per algorithm, enforced by a partial unique index) ->
``retired`` (published until every token it signed has expired). This module
creates the first active key; rotation builds on the same table.

The ``kid`` is the key's RFC 7638 thumbprint. Private JWKs are stored encrypted
(AES-256-GCM, ``issuer.crypto``) and bound to their ``kid``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwk, jws
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from issuer import audit
from issuer.audit import AuditEvent
from issuer.clock import Clock, utc
from issuer.crypto import Encryptor
from issuer.store.models import SigningKeyRow

log = logging.getLogger(__name__)

PUBLISHED_STATES = ("next", "active", "retired")
PrivateKey = RSAKey | ECKey | OKPKey


def generate_private_key(alg: str, rsa_bits: int = 2048) -> PrivateKey:
    parameters = {"alg": alg, "use": "sig"}
    if alg == "RS256":
        return RSAKey.generate_key(rsa_bits, parameters, private=True, auto_kid=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters, private=True, auto_kid=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", parameters, private=True, auto_kid=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    state: str
    public_jwk: dict[str, Any]
    private: PrivateKey | None = field(default=None, repr=False)

    def sign(self, claims: dict[str, Any], typ: str = "at+jwt") -> str:
        """A compact JWS over ``claims`` with ``alg``, ``kid`` and ``typ`` set."""
        if self.private is None:
            raise RuntimeError(f"key {self.kid} has no private half loaded")
        header = {"alg": self.alg, "kid": self.kid, "typ": typ}
        payload = json.dumps(claims, separators=(",", ":")).encode()
        if self.alg == "EdDSA":
            # RFC 9864 deprecates "EdDSA" for the fully specified "Ed25519"; we
            # keep "EdDSA" because resource-server libraries still expect it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", jwk.SecurityWarning)
                return jws.serialize_compact(header, payload, self.private, algorithms=[self.alg])
        return jws.serialize_compact(header, payload, self.private, algorithms=[self.alg])


class Signer:
    """Signs on a small thread pool so RSA work runs beside the event loop.

    ``cryptography`` releases the GIL while it signs: with one issuer process,
    two threads sign about twice as fast as the loop thread could alone.
    """

    def __init__(self, threads: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1,
                                        thread_name_prefix="jws-sign")

    async def sign(self, key: SigningKey, claims: dict[str, Any]) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, key.sign, claims)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _associated_data(kid: str) -> bytes:
    return f"signing_key:{kid}".encode()


class KeyRing:
    """The keys this process signs with and publishes, loaded from the store."""

    def __init__(self, engine: AsyncEngine, encryptor: Encryptor, clock: Clock, *,
                 alg: str, rsa_bits: int = 2048) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._encryptor = encryptor
        self._clock = clock
        self._alg = alg
        self._rsa_bits = rsa_bits
        self._keys: list[SigningKey] = []
        self._active: SigningKey | None = None
        self.jwks_document: bytes = b'{"keys":[]}'
        self.public_keyset: KeySet | None = None

    @property
    def active(self) -> SigningKey:
        if self._active is None:
            raise RuntimeError("no active signing key: call KeyRing.ensure_active() first")
        return self._active

    @property
    def keys(self) -> list[SigningKey]:
        return list(self._keys)

    async def load(self) -> None:
        async with self._sessions() as session:
            rows = (await session.execute(
                select(SigningKeyRow).where(SigningKeyRow.state.in_(PUBLISHED_STATES))
                .order_by(SigningKeyRow.created_at)
            )).scalars().all()
        keys = []
        active = None
        for row in rows:
            private = None
            if row.state == "active" and row.alg == self._alg:
                private = self._decrypt(row)
            key = SigningKey(kid=row.kid, alg=row.alg, state=row.state,
                             public_jwk=dict(row.public_jwk), private=private)
            keys.append(key)
            if private is not None:
                active = key
        self._keys = keys
        self._active = active
        document = {"keys": [key.public_jwk for key in keys]}
        self.jwks_document = json.dumps(document, separators=(",", ":")).encode()
        self.public_keyset = KeySet.import_key_set(document) if keys else None  # type: ignore[arg-type]

    async def ensure_active(self) -> SigningKey:
        """Load the ring; create the active key for ``alg`` if there is none.

        Several processes may start at once: the partial unique index lets one
        insert win, and the others load the winner's key.
        """
        await self.load()
        if self._active is not None:
            return self._active
        async with self._sessions() as session:
            try:
                async with session.begin():
                    await create_key(session, self._encryptor, self._clock, self._alg,
                                     self._rsa_bits, state="active")
            except IntegrityError:
                log.info("another process created the active %s key first", self._alg)
        await self.load()
        return self.active

    def _decrypt(self, row: SigningKeyRow) -> PrivateKey:
        data = self._encryptor.decrypt(row.private_jwk_encrypted, _associated_data(row.kid))
        key = jwk.import_key(json.loads(data))
        assert isinstance(key, RSAKey | ECKey | OKPKey)
        return key


async def create_key(session: AsyncSession, encryptor: Encryptor, clock: Clock, alg: str,
                     rsa_bits: int, *, state: str, actor: str | None = None) -> SigningKeyRow:
    """Generate a key and store it (private half encrypted) with its audit event."""
    private = generate_private_key(alg, rsa_bits)
    kid = private.kid
    assert kid is not None
    public = private.as_dict(private=False)
    now = clock.now()
    row = SigningKeyRow(
        kid=kid, alg=alg, state=state, public_jwk=public,
        private_jwk_encrypted=encryptor.encrypt(
            json.dumps(private.as_dict(private=True)).encode(), _associated_data(kid)
        ),
        created_at=utc(now), activated_at=utc(now) if state == "active" else None,
        retired_at=None,
    )
    session.add(row)
    await session.flush()
    await audit.record(session, AuditEvent.SIGNING_KEY_CREATED, at=now, actor=actor,
                       details={"kid": kid, "alg": alg, "state": state})
    return row


async def list_keys(session: AsyncSession) -> list[SigningKeyRow]:
    """Every stored key, oldest first (callers show metadata, never the private half)."""
    statement = select(SigningKeyRow).order_by(SigningKeyRow.created_at)
    return list((await session.execute(statement)).scalars().all())
