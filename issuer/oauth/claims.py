"""RFC 9068 JWT access-token claims. Pure."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from issuer.store.records import ClientRecord


def new_jti() -> str:
    return secrets.token_urlsafe(16)


def access_token_claims(*, issuer: str, client: ClientRecord, scopes: Sequence[str],
                        audience: Sequence[str], issued_at: int, ttl: int,
                        jti: str) -> dict[str, Any]:
    """RFC 9068 §2.2 claims for a client_credentials token.

    §2.2: "In cases of access tokens obtained through grants where no resource
    owner is involved, such as the client credentials grant, the value of 'sub'
    SHOULD correspond to an identifier the authorization server uses to indicate
    the client application."
    """
    return {
        "iss": issuer,
        "sub": client.client_id,
        "aud": audience[0] if len(audience) == 1 else list(audience),
        "exp": issued_at + ttl,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": jti,
        "client_id": client.client_id,
        "scope": " ".join(scopes),
        "tenant_id": client.tenant_id,
        "mode": "m2m",
    }
