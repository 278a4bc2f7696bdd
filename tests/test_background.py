"""issuer.background.every: the periodic tasks of the lifespan (key ring, retention,
replay store, NetSuite certificates), driven by a sleep the test controls."""

from __future__ import annotations

import asyncio
import logging

from issuer.background import every


class Ticks:
    """A ``sleep`` that returns only when the test says a tick has passed."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._gate: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self._gate.get()

    async def tick(self) -> None:
        self._gate.put_nowait(None)
        for _ in range(5):  # let the loop run its work up to the next sleep
            await asyncio.sleep(0)


async def test_work_runs_once_per_interval_never_at_start():
    ticks, runs = Ticks(), []

    async def work() -> None:
        runs.append(len(runs))

    async with every(600, work, name="t", sleep=ticks.sleep):
        await asyncio.sleep(0)
        assert runs == [] and ticks.asked == [600]  # waiting for the first interval
        await ticks.tick()
        await ticks.tick()
        assert runs == [0, 1]
    assert ticks.asked == [600, 600, 600]


async def test_a_failure_is_logged_and_the_next_interval_retries(caplog):
    ticks, calls = Ticks(), []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("store down")

    caplog.set_level(logging.ERROR, logger="issuer.background")
    async with every(60, flaky, name="flaky", sleep=ticks.sleep):
        await ticks.tick()
        await ticks.tick()
    assert len(calls) == 2
    (record,) = caplog.records
    assert "background task flaky failed" in record.getMessage()
    assert record.exc_info is not None


async def test_the_interval_may_change_between_runs():
    ticks, intervals = Ticks(), iter([60.0, 30.0, 10.0])
    current = [next(intervals)]

    async def work() -> None:
        current[0] = next(intervals)

    async with every(lambda: current[0], work, name="t", sleep=ticks.sleep):
        await ticks.tick()
        await ticks.tick()
    assert ticks.asked == [60.0, 30.0, 10.0]


async def test_leaving_the_block_stops_the_task_even_mid_work():
    started, finished = asyncio.Event(), []
    ticks = Ticks()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()  # never ends by itself
        finished.append(1)

    async with every(1, slow, name="slow", sleep=ticks.sleep):
        await ticks.tick()
        await started.wait()
    assert finished == []
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "slow"]
