"""Token-signing keys: generation, encrypted storage, the in-process key ring, rotation.

States: ``next`` (published, not signing) -> ``active``
(signing; exactly one per algorithm, enforced by a partial unique index) ->
``retired`` (published until every token it signed has expired) -> deleted.
Rotation promotes ``next`` to ``active``, retires the ``active`` key and creates a
new ``next``, in one transaction with its audit event. How long each state lasts is
the rotation policy's (``issuer.keys.policy``).

The ``kid`` is the key's RFC 7638 thumbprint. Private JWKs are stored encrypted
(AES-256-GCM, ``issuer.crypto``) and bound to their ``kid``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from joserfc import jwk
from joserfc.jwk import ECKey, KeyParameters, KeySet, KeySetSerialization, OKPKey, RSAKey
from joserfc.jws import JWSRegistry
from joserfc.util import urlsafe_b64encode
from sqlalchemy import delete, false, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from issuer import audit
from issuer.audit import AuditEvent
from issuer.clock import Clock, utc
from issuer.crypto import Encryptor
from issuer.keys.policy import MAX_TOKEN_TTL, RotationPolicy
from issuer.store.models import Client, SigningKeyRow

log = logging.getLogger(__name__)

PUBLISHED_STATES = ("next", "active", "retired")
PrivateKey = RSAKey | ECKey | OKPKey

#: The audit actor of the background task's changes.
SCHEDULER = "scheduler"


class RotationRefused(Exception):
    """A rotation that would break someone; the message says why and what to do."""


@dataclass(frozen=True)
class Rotation:
    """What one rotation did."""

    alg: str
    retired_kid: str | None  # None when there was no active key for ``alg``
    active_kid: str
    next_kid: str
    forced: bool


@dataclass(frozen=True)
class Maintenance:
    """What one iteration of the background task did."""

    reloaded: bool
    rotation: Rotation | None
    deleted: tuple[str, ...]


def generate_private_key(alg: str, rsa_bits: int = 2048) -> PrivateKey:
    parameters: KeyParameters = {"alg": alg, "use": "sig"}
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
    created_at: float | None = None
    activated_at: float | None = None

    def sign(self, claims: dict[str, Any], typ: str = "at+jwt") -> str:
        """A compact JWS over ``claims`` with ``alg``, ``kid`` and ``typ`` set.

        The same bytes ``jws.serialize_compact`` makes (compact JSON, members in
        this order), built from joserfc's algorithm primitive directly: the
        protected header is encoded once per key (:attr:`_at_jwt_header`), not
        checked and re-encoded for every token."""
        if self.private is None:
            raise RuntimeError(f"key {self.kid} has no private half loaded")
        header = self._at_jwt_header if typ == "at+jwt" else self._header(typ)
        signing_input = header + b"." + urlsafe_b64encode(_COMPACT.encode(claims).encode())
        # RFC 9864 deprecates "EdDSA" for "Ed25519"; we keep "EdDSA" because
        # resource-server libraries still expect it (joserfc's model signs either way).
        signature = JWSRegistry.algorithms[self.alg].sign(signing_input, self.private)
        return (signing_input + b"." + urlsafe_b64encode(signature)).decode("ascii")

    @functools.cached_property
    def _at_jwt_header(self) -> bytes:
        """The base64url protected header of an RFC 9068 access token (``typ`` at+jwt)."""
        return self._header("at+jwt")

    def _header(self, typ: str) -> bytes:
        header = {"alg": self.alg, "kid": self.kid, "typ": typ}
        return urlsafe_b64encode(_COMPACT.encode(header).encode("ascii"))


#: Compact JSON, as ``json.dumps(..., separators=(",", ":"))`` writes it (ASCII only).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class Signer:
    """Signs access tokens: on a small thread pool beside the event loop, or inline.

    ``cryptography`` releases the GIL while it signs: with one issuer process, two
    threads sign about twice as fast as the loop thread could alone. When every CPU
    has an issuer process of its own (``issuer serve --workers`` >= CPUs) the
    threads have no idle core to use and the hand-off only costs: ``threads=0``
    signs on the caller's thread (``inline``).
    """

    def __init__(self, threads: int | None = None) -> None:
        self.inline = threads == 0
        self._pool = None if self.inline else ThreadPoolExecutor(
            max_workers=threads or os.cpu_count() or 1, thread_name_prefix="jws-sign")

    async def sign(self, key: SigningKey, claims: dict[str, Any]) -> str:
        if self._pool is None:
            return key.sign(claims)
        return await asyncio.get_running_loop().run_in_executor(self._pool, key.sign, claims)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def associated_data(kid: str) -> bytes:
    """What a signing key's encrypted private half is bound to (also ``issuer reencrypt``'s)."""
    return f"signing_key:{kid}".encode()


class KeyRing:
    """The keys this process signs with and publishes, loaded from the store.

    Every process holds one; the store is the truth. :meth:`maintain` (run by the
    lifespan's background task) reloads it, rotates when due and prunes.
    """

    def __init__(self, engine: AsyncEngine, encryptor: Encryptor, clock: Clock, *,
                 alg: str, rsa_bits: int = 2048, policy: RotationPolicy | None = None) -> None:
        self._dialect = engine.dialect.name
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._encryptor = encryptor
        self._clock = clock
        self._alg = alg
        self._rsa_bits = rsa_bits
        self.policy = policy or RotationPolicy()
        self._keys: list[SigningKey] = []
        self._active: SigningKey | None = None
        self._loaded: tuple[tuple[str, str], ...] | None = None
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

    @property
    def jwks_max_age(self) -> int:
        return self.policy.jwks_max_age

    async def load(self) -> bool:
        """Read the published keys from the store; True when they changed since the
        last load (an unchanged ring is not rebuilt, nor its private key decrypted)."""
        async with self._sessions() as session:
            rows = (await session.execute(
                select(SigningKeyRow).where(SigningKeyRow.state.in_(PUBLISHED_STATES))
                .order_by(SigningKeyRow.created_at, SigningKeyRow.kid)
            )).scalars().all()
        loaded = tuple((row.kid, row.state) for row in rows)
        if loaded == self._loaded:
            return False
        keys = []
        active = None
        for row in rows:
            private = None
            if row.state == "active" and row.alg == self._alg:
                held = self._active
                private = held.private if held and held.kid == row.kid else self._decrypt(row)
            key = SigningKey(
                kid=row.kid, alg=row.alg, state=row.state, public_jwk=dict(row.public_jwk),
                private=private, created_at=row.created_at.timestamp(),
                activated_at=row.activated_at.timestamp() if row.activated_at else None)
            keys.append(key)
            if private is not None:
                active = key
        document: KeySetSerialization = {"keys": [key.public_jwk for key in keys]}
        # Swapped in one go, between two awaits: a request sees the old ring or the new.
        self._keys = keys
        self._active = active
        self.jwks_document = json.dumps(document, separators=(",", ":")).encode()
        self.public_keyset = KeySet.import_key_set(document) if keys else None
        self._loaded = loaded
        return True

    async def reload(self) -> bool:
        """Pick up changes other processes (or the CLI) made; True when any."""
        return await self.load()

    async def ensure_active(self) -> SigningKey:
        """Load the ring; create the active key for ``alg`` if there is none, and a
        ``next`` key if there is none (so the first rotation has a published key).

        Several processes may start at once: the partial unique index lets one
        active insert win, the others load the winner's key; the ``next`` key is
        created under the ring's lock.
        """
        await self.load()
        if self._active is None:
            async with self._sessions() as session:
                try:
                    async with session.begin():
                        await create_key(session, self._encryptor, self._clock, self._alg,
                                         self._rsa_bits, state="active")
                except IntegrityError:
                    log.info("another process created the active %s key first", self._alg)
            await self.load()
        if not any(key.state == "next" and key.alg == self._alg for key in self._keys):
            async with self._sessions() as session, session.begin():
                _, upcoming = await self._lock(session)
                if not upcoming:
                    await create_key(session, self._encryptor, self._clock, self._alg,
                                     self._rsa_bits, state="next")
            await self.load()
        return self.active

    async def rotate(self, *, force: bool = False, actor: str | None = None,
                     source: str | None = None, request_id: str | None = None) -> Rotation:
        """Rotate now (``issuer keys rotate``, ``POST /api/v1/keys/rotate``).

        Refused (:class:`RotationRefused`) when the ``next`` key has been published
        for less than ``policy.min_next_age``, unless ``force``: a forced rotation
        may make resource servers with a warm cache refetch the JWKS once.
        """
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            current, upcoming = await self._lock(session)
            rotation = await self._rotate(session, current, upcoming, now, force=force,
                                          reason="manual", actor=actor, source=source,
                                          request_id=request_id)
        await self.load()
        return rotation

    async def rotate_if_due(self) -> Rotation | None:
        """The scheduled rotation: when the active key has signed for a rotation
        period. Exactly one process rotates: under the ring's lock the active key's
        ``activated_at`` is read again, and a second process finds it fresh."""
        now = self._clock.now()
        if self._active is None or not self._due(self._active.activated_at, now):
            return None
        rotation = None
        async with self._sessions() as session, session.begin():
            current, upcoming = await self._lock(session)
            if current is None or not self._due(_timestamp(current.activated_at), now):
                return None  # another process rotated first
            if not upcoming:
                # A store from before pre-publication: publish one now, promote it later.
                await create_key(session, self._encryptor, self._clock, self._alg,
                                 self._rsa_bits, state="next", actor=SCHEDULER)
            elif now - _timestamp(upcoming[0].created_at) >= self.policy.min_next_age:
                rotation = await self._rotate(session, current, upcoming, now, force=False,
                                              reason="scheduled", actor=SCHEDULER)
        await self.load()
        return rotation

    async def prune(self) -> list[str]:
        """Delete the retired keys whose every token has expired (plus leeway);
        returns their kids. Each deletion is audited once, whoever runs it."""
        now = self._clock.now()
        deleted: list[str] = []
        async with self._sessions() as session, session.begin():
            retired = (await session.execute(
                select(SigningKeyRow).where(SigningKeyRow.state == "retired")
                .order_by(SigningKeyRow.retired_at)
            )).scalars().all()
            if not retired:
                return deleted
            lifetime = self.policy.retired_lifetime(
                await max_token_ttl(session, self.policy.token_ttl))
            for row in retired:
                if row.retired_at is None or now < row.retired_at.timestamp() + lifetime:
                    continue
                result = await session.execute(
                    delete(SigningKeyRow)
                    .where(SigningKeyRow.kid == row.kid, SigningKeyRow.state == "retired")
                    .execution_options(synchronize_session=False))
                if _rowcount(result) != 1:
                    continue  # another process deleted it first
                await audit.record(session, AuditEvent.SIGNING_KEY_DELETED, at=now,
                                   actor=SCHEDULER, details={
                                       "kid": row.kid, "alg": row.alg,
                                       "retired_at": row.retired_at.isoformat()})
                deleted.append(row.kid)
        if deleted:
            await self.load()
        return deleted

    async def maintain(self) -> Maintenance:
        """One iteration of the background task: reload, rotate when due, prune."""
        reloaded = await self.reload()
        rotation = await self.rotate_if_due()
        deleted = await self.prune()
        return Maintenance(reloaded=reloaded, rotation=rotation, deleted=tuple(deleted))

    def _due(self, activated_at: float | None, now: float) -> bool:
        return activated_at is not None and now >= activated_at + self.policy.rotation_period

    async def _lock(self, session: AsyncSession) -> tuple[SigningKeyRow | None,
                                                           list[SigningKeyRow]]:
        """This algorithm's active key and ``next`` keys (oldest first), locked until
        the transaction ends.

        PostgreSQL: ``SELECT ... FOR UPDATE`` makes a second rotating process wait
        here; the second read (a new snapshot under READ COMMITTED) then sees what
        the first committed, its new ``next`` key included. SQLite lets one writer in
        at a time but ignores FOR UPDATE, and pysqlite opens the transaction only at
        the first write: a write that changes nothing comes first, so the reads
        below belong to the write transaction and a second process waits for the
        first one's commit before it reads.
        """
        if self._dialect == "sqlite":
            await session.execute(update(SigningKeyRow).where(false())
                                  .values(state=SigningKeyRow.state)
                                  .execution_options(synchronize_session=False))
        ring = (select(SigningKeyRow)
                .where(SigningKeyRow.alg == self._alg,
                       SigningKeyRow.state.in_(("active", "next")))
                .order_by(SigningKeyRow.created_at, SigningKeyRow.kid))
        await session.execute(ring.with_for_update())
        rows = (await session.execute(ring.execution_options(populate_existing=True))
                ).scalars().all()
        current = next((row for row in rows if row.state == "active"), None)
        return current, [row for row in rows if row.state == "next"]

    async def _rotate(self, session: AsyncSession, current: SigningKeyRow | None,
                      upcoming: Sequence[SigningKeyRow], now: float, *, force: bool,
                      reason: str, actor: str | None, source: str | None = None,
                      request_id: str | None = None) -> Rotation:
        min_age = self.policy.min_next_age
        if upcoming:
            promoted_kid = upcoming[0].kid
            age = now - _timestamp(upcoming[0].created_at)
            if age < min_age and not force:
                raise RotationRefused(
                    f"the next key {promoted_kid} has been published for {int(age)} s; a key "
                    f"signs only after {int(min_age)} s (JWKS max-age {self.jwks_max_age} s + "
                    f"reload interval), so that no resource server meets an unknown kid: "
                    f"retry in {math.ceil(min_age - age)} s, or force the rotation")
        elif not force:
            raise RotationRefused(
                f"no next {self._alg} key is published: restart the issuer to publish one "
                f"and retry in {int(min_age)} s, or force the rotation")
        else:
            promoted_kid = (await create_key(session, self._encryptor, self._clock, self._alg,
                                             self._rsa_bits, state="next", actor=actor)).kid
        # Retire first, then promote: one active key per alg at every statement.
        if current is not None:
            await self._move(session, current.kid, "active", state="retired",
                             retired_at=utc(now))
        await self._move(session, promoted_kid, "next", state="active", activated_at=utc(now))
        remaining = [row.kid for row in upcoming if row.kid != promoted_kid]
        next_kid = remaining[0] if remaining else (await create_key(
            session, self._encryptor, self._clock, self._alg, self._rsa_bits, state="next",
            actor=actor)).kid
        rotation = Rotation(alg=self._alg, retired_kid=current.kid if current else None,
                            active_kid=promoted_kid, next_kid=next_kid, forced=force)
        await audit.record(session, AuditEvent.SIGNING_KEY_ROTATED, at=now, actor=actor,
                           source=source, request_id=request_id, details={
                               "alg": self._alg, "retired_kid": rotation.retired_kid,
                               "active_kid": promoted_kid, "next_kid": next_kid,
                               "forced": force, "reason": reason})
        return rotation

    @staticmethod
    async def _move(session: AsyncSession, kid: str, from_state: str, **values: Any) -> None:
        """Change one key's state, only from ``from_state``: a concurrent change
        rolls the whole rotation back instead of applying it twice."""
        result = await session.execute(
            update(SigningKeyRow)
            .where(SigningKeyRow.kid == kid, SigningKeyRow.state == from_state)
            .values(**values).execution_options(synchronize_session=False))
        if _rowcount(result) != 1:
            raise RotationRefused(f"key {kid} is no longer {from_state!r}: another rotation "
                                  "ran at the same time; retry")

    def _decrypt(self, row: SigningKeyRow) -> PrivateKey:
        return _import_private_key(
            self._encryptor.decrypt(row.private_jwk_encrypted, associated_data(row.kid)))


@functools.lru_cache(maxsize=4)
def _import_private_key(data: bytes) -> PrivateKey:
    """The private JWK ``data`` (decrypted and authenticated), imported and checked.

    Importing an RSA key checks its consistency, which takes tens of milliseconds; a
    process that loads the same key again (another key ring, a reload after a
    rotation elsewhere) gets the key already checked for exactly these bytes.
    """
    key = jwk.import_key(json.loads(data))
    assert isinstance(key, RSAKey | ECKey | OKPKey)
    return key


async def max_token_ttl(session: AsyncSession, default_ttl: int) -> int:
    """The longest lifetime a token issued now may have: ``ISSUER_TOKEN_TTL`` or the
    largest client ``token_ttl``, at most a day."""
    longest = (await session.execute(select(func.max(Client.token_ttl)))).scalar()
    return min(MAX_TOKEN_TTL, max(default_ttl, int(longest or 0)))


def _timestamp(value: datetime | None) -> float:
    assert value is not None
    return value.timestamp()


def _rowcount(result: Any) -> int:
    count: int = result.rowcount
    return count


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
            json.dumps(private.as_dict(private=True)).encode(), associated_data(kid)
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
