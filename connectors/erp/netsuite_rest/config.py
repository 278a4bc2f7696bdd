"""NETSUITE_REST_V1's configuration: which NetSuite M2M connector to call through,
how draft-order customers and SKUs map onto NetSuite records, and the sales
order's fixed header fields.

Nothing here is a credential: the key and the tokens stay with the org's NetSuite
M2M connector (``connectors.netsuite``), which this config only names.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from connectors.erp.models import ConnectorConfig

#: A NetSuite internal id (a record's ``id``): digits, no leading zero.
InternalId = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,18}$")]
#: The NetSuite M2M connector's id (``/api/v1/ipaas/connectors/{id}``).
ConnectorId = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F-]{36}$")]
#: Placeholders a memo template may use (``{external_reference}`` ...).
MEMO_FIELDS = ("external_reference", "draft_order_id", "customer_name", "currency")
MEMO_MAX = 999  # NetSuite's memo field length
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class NetSuiteRestConfig(ConnectorConfig):
    """NETSUITE_REST_V1: sales orders upserted through NetSuite's REST record service."""

    netsuite_connector_id: ConnectorId = Field(
        description="the org's NetSuite M2M connector (/api/v1/ipaas/connectors/{id}); "
        "another org's is not found")
    customer_lookup: Literal["internal_id", "external_id"] = Field(
        "internal_id", description="internal_id: the draft order's customer.id is the "
        "customer's NetSuite internal id; external_id: it is the customer's External ID")
    item_lookup: Literal["internal_id", "itemid"] = Field(
        "internal_id", description="internal_id: each SKU is the item's NetSuite internal id; "
        "itemid: each SKU is the item's Item Name/Number (itemid)")
    subsidiary_id: InternalId | None = None
    location_id: InternalId | None = None
    department_id: InternalId | None = None
    class_id: InternalId | None = None
    order_status: Literal["A", "B"] | None = Field(
        None, description="A: Pending Approval, B: Pending Fulfillment (NetSuite's default "
        "when unset)")
    custom_form_id: InternalId | None = None
    memo_template: str | None = Field(
        None, min_length=1, max_length=MEMO_MAX, pattern=r"^[^\x00-\x1F\x7F]*$",
        description="the sales order's memo; placeholders: "
        + ", ".join("{" + name + "}" for name in MEMO_FIELDS))

    @field_validator("memo_template")
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            unknown = [name for name in _PLACEHOLDER.findall(value) if name not in MEMO_FIELDS]
            if unknown:
                raise ValueError(f"unknown placeholder {{{unknown[0]}}}; known: "
                                 + ", ".join(MEMO_FIELDS))
        return value


def render_memo(template: str, values: dict[str, str]) -> str:
    """``template`` with its placeholders replaced (plain substitution: no format
    specs, no attribute access), cut to NetSuite's memo length."""
    text = _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)),
                            template)
    return text[:MEMO_MAX]
