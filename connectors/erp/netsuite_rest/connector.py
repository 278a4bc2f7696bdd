"""NETSUITE_REST_V1: approved draft orders upserted as NetSuite sales orders.

Each push resolves the customer and the items (at most one SuiteQL query per lookup
kind, ``IN (...)`` over the order's SKUs), then ``PUT
/services/rest/record/v1/salesOrder/eid:<draft order id>?replace=item``: NetSuite
creates the sales order the first time and updates the same one on every later
push (its lines replaced, not added to), so a push that timed out can be pushed
again without a second order. NetSuite answers 204 with the record's ``Location``;
its internal id goes into the export's ``connector_metadata``.

The test proves the whole chain without writing: a token through the org's NetSuite
M2M connector, then one read-only SuiteQL query over customers and items.

The NetSuite M2M connector must be the org's own: another org's id is "not found",
whoever asks (``owned``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from connectors.erp.models import ConnectorConfig, DraftOrder
from connectors.erp.netsuite_rest import suiteql
from connectors.erp.netsuite_rest.calls import (
    NOT_ACTIVE,
    NOT_FOUND,
    NetSuiteCalls,
    NetSuiteRequests,
)
from connectors.erp.netsuite_rest.config import NetSuiteRestConfig, render_memo
from connectors.erp.port import ConnectorError, ExportResult, TestResult
from connectors.netsuite.connector import ConnectorRecord
from connectors.netsuite.errors import ConnectorNotFound, InvalidConnector
from connectors.netsuite.service import NetSuiteM2MService

log = logging.getLogger(__name__)

NETSUITE_REST_V1 = "NETSUITE_REST_V1"
SALES_ORDER = "/services/rest/record/v1/salesOrder"
_HEADER_FIELDS = (("subsidiary_id", "subsidiary"), ("location_id", "location"),
                  ("department_id", "department"), ("class_id", "class"),
                  ("custom_form_id", "customForm"), ("order_status", "orderStatus"))


class NetSuiteRestConnector:
    config_model: type[ConnectorConfig] = NetSuiteRestConfig

    def __init__(self, netsuite: NetSuiteM2MService,
                 requests: NetSuiteRequests | None = None) -> None:
        self.netsuite = netsuite
        self.requests = requests or NetSuiteRequests()

    def parse_config(self, data: Mapping[str, Any]) -> NetSuiteRestConfig:
        return NetSuiteRestConfig.model_validate(data)

    async def owned(self, connector_id: str, org_id: str) -> ConnectorRecord:
        """The org's NetSuite M2M connector; ConnectorNotFound for a missing one and for
        another org's alike."""
        return await self.netsuite.get(connector_id, lambda tenant_id: tenant_id == org_id)

    async def check_references(self, config: NetSuiteRestConfig, *, org_id: str) -> None:
        """The NetSuite M2M connector the config names is the org's own."""
        await self.owned(config.netsuite_connector_id, org_id)

    async def test_connection(self, config: NetSuiteRestConfig, *, org_id: str) -> TestResult:
        started = time.perf_counter()
        try:
            calls = await self._calls(config, org_id)
            await calls.suiteql("probe", suiteql.PERMISSION_PROBE)
        except ConnectorError as error:
            return TestResult(False, _test_message(error), _ms(started))
        return TestResult(True, None, _ms(started))

    async def export(self, draft_order: DraftOrder, config: NetSuiteRestConfig, *,
                     org_id: str) -> ExportResult:
        calls = await self._calls(config, org_id)
        entity = await self._customer(calls, config, draft_order)
        items = await self._items(calls, config, draft_order)
        response = await calls.call(
            "upsert", "PUT", f"{SALES_ORDER}/eid:{draft_order.id}", params={"replace": "item"},
            json=sales_order(draft_order, config, entity, items))
        location = response.headers.get("Location", "")
        record_id = location.rstrip("/").rpartition("/")[2]
        if not suiteql.is_internal_id(record_id):
            raise ConnectorError("NetSuite accepted the sales order but named no record "
                                 "(no Location header)", code="netsuite_error")
        log.info("draft order %s of org %s is NetSuite sales order %s", draft_order.id, org_id,
                 record_id)
        return ExportResult(
            success=True, export_id=uuid.uuid4(), storage_key=f"salesOrder/{record_id}",
            connector_metadata={"netsuite_record_id": record_id, "record_url": location,
                                "external_id": str(draft_order.id)},
            audit_details={"netsuite_record_id": record_id})

    async def _calls(self, config: NetSuiteRestConfig, org_id: str) -> NetSuiteCalls:
        try:
            record = await self.owned(config.netsuite_connector_id, org_id)
            if record.active_certificate_id is None or "rest_webservices" not in record.scopes:
                raise ConnectorError(NOT_ACTIVE, code="netsuite_not_active")
            client = await self.netsuite.client(record.id)
        except ConnectorNotFound:
            raise ConnectorError(NOT_FOUND, code="not_found") from None
        except InvalidConnector:  # a base URL no longer allowed on this issuer
            raise ConnectorError(NOT_ACTIVE, code="netsuite_not_active") from None
        return NetSuiteCalls(client, self.requests)

    async def _customer(self, calls: NetSuiteCalls, config: NetSuiteRestConfig,
                        order: DraftOrder) -> str:
        """The customer's internal id."""
        value = order.customer.id
        if value is None:
            raise ConnectorError(f"The draft order's customer has no id (customer_lookup is "
                                 f"{config.customer_lookup})", code="unknown_customer")
        if config.customer_lookup == "internal_id":
            if not suiteql.is_internal_id(value):
                raise ConnectorError(f"Customer id {value!r} is not a NetSuite internal id",
                                     code="unknown_customer")
            return value
        rows = await calls.suiteql("customer_lookup", _query(suiteql.customer_by_external_id,
                                                            value))
        found = {str(row.get("id")) for row in rows if row.get("externalid") == value}
        if len(found) != 1:
            raise ConnectorError(f"No NetSuite customer with External ID {value!r}"
                                 if not found else
                                 f"Several NetSuite customers have External ID {value!r}",
                                 code="unknown_customer")
        return found.pop()

    async def _items(self, calls: NetSuiteCalls, config: NetSuiteRestConfig,
                     order: DraftOrder) -> dict[str, str]:
        """SKU -> the item's internal id; every SKU found, or the push fails naming the
        missing ones."""
        skus = list(dict.fromkeys(line.sku for line in order.lines))
        if config.item_lookup == "internal_id":
            bad = [sku for sku in skus if not suiteql.is_internal_id(sku)]
            if bad:
                raise ConnectorError(f"SKUs that are not NetSuite internal ids: {_names(bad)}",
                                     code="unknown_items")
            return {sku: sku for sku in skus}
        rows = await calls.suiteql("item_lookup", _query(suiteql.items_by_itemid, skus))
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(str(row.get("itemid")), set()).add(str(row.get("id")))
        missing = [sku for sku in skus if sku not in found]
        if missing:
            raise ConnectorError(f"Unknown SKUs in NetSuite: {_names(missing)}",
                                 code="unknown_items")
        ambiguous = [sku for sku in skus if len(found[sku]) > 1]
        if ambiguous:
            raise ConnectorError(f"SKUs matching several NetSuite items: {_names(ambiguous)}",
                                 code="unknown_items")
        return {sku: next(iter(found[sku])) for sku in skus}


