"""RFC 9449 DPoP at the token endpoint: the proof's checks, the spent ``jti``s, the
server's nonces, and the binding of the access token to the proof's key.

A request without a ``DPoP`` header costs one header look-up (none of this runs
unless the client is registered ``dpop_bound_access_tokens``, which then refuses it).
A request with one costs one signature verification (``jwks.dpop.check_proof``,
pure CPU) and one write to the replay store: a row of the assertion-jti table
(``issuer.store.assertion_jtis``, namespace ``dpop:``) committed with the token's
record and audit event, or Redis (``SET NX EX``) when configured. The granted token then carries
``cnf: {"jkt": <thumbprint>}`` (§6.1) and is answered with ``token_type`` ``DPoP`` (§5).

Nonces (§8) are stateless: an HMAC of a time slot under a key derived from the master
key, so every process makes and accepts the same ones; the current and the previous
slot's nonces are accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from issuer.clock import Clock, utc
from issuer.errors import InvalidDPoPProof, InvalidRequest, UseDPoPNonce
from issuer.oauth.server import IssuedToken
from issuer.settings import Settings
from issuer.store.assertion_jtis import ReplayStore as JtiStore
from issuer.store.models import UsedAssertionJti
from issuer.store.records import ClientRecord
from issuer.store.writer import Rows
from jwks.dpop import DPOP_ALGORITHMS, MAX_PROOF_BYTES, ReplayStore, check_proof, replay_key
from jwks.errors import DPoPProofInvalid

log = logging.getLogger(__name__)

__all__ = ["DPOP_ALGORITHMS", "DPoPBinding", "Nonces", "dpop_binding"]

#: The replay table's namespace for DPoP proofs (client ids never hold a colon).
NAMESPACE = "dpop:"
_NONCE_LABEL = b"m2m-issuer DPoP-Nonce"
_SPENT = UsedAssertionJti.__table__


class DatabaseProofReplay:
    """The client-assertion replay table, under the ``dpop:`` namespace: one insert
    per proof, keyed by :func:`jwks.dpop.replay_key` (the proof's key and ``jti``)."""

    def __init__(self, store: JtiStore) -> None:
        self._store = store

    async def use(self, key: str, expires_at: float, now: float) -> bool:
        return await self._store.use(NAMESPACE, key, expires_at)


class RedisProofReplay:
    """``SET <prefix>dpop:<key> NX EX``: one round trip per proof. While Redis fails,
    the database (shared by every process too) takes over."""

    def __init__(self, redis: Redis, prefix: str, fallback: DatabaseProofReplay) -> None:
        self._redis = redis
        self._prefix = prefix + NAMESPACE
        self._fallback = fallback

    async def use(self, key: str, expires_at: float, now: float) -> bool:
        seconds = max(1, math.ceil(expires_at - now))
        try:
            stored = await self._redis.set(self._prefix + key, b"1", nx=True, ex=seconds)
        except (RedisError, OSError) as failure:
            log.warning("DPoP replay store: Redis failed (%s); using the database",
                        type(failure).__name__)
            return await self._fallback.use(key, expires_at, now)
        return bool(stored)


class Nonces:
    """§8 server nonces: ``base64url(slot || HMAC(key, slot)[:16])``, a slot being
    ``lifetime`` seconds; the current and the previous slot's are valid."""

    def __init__(self, key: bytes, lifetime: int, clock: Clock) -> None:
        self._key = hmac.new(key, _NONCE_LABEL, hashlib.sha256).digest()
        self._lifetime = lifetime
        self._clock = clock
        self._cached: tuple[int, str] = (-1, "")

    def current(self) -> str:
        """The nonce a client should use next (cached per slot)."""
        slot = int(self._clock.now() // self._lifetime)
        if self._cached[0] != slot:
            self._cached = (slot, self._make(slot))
        return self._cached[1]

    def valid(self, nonce: str | None) -> bool:
        if not nonce or len(nonce) > 64:
            return False
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return False
        if len(raw) != 24:
            return False
        slot = int.from_bytes(raw[:8], "big")
        now = int(self._clock.now() // self._lifetime)
        return slot in (now, now - 1) and hmac.compare_digest(self._make(slot), nonce)

    def _make(self, slot: int) -> str:
        data = slot.to_bytes(8, "big")
        mac = hmac.new(self._key, data, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(data + mac).rstrip(b"=").decode()


class DPoPBinding:
    """The token endpoint's DPoP step (§5): check the request's proof, spend its
    ``jti``, bind the granted token to its key."""

    def __init__(self, settings: Settings, clock: Clock, replay: ReplayStore,
                 nonces: Nonces | None, *, spend_with_token: bool = False) -> None:
        self.token_url = settings.issuer_url + "/token"
        self.max_age = settings.dpop_proof_max_age
        self.leeway = settings.dpop_proof_leeway
        self._clock = clock
        #: Spent proofs, shared by every process; the admin API's DPoP check uses it too.
        self.replay = replay
        #: The database store: the token endpoint spends a proof's ``jti`` in the token's
        #: own transaction (one more row beside the token record and its audit event)
        #: instead of a transaction of its own, which on SQLite would queue behind the
        #: group writer for the database's one write lock.
        self.spend_with_token = spend_with_token
        #: Set when the server requires nonces (``ISSUER_DPOP_NONCE``).
        self.nonces = nonces

    async def bind(self, issued: IssuedToken, proofs: Sequence[str],
                   record: ClientRecord) -> tuple[IssuedToken, Rows]:
        """``issued``, bound to the key of the one proof in ``proofs`` (the request's
        ``DPoP`` headers), and the rows that spend the proof's ``jti`` in the token's
        transaction (none when Redis spent it here). A client registered
        ``dpop_bound_access_tokens`` without a proof is ``invalid_request`` (§5.2); a
        bad proof ``invalid_dpop_proof``; a missing or stale nonce, when required,
        ``use_dpop_nonce`` (§8). A replay found when the rows are written is
        :func:`replayed` (the writer's unique-key violation)."""
        if not proofs:
            if record.dpop_bound:
                raise InvalidRequest("This client must send a DPoP proof",
                                     reason="dpop_proof_required")
            return issued, []
        # §4.3 (1): "there is not more than one DPoP HTTP request header field".
        if len(proofs) > 1:
            raise InvalidDPoPProof("Send one DPoP header", reason="dpop_two_headers")
        if len(proofs[0]) > MAX_PROOF_BYTES:
            raise InvalidDPoPProof("The DPoP proof is too large", reason="dpop_too_large")
        now = self._clock.now()
        try:
            proof = check_proof(proofs[0], method="POST", url=self.token_url, now=now,
                                max_age=self.max_age, leeway=self.leeway)
        except DPoPProofInvalid as error:
            detail = str(error)
            raise InvalidDPoPProof(_sentence(detail), reason=f"dpop: {detail}") from None
        # §4.3 (10): "if the server provided a nonce value to the client, the nonce
        # claim matches the server-provided nonce value".
        if self.nonces is not None and not self.nonces.valid(proof.nonce):
            raise UseDPoPNonce(reason="dpop_nonce_missing" if proof.nonce is None
                               else "dpop_nonce_stale")
        # §11.1: the jti is held as long as the proof's iat would be accepted.
        key, expires_at = replay_key(proof), proof.iat + self.max_age + 1
        if self.spend_with_token:
            return issued.bound_to(proof.jkt), [(_SPENT, {
                "client_id": NAMESPACE, "jti": key, "expires_at": utc(expires_at)})]
        if not await self.replay.use(key, expires_at, now):
            raise replayed()
        return issued.bound_to(proof.jkt), []


def replayed() -> InvalidDPoPProof:
    """§11.1: the proof's ``jti`` was spent before (in this process or another)."""
    return InvalidDPoPProof("The DPoP proof was used before", reason="dpop_jti_replayed")


def dpop_binding(settings: Settings, clock: Clock, store: JtiStore, redis: Redis | None,
                 master_key: bytes) -> DPoPBinding:
    """The token endpoint's DPoP step for these settings: proofs spent in Redis when
    configured (else, and while Redis fails, in the database); nonces keyed by the
    master key when ``ISSUER_DPOP_NONCE`` is on."""
    database = DatabaseProofReplay(store)
    replay: ReplayStore = database if redis is None else RedisProofReplay(
        redis, settings.redis_key_prefix, database)
    nonces = (Nonces(master_key, settings.dpop_nonce_lifetime, clock)
              if settings.dpop_nonce else None)
    return DPoPBinding(settings, clock, replay, nonces, spend_with_token=redis is None)


def _sentence(detail: str) -> str:
    return detail[:1].upper() + detail[1:]
