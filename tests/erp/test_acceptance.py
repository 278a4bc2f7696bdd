"""The spec's acceptance scenarios for ERP connectors, through HTTP, on SQLite and
PostgreSQL (each test runs once per backend).

The scenarios are derived from the ERP connector specification's user stories; mapping:

US1 configure a dropzone connection (API, POST /connectors/dropzone-json-v1)
  1.1 an org admin creates an SFTP connection: 201 ACTIVE, no config in the answer, audited
  1.2 an invalid config is 400 naming the field
  1.3 a second ACTIVE connection is 409 "Only one active connector per org"
  1.4 test_on_save and the test passes: 201 with last_test_at and test_result
  1.5 test_on_save and the test fails: 400 with the test's message, nothing saved
US2 test the connection (POST /connectors/dropzone-json-v1/test)
  2.1 the active connection passes: 200, test file written then deleted, last_test_at set
  2.2 a wrong password: 400 "Authentication failed"
  2.3 a server that never answers SSH: 400 "Connection timeout"
  2.4 a read-only export_path: 400 "Permission denied"
  2.5 a host-key mismatch and an unreachable host: 400 with their own messages
  2.6 a host that is not public and a name that does not resolve: one message
US3 push a draft order (POST /erp-exports, GET /erp-exports/{id})
  3.1 push through the active SFTP connection: SUCCESS, the file holds the order JSON
  3.2 the connector fails: FAILED with error_json, audited, no 500
  3.3 no active connection: 409 "No active connector"
  3.4 filesystem mode: the file lands in the org's folder under the dropzone root, atomically
  3.5 another org's export is 404; a draft order of another org is 400
US4 manage connections (GET, PATCH, disable, enable)
  4.1 the list shows the org's connections' metadata only
  4.2 PATCH re-encrypts (new nonce), changes updated_at, and the new config is used
  4.3 disable: pushes stop; a new connection may then be created
  4.4 enable while another is ACTIVE is 409; after disabling that one it succeeds
  4.5 another org's connection is 404 everywhere; a platform admin acts for an org by org_id
US5 security
  5.1 config_encrypted in the database holds no credential, and is bound to its row
  5.2 no response and no log line carries the password, failures included
  5.3 only admin and integrator tokens: others 403, no token 401
  5.4 a tampered config: 409 connector_blocked, logged with the request id, audited

Plus: 20 concurrent creates -> exactly one ACTIVE (the partial unique index decides).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from connectors.erp import store
from connectors.erp.tables import ErpConnectionRow, ErpExportRow
from issuer.crypto import DecryptionError, Encryptor
from issuer.store.models import AuditEventRow
from tests.conftest import TEST_MASTER_KEY, issue_token
from tests.erp.conftest import PASSWORD, USER, bearer, draft_order

CONNECTORS = "/api/v1/connectors"
DROPZONE = f"{CONNECTORS}/dropzone-json-v1"
EXPORTS = "/api/v1/erp-exports"
METADATA = {"id", "org_id", "connector_type", "status", "last_test_at", "created_at",
            "updated_at"}


@pytest.fixture
async def acme(make_org):
    return await make_org("acme")


@pytest.fixture
async def globex(make_org):
    return await make_org("globex")


@pytest.fixture(autouse=True)
def _capture_logs(caplog):
    caplog.set_level(logging.DEBUG)


async def create(client, headers, body, status=201) -> dict[str, Any]:
    response = await client.post(DROPZONE, json=body, headers=headers)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def events(engine, prefix="ERP_") -> list[tuple[str, dict[str, Any]]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(AuditEventRow.event, AuditEventRow.details)
                                        .where(AuditEventRow.event.like(f"{prefix}%"))
                                        .order_by(AuditEventRow.id))
        return [(event, details) for event, details in rows]


async def stored_connections(engine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        return [dict(row) for row in (await connection.execute(
            select(ErpConnectionRow))).mappings()]


def refusal(response, status: int, error: str, description: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert (body["error"], body["error_description"]) == (error, description)
    return body


# US1 ------------------------------------------------------------------------------------


async def test_us1_1_org_admin_creates_an_sftp_connection(client, engine, acme, sftp_server,
                                                          clock):
    body = await create(client, acme.admin, sftp_server.config())
    assert set(body) == METADATA | {"test_result"}
    assert body["org_id"] == acme.id and body["connector_type"] == "DROPZONE_JSON_V1"
    assert (body["status"], body["last_test_at"], body["test_result"]) == ("ACTIVE", None, None)
    uuid.UUID(body["id"])
    (row,) = await stored_connections(engine)
    assert (str(row["id"]), row["status"]) == (body["id"], "ACTIVE")
    assert await events(engine) == [("ERP_CONNECTION_CREATED", {
        "connection_id": body["id"], "connector_type": "DROPZONE_JSON_V1", "tested": False})]
    assert sftp_server.state.opened_for_write == []  # nothing tested without test_on_save


@pytest.mark.parametrize(("change", "field"), [
    ({"mode": "ftp"}, "mode"),
    ({"host": None}, "host"),
    ({"export_path": None}, "export_path"),
    ({"export_path": "/" + "x" * 1024}, "export_path"),
    ({"mode": "filesystem", "export_path": "../outside"}, "export_path"),
])
async def test_us1_2_an_invalid_config_is_400_naming_the_field(client, engine, acme,
                                                               sftp_server, change, field):
    config = {key: value for key, value in {**sftp_server.config(), **change}.items()
              if value is not None}
    response = await client.post(DROPZONE, json=config, headers=acme.admin)
    body = refusal(response, 400, "invalid_request", response.json()["error_description"])
    assert body["error_description"].startswith(f"Invalid connector configuration: {field}: ")
    assert [problem["field"] for problem in body["details"]["errors"]] == [field]
    assert await stored_connections(engine) == []


async def test_us1_3_a_second_active_connection_is_409(client, engine, acme, sftp_server):
    await create(client, acme.admin, sftp_server.config())
    response = await client.post(DROPZONE, json=sftp_server.config(export_path="/ack"),
                                 headers=acme.integrator)
    refusal(response, 409, "conflict", "Only one active connector per org")
    assert len(await stored_connections(engine)) == 1


async def test_us1_4_test_on_save_success_saves_with_last_test_at(client, engine, acme,
                                                                  sftp_server, clock):
    body = await create(client, acme.admin, {**sftp_server.config(), "test_on_save": True})
    assert body["last_test_at"] == body["created_at"]
    assert body["test_result"]["success"] is True and body["test_result"]["latency_ms"] > 0
    assert len(sftp_server.state.removed) == 1 and sftp_server.files() == []
    assert [event for event, _ in await events(engine)] == ["ERP_CONNECTION_TESTED",
                                                            "ERP_CONNECTION_CREATED"]


async def test_us1_5_test_on_save_failure_is_400_and_saves_nothing(client, engine, acme,
                                                                   sftp_server):
    response = await client.post(DROPZONE, json={**sftp_server.config(password="nope"),
                                                 "test_on_save": True}, headers=acme.admin)
    body = refusal(response, 400, "connection_test_failed", "Authentication failed")
    assert body["details"]["success"] is False
    assert await stored_connections(engine) == []
    ((event, details),) = await events(engine)
    assert (event, details["success"], details["error"]) == (
        "ERP_CONNECTION_TESTED", False, "Authentication failed")


# US2 ------------------------------------------------------------------------------------


async def test_us2_1_testing_the_active_connection(client, engine, acme, sftp_server, clock):
    created = await create(client, acme.admin, sftp_server.config())
    clock.advance(60)
    response = await client.post(f"{DROPZONE}/test", json={}, headers=acme.integrator)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "message", "latency_ms"}
    assert (body["success"], body["message"]) == (
        True, "Test file written and cleaned up successfully")
    (written,) = sftp_server.state.removed
    assert written.startswith("inbound/test_connection_") and sftp_server.files() == []
    listed = (await client.get(CONNECTORS, headers=acme.admin)).json()["items"]
    assert listed[0]["last_test_at"] != created["created_at"] is not None
    assert listed[0]["last_test_at"] is not None


async def test_us2_2_wrong_password_is_authentication_failed(client, acme, sftp_server):
    response = await client.post(f"{DROPZONE}/test", json=sftp_server.config(password="bad"),
                                 headers=acme.admin)
    body = refusal(response, 400, "connection_test_failed", "Authentication failed")
    assert body["details"]["message"] == "Authentication failed"


async def test_us2_3_a_silent_server_is_connection_timeout(client, acme, silent_port):
    config = {"mode": "sftp", "host": "127.0.0.1", "port": silent_port, "username": USER,
              "password": PASSWORD, "insecure_skip_host_key": True,
              "export_path": "/inbound", "timeout_seconds": 0.5}
    response = await client.post(f"{DROPZONE}/test", json=config, headers=acme.admin)
    refusal(response, 400, "connection_test_failed", "Connection timeout")


async def test_us2_4_a_read_only_export_path_is_permission_denied(client, acme, sftp_server):
    await create(client, acme.admin, sftp_server.config(export_path="/readonly"))
    response = await client.post(f"{DROPZONE}/test", json={}, headers=acme.admin)
    refusal(response, 400, "connection_test_failed", "Permission denied")
    assert sftp_server.files("readonly") == []
    listed = (await client.get(CONNECTORS, headers=acme.admin)).json()["items"]
    assert listed[0]["last_test_at"] is None  # only a passing test is recorded


async def test_us2_5_host_key_mismatch_and_unreachable_host(client, acme, sftp_server):
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    response = await client.post(f"{DROPZONE}/test", json=sftp_server.config(host_key=other),
                                 headers=acme.admin)
    refusal(response, 400, "connection_test_failed",
            "Host key verification failed: the server's host key is not host_key")
    response = await client.post(f"{DROPZONE}/test", json=sftp_server.config(
        host="unreachable.invalid"), headers=acme.admin)
    refusal(response, 400, "connection_test_failed",
            "Host unreachable: name not found or not a public address")


@pytest.mark.parametrize("host", ["10.0.0.1", "169.254.169.254", "64:ff9b::a9fe:a9fe"])
async def test_us2_6_a_private_host_and_a_missing_name_look_the_same(client, acme,
                                                                     sftp_server, caplog,
                                                                     host):
    """An org cannot map the operator's internal DNS: a name that does not resolve
    and a host that is not public get one answer, on every path that shows one; the
    operator's log tells them apart."""
    answers = []
    for candidate in ("no-such-host.invalid", host):
        config = sftp_server.config(host=candidate)
        tested = await client.post(f"{DROPZONE}/test", json=config, headers=acme.admin)
        saved = await client.post(DROPZONE, json={**config, "test_on_save": True},
                                  headers=acme.admin)
        created = await create(client, acme.admin, config)
        pushed = await push(client, acme.admin, draft_order(acme.id))
        await client.post(f"{CONNECTORS}/{created['id']}/disable", headers=acme.admin)
        answers.append([(response.status_code, without_latency(response.json()))
                        for response in (tested, saved)] + [pushed["error_json"]])
    assert answers[0] == answers[1]
    assert answers[0][0] == (400, {
        "error": "connection_test_failed",
        "error_description": "Host unreachable: name not found or not a public address",
        "details": {"success": False,
                    "message": "Host unreachable: name not found or not a public address"}})
    assert answers[0][2] == {"code": "unreachable", "message": "Host unreachable: name not "
                             "found or not a public address"}
    assert "'no-such-host.invalid' does not resolve" in caplog.text
    assert f"{host} resolves to an address that is not public" in caplog.text


