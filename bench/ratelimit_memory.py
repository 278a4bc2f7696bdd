"""Benchmark of the Redis memory that busy clients' rate-limit state takes: the
issuer's sliding-window log (issuer.ratelimit) against a GCRA (one theoretical
arrival time per key), and how exact each is.

Not a test: CI does not run it. It starts a redis-server of its own on a free
loopback port (``--redis URL`` uses another; that server must hold nothing else,
since ``INFO memory`` is server-wide and it is flushed), then for each scheme:

- memory: one client is driven at exactly its limit for two windows (fake clock,
  one check every period/limit seconds, through the scheme's own check: the real
  ``RedisRateLimiter``, leases on, for the log; this file's GCRA script for the
  GCRA). Its keys, as they are at that steady state, are copied (``DUMP`` /
  ``RESTORE``, TTLs kept) under ``--clients`` realistic client ids into the
  flushed server; the ``used_memory`` delta over the clients is bytes per client,
  and ``MEMORY USAGE`` of a few copies cross-checks it;
- exactness: ``--processes`` limiters (connections of their own, one key) are
  sent three budgets' worth of checks at once: exactly ``limit`` must pass; then
  one check per process every period/limit seconds for the rest of the window:
  how many passed in that first window;
- boundaries: the scenarios the rate-limit tests pin, at 10/hour, on both.

Run: ``.venv/bin/python bench/ratelimit_memory.py [--clients 10000] [--rate 1200/minute]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import NoScriptError

from issuer.ratelimit import Decision, Rate, RedisRateLimiter, Rule

PREFIX = "issuer:rl:"  # the issuer's default (ISSUER_REDIS_KEY_PREFIX "issuer:" + "rl:")
TEN_AN_HOUR = Rate(10, 3600)
TIMEOUT = 300.0  # seconds: emptying 1.5 GB of sorted sets takes a while
KEEP_MS = 600_000  # how long the copies live at the least (they are read within it)

# A GCRA with a burst of ``limit``: one value per key, the theoretical arrival time
# (TAT, integer microseconds, so Redis stores it as an integer). A check passes when
# the new TAT is at most one period ahead of now. ARGV: now (us), limit, period (us).
# Returns {allowed, remaining, until one more hit is available (us), retry after (us)}.
GCRA_SCRIPT = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local interval = math.floor(period / limit)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > period then
  return {0, 0, new_tat - now - period, new_tat - now - period}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
           math.max(1, math.ceil((new_tat - now) / 1000)))
local remaining = math.floor((now + period - new_tat) / interval)
return {1, remaining, new_tat - now - period + (remaining + 1) * interval, 0}
"""
GCRA_SHA = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()  # noqa: S324 -- Redis's script id


class FakeClock:
    """Time that moves only when told to, in whole microseconds (no drift from
    adding 0.05 s a thousand times)."""

    def __init__(self, start: float) -> None:
        self._us = round(start * 1_000_000)

    def now(self) -> float:
        return self._us / 1_000_000

    def advance(self, seconds: float) -> None:
        self._us += round(seconds * 1_000_000)


