"""RFC 6749 §4.4 (client credentials), §2.3 (client authentication), §5 (responses)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import store_independent

GENERIC_INVALID_CLIENT = {"error": "invalid_client",
                          "error_description": "Client authentication failed"}
FORM = "application/x-www-form-urlencoded"


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def assert_no_store(response: Any) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_s4_4_client_secret_basic_gets_a_bearer_token(client, register):
    c = await register(allowed_scopes=["orders:read"])
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 auth=c.basic)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "orders:read"
    assert response.headers["content-type"] == "application/json"
    assert_no_store(response)


async def test_s4_4_client_secret_post_gets_a_bearer_token(client, register):
    c = await register(allowed_scopes=["orders:read"])
    response = await client.post("/token", data={
        "grant_type": "client_credentials", "client_id": c.client_id,
        "client_secret": c.client_secret, "scope": "orders:read"})
    assert response.status_code == 200
    assert response.json()["scope"] == "orders:read"
    assert_no_store(response)


async def test_s4_4_3_no_refresh_token_is_issued(client, register):
    c = await register()
    body = (await client.post("/token", data={"grant_type": "client_credentials"},
                              auth=c.basic)).json()
    assert "refresh_token" not in body


async def test_s2_3_1_basic_credentials_are_form_urlencoded_first(client, register):
    c = await register()
    # A client that url-encodes its id and secret before Basic encoding (RFC 6749
    # §2.3.1) must be accepted; our ids and secrets survive encoding unchanged.
    from urllib.parse import quote_plus
    headers = _basic(quote_plus(c.client_id), quote_plus(c.client_secret))
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 headers=headers)
    assert response.status_code == 200


# §5.2 -- the error table, row by row -----------------------------------


async def test_s5_2_missing_grant_type_is_invalid_request(client, register):
    c = await register()
    response = await client.post("/token", data={"scope": "orders:read"}, auth=c.basic)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Missing 'grant_type' parameter"}
    assert_no_store(response)


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "refresh_token",
                                        "urn:ietf:params:oauth:grant-type:jwt-bearer"])
async def test_s5_2_other_grant_types_are_unsupported_grant_type(client, register, grant_type):
    c = await register()
    response = await client.post("/token", data={"grant_type": grant_type}, auth=c.basic)
    assert response.status_code == 400
    assert response.json() == {"error": "unsupported_grant_type",
                               "error_description": "The grant type is not supported by this "
                                                    "server"}
    assert_no_store(response)


async def test_s5_2_missing_client_credentials_is_invalid_request(client):
    response = await client.post("/token", data={"grant_type": "client_credentials"})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Client authentication is required"}
    assert "www-authenticate" not in response.headers
    assert_no_store(response)


async def test_s5_2_client_id_without_secret_is_invalid_request(client, register):
    c = await register()
    response = await client.post("/token", data={"grant_type": "client_credentials",
                                                 "client_id": c.client_id})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_s5_2_wrong_secret_with_basic_is_invalid_client_401_with_challenge(
        client, register):
    c = await register()
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 auth=(c.client_id, c.client_secret + "x"))
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT
    assert response.headers["www-authenticate"] == 'Basic realm="m2m-issuer", charset="UTF-8"'
    assert_no_store(response)


async def test_s5_2_wrong_secret_with_post_is_invalid_client_401_without_challenge(
        client, register):
    c = await register()
    response = await client.post("/token", data={
        "grant_type": "client_credentials", "client_id": c.client_id,
        "client_secret": "m2ms_not-the-secret"})
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT
    assert "www-authenticate" not in response.headers


async def test_s5_2_unknown_client_reads_exactly_like_a_wrong_secret(client, register):
    c = await register()
    unknown = await client.post("/token", data={"grant_type": "client_credentials"},
                                auth=("m2m_does-not-exist", c.client_secret))
    wrong = await client.post("/token", data={"grant_type": "client_credentials"},
                              auth=(c.client_id, "m2ms_wrong"))
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json() == GENERIC_INVALID_CLIENT
    assert unknown.headers["www-authenticate"] == wrong.headers["www-authenticate"]


async def test_s5_2_malformed_basic_header_is_invalid_client(client):
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": "Basic !!!not-base64"})
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT
    assert response.headers["www-authenticate"].startswith("Basic ")


async def test_s5_2_disabled_client_is_invalid_client(client, register, set_status):
    c = await register()
    await set_status(client_id=c.client_id, status="disabled")
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 auth=c.basic)
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT


async def test_s5_2_client_of_disabled_tenant_is_invalid_client(client, register, set_status):
    c = await register()
    await set_status(tenant_id=c.tenant_id, status="disabled")
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 auth=c.basic)
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT


async def test_s5_2_client_without_the_grant_type_is_unauthorized_client_403(
        client, register, set_status):
    c = await register()
    await set_status(client_id=c.client_id, grant_types=[])
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 auth=c.basic)
    assert response.status_code == 403
    assert response.json() == {"error": "unauthorized_client",
                               "error_description": "The client is not allowed to use this "
                                                    "grant type"}
    assert_no_store(response)


async def test_s5_2_scope_not_allowed_is_invalid_scope(client, register):
    c = await register(allowed_scopes=["orders:read"])
    response = await client.post("/token", data={"grant_type": "client_credentials",
                                                 "scope": "orders:read orders:delete"},
                                 auth=c.basic)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_scope",
        "error_description": "Scope not allowed for this client: orders:delete",
        "details": {"invalidScopes": ["orders:delete"]},
    }
    assert_no_store(response)


async def test_s5_2_auth_method_the_client_may_not_use_is_invalid_client(client, register):
    c = await register(auth_methods=["client_secret_post"])
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 auth=c.basic)
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT
    allowed = await client.post("/token", data={
        "grant_type": "client_credentials", "client_id": c.client_id,
        "client_secret": c.client_secret})
    assert allowed.status_code == 200


# §2.3, §3.1, §3.2 -- malformed requests -----------------------------------------------


async def test_s2_3_1_credentials_in_the_query_string_are_refused(client, register):
    c = await register()
    response = await client.post(
        f"/token?client_id={c.client_id}&client_secret={c.client_secret}",
        data={"grant_type": "client_credentials"})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Client credentials must not be sent in "
                                                    "the request URI"}


async def test_s2_3_1_secret_in_query_is_refused_even_with_valid_basic(client, register):
    c = await register()
    response = await client.post(f"/token?client_secret={c.client_secret}",
                                 data={"grant_type": "client_credentials"}, auth=c.basic)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_s2_3_two_authentication_methods_at_once_are_refused(client, register):
    c = await register()
    response = await client.post("/token", data={
        "grant_type": "client_credentials", "client_id": c.client_id,
        "client_secret": c.client_secret}, auth=c.basic)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Use exactly one client authentication "
                                                    "method"}


@pytest.mark.parametrize("second", ["the same credentials", "another client's"])
async def test_two_authorization_headers_are_invalid_request(client, register, engine, second):
    # RFC 9110 §5.3: Authorization is no list field (§11.6.2: one set of
    # credentials); which of two would count must not be left to chance.
    c = await register()
    other = await register() if second == "another client's" else c
    response = await client.post("/token", content="grant_type=client_credentials", headers=[
        ("Authorization", _basic(c.client_id, c.client_secret)["Authorization"]),
        ("Authorization", _basic(other.client_id, other.client_secret)["Authorization"]),
        ("Content-Type", FORM)])
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Send one Authorization header"}
    assert_no_store(response)
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM issued_tokens"))).scalar() == 0


@pytest.mark.parametrize("body", [
    "grant_type=client_credentials&grant_type=client_credentials",
    "grant_type=client_credentials&scope=orders:read&scope=orders:read",
    "grant_type=client_credentials&audience=a&audience=b",
])
async def test_s3_2_repeated_parameters_are_invalid_request(client, register, body):
    c = await register()
    response = await client.post("/token", content=body, auth=c.basic,
                                 headers={"Content-Type": FORM})
    assert response.status_code == 400
    error = response.json()
    assert error["error"] == "invalid_request"
    assert error["error_description"].endswith("is repeated")


async def test_s3_1_parameters_without_a_value_are_treated_as_omitted(client, register):
    c = await register(allowed_scopes=["orders:read"])
    response = await client.post("/token", content="grant_type=client_credentials&scope=",
                                 auth=c.basic, headers={"Content-Type": FORM})
    assert response.status_code == 200
    assert response.json()["scope"] == "orders:read"


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", ""])
async def test_s4_4_2_body_must_be_form_urlencoded(client, register, content_type):
    c = await register()
    response = await client.post("/token", content=b'{"grant_type":"client_credentials"}',
                                 auth=c.basic, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "The body must be "
                                                    "application/x-www-form-urlencoded"}


@store_independent
async def test_s3_2_token_endpoint_accepts_only_post(client):
    response = await client.get("/token")
    assert response.status_code == 405


async def test_oversized_body_is_refused_before_parsing(client, register):
    c = await register()
    response = await client.post("/token", content=b"grant_type=client_credentials&x=" +
                                 b"a" * (2 * 1024 * 1024), auth=c.basic,
                                 headers={"Content-Type": FORM})
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


async def test_a_streamed_body_past_the_limit_is_refused_while_it_is_read(client, register):
    # No Content-Length to refuse it by: the limit holds as the body arrives.
    c = await register()

    async def chunks() -> Any:
        yield b"grant_type=client_credentials&x="
        for _ in range(17):
            yield b"a" * (64 * 1024)

    response = await client.post("/token", content=chunks(), auth=c.basic,
                                 headers={"Content-Type": FORM})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"
    assert response.headers["x-request-id"]


async def test_s5_1_token_response_is_compact_json_in_the_rfc_order(client, register):
    c = await register(allowed_scopes=["orders:read", "orders:write"])
    response = await client.post("/token", data={"grant_type": "client_credentials",
                                                 "scope": "orders:write orders:read"},
                                 auth=c.basic)
    body = response.json()
    assert list(body) == ["access_token", "token_type", "expires_in", "scope"]
    assert response.content == json.dumps(body, separators=(",", ":")).encode()
    assert [name for name, _ in response.headers.raw][-5:] == [
        b"cache-control", b"pragma", b"content-length", b"content-type", b"x-request-id"]


async def test_ttl_override_per_client_sets_expires_in(client, register):
    c = await register(token_ttl=300)
    body = (await client.post("/token", data={"grant_type": "client_credentials"},
                              auth=c.basic)).json()
    assert body["expires_in"] == 300


async def test_every_response_carries_a_request_id(client, register):
    c = await register()
    response = await client.post("/token", data={"grant_type": "client_credentials"},
                                 auth=c.basic, headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await client.post("/token", data={"grant_type": "client_credentials"},
                                  auth=c.basic, headers={"X-Request-ID": "bad id\n"})
    assert generated.headers["x-request-id"] != "bad id\n"
    assert len(generated.headers["x-request-id"]) == 16


async def test_a_disabled_client_is_refused_once_the_short_client_cache_expires(
        client, register, set_status, clock, settings):
    c = await register()
    form = {"grant_type": "client_credentials"}
    assert (await client.post("/token", data=form, auth=c.basic)).status_code == 200
    await set_status(client_id=c.client_id, status="disabled")
    clock.advance(settings.client_cache_ttl + 1)
    response = await client.post("/token", data=form, auth=c.basic)
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT


async def test_s5_2_a_client_id_that_cannot_be_ours_is_invalid_client_not_a_store_error(client):
    # A NUL byte would make PostgreSQL refuse the query; it must read as an unknown client.
    response = await client.post("/token", data={"grant_type": "client_credentials",
                                                 "client_id": "m2m_\x00x",
                                                 "client_secret": "m2ms_guess"})
    assert response.status_code == 401
    assert response.json() == GENERIC_INVALID_CLIENT