def sales_order(order: DraftOrder, config: NetSuiteRestConfig, entity: str,
                items: Mapping[str, str]) -> dict[str, Any]:
    """The salesOrder body: references as ``{"id": ...}``, amounts as JSON numbers."""
    body: dict[str, Any] = {
        "entity": {"id": entity},
        "currency": {"refName": order.currency},
        "otherRefNum": order.external_reference,
        "item": {"items": [{"item": {"id": items[line.sku]}, "quantity": _number(line.qty),
                            "rate": _number(line.price),
                            **({"description": line.description} if line.description else {})}
                           for line in order.lines]},
    }
    for field, name in _HEADER_FIELDS:
        value = getattr(config, field)
        if value is not None:
            body[name] = {"id": value}
    if config.memo_template is not None:
        body["memo"] = render_memo(config.memo_template, {
            "external_reference": order.external_reference, "draft_order_id": str(order.id),
            "customer_name": order.customer.name, "currency": order.currency})
    return body


def _query(build: Any, values: Any) -> str:
    try:
        query: str = build(values)
    except suiteql.UnsafeValue:
        raise ConnectorError("A customer id or SKU cannot be looked up in NetSuite (control "
                             "characters, or longer than 300 characters)",
                             code="invalid_order") from None
    return query


def _number(value: Decimal) -> float | int:
    """A JSON number: exact for amounts of up to 15 significant digits."""
    return int(value) if value == value.to_integral_value() else float(value)


def _names(values: list[str]) -> str:
    shown = ", ".join(repr(value) for value in values[:20])
    return shown + (f" and {len(values) - 20} more" if len(values) > 20 else "")


def _test_message(error: ConnectorError) -> str:
    """The test's fixed messages: what failed, without NetSuite's detail."""
    fixed = {"authentication_failed": "Authentication failed",
             "permission_denied": "Permission denied",
             "netsuite_unavailable": "NetSuite unavailable",
             "netsuite_not_active": NOT_ACTIVE, "not_found": NOT_FOUND}
    return fixed.get(error.code, error.message)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
