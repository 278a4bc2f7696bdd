"""Redis down: decide in this process's memory (``ISSUER_RATE_LIMIT_FAIL=open``) or
refuse with ``503 temporarily_unavailable`` (``closed``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from redis.exceptions import RedisError

from issuer.clock import Clock
from issuer.errors import RateLimitUnavailable
from issuer.ratelimit.memory import MemoryRateLimiter
from issuer.ratelimit.rates import Decision, Rate, Rule
from issuer.ratelimit.redis_backend import RedisRateLimiter

log = logging.getLogger(__name__)


class FallbackRateLimiter:
    """Redis while it answers; this process's memory (or 503) while it does not.

    After a failure Redis is left alone for ``retry_every`` seconds, so a Redis
    that hangs costs one timeout per interval, not one per request. The outage is
    logged once per ``log_every`` seconds; ``on_fallback`` (a metric) is called
    for every check the memory backend answers. Refusing (``fail_closed``), the
    first refusal of every ``log_every`` seconds is marked to be audited.
    """

    def __init__(self, primary: RedisRateLimiter, fallback: MemoryRateLimiter, clock: Clock,
                 *, fail_closed: bool, on_fallback: Callable[[], None] | None = None,
                 retry_every: float = 1.0, log_every: float = 60.0) -> None:
        self._primary = primary
        self._fallback = fallback
        self._clock = clock
        self._fail_closed = fail_closed
        self._on_fallback = on_fallback
        self._retry_every = retry_every
        self._log_every = log_every
        self._skip_until = -math.inf
        self._logged_at = -math.inf
        self._refused_at = -math.inf
        self.down_since: float | None = None

    @property
    def degraded(self) -> bool:
        """True while Redis is failing and this process decides alone (or refuses)."""
        return self.down_since is not None

    async def maintain(self) -> None:
        await self._primary.maintain()

    async def aclose(self) -> None:
        await self._primary.aclose()

    async def hit(self, key: str, limit: Rate) -> Decision:
        return await self.check(Rule(key, limit))

    async def check(self, *rules: Rule) -> Decision:
        now = self._clock.now()
        if now >= self._skip_until:
            try:
                decision = await self._primary.check(*rules)
            except (RedisError, OSError) as error:
                self._failed(now, error)
            else:
                if self.down_since is not None:
                    log.warning("Redis answers again: rate limits are shared across processes")
                    self.down_since = None
                return decision
        if self._fail_closed:
            raise RateLimitUnavailable(first_refusal=self._first_refusal(now))
        if self._on_fallback is not None:
            self._on_fallback()
        return await self._fallback.check(*rules)

    def _first_refusal(self, now: float) -> bool:
        """Whether this refusal is the first of its ``log_every`` interval (the one audited)."""
        if now - self._refused_at < self._log_every:
            return False
        self._refused_at = now
        return True

    def _failed(self, now: float, error: Exception) -> None:
        self._skip_until = now + self._retry_every
        if self.down_since is None:
            self.down_since = now
        if now - self._logged_at >= self._log_every:
            self._logged_at = now
            mode = ("refusing token requests (ISSUER_RATE_LIMIT_FAIL=closed)"
                    if self._fail_closed else "limiting in this process only")
            log.warning("Redis is unreachable for rate limiting (%s); %s",
                        type(error).__name__, mode)
