"""``NetSuiteClient``: calls to NetSuite REST web services and RESTlets.

Concurrency governance is per account and shared by REST and RESTlets; over the limit
REST answers 429 and RESTlets 400 ``SSS_REQUEST_LIMIT_EXCEEDED``. Oracle's advice
(bridgehead_1509974866): back off with growing delays, don't synchronise retries,
serialise requests. So each request passes the connector's throttle (default 20 per
60 s, a sliding window) and its concurrency cap, and an over-limit answer is retried
after an exponential delay with jitter (``Retry-After`` is honoured as a minimum).
Sleep and jitter are injected: tests never wait. With Redis, ``gate`` (``slots.py``)
makes the cap hold across processes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx

from issuer.clock import Clock

Sleep = Callable[[float], Awaitable[None]]
Jitter = Callable[[], float]
Gate = Callable[[], AbstractAsyncContextManager[None]]
LIMIT_EXCEEDED = "SSS_REQUEST_LIMIT_EXCEEDED"


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    cap: float = 60.0
    retries: int = 5

    def delay(self, attempt: int, jitter: float) -> float:
        """Equal jitter: half the exponential step, plus up to the other half at random."""
        step = min(self.cap, self.base * float(2 ** attempt))
        return step / 2 + step / 2 * jitter


class Throttle:
    """At most ``limit`` request starts in any ``period`` seconds (a sliding-window log)."""

    def __init__(self, limit: int, period: float, clock: Clock, sleep: Sleep) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock.now()
                while self._starts and self._starts[0] <= now - self.period:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    return
                await self._sleep(self._starts[0] + self.period - now)


def over_limit(response: httpx.Response) -> bool:
    if response.status_code == 429:
        return True
    return response.status_code == 400 and LIMIT_EXCEEDED in response.text


class NetSuiteClient:
    def __init__(self, http: httpx.AsyncClient, auth: httpx.Auth, *, rest_base_url: str,
                 restlets_base_url: str, throttle: Throttle, max_concurrency: int,
                 backoff: Backoff | None = None, sleep: Sleep = asyncio.sleep,
                 jitter: Jitter = random.random, gate: Gate | None = None) -> None:
        self._http = http
        self._auth = auth
        self._bases = {"rest": rest_base_url.rstrip("/"),
                       "restlets": restlets_base_url.rstrip("/")}
        self.throttle = throttle
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._jitter = jitter
        self._gate = gate
        self.in_flight = 0
        self.max_in_flight = 0

    async def request(self, method: str, path: str, *, base: str = "rest",
                      **options: Any) -> httpx.Response:
        """``method`` on ``path`` below the connector's REST (or RESTlets) base URL."""
        if not path.startswith("/") or path.startswith("//"):
            raise ValueError("a path below the connector's base URL, starting with one /")
        url = self._bases[base] + path
        attempt = 0
        while True:
            await self.throttle.acquire()
            async with self._slots, (self._gate() if self._gate is not None
                                     else contextlib.nullcontext()):
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    response = await self._http.request(method, url, auth=self._auth, **options)
                finally:
                    self.in_flight -= 1
            if not over_limit(response) or attempt >= self._backoff.retries:
                return response
            await self._sleep(max(self._backoff.delay(attempt, self._jitter()),
                                  min(self._backoff.cap, _retry_after(response))))
            attempt += 1

    async def record(self, method: str, record_type: str, record_id: str | None = None,
                     **options: Any) -> httpx.Response:
        path = f"/services/rest/record/v1/{record_type}" + (f"/{record_id}" if record_id else "")
        return await self.request(method, path, **options)

    async def suiteql(self, query: str, **options: Any) -> httpx.Response:
        headers = {"Prefer": "transient", **options.pop("headers", {})}
        return await self.request("POST", "/services/rest/query/v1/suiteql",
                                  json={"q": query}, headers=headers, **options)

    async def restlet(self, method: str, script: str | int, deploy: str | int,
                      **options: Any) -> httpx.Response:
        params = {"script": str(script), "deploy": str(deploy), **options.pop("params", {})}
        return await self.request(method, "/app/site/hosting/restlet.nl", base="restlets",
                                  params=params, **options)


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else 0.0