class GcraLimiter:
    """The GCRA above behind the limiter's ``hit`` / ``maintain`` / ``aclose``."""

    def __init__(self, redis: Redis, clock: FakeClock, *, prefix: str = PREFIX) -> None:
        self._redis = redis
        self._clock = clock
        self._prefix = prefix

    async def hit(self, key: str, limit: Rate) -> Decision:
        now_us = round(self._clock.now() * 1_000_000)
        arguments = (now_us, limit.limit, limit.period * 1_000_000)
        try:
            reply = await self._redis.evalsha(GCRA_SHA, 1, self._prefix + key, *arguments)
        except NoScriptError:  # a fresh server: load the script once
            await self._redis.script_load(GCRA_SCRIPT)
            reply = await self._redis.evalsha(GCRA_SHA, 1, self._prefix + key, *arguments)
        allowed, remaining, reset_us, retry_us = (int(value) for value in reply)
        return Decision(allowed=bool(allowed), limit=limit.limit, remaining=remaining,
                        reset_after=reset_us / 1e6, retry_after=retry_us / 1e6)

    async def maintain(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class LogLimiter:
    """The issuer's Redis limiter, as the token endpoint charges a client's budget."""

    def __init__(self, redis: Redis, clock: FakeClock, *, prefix: str = PREFIX) -> None:
        self._limiter = RedisRateLimiter(redis, clock, prefix=prefix)

    async def hit(self, key: str, limit: Rate) -> Decision:
        return await self._limiter.check(Rule(key, limit, "client"))

    async def maintain(self) -> None:
        await self._limiter.maintain()

    async def aclose(self) -> None:
        await self._limiter.aclose()


Limiter = LogLimiter | GcraLimiter
SCHEMES: dict[str, Callable[[Redis, FakeClock], Limiter]] = {
    "log": LogLimiter, "gcra": GcraLimiter}


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of this run's own on a free loopback port, no persistence."""
    if shutil.which("redis-server") is None:
        raise SystemExit("ratelimit_memory.py: redis-server is not installed (or pass --redis)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise SystemExit("ratelimit_memory.py: redis-server did not start")
        output = process.stdout
        threading.Thread(target=lambda: [None for _ in output], daemon=True).start()
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


def client_key() -> str:
    """A client's budget key as the issuer names it (issuer.secrets.new_client_id)."""
    return "token:m2m_" + secrets.token_urlsafe(16)


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def flush(redis: Redis) -> None:
    """Empty the server, and wait until its memory is freed (a bench may sleep)."""
    await redis.flushall(asynchronous=True)
    while int((await redis.info("memory"))["lazyfree_pending_objects"]):  # noqa: ASYNC110 -- polled
        await asyncio.sleep(0.05)


async def steady_state(url: str, scheme: str, rate: Rate) -> tuple[dict[str, tuple[int, bytes]],
                                                                   int, int]:
    """Drive one client at exactly ``rate`` for two windows; its keys' TTLs and dumps
    at the end, how many of its checks were refused, and its log's size."""
    redis = Redis.from_url(url, socket_timeout=TIMEOUT)
    clock = FakeClock(1_800_000_000.0)
    limiter = SCHEMES[scheme](redis, clock)
    key = client_key()
    step = rate.period / rate.limit
    refused = 0
    try:
        for number in range(2 * rate.limit):
            refused += not (await limiter.hit(key, rate)).allowed
            clock.advance(step)
            if number % 5 == 4:  # the app's MAINTAIN_EVERY (250 ms) at 20 checks/s
                await limiter.maintain()
        await limiter.maintain()
        dumps = {}
        async for name in redis.scan_iter(match=PREFIX + "*"):
            ttl, dump = await redis.pttl(name), await redis.dump(name)
            if dump is not None:  # None: it expired in between
                dumps[name.decode().removeprefix(PREFIX + key)] = (max(ttl, 0), dump)
        if not dumps:
            raise SystemExit(f"ratelimit_memory.py: {scheme} left no key to copy")
        main = PREFIX + key
        size = int(await redis.zcard(main)) if await redis.type(main) == b"zset" else 1
        await limiter.aclose()
        await flush(redis)
    finally:
        await redis.aclose()
    return dumps, refused, size


async def fill(url: str, dumps: dict[str, tuple[int, bytes]], clients: int
               ) -> tuple[float, float]:
    """Copy one client's keys under ``clients`` client ids into the flushed server:
    (used_memory delta per client, mean MEMORY USAGE of ten copies' keys)."""
    probe = Redis.from_url(url, socket_timeout=TIMEOUT)
    await flush(probe)
    before = await used_memory(probe)
    filler = Redis.from_url(url, socket_timeout=TIMEOUT)
    names = [client_key() for _ in range(clients)]
    for start in range(0, clients, 100):
        pipe = filler.pipeline(transaction=False)
        for name in names[start:start + 100]:
            for suffix, (ttl, dump) in dumps.items():
                # Every copy keeps an expiry (its cost counts), long enough to outlive
                # the reading: a GCRA key at an even pace lives only one interval.
                pipe.restore(PREFIX + name + suffix, ttl and max(ttl, KEEP_MS), dump)
        await pipe.execute()
    await filler.aclose()  # its buffers go with it, before the reading
    after = await used_memory(probe)
    usage = [sum([await probe.memory_usage(PREFIX + name + suffix, samples=0) or 0
                  for suffix in dumps]) for name in names[:10]]
    await flush(probe)
    await probe.aclose()
    return (after - before) / clients, sum(usage) / len(usage)


async def exactness(url: str, scheme: str, rate: Rate, processes: int) -> tuple[int, int, int]:
    """(checks sent at once, passed of them, passed in the first window in all)."""
    clock = FakeClock(1_800_000_000.0)
    pools = [BlockingConnectionPool.from_url(url, max_connections=4,
                                                  socket_timeout=TIMEOUT) for _ in range(processes)]
    connections = [Redis(connection_pool=pool) for pool in pools]
    limiters = [SCHEMES[scheme](redis, clock) for redis in connections]
    key = client_key()
    sent = 3 * rate.limit
    try:
        burst = await asyncio.gather(*[limiters[n % processes].hit(key, rate)
                                       for n in range(sent)])
        passed = sum(decision.allowed for decision in burst)
        in_window = passed
        step = rate.period / rate.limit
        for _ in range(rate.limit - 1):  # the rest of the window, one check per process a step
            clock.advance(step)
            decisions = await asyncio.gather(*[limiter.hit(key, rate) for limiter in limiters])
            in_window += sum(decision.allowed for decision in decisions)
            for limiter in limiters:
                await limiter.maintain()
        for limiter in limiters:
            await limiter.aclose()
        await flush(connections[0])
    finally:
        for redis in connections:
            await redis.aclose()
    return sent, passed, in_window


async def boundaries(url: str, scheme: str) -> dict[str, Any]:
    """The rate-limit tests' scenarios at 10/hour, one process."""
    redis = Redis.from_url(url, socket_timeout=TIMEOUT)
    clock = FakeClock(1_000_000.0)
    limiter = SCHEMES[scheme](redis, clock)
    figures: dict[str, Any] = {}

    async def burst(key: str) -> None:
        # tests/test_ratelimit.py: ten at once pass, the eleventh is refused until
        # the first leaves the window (Retry-After and RateLimit-Reset 3600).
        decisions = [await limiter.hit(key, TEN_AN_HOUR) for _ in range(11)]
        figures["burst_passed"] = sum(d.allowed for d in decisions)
        first, refused = decisions[0].headers(), decisions[-1].headers()
        figures["first_reset"] = first["RateLimit-Reset"]
        figures["refused_retry_after"] = refused.get("Retry-After", "-")
        figures["refused_reset"] = refused["RateLimit-Reset"]

    async def any_hour(key: str) -> None:
        # One hit a minute for two hours: at most 10 in any 60 minutes.
        passed = []
        for _ in range(0, 2 * 3600, 60):
            if (await limiter.hit(key, TEN_AN_HOUR)).allowed:
                passed.append(clock.now())
            clock.advance(60)
        figures["two_hours_passed"] = len(passed)
        figures["most_in_any_hour"] = max(sum(start <= t < start + 3600 for t in passed)
                                          for start in passed)

    async def slide(key: str) -> None:
        # Hits at 0, 600, ..., 5400 s, then one at 6000 s: 4 remain, reset in 600 s.
        for _ in range(10):
            await limiter.hit(key, TEN_AN_HOUR)
            clock.advance(600)
        decision = await limiter.hit(key, TEN_AN_HOUR)
        figures["slide_remaining"] = decision.remaining
        figures["slide_reset"] = decision.headers()["RateLimit-Reset"]

    try:
        for body in (burst, any_hour, slide):
            await body(client_key())
        await limiter.aclose()
        await flush(redis)
    finally:
        await redis.aclose()
    return figures


async def _run(args: argparse.Namespace, url: str) -> int:
    rate = Rate.parse(args.rate)
    redis = Redis.from_url(url, socket_timeout=TIMEOUT)
    version = (await redis.info("server"))["redis_version"]
    if await redis.dbsize():
        print("ratelimit_memory.py: that Redis holds keys; give an empty one", file=sys.stderr)
        return 1
    await redis.aclose()
    print(f"bench=ratelimit_memory python={sys.version.split()[0]} redis={version} "
          f"clients={args.clients} rate={rate} processes={args.processes}")
    per_client: dict[str, float] = {}
    for scheme in SCHEMES:
        dumps, refused, size = await steady_state(url, scheme, rate)
        per_client[scheme], usage = await fill(url, dumps, args.clients)
        print(f"memory scheme={scheme} keys/client={len(dumps)} entries/client={size} "
              f"refused_at_limit={refused}/{2 * rate.limit} bytes/client={per_client[scheme]:.0f} "
              f"memory_usage/client={usage:.0f} "
              f"total_mib={per_client[scheme] * args.clients / 2**20:.1f}")
    # Not a scheme of the issuer: the same log packed into one string of 8-byte
    # timestamps, for the memory an exact sliding window needs at the least.
    packed = {"": (KEEP_MS, secrets.token_bytes(8 * rate.limit))}
    probe = Redis.from_url(url, socket_timeout=TIMEOUT)
    await probe.set("packed", packed[""][1])
    packed[""] = (KEEP_MS, await probe.dump("packed") or b"")
    await flush(probe)
    await probe.aclose()
    per_client["packed"], usage = await fill(url, packed, args.clients)
    print(f"memory scheme=packed-log(memory-only) keys/client=1 entries/client={rate.limit} "
          f"bytes/client={per_client['packed']:.0f} memory_usage/client={usage:.0f} "
          f"total_mib={per_client['packed'] * args.clients / 2**20:.1f}")
    print(f"memory log/gcra={per_client['log'] / per_client['gcra']:.0f} "
          f"log/packed={per_client['log'] / per_client['packed']:.1f}")
    for scheme in SCHEMES:
        sent, passed, in_window = await exactness(url, scheme, rate, args.processes)
        print(f"exact scheme={scheme} sent_at_once={sent} passed={passed} "
              f"passed_in_first_window={in_window}")
    for scheme in SCHEMES:
        figures = await boundaries(url, scheme)
        print(f"boundary scheme={scheme} rate={TEN_AN_HOUR} "
              + " ".join(f"{name}={value}" for name, value in figures.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rate", default="1200/minute",
                        help="each client's limit (default ISSUER_RATE_LIMIT's, 1200/minute)")
    parser.add_argument("--processes", type=int, default=4,
                        help="issuer processes sharing the budget in the exactness run")
    parser.add_argument("--redis", help="an empty Redis to use (flushed!) instead of one "
                        "started for the run")
    args = parser.parse_args(argv)
    if args.redis:
        return asyncio.run(_run(args, args.redis))
    with redis_server() as url:
        return asyncio.run(_run(args, url))


if __name__ == "__main__":
    raise SystemExit(main())
