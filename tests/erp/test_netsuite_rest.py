"""NETSUITE_REST_V1 through HTTP, on SQLite and PostgreSQL: an org's NetSuite M2M
connector made through the issuer's own API, the ERP connection created on it (with
test_on_save), draft orders pushed and found as sales orders in the simulated account
(tests/netsuite/records.py); every failure with its message; retries bounded; the
concurrency cap held under load, within a process and across two sharing Redis;
another org's NetSuite connector refused; no token or key in any answer, log line or
audit event.

Back-off waits go through the app's injected sleep, which moves the test clock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.erp.models import Customer, DraftOrder, OrderLine
from connectors.erp.netsuite_rest import suiteql
from issuer.app import create_app
from issuer.settings import Settings
from issuer.store.models import AuditEventRow
from tests.conftest import ISSUER, SEEN_SECRETS, FakeClock, Registered, issue_token, lifespan
from tests.erp.conftest import bearer, draft_order
from tests.netsuite.conftest import ACCOUNT, SUITETALK, Sleeps
from tests.netsuite.records import PROBE
from tests.netsuite.simulator import NetSuiteSimulator

NETSUITE = "/api/v1/ipaas/connectors"
CREATE = "/api/v1/connectors/netsuite-rest-v1"
TEST = f"{CREATE}/test"
EXPORTS = "/api/v1/erp-exports"
ORDERS = f"{SUITETALK}/services/rest/record/v1/salesOrder"


@pytest.fixture(autouse=True)
def _capture_logs(caplog):
    caplog.set_level(logging.DEBUG)


@pytest.fixture
def simulator(clock: FakeClock) -> NetSuiteSimulator:
    simulator = NetSuiteSimulator(ACCOUNT, clock)
    records = simulator.records
    records.add_customer("101", "CUST-ADA", "Ada Lovelace")
    records.add_customer("102", "O'Brien", "O'Brien & Co")
    for internal_id, itemid in (("201", "SKU-1"), ("202", "SKU-2"), ("203", "O'Neil-3")):
        records.add_item(internal_id, itemid)
    return simulator


@pytest.fixture
async def outbound(simulator: NetSuiteSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator.app)) as http:
        yield http


@pytest.fixture
def sleeps(clock: FakeClock) -> Sleeps:
    return Sleeps(clock)


@pytest.fixture
def answers() -> list[str]:
    """Every answer the issuer gave in the test but its own tokens (headers and body), for
    the secrets check."""
    return []


async def start(stack: AsyncExitStack, settings: Settings, clock: FakeClock,
                outbound: httpx.AsyncClient, sleeps: Sleeps, answers: list[str]
                ) -> httpx.AsyncClient:
    """The issuer over ASGI, its NetSuite calls going to the simulator."""
    manager = await stack.enter_async_context(
        lifespan(create_app(settings, clock=clock, outbound=outbound, sleep=sleeps)))

    async def keep(response: httpx.Response) -> None:
        if response.request.url.path != "/token":  # the issuer's own tokens are no leak
            await response.aread()
            answers.append(f"{response.headers}\n{response.text}")

    return await stack.enter_async_context(httpx.AsyncClient(
        transport=httpx.ASGITransport(app=manager.app, client=("203.0.113.7", 4711)),
        base_url=ISSUER, event_hooks={"response": [keep]}))


@pytest.fixture
async def api(settings, clock, outbound, sleeps, answers) -> AsyncIterator[httpx.AsyncClient]:
    async with AsyncExitStack() as stack:
        yield await start(stack, settings, clock, outbound, sleeps, answers)


@dataclass
class Org:
    id: str
    admin: dict[str, str]
    integrator: dict[str, str]
    netsuite_id: str  # the org's NetSuite M2M connector
    certificate_id: str | None

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {"netsuite_connector_id": self.netsuite_id, **overrides}


MakeOrg = Callable[..., Awaitable[Org]]


async def new_org(api: httpx.AsyncClient, register: Callable[..., Awaitable[Registered]],
                  simulator: NetSuiteSimulator, name: str, *,
                  permissions: set[str] | None = None, max_concurrency: int = 5,
                  certificate: bool = True) -> Org:
    """An org, its admin and integrator, and its NetSuite M2M connector made through the
    API (ES256 key pair, certificate uploaded to the simulator, Certificate ID recorded --
    unless ``certificate`` is False); its role may see only ``permissions``."""
    admin = await register(tenant=name, allowed_scopes=["admin"])
    integrator = await register(tenant=name, allowed_scopes=["integrator"])
    admin_headers = bearer(await issue_token(api, admin, "admin"))
    integration = simulator.add_integration(scopes={"rest_webservices"})
    if permissions is not None:
        integration.permissions = frozenset(permissions)
    created = await api.post(NETSUITE, headers=admin_headers, json={
        "name": f"{name} erp", "account_id": ACCOUNT, "client_id": integration.client_id,
        "scopes": ["rest_webservices"], "algorithm": "ES256",
        "throttle": {"requests": 1000, "period_seconds": 60},
        "max_concurrency": max_concurrency})
    assert created.status_code == 201, created.text
    netsuite_id = created.json()["id"]
    certificate_id = None
    if certificate:
        pem = await api.post(f"{NETSUITE}/{netsuite_id}/m2m/key-pair", headers=admin_headers)
        assert pem.is_success, pem.text
        certificate_id = simulator.upload(pem.text, integration.client_id)
        recorded = await api.put(f"{NETSUITE}/{netsuite_id}/m2m/certificate-id",
                                 json={"certificate_id": certificate_id},
                                 headers=admin_headers)
        assert recorded.is_success, recorded.text
    return Org(admin.tenant_id, admin_headers,
               bearer(await issue_token(api, integrator, "integrator")), netsuite_id,
               certificate_id)


@pytest.fixture
def make_org(api: httpx.AsyncClient, register: Callable[..., Awaitable[Registered]],
             simulator: NetSuiteSimulator) -> MakeOrg:
    """``await make_org("acme", permissions=..., max_concurrency=..., certificate=...)``."""
    return functools.partial(new_org, api, register, simulator)


@pytest.fixture
async def acme(make_org: MakeOrg) -> Org:
    return await make_org("acme")


def order(org: Org, *, customer: str = "101", skus: tuple[str, ...] = ("201", "202"),
          **fields: Any) -> DraftOrder:
    lines = [OrderLine(sku=sku, qty=Decimal("2"), price=Decimal("19.90")) for sku in skus]
    return draft_order(org.id, customer=Customer(id=customer, name="Ada Lovelace"),
                       lines=lines, **fields)


async def connect(api: httpx.AsyncClient, org: Org, **config: Any) -> dict[str, Any]:
    response = await api.post(CREATE, json={**org.config(**config), "test_on_save": True},
                              headers=org.admin)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def push(api: httpx.AsyncClient, org: Org, draft: DraftOrder) -> dict[str, Any]:
    response = await api.post(EXPORTS, json={"draft_order": draft.model_dump(mode="json")},
                              headers=org.integrator)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def failed(export: dict[str, Any]) -> tuple[str, str]:
    assert export["status"] == "FAILED", export
    return export["error_json"]["code"], export["error_json"]["message"]


def refused(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "connection_test_failed"
    description: str = body["error_description"]
    return description


async def events(engine, prefix: str = "ERP_EXPORT_") -> list[tuple[str, dict[str, Any]]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(AuditEventRow.event, AuditEventRow.details)
                                        .where(AuditEventRow.event.like(f"{prefix}%"))
                                        .order_by(AuditEventRow.id))
        return [(event, details) for event, details in rows]


async def assert_no_credentials(engine, simulator: NetSuiteSimulator, answers: list[str],
                                caplog: pytest.LogCaptureFixture) -> None:
    """No NetSuite token, private key or assertion in any answer, log line or audit event
    (the store-wide audit scan after the test looks for the tokens too)."""
    tokens = list(simulator.tokens)
    assert tokens, "the test made no NetSuite call"
    SEEN_SECRETS.update(tokens)
    async with engine.connect() as connection:
        audit = "\n".join(str(row) for row in await connection.execute(
            select(AuditEventRow.event, AuditEventRow.details)))
    for place, text in (("an answer", "\n".join(answers)), ("the log", caplog.text),
                        ("the audit log", audit)):
        assert not [token for token in tokens if token in text], place
        for marker in ("PRIVATE KEY", "client_assertion", "eyJ"):
            assert marker not in text, (place, marker)


# The happy path ---------------------------------------------------------------------------


async def test_create_with_test_on_save_then_push_makes_the_sales_order(
        api, engine, acme, simulator, answers, caplog):
    created = await connect(api, acme, subsidiary_id="1", location_id="2", department_id="3",
                            class_id="4", order_status="B", custom_form_id="68",
                            memo_template="Order {external_reference} for {customer_name}")
    assert created["connector_type"] == "NETSUITE_REST_V1" and created["status"] == "ACTIVE"
    assert created["test_result"]["success"] and created["last_test_at"] is not None
    assert simulator.records.queries == [PROBE]  # the test's one read-only query

    draft = order(acme)
    export = await push(api, acme, draft)
    assert export["status"] == "SUCCESS", export
    (stored,) = simulator.records.sales_orders.values()
    assert stored.external_id == str(draft.id)
    assert export["connector_metadata"] == {
        "netsuite_record_id": stored.internal_id, "external_id": str(draft.id),
        "record_url": f"{ORDERS}/{stored.internal_id}"}
    assert (export["storage_key"], export["dropzone_path"]) == (
        f"salesOrder/{stored.internal_id}", None)
    assert stored.body == {
        "entity": {"id": "101"}, "currency": {"refName": "EUR"}, "otherRefNum": "PO-4711",
        "memo": "Order PO-4711 for Ada Lovelace", "subsidiary": {"id": "1"},
        "location": {"id": "2"}, "department": {"id": "3"}, "class": {"id": "4"},
        "orderStatus": {"id": "B"}, "customForm": {"id": "68"},
        "item": {"items": [{"item": {"id": "201"}, "quantity": 2, "rate": 19.9},
                           {"item": {"id": "202"}, "quantity": 2, "rate": 19.9}]}}
    assert simulator.records.queries == [PROBE]  # internal ids: nothing to look up
    ((event, details),) = await events(engine)
    assert event == "ERP_EXPORT_SUCCEEDED"
    assert details["netsuite_record_id"] == stored.internal_id
    assert details["connector_type"] == "NETSUITE_REST_V1"
    fetched = await api.get(f"{EXPORTS}/{export['id']}", headers=acme.admin)
    assert fetched.json() == export
    await assert_no_credentials(engine, simulator, answers, caplog)


async def test_external_id_and_itemid_lookups_take_one_query_each(api, acme, simulator):
    await connect(api, acme, customer_lookup="external_id", item_lookup="itemid")
    draft = order(acme, customer="O'Brien", skus=("SKU-1", "O'Neil-3", "SKU-1"))
    export = await push(api, acme, draft)
    assert export["status"] == "SUCCESS", export
    assert simulator.records.queries == [
        PROBE, "SELECT id, externalid FROM customer WHERE externalid = 'O''Brien'",
        "SELECT id, itemid FROM item WHERE itemid IN ('SKU-1', 'O''Neil-3')"]
    (stored,) = simulator.records.sales_orders.values()
    assert stored.body["entity"] == {"id": "102"}
    assert [line["item"]["id"] for line in stored.lines] == ["201", "203", "201"]


async def test_pushing_the_same_order_again_updates_the_one_sales_order(api, acme,
                                                                        simulator):
    await connect(api, acme)
    draft = order(acme)
    first, second = await push(api, acme, draft), await push(api, acme, draft)
    assert first["status"] == second["status"] == "SUCCESS"
    assert first["id"] != second["id"]  # two exports ...
    record_id = first["connector_metadata"]["netsuite_record_id"]
    assert second["connector_metadata"]["netsuite_record_id"] == record_id  # ... one order
    (stored,) = simulator.records.sales_orders.values()
    assert (stored.internal_id, stored.writes, len(stored.lines)) == (record_id, 2, 2)
    other = await push(api, acme, order(acme))
    assert other["connector_metadata"]["netsuite_record_id"] != record_id
    assert len(simulator.records.sales_orders) == 2


async def test_a_timed_out_push_fails_and_pushing_it_again_makes_no_duplicate(
        api, engine, acme, simulator):
    await connect(api, acme)
    draft = order(acme)
    simulator.scripted = ["timeout"]  # NetSuite stores the order, the answer never comes
    assert failed(await push(api, acme, draft)) == ("netsuite_unavailable",
                                                    "NetSuite unavailable")
    assert len(simulator.records.sales_orders) == 1
    again = await push(api, acme, draft)
    assert again["status"] == "SUCCESS"
    (stored,) = simulator.records.sales_orders.values()
    assert again["connector_metadata"]["netsuite_record_id"] == stored.internal_id
    assert [event for event, _ in await events(engine)] == ["ERP_EXPORT_FAILED",
                                                            "ERP_EXPORT_SUCCEEDED"]


# Failures, each with its message ------------------------------------------------------------


async def test_unknown_skus_and_customers_fail_the_push_naming_them(api, acme, simulator):
    await connect(api, acme, customer_lookup="external_id", item_lookup="itemid")
    hostile = "x') OR itemid IN ('SKU-2"
    code, message = failed(await push(api, acme, order(
        acme, customer="CUST-ADA", skus=("SKU-1", "NOPE", hostile))))
    assert code == "unknown_items"
    assert message == f"Unknown SKUs in NetSuite: 'NOPE', {hostile!r}"
    # The hostile SKU arrived as one quoted value: NetSuite parsed the query, found none.
    assert simulator.records.queries[-1] == suiteql.items_by_itemid(["SKU-1", "NOPE", hostile])
    assert "'x'') OR itemid IN (''SKU-2'" in simulator.records.queries[-1]
    assert failed(await push(api, acme, order(acme, customer="CUST-NONE", skus=("SKU-1",)))) \
        == ("unknown_customer", "No NetSuite customer with External ID 'CUST-NONE'")
    assert not simulator.records.sales_orders


async def test_internal_id_mode_refuses_skus_that_are_not_internal_ids(api, acme, simulator):
    await connect(api, acme)
    assert failed(await push(api, acme, order(acme, skus=("201", "SKU-1")))) == (
        "unknown_items", "SKUs that are not NetSuite internal ids: 'SKU-1'")
    assert simulator.records.queries == [PROBE] and not simulator.records.sales_orders


@pytest.mark.parametrize(("customer", "skus", "disabled", "expected"), [
    ("999", ("201",), None, "NetSuite refused the request (HTTP 400): Invalid value for the "
     "resource or sub-resource field 'entity'. Provide a valid value. "
     "[INVALID_KEY_OR_REF at entity]"),
    ("101", ("201", "999"), None, "NetSuite refused the request (HTTP 400): Invalid value for "
     "the resource or sub-resource field 'item'. Provide a valid value. "
     "[INVALID_KEY_OR_REF at item.items[1].item]"),
    ("101", ("201",), "class", "NetSuite refused the request (HTTP 400): Invalid field "
     "'class': the field does not exist on this record. [INVALID_FIELD at class]"),
], ids=["unknown-entity", "unknown-item", "bad-field"])
async def test_netsuites_error_body_is_the_failed_exports_message(
        api, engine, acme, simulator, customer, skus, disabled, expected):
    await connect(api, acme, class_id="4")
    if disabled:
        simulator.records.disabled_fields.add(disabled)
    assert failed(await push(api, acme, order(acme, customer=customer, skus=skus))) == (
        "netsuite_error", expected)
    ((event, details),) = await events(engine)
    assert (event, details["error"]["message"]) == ("ERP_EXPORT_FAILED", expected)
    assert "netsuite_record_id" not in details


async def test_a_role_without_permission_fails_test_and_push(api, make_org, simulator,
                                                             engine):
    blind = await make_org("blind", permissions=set())
    response = await api.post(CREATE, json={**blind.config(), "test_on_save": True},
                              headers=blind.admin)
    assert refused(response) == "Permission denied"
    assert (await api.get("/api/v1/connectors", headers=blind.admin)).json()["items"] == []
    readonly = await make_org("readonly", permissions={"customer", "item"})
    await connect(api, readonly)
    code, message = failed(await push(api, readonly, order(readonly)))
    assert code == "permission_denied"
    assert message.startswith("Permission denied: Permission Violation") \
        and message.endswith("[INSUFFICIENT_PERMISSION]")


async def test_a_refused_token_is_authentication_failed(api, acme, simulator):
    simulator.revoke(acme.certificate_id)
    response = await api.post(CREATE, json={**acme.config(), "test_on_save": True},
                              headers=acme.admin)
    assert refused(response) == "Authentication failed"


async def test_a_401_fetches_a_new_token_once_then_fails(api, acme, simulator, clock):
    await connect(api, acme)
    assert simulator.granted == 1
    for token in simulator.tokens.values():  # NetSuite expired it early: 401
        token.expires_at = clock.now()
    assert (await push(api, acme, order(acme)))["status"] == "SUCCESS"
    assert simulator.granted == 2
    simulator.scripted = ["401", "401"]
    assert failed(await push(api, acme, order(acme))) == ("authentication_failed",
                                                          "Authentication failed")
    assert simulator.granted == 3  # one new token, one retry, then no more


async def test_a_netsuite_connector_without_certificate_is_not_active(api, make_org):
    pending = await make_org("pending", certificate=False)
    response = await api.post(CREATE, json={**pending.config(), "test_on_save": True},
                              headers=pending.admin)
    assert refused(response) == "NetSuite connection not active"


@pytest.mark.parametrize("script", ["503", "timeout"])
async def test_netsuite_down_is_netsuite_unavailable(api, acme, simulator, script):
    await connect(api, acme)
    simulator.scripted = [script]
    assert refused(await api.post(TEST, json={}, headers=acme.integrator)) == \
        "NetSuite unavailable"
    passed = await api.post(TEST, json={}, headers=acme.integrator)
    assert passed.status_code == 200
    assert passed.json()["message"] == "Connection successful" and passed.json()["success"]


# Limits --------------------------------------------------------------------------------------


async def test_429_is_retried_after_retry_after_and_the_retries_are_bounded(
        api, acme, simulator, sleeps):
    await connect(api, acme)
    simulator.retry_after = "7"
    simulator.scripted = ["429", "429"]
    assert (await push(api, acme, order(acme)))["status"] == "SUCCESS"
    assert len(sleeps.delays) == 2 and all(delay >= 7 for delay in sleeps.delays)
    sleeps.delays.clear()
    calls = simulator.resource_calls
    simulator.scripted = ["429"] * 10
    assert failed(await push(api, acme, order(acme))) == (
        "rate_limited", "NetSuite request limit exceeded (CONCURRENCY_LIMIT_EXCEEDED); gave "
        "up after retrying")
    assert len(sleeps.delays) == 5 and simulator.resource_calls - calls == 6
    assert len(simulator.records.sales_orders) == 1


async def test_twenty_concurrent_pushes_stay_within_the_concurrency_limit(
        api, make_org, simulator):
    capped = await make_org("capped", max_concurrency=3)
    await connect(api, capped)
    simulator.concurrency_limit, simulator.latency = 3, 0.01
    exports = await asyncio.gather(*(push(api, capped, order(capped)) for _ in range(20)))
    assert [export["status"] for export in exports] == ["SUCCESS"] * 20
    assert simulator.over_limit == 0 and simulator.max_in_flight <= 3
    assert len(simulator.records.sales_orders) == 20


async def test_two_processes_sharing_redis_share_the_concurrency_limit(
        settings, clock, outbound, sleeps, answers, register, simulator, redis_url):
    """Two issuer apps (each with its own NetSuite client and in-process cap of 2) on one
    store and one Redis: together they never have more than 2 requests at NetSuite."""
    shared = replace(settings, redis_url=redis_url)
    async with AsyncExitStack() as stack:
        first = await start(stack, shared, clock, outbound, sleeps, answers)
        second = await start(stack, shared, clock, outbound, sleeps, answers)
        org = await new_org(first, register, simulator, "shared", max_concurrency=2)
        await connect(first, org)
        simulator.concurrency_limit, simulator.latency = 2, 0.01
        exports = await asyncio.gather(*(push(api, org, order(org))
                                         for api in (first, second) for _ in range(8)))
    assert [export["status"] for export in exports] == ["SUCCESS"] * 16
    assert simulator.over_limit == 0 and simulator.max_in_flight <= 2


# Orgs, roles, documentation -----------------------------------------------------------------


async def test_another_orgs_netsuite_connector_is_not_found(api, engine, acme, make_org,
                                                           simulator):
    globex = await make_org("globex")
    stolen = {**globex.config(), "netsuite_connector_id": acme.netsuite_id}
    for path, body in ((CREATE, {**stolen, "test_on_save": True}), (CREATE, stolen),
                       (TEST, stolen)):
        response = await api.post(path, json=body, headers=globex.admin)
        assert (response.status_code, response.json()["error"]) == (404, "not_found"), path
    assert (await api.get("/api/v1/connectors", headers=globex.admin)).json()["items"] == []
    assert simulator.tokens == {}  # nothing was sent to NetSuite on acme's behalf
    # A PATCH naming it is refused the same way, and the stored config stays as it was.
    created = await connect(api, globex)
    patched = await api.patch(f"/api/v1/connectors/{created['id']}",
                              json={"netsuite_connector_id": acme.netsuite_id},
                              headers=globex.admin)
    assert (patched.status_code, patched.json()["error"]) == (404, "not_found")
    assert acme.netsuite_id not in patched.text
    exported = await push(api, globex, order(globex))
    assert exported["status"] == "SUCCESS", exported  # still globex's own connector


@pytest.mark.parametrize("scope", ["orders:read"])
async def test_only_admins_and_integrators_create(api, acme, register, scope):
    worker = await register(tenant="acme", allowed_scopes=[scope])
    headers = bearer(await issue_token(api, worker, scope))
    response = await api.post(CREATE, json=acme.config(), headers=headers)
    assert response.status_code == 403
    assert (await api.post(CREATE, json=acme.config())).status_code == 401


async def test_an_invalid_config_is_400_naming_the_field(api, acme):
    response = await api.post(CREATE, json=acme.config(item_lookup="sku", memo_template="{x}"),
                              headers=acme.admin)
    assert response.status_code == 400, response.text
    fields = {problem["field"] for problem in response.json()["details"]["errors"]}
    assert fields == {"item_lookup", "memo_template"}


async def test_requests_are_counted_by_status_and_documented(api, acme, simulator):
    await connect(api, acme)
    await push(api, acme, order(acme))
    metrics = (await api.get("/metrics")).text
    assert 'issuer_netsuite_requests_total{operation="probe",status="200"} 1.0' in metrics
    assert 'issuer_netsuite_requests_total{operation="upsert",status="204"} 1.0' in metrics
    document = (await api.get("/openapi.json")).json()
    create = document["paths"][CREATE]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rpartition("/")[2]]
    assert {"netsuite_connector_id", "customer_lookup", "item_lookup", "test_on_save"} \
        <= set(schema["properties"])
    assert "post" in document["paths"][TEST]


async def test_a_credential_netsuite_echoes_back_is_cut_from_the_message(
        api, engine, acme, simulator, answers, caplog):
    await connect(api, acme)
    simulator.records.echo_authorization = True
    code, message = failed(await push(api, acme, order(acme, customer="999")))
    assert code == "netsuite_error" and "[redacted]" in message
    await assert_no_credentials(engine, simulator, answers, caplog)


def test_suiteql_literals_are_quoted_and_control_characters_refused():
    assert suiteql.literal("O'Brien") == "'O''Brien'"
    assert suiteql.in_list(["a", "b'", "a"]) == "('a', 'b''')"
    for bad in ("a\x00b", "line\nbreak", "x" * 301):
        with pytest.raises(suiteql.UnsafeValue):
            suiteql.literal(bad)
    assert suiteql.is_internal_id("42") and not suiteql.is_internal_id("042 OR 1=1")
