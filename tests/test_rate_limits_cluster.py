"""Rate limits across processes and through a Redis outage.

- Two real ``issuer serve`` processes on two loopback ports, one store (the
  test's PostgreSQL, or SQLite without it) and one Redis, share one client budget.
- A Redis of the test's own is stopped mid-test: tokens are still issued (the
  in-process fallback), the fallback metric counts it, ``/readyz`` says
  degraded; with ``ISSUER_RATE_LIMIT_FAIL=closed`` the token endpoint answers 503
  ``temporarily_unavailable`` and ``/readyz`` 503.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REDIS_URL, TEST_MASTER_KEY, ServeProcess, delete_redis_keys
from tests.test_rate_limits import GRANT, _denials, running


@pytest.fixture
def two_issuers(database_url: str, tmp_path: Path) -> Iterator[list[ServeProcess]]:
    prefix = f"test:{uuid.uuid4().hex}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "ENCRYPTION_"))}
    env.update({"ISSUER_DATABASE_URL": database_url, "ISSUER_REDIS_URL": REDIS_URL,
                "ISSUER_REDIS_KEY_PREFIX": prefix, "ENCRYPTION_MASTER_KEY": TEST_MASTER_KEY.hex()})
    servers = ServeProcess.several(env, tmp_path, 2, "--workers", "1")
    for server in servers:
        server.scrape_workers(1)  # listening
    yield servers
    for server in servers:
        server.stop()
    asyncio.run(delete_redis_keys(prefix))


async def test_two_issuer_processes_share_one_client_budget(two_issuers, register):
    registered = await register(rate_limit="10/minute")
    first, second = two_issuers
    assert first.url != second.url
    async with httpx.AsyncClient() as http:
        # 10 + 6 requests, alternating between the two processes, half of them at once.
        responses = []
        for round_ in range(2):
            responses += await asyncio.gather(*[
                http.post(f"{two_issuers[n % 2].url}/token", data=GRANT, auth=registered.basic)
                for n in range(8 * round_, 8 * round_ + 8)])
    statuses = [r.status_code for r in responses]
    assert sorted(statuses) == [200] * 10 + [429] * 6
    # Both processes issued and both refused: the budget really was shared.
    by_server = {url: [r.status_code for r in responses if str(r.url).startswith(url)]
                 for url in (first.url, second.url)}
    assert all(200 in codes for codes in by_server.values())
    assert sum(codes.count(200) for codes in by_server.values()) == 10
    for response in responses:
        if response.status_code == 429:
            assert response.json() == {"error": "too_many_requests",
                                       "error_description": "Too many token requests"}
            assert 1 <= int(response.headers["retry-after"]) <= 60

    # Each process logged one JSON line per request, naming the client, never its secret.
    for server in two_issuers:
        server.stop()
    lines = [json.loads(line) for server in two_issuers for line in server.log]
    access = [line for line in lines
              if line["logger"] == "issuer.access"
              and line["path"] not in ("/metrics", "/healthz")]
    assert len(access) == 16
    assert {(line["method"], line["path"], line["client_id"]) for line in access} == {
        ("POST", "/token", registered.client_id)}
    assert sorted(line["status"] for line in access) == [200] * 10 + [429] * 6
    assert all(line["request_id"] and line["duration_ms"] >= 0 for line in access)
    everything = "\n".join(line for server in two_issuers for line in server.log)
    assert registered.client_secret not in everything
    assert "Authorization" not in everything and "authorization" not in everything


def _sample(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no sample {name}")


async def test_tokens_are_still_issued_while_redis_is_down(settings, clock, register,
                                                            redis_server, caplog):
    registered = await register(rate_limit="3/minute")
    served = replace(settings, redis_url=redis_server.url)
    async with running(served, clock) as issuer:
        http = issuer.from_address()
        assert (await http.get("/readyz")).json() == {
            "status": "ok", "checks": {"database": "ok", "signing_key": "ok", "redis": "ok"}}
        assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 200

        redis_server.stop()
        # Issued on the in-process limiter: its own budget of 3, counted from zero.
        statuses = [(await http.post("/token", data=GRANT, auth=registered.basic)).status_code
                    for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "degraded"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"].startswith("unreachable")
        metrics = (await http.get("/metrics")).text
        assert _sample(metrics, "issuer_rate_limit_fallback_total") == 4
        assert [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]

        redis_server.start()
        clock.advance(60)
        assert (await http.get("/readyz")).json()["status"] == "ok"
        assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 200
        assert _sample((await http.get("/metrics")).text,
                       "issuer_rate_limit_fallback_total") == 4  # Redis decided that one


async def test_fail_closed_refuses_tokens_while_redis_is_down(settings, clock, register,
                                                              redis_server):
    registered = await register()
    served = replace(settings, redis_url=redis_server.url, rate_limit_fail="closed")
    async with running(served, clock) as issuer:
        http = issuer.from_address()
        assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 200
        redis_server.stop()
        refused = await http.post("/token", data=GRANT, auth=registered.basic)
        assert refused.status_code == 503
        assert refused.json() == {
            "error": "temporarily_unavailable",
            "error_description": "The service is temporarily unavailable, try again later"}
        assert refused.headers["cache-control"] == "no-store"
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"


async def test_fail_closed_audits_one_denial_per_minute_while_redis_is_down(
        settings, clock, register, redis_server, engine):
    """Like a run of 429s, a run of 503s for a Redis outage is audited once per window
    (here a minute); the metric counts every one."""
    registered = await register()
    served = replace(settings, redis_url=redis_server.url, rate_limit_fail="closed")
    async with running(served, clock) as issuer:
        http = issuer.from_address()
        redis_server.stop()
        for _ in range(30):
            refused = await http.post("/token", data=GRANT, auth=registered.basic)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
        clock.advance(60)
        for _ in range(5):
            assert (await http.post("/token", data=GRANT,
                                    auth=registered.basic)).status_code == 503
        metrics = (await http.get("/metrics")).text
    denials = await _denials(engine, "rate_limit_store_unavailable")
    assert len(denials) == 2
    assert {row["client_id"] for row in denials} == {registered.client_id}
    assert _sample(metrics, "issuer_token_failures_total") == 35
