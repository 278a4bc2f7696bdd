"""Budget leases of the Redis limiter (issuer.ratelimit.leases): a busy budget is answered
in process, from slots reserved in Redis, and is still never overspent -- by one
process or by two sharing one Redis.

Real Redis (ISSUER_TEST_REDIS_URL, or a redis-server of the test's own where the
test counts the commands it received); time is a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from issuer.ratelimit import Rate, RedisRateLimiter, Rule
from issuer.ratelimit.leases import LEASE_LIFETIME, LEASE_MAX, LEASE_MIN, Lease, LeaseBook
from tests.conftest import REDIS_URL, FakeClock, delete_redis_keys

BUSY = Rate(limit=1000, period=60)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test:lease:{uuid.uuid4().hex}:"
    yield prefix
    await delete_redis_keys(prefix)


class Processes:
    """Redis limiters on one clock, as that many issuer processes would be: their own
    connections, nonces and leases, one shared budget."""

    def __init__(self, prefix: str, *, count: int = 2, url: str = REDIS_URL,
                 leases: bool = True) -> None:
        self.clock = FakeClock(1_000_000)
        self.connections = [Redis.from_url(url) for _ in range(count)]
        self.limiters = [RedisRateLimiter(redis, self.clock, prefix=prefix, leases=leases)
                         for redis in self.connections]
        self.redis, self.limiter = self.connections[0], self.limiters[0]

    @property
    def leases(self) -> int:
        return sum(limiter.leases for limiter in self.limiters)

    async def maintain(self) -> None:
        for limiter in self.limiters:
            await limiter.maintain()

    async def close(self) -> None:
        for limiter in self.limiters:
            await limiter.aclose()  # what the app does at shutdown: hand-backs finish
        for redis in self.connections:
            await redis.aclose()


@contextlib.asynccontextmanager
async def started(prefix: str, **options: Any) -> AsyncIterator[Processes]:
    processes = Processes(prefix, **options)
    try:
        yield processes
    finally:
        await processes.close()


@pytest.fixture
async def processes(prefix: str) -> AsyncIterator[Processes]:
    """Two processes on the test Redis."""
    async with started(prefix) as both:
        yield both


@pytest.fixture
async def one(prefix: str) -> AsyncIterator[Processes]:
    """One process on the test Redis."""
    async with started(prefix, count=1) as single:
        yield single


@pytest.fixture
async def alone(redis_server) -> AsyncIterator[Processes]:
    """One process on a redis-server of the test's own (its command counts are ours)."""
    async with started("rl:", count=1, url=redis_server.url) as single:
        yield single


async def _script_calls(redis: Redis, limiter: RedisRateLimiter) -> int:
    """EVALSHA calls the server took so far, after loading the limiter's script
    (a fresh server answers the first one NOSCRIPT)."""
    await limiter.hit("warm-up", Rate(1, 1))
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_busy_budget_costs_a_round_trip_per_lease_not_per_check(alone):
    redis, limiter = alone.redis, alone.limiter
    before = await _script_calls(redis, limiter)
    decisions = [await limiter.hit("busy", BUSY) for _ in range(300)]
    calls = await _script_calls(redis, limiter) - before - 1
    assert all(d.allowed for d in decisions)
    # Leases grow with the demand (4, 9, 19, 39 slots) up to LEASE_MAX: 300
    # checks cost 12 script runs, not 300.
    assert calls <= 4 + 4 + 300 // (LEASE_MAX + 1) + 1
    assert limiter.leases == 1
    # The headers count down one by one, as without leases.
    assert [d.remaining for d in decisions[:3]] == [999, 998, 997]
    assert decisions[-1].remaining == 1000 - 300


async def test_concurrent_checks_wait_for_the_lease_on_its_way(alone):
    redis, limiter = alone.redis, alone.limiter
    for _ in range(20):  # the demand shows, and leases grow
        await limiter.hit("busy", BUSY)
    before = await _script_calls(redis, limiter)
    decisions = await asyncio.gather(*[limiter.hit("busy", BUSY) for _ in range(200)])
    calls = await _script_calls(redis, limiter) - before - 1
    assert all(d.allowed for d in decisions)
    # Not 200 round trips: the checks that find the lease spent wait for the
    # next one instead of each asking Redis.
    assert calls <= 200 // LEASE_MAX + 3
    assert sorted(d.remaining for d in decisions) == list(range(1000 - 220, 1000 - 20))


async def test_leased_slots_are_in_the_shared_log_before_they_are_spent(prefix, one):
    clock, redis, limiter = one.clock, one.redis, one.limiter
    for _ in range(10):
        await limiter.hit("busy", BUSY)
    assert limiter.leases == 1
    # Ten spent, and the open lease's unused slots reserved: the log holds more
    # than ten, so no other process can spend them too.
    assert await redis.zcard(prefix + "busy") > 10
    clock.advance(LEASE_LIFETIME)
    await limiter.maintain()  # the lease ended: its unused slots go back
    assert limiter.leases == 0
    assert await redis.zcard(prefix + "busy") == 10


async def test_two_processes_with_leases_never_overspend_and_end_exact(prefix, processes):
    # One budget of 1,000 a minute; 1,600 checks alternate between two processes,
    # 1 ms apart, so leases are granted, spent, run out and expire throughout.
    limiters, clock = processes.limiters, processes.clock
    allowed = 0
    leased = 0
    for n in range(1600):
        if (await limiters[n % 2].hit("shared", BUSY)).allowed:
            allowed += 1
        assert allowed <= BUSY.limit  # at no moment one too many
        leased = max(leased, processes.leases)
        clock.advance(0.001)
        if n % 50 == 0:
            await processes.maintain()
    for limiter in limiters:
        await limiter.aclose()
    # Whatever the leases still held went back: the budget ends spent exactly.
    for n in range(100):
        allowed += (await limiters[n % 2].hit("shared", BUSY)).allowed
    assert leased >= 1
    assert allowed == BUSY.limit
    assert await processes.connections[0].zcard(prefix + "shared") == BUSY.limit


