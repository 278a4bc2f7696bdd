"""Frozen values the store hands out: the rest of the code never sees ORM rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TenantRecord:
    id: str
    name: str
    status: str
    created_at: float


@dataclass(frozen=True)
class FederatedCredential:
    """federated_jwt: tokens of ``trusted_issuer_id`` whose ``sub`` is ``subject`` (or
    starts with it, when it ends in ``*``) and whose ``aud`` holds ``audience`` (None:
    this issuer's token endpoint URL) authenticate the client."""

    trusted_issuer_id: str
    subject: str
    audience: str | None = None


@dataclass(frozen=True)
class TrustedIssuerRecord:
    id: str
    tenant_id: str
    issuer: str
    jwks_uri: str | None
    allowed_algorithms: tuple[str, ...]
    max_token_age: int
    status: str
    created_at: float
    updated_at: float

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    tenant_id: str
    tenant_status: str
    name: str
    secret_hash: str | None
    previous_secret_hash: str | None
    previous_secret_expires_at: float | None
    allowed_scopes: tuple[str, ...]
    default_scopes: tuple[str, ...] | None
    allowed_audiences: tuple[str, ...]
    default_audience: str | None
    grant_types: tuple[str, ...]
    auth_methods: tuple[str, ...]
    token_ttl: int | None
    rate_limit: str | None
    status: str
    created_at: float
    # private_key_jwt: the registered public JWK Set, or where to fetch it.
    jwks: dict[str, Any] | None = field(default=None, compare=False)
    jwks_uri: str | None = None
    # client_secret_jwt: the secrets, encrypted (issuer.crypto); None for other clients.
    secret_encrypted: bytes | None = field(default=None, repr=False)
    previous_secret_encrypted: bytes | None = field(default=None, repr=False)
    #: RFC 9449 §5.2 ``dpop_bound_access_tokens``: a token request needs a DPoP proof.
    dpop_bound: bool = False
    # federated_jwt: the external identities that authenticate the client.
    federated_credentials: tuple[FederatedCredential, ...] = ()

    @property
    def active(self) -> bool:
        return self.status == "active"
