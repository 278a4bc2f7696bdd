"""Typed access to what the lifespan hands every request.

Starlette copies the lifespan's state into each request (``request.state``), untyped.
A :class:`StateKey` names one entry and its type, so a handler reads
``SERVICES(request)`` -- a ``Services`` to the type checker -- instead of an ``Any``;
each feature declares the key of the narrow services it uses (the core's
``issuer.services.SERVICES``, a connector's own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from starlette.requests import HTTPConnection

T = TypeVar("T")


class StateKey(Generic[T]):
    """One entry of the lifespan state: its name there and, as a type parameter, its type."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, connection: HTTPConnection) -> T:
        """The entry for this request; the lifespan that built the app put it there."""
        value: T = getattr(connection.state, self.name)
        return value

    def of(self, state: Mapping[str, object]) -> T | None:
        """The entry in a lifespan state being built, or None if it is not there."""
        value: T | None = state.get(self.name)  # type: ignore[assignment]  # a T: entry() stored it
        return value

    def entry(self, value: T) -> dict[str, object]:
        """The lifespan state that holds ``value`` under this key."""
        return {self.name: value}
