"""Client secret rotation without downtime: a new secret, the previous
one valid for a grace period, then refused; the audit log tells which one was used."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.admin.test_clients_api import as_registered, create, platform, root
from tests.admin.test_tenants_api import (
    INVALID_CLIENT,
    audit_events,
    bearer,
    invalid_body,
    iso,
    token_status,
)
from tests.conftest import Registered, issue_token

__all__ = ["platform", "root"]  # fixtures shared with test_clients_api

DAY = 86400


async def rotate(http: httpx.AsyncClient, headers: dict[str, str], client_id: str,
                 body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await http.post(f"/api/v1/clients/{client_id}/secret", json=body, headers=headers)
    assert response.status_code == 200, response.text
    rotated: dict[str, Any] = response.json()
    return rotated


async def secrets_used(engine: Any, client_id: str) -> list[str]:
    """Which secret authenticated each token of ``client_id``, oldest first."""
    return [event.details["secret_used"]
            for event in await audit_events(engine, "M2M_TOKEN_GENERATED")
            if event.client_id == client_id]


async def refused(http: httpx.AsyncClient, registered: Registered) -> bool:
    response = await http.post("/token", data={"grant_type": "client_credentials"},
                               auth=registered.basic)
    return (response.status_code, response.json()) == (401, INVALID_CLIENT)


@pytest.fixture
async def old(client: httpx.AsyncClient, root: dict[str, str]) -> Registered:
    """A client that has just got a token with its first secret (so it is cached)."""
    registered = as_registered(await create(client, root))
    assert await token_status(client, registered) == 200
    return registered


def with_secret(registered: Registered, secret: str) -> Registered:
    return Registered(registered.client_id, secret, registered.tenant_id)


async def test_both_secrets_work_during_the_grace_and_the_audit_says_which(
        client, root, old, engine, clock):
    rotated = await rotate(client, root, old.client_id, {"grace_seconds": 3600})
    assert rotated["client_secret"] != old.client_secret
    assert rotated["previous_secret_expires_at"] == iso(clock.now() + 3600)
    new = with_secret(old, rotated["client_secret"])
    assert await token_status(client, new) == 200
    assert await token_status(client, old) == 200
    assert await secrets_used(engine, old.client_id) == ["current", "current", "previous"]


async def test_the_previous_secret_is_refused_once_the_grace_is_over(client, root, old, clock):
    new = with_secret(old, (await rotate(client, root, old.client_id,
                                         {"grace_seconds": 600}))["client_secret"])
    clock.advance(599)
    assert await token_status(client, old) == 200
    clock.advance(1)
    assert await refused(client, old)
    assert await token_status(client, new) == 200


async def test_the_default_grace_is_24_hours(client, root, old, clock):
    rotated = await rotate(client, root, old.client_id)
    assert rotated["previous_secret_expires_at"] == iso(clock.now() + DAY)
    clock.advance(DAY - 1)
    assert await token_status(client, old) == 200
    clock.advance(1)
    assert await refused(client, old)


async def test_ending_the_grace_early_refuses_the_previous_secret_at_once(
        client, root, old, engine):
    new = with_secret(old, (await rotate(client, root, old.client_id))["client_secret"])
    assert await token_status(client, old) == 200
    response = await client.delete(f"/api/v1/clients/{old.client_id}/secret/previous",
                                   headers=root)
    assert (response.status_code, response.content) == (204, b"")
    assert await refused(client, old)
    assert await token_status(client, new) == 200
    shown = (await client.get(f"/api/v1/clients/{old.client_id}", headers=root)).json()
    assert shown["previous_secret_expires_at"] is None
    [event] = await audit_events(engine, "CLIENT_PREVIOUS_SECRET_REVOKED")
    assert event.details == {"was_in_grace": True}


async def test_a_zero_grace_revokes_the_old_secret_at_once(client, root, old):
    rotated = await rotate(client, root, old.client_id, {"grace_seconds": 0})
    assert rotated["previous_secret_expires_at"] is None
    assert await refused(client, old)
    assert await token_status(client, with_secret(old, rotated["client_secret"])) == 200


async def test_a_second_rotation_drops_the_first_secret(client, root, old):
    second = await rotate(client, root, old.client_id)
    third = await rotate(client, root, old.client_id)
    assert await refused(client, old)
    assert await token_status(client, with_secret(old, second["client_secret"])) == 200
    assert await token_status(client, with_secret(old, third["client_secret"])) == 200


async def test_tokens_issued_before_a_rotation_stay_valid(client, root, register):
    tenant_admin = await register(tenant="acme", allowed_scopes=["admin"])
    token = await issue_token(client, tenant_admin, "admin")
    await rotate(client, root, tenant_admin.client_id, {"grace_seconds": 0})
    assert (await client.get("/api/v1/clients", headers=bearer(token))).status_code == 200


async def test_a_tenant_admin_rotates_its_tenants_clients(client, register):
    admin = await register(tenant="acme", allowed_scopes=["admin"])
    worker = await register(tenant="acme")
    headers = bearer(await issue_token(client, admin, "admin"))
    rotated = await rotate(client, headers, worker.client_id, {"grace_seconds": 0})
    assert await token_status(client, with_secret(worker, rotated["client_secret"])) == 200


async def test_rotation_is_audited_without_any_secret(client, platform, old, engine, clock):
    headers = {**bearer(await issue_token(client, platform, "admin")), "X-Request-ID": "rot-1"}
    rotated = await rotate(client, headers, old.client_id, {"grace_seconds": 60})
    [event] = await audit_events(engine, "CLIENT_SECRET_ROTATED")
    assert (event.actor, event.source, event.request_id, event.client_id) == (
        platform.client_id, "203.0.113.7", "rot-1", old.client_id)
    assert event.details == {"grace_seconds": 60, "previous_valid_until":
                             iso(clock.now() + 60).replace("Z", "+00:00")}
    stored = json.dumps(event.details)
    assert rotated["client_secret"] not in stored and old.client_secret not in stored


@pytest.mark.parametrize(("body", "errors"), [
    ({"grace_seconds": -1}, [("grace_seconds", "Input should be greater than or equal to 0")]),
    ({"grace_seconds": 2592001},
     [("grace_seconds", "Input should be less than or equal to 2592000")]),
    ({"grace_seconds": "60"}, [("grace_seconds", "Input should be a valid integer")]),
    ({"grace_seconds": True}, [("grace_seconds", "Input should be a valid integer")]),
    ({"grace": 60}, [("grace", "Extra inputs are not permitted")]),
])
async def test_a_bad_rotation_body_is_422_and_keeps_the_secret(client, root, old, body, errors):
    response = await client.post(f"/api/v1/clients/{old.client_id}/secret", json=body,
                                 headers=root)
    assert response.status_code == 422
    assert response.json() == invalid_body(*errors)
    assert await token_status(client, old) == 200
