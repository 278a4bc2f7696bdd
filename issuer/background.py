"""Periodic background work inside the lifespan: one helper for every such task.

``async with every(60, ring.maintain, name="key-ring")``: ``work`` runs once per
interval (the first time after one interval, so start-up waits for nothing) while
the block runs; a failure is logged and retried at the next interval; leaving the
block cancels the task and waits for it. The key ring, retention pruning, the
assertion replay store and the NetSuite certificate maintenance all use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def every(interval: float | Callable[[], float], work: Callable[[], Awaitable[Any]], *,
                name: str, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
                ) -> AsyncIterator[None]:
    """``interval`` in seconds, or a function giving it (read before each wait);
    ``sleep`` waits that long (tests give one they drive)."""

    async def loop() -> None:
        while True:
            await sleep(interval() if callable(interval) else interval)
            try:
                await work()
            except Exception:
                log.exception("background task %s failed; retrying at its next interval", name)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
