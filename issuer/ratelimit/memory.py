"""The sliding-window log in this process's memory (one process, or the fallback
while Redis is down)."""

from __future__ import annotations

import math
from collections import deque

from issuer.clock import Clock
from issuer.ratelimit.protocol import NoUpkeep
from issuer.ratelimit.rates import Decision, Rate, Rule


class MemoryRateLimiter(NoUpkeep):
    """Sliding-window log in this process's memory (single process only).

    ``check`` never awaits, so on one event loop it is atomic without a lock.
    Memory is bounded by ``limit`` timestamps per live key; keys whose window
    has emptied are dropped by a sweep every ``sweep_every`` checks.
    """

    def __init__(self, clock: Clock, *, sweep_every: int = 4096) -> None:
        self._clock = clock
        self._sweep_every = sweep_every
        self._checks_since_sweep = 0
        self._windows: dict[str, tuple[Rate, deque[float]]] = {}
        self._refused_until: dict[str, float] = {}

    def __len__(self) -> int:
        """How many keys are tracked (for tests and metrics)."""
        return len(self._windows)

    async def hit(self, key: str, limit: Rate) -> Decision:
        return await self.check(Rule(key, limit))

    async def check(self, *rules: Rule) -> Decision:
        now = self._clock.now()
        self._checks_since_sweep += 1
        if self._checks_since_sweep >= self._sweep_every:
            self._sweep(now)
        windows = [self._window(rule, now) for rule in rules]
        for rule, stamps in zip(rules, windows, strict=True):
            if len(stamps) >= rule.rate.limit:
                wait = stamps[0] + rule.rate.period - now
                first = self._refused_until.get(rule.key, -math.inf) <= now
                if first:
                    self._refused_until[rule.key] = now + wait
                return Decision(allowed=False, limit=rule.rate.limit, remaining=0,
                                reset_after=wait, retry_after=wait, policy=rule.policy,
                                first_refusal=first)
        best: Decision | None = None
        best_counted = False
        for rule, stamps in zip(rules, windows, strict=True):
            if rule.count:
                stamps.append(now)
            decision = Decision(
                allowed=True, limit=rule.rate.limit, remaining=rule.rate.limit - len(stamps),
                reset_after=stamps[0] + rule.rate.period - now if stamps else 0.0,
                retry_after=0.0, policy=rule.policy)
            # The headers describe the tightest budget this request was charged to.
            if best is None or (rule.count and (
                    not best_counted or decision.remaining < best.remaining)):
                best, best_counted = decision, rule.count
        assert best is not None, "check() needs at least one rule"
        return best

    def _window(self, rule: Rule, now: float) -> deque[float]:
        entry = self._windows.get(rule.key)
        if entry is None or entry[0] != rule.rate:
            # New key, or its policy changed: the hits counted so far stay counted
            # under the new rate (as in Redis); the log holds at most the largest
            # limit a key has had, since a full window refuses instead of growing.
            entry = (rule.rate, entry[1] if entry is not None else deque())
            self._windows[rule.key] = entry
        stamps = entry[1]
        cutoff = now - rule.rate.period
        while stamps and stamps[0] <= cutoff:
            stamps.popleft()
        return stamps

    def _sweep(self, now: float) -> None:
        self._checks_since_sweep = 0
        stale = [key for key, (rate, stamps) in self._windows.items()
                 if not stamps or stamps[-1] <= now - rate.period]
        for key in stale:
            del self._windows[key]
        for key in [key for key, until in self._refused_until.items() if until <= now]:
            del self._refused_until[key]