def without_latency(body: dict[str, Any]) -> dict[str, Any]:
    details = {key: value for key, value in body.get("details", {}).items()
               if key != "latency_ms"}
    return {**body, "details": details}


# US3 ------------------------------------------------------------------------------------


async def push(client, headers, order, status=201, **extra: Any) -> dict[str, Any]:
    response = await client.post(EXPORTS, json={"draft_order": order.model_dump(mode="json"),
                                                **extra}, headers=headers)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_us3_1_push_through_the_active_sftp_connection(client, engine, acme,
                                                             sftp_server):
    connection = await create(client, acme.admin, sftp_server.config())
    order = draft_order(acme.id)
    body = await push(client, acme.integrator, order)
    path = body["dropzone_path"]
    assert path.startswith(f"/inbound/{order.id}_") and path.endswith(".json")
    assert body == {**body, "org_id": acme.id, "connection_id": connection["id"],
                    "connector_type": "DROPZONE_JSON_V1", "draft_order_id": str(order.id),
                    "status": "SUCCESS", "error_json": None, "storage_key": path}
    assert body["connector_metadata"]["dropzone_path"] == path
    written = (sftp_server.state.root / path.lstrip("/")).read_bytes()
    assert json.loads(written) == order.model_dump(mode="json")
    fetched = await client.get(f"{EXPORTS}/{body['id']}", headers=acme.admin)
    assert fetched.status_code == 200 and fetched.json() == body
    assert (await events(engine))[-1] == ("ERP_EXPORT_SUCCEEDED", {
        "export_id": body["id"], "connection_id": connection["id"],
        "connector_type": "DROPZONE_JSON_V1", "draft_order_id": str(order.id),
        "dropzone_path": path, "error": None})


