"""A connector's concurrency cap across processes: leased slots in Redis.

NetSuite counts concurrent requests per account, whichever process sends them, so
each process's own cap (``NetSuiteClient``'s semaphore) is not enough once there are
several workers. ``SharedSlots`` holds one slot of ``netsuite_m2m_slots:{id}`` (a
sorted set: member = holder, score = lease end) for each request in flight; a slot
whose holder died is freed when its lease ends. Times are Redis's own (``TIME``),
not the caller's clock, so every process agrees on when a lease ends.

If Redis does not answer, the request goes ahead under the process's own cap (the
failure is logged): a Redis outage must not stop every push.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: Longer than one request can take (the outbound client's 30 s timeout).
LEASE_SECONDS = 60.0
#: How often a waiting request asks again (seconds; jittered by the caller's sleep).
POLL_SECONDS = 0.01

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
  return 1
end
return 0
"""


def slots_key(connector_id: str) -> str:
    return f"netsuite_m2m_slots:{connector_id}"


class SharedSlots:
    """``async with slots():`` holds one of ``limit`` slots shared by every process."""

    def __init__(self, redis: Redis, connector_id: str, limit: int, *,
                 lease: float = LEASE_SECONDS, poll: float = POLL_SECONDS,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._redis = redis
        self._key = slots_key(connector_id)
        self._limit = limit
        self._lease = lease
        self._poll = poll
        self._sleep = sleep
        self._acquire = redis.register_script(_ACQUIRE)

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        holder = secrets.token_hex(8)
        held = await self._wait(holder)
        try:
            yield
        finally:
            if held:
                with suppress(RedisError):
                    await self._redis.zrem(self._key, holder)

    async def _wait(self, holder: str) -> bool:
        """True once a slot is held; False when Redis failed (go on without one)."""
        while True:
            try:
                if await self._acquire(keys=[self._key],
                                       args=[self._limit, self._lease, holder]):
                    return True
            except RedisError as error:
                log.warning("NetSuite concurrency slots unavailable (%s): this process's own "
                            "cap applies", type(error).__name__)
                return False
            await self._sleep(self._poll)
