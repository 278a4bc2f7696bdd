"""The audit log as a product: ``GET /api/v1/audit-events`` with its
filters, tenant scoping and cursor pagination; ``issuer audit export`` (JSON Lines);
retention pruning. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from issuer.audit import AuditEvent, audit_row
from issuer.clock import utc
from issuer.retention import TOKEN_RECORD_GRACE, prune
from issuer.store.models import AuditEventRow, IssuedToken
from tests.admin.conftest import Admin
from tests.conftest import issue_token
from tests.test_cli import issuer as run_issuer

GRANT = {"grant_type": "client_credentials"}
PATH = "/api/v1/audit-events"


async def _all(client, admin: Admin, **params) -> list[dict]:
    """Every page of a listing, following next_cursor."""
    items: list[dict] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(PATH, params=query, headers=admin.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def _count(engine, *where) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(
            select(func.count()).select_from(AuditEventRow).where(*where))).scalar_one()


async def test_events_come_newest_first_with_their_fields(client, platform, register, clock):
    acme = await register(tenant="acme")
    clock.advance(1)
    await client.post("/token", data=GRANT, auth=acme.basic)
    clock.advance(1)
    await client.post("/token", data=GRANT, auth=(acme.client_id, "wrong"))
    response = await client.get(PATH, params={"client_id": acme.client_id},
                                headers=platform.headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    denied, granted, created = response.json()["items"]
    assert [e["event"] for e in (denied, granted, created)] == [
        "M2M_TOKEN_DENIED", "M2M_TOKEN_GENERATED", "CLIENT_CREATED"]
    assert denied["id"] > granted["id"] > created["id"]
    assert set(granted) == {"id", "at", "event", "severity", "actor", "tenant_id", "client_id",
                            "source", "request_id", "details"}
    assert (granted["severity"], granted["actor"], granted["tenant_id"], granted["source"]) == (
        "medium", acme.client_id, acme.tenant_id, "203.0.113.7")
    assert granted["at"] == utc(clock.now() - 1).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
    assert granted["request_id"]
    assert (denied["details"]["error"], denied["details"]["reason"]) == ("invalid_client",
                                                                         "wrong_secret")


async def test_filters_by_event_severity_client_and_time(client, platform, register, clock):
    first = await register(tenant="acme")
    second = await register(tenant="acme")
    start = clock.now()
    await client.post("/token", data=GRANT, auth=first.basic)
    clock.advance(60)
    middle = clock.now()
    await client.post("/token", data=GRANT, auth=second.basic)
    clock.advance(60)
    await client.post("/token", data=GRANT, auth=(second.client_id, "wrong"))

    def iso(timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()

    granted = await _all(client, platform, event="M2M_TOKEN_GENERATED")
    assert {e["client_id"] for e in granted} >= {first.client_id, second.client_id}
    assert all(e["event"] == "M2M_TOKEN_GENERATED" for e in granted)
    by_client = await _all(client, platform, client_id=second.client_id,
                           event="M2M_TOKEN_GENERATED")
    assert [e["client_id"] for e in by_client] == [second.client_id]
    # since inclusive, until exclusive: [start, middle) holds the first grant only.
    acme = {"event": "M2M_TOKEN_GENERATED", "tenant_id": first.tenant_id}
    window = await _all(client, platform, **acme, since=iso(start), until=iso(middle))
    assert [e["client_id"] for e in window] == [first.client_id]
    later = await _all(client, platform, **acme, since=iso(middle))
    assert [e["client_id"] for e in later] == [second.client_id]
    high = await _all(client, platform, severity="high")
    assert high and all(e["severity"] == "high" for e in high)
    medium = await _all(client, platform, severity="medium", client_id=second.client_id)
    assert {e["event"] for e in medium} == {"CLIENT_CREATED", "M2M_TOKEN_GENERATED",
                                            "M2M_TOKEN_DENIED"}


async def test_a_tenant_admin_sees_its_own_tenant_only(client, platform, acme_admin, register):
    acme = await register(tenant="acme")
    globex = await register(tenant="globex")
    for registered in (acme, globex):
        await client.post("/token", data=GRANT, auth=registered.basic)
    await client.post("/token", data=GRANT, auth=("nobody", "x"))  # an event of no tenant
    seen = await _all(client, acme_admin)
    assert seen and {e["tenant_id"] for e in seen} == {acme.tenant_id}
    # Asking for another tenant changes nothing: the filter is forced to its own.
    assert await _all(client, acme_admin, tenant_id=globex.tenant_id) == seen
    assert await _all(client, acme_admin, client_id=globex.client_id) == []
    # The platform admin sees both tenants, events of no tenant too, and can filter.
    everything = await _all(client, platform)
    assert {acme.tenant_id, globex.tenant_id, None} <= {e["tenant_id"] for e in everything}
    only_globex = await _all(client, platform, tenant_id=globex.tenant_id)
    assert only_globex and {e["tenant_id"] for e in only_globex} == {globex.tenant_id}


async def test_pages_are_stable_while_events_keep_being_recorded(client, platform, engine,
                                                                 clock):
    async def record(count: int) -> None:
        async with engine.begin() as connection:
            await connection.execute(insert(AuditEventRow), [
                audit_row(AuditEvent.TENANT_UPDATED, at=clock.now(), tenant_id="t-paging",
                          details={"n": n}) for n in range(count)])

    await record(25)
    before = {"tenant_id": "t-paging", "limit": 10}
    first = await client.get(PATH, params=before, headers=platform.headers)
    page = first.json()
    seen = [e["id"] for e in page["items"]]
    while page["next_cursor"]:
        await record(3)  # newer events arrive between the pages
        response = await client.get(PATH, params={**before, "cursor": page["next_cursor"]},
                                    headers=platform.headers)
        page = response.json()
        seen += [e["id"] for e in page["items"]]
    assert len(seen) == len(set(seen)) == 25  # the 25 that existed: none twice, none missed
    assert seen == sorted(seen, reverse=True)


@pytest.mark.parametrize(("params", "field"), [
    ({"event": "NOT_AN_EVENT"}, "event"),
    ({"severity": "urgent"}, "severity"),
    ({"since": "yesterday"}, "since"),
    ({"until": "0.5"}, "until"),            # a number is not a date-time (RFC 3339)
    ({"since": "2026-12-01"}, "since"),     # nor is a date
    ({"until": "0001-01-01T00:00:00+01:00"}, "until"),  # before year 1 in UTC
    ({"client_id": ""}, "client_id"),       # an empty value is a value
    ({"limit": "0"}, "limit"),
    ({"limit": "201"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "WyJhIl0"}, "cursor"),  # ["a"]: a cursor, but not one of ours
])
async def test_bad_parameters_are_422_naming_the_field(client, platform, params, field):
    response = await client.get(PATH, params=params, headers=platform.headers)
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["details"]["errors"]] == [field]


async def test_only_admins_may_read_the_audit_log(client, register):
    worker = await register(tenant="acme", allowed_scopes=["orders:read"])
    token = await issue_token(client, worker, "orders:read")
    response = await client.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (401, 403)
    assert (await client.get(PATH)).status_code == 401


# issuer audit export -------------------------------------------------------------------


async def test_export_writes_json_lines_oldest_first(client, register, database_url, tmp_path,
                                                     engine):
    acme = await register(tenant="acme")
    globex = await register(tenant="globex")
    for registered in (acme, globex):
        await client.post("/token", data=GRANT, auth=registered.basic)
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    exported = run_issuer("audit", "export", "--since", since, database_url=database_url,
                          cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(lines) == await _count(engine)
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    assert f"exported {len(lines)} audit events" in exported.stderr

    only_acme = run_issuer("audit", "export", "--since", since, "--tenant", "acme",
                           "--event", "M2M_TOKEN_GENERATED", database_url=database_url,
                           cwd=tmp_path)
    (line,) = [json.loads(text) for text in only_acme.stdout.splitlines()]
    assert (line["client_id"], line["tenant_id"]) == (acme.client_id, acme.tenant_id)

    future = run_issuer("audit", "export", "--since", "2999-01-01", database_url=database_url,
                        cwd=tmp_path)
    assert (future.returncode, future.stdout) == (0, "")
    unknown = run_issuer("audit", "export", "--since", since, "--tenant", "nobody",
                         database_url=database_url, cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no tenant named 'nobody'" in unknown.stderr
    bad = run_issuer("audit", "export", "--since", "last tuesday", database_url=database_url,
                     cwd=tmp_path)
    assert bad.returncode == 2
    assert "not an ISO 8601 time" in bad.stderr


# Retention -------------------------------------------------------------------------------


async def test_pruning_removes_old_events_and_expired_token_records_only(client, register,
                                                                         engine, clock):
    acme = await register(tenant="acme", token_ttl=600)
    await client.post("/token", data=GRANT, auth=acme.basic)
    old_events = await _count(engine)
    clock.advance(TOKEN_RECORD_GRACE + 600 - 1)
    await client.post("/token", data=GRANT, auth=acme.basic)
    pruned = await prune(engine, clock, audit_retention_days=365)
    assert (pruned.tokens, pruned.audit_events) == (0, 0)  # the first expires a second later
    clock.advance(1)
    pruned = await prune(engine, clock, audit_retention_days=365)
    assert (pruned.tokens, pruned.audit_events) == (1, 0)
    async with engine.connect() as connection:
        assert (await connection.execute(select(func.count()).select_from(IssuedToken))
                ).scalar_one() == 1
    # A retention of one day: every event older than a day goes, the newer stay.
    pruned = await prune(engine, clock, audit_retention_days=1)
    assert pruned.audit_events == old_events
    assert await _count(engine) >= 1
    assert await _count(engine, AuditEventRow.at < utc(clock.now() - 86400)) == 0