async def test_us3_2_a_failing_connector_is_a_failed_export(client, engine, acme,
                                                            sftp_server):
    await create(client, acme.admin, sftp_server.config(export_path="/readonly"))
    body = await push(client, acme.admin, draft_order(acme.id))
    assert (body["status"], body["error_json"], body["dropzone_path"]) == (
        "FAILED", {"code": "permission_denied", "message": "Permission denied"}, None)
    async with engine.connect() as connection:
        assert (await connection.execute(select(ErpExportRow.status))).scalar_one() == "FAILED"
    assert (await events(engine))[-1][0] == "ERP_EXPORT_FAILED"


async def test_us3_3_no_active_connection_is_409(client, acme):
    response = await client.post(EXPORTS, json={
        "draft_order": draft_order(acme.id).model_dump(mode="json")}, headers=acme.admin)
    refusal(response, 409, "conflict", "No active connector")


async def test_us3_4_filesystem_push_lands_in_the_orgs_folder(client, acme, dropzone_root):
    (dropzone_root / acme.id / "orders").mkdir(parents=True)
    await create(client, acme.admin, {"mode": "filesystem", "export_path": "orders",
                                      "test_on_save": True})
    order = draft_order(acme.id)
    body = await push(client, acme.admin, order)
    (written,) = (dropzone_root / acme.id / "orders").iterdir()  # no temporary file left
    assert body["dropzone_path"] == f"orders/{written.name}"
    assert json.loads(written.read_bytes()) == order.model_dump(mode="json")


