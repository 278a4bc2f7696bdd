"""RFC 8414 metadata, the RFC 7517 JWKS document, and liveness."""

from __future__ import annotations

from tests.conftest import ISSUER, store_independent

METHODS = ["client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt",
           "federated_jwt"]
# RFC 8414 §2: the JWS algorithms of private_key_jwt and client_secret_jwt assertions.
ASSERTION_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                  "ES512", "EdDSA", "HS256", "HS384"]


async def test_rfc8414_metadata_names_this_issuer_and_its_endpoints(client, register):
    await register(allowed_scopes=["orders:read", "orders:*"])
    response = await client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.json() == {
        "issuer": ISSUER,
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint": f"{ISSUER}/introspect",
        "introspection_endpoint_auth_methods_supported": METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint": f"{ISSUER}/revoke",
        "revocation_endpoint_auth_methods_supported": METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "access_token_signing_alg_values_supported": ["RS256"],
        "dpop_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
        "scopes_supported": ["orders:read"],
    }


async def test_openid_configuration_serves_the_same_document(client):
    oauth = (await client.get("/.well-known/oauth-authorization-server")).json()
    openid = (await client.get("/.well-known/openid-configuration")).json()
    assert openid == oauth


@store_independent
async def test_rfc7517_jwks_is_public_cacheable_and_has_no_private_parts(client):
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwk-set+json"
    assert response.headers["cache-control"] == "public, max-age=3600"
    keys = response.json()["keys"]
    assert len(keys) == 2  # the active key and the next one, published ahead
    assert len({key["kid"] for key in keys}) == 2
    for key in keys:
        assert {key["kty"], key["alg"], key["use"]} == {"RSA", "RS256", "sig"}
        assert key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


@store_independent
async def test_healthz_answers_ok(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
