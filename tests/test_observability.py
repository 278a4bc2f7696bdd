"""Operating the issuer: Prometheus metrics at /metrics, the
health endpoints, and one structured (JSON) log line per request."""

from __future__ import annotations

import json
import logging
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

from issuer.logs import JsonFormatter
from tests.conftest import issue_token, store_independent

GRANT = {"grant_type": "client_credentials"}


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples]


def _value(text: str, name: str, **labels: str) -> float:
    return sum(value for sample, found, value in _samples(text)
               if sample == name and all(found.get(k) == v for k, v in labels.items()))


async def test_metrics_parse_and_move_when_tokens_are_issued(client, register, clock):
    acme = await register(tenant="acme", allowed_scopes=["orders:read"])
    before = await client.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain; version=")
    assert _value(before.text, "issuer_tokens_issued_total", tenant=acme.tenant_id) == 0

    token = await issue_token(client, acme)
    await issue_token(client, acme)
    await client.post("/token", data=GRANT, auth=(acme.client_id, "wrong"))
    await client.post("/token", data={**GRANT, "scope": "billing:write"}, auth=acme.basic)
    await client.post("/introspect", data={"token": token}, auth=acme.basic)
    await client.post("/introspect", data={"token": "not-a-token"}, auth=acme.basic)
    clock.advance(120)
    after = (await client.get("/metrics")).text

    assert _value(after, "issuer_tokens_issued_total", tenant=acme.tenant_id,
                  grant="client_credentials") == 2
    assert _value(after, "issuer_token_failures_total", reason="invalid_client") == 1
    assert _value(after, "issuer_token_failures_total", reason="invalid_scope") == 1
    assert _value(after, "issuer_token_request_duration_seconds_count") == 4
    assert _value(after, "issuer_introspections_total", active="true") == 1
    assert _value(after, "issuer_introspections_total", active="false") == 1
    (age,) = [value for name, _, value in _samples(after)
              if name == "issuer_active_signing_key_age_seconds"]
    (age_before,) = [value for name, _, value in _samples(before.text)
                     if name == "issuer_active_signing_key_age_seconds"]
    # The key was made by the template store's real clock, a fraction before the
    # fake clock's whole-second start: its age moved by the 120 s the clock did.
    assert 119 < age - age_before <= 120
    # No client id in any label: their number is unbounded.
    assert acme.client_id not in after


async def test_healthz_and_readyz_without_redis(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.headers["cache-control"] == "no-store"
    assert ready.json() == {"status": "ok",
                            "checks": {"database": "ok", "signing_key": "ok"}}


async def test_one_json_log_line_per_request_with_the_request_id(client, register, caplog):
    caplog.set_level(logging.INFO, logger="issuer.access")
    acme = await register(tenant="acme")
    response = await client.post("/token?debug=1", data=GRANT, auth=acme.basic,
                                 headers={"X-Request-ID": "req-42.a:b"})
    assert response.headers["x-request-id"] == "req-42.a:b"
    (record,) = [r for r in caplog.records if r.name == "issuer.access"]
    line = json.loads(JsonFormatter().format(record))
    assert {key: line[key] for key in ("level", "logger", "message", "method", "path",
                                       "status", "request_id", "source", "client_id")} == {
        "level": "info", "logger": "issuer.access", "message": "request", "method": "POST",
        "path": "/token", "status": 200, "request_id": "req-42.a:b",
        "source": "203.0.113.7", "client_id": acme.client_id}
    assert isinstance(line["duration_ms"], float)
    text = JsonFormatter().format(record)
    assert "\n" not in text and "debug=1" not in text
    assert acme.client_secret not in text and "Basic" not in text


@store_independent
async def test_a_missing_or_unsafe_request_id_is_replaced_by_a_generated_one(client, caplog):
    caplog.set_level(logging.INFO, logger="issuer.access")
    plain = await client.get("/healthz")
    unsafe = await client.get("/healthz", headers={"X-Request-ID": "evil\tid with spaces"})
    for response in (plain, unsafe):
        assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])
    assert plain.headers["x-request-id"] != unsafe.headers["x-request-id"]
    ids = [json.loads(JsonFormatter().format(r))["request_id"] for r in caplog.records
           if r.name == "issuer.access"]
    assert ids == [plain.headers["x-request-id"], unsafe.headers["x-request-id"]]


async def test_an_unknown_client_is_not_named_in_the_access_log(client, caplog):
    caplog.set_level(logging.INFO, logger="issuer.access")
    await client.post("/token", data=GRANT, auth=("someone-made-this-up", "x"))
    (record,) = [r for r in caplog.records if r.name == "issuer.access"]
    line = json.loads(JsonFormatter().format(record))
    assert (line["status"], line["client_id"]) == (401, None)


def test_json_lines_carry_exceptions_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "failed %s",
                                                   ("x",), exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed x"
    assert "ValueError: boom" in parsed["exception"]