async def test_us3_5_exports_belong_to_their_org(client, acme, globex, dropzone_root):
    await create(client, acme.admin, {"mode": "filesystem", "export_path": "orders"})
    body = await push(client, acme.admin, draft_order(acme.id))
    response = await client.get(f"{EXPORTS}/{body['id']}", headers=globex.admin)
    refusal(response, 404, "not_found", "No such object")
    response = await client.get(f"{EXPORTS}/not-a-uuid", headers=acme.admin)
    assert response.status_code == 404
    response = await client.post(EXPORTS, json={
        "draft_order": draft_order(globex.id).model_dump(mode="json")}, headers=acme.admin)
    refusal(response, 400, "invalid_request", "draft_order.org_id is not the org the push "
            "is for")


# US4 ------------------------------------------------------------------------------------


async def test_us4_1_the_list_shows_metadata_only(client, acme, globex, sftp_server, clock):
    first = await create(client, acme.admin, sftp_server.config())
    await client.post(f"{CONNECTORS}/{first['id']}/disable", headers=acme.admin)
    clock.advance(1)  # the list is oldest first
    second = await create(client, acme.admin, sftp_server.config(export_path="/ack"))
    await create(client, globex.admin, sftp_server.config())
    response = await client.get(CONNECTORS, headers=acme.integrator)
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    assert [(item["id"], item["status"]) for item in body["items"]] == [
        (first["id"], "DISABLED"), (second["id"], "ACTIVE")]
    assert all(set(item) == METADATA for item in body["items"])
    assert "inbound" not in response.text and USER not in response.text
    page = (await client.get(f"{CONNECTORS}?limit=1", headers=acme.admin)).json()
    rest = (await client.get(f"{CONNECTORS}?limit=1&cursor={page['next_cursor']}",
                             headers=acme.admin)).json()
    assert [item["id"] for item in page["items"] + rest["items"]] == [first["id"],
                                                                      second["id"]]


