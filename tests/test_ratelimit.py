"""The rate limiter (issuer.ratelimit): rates, the sliding window, the decision headers.

Time is a fake clock: nothing here sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

from issuer.ratelimit import Decision, MemoryRateLimiter, Rate, RateLimiter
from tests.conftest import FakeClock

TEN_AN_HOUR = Rate(limit=10, period=3600)


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


def test_the_memory_limiter_is_a_rate_limiter():
    limiter: RateLimiter = MemoryRateLimiter(FakeClock(0))
    assert hasattr(limiter, "hit")


async def test_allows_the_limit_then_refuses_until_the_window_moves():
    clock = FakeClock(1_000_000)
    limiter = MemoryRateLimiter(clock)
    decisions = [await limiter.hit("k", TEN_AN_HOUR) for _ in range(10)]
    assert [d.allowed for d in decisions] == [True] * 10
    assert [d.remaining for d in decisions] == list(range(9, -1, -1))
    assert all(d.retry_after == 0 and d.reset_after == 3600 for d in decisions)

    refused = await limiter.hit("k", TEN_AN_HOUR)
    assert refused == Decision(allowed=False, limit=10, remaining=0, reset_after=3600,
                               retry_after=3600)
    clock.advance(3599)
    assert (await limiter.hit("k", TEN_AN_HOUR)).retry_after == 1
    clock.advance(1)
    again = await limiter.hit("k", TEN_AN_HOUR)
    assert (again.allowed, again.remaining) == (True, 9)


async def test_the_window_slides_hit_by_hit():
    # 10/hour means at most 10 in any 60 minutes: spread hits free up one by one.
    clock = FakeClock(0)
    limiter = MemoryRateLimiter(clock)
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


async def test_no_more_than_the_limit_in_any_window():
    # A GCRA with burst = limit would let 19 through in the first hour; this does not.
    clock = FakeClock(0)
    limiter = MemoryRateLimiter(clock)
    allowed_at = []
    for _ in range(0, 2 * 3600, 60):
        if (await limiter.hit("k", TEN_AN_HOUR)).allowed:
            allowed_at.append(clock.now())
        clock.advance(60)
    for start in allowed_at:
        assert sum(start <= t < start + 3600 for t in allowed_at) <= 10
    assert len(allowed_at) == 20


async def test_refused_hits_are_not_counted():
    clock = FakeClock(0)
    limiter = MemoryRateLimiter(clock)
    rate = Rate(2, 60)
    await limiter.hit("k", rate)
    await limiter.hit("k", rate)
    for _ in range(50):
        clock.advance(0.5)
        assert not (await limiter.hit("k", rate)).allowed
    clock.advance(35)  # 60 s after the first two
    assert (await limiter.hit("k", rate)).allowed


async def test_keys_are_independent():
    limiter = MemoryRateLimiter(FakeClock(0))
    rate = Rate(1, 60)
    assert (await limiter.hit("client-a", rate)).allowed
    assert not (await limiter.hit("client-a", rate)).allowed
    assert (await limiter.hit("client-b", rate)).allowed


async def test_a_changed_rate_applies_at_once_to_the_hits_counted():
    limiter = MemoryRateLimiter(FakeClock(0))
    for _ in range(5):
        assert (await limiter.hit("k", Rate(10, 60))).allowed
    assert not (await limiter.hit("k", Rate(3, 60))).allowed
    assert (await limiter.hit("k", Rate(20, 60))).remaining == 16


async def test_concurrent_hits_never_overshoot():
    limiter = MemoryRateLimiter(FakeClock(0))
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
