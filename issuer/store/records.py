"""Frozen values the store hands out: the rest of the code never sees ORM rows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TenantRecord:
    id: str
    name: str
    status: str
    created_at: float


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

    @property
    def active(self) -> bool:
        return self.status == "active"