async def test_us4_2_patch_reencrypts_and_the_new_config_is_used(client, engine, acme,
                                                                 sftp_server, clock):
    created = await create(client, acme.admin, sftp_server.config())
    (before,) = await stored_connections(engine)
    clock.advance(30)
    response = await client.patch(f"{CONNECTORS}/{created['id']}",
                                  json={"export_path": "/ack"}, headers=acme.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["updated_at"] != created["updated_at"]
    assert body["created_at"] == created["created_at"]
    (after,) = await stored_connections(engine)
    assert after["config_encrypted"][5:17] != before["config_encrypted"][5:17]  # new nonce
    config = json.loads(Encryptor(current=TEST_MASTER_KEY).decrypt(
        after["config_encrypted"], store.associated_data(after["id"])))
    assert (config["export_path"], config["password"]) == ("/ack", PASSWORD)
    pushed = await push(client, acme.admin, draft_order(acme.id))
    assert pushed["dropzone_path"].startswith("/ack/")
    assert (await events(engine))[1] == ("ERP_CONNECTION_UPDATED", {
        "connection_id": created["id"], "fields": ["export_path"]})
    response = await client.patch(f"{CONNECTORS}/{created['id']}", json={"host": None},
                                  headers=acme.admin)
    refusal(response, 400, "invalid_request",
            "Invalid connector configuration: host: Value error, required when mode is sftp")


async def test_us4_3_disable_stops_pushes_and_frees_the_slot(client, engine, acme,
                                                             sftp_server):
    created = await create(client, acme.admin, sftp_server.config())
    response = await client.post(f"{CONNECTORS}/{created['id']}/disable", headers=acme.admin)
    assert response.status_code == 200 and response.json()["status"] == "DISABLED"
    refusal(await client.post(EXPORTS, json={
        "draft_order": draft_order(acme.id).model_dump(mode="json")}, headers=acme.admin),
        409, "conflict", "No active connector")
    await create(client, acme.admin, sftp_server.config(export_path="/ack"))
    assert [event for event, _ in await events(engine)] == [
        "ERP_CONNECTION_CREATED", "ERP_CONNECTION_DISABLED", "ERP_CONNECTION_CREATED"]


async def test_us4_4_enable_while_another_is_active_is_409(client, acme, sftp_server):
    first = await create(client, acme.admin, sftp_server.config())
    await client.post(f"{CONNECTORS}/{first['id']}/disable", headers=acme.admin)
    second = await create(client, acme.admin, sftp_server.config(export_path="/ack"))
    refusal(await client.post(f"{CONNECTORS}/{first['id']}/enable", headers=acme.admin),
            409, "conflict", "Only one active connector per org")
    await client.post(f"{CONNECTORS}/{second['id']}/disable", headers=acme.admin)
    response = await client.post(f"{CONNECTORS}/{first['id']}/enable", headers=acme.admin)
    assert response.status_code == 200 and response.json()["status"] == "ACTIVE"


async def test_us4_5_other_orgs_connections_are_404_and_platform_admins_name_the_org(
        client, acme, globex, sftp_server, platform_admin):
    created = await create(client, acme.admin, sftp_server.config())
    item = f"{CONNECTORS}/{created['id']}"
    for method, path in (("GET", item), ("PATCH", item), ("POST", f"{item}/disable"),
                         ("POST", f"{item}/enable")):
        response = await client.request(method, path, json={} if method == "PATCH" else None,
                                        headers=globex.integrator)
        refusal(response, 404, "not_found", "No such object")
    refusal(await client.post(DROPZONE, json={**sftp_server.config(), "org_id": acme.id},
                              headers=globex.admin), 404, "not_found", "No such object")
    root = bearer(await issue_token(client, await platform_admin(), "admin"))
    made = await create(client, root, {**sftp_server.config(), "org_id": globex.id})
    assert made["org_id"] == globex.id
    listed = (await client.get(f"{CONNECTORS}?org_id={globex.id}", headers=root)).json()
    assert [entry["id"] for entry in listed["items"]] == [made["id"]]
    everything = (await client.get(CONNECTORS, headers=root)).json()["items"]
    assert {entry["org_id"] for entry in everything} == {acme.id, globex.id}


# US5 ------------------------------------------------------------------------------------


async def test_us5_1_the_stored_config_holds_no_credential(client, engine, acme,
                                                           sftp_server):
    created = await create(client, acme.admin, sftp_server.config())
    async with engine.connect() as connection:
        (stored,) = (await connection.execute(
            select(ErpConnectionRow.config_encrypted)
            .where(ErpConnectionRow.id == uuid.UUID(created["id"])))).scalars().all()
    assert PASSWORD.encode() not in stored and b"inbound" not in stored
    assert PASSWORD.encode("utf-16-le") not in stored and stored[:1] == b"\x01"
    box = Encryptor(current=TEST_MASTER_KEY)
    assert json.loads(box.decrypt(stored, store.associated_data(uuid.UUID(created["id"]))))[
        "password"] == PASSWORD
    with pytest.raises(DecryptionError):  # bound to its row
        box.decrypt(stored, store.associated_data(uuid.uuid4()))


async def test_us5_2_no_password_in_any_response_or_log_line(client, acme, sftp_server,
                                                             silent_port, caplog):
    answers = []
    config = sftp_server.config()
    for call in (
        client.post(DROPZONE, json={**config, "password": "x", "test_on_save": True},
                    headers=acme.admin),
        client.post(DROPZONE, json={**config, "port": 0}, headers=acme.admin),
        client.post(DROPZONE, json={**config, "test_on_save": True}, headers=acme.admin),
        client.get(CONNECTORS, headers=acme.admin),
        client.post(f"{DROPZONE}/test", json={}, headers=acme.admin),
        client.post(f"{DROPZONE}/test", json={**config, "port": silent_port,
                                              "timeout_seconds": 0.3}, headers=acme.admin),
        client.post(EXPORTS, json={"draft_order": draft_order(acme.id).model_dump(
            mode="json")}, headers=acme.admin),
    ):
        answers.append(await call)
    connection_id = answers[2].json()["id"]
    answers.append(await client.patch(f"{CONNECTORS}/{connection_id}",
                                      json={"password": PASSWORD, "port": "bad"},
                                      headers=acme.admin))
    answers.append(await client.get(f"{CONNECTORS}/{connection_id}", headers=acme.admin))
    assert [answer.status_code for answer in answers] == [400, 400, 201, 200, 200, 400, 201,
                                                          400, 200]
    for answer in answers:
        assert PASSWORD not in answer.text and "password" not in answer.text.replace(
            '"field":"password"', "")
    assert caplog.records and PASSWORD not in caplog.text


@pytest.mark.parametrize("scope", ["orders:read", None])
async def test_us5_3_only_admins_and_integrators(client, acme, sftp_server, register, scope):
    headers = acme.worker if scope else {}
    status, error = (403, "insufficient_scope") if scope else (401, "invalid_token")
    for method, path in (("POST", DROPZONE), ("GET", CONNECTORS), ("POST", f"{DROPZONE}/test"),
                         ("POST", EXPORTS), ("GET", f"{EXPORTS}/{uuid.uuid4()}")):
        response = await client.request(method, path, json=sftp_server.config()
                                        if method == "POST" else None, headers=headers)
        assert (response.status_code, response.json()["error"]) == (status, error), path
    created = await create(client, acme.integrator, sftp_server.config())
    assert created["status"] == "ACTIVE"


async def test_us5_4_a_tampered_config_blocks_the_connection(client, engine, acme,
                                                             sftp_server, caplog):
    created = await create(client, acme.admin, sftp_server.config())
    (row,) = await stored_connections(engine)
    tampered = bytearray(row["config_encrypted"])
    tampered[20] ^= 0x01
    async with engine.begin() as connection:
        await connection.execute(update(ErpConnectionRow).values(
            config_encrypted=bytes(tampered)))
    for method, path, body in (("POST", EXPORTS, {"draft_order": draft_order(
            acme.id).model_dump(mode="json")}), ("POST", f"{DROPZONE}/test", {}),
            ("PATCH", f"{CONNECTORS}/{created['id']}", {"export_path": "/ack"})):
        response = await client.request(method, path, json=body, headers={
            **acme.admin, "X-Request-ID": "req-tamper"})
        refusal(response, 409, "connector_blocked", "The connection's stored configuration "
                "failed its integrity check; the connection is blocked: disable it and "
                "configure a new one")
    assert f"ERP connection {created['id']} of org {acme.id} is blocked" in caplog.text
    assert "request_id=req-tamper" in caplog.text
    blocked = [details for event, details in await events(engine)
               if event == "ERP_CONNECTION_BLOCKED"]
    assert len(blocked) == 3 and blocked[0]["connection_id"] == created["id"]
    assert sftp_server.state.opened_for_write == []
    disabled = await client.post(f"{CONNECTORS}/{created['id']}/disable", headers=acme.admin)
    assert disabled.status_code == 200  # the way out: disable it, configure a new one
    await create(client, acme.admin, sftp_server.config())


# Concurrency ------------------------------------------------------------------------------


async def test_twenty_concurrent_creates_leave_exactly_one_active(client, engine, acme,
                                                                  dropzone_root: Path):
    async def one(number: int):
        return await client.post(DROPZONE, json={"mode": "filesystem",
                                                 "export_path": "orders",
                                                 "ack_path": f"ack-{number}"},
                                 headers=acme.admin)

    answers = await asyncio.gather(*(one(number) for number in range(20)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * 19, [answer.text for answer in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error_description"] == "Only one active connector per org"
    rows = await stored_connections(engine)
    assert [row["status"] for row in rows] == ["ACTIVE"]
