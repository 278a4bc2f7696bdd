"""Rate limiting: one ``RateLimiter`` protocol, an in-process and a Redis backend.

Handlers ask ``await limiter.check(Rule(key, rate, policy), ...)`` and get a
:class:`Decision` they render as ``429 Too Many Requests`` (RFC 6585 §4) with
``Retry-After`` (RFC 9110 §10.2.3) and the ``RateLimit-Limit`` /
``RateLimit-Remaining`` / ``RateLimit-Reset`` fields of
draft-ietf-httpapi-ratelimit-headers. One check may hold several rules, decided
together and atomically: every rule must allow the request, and only then are
the counting rules charged. A refused check charges nothing, so a caller that
keeps knocking is not locked out for longer. A rule with ``count=False`` only
looks (a budget spent by failures is consulted on every request and charged
only when one fails).

Both backends are a sliding-window log: they keep the times of the last
``limit`` hits per key, so "10/hour" means at most 10 in *any* 60 minutes (a
GCRA with a burst of 10 would allow up to 19 in the first hour), and they answer
alike, so a deployment that adds Redis keeps its limits' meaning.

- :class:`MemoryRateLimiter`: this process's memory (single process).
- :class:`RedisRateLimiter`: one Lua script per check -- one round trip, atomic
  on the server -- over a sorted set per key, so every issuer process shares one
  budget (DESIGN §8). Concurrent checks share round trips (pipelined), and a
  budget this process checks again and again is leased (:mod:`issuer.ratelease`):
  slots reserved in the shared log are spent here without a round trip.
- :class:`FallbackRateLimiter`: Redis while it answers; while it does not, this
  process's memory (``ISSUER_RATE_LIMIT_FAIL=open``) or ``503
  temporarily_unavailable`` (``closed``).

Time comes from the injected :class:`~issuer.clock.Clock` in both backends, so
tests move a fake clock instead of sleeping; issuer hosts keep their clocks in
step with NTP (milliseconds of skew are nothing against windows of minutes).

Why not the ``limits`` library (measured with redis-py 8 on this machine's
loopback Redis, one connection, 5,000 sequential checks): its moving window
answers ``hit`` with a bare bool, so the remaining budget and the reset time the
headers need cost a second round trip (``get_window_stats``: 2,873 checks/s
against 5,767/s for one script that returns all three); it cannot decide two
keys atomically (the failed-authentication budget and the client's, in one
round trip); and its storages read ``time.time()``, which tests cannot move. Its
in-process moving window managed 142,000 hits/s against 383,000/s here.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from issuer.clock import Clock
from issuer.errors import RateLimitUnavailable
from issuer.ratelease import (
    LEASE_LIFETIME,
    LEASE_MIN,
    LEASE_SHARE,
    MAX_TRACKED,
    Lease,
    LeaseBook,
)

log = logging.getLogger(__name__)

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(
    r"^\s*(?P<limit>\d+)\s*(?:/|\s+per\s+)\s*(?P<count>\d+)?\s*"
    r"(?P<unit>second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    """``limit`` hits per ``period`` seconds, e.g. ``Rate.parse("10/hour")``."""

    limit: int
    period: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period < 1:
            raise ValueError("a rate needs a limit and a period of at least 1")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"10/hour"``, ``"1200/minute"``, ``"5 per second"``, ``"100/2 hours"``."""
        match = _RATE.match(text)
        if match is None:
            raise ValueError(f"a rate looks like '10/hour' or '1200/minute', got {text!r}")
        count = int(match["count"]) if match["count"] else 1
        return cls(limit=int(match["limit"]), period=count * _UNITS[match["unit"].lower()])

    def __str__(self) -> str:
        for unit, seconds in reversed(_UNITS.items()):
            if self.period % seconds == 0:
                count = self.period // seconds
                return f"{self.limit}/{unit}" if count == 1 else f"{self.limit}/{count} {unit}s"
        raise AssertionError("unreachable: every period is a whole number of seconds")


