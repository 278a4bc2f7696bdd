"""RFC 8414 authorization server metadata (also served as openid-configuration)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from issuer.oauth.dpop import DPOP_ALGORITHMS
from issuer.oauth.rfc7523 import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS
from issuer.registration import AUTH_METHODS
from issuer.services import services_of
from issuer.settings import Settings

#: RFC 8414 §2 *_auth_signing_alg_values_supported: the JWS algorithms a client
#: assertion may use (private_key_jwt: asymmetric; client_secret_jwt: HMAC).
ASSERTION_ALGORITHMS = [*ASYMMETRIC_ALGORITHMS, *HMAC_ALGORITHMS]


def metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer_url
    return {
        # RFC 8414 §2: "issuer" is REQUIRED and must be identical to ISSUER_URL.
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        # REQUIRED by RFC 8414 §2; there is no authorization endpoint here.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        # §2: REQUIRED when private_key_jwt or client_secret_jwt is supported; "none"
        # MUST NOT be listed.
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "introspection_endpoint": f"{issuer}/introspect",
        "introspection_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "revocation_endpoint": f"{issuer}/revoke",
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "access_token_signing_alg_values_supported": [settings.signing_alg],
        # RFC 9449 §5.1: the JWS algorithms this server accepts for DPoP proofs.
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
    }


async def authorization_server_metadata(request: Request) -> Response:
    services = services_of(request)
    document = metadata(services.settings)
    # RFC 8414 §2 RECOMMENDED: the exact scopes the active clients may request.
    document["scopes_supported"] = await services.clients.supported_scopes()
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=3600"})
