"""Token cache and locks: Redis when configured, this process's memory otherwise.

One token per connector under ``netsuite_m2m_token:{connector_id}``, the value
AES-256-GCM encrypted and bound to that key (``issuer.crypto``), kept for
``expires_in - 300`` seconds: NetSuite's guidance, "renew about 5 minutes before
``expires_in`` runs out". The refresh time is stored in the value too and checked on
every read against the injected clock, so an advanced test clock expires it even
where Redis's own TTL has not run out.

Locks: ``netsuite_m2m_token_lock:{id}`` makes token refreshes single-flight across
processes; ``netsuite_m2m_rotation_lock:{id}`` (30 s) guards a rotation's
confirmation. Without Redis there is one process: the token lock is a no-op (the
service's in-process single flight covers it) and rotations rely on the database's
optimistic check.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import LockError

from connectors.netsuite.token_client import AccessToken
from issuer.clock import Clock
from issuer.crypto import DecryptionError, Encryptor

#: Renew this long before NetSuite's ``expires_in`` runs out.
REFRESH_MARGIN = 300
ROTATION_LOCK_SECONDS = 30
TOKEN_LOCK_SECONDS = 30


def token_key(connector_id: str) -> str:
    return f"netsuite_m2m_token:{connector_id}"


def rotation_lock_key(connector_id: str) -> str:
    return f"netsuite_m2m_rotation_lock:{connector_id}"


def token_lock_key(connector_id: str) -> str:
    return f"netsuite_m2m_token_lock:{connector_id}"


class LockHeld(Exception):
    """Another request holds the lock."""


@dataclass(frozen=True)
class CachedToken:
    token: AccessToken
    refresh_at: float = field(repr=False)


class TokenCache(Protocol):
    async def get(self, connector_id: str) -> AccessToken | None: ...
    async def put(self, connector_id: str, token: AccessToken) -> None: ...
    async def bust(self, connector_id: str) -> None: ...


class _Sealed:
    """Encrypts cache values, bound to their key."""

    def __init__(self, encryptor: Encryptor, clock: Clock) -> None:
        self.encryptor = encryptor
        self.clock = clock

    def seal(self, connector_id: str, token: AccessToken) -> tuple[bytes, int] | None:
        ttl = token.expires_in - REFRESH_MARGIN
        if ttl <= 0:
            return None  # too short-lived to be worth keeping
        value = json.dumps({"access_token": token.access_token, "expires_in": token.expires_in,
                            "refresh_at": self.clock.now() + ttl}).encode()
        return self.encryptor.encrypt(value, token_key(connector_id).encode()), ttl

    def open(self, connector_id: str, sealed: bytes) -> AccessToken | None:
        try:
            value = json.loads(self.encryptor.decrypt(sealed, token_key(connector_id).encode()))
        except (DecryptionError, ValueError):
            return None
        if self.clock.now() >= value["refresh_at"]:
            return None
        return AccessToken(access_token=value["access_token"], expires_in=value["expires_in"])


class MemoryTokenCache:
    def __init__(self, encryptor: Encryptor, clock: Clock) -> None:
        self._sealed = _Sealed(encryptor, clock)
        self._values: dict[str, bytes] = {}

    async def get(self, connector_id: str) -> AccessToken | None:
        sealed = self._values.get(connector_id)
        return self._sealed.open(connector_id, sealed) if sealed is not None else None

    async def put(self, connector_id: str, token: AccessToken) -> None:
        sealed = self._sealed.seal(connector_id, token)
        if sealed is not None:
            self._values[connector_id] = sealed[0]

    async def bust(self, connector_id: str) -> None:
        self._values.pop(connector_id, None)


class RedisTokenCache:
    def __init__(self, redis: Redis, encryptor: Encryptor, clock: Clock) -> None:
        self._redis = redis
        self._sealed = _Sealed(encryptor, clock)

    async def get(self, connector_id: str) -> AccessToken | None:
        sealed = await self._redis.get(token_key(connector_id))
        return self._sealed.open(connector_id, sealed) if isinstance(sealed, bytes) else None

    async def put(self, connector_id: str, token: AccessToken) -> None:
        sealed = self._sealed.seal(connector_id, token)
        if sealed is not None:
            await self._redis.set(token_key(connector_id), sealed[0], ex=sealed[1])

    async def bust(self, connector_id: str) -> None:
        await self._redis.delete(token_key(connector_id))


class Locks:
    """Cross-process locks on Redis; ``redis=None`` is a single process."""

    def __init__(self, redis: Redis | None) -> None:
        self.redis = redis

    @contextlib.asynccontextmanager
    async def token_refresh(self, connector_id: str) -> AsyncIterator[None]:
        """Waits for another process's refresh of the same connector, then holds the lock."""
        if self.redis is None:
            yield
            return
        lock = self.redis.lock(token_lock_key(connector_id), timeout=TOKEN_LOCK_SECONDS,
                               sleep=0.05, blocking_timeout=TOKEN_LOCK_SECONDS + 5)
        if not await lock.acquire():
            raise LockHeld(token_lock_key(connector_id))
        try:
            yield
        finally:
            with contextlib.suppress(LockError):  # expired meanwhile: nothing to release
                await lock.release()

    @contextlib.asynccontextmanager
    async def rotation(self, connector_id: str) -> AsyncIterator[None]:
        """Held or refused at once (LockHeld): a confirmation never waits for another."""
        if self.redis is None:
            yield
            return
        lock = self.redis.lock(rotation_lock_key(connector_id), timeout=ROTATION_LOCK_SECONDS)
        if not await lock.acquire(blocking=False):
            raise LockHeld(rotation_lock_key(connector_id))
        try:
            yield
        finally:
            with contextlib.suppress(LockError):
                await lock.release()
