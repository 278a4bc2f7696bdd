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
alike, so a deployment that adds Redis keeps its limits' meaning. Its price
(``bench/ratelimit_memory.py``, Redis 7.0): 10,000 clients at 1,200/minute take
1,575 MiB of Redis (165 kB each) against 1.5 MiB for a GCRA (153 B); both pass
exactly 1,200 of 3,600 concurrent checks, but the GCRA then passes 2,399 in that
minute and answers other Retry-After / RateLimit-* values, so the log stays.

One job per module, none importing this package (only each other, acyclically):

- :mod:`~issuer.ratelimit.rates`: :class:`Rate`, :class:`Rule`, :class:`Decision`.
- :mod:`~issuer.ratelimit.protocol`: the :class:`RateLimiter` protocol, and
  :class:`Unlimited` (``ISSUER_RATE_LIMITING=off``).
- :mod:`~issuer.ratelimit.memory`: :class:`MemoryRateLimiter`, this process's
  memory (single process).
- :mod:`~issuer.ratelimit.redis_backend`: :class:`RedisRateLimiter`, one Lua
  script run per check (``check.lua``) -- one round trip, atomic on the server --
  over a sorted set per key, so every issuer process shares one budget. Concurrent
  checks share round trips (pipelined).
- :mod:`~issuer.ratelimit.leases`: a budget this process checks again and again
  is leased: slots reserved in the shared log are spent here without a round trip.
- :mod:`~issuer.ratelimit.fallback`: :class:`FallbackRateLimiter`, Redis while it
  answers; while it does not, this process's memory (``ISSUER_RATE_LIMIT_FAIL=open``)
  or ``503 temporarily_unavailable`` (``closed``).
- :mod:`~issuer.ratelimit.policy`: the four policies as rule builders, and
  :func:`enforce` (the 429).

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

from issuer.ratelimit.fallback import FallbackRateLimiter
from issuer.ratelimit.memory import MemoryRateLimiter
from issuer.ratelimit.policy import (
    ADMIN,
    CLIENT,
    FAILED_AUTH,
    M2M_MINT,
    MINT_RATE,
    RatePolicies,
    enforce,
)
from issuer.ratelimit.protocol import MAINTAIN_EVERY, RateLimiter, Unlimited
from issuer.ratelimit.rates import Decision, Rate, Rule
from issuer.ratelimit.redis_backend import RedisRateLimiter

__all__ = [
    "ADMIN",
    "CLIENT",
    "FAILED_AUTH",
    "M2M_MINT",
    "MAINTAIN_EVERY",
    "MINT_RATE",
    "Decision",
    "FallbackRateLimiter",
    "MemoryRateLimiter",
    "Rate",
    "RateLimiter",
    "RatePolicies",
    "RedisRateLimiter",
    "Rule",
    "Unlimited",
    "enforce",
]
