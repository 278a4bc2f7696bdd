"""The ``RateLimiter`` protocol every backend answers, and the limiter that limits
nothing (``ISSUER_RATE_LIMITING=off``)."""

from __future__ import annotations

from typing import Protocol

from issuer.ratelimit.leases import LEASE_LIFETIME
from issuer.ratelimit.rates import Decision, Rate, Rule


class RateLimiter(Protocol):
    async def check(self, *rules: Rule) -> Decision:
        """Decide ``rules`` together; charge the counting ones only if all allow."""
        ...

    async def hit(self, key: str, limit: Rate) -> Decision:
        """``check(Rule(key, limit))``: count one hit on ``key`` if ``limit`` allows it."""
        ...

    async def maintain(self) -> None:
        """Periodic upkeep (the app calls it every ``MAINTAIN_EVERY`` seconds)."""
        ...

    async def aclose(self) -> None:
        """The process is stopping: give back what it holds of shared budgets."""
        ...


#: How often the app calls ``RateLimiter.maintain`` (seconds): a lease's lifetime.
MAINTAIN_EVERY = LEASE_LIFETIME


class NoUpkeep:
    """``maintain`` and ``aclose`` for limiters that hold nothing shared."""

    async def maintain(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Unlimited(NoUpkeep):
    """``ISSUER_RATE_LIMITING=off``: every check allows, and nothing is counted
    (rate limits are left to a gateway in front)."""

    async def hit(self, key: str, limit: Rate) -> Decision:
        return await self.check(Rule(key, limit))

    async def check(self, *rules: Rule) -> Decision:
        rule = next((rule for rule in rules if rule.count), rules[0])
        return Decision(allowed=True, limit=rule.rate.limit, remaining=rule.rate.limit,
                        reset_after=0.0, retry_after=0.0, policy=rule.policy)
