"""What an admin change does to tokens already issued, through HTTP: disabling a client
or tenant is a kill switch (its earlier tokens stay inactive after a re-enable, at the
admin API and in the token listing), and an admin token is only as strong as its
client's current record."""

from __future__ import annotations

import base64
import json

import pytest

from tests.admin.conftest import Admin
from tests.conftest import issue_token

CLIENTS = "/api/v1/clients"
INVALID_TOKEN = {"error": "invalid_token",
                 "error_description": "The access token is missing, expired, revoked or not "
                                      "for this API"}
INSUFFICIENT_SCOPE = {"error": "insufficient_scope",
                      "error_description": "The access token does not grant this operation"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def set_status(client, platform: Admin, path: str, *statuses: str) -> None:
    for status in statuses:
        changed = await client.patch(path, json={"status": status}, headers=platform.headers)
        assert (changed.status_code, changed.json()["status"]) == (200, status)


async def test_an_admin_token_is_refused_at_once_when_its_client_loses_the_admin_scope(
        client, platform, register):
    tenant_admin = await register(tenant="acme", allowed_scopes=["admin", "orders:read"])
    token = await issue_token(client, tenant_admin, "admin")
    assert (await client.get(CLIENTS, headers=bearer(token))).status_code == 200

    demoted = await client.patch(f"{CLIENTS}/{tenant_admin.client_id}",
                                 json={"allowed_scopes": ["orders:read"]}, headers=platform.headers)
    assert demoted.status_code == 200
    refused = await client.get(CLIENTS, headers=bearer(token))
    assert (refused.status_code, refused.json()) == (403, INSUFFICIENT_SCOPE)
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="m2m-issuer", error="insufficient_scope", scope="admin"')
    # Nor can it act through the other admin routes it reached before.
    minted = await client.post("/auth/m2m/token", headers=bearer(token), json={
        "clientId": tenant_admin.client_id, "tenantId": tenant_admin.tenant_id})
    assert (minted.status_code, minted.json()) == (403, INSUFFICIENT_SCOPE)
    # Not a kill switch: given back the scope, the token works again (disabling kills).
    restored = await client.patch(f"{CLIENTS}/{tenant_admin.client_id}",
                                  json={"allowed_scopes": ["admin", "orders:read"]},
                                  headers=platform.headers)
    assert restored.status_code == 200
    assert (await client.get(CLIENTS, headers=bearer(token))).status_code == 200


@pytest.mark.parametrize("target", ["client", "tenant"])
async def test_an_admin_token_issued_before_a_disable_stays_refused_after_the_re_enable(
        client, platform, register, clock, target):
    tenant_admin = await register(tenant="acme", allowed_scopes=["admin"])
    token = await issue_token(client, tenant_admin, "admin")
    path = (f"{CLIENTS}/{tenant_admin.client_id}" if target == "client"
            else f"/api/v1/tenants/{tenant_admin.tenant_id}")
    await set_status(client, platform, path, "disabled")
    disabled = await client.get(CLIENTS, headers=bearer(token))
    assert (disabled.status_code, disabled.json()) == (401, INVALID_TOKEN)

    await set_status(client, platform, path, "active")
    still = await client.get(CLIENTS, headers=bearer(token))
    assert (still.status_code, still.json()) == (401, INVALID_TOKEN)
    clock.advance(1)  # past the disable's second (tokens carry whole-second iat)
    fresh = await issue_token(client, tenant_admin, "admin")
    assert (await client.get(CLIENTS, headers=bearer(fresh))).status_code == 200


@pytest.mark.parametrize("target", ["client", "tenant"])
async def test_the_token_listing_shows_tokens_from_before_a_disable_as_inactive(
        client, platform, register, clock, target):
    owner = await register(tenant="acme")
    old = await issue_token(client, owner)
    path = (f"{CLIENTS}/{owner.client_id}" if target == "client"
            else f"/api/v1/tenants/{owner.tenant_id}")
    await set_status(client, platform, path, "disabled", "active")
    clock.advance(1)
    new = await issue_token(client, owner)

    async def listed(**params: str) -> dict[str, bool]:
        response = await client.get("/auth/m2m/tokens", headers=platform.headers,
                                    params={"clientId": owner.client_id, **params})
        assert response.status_code == 200
        return {item["jti"]: item["active"] for item in response.json()["items"]}

    old_jti, new_jti = jti(old), jti(new)
    assert await listed() == {new_jti: True, old_jti: False}
    assert await listed(active="true") == {new_jti: True}
    assert await listed(active="false") == {old_jti: False}


def jti(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["jti"])
