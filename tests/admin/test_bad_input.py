"""Bad input is a 4xx, never a 500: bodies nested too deep on every JSON endpoint, a
cursor beyond 64 bits, one client changed by many requests at once. (The ASGI transport
re-raises any exception the app lets out, so these tests also prove none escapes.)"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from typing import Any

import pytest

from issuer.admin.http import MAX_DEPTH, encode_cursor
from tests.admin.test_tenants_api import invalid_body

DEEP = 5000
#: Values for the path parameters of the documented operations (none need exist: the
#: body is read before the object is looked up).
PATH_VALUES = {"connection_id": str(uuid.uuid4()), "connector": "dropzone-json-v1"}
#: For what is refused before the store is reached.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def json_operations(client) -> list[tuple[str, str]]:
    """Every documented operation that takes a JSON body, path parameters filled in."""
    document = (await client.get("/openapi.json")).json()
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                filled = re.sub(r"{(\w+)}", lambda m: PATH_VALUES.get(m.group(1), "x1"), path)
                found.append((method.upper(), filled))
    return found


@sqlite_only
@pytest.mark.parametrize("nested", [
    "[" * DEEP + "]" * DEEP,
    '{"name":' + '{"a":' * DEEP + "1" + "}" * DEEP + "}",
])
async def test_a_body_nested_thousands_deep_is_422_on_every_json_endpoint(
        client, platform, nested):
    operations = await json_operations(client)
    assert len(operations) >= 17  # admin, ERP and NetSuite bodies alike
    for method, path in operations:
        response = await client.request(method, path, content=nested,
                                        headers={**platform.headers,
                                                 "Content-Type": "application/json"})
        assert (method, path, response.status_code, response.json()) == (
            method, path, 422, invalid_body(("", f"nested more than {MAX_DEPTH} levels deep")))


@sqlite_only
async def test_brackets_inside_strings_do_not_count_as_nesting(client, platform):
    name = "[" * 100 + "{" * 99
    response = await client.post("/api/v1/tenants", json={"name": name},
                                 headers=platform.headers)
    assert response.status_code == 201
    assert response.json()["name"] == name


@sqlite_only
@pytest.mark.parametrize(("content", "message"), [
    ("", "a JSON body is required"),
    ("   ", "a JSON body is required"),
    ('{"name": NaN}', "the body is not JSON"),
    ('{"name": -Infinity}', "the body is not JSON"),
    ('{"name": 1e400}', "the body is not JSON"),
])
async def test_an_empty_or_non_json_body_is_422(client, platform, content, message):
    response = await client.post("/api/v1/tenants", content=content,
                                 headers=platform.headers)
    assert response.status_code == 422
    assert response.json() == invalid_body(("", message))


@pytest.mark.parametrize("position", [2**64, 2**63, -1, 10**400 // 10**300])
async def test_an_audit_cursor_beyond_64_bits_is_422(client, platform, position):
    response = await client.get("/api/v1/audit-events",
                                params={"cursor": encode_cursor(position)},
                                headers=platform.headers)
    assert response.status_code == 422
    assert response.json() == invalid_body(("cursor", "malformed"))


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_a_page_cursor_outside_the_databases_years_is_422(client, platform, at):
    response = await client.get("/api/v1/clients", params={"cursor": encode_cursor(at, "m2m_x")},
                                headers=platform.headers)
    assert response.status_code == 422
    assert response.json() == invalid_body(("cursor", "malformed"))


async def test_one_client_changed_by_60_requests_at_once_gets_no_5xx(client, platform):
    """PATCH, secret rotation and DELETE of one client, all at once: each answers as if
    alone (200/204), or 404 (already deleted) or 409 (changed under it; try again)."""
    created = await client.post("/api/v1/clients", headers=platform.headers, json={
        "name": "contended", "allowed_scopes": ["orders:read"]})
    item = f"/api/v1/clients/{created.json()['client_id']}"

    def request(number: int) -> Any:
        kind = number % 3
        if kind == 0:
            return client.patch(item, json={"name": f"name {number}"}, headers=platform.headers)
        if kind == 1:
            return client.post(f"{item}/secret", json={"grace_seconds": 0},
                               headers=platform.headers)
        return client.delete(item, headers=platform.headers)

    responses = await asyncio.gather(*(request(number) for number in range(60)))
    outcomes = Counter((response.request.method, response.status_code)
                       for response in responses)
    assert set(outcomes) <= {("PATCH", 200), ("PATCH", 404), ("PATCH", 409),
                             ("POST", 200), ("POST", 404), ("POST", 409),
                             ("DELETE", 204), ("DELETE", 404), ("DELETE", 409)}, outcomes
    assert outcomes[("DELETE", 204)] == 1
    for response in responses:
        if response.status_code == 409:
            assert response.json() == {
                "error": "conflict", "error_description": "the object was changed by another "
                "request at the same time; try again"}
    assert (await client.get(item, headers=platform.headers)).status_code == 404
