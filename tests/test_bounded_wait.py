"""A wait for the group writer's commit (issuer.store.bounds.bounded_wait): past its
time the future is cancelled and StoreTimeout raised; a failure of the future and a
cancellation of the waiting task itself pass through unchanged."""

from __future__ import annotations

import asyncio

import pytest

from issuer.store.bounds import StoreTimeout, bounded_wait, request_budget


async def test_a_future_that_does_not_finish_in_time_is_cancelled_and_the_wait_times_out():
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(StoreTimeout):
        await bounded_wait(future, 0.01)
    assert future.cancelled()


async def test_within_a_request_the_budget_bounds_the_wait():
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with request_budget(0.01) as budget, pytest.raises(StoreTimeout):
        await bounded_wait(future, None)
    assert future.cancelled() and budget.left == 0


async def test_the_futures_own_result_and_failure_come_back_as_they_are():
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    loop.call_soon(done.set_result, 7)
    assert await bounded_wait(done, 5) == 7
    failed: asyncio.Future[int] = loop.create_future()
    loop.call_soon(failed.set_exception, TimeoutError("the driver's own"))
    with pytest.raises(TimeoutError, match="the driver's own") as raised:
        await bounded_wait(failed, 5)
    assert not isinstance(raised.value, StoreTimeout)


async def test_a_waiter_cancelled_from_outside_is_cancelled_not_timed_out():
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(bounded_wait(future, 5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert future.cancelled()
