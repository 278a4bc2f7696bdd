"""How long a request may wait for the store, and which failures mean "unavailable".

A frozen or locked database must cost a request a bounded wait and the process a
bounded amount of memory, never a pile of requests waiting forever:

- every database call of the serving process is bounded by its engine
  (:func:`issuer.store.db.create_engine`): on PostgreSQL the driver's command
  timeout, the connect timeout and the pool's checkout timeout; on SQLite
  ``busy_timeout``; each ``ISSUER_STORE_TIMEOUT``;
- the group writer's queue is capped and a wait for it is bounded
  (:mod:`issuer.store.writer`);
- a request's waits for the store draw on one :class:`StoreBudget` of
  ``ISSUER_STORE_TIMEOUT`` seconds: in total they never last longer.

A request that runs out of budget stops waiting and is answered 503
(:class:`issuer.errors.StoreUnavailable`). A write it handed to the group writer
stays queued and may commit after the refusal -- a token that was never handed
out -- but a token is never handed out without its committed row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from inspect import iscoroutine
from typing import TypeVar

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

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, for at most what is left; past it the wait is cancelled
        and :class:`StoreTimeout` raised. (A query in progress is abandoned -- SQLAlchemy
        closes its connection; a write handed to the group writer stays queued.)"""
        if self._left <= 0:
            if iscoroutine(awaitable):
                awaitable.close()
            raise StoreTimeout("the request's time for the store is spent")
        loop = asyncio.get_running_loop()
        started = loop.time()
        timer = asyncio.timeout(self._left)
        try:
            async with timer:
                return await awaitable
        except TimeoutError:
            if timer.expired():
                raise StoreTimeout("the store did not answer in time") from None
            raise  # the driver's own timeout, or a full writer queue
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling() == 0:
                # Not this request's cancellation: another request's, handed on by a
                # load it shared (a cache's single flight) -- this one just ran out.
                raise StoreTimeout("a shared wait for the store was abandoned") from None
            raise
        finally:
            self._left -= loop.time() - started


_CURRENT: ContextVar[StoreBudget | None] = ContextVar("store_budget", default=None)


@contextmanager
def request_budget(seconds: float) -> Iterator[StoreBudget]:
    """Give the current request (task) a budget of ``seconds`` for the store; the
    store calls below it reach it through :func:`bounded`."""
    budget = StoreBudget(seconds)
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def within_budget() -> bool:
    """Whether the current request has a budget (whose waits it already bounds)."""
    return _CURRENT.get() is not None


async def bounded(awaitable: Awaitable[T]) -> T:
    """Await a store operation within the current request's budget, if it has one
    (outside a request, e.g. a background task, the engine's bounds apply alone)."""
    budget = _CURRENT.get()
    if budget is None:
        return await awaitable
    return await budget.wait(awaitable)

