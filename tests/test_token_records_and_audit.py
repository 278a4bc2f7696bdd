"""Every issued token is recorded with its audit event, in one transaction; denials
are audited with their reason; no secret, hash or token ever lands in the audit
log or in the logs."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import delete, insert, select

from issuer.audit import AuditEvent, audit_row
from issuer.store.models import AuditEventRow, Client, IssuedToken, SigningKeyRow
from tests.conftest import SEEN_SECRETS, find_audit_leaks


async def _rows(engine, model, *where):
    async with engine.connect() as connection:
        return (await connection.execute(select(model).where(*where))).mappings().all()


async def test_a_grant_writes_the_token_record_and_its_audit_event(client, register, engine,
                                                                   clock):
    c = await register(allowed_scopes=["orders:read"],
                       allowed_audiences=["https://api.example.com"])
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 auth=c.basic, headers={"X-Request-ID": "req-1"})
    assert response.status_code == 200
    tokens = await _rows(engine, IssuedToken)
    assert len(tokens) == 1
    record = tokens[0]
    assert record["client_id"] == c.client_id
    assert record["tenant_id"] == c.tenant_id
    assert record["scope"] == "orders:read"
    assert record["audience"] == ["https://api.example.com"]
    assert record["issued_at"].timestamp() == clock.now()
    assert record["expires_at"].timestamp() == clock.now() + 3600
    assert record["revoked_at"] is None

    events = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_GENERATED")
    assert len(events) == 1
    event = events[0]
    assert event["severity"] == "medium"
    assert event["client_id"] == c.client_id
    assert event["tenant_id"] == c.tenant_id
    assert event["actor"] == c.client_id
    assert event["source"] == "203.0.113.7"
    assert event["request_id"] == "req-1"
    assert event["details"]["client_id"] == c.client_id
    assert event["details"]["tenant_id"] == c.tenant_id
    assert event["details"]["scopes"] == ["orders:read"]
    assert event["details"]["jti"] == record["jti"]
    assert event["details"]["expiresAt"] == record["expires_at"].isoformat()


async def test_a_failed_grant_writes_no_token_record_but_a_denial_with_reason(
        client, register, engine):
    c = await register(allowed_scopes=["orders:read"], auth_methods=["client_secret_basic"])
    post = await client.post("/token", data={"grant_type": "client_credentials",
                                             "client_id": c.client_id,
                                             "client_secret": c.client_secret})
    assert post.status_code == 401
    wrong = await client.post("/token", data={"grant_type": "client_credentials"},
                              auth=(c.client_id, "m2ms_wrong"))
    scope = await client.post("/token", data={"grant_type": "client_credentials",
                                              "scope": "admin"}, auth=c.basic)
    assert (wrong.status_code, scope.status_code) == (401, 400)
    assert await _rows(engine, IssuedToken) == []
    assert await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_GENERATED") == []
    denials = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_DENIED")
    reasons = sorted((d["details"]["error"], d["details"]["reason"]) for d in denials)
    assert reasons == [("invalid_client", "auth_method_not_allowed"),
                       ("invalid_client", "wrong_secret"), ("invalid_scope", "scope_not_allowed")]
    scope_denial = next(d for d in denials if d["details"]["error"] == "invalid_scope")
    assert scope_denial["details"]["invalidScopes"] == ["admin"]
    assert scope_denial["client_id"] == c.client_id


async def test_unknown_client_denial_names_the_claimed_id_but_no_tenant(client, engine):
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 auth=("m2m_nobody", "m2ms_guess"))
    assert response.status_code == 401
    (denial,) = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_DENIED")
    assert denial["details"]["reason"] == "unknown_client"
    assert denial["details"]["claimed_client_id"] == "m2m_nobody"
    assert denial["client_id"] is None and denial["tenant_id"] is None


async def test_concurrent_grants_each_have_exactly_one_record_and_event(client, register,
                                                                        engine):
    c = await register()
    responses = await asyncio.gather(*[
        client.post("/token", data={"grant_type": "client_credentials"}, auth=c.basic)
        for _ in range(40)])
    assert {r.status_code for r in responses} == {200}
    tokens = await _rows(engine, IssuedToken)
    events = await _rows(engine, AuditEventRow, AuditEventRow.event == "M2M_TOKEN_GENERATED")
    assert len(tokens) == len(events) == 40
    assert {t["jti"] for t in tokens} == {e["details"]["jti"] for e in events}


async def test_no_secret_hash_or_token_in_audit_log_or_logs(client, register, engine, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="aiosqlite")  # as `issuer serve` sets it
    c = await register()
    ok = await client.post("/token", data={"grant_type": "client_credentials"}, auth=c.basic)
    await client.post("/token", data={"grant_type": "client_credentials",
                                      "client_id": c.client_id,
                                      "client_secret": c.client_secret + "typo"})
    await client.post(f"/token?client_secret={c.client_secret}",
                      data={"grant_type": "client_credentials"})
    token = ok.json()["access_token"]
    (secret_hash,) = [r["secret_hash"] for r in await _rows(engine, Client)]
    keys = await _rows(engine, SigningKeyRow)
    forbidden = [c.client_secret, secret_hash, secret_hash.split("$")[1], token,
                 token.split(".")[2]]
    audit_text = repr(await _rows(engine, AuditEventRow))
    # Everything the server side logged, at every level (httpx/httpcore are the
    # test's own HTTP client, which logs the URL it was told to call).
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    log_text = "\n".join(r.getMessage() + repr(r.__dict__) for r in server_records)
    assert any(r.name == "issuer.access" for r in server_records)
    for value in forbidden:
        assert value not in audit_text
        assert value not in log_text
    for key in keys:
        assert key["private_jwk_encrypted"].hex() not in audit_text


@pytest.mark.parametrize("leak", ["m2ms_abcdefghijklmnop", "sha256$0123abcd",
                                  "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlX2J5dGVz",
                                  "-----BEGIN PRIVATE KEY-----"])
async def test_the_suite_wide_audit_secret_scan_catches_a_leak(engine, database_url, leak):
    # Every test's events are scanned after it (tests/conftest.py); this proves the
    # scan fails when an event carries something secret-shaped.
    async with engine.begin() as connection:
        await connection.execute(insert(AuditEventRow), [audit_row(
            AuditEvent.CLIENT_UPDATED, at=0, details={"note": f"oops {leak}"})])
    assert await find_audit_leaks(database_url)
    async with engine.begin() as connection:
        await connection.execute(delete(AuditEventRow))


@pytest.mark.parametrize("secret", ["Zq9-not-shaped-like-a-secret-3f1c", "short7!"])
async def test_the_audit_secret_scan_catches_any_secret_a_test_saw(engine, database_url,
                                                                   secret):
    # Secrets with no telltale shape (a NetSuite or SFTP credential, say) are caught
    # because the suite remembers every secret a test handled.
    SEEN_SECRETS.add(secret)
    async with engine.begin() as connection:
        await connection.execute(insert(AuditEventRow), [audit_row(
            AuditEvent.CLIENT_UPDATED, at=0, details={"note": f"oops {secret} here"})])
    try:
        assert await find_audit_leaks(database_url) == [f"the secret {secret[:8]}..."]
    finally:
        async with engine.begin() as connection:
            await connection.execute(delete(AuditEventRow))
        SEEN_SECRETS.discard(secret)
