"""Keyset pagination, one helper for every listing: an opaque cursor and the query.

A listing is ordered by a unique sort key -- one or more columns, e.g.
``(created_at, id)`` ascending or ``(issued_at, jti)`` descending -- and a page
continues strictly after the last item's key. Rows committed while a caller pages
sort before the cursor or after it, once: nothing is repeated or skipped.

The cursor is the key's values as a JSON array, base64url without padding. It is
opaque to callers; :meth:`Keyset.decode` takes back only what :meth:`Keyset.encode`
could have made -- the right number of values, each of its part's type and range
(a time the database can hold, an identifier of the listing's shape, a 64-bit
integer) -- and raises :class:`MalformedCursor` for anything else. The admin API
answers that with 422 (``issuer.admin.http.read_cursor``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar, TypeVarTuple

from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.orm import QueryableAttribute

T = TypeVar("T")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")
#: A sort-key column: a mapped attribute or a column expression.
Column = QueryableAttribute[Any] | ColumnElement[Any]
#: A decoded sort key: one value per column.
Key = tuple[Any, ...]
#: No listing's cursor is longer (the admin API's query models say 512 too).
MAX_LENGTH = 512


class MalformedCursor(ValueError):
    """The text is not a cursor this listing made."""


class KeyPart(Protocol):
    """One value of a sort key, as it goes into a cursor and comes back out."""

    def dump(self, value: Any) -> Any:
        """The value as JSON."""
        ...

    def load(self, raw: Any) -> Any:
        """The JSON back as the value; ValueError or OverflowError if it is not one."""
        ...


class _Instant:
    """A timezone-aware time, in ISO 8601 with its offset, compared in UTC (years 1 to
    9999 after the shift to UTC, as both databases hold them)."""

    def dump(self, value: Any) -> Any:
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise TypeError("a sort key's time is timezone-aware")
        return value.astimezone(UTC).isoformat()

    def load(self, raw: Any) -> Any:
        if not isinstance(raw, str):
            raise ValueError("not a time")
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise ValueError("a time without its zone")
        return moment.astimezone(UTC)  # OverflowError outside years 1..9999 in UTC


@dataclass(frozen=True)
class Identifier:
    """A text identifier of the listing's shape (``pattern``, matched in full)."""

    pattern: str

    def dump(self, value: Any) -> Any:
        return str(value)

    def load(self, raw: Any) -> Any:
        if not isinstance(raw, str) or not re.fullmatch(self.pattern, raw):
            raise ValueError("not an identifier")
        return raw


class _Int64:
    """A non-negative integer a 64-bit database column holds (not a boolean)."""

    def dump(self, value: Any) -> Any:
        return int(value)

    def load(self, raw: Any) -> Any:
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw < 2**63:
            raise ValueError("not a 64-bit position")
        return raw


INSTANT: KeyPart = _Instant()
INT64: KeyPart = _Int64()


def encode_values(*values: Any) -> str:
    """JSON values as an opaque cursor (base64url, no padding)."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_values(cursor: str) -> list[Any]:
    """A cursor's JSON array; :class:`MalformedCursor` for anything else."""
    if len(cursor) > MAX_LENGTH:
        raise MalformedCursor("too long")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, UnicodeDecodeError, binascii.Error, RecursionError):
        raise MalformedCursor("not a cursor") from None
    if not isinstance(values, list):
        raise MalformedCursor("not a cursor")
    return values


@dataclass(frozen=True)
class Keyset:
    """A listing's order: its sort-key ``columns`` (unique together), the ``parts`` that
    carry their values in a cursor, and the direction."""

    columns: tuple[Column, ...]
    parts: tuple[KeyPart, ...]
    descending: bool = False

    def encode(self, key: Sequence[Any]) -> str:
        return encode_values(*(part.dump(value) for part, value in zip(self.parts, key,
                                                                       strict=True)))

    def decode(self, cursor: str | None) -> Key | None:
        """The key a cursor names (None for no cursor: the first page)."""
        if not cursor:
            return None
        values = decode_values(cursor)
        if len(values) != len(self.parts):
            raise MalformedCursor("not this listing's cursor")
        try:
            return tuple(part.load(value) for part, value in zip(self.parts, values,
                                                                 strict=True))
        except (ValueError, OverflowError):
            raise MalformedCursor("not this listing's cursor") from None

    def after(self, key: Key) -> ColumnElement[bool]:
        """Rows strictly past ``key`` in this order (a row-value comparison, spelled out:
        ``(a, b) > (x, y)`` is ``a > x OR (a = x AND b > y)``)."""
        branches: list[ColumnElement[bool]] = []
        for index, column in enumerate(self.columns):
            beyond = column < key[index] if self.descending else column > key[index]
            equal = [self.columns[j] == key[j] for j in range(index)]
            branches.append(and_(*equal, beyond))
        return or_(*branches)

    def page(self, statement: Select[*Ts], after: Key | None,
             limit: int) -> Select[*Ts]:
        """``statement`` in this order past ``after``: ``limit`` + 1 rows, the extra one
        saying whether another page follows."""
        if after is not None:
            statement = statement.where(self.after(after))
        order = [column.desc() if self.descending else column.asc()
                 for column in self.columns]
        return statement.order_by(*order).limit(limit + 1)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, and the cursor of the next (None on the last)."""

    items: list[T]
    next_cursor: str | None


def page_of(keyset: Keyset, rows: Sequence[R], limit: int, key: Callable[[R], Sequence[Any]],
            item: Callable[[R], T]) -> Page[T]:
    """The page of ``rows`` (fetched by :meth:`Keyset.page`): the first ``limit`` as
    ``item(row)``, and a cursor from ``key(row)`` of the last when more rows follow."""
    kept = rows[:limit]
    more = len(rows) > limit
    return Page(items=[item(row) for row in kept],
                next_cursor=keyset.encode(key(kept[-1])) if more else None)
