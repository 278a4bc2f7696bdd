"""The rate limiter (issuer.ratelimit): rates, the sliding window, multi-rule checks,
the decision headers, and the Redis fallback -- each window test on the in-process
backend and on the real Redis (ISSUER_TEST_REDIS_URL).

Time is a fake clock on both backends: nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from issuer.errors import TemporarilyUnavailable
from issuer.ratelimit import (
    Decision,
    FallbackRateLimiter,
    MemoryRateLimiter,
    Rate,
    RateLimiter,
    RedisRateLimiter,
    Rule,
)
from tests.conftest import REDIS_URL, FakeClock, delete_redis_keys

TEN_AN_HOUR = Rate(limit=10, period=3600)


class Backend:
    def __init__(self, limiter: RateLimiter, clock: FakeClock) -> None:
        self.limiter = limiter
        self.clock = clock


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A limiter and its clock (starting at 1,000,000 s) on each backend."""
    clock = FakeClock(1_000_000)
    if request.param == "memory":
        yield Backend(MemoryRateLimiter(clock), clock)
        return
    redis = Redis.from_url(REDIS_URL)
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    try:
        yield Backend(RedisRateLimiter(redis, clock, prefix=prefix), clock)
    finally:
        await delete_redis_keys(prefix)
        await redis.aclose()


@pytest.mark.parametrize(("text", "rate"), [
    ("10/hour", Rate(10, 3600)),
    ("1200/minute", Rate(1200, 60)),
    ("5/second", Rate(5, 1)),
    ("100/day", Rate(100, 86400)),
    (" 10 / Hour ", Rate(10, 3600)),
    ("10/hours", Rate(10, 3600)),
    ("5 per minute", Rate(5, 60)),
    ("100/2 hours", Rate(100, 7200)),
    ("3/15minutes", Rate(3, 900)),
])
def test_rate_parses_the_usual_notations(text, rate):
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["", "10", "hour", "10/fortnight", "-1/hour", "0/hour",
                                  "1.5/hour", "10/0 hours", "10/hour/day", "ten/hour"])
def test_rate_refuses_anything_else(text):
    with pytest.raises(ValueError, match="rate"):
        Rate.parse(text)


@pytest.mark.parametrize(("rate", "text"), [
    (Rate(10, 3600), "10/hour"), (Rate(1200, 60), "1200/minute"), (Rate(5, 1), "5/second"),
    (Rate(1, 86400), "1/day"), (Rate(100, 7200), "100/2 hours"), (Rate(3, 90), "3/90 seconds"),
])
def test_rate_prints_back_in_the_same_notation(rate, text):
    assert str(rate) == text
    assert Rate.parse(str(rate)) == rate


async def test_allows_the_limit_then_refuses_until_the_window_moves(backend):
    clock, limiter = backend.clock, backend.limiter
    decisions = [await limiter.hit("k", TEN_AN_HOUR) for _ in range(10)]
    assert [d.allowed for d in decisions] == [True] * 10
    assert [d.remaining for d in decisions] == list(range(9, -1, -1))
    assert all(d.retry_after == 0 and d.reset_after == 3600 for d in decisions)

    refused = await limiter.hit("k", TEN_AN_HOUR)
    assert refused == Decision(allowed=False, limit=10, remaining=0, reset_after=3600,
                               retry_after=3600, first_refusal=True)
    clock.advance(3599)
    assert (await limiter.hit("k", TEN_AN_HOUR)).retry_after == 1
    clock.advance(1)
    again = await limiter.hit("k", TEN_AN_HOUR)
    assert (again.allowed, again.remaining) == (True, 9)


async def test_the_window_slides_hit_by_hit(backend):
    # 10/hour means at most 10 in any 60 minutes: spread hits free up one by one.
    clock, limiter = backend.clock, backend.limiter
    for _ in range(10):
        assert (await limiter.hit("k", TEN_AN_HOUR)).allowed
        clock.advance(600)  # hits at 0, 600, ..., 5400
    # now = 6000: the hits at 0..2400 are outside (2400, 6000]; five remain in it.
    decision = await limiter.hit("k", TEN_AN_HOUR)
    assert (decision.allowed, decision.remaining) == (True, 4)
    assert decision.reset_after == 3000 + 3600 - 6000  # the hit at 3000 leaves next
    for _ in range(4):
        assert (await limiter.hit("k", TEN_AN_HOUR)).allowed
    refused = await limiter.hit("k", TEN_AN_HOUR)
    assert not refused.allowed
    assert refused.retry_after == 600