@dataclass(frozen=True)
class Rule:
    """One budget a request must fit: ``rate`` on ``key``, named ``policy`` (the
    label of the rejection metric). ``count=False`` looks without charging."""

    key: str
    rate: Rate
    policy: str = "default"
    count: bool = True


@dataclass(frozen=True)
class Decision:
    """The answer to one check. Times are seconds from now.

    When allowed, the numbers are those of the tightest counted rule; when
    refused, those of the rule that refused.
    """

    allowed: bool
    limit: int
    remaining: int  # hits still allowed in the current window, after this one
    reset_after: float  # until one more hit becomes available (0 with nothing counted)
    retry_after: float  # until a refused caller may try again; 0 when allowed
    policy: str = "default"  # the refusing rule's policy (or the tightest counted one's)
    # True for the first refusal of a key since its budget ran out: callers audit
    # that one, so a flood of refused requests cannot flood the audit log.
    first_refusal: bool = False

    def headers(self) -> dict[str, str]:
        """RateLimit-* fields, plus ``Retry-After`` on a refusal (whole seconds, >= 1)."""
        headers = {"RateLimit-Limit": str(self.limit),
                   "RateLimit-Remaining": str(self.remaining),
                   "RateLimit-Reset": str(math.ceil(self.reset_after))}
        if not self.allowed:
            # RFC 9110 §10.2.3: delay-seconds is a non-negative integer; round
            # up so that a caller who waits exactly that long is let in.
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


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


