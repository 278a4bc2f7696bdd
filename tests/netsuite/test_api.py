"""``/api/v1/ipaas/connectors`` and ``/{id}/m2m/...`` through HTTP: every
endpoint's status codes and exact bodies, tenant isolation, audit events, and a scan of
every response and log line for key material, assertions and tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from redis.asyncio import Redis
from sqlalchemy import select

from connectors.netsuite.cache import rotation_lock_key
from issuer.store.models import AuditEventRow
from tests.admin.test_tenants_api import bearer
from tests.conftest import Registered, issue_token, store_independent
from tests.netsuite.conftest import SUITETALK, TOKEN_URL, netsuite_app

BASE = "/api/v1/ipaas/connectors"
NOT_FOUND = {"error": "not_found", "error_description": "No such object"}
PEM_HEADERS = {"content-type": "application/x-pem-file",
               "content-disposition": 'attachment; filename="netsuite_public_cert.pem"'}
CONFIRMED = {"success": True,
             "message": "Certificate rotation complete. Remove the old certificate from NetSuite."}


def invalid_state(text: str) -> dict[str, str]:
    return {"error": "invalid_state", "error_description": text}


def invalid_field(field: str, message: str) -> dict[str, Any]:
    return {"error": "invalid_request", "error_description": "The request body is invalid",
            "details": {"errors": [{"field": field, "message": message}]}}


@dataclass
class World:
    integrator: dict[str, str]  # tenant A's integrator
    admin: dict[str, str]  # tenant A's admin
    worker: dict[str, str]  # tenant A's client without admin scopes
    other_admin: dict[str, str]  # tenant B's admin
    root: dict[str, str]  # the platform admin
    tenant_a: str
    tenant_b: str


@pytest.fixture
async def world(api, register, platform_admin) -> World:
    integrator = await register(tenant="tenant-a", allowed_scopes=["integrator"])
    admin = await register(tenant="tenant-a", allowed_scopes=["admin"])
    worker = await register(tenant="tenant-a")
    other = await register(tenant="tenant-b", allowed_scopes=["admin", "integrator"])
    root: Registered = await platform_admin()
    return World(
        integrator=bearer(await issue_token(api, integrator, "integrator")),
        admin=bearer(await issue_token(api, admin, "admin")),
        worker=bearer(await issue_token(api, worker)),
        other_admin=bearer(await issue_token(api, other, "admin")),
        root=bearer(await issue_token(api, root, "admin")),
        tenant_a=integrator.tenant_id, tenant_b=other.tenant_id)


def body(simulator, **changes: Any) -> dict[str, Any]:
    integration = simulator.add_integration()
    data = {"name": "erp sync", "account_id": "1234567_SB1",
            "client_id": integration.client_id, "scopes": ["rest_webservices", "restlets"],
            "algorithm": "ES256"}
    data.update(changes)
    return data


async def create(api, headers, simulator, **changes: Any) -> dict[str, Any]:
    response = await api.post(BASE, json=body(simulator, **changes), headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def ready(api, headers, simulator, **changes: Any) -> dict[str, Any]:
    """Created, key pair made and uploaded to the simulator, Certificate ID recorded."""
    created = await create(api, headers, simulator, **changes)
    pem = (await api.post(f"{BASE}/{created['id']}/m2m/key-pair", headers=headers)).text
    certificate_id = simulator.upload(pem, created["client_id"])
    response = await api.put(f"{BASE}/{created['id']}/m2m/certificate-id", headers=headers,
                             json={"certificate_id": certificate_id})
    assert response.status_code == 200
    recorded: dict[str, Any] = response.json()
    return recorded


async def events(engine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(AuditEventRow.event).order_by(AuditEventRow.id))
        return [event for event in rows.scalars() if event.startswith("NETSUITE")]


# Connectors ------------------------------------------------------------------------------


async def test_create_answers_201_with_the_connector_and_its_derived_urls(
        api, world, simulator, clock, engine):
    data = body(simulator)
    response = await api.post(BASE, json=data, headers=world.integrator)
    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"] == f"{BASE}/{created['id']}"
    now = created["created_at"]
    assert created == {
        "id": created["id"], "tenant_id": world.tenant_a, "name": "erp sync",
        "auth_type": "netsuite_m2m", "account_id": "1234567_SB1",
        "client_id": data["client_id"], "scopes": ["rest_webservices", "restlets"],
        "algorithm": "ES256", "token_url": TOKEN_URL, "rest_base_url": SUITETALK,
        "restlets_base_url": "https://1234567-sb1.restlets.api.netsuite.com",
        "throttle": {"requests": 20, "period_seconds": 60}, "max_concurrency": 5,
        "primary_key_id": None, "active_key_id": None, "secondary_key_id": None,
        "active_certificate_id": None, "pending_certificate_id": None,
        "certificate_expires_at": None, "rotation_in_progress": False,
        "rotation_initiated_at": None, "retiring_certificate_id": None,
        "retiring_certificate_revoke_at": None, "created_at": now, "updated_at": now}
    assert await events(engine) == ["NETSUITE_CONNECTOR_CREATED"]


async def test_the_default_algorithm_is_ps256_with_an_rsa_4096_key(api, world, simulator):
    data = body(simulator)
    del data["algorithm"]
    created = (await api.post(BASE, json=data, headers=world.admin)).json()
    assert created["algorithm"] == "PS256"
    pem = (await api.post(f"{BASE}/{created['id']}/m2m/key-pair", headers=world.admin)).text
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096


@pytest.mark.parametrize("account_id", ["1234567.evil.com", "a/b", "a@b", "a:b", "a?b", "a#b",
                                        "a b", "1234567_SB1_X", "_1", ""])
async def test_account_id_injection_is_refused_before_any_network_call(
        api, world, simulator, account_id):
    response = await api.post(BASE, json=body(simulator, account_id=account_id),
                              headers=world.integrator)
    assert response.status_code == 422
    assert response.json()["details"]["errors"][0]["field"] == "account_id"
    assert simulator.token_requests == simulator.resource_calls == 0


@pytest.mark.parametrize(("field", "url"), [
    ("token_url", "https://evil.example/services/rest/auth/oauth2/v1/token"),
    ("token_url", "https://1234567.suitetalk.api.netsuite.com.evil.example/x"),
    ("token_url", "http://1234567.suitetalk.api.netsuite.com/x"),
    ("rest_base_url", "https://user@1234567.suitetalk.api.netsuite.com"),
    ("restlets_base_url", "https://1234567.restlets.api.netsuite.com:8443"),
    ("token_url", "http://127.0.0.1:9/services/rest/auth/oauth2/v1/token"),
])
async def test_urls_must_be_netsuite_hosts_unless_allow_listed(api, world, simulator, field,
                                                               url):
    response = await api.post(BASE, json=body(simulator, **{field: url}), headers=world.admin)
    assert response.status_code == 422
    assert response.json()["details"]["errors"][0]["field"] == field


async def test_an_allow_listed_host_may_be_used(settings, clock, outbound, register, simulator):
    allowed = replace(settings, netsuite_allowed_hosts=("127.0.0.1",))
    async with netsuite_app(allowed, clock, outbound) as http:
        admin = await register(tenant="tenant-a", allowed_scopes=["admin"])
        headers = bearer(await issue_token(http, admin, "admin"))
        url = "http://127.0.0.1:9/services/rest/auth/oauth2/v1/token"
        response = await http.post(BASE, json=body(simulator, token_url=url), headers=headers)
    assert response.status_code == 201 and response.json()["token_url"] == url


@pytest.mark.parametrize(("changes", "field"), [
    ({"scopes": ["mcp", "restlets"]}, "scopes"),
    ({"scopes": ["restlets", "restlets"]}, "scopes"),
    ({"algorithm": "RS256"}, "algorithm"),
    ({"throttle": {"requests": 0, "period_seconds": 60}}, "throttle.requests"),
    ({"client_id": "has space"}, "client_id"),
    ({"extra": 1}, "extra"),
])
async def test_create_validation_names_the_field(api, world, simulator, changes, field):
    response = await api.post(BASE, json=body(simulator, **changes), headers=world.admin)
    assert response.status_code == 422
    assert response.json()["details"]["errors"][0]["field"] == field


async def test_tenant_scoping_of_create(api, world, simulator):
    other = await api.post(BASE, json=body(simulator, tenant_id=world.tenant_b),
                           headers=world.integrator)
    assert (other.status_code, other.json()) == (404, NOT_FOUND)
    by_root = await api.post(BASE, json=body(simulator, tenant_id=world.tenant_b),
                             headers=world.root)
    assert by_root.status_code == 201 and by_root.json()["tenant_id"] == world.tenant_b
    unknown = await api.post(BASE, json=body(simulator, tenant_id="no-such-tenant"),
                             headers=world.root)
    assert (unknown.status_code, unknown.json()) == (404, NOT_FOUND)


async def test_authentication_and_scope(api, world, simulator):
    assert (await api.get(BASE)).status_code == 401
    response = await api.get(BASE, headers=world.worker)
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer realm="m2m-issuer", error="insufficient_scope", scope="admin integrator"')


async def test_list_get_patch_delete(api, world, simulator, engine):
    mine = await create(api, world.integrator, simulator)
    theirs = await create(api, world.other_admin, simulator)
    listed = (await api.get(BASE, headers=world.integrator)).json()
    assert [item["id"] for item in listed["items"]] == [mine["id"]]
    assert listed["next_cursor"] is None
    everything = (await api.get(f"{BASE}?limit=1", headers=world.root)).json()
    assert len(everything["items"]) == 1 and everything["next_cursor"]
    rest = (await api.get(f"{BASE}?limit=1&cursor={everything['next_cursor']}",
                          headers=world.root)).json()
    assert {everything["items"][0]["id"], rest["items"][0]["id"]} == {mine["id"], theirs["id"]}
    foreign = await api.get(f"{BASE}?tenant_id={world.tenant_b}", headers=world.integrator)
    assert foreign.status_code == 404

    assert (await api.get(f"{BASE}/{mine['id']}", headers=world.admin)).json() == mine
    patched = await api.patch(f"{BASE}/{mine['id']}", headers=world.integrator, json={
        "name": "renamed", "scopes": ["restlets"], "throttle": {"requests": 5,
                                                                "period_seconds": 10},
        "max_concurrency": 2, "token_url": None})
    assert patched.status_code == 200
    assert {key: patched.json()[key] for key in ("name", "scopes", "throttle",
                                                 "max_concurrency", "token_url")} == {
        "name": "renamed", "scopes": ["restlets"],
        "throttle": {"requests": 5, "period_seconds": 10}, "max_concurrency": 2,
        "token_url": TOKEN_URL}
    partial = await api.patch(f"{BASE}/{mine['id']}", headers=world.admin,
                              json={"throttle": {"period_seconds": 30}})
    assert partial.json()["throttle"] == {"requests": 5, "period_seconds": 30}
    fixed = await api.patch(f"{BASE}/{mine['id']}", headers=world.admin,
                            json={"account_id": "7654321"})
    assert fixed.status_code == 422
    null = await api.patch(f"{BASE}/{mine['id']}", headers=world.admin, json={"name": None})
    assert null.status_code == 422

    for method in ("GET", "PATCH", "DELETE"):
        for target in (theirs["id"], "00000000-0000-0000-0000-000000000000", "bad%00id"):
            response = await api.request(method, f"{BASE}/{target}", headers=world.integrator,
                                         json={"name": "x"} if method == "PATCH" else None)
            assert (response.status_code, response.json()) == (404, NOT_FOUND), (method, target)
    deleted = await api.delete(f"{BASE}/{mine['id']}", headers=world.integrator)
    assert deleted.status_code == 204
    assert (await api.get(f"{BASE}/{mine['id']}", headers=world.integrator)).status_code == 404
    assert await events(engine) == ["NETSUITE_CONNECTOR_CREATED", "NETSUITE_CONNECTOR_CREATED",
                                    "NETSUITE_CONNECTOR_UPDATED", "NETSUITE_CONNECTOR_UPDATED",
                                    "NETSUITE_CONNECTOR_DELETED"]


# The m2m endpoints -------------------------------------------------------------------------


async def test_key_pair_certificate_and_certificate_id(api, world, simulator, engine, clock):
    created = await create(api, world.integrator, simulator)
    item = f"{BASE}/{created['id']}/m2m"
    assert (await api.get(f"{item}/certificate", headers=world.integrator)).json() == NOT_FOUND
    early = await api.put(f"{item}/certificate-id", headers=world.integrator,
                          json={"certificate_id": "abc"})
    assert (early.status_code, early.json()) == (422, invalid_state(
        "The connector has no key pair yet: generate one first."))

    made = await api.post(f"{item}/key-pair", headers=world.integrator)
    assert made.status_code == 200
    assert {k: made.headers[k] for k in PEM_HEADERS} == PEM_HEADERS
    certificate = x509.load_pem_x509_certificate(made.content)
    again = await api.post(f"{item}/key-pair", headers=world.integrator)
    assert (again.status_code, again.json()) == (409, {
        "error": "conflict",
        "error_description": "Key pair already exists. Use the rotation endpoint."})
    shown = await api.get(f"{item}/certificate", headers=world.admin)
    assert shown.status_code == 200 and shown.text == made.text
    assert shown.headers["content-type"] == "application/x-pem-file"

    bad = await api.put(f"{item}/certificate-id", headers=world.integrator,
                        json={"certificate_id": "no spaces allowed"})
    assert bad.status_code == 422
    certificate_id = simulator.upload(made.text, created["client_id"])
    recorded = await api.put(f"{item}/certificate-id", headers=world.integrator,
                             json={"certificate_id": certificate_id})
    assert recorded.status_code == 200
    data = recorded.json()
    assert data["active_certificate_id"] == certificate_id
    assert data["active_key_id"] == data["primary_key_id"] is not None
    assert data["certificate_expires_at"] == certificate.not_valid_after_utc.isoformat().replace(
        "+00:00", "Z")
    assert await events(engine) == ["NETSUITE_CONNECTOR_CREATED", "NETSUITE_KEY_PAIR_GENERATED",
                                    "NETSUITE_CERTIFICATE_ID_RECORDED"]


async def test_verify(api, world, simulator, engine):
    created = await create(api, world.integrator, simulator)
    item = f"{BASE}/{created['id']}/m2m"
    await api.post(f"{item}/key-pair", headers=world.integrator)
    early = await api.post(f"{item}/verify", headers=world.integrator)
    assert (early.status_code, early.json()) == (422, invalid_state(
        "No Certificate ID is recorded: upload the certificate to NetSuite and record "
        "the Certificate ID it shows."))
    certificate_id = simulator.upload(
        (await api.get(f"{item}/certificate", headers=world.integrator)).text,
        created["client_id"])
    await api.put(f"{item}/certificate-id", headers=world.integrator,
                  json={"certificate_id": certificate_id})
    verified = await api.post(f"{item}/verify", headers=world.integrator)
    assert verified.status_code == 200
    [token] = simulator.tokens
    assert verified.json() == {"success": True, "token_preview": f"Bearer {token[:20]}...",
                               "expires_in": 3600}
    again = await api.post(f"{item}/verify", headers=world.integrator)
    assert again.status_code == 200 and simulator.token_requests == 2  # the cache was busted
    simulator.integrations[created["client_id"]].blocked = True
    refused = await api.post(f"{item}/verify", headers=world.integrator)
    assert (refused.status_code, refused.json()) == (422, {
        "error": "netsuite_request_failed",
        "error_description": "NetSuite refused the token request: HTTP 401 invalid_client. "
                             "Check NetSuite's Login Audit Trail (Setup > Users/Roles > User "
                             "Management > View Login Audit Trail) for the reason."})
    assert (await events(engine)).count("NETSUITE_CONNECTION_VERIFIED") == 4
    other = await api.post(f"{item}/verify", headers=world.other_admin)
    assert (other.status_code, other.json()) == (404, NOT_FOUND)


async def test_rotation_initiate_confirm_cancel(api, world, simulator, engine):
    created = await ready(api, world.integrator, simulator)
    item = f"{BASE}/{created['id']}/m2m"
    assert (await api.post(f"{item}/rotation/confirm", headers=world.integrator,
                           json={"certificate_id": "abc"})).json() == invalid_state(
        "No rotation in progress")
    assert (await api.post(f"{item}/rotation/cancel", headers=world.integrator)).json() == \
        invalid_state("No rotation in progress")

    started = await api.post(f"{item}/rotation/initiate", headers=world.integrator)
    assert started.status_code == 200
    assert started.json() == {
        "message": "Upload this certificate to NetSuite for the same integration, entity and "
                   "role, then confirm the rotation with the Certificate ID NetSuite shows.",
        "certificate": started.json()["certificate"]}
    twice = await api.post(f"{item}/rotation/initiate", headers=world.integrator)
    assert (twice.status_code, twice.json()) == (422, invalid_state("Rotation already in progress"))
    shown = (await api.get(f"{BASE}/{created['id']}", headers=world.integrator)).json()
    assert shown["rotation_in_progress"] and shown["rotation_initiated_at"]

    cancelled = await api.post(f"{item}/rotation/cancel", headers=world.integrator)
    assert cancelled.json() == {"success": True,
                                "message": "Rotation cancelled; the pending key was discarded."}
    pem = (await api.post(f"{item}/rotation/initiate", headers=world.integrator)).json()[
        "certificate"]
    new_id = simulator.upload(pem, created["client_id"])
    missing = await api.post(f"{item}/rotation/confirm", headers=world.integrator, json={})
    assert missing.status_code == 422
    confirmed = await api.post(f"{item}/rotation/confirm", headers=world.integrator,
                               json={"certificate_id": new_id})
    assert (confirmed.status_code, confirmed.json()) == (200, CONFIRMED)
    after = (await api.get(f"{BASE}/{created['id']}", headers=world.integrator)).json()
    assert after["active_certificate_id"] == new_id and not after["rotation_in_progress"]
    assert (await api.get(f"{item}/certificate", headers=world.integrator)).text == pem
    assert (await api.post(f"{item}/verify", headers=world.integrator)).status_code == 200
    for path in ("rotation/initiate", "rotation/cancel", "key-pair"):
        foreign = await api.post(f"{item}/{path}", headers=world.other_admin)
        assert (foreign.status_code, foreign.json()) == (404, NOT_FOUND)
    assert (await events(engine))[-5:] == [
        "NETSUITE_ROTATION_INITIATED", "NETSUITE_ROTATION_CANCELLED",
        "NETSUITE_ROTATION_INITIATED", "NETSUITE_ROTATION_CONFIRMED",
        "NETSUITE_CONNECTION_VERIFIED"]


async def test_confirm_answers_503_while_another_holds_the_lock(
        settings, clock, outbound, register, simulator, redis_url):
    with_redis = replace(settings, redis_url=redis_url)
    async with netsuite_app(with_redis, clock, outbound) as http:
        admin = await register(tenant="tenant-a", allowed_scopes=["admin"])
        headers = bearer(await issue_token(http, admin, "admin"))
        created = await ready(http, headers, simulator)
        item = f"{BASE}/{created['id']}/m2m"
        await http.post(f"{item}/rotation/initiate", headers=headers)
        redis = Redis.from_url(redis_url)
        try:
            lock = redis.lock(rotation_lock_key(created["id"]), timeout=30)
            assert await lock.acquire(blocking=False)
            busy = await http.post(f"{item}/rotation/confirm", headers=headers,
                                   json={"certificate_id": "NewCertificateId"})
            await lock.release()
        finally:
            await redis.aclose()
        assert (busy.status_code, busy.json()) == (503, {
            "error": "temporarily_unavailable",
            "error_description": "The rotation is being confirmed by another request; try "
                                 "again shortly"})
        assert busy.headers["retry-after"] == "1"
        done = await http.post(f"{item}/rotation/confirm", headers=headers,
                               json={"certificate_id": "NewCertificateId"})
        assert (done.status_code, done.json()) == (200, CONFIRMED)


@store_independent
async def test_openapi_documents_every_connector_endpoint(api):
    paths = (await api.get("/openapi.json")).json()["paths"]
    m2m = "/api/v1/ipaas/connectors/{connector_id}/m2m"
    assert set(paths[BASE]) == {"get", "post"}
    assert set(paths[BASE + "/{connector_id}"]) == {"get", "patch", "delete"}
    for path in ("/key-pair", "/rotation/initiate", "/rotation/confirm", "/rotation/cancel",
                 "/verify"):
        assert "post" in paths[m2m + path]
    assert "put" in paths[m2m + "/certificate-id"]
    assert paths[m2m + "/certificate"]["get"]["responses"]["200"]["content"] == {
        "application/x-pem-file": {"schema": {"type": "string"}}}


async def test_no_response_or_log_line_carries_key_material_an_assertion_or_a_token(
        api, world, simulator, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        seen.append(response)

    api.event_hooks["response"].append(keep)
    created = await ready(api, world.integrator, simulator)
    item = f"{BASE}/{created['id']}/m2m"
    await api.post(f"{item}/verify", headers=world.integrator)
    pem = (await api.post(f"{item}/rotation/initiate", headers=world.integrator)).json()[
        "certificate"]
    await api.post(f"{item}/rotation/confirm", headers=world.integrator,
                   json={"certificate_id": simulator.upload(pem, created["client_id"])})
    await api.post(f"{item}/verify", headers=world.integrator)
    simulator.integrations[created["client_id"]].blocked = True
    await api.post(f"{item}/verify", headers=world.integrator)
    await api.get(BASE, headers=world.integrator)
    assert len(seen) >= 9 and len(simulator.tokens) == 2

    texts = [caplog.text] + [f"{response.headers}\n{response.text}" for response in seen]
    for text in texts:
        assert "PRIVATE KEY" not in text
        for token in simulator.tokens:
            assert token not in text
        # The only JWS in sight is our own admin bearer tokens in no response at all.
        assert "eyJ0eXAiOiJKV1Qi" not in text and "client_assertion" not in text
    bodies = "".join(response.text for response in seen)
    assert "BEGIN CERTIFICATE" in bodies  # the public certificate is the one exception