async def test_no_window_ever_holds_more_than_the_limit_with_leases(processes):
    # Two processes spend a budget of 1,000 a minute from leases, a check every
    # 10 ms (alternating) -- then, as the first of those hits leave the window,
    # knock every millisecond. At every admitted hit, the admitted hits of the
    # 60 s before it number at most 1,000: a leased slot counts from when it was
    # spent, not from when it was reserved, so the window cannot free it early.
    limiters, clock = processes.limiters, processes.clock
    start = clock.now()
    admitted: deque[float] = deque()
    leased = 0

    async def knock(n: int) -> None:
        now = clock.now()
        if (await limiters[n % 2].hit("sliding", BUSY)).allowed:
            admitted.append(now)
            while admitted[0] <= now - BUSY.period:
                admitted.popleft()
            assert len(admitted) <= BUSY.limit

    for n in range(1100):  # 11 s: the budget is spent in the first 10
        await knock(n)
        leased = max(leased, processes.leases)
        clock.advance(0.010)
        if n % 25 == 0:
            await processes.maintain()
    clock.advance(start + BUSY.period - 0.1 - clock.now())
    for n in range(10_500):  # 59.9 s to 70.4 s, every millisecond
        await knock(n)
        clock.advance(0.001)
        if n % 250 == 0:
            await processes.maintain()
    assert leased >= 1
    assert len(admitted) == BUSY.limit  # and the budget came back in full


async def test_the_last_of_a_budget_is_decided_in_redis_check_by_check(alone):
    # A lease needs 32 left after its check and takes at most 1/8 of them, so the
    # last 28 of a budget are never leased: each is one script run, which is what
    # keeps "N of N+k" exact across processes (tests/test_rate_limits_cluster.py).
    redis, limiter = alone.redis, alone.limiter
    first = [await limiter.hit("budget", Rate(100, 60)) for _ in range(72)]
    before = await _script_calls(redis, limiter)
    last = [await limiter.hit("budget", Rate(100, 60)) for _ in range(28)]
    assert await _script_calls(redis, limiter) - before - 1 == 28
    assert all(d.allowed for d in first + last)
    assert [d.remaining for d in last] == list(range(27, -1, -1))
    assert not (await limiter.hit("budget", Rate(100, 60))).allowed


def _token_rules(address: str) -> tuple[Rule, Rule]:
    """The token endpoint's check: the address's failure guard (look only) and the
    client's budget (issuer.ratelimit.policy)."""
    return (Rule(f"auth-fail:{address}", Rate(3, 60), "failed_auth", count=False),
            Rule("token:client", BUSY, "client"))


async def test_a_failure_charged_here_ends_the_leases_that_looked_at_its_address(one):
    limiter = one.limiter
    for _ in range(10):
        assert (await limiter.check(*_token_rules("198.51.100.7"))).allowed
    assert limiter.leases == 1
    for _ in range(3):  # three failed authentications from that address
        await limiter.hit("auth-fail:198.51.100.7", Rate(3, 60))
    assert limiter.leases == 0
    refused = await limiter.check(*_token_rules("198.51.100.7"))
    assert not refused.allowed
    assert refused.policy == "failed_auth"


async def test_a_failure_charged_elsewhere_is_seen_when_the_lease_ends(processes):
    # The documented bound (issuer.ratelimit.leases): another process's failures reach a
    # lease's look at the guard within one lease lifetime.
    here, elsewhere = processes.limiters
    for _ in range(10):
        assert (await here.check(*_token_rules("198.51.100.8"))).allowed
    for _ in range(3):
        await elsewhere.hit("auth-fail:198.51.100.8", Rate(3, 60))
    processes.clock.advance(LEASE_LIFETIME)
    refused = await here.check(*_token_rules("198.51.100.8"))
    assert not refused.allowed
    assert refused.policy == "failed_auth"


async def test_a_limiter_without_leases_asks_redis_every_time(redis_server):
    async with started("rl:", count=1, url=redis_server.url, leases=False) as one:
        redis, limiter = one.redis, one.limiter
        before = await _script_calls(redis, limiter)
        for _ in range(50):
            await limiter.hit("busy", BUSY)
        assert await _script_calls(redis, limiter) - before - 1 == 50
        assert limiter.leases == 0


async def test_a_lease_granted_on_a_look_that_a_charge_here_made_stale_never_opens():
    # The lease was asked for, then this process charged a failure to the address
    # it looked at, then the lease came back: its slots go straight back unused.
    book = LeaseBook()
    rules = _token_rules("198.51.100.9")
    for _ in range(10):
        assert book.spend(rules, 1_000_000.0) is None
    assert book.want(rules) >= LEASE_MIN
    failure = Rule("auth-fail:198.51.100.9", Rate(3, 60), "failed_auth")
    assert book.spend((failure,), 1_000_000.0) is None
    lease = Lease(member="1000000000:n.1", keys=("rl:token:client",), granted=8,
                  until=1_000_000.25, remaining=990, reset_at=1_000_060.0, rule=rules[1])
    book.granted(rules, lease, 1_000_000.0)
    assert len(book) == 0
    assert book.spend(rules, 1_000_000.0) is None
    assert book.ended() == [lease]
