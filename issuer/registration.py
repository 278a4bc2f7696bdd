"""Creating tenants and clients, with their audit events, in one transaction each.

Used by the CLI now and by the admin API later: input is checked here, once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from issuer import audit
from issuer.audit import AuditEvent
from issuer.clock import Clock, utc
from issuer.oauth.scopes import check_allowed_entry, is_scope_token, scope_allowed
from issuer.secrets import hash_secret, new_client_id, new_client_secret
from issuer.store.clients import client_record, tenant_record
from issuer.store.models import Client, Tenant
from issuer.store.records import ClientRecord, TenantRecord

AUTH_METHODS = ("client_secret_basic", "client_secret_post")
GRANT_TYPES = ("client_credentials",)


class RegistrationError(ValueError):
    """The input cannot be registered; the message says why."""


@dataclass(frozen=True)
class ClientSpec:
    tenant_id: str
    name: str
    allowed_scopes: Sequence[str]
    default_scopes: Sequence[str] | None = None
    allowed_audiences: Sequence[str] = ()
    default_audience: str | None = None
    auth_methods: Sequence[str] = AUTH_METHODS
    grant_types: Sequence[str] = GRANT_TYPES
    token_ttl: int | None = None
    rate_limit: str | None = None


@dataclass(frozen=True)
class NewClient:
    record: ClientRecord
    client_secret: str  # shown once, at creation; only its hash is stored


async def create_tenant(session: AsyncSession, name: str, clock: Clock, *,
                        actor: str | None = None) -> TenantRecord:
    name = name.strip()
    if not name or len(name) > 200:
        raise RegistrationError("a tenant name is 1 to 200 characters")
    now = utc(clock.now())
    row = Tenant(id=str(uuid.uuid4()), name=name, status="active", created_at=now,
                 updated_at=now)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise RegistrationError(f"a tenant named {name!r} exists already") from None
    await audit.record(session, AuditEvent.TENANT_CREATED, at=clock.now(), actor=actor,
                       tenant_id=row.id, details={"name": name})
    return tenant_record(row)


async def create_client(session: AsyncSession, spec: ClientSpec, clock: Clock, *,
                        actor: str | None = None) -> NewClient:
    tenant = await session.get(Tenant, spec.tenant_id)
    if tenant is None:
        raise RegistrationError("unknown tenant")
    _check(spec)
    secret = new_client_secret()
    now = utc(clock.now())
    audiences = list(dict.fromkeys(spec.allowed_audiences))
    row = Client(
        id=new_client_id(),
        tenant_id=spec.tenant_id,
        name=spec.name.strip() or "client",
        secret_hash=hash_secret(secret),
        allowed_scopes=list(dict.fromkeys(spec.allowed_scopes)),
        default_scopes=list(spec.default_scopes) if spec.default_scopes is not None else None,
        allowed_audiences=audiences,
        default_audience=spec.default_audience or (audiences[0] if audiences else None),
        grant_types=list(spec.grant_types),
        auth_methods=list(spec.auth_methods),
        token_ttl=spec.token_ttl,
        rate_limit=spec.rate_limit,
        status="active",
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    await audit.record(
        session, AuditEvent.CLIENT_CREATED, at=clock.now(), actor=actor,
        tenant_id=spec.tenant_id, client_id=row.id,
        details={"name": row.name, "allowedScopes": row.allowed_scopes,
                 "allowedAudiences": row.allowed_audiences, "authMethods": row.auth_methods},
    )
    return NewClient(record=client_record(row, tenant.status), client_secret=secret)


def _check(spec: ClientSpec) -> None:
    if len(spec.name) > 200:
        raise RegistrationError("a client name is at most 200 characters")
    for entry in spec.allowed_scopes:
        try:
            check_allowed_entry(entry)
        except ValueError as error:
            raise RegistrationError(str(error)) from None
    if spec.default_scopes is not None:
        for scope in spec.default_scopes:
            if not is_scope_token(scope) or "*" in scope:
                raise RegistrationError(f"default scope {scope!r} is not an exact scope")
            if not scope_allowed(scope, spec.allowed_scopes):
                raise RegistrationError(f"default scope {scope!r} is not among the allowed")
    for audience in spec.allowed_audiences:
        if not audience or len(audience) > 2000 or any(c.isspace() for c in audience):
            raise RegistrationError(f"audience {audience!r} is empty, too long or has spaces")
    if spec.default_audience is not None and spec.default_audience not in spec.allowed_audiences:
        raise RegistrationError("the default audience must be one of the allowed audiences")
    if not spec.auth_methods or set(spec.auth_methods) - set(AUTH_METHODS):
        raise RegistrationError(f"auth methods are some of {', '.join(AUTH_METHODS)}")
    if not spec.grant_types or set(spec.grant_types) - set(GRANT_TYPES):
        raise RegistrationError(f"grant types are some of {', '.join(GRANT_TYPES)}")
    if spec.token_ttl is not None and not 60 <= spec.token_ttl <= 86400:
        raise RegistrationError("a token TTL is between 60 and 86400 seconds")
