"""How long a request may wait for the store, and which failures mean "unavailable".

A frozen or locked database must cost a request a bounded wait and the process a
bounded amount of memory, never a pile of requests waiting forever:

- every database call of the serving process is bounded by its engine
  (:func:`issuer.store.db.create_engine`): on PostgreSQL the driver's command
  timeout, the connect timeout and the pool's checkout timeout; on SQLite
  ``busy_timeout``; each ``ISSUER_STORE_TIMEOUT`` -- the group writer's own
  connection too (issuer.store.db.store_options);
- the group writer's queue is capped and a wait for it is bounded
  (:mod:`issuer.store.writer`);
- a request's waits for the store draw on one :class:`StoreBudget` of
  ``ISSUER_STORE_TIMEOUT`` seconds: in total they never last longer.

A request that runs out of budget stops waiting and is answered 503
(:class:`issuer.errors.StoreUnavailable`). A query it started runs on until the
engine's bounds end it; a write it handed to the group writer stays queued and
may commit after the refusal -- a token that was never handed out -- but a token
is never handed out without its committed row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from typing import Any, TypeVar

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

T = TypeVar("T")


class StoreTimeout(TimeoutError):
    """A request waited for the store as long as it may, or the writer's queue is full."""


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the store is down, overloaded or too slow -- something
    a retry later may cure -- rather than that one statement or row is bad."""
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or not isinstance(
            error, IntegrityError | DataError | ProgrammingError | NotSupportedError)
    return isinstance(error, TimeoutError | ConnectionError | PoolTimeout | DisconnectionError)


class StoreBudget:
    """The seconds one request may still spend waiting for the store."""

    def __init__(self, seconds: float) -> None:
        self._left = seconds

    @property
    def left(self) -> float:
        return max(0.0, self._left)

    async def wait(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run a database operation for at most what is left; past it raise
        :class:`StoreTimeout` and stop waiting. The operation is not cancelled: it
        runs on (outside any budget) until the engine's own bounds end it --
        cancelling it would make this request wait for its connection's cleanup."""
        if self._left <= 0:
            operation.close()
            raise StoreTimeout("the request's time for the store is spent")
        loop = asyncio.get_running_loop()
        context = copy_context()
        context.run(_CURRENT.set, None)
        task = loop.create_task(operation, context=context)
        started = loop.time()
        try:
            done, _ = await asyncio.wait({task}, timeout=self._left)
        except asyncio.CancelledError:
            task.add_done_callback(_unobserved)
            raise
        finally:
            self._left -= loop.time() - started
        if not done:
            task.add_done_callback(_unobserved)
            raise StoreTimeout("the store did not answer in time")
        return task.result()

    async def wait_for(self, future: asyncio.Future[T]) -> T:
        """Wait for ``future`` (e.g. a commit by the group writer) for at most what is
        left; past it the future is cancelled and :class:`StoreTimeout` raised."""
        if self._left <= 0:
            future.cancel()
            raise StoreTimeout("the request's time for the store is spent")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await _wait_for(future, self._left)
        finally:
            self._left -= loop.time() - started


async def _wait_for(future: asyncio.Future[T], seconds: float | None) -> T:
    """Await ``future``, cancelling it after ``seconds``: one timer on the loop, which
    cancels the future itself (cheaper than a timeout scope, which cancels the task)."""
    if seconds is None:
        return await future
    expiry = _Expiry(future)
    timer = asyncio.get_running_loop().call_later(seconds, expiry.fire)
    try:
        return await future
    except asyncio.CancelledError:
        if expiry.fired and not _cancelling():
            raise StoreTimeout("the store did not answer in time") from None
        raise
    finally:
        timer.cancel()


class _Expiry:
    """The timer's end: cancels the future if it is still pending."""

    __slots__ = ("fired", "future")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.fired = False

    def fire(self) -> None:
        if not self.future.done():
            self.fired = True
            self.future.cancel()


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (from outside)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


_CURRENT: ContextVar[StoreBudget | None] = ContextVar("store_budget", default=None)


@contextmanager
def request_budget(seconds: float) -> Iterator[StoreBudget]:
    """Give the current request (task) a budget of ``seconds`` for the store; the
    store calls below it reach it through :func:`bounded` and :func:`bounded_wait`."""
    budget = StoreBudget(seconds)
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


async def bounded(operation: Coroutine[Any, Any, T]) -> T:
    """Run a database operation within the current request's budget, if it has one
    (outside a request, e.g. a background task, the engine's bounds apply alone)."""
    budget = _CURRENT.get()
    if budget is None:
        return await operation
    return await budget.wait(operation)


async def bounded_wait(future: asyncio.Future[T], seconds: float | None) -> T:
    """Wait for ``future`` within the current request's budget, or for at most
    ``seconds`` outside a request; past it the future is cancelled."""
    budget = _CURRENT.get()
    if budget is None:
        return await _wait_for(future, seconds)
    return await budget.wait_for(future)


def _unobserved(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned operation's outcome, so that asyncio does not report it."""
    if not task.cancelled():
        task.exception()
