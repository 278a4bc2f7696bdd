"""GET /.well-known/jwks.json (RFC 7517 §5): the published public keys, cacheable."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

# How long a resource server may cache the key set. A key is published as
# ``next`` for at least this long before it signs (issue 5's rotation policy),
# so a warm cache never meets an unknown ``kid``.
JWKS_MAX_AGE = 600


async def jwks(request: Request) -> Response:
    keyring = request.state.services.keyring
    return Response(
        keyring.jwks_document,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"},
    )