class _NoUpkeep:
    """``maintain`` and ``aclose`` for limiters that hold nothing shared."""

    async def maintain(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Unlimited(_NoUpkeep):
    """``ISSUER_RATE_LIMITING=off``: every check allows, and nothing is counted
    (rate limits are left to a gateway in front)."""

    async def hit(self, key: str, limit: Rate) -> Decision:
        return await self.check(Rule(key, limit))

    async def check(self, *rules: Rule) -> Decision:
        rule = next((rule for rule in rules if rule.count), rules[0])
        return Decision(allowed=True, limit=rule.rate.limit, remaining=rule.rate.limit,
                        reset_after=0.0, retry_after=0.0, policy=rule.policy)


class MemoryRateLimiter(_NoUpkeep):
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


# KEYS: one sorted set per rule (members "<ms>:<nonce>", scores = ms).
# ARGV: now (ms), nonce, lease slots wanted, longest lease (ms), lease share, fewest
# slots worth a lease, then per rule: limit, period (ms), count (1|0).
# Returns {allowed, rule index (1-based), remaining, reset ms, first refusal,
# lease slots granted, lease lifetime ms}. A lease's slots are members
# "<member>:1".."<member>:<granted>" of every counted key, scored at the lease's
# end (issuer.ratelease); every key lives its window plus a lease lifetime.
_CHECK_SCRIPT = """
local now = tonumber(ARGV[1])
local member = ARGV[1] .. ':' .. ARGV[2]
local want = tonumber(ARGV[3])
local longest = tonumber(ARGV[4])
local base = 6
local sizes = {}
local lifetime = longest
for i = 1, #KEYS do
  local limit = tonumber(ARGV[base + 3 * i - 2])
  local period = tonumber(ARGV[base + 3 * i - 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - period)
  local size = redis.call('ZCARD', KEYS[i])
  if size >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local wait = tonumber(oldest[2]) + period - now
    local marker = KEYS[i] .. ':refused'
    local first = 0
    if tonumber(redis.call('GET', marker) or '0') <= now then
      redis.call('SET', marker, now + wait, 'PX', math.max(wait, 1))
      first = 1
    end
    return {0, i, 0, wait, first, 0, 0}
  end
  sizes[i] = size
  if ARGV[base + 3 * i] == '1' then
    lifetime = math.min(lifetime, math.floor(period / 100))
    want = math.min(want, math.floor((limit - size - 1) / tonumber(ARGV[5])))
  end
end
local grant = 0
if want >= tonumber(ARGV[6]) then grant = want end
local slots = {}
for j = 1, grant do
  slots[2 * j - 1] = now + lifetime
  slots[2 * j] = member .. ':' .. j
end
local best, best_remaining, best_reset, best_counted = 1, nil, 0, false
for i = 1, #KEYS do
  local limit = tonumber(ARGV[base + 3 * i - 2])
  local period = tonumber(ARGV[base + 3 * i - 1])
  local counted = ARGV[base + 3 * i] == '1'
  if counted then
    redis.call('ZADD', KEYS[i], now, member)
    if grant > 0 then redis.call('ZADD', KEYS[i], unpack(slots)) end
    redis.call('PEXPIRE', KEYS[i], period + math.min(longest, math.floor(period / 100)))
    sizes[i] = sizes[i] + 1 + grant
  end
  local remaining = limit - sizes[i]
  if counted then remaining = remaining + grant end
  if best_remaining == nil or (counted and ((not best_counted) or remaining < best_remaining)) then
    local reset = 0
    if sizes[i] > 0 then
      local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      reset = tonumber(oldest[2]) + period - now
    end
    best, best_remaining, best_reset, best_counted = i, remaining, reset, counted
  end
end
return {1, best, best_remaining, best_reset, 0, grant, lifetime}
"""

_Pending = tuple[list[str], list[int | str], "asyncio.Future[Any]"]
_LONGEST_LEASE_MS = int(LEASE_LIFETIME * 1000)


class RedisRateLimiter:
    """The sliding-window log in Redis: one ``EVALSHA`` per check, atomic, or none
    while this process holds a lease on a busy budget (:mod:`issuer.ratelease`).

    Checks that arrive while a round trip is in flight wait for it and then go
    together, as one pipeline (each still its own atomic script run): under load
    the client-side cost per check falls from about 55 us alone to under 20 us in
    batches of 16 (redis-py 8 with hiredis, this machine); an idle server's check
    goes out at once, alone. ``maintain()`` (every lease lifetime) hands the unused
    slots of ended leases back; ``aclose()`` hands back every lease's.
    """

    def __init__(self, redis: Redis, clock: Clock, *, prefix: str = "issuer:rl:",
                 leases: bool = True) -> None:
        self._redis = redis
        self._clock = clock
        self._prefix = prefix
        self._sha = hashlib.sha1(_CHECK_SCRIPT.encode()).hexdigest()  # noqa: S324 -- Redis's script id
        self._pending: list[_Pending] = []
        self._sending = False
        # Log members are "<ms>:<process nonce>.<counter>": unique across processes
        # without a random draw per check.
        self._nonce = secrets.token_hex(6)
        self._counter = itertools.count()
        self._book = LeaseBook(max_tracked=MAX_TRACKED if leases else 0)
        self._returning: set[asyncio.Task[None]] = set()

    @property
    def leases(self) -> int:
        """Leases this process holds open (for tests and metrics)."""
        return len(self._book)

    async def hit(self, key: str, limit: Rate) -> Decision:
        return await self.check(Rule(key, limit))

    async def check(self, *rules: Rule) -> Decision:
        if not rules:
            raise ValueError("check() needs at least one rule")
        now = self._clock.now()
        lease = self._book.spend(rules, now)
        while lease is None and (asking := self._book.asking(rules)) is not None:
            # A lease on these rules is on its way: wait for it rather than spend a
            # round trip of our own. Each lease serves its asker and some waiters;
            # once one is refused, none is asked for a while and waiters go on.
            await asyncio.shield(asking)
            now = self._clock.now()
            lease = self._book.spend(rules, now, observe=False)
        self._hand_back()
        if lease is not None:
            return Decision(allowed=True, limit=lease.rule.rate.limit,
                            remaining=max(0, lease.remaining - lease.used),
                            reset_after=max(0.0, lease.reset_at - now), retry_after=0.0,
                            policy=lease.rule.policy)
        now_ms = int(now * 1000)
        member = f"{self._nonce}.{next(self._counter)}"
        want = self._book.want(rules)
        arguments: list[int | str] = [now_ms, member, want, _LONGEST_LEASE_MS,
                                      LEASE_SHARE, LEASE_MIN]
        for rule in rules:
            arguments += [rule.rate.limit, rule.rate.period * 1000, int(rule.count)]
        keys = [self._prefix + rule.key for rule in rules]
        granted: Lease | None = None
        try:
            result = await self._send(keys, arguments)
            allowed, index, remaining, reset_ms, first, slots, lifetime = result
            rule = rules[int(index) - 1]
            reset = int(reset_ms) / 1000
            if int(slots) > 0:
                granted = Lease(
                    member=f"{now_ms}:{member}",
                    keys=tuple(key for key, rule_ in zip(keys, rules, strict=True)
                               if rule_.count),
                    granted=int(slots), until=now + int(lifetime) / 1000,
                    remaining=int(remaining), reset_at=now + reset, rule=rule)
        finally:
            if want:
                self._book.granted(rules, granted, now)
        return Decision(allowed=bool(allowed), limit=rule.rate.limit, remaining=int(remaining),
                        reset_after=reset, retry_after=0.0 if allowed else reset,
                        policy=rule.policy, first_refusal=bool(first))

    async def maintain(self) -> None:
        """Hand back the unused slots of leases whose lifetime is over."""
        self._book.expire(self._clock.now())
        self._hand_back()
        if self._returning:
            await asyncio.gather(*self._returning, return_exceptions=True)

    async def aclose(self) -> None:
        """Hand back every open lease's unused slots (the process is stopping)."""
        self._book.end_all()
        await self.maintain()

    def _hand_back(self) -> None:
        """Send the unused slots of ended leases back to Redis, in a task: the check
        that ended a lease does not wait for it. A hand-back that fails leaves the
        slots to expire with their window (a little budget lost, never one too many)."""
        ended = self._book.ended()
        if not ended:
            return
        task = asyncio.get_running_loop().create_task(self._return(ended))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    async def _return(self, leases: list[Lease]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for lease in leases:
            members = lease.unused_members()
            for key in lease.keys:
                pipe.zrem(key, *members)
        try:
            await pipe.execute()
        except (RedisError, OSError) as error:
            log.debug("could not hand back leased rate-limit slots (%s); they expire "
                      "with their window", type(error).__name__)

    async def _send(self, keys: list[str], arguments: list[int | str]) -> Any:
        if self._sending:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending.append((keys, arguments, future))
            return await future
        self._sending = True
        try:
            return await self._run_one(keys, arguments)
        finally:
            self._sent()

    def _sent(self) -> None:
        """A round trip ended: send what queued meanwhile, in a task of its own, so
        that a caller cancelled mid-request (a client that hung up) never strands
        the checks waiting behind it."""
        if self._pending:
            asyncio.get_running_loop().create_task(self._send_pending())
        else:
            self._sending = False

    async def _run_one(self, keys: list[str], arguments: list[int | str]) -> Any:
        try:
            return await self._redis.evalsha(self._sha, len(keys), *keys, *arguments)
        except NoScriptError:  # a new or restarted server: load the script once
            await self._redis.script_load(_CHECK_SCRIPT)
            return await self._redis.evalsha(self._sha, len(keys), *keys, *arguments)

    async def _send_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._run(batch)
                except BaseException as error:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if not isinstance(error, Exception):
                        raise
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue  # its caller gave up
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._sending = False

    async def _run(self, batch: list[tuple[list[str], list[int | str], Any]]) -> list[Any]:
        """One pipeline of ``EVALSHA``: each check's reply, or its error. The script
        is loaded once when Redis lacks it (a new or restarted server)."""
        results: list[Any] = []
        for attempt in (1, 2):
            pipe = self._redis.pipeline(transaction=False)
            for keys, arguments, _ in batch:
                pipe.evalsha(self._sha, len(keys), *keys, *arguments)
            results = list(await pipe.execute(raise_on_error=False))
            if attempt == 1 and any(isinstance(result, NoScriptError) for result in results):
                await self._redis.script_load(_CHECK_SCRIPT)
                continue
            break
        return results


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
