"""The simulator's record and query services (``records.py``) answer as NetSuite does:
salesOrder upserts by external id (204 + Location, a second PUT updates the same
record), SuiteQL over the seeded customers and items with SQL's quoting rules,
NetSuite-shaped error bodies, 403 for a role without the permission, 429
CONCURRENCY_LIMIT_EXCEEDED above the concurrency limit, 401 for an expired token.
No database here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connectors.netsuite.assertion import create_assertion
from connectors.netsuite.keys import (
    CertificateSubject,
    certificate_pem,
    generate_certificate,
    generate_key_pair,
)
from connectors.netsuite.token_client import JWT_BEARER
from tests.conftest import FakeClock
from tests.netsuite.conftest import ACCOUNT, SUITETALK, TOKEN_URL
from tests.netsuite.records import PROBE
from tests.netsuite.simulator import INVALID_LOGIN, Integration, NetSuiteSimulator

ORDERS = f"{SUITETALK}/services/rest/record/v1/salesOrder"
SUITEQL = f"{SUITETALK}/services/rest/query/v1/suiteql"
TRANSIENT = {"Prefer": "transient"}


@pytest.fixture
def sim(clock: FakeClock) -> NetSuiteSimulator:
    sim = NetSuiteSimulator(ACCOUNT, clock)
    sim.records.add_customer("101", "CUST-ADA", "Ada")
    sim.records.add_customer("102", "O'Brien", "O'Brien & Co")
    sim.records.add_item("201", "SKU-1")
    sim.records.add_item("202", "SKU-2")
    sim.records.add_item("203", "O'Neil-3")
    return sim


@pytest.fixture
async def http(sim: NetSuiteSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as client:
        yield client


async def bearer(http: httpx.AsyncClient, sim: NetSuiteSimulator, clock: FakeClock,
                 integration: Integration | None = None) -> dict[str, str]:
    """A token of ``integration`` (a new one by default), as an Authorization header."""
    integration = integration or sim.add_integration()
    key = generate_key_pair("ES256")
    pem = certificate_pem(generate_certificate(key, "ES256", CertificateSubject("sim test"),
                                               datetime.fromtimestamp(clock.now(), UTC)))
    kid = sim.upload(pem, integration.client_id)
    assertion = create_assertion(key, algorithm="ES256", kid=kid,
                                 client_id=integration.client_id,
                                 scopes=["rest_webservices"], audience=TOKEN_URL,
                                 now=clock.now())
    response = await http.post(TOKEN_URL, data={
        "grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def order(entity: str = "101", *items: str, **fields: Any) -> dict[str, Any]:
    lines = [{"item": {"id": item}, "quantity": 2, "rate": 19.9} for item in items or ("201",)]
    return {"entity": {"id": entity}, "currency": {"refName": "EUR"}, "otherRefNum": "PO-1",
            "item": {"items": lines}, **fields}


def details(response: httpx.Response) -> list[dict[str, str]]:
    body: list[dict[str, str]] = response.json()["o:errorDetails"]
    return body


async def test_a_put_by_external_id_creates_then_updates_the_same_sales_order(http, sim,
                                                                            clock):
    headers = await bearer(http, sim, clock)
    first = await http.put(f"{ORDERS}/eid:order-1", json=order("101", "201"), headers=headers,
                           params={"replace": "item"})
    assert (first.status_code, first.content) == (204, b"")
    record_id = first.headers["Location"].rpartition("/")[2]
    assert first.headers["Location"] == f"{ORDERS}/{record_id}"
    second = await http.put(f"{ORDERS}/eid:order-1", json=order("101", "202"), headers=headers,
                            params={"replace": "item"})
    assert second.status_code == 204 and second.headers["Location"] == first.headers["Location"]
    (stored,) = sim.records.sales_orders.values()
    assert (stored.internal_id, stored.writes) == (record_id, 2)
    assert [line["item"] for line in stored.lines] == [{"id": "202"}]  # replaced
    await http.put(f"{ORDERS}/eid:order-1", json=order("101", "201"), headers=headers)
    assert len(stored.lines) == 2  # without replace=item NetSuite adds the lines
    other = await http.put(f"{ORDERS}/eid:order-2", json=order(), headers=headers)
    assert other.headers["Location"] != first.headers["Location"]


@pytest.mark.parametrize(("body", "code", "path"), [
    (order("999"), "INVALID_KEY_OR_REF", "entity"),
    (order("101", "201", "999"), "INVALID_KEY_OR_REF", "item.items[1].item"),
    (order(shipcarrier={"id": "1"}), "INVALID_FIELD", "shipcarrier"),
    (order(**{"class": {"id": "x"}}), "INVALID_KEY_OR_REF", "class"),
])
async def test_refusals_carry_netsuites_error_details(http, sim, clock, body, code, path):
    response = await http.put(f"{ORDERS}/eid:o", json=body, headers=await bearer(http, sim,
                                                                                  clock))
    assert response.status_code == 400
    (detail,) = details(response)
    assert (detail["o:errorCode"], detail["o:errorPath"]) == (code, path)
    assert detail["detail"] and not sim.records.sales_orders


async def test_a_disabled_feature_makes_its_field_unknown(http, sim, clock):
    sim.records.disabled_fields.add("department")
    response = await http.put(f"{ORDERS}/eid:o", json=order(department={"id": "3"}),
                              headers=await bearer(http, sim, clock))
    assert details(response)[0]["o:errorCode"] == "INVALID_FIELD"


async def test_suiteql_reads_the_seeded_records_with_sqls_quoting(http, sim, clock):
    headers = {**await bearer(http, sim, clock), **TRANSIENT}

    async def rows(query: str) -> list[dict[str, Any]]:
        response = await http.post(SUITEQL, json={"q": query}, headers=headers)
        assert response.status_code == 200, response.text
        return [{name: value for name, value in row.items() if name != "links"}
                for row in response.json()["items"]]

    assert await rows("SELECT id, itemid FROM item WHERE itemid IN ('SKU-2', 'O''Neil-3', "
                      "'nope')") == [{"id": "202", "itemid": "SKU-2"},
                                     {"id": "203", "itemid": "O'Neil-3"}]
    assert await rows("SELECT id, externalid FROM customer WHERE externalid = 'O''Brien'") \
        == [{"id": "102", "externalid": "O'Brien"}]
    assert [row["record"] for row in await rows(PROBE)] == ["customer", "item"]
    for broken in ("SELECT id FROM item WHERE itemid IN ('x' OR '1'='1')",
                   "SELECT id FROM item WHERE itemid = 'O'Neil-3'", "DELETE FROM item"):
        response = await http.post(SUITEQL, json={"q": broken}, headers=headers)
        assert (response.status_code, details(response)[0]["o:errorCode"]) == (
            400, "INVALID_PARAMETER"), broken
    assert sim.records.queries[-1] == "DELETE FROM item"


async def test_a_role_without_the_permission_gets_403(http, sim, clock):
    integration = sim.add_integration()
    integration.permissions = frozenset({"salesorder"})
    headers = {**await bearer(http, sim, clock, integration), **TRANSIENT}
    for query in (PROBE, "SELECT id, itemid FROM item WHERE itemid = 'SKU-1'"):
        response = await http.post(SUITEQL, json={"q": query}, headers=headers)
        assert (response.status_code, details(response)[0]["o:errorCode"]) == (
            403, "INSUFFICIENT_PERMISSION")
    integration.permissions = frozenset({"customer", "item"})
    response = await http.put(f"{ORDERS}/eid:o", json=order(), headers=headers)
    assert (response.status_code, details(response)[0]["o:errorCode"]) == (
        403, "INSUFFICIENT_PERMISSION")


async def test_above_the_concurrency_limit_429_concurrency_limit_exceeded(http, sim, clock):
    sim.concurrency_limit, sim.latency, sim.retry_after = 2, 0.01, "3"
    headers = await bearer(http, sim, clock)
    answers = await asyncio.gather(*(http.put(f"{ORDERS}/eid:o-{n}", json=order(),
                                              headers=headers) for n in range(4)))
    refused = [answer for answer in answers if answer.status_code == 429]
    assert len(refused) == 2 and sim.max_in_flight == 2
    assert details(refused[0])[0]["o:errorCode"] == "CONCURRENCY_LIMIT_EXCEEDED"
    assert refused[0].headers["Retry-After"] == "3"


async def test_an_expired_token_is_401(http, sim, clock):
    headers = await bearer(http, sim, clock)
    clock.advance(3600)
    response = await http.put(f"{ORDERS}/eid:o", json=order(), headers=headers)
    assert (response.status_code, response.json()) == (401, INVALID_LOGIN)