async def test_no_more_than_the_limit_in_any_window(backend):
    # A GCRA with burst = limit would let 19 through in the first hour; this does not.
    clock, limiter = backend.clock, backend.limiter
    allowed_at = []
    for _ in range(0, 2 * 3600, 60):
        if (await limiter.hit("k", TEN_AN_HOUR)).allowed:
            allowed_at.append(clock.now())
        clock.advance(60)
    for start in allowed_at:
        assert sum(start <= t < start + 3600 for t in allowed_at) <= 10
    assert len(allowed_at) == 20


async def test_refused_hits_are_not_counted(backend):
    clock, limiter = backend.clock, backend.limiter
    rate = Rate(2, 60)
    await limiter.hit("k", rate)
    await limiter.hit("k", rate)
    for _ in range(50):
        clock.advance(0.5)
        assert not (await limiter.hit("k", rate)).allowed
    clock.advance(35)  # 60 s after the first two
    assert (await limiter.hit("k", rate)).allowed


async def test_keys_are_independent(backend):
    limiter = backend.limiter
    rate = Rate(1, 60)
    assert (await limiter.hit("client-a", rate)).allowed
    assert not (await limiter.hit("client-a", rate)).allowed
    assert (await limiter.hit("client-b", rate)).allowed


async def test_a_changed_rate_applies_at_once_to_the_hits_counted(backend):
    limiter = backend.limiter
    for _ in range(5):
        assert (await limiter.hit("k", Rate(10, 60))).allowed
    assert not (await limiter.hit("k", Rate(3, 60))).allowed
    assert (await limiter.hit("k", Rate(20, 60))).remaining == 14  # 5 + this one of 20


async def test_concurrent_hits_never_overshoot(backend):
    limiter = backend.limiter
    decisions = await asyncio.gather(*[limiter.hit("k", TEN_AN_HOUR) for _ in range(50)])
    assert sum(d.allowed for d in decisions) == 10


async def test_idle_keys_are_forgotten():
    clock = FakeClock(0)
    limiter = MemoryRateLimiter(clock, sweep_every=10)
    for number in range(9):
        await limiter.hit(f"k{number}", Rate(1, 60))
    assert len(limiter) == 9
    clock.advance(60)
    await limiter.hit("fresh", Rate(1, 60))  # the tenth hit sweeps
    assert len(limiter) == 1


def test_headers_of_an_allowed_hit():
    decision = Decision(allowed=True, limit=10, remaining=7, reset_after=12.2, retry_after=0)
    assert decision.headers() == {"RateLimit-Limit": "10", "RateLimit-Remaining": "7",
                                  "RateLimit-Reset": "13"}


def test_headers_of_a_refused_hit_round_up_to_whole_seconds():
    decision = Decision(allowed=False, limit=10, remaining=0, reset_after=0.2,
                        retry_after=0.2)
    assert decision.headers() == {"RateLimit-Limit": "10", "RateLimit-Remaining": "0",
                                  "RateLimit-Reset": "1", "Retry-After": "1"}


# Several rules in one check ------------------------------------------------------------


async def test_a_check_charges_every_counting_rule_only_when_all_allow(backend):
    limiter = backend.limiter
    guard = Rule("address", Rate(2, 60), "failed_auth", count=False)
    budget = Rule("client", Rate(3, 60), "client")
    for remaining in (2, 1, 0):
        decision = await limiter.check(guard, budget)
        assert (decision.allowed, decision.policy, decision.remaining) == (True, "client",
                                                                           remaining)
    refused = await limiter.check(guard, budget)
    assert (refused.allowed, refused.policy, refused.limit) == (False, "client", 3)
    # The look-only rule was never charged: two failures still fit the guard.
    assert (await limiter.check(Rule("address", Rate(2, 60), "failed_auth"))).remaining == 1


async def test_a_spent_look_only_rule_refuses_and_charges_nothing(backend):
    limiter = backend.limiter
    failures = Rule("address", Rate(1, 60), "failed_auth")
    assert (await limiter.check(failures)).allowed
    guard = Rule("address", Rate(1, 60), "failed_auth", count=False)
    client = Rule("client", Rate(5, 60), "client")
    refused = await limiter.check(guard, client)
    assert (refused.allowed, refused.policy, refused.retry_after) == (False, "failed_auth", 60)
    backend.clock.advance(60)
    assert (await limiter.check(guard, client)).remaining == 4  # the refusal cost nothing


async def test_only_the_first_refusal_of_a_window_is_flagged(backend):
    limiter, clock = backend.limiter, backend.clock
    rate = Rate(1, 60)
    await limiter.hit("k", rate)
    flags = []
    for _ in range(3):
        flags.append((await limiter.hit("k", rate)).first_refusal)
        clock.advance(10)
    assert flags == [True, False, False]
    clock.advance(30)  # the window moved: one more allowed, then a new first refusal
    assert (await limiter.hit("k", rate)).allowed
    assert (await limiter.hit("k", rate)).first_refusal


