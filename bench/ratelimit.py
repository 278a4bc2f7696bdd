"""Benchmark of one process's rate-limit checks: memory, Redis with leases, Redis
without (issuer.ratelimit).

Not a test: CI does not run it. The token endpoint's check (the source address's
failure guard, looked at, and the client's budget, charged) runs ``--checks``
times per mode in one event loop, ``--concurrency`` at a time, interleaved over
``--rounds``; each figure is checks per second of this process, and the Redis
modes are given as ratios to the in-process limiter measured in the same round.

Run: ``.venv/bin/python bench/ratelimit.py [--redis URL] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid

from redis.asyncio import Redis

from issuer.clock import SystemClock
from issuer.ratelimit import MemoryRateLimiter, Rate, RateLimiter, RedisRateLimiter, Rule

GUARD = Rule("auth-fail:198.51.100.7", Rate(20, 60), "failed_auth", count=False)
BUDGET = Rule("token:bench-client", Rate(1_000_000_000, 60), "client")
MODES = ("memory", "redis-leased", "redis-unleased")


async def _measure(limiter: RateLimiter, checks: int, concurrency: int) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            if not (await limiter.check(GUARD, BUDGET)).allowed:
                raise SystemExit("a check was refused: the budget is meant never to bind")

    share = checks // concurrency
    started = time.perf_counter()
    await asyncio.gather(*[worker(share) for _ in range(concurrency)])
    return share * concurrency / (time.perf_counter() - started)


async def _run(args: argparse.Namespace) -> int:
    clock = SystemClock()
    prefix = f"bench-rl-{uuid.uuid4().hex[:12]}:"
    redis = Redis.from_url(args.redis)
    try:
        await redis.ping()
    except OSError as error:
        print(f"ratelimit.py: Redis is not reachable at {args.redis} ({error})", file=sys.stderr)
        return 1
    limiters: dict[str, RateLimiter] = {
        "memory": MemoryRateLimiter(clock),
        "redis-leased": RedisRateLimiter(redis, clock, prefix=prefix + "a:"),
        "redis-unleased": RedisRateLimiter(redis, clock, prefix=prefix + "b:", leases=False),
    }
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for limiter in limiters.values():  # load the script, show the demand
            await _measure(limiter, 2_000, args.concurrency)
        for _ in range(args.rounds):
            for mode in MODES:
                rates[mode].append(await _measure(limiters[mode], args.checks,
                                                  args.concurrency))
        for limiter in limiters.values():
            await limiter.aclose()
    finally:
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    memory = rates["memory"]

    def ratio(mode: str) -> float:
        return statistics.median(run / base for run, base in
                                 zip(rates[mode], memory, strict=True))

    print(f"bench=ratelimit python={sys.version.split()[0]} checks={args.checks} "
          f"concurrency={args.concurrency} rounds={args.rounds} "
          + " ".join(f"{mode}/s={statistics.median(rates[mode]):.0f}" for mode in MODES)
          + f" leased/memory={ratio('redis-leased'):.3f}"
          f" unleased/memory={ratio('redis-unleased'):.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15",
                        help="the Redis to check against (keys under a throwaway prefix, "
                        "deleted at the end)")
    parser.add_argument("--checks", type=int, default=20_000, help="checks per mode and round")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="checks in flight at once (default 16, as wrk -c 16)")
    parser.add_argument("--rounds", type=int, default=5)
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
