"""The group writer's rows as a raw driver takes them, bound exactly as SQLAlchemy would.

The group writer (issuer.store.writer) hands its batches to a driver directly
(asyncpg, sqlite3), past SQLAlchemy's statement compilation and execution
layers, which cost more CPU than the insert itself. The values must still be
stored byte for byte as through SQLAlchemy: every value goes through the same
bind processor SQLAlchemy would apply for the engine's dialect (the UTC
``DateTime`` decorator, ``JSON`` serialization, SQLite's datetime strings), and a
column left out of a row gets its Python-side scalar default, as a Core insert
does. The processors are looked up once per table and set of columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import ArgumentError, CompileError, StatementError

Rows = Sequence[tuple[Table, dict[str, Any]]]
_MISSING = object()


@dataclass(frozen=True, eq=False)
class InsertPlan:
    """How the rows of one table with one set of keys are inserted: the columns
    (in the table's order) and, per column, its default and bind processor. One
    object per table and keys (:class:`RowEncoder` caches them): compared, and
    hashed, by identity."""

    table: Table
    columns: tuple[Column[Any], ...]
    defaults: tuple[Any, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    @cached_property
    def keys(self) -> tuple[str, ...]:
        """The rows' keys for the columns (a column's ``key``, usually its name)."""
        return tuple(column.key for column in self.columns)

    @cached_property
    def _bound(self) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
        """The columns that have a bind processor: (position, processor)."""
        return tuple((index, processor) for index, processor in enumerate(self.processors)
                     if processor is not None)

    def rows(self, values: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """The driver's values, one tuple per row (for executemany). A row has a
        value for every column without a default (the plan was made from its keys)."""
        keys, defaults, bound = self.keys, self.defaults, self._bound
        out = []
        try:
            for row in values:
                driver = list(map(row.get, keys, defaults))
                for index, processor in bound:
                    driver[index] = processor(driver[index])
                out.append(tuple(driver))
        except Exception as error:
            raise self._unbindable(error) from error
        return out

    def columns_of(self, values: Sequence[dict[str, Any]]) -> list[list[Any]]:
        """The driver's values, one list per column (for arrays to unnest)."""
        keys, defaults = self.keys, self.defaults
        columns = [list(column) for column in
                   zip(*(map(row.get, keys, defaults) for row in values), strict=True)] \
            if values else [[] for _ in keys]
        try:
            for index, processor in self._bound:
                columns[index] = list(map(processor, columns[index]))
        except Exception as error:
            raise self._unbindable(error) from error
        return columns

    def _unbindable(self, error: Exception) -> StatementError:
        """A value its column's type refuses (e.g. a naive datetime), raised as the
        engine raises it: a bad row, not an unavailable store."""
        return StatementError(str(error), f"INSERT INTO {self.table.name}", None, error,
                              hide_parameters=True)


class RowEncoder:
    """Groups a batch's rows by table and keys, with the plan that binds them."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._plans: dict[tuple[Table, tuple[str, ...]], InsertPlan] = {}

    def group(self, writes: Iterable[Rows]) -> list[tuple[InsertPlan, list[dict[str, Any]]]]:
        """The rows of ``writes`` by plan, in the order each plan first appears."""
        groups: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = {}
        for rows in writes:
            for table, values in rows:
                key = (table, tuple(values))
                found = groups.get(key)
                if found is None:
                    groups[key] = [values]
                else:
                    found.append(values)
        return [(self.plan(table, keys), values) for (table, keys), values in groups.items()]

    def plan(self, table: Table, keys: tuple[str, ...]) -> InsertPlan:
        found = self._plans.get((table, keys))
        if found is None:
            found = self._plans[(table, keys)] = self._make_plan(table, keys)
        return found

    def _make_plan(self, table: Table, keys: tuple[str, ...]) -> InsertPlan:
        unknown = set(keys) - set(table.columns.keys())
        if unknown:
            raise CompileError(f"Unconsumed column names: {', '.join(sorted(unknown))}")
        columns, defaults = [], []
        for column in table.columns:
            if column.key in keys:
                columns.append(column)
                defaults.append(_MISSING)
            elif column.default is not None:
                if not column.default.is_scalar:
                    raise ArgumentError(
                        f"{table.name}.{column.name}: only scalar Python defaults are "
                        "applied by the group writer; give the value")
                columns.append(column)
                defaults.append(getattr(column.default, "arg", None))
        return InsertPlan(table, tuple(columns), tuple(defaults),
                          tuple(column.type._cached_bind_processor(self._dialect)
                                for column in columns))
