"""SuiteQL text built from values an org sent (SKUs, external ids), safely.

SuiteQL (``POST /services/rest/query/v1/suiteql``) takes one query string and no
bind parameters, so every value becomes a literal here and nowhere else: a string
is quoted with single quotes, a quote inside it doubled (SQL's only escape in a
string literal); control characters, which no SKU or id has and which a parser
might treat differently, are refused. Internal ids are digits only. Column and
table names are constants of this module, never values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Read-only proof that the role may read customers and items (the connection test).
PERMISSION_PROBE = ("SELECT 'customer' AS record, id FROM customer WHERE ROWNUM <= 1 "
                    "UNION ALL SELECT 'item' AS record, id FROM item WHERE ROWNUM <= 1")
_INTERNAL_ID = re.compile(r"[1-9][0-9]{0,18}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LITERAL = 300


class UnsafeValue(ValueError):
    """A value that cannot become a SuiteQL literal."""


def literal(value: str) -> str:
    """``value`` as a SuiteQL string literal: ``O'Brien`` -> ``'O''Brien'``."""
    if _CONTROL.search(value) or len(value) > MAX_LITERAL:
        raise UnsafeValue("control characters or too long")
    return "'" + value.replace("'", "''") + "'"


def is_internal_id(value: str) -> bool:
    return _INTERNAL_ID.fullmatch(value) is not None


def in_list(values: Iterable[str]) -> str:
    """``('a', 'b')``: distinct values, in first-seen order."""
    distinct = list(dict.fromkeys(values))
    if not distinct:
        raise UnsafeValue("an IN list needs a value")
    return "(" + ", ".join(literal(value) for value in distinct) + ")"


def customer_by_external_id(external_id: str) -> str:
    # The value is a literal() (quoted, quotes doubled); SuiteQL has no bind parameters.
    return f"SELECT id, externalid FROM customer WHERE externalid = {literal(external_id)}"  # noqa: S608


def items_by_itemid(skus: Iterable[str]) -> str:
    return f"SELECT id, itemid FROM item WHERE itemid IN {in_list(skus)}"  # noqa: S608
