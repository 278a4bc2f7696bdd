"""The simulated account's data: customers, items and sales orders, behind NetSuite's
REST record service (``salesOrder`` upsert by external id) and query service
(SuiteQL), with NetSuite-shaped errors.

What it enforces, independently of the client under test:

- ``PUT /services/rest/record/v1/salesOrder/eid:<external id>``: creates the sales
  order the first time, updates the same one after (204 and a ``Location`` naming its
  internal id either way); ``?replace=item`` replaces the lines, without it new lines
  are added to the old ones (NetSuite's merge). The body is checked field by field:
  an unknown field, an unknown customer or item, a reference that is not
  ``{"id": "<digits>"}``, or an amount that is not a JSON number is 400 with
  ``o:errorDetails[{detail, o:errorCode, o:errorPath}]``.
- SuiteQL: a small grammar -- ``SELECT cols FROM customer|item WHERE col = 'x'`` or
  ``col IN ('x', ...)``, and the connection test's probe -- parsed with SQL's quoting
  rules (``''`` is a quote inside a literal); anything else is 400
  ``INVALID_PARAMETER``, as a query broken by an unescaped quote would be. Every
  query run is kept in ``queries``.
- Permissions per integration (``permissions``): a role without ``customer``,
  ``item`` or ``salesorder`` gets 403 ``INSUFFICIENT_PERMISSION``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

RECORD = "/services/rest/record/v1/"
SUITEQL = "/services/rest/query/v1/suiteql"
ALL_PERMISSIONS = frozenset({"customer", "item", "salesorder"})
SALES_ORDER_FIELDS = {"entity", "currency", "otherRefNum", "memo", "item", "subsidiary",
                      "location", "department", "class", "orderStatus", "customForm"}
LINE_FIELDS = {"item", "quantity", "rate", "description"}
CURRENCIES = {"EUR", "USD", "GBP", "CHF"}


@dataclass
class SalesOrder:
    internal_id: str
    external_id: str
    body: dict[str, Any]
    lines: list[dict[str, Any]]
    writes: int = 1


@dataclass
class Records:
    customers: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> columns
    items: dict[str, dict[str, str]] = field(default_factory=dict)
    sales_orders: dict[str, SalesOrder] = field(default_factory=dict)  # by external id
    queries: list[str] = field(default_factory=list)
    #: Fields of features the account has not enabled (``class``, ``department``...):
    #: NetSuite does not know them at all.
    disabled_fields: set[str] = field(default_factory=set)
    #: A careless server: refusals quote the request's Authorization header back.
    echo_authorization: bool = False
    next_id: int = 1000

    def add_customer(self, internal_id: str, external_id: str | None = None,
                     name: str = "Customer") -> None:
        self.customers[internal_id] = {"id": internal_id, "externalid": external_id or "",
                                       "entityid": name}

    def add_item(self, internal_id: str, itemid: str) -> None:
        self.items[internal_id] = {"id": internal_id, "itemid": itemid}

    def by_internal_id(self, internal_id: str) -> SalesOrder | None:
        return next((order for order in self.sales_orders.values()
                     if order.internal_id == internal_id), None)

    # HTTP --------------------------------------------------------------------------

    def handles(self, request: Request) -> bool:
        path = request.url.path
        return path == SUITEQL or path.startswith(RECORD + "salesOrder")

    async def answer(self, request: Request, permissions: frozenset[str]) -> Response:
        if request.url.path == SUITEQL:
            return await self._suiteql(request, permissions)
        return await self._sales_order(request, permissions)

    async def _sales_order(self, request: Request, permissions: frozenset[str]) -> Response:
        if "salesorder" not in permissions:
            return error(403, "Permission Violation: You need a higher level of the 'Sales "
                         "Order' permission to access this page.", "INSUFFICIENT_PERMISSION")
        key = request.url.path.removeprefix(RECORD + "salesOrder/")
        if request.method != "PUT" or not key.startswith("eid:") or len(key) == 4:
            return error(405, "Only PUT salesOrder/eid:<external id> is simulated",
                         "INVALID_METHOD")
        external_id = key.removeprefix("eid:")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "The request body is not valid JSON.", "INVALID_CONTENT")
        if not isinstance(body, dict):
            return error(400, "The request body must be a JSON object.", "INVALID_CONTENT")
        problem = self._check(body)
        if problem is not None and self.echo_authorization:
            detail = json.loads(bytes(problem.body))["o:errorDetails"][0]
            return error(problem.status_code, f"{detail['detail']} (request: Authorization: "
                         f"{request.headers.get('authorization')})", detail["o:errorCode"])
        if problem is not None:
            return problem
        lines = body["item"]["items"]
        order = self.sales_orders.get(external_id)
        if order is None:
            self.next_id += 1
            order = SalesOrder(str(self.next_id), external_id, body, list(lines))
            self.sales_orders[external_id] = order
        else:
            replace = request.query_params.get("replace", "").split(",")
            order.lines = list(lines) if "item" in replace else order.lines + list(lines)
            order.body = {**order.body, **body}
            order.writes += 1
        location = f"{request.url.scheme}://{request.url.netloc}{RECORD}salesOrder/" \
                   f"{order.internal_id}"
        return Response(status_code=204, headers={"Location": location})

    def _check(self, body: dict[str, Any]) -> Response | None:
        for name in body:
            if name not in SALES_ORDER_FIELDS or name in self.disabled_fields:
                return error(400, f"Invalid field '{name}': the field does not exist on "
                             "this record.", "INVALID_FIELD", name)
        entity = _reference(body.get("entity"))
        if entity is None or entity not in self.customers:
            return error(400, "Invalid value for the resource or sub-resource field "
                         "'entity'. Provide a valid value.", "INVALID_KEY_OR_REF", "entity")
        currency = body.get("currency")
        if not isinstance(currency, dict) or currency.get("refName") not in CURRENCIES:
            return error(400, "Invalid value for 'currency'.", "INVALID_KEY_OR_REF", "currency")
        items = body.get("item")
        if not isinstance(items, dict) or not isinstance(items.get("items"), list) \
                or not items["items"]:
            return error(400, "A sales order needs at least one line.", "USER_ERROR", "item")
        for index, line in enumerate(items["items"]):
            path = f"item.items[{index}]"
            if not isinstance(line, dict) or set(line) - LINE_FIELDS:
                return error(400, "Invalid line.", "INVALID_FIELD", path)
            if _reference(line.get("item")) not in self.items:
                return error(400, "Invalid value for the resource or sub-resource field "
                             "'item'. Provide a valid value.", "INVALID_KEY_OR_REF",
                             f"{path}.item")
            for number in ("quantity", "rate"):
                value = line.get(number)
                if not isinstance(value, int | float) or isinstance(value, bool):
                    return error(400, f"Invalid value for '{number}': a number is expected.",
                                 "INVALID_FIELD_VALUE", f"{path}.{number}")
        for name in ("subsidiary", "location", "department", "class", "customForm"):
            if name in body and _reference(body[name]) is None:
                return error(400, f"Invalid value for '{name}'.", "INVALID_KEY_OR_REF", name)
        if "orderStatus" in body and body["orderStatus"] not in ({"id": "A"}, {"id": "B"}):
            return error(400, "Invalid value for 'orderStatus'.", "INVALID_FIELD_VALUE",
                         "orderStatus")
        return None

    async def _suiteql(self, request: Request, permissions: frozenset[str]) -> Response:
        try:
            query = json.loads(await request.body())["q"]
            assert isinstance(query, str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return error(400, "The request body must be {\"q\": \"<query>\"}.",
                         "INVALID_PARAMETER")
        self.queries.append(query)
        if query == PROBE:
            missing = {"customer", "item"} - permissions
            if missing:
                return _no_permission(sorted(missing)[0])
            rows = [{"record": "customer", "id": next(iter(self.customers), None)},
                    {"record": "item", "id": next(iter(self.items), None)}]
            return _rows([row for row in rows if row["id"] is not None])
        parsed = parse(query)
        if parsed is None:
            return error(400, "Invalid search query. Detailed unprocessed description "
                         "follows. Search error occurred: Parse of query failed.",
                         "INVALID_PARAMETER")
        columns, table, column, values = parsed
        if table not in permissions:
            return _no_permission(table)
        source = self.customers if table == "customer" else self.items
        rows = [{name: row.get(name, "") for name in columns} for row in source.values()
                if row.get(column) in values]
        return _rows(rows)


#: The connection test's query (connectors.erp.netsuite_rest.suiteql.PERMISSION_PROBE);
#: copied, so that the simulator does not take the client's word for it.
PROBE = ("SELECT 'customer' AS record, id FROM customer WHERE ROWNUM <= 1 "
         "UNION ALL SELECT 'item' AS record, id FROM item WHERE ROWNUM <= 1")
_SELECT = re.compile(r"SELECT ([a-z]+(?:, [a-z]+)*) FROM (customer|item) WHERE ([a-z]+) "
                     r"(=|IN) (.*)", re.DOTALL)
_LITERAL = re.compile(r"'((?:[^']|'')*)'")


def parse(query: str) -> tuple[list[str], str, str, set[str]] | None:
    """``(columns, table, column, values)`` of the grammar above, or None."""
    match = _SELECT.fullmatch(query)
    if match is None:
        return None
    columns, table, column, operator, rest = match.groups()
    if operator == "=":
        literal = _LITERAL.fullmatch(rest)
        return (columns.split(", "), table, column,
                {literal.group(1).replace("''", "'")}) if literal else None
    if not (rest.startswith("(") and rest.endswith(")")):
        return None
    values, position, inner = set(), 0, rest[1:-1]
    while True:
        literal = _LITERAL.match(inner, position)
        if literal is None:
            return None
        values.add(literal.group(1).replace("''", "'"))
        position = literal.end()
        if position == len(inner):
            return columns.split(", "), table, column, values
        if not inner.startswith(", ", position):
            return None
        position += 2


def error(status: int, detail: str, code: str, path: str | None = None) -> JSONResponse:
    item: dict[str, str] = {"detail": detail, "o:errorCode": code}
    if path is not None:
        item["o:errorPath"] = path
    return JSONResponse({"type": "https://www.rfc-editor.org/rfc/rfc9110.html",
                         "title": "Error", "status": status, "o:errorDetails": [item]}, status)


def _no_permission(record: str) -> JSONResponse:
    return error(403, f"Permission Violation: You need the 'Lists > {record.title()}' "
                 "permission to access this record.", "INSUFFICIENT_PERMISSION")


def _rows(rows: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"links": [], "count": len(rows), "hasMore": False,
                         "items": [{"links": [], **row} for row in rows], "offset": 0,
                         "totalResults": len(rows)})


def _reference(value: Any) -> str | None:
    if isinstance(value, dict) and set(value) == {"id"} and isinstance(value["id"], str) \
            and value["id"].isdigit():
        return value["id"]
    return None
