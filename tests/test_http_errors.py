"""Every error is JSON: an unknown path, a wrong method and a trailing slash answer the
error table's body (RFC 9110 §15.5.5, §15.5.6), and no answer is built from ``Host``."""

from __future__ import annotations

import pytest

JSON_ERROR = "application/json"
NOT_FOUND = {"error": "not_found", "error_description": "No such object"}
NOT_ALLOWED = {"error": "method_not_allowed",
               "error_description": "The method is not allowed for this resource"}

# Every test here is about routing, not the store: SQLite alone.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.mark.parametrize("path", [
    "/nowhere",
    "/api/v1/tenants/a%2Fb",             # an id with an encoded slash: no such route
    "/api/v1/clients/x/secret/previous/more",
    "/.well-known/unknown",
])
async def test_s15_5_5_an_unknown_path_is_404_json(client, path):
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert response.headers["content-type"] == JSON_ERROR
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "/api/v1/tenants", "GET, HEAD, POST"),
    ("PUT", "/api/v1/clients/m2m_x", "DELETE, GET, HEAD, PATCH"),
    ("GET", "/token", "POST"),
    ("POST", "/.well-known/jwks.json", "GET, HEAD"),
    ("DELETE", "/api/v1/connectors/3f0e8c1e-8d4c-4a53-9a4e-0d7b1c2a9f10",
     "GET, HEAD, PATCH, POST"),
])
async def test_s15_5_6_a_wrong_method_is_405_json_with_every_allowed_method(
        client, method, path, allow):
    response = await client.request(method, path)
    assert response.status_code == 405
    assert response.json() == NOT_ALLOWED
    assert response.headers["allow"] == allow
    assert response.headers["content-type"] == JSON_ERROR


async def test_a_trailing_slash_is_404_and_no_url_is_built_from_the_host_header(client):
    response = await client.get("/api/v1/tenants/", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert "location" not in response.headers
    assert "evil.example" not in response.text
