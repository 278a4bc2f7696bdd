"""The server answers as /openapi.json says, for what a schema-driven run found it did
not: an integer written ``1443.0``, a PATCH without a body, the JWK Set's media type,
a documented 409 on secret rotation, NetSuite's failures as the error body."""

from __future__ import annotations

from joserfc.jwk import RSAKey

from tests.admin.test_tenants_api import invalid_body, iso


async def operation(client, method: str, path: str) -> dict:
    document = (await client.get("/openapi.json")).json()
    found: dict = document["paths"][path][method.lower()]
    return found


async def test_an_integer_written_with_a_zero_fraction_is_an_integer(client, platform, clock):
    """JSON Schema: an integer is "a number with a zero fractional part"."""
    created = (await client.post("/api/v1/clients", headers=platform.headers, json={
        "name": "orders", "allowed_scopes": ["orders:read"]})).json()
    rotated = await client.post(f"/api/v1/clients/{created['client_id']}/secret",
                                content=b'{"grace_seconds": 1443.0}', headers=platform.headers)
    assert rotated.status_code == 200
    assert rotated.json()["previous_secret_expires_at"] == iso(clock.now() + 1443)
    half = await client.post(f"/api/v1/clients/{created['client_id']}/secret",
                             content=b'{"grace_seconds": 1443.5}', headers=platform.headers)
    assert (half.status_code, half.json()) == (422, invalid_body(
        ("grace_seconds", "Input should be a valid integer")))


async def test_a_patch_without_a_body_is_422_as_the_body_is_required(client, platform):
    created = (await client.post("/api/v1/clients", headers=platform.headers, json={
        "name": "orders", "allowed_scopes": ["orders:read"]})).json()
    response = await client.patch(f"/api/v1/clients/{created['client_id']}",
                                  headers=platform.headers)
    assert (response.status_code, response.json()) == (422, invalid_body(
        ("", "a JSON body is required")))
    documented = await operation(client, "PATCH", "/api/v1/clients/{client_id}")
    assert documented["requestBody"]["required"] is True
    # A rotation may leave its body out (the default grace), and the document says so.
    rotated = await client.post(f"/api/v1/clients/{created['client_id']}/secret",
                                headers=platform.headers)
    assert rotated.status_code == 200
    documented = await operation(client, "POST", "/api/v1/clients/{client_id}/secret")
    assert documented["requestBody"]["required"] is False


async def test_the_jwk_set_is_documented_with_the_media_type_it_is_served_with(client):
    served = await client.get("/.well-known/jwks.json")
    documented = await operation(client, "GET", "/.well-known/jwks.json")
    assert list(documented["responses"]["200"]["content"]) == [
        served.headers["content-type"]] == ["application/jwk-set+json"]


async def test_rotating_the_secret_of_a_client_without_one_is_a_documented_409(
        client, platform):
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    created = await client.post("/api/v1/clients", headers=platform.headers, json={
        "name": "signer", "allowed_scopes": ["orders:read"],
        "token_endpoint_auth_methods": ["private_key_jwt"],
        "jwks": {"keys": [key.as_dict(private=False)]}})
    assert created.status_code == 201
    response = await client.post(f"/api/v1/clients/{created.json()['client_id']}/secret",
                                 json={}, headers=platform.headers)
    assert (response.status_code, response.json()) == (409, {
        "error": "conflict", "error_description": "this client authenticates with "
        "private_key_jwt only: it has no secret to rotate"})
    documented = await operation(client, "POST", "/api/v1/clients/{client_id}/secret")
    assert documented["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}


async def test_netsuite_failures_are_documented_as_the_error_body(client):
    for path in ("/api/v1/ipaas/connectors/{connector_id}/m2m/verify",
                 "/api/v1/ipaas/connectors/{connector_id}/m2m/rotation/auto"):
        documented = await operation(client, "POST", path)
        assert documented["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"}
