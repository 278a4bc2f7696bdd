"""GET /.well-known/jwks.json (RFC 7517 §5): the published public keys, cacheable.

The ``max-age`` comes from the rotation policy (``issuer.keys.policy.RotationPolicy``):
``min(3600, rotation period / 10)``. A key is published as ``next`` for at least
that long (plus the ring's reload interval) before it signs, so a resource server
with a warm cache never meets an unknown ``kid``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from issuer.keys.policy import RotationPolicy
from issuer.services import services_of

#: The max-age under the default policy (and any rotation period of 10 hours or more).
JWKS_MAX_AGE = RotationPolicy().jwks_max_age


async def jwks(request: Request) -> Response:
    keyring = services_of(request).keyring
    return Response(
        keyring.jwks_document,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={keyring.jwks_max_age}"},
    )