async def test_redis_keys_expire_with_their_window_and_one_lease_lifetime():
    # A leased slot is scored at its lease's end (issuer.ratelimit.leases): the key must
    # outlive the window by that much.
    clock = FakeClock(1_000_000)
    redis = Redis.from_url(REDIS_URL)
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    try:
        await RedisRateLimiter(redis, clock, prefix=prefix).hit("k", Rate(5, 90))
        ttl = await redis.pttl(prefix + "k")
        assert 89_250 < ttl <= 90_250
    finally:
        await redis.delete(prefix + "k")
        await redis.aclose()


async def test_redis_limiters_of_two_processes_share_one_budget():
    clock = FakeClock(1_000_000)
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    first, second = Redis.from_url(REDIS_URL), Redis.from_url(REDIS_URL)
    try:
        limiters = [RedisRateLimiter(first, clock, prefix=prefix),
                    RedisRateLimiter(second, clock, prefix=prefix)]
        decisions = await asyncio.gather(*[limiters[n % 2].hit("shared", TEN_AN_HOUR)
                                           for n in range(25)])
        assert sum(d.allowed for d in decisions) == 10
    finally:
        await first.delete(prefix + "shared", prefix + "shared:refused")
        await first.aclose()
        await second.aclose()


# Redis down ------------------------------------------------------------------------------


def _unreachable_redis() -> Redis:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    return Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)


async def test_fail_open_decides_in_memory_counts_it_and_logs_once_a_minute(caplog):
    clock = FakeClock(1_000_000)
    fallbacks = []
    redis = _unreachable_redis()
    limiter = FallbackRateLimiter(RedisRateLimiter(redis, clock), MemoryRateLimiter(clock),
                                  clock, fail_closed=False,
                                  on_fallback=lambda: fallbacks.append(1))
    caplog.set_level(logging.WARNING, logger="issuer.ratelimit")
    assert not limiter.degraded
    decisions = []
    for _ in range(4):
        decisions.append(await limiter.hit("k", Rate(3, 3600)))
        clock.advance(15)  # checks at 0, 15, 30, 45 s
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert len(fallbacks) == 4
    assert limiter.degraded
    warnings = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert len(warnings) == 1  # 60 s of outage, one line
    await limiter.hit("k", Rate(3, 3600))  # at 60 s after the first line: the next one
    assert len([r for r in caplog.records if "Redis is unreachable" in r.getMessage()]) == 2
    await redis.aclose()


async def test_fail_closed_refuses_with_temporarily_unavailable():
    clock = FakeClock(1_000_000)
    redis = _unreachable_redis()
    limiter = FallbackRateLimiter(RedisRateLimiter(redis, clock), MemoryRateLimiter(clock),
                                  clock, fail_closed=True)
    with pytest.raises(TemporarilyUnavailable):
        await limiter.hit("k", Rate(3, 3600))
    assert limiter.degraded
    await redis.aclose()


async def test_redis_is_left_alone_for_a_second_after_a_failure_then_used_again(
        redis_server):
    clock = FakeClock(1_000_000)
    redis = Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    limiter = FallbackRateLimiter(RedisRateLimiter(redis, clock), MemoryRateLimiter(clock),
                                  clock, fail_closed=False)
    try:
        assert (await limiter.hit("k", Rate(5, 60))).remaining == 4  # Redis
        redis_server.stop()
        assert (await limiter.hit("k", Rate(5, 60))).remaining == 4  # memory's first hit
        assert limiter.degraded
        redis_server.start()
        # Within the second after the failure Redis is not asked: memory again.
        assert (await limiter.hit("k", Rate(5, 60))).remaining == 3
        clock.advance(1)
        # Back on Redis (a fresh server: its log is empty), and no longer degraded.
        assert (await limiter.hit("k", Rate(5, 60))).remaining == 4
        assert not limiter.degraded
    finally:
        await redis.aclose()


async def test_a_cancelled_check_does_not_strand_the_checks_batched_behind_it(backend):
    # Checks made while one is in flight to Redis go together afterwards; the one in
    # flight belongs to a request whose client may hang up (its task is cancelled).
    limiter = backend.limiter
    first = asyncio.ensure_future(limiter.hit("k", TEN_AN_HOUR))
    await asyncio.sleep(0)  # let it start its round trip (a yield, not a wait)
    others = [asyncio.ensure_future(limiter.hit("k", TEN_AN_HOUR)) for _ in range(5)]
    first.cancel()
    decisions = await asyncio.wait_for(asyncio.gather(*others), timeout=10)
    assert all(d.allowed for d in decisions)
    assert (await limiter.hit("k", TEN_AN_HOUR)).remaining in (3, 4)  # the first may have counted
