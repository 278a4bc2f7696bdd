"""Creating tenants and clients, with their audit events, in one transaction each.

Used by the CLI now and by the admin API later: input is checked here, once.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from issuer import audit, tenant_names
from issuer.audit import AuditEvent
from issuer.clock import Clock, utc
from issuer.crypto import Encryptor
from issuer.oauth.client_jwks import check_client_jwks, check_jwks_uri
from issuer.oauth.scopes import check_allowed_entry, is_scope_token, scope_allowed
from issuer.secrets import hash_secret, new_client_id, new_client_secret, secret_context
from issuer.store import clients, issued_tokens, tenants
from issuer.store.clients import client_record
from issuer.store.models import Client, Tenant
from issuer.store.records import ClientRecord, TenantRecord
from issuer.store.tenants import tenant_record

#: RFC 6749 §2.3.1 methods: the client sends its secret.
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
#: Every token endpoint auth method (RFC 7591 §2 names); RFC 7523 §2.2 for the JWT ones.
AUTH_METHODS = (*SECRET_METHODS, "client_secret_jwt", "private_key_jwt", "federated_jwt")
#: What a client may use unless it says otherwise.
DEFAULT_AUTH_METHODS = SECRET_METHODS
GRANT_TYPES = ("client_credentials",)
# The client_secret_jwt decision. Secrets are stored as SHA-256 digests only
# (issuer/secrets.py), but client_secret_jwt needs the secret itself: OIDC Core §9 keys
# the HMAC with "the octets of the UTF-8 representation of the client_secret". Refusing
# the method would leave it unsupported, so for a client allowed client_secret_jwt --
# and only for such a client -- its secret (and the previous one during a rotation's
# grace) is also kept encrypted under ENCRYPTION_MASTER_KEY (AES-256-GCM, issuer.crypto,
# bound to the client_id), as the signing keys are. Every other client's secret stays a
# digest; a client that loses client_secret_jwt loses the encrypted copy at once, and one
# that gains it can use it after its next secret rotation (the digest cannot be undone).
_SECRET_USING = frozenset({*SECRET_METHODS, "client_secret_jwt"})


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
    auth_methods: Sequence[str] = DEFAULT_AUTH_METHODS
    grant_types: Sequence[str] = GRANT_TYPES
    token_ttl: int | None = None
    rate_limit: str | None = None
    jwks: Mapping[str, Any] | None = None  # private_key_jwt: RFC 7591 §2 "jwks"
    jwks_uri: str | None = None  # ... or "jwks_uri"; never both
    dpop_bound_access_tokens: bool = False  # RFC 9449 §5.2: token requests need a proof
    # federated_jwt: ``{trusted_issuer_id, subject, audience}`` (issuer.trusted_issuers)
    federated_credentials: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class NewClient:
    record: ClientRecord
    # Shown once, at creation; only its hash is stored (and, for client_secret_jwt, an
    # encrypted copy). None for a client that authenticates with private_key_jwt only.
    client_secret: str | None


async def create_tenant(session: AsyncSession, name: str, clock: Clock, *,
                        actor: str | None = None) -> TenantRecord:
    """A tenant created from the CLI or at bootstrap (the admin API calls register_tenant)."""
    return await register_tenant(session, name, clock, Actor(actor))


async def create_client(session: AsyncSession, spec: ClientSpec, clock: Clock, *,
                        actor: str | None = None,
                        encryptor: Encryptor | None = None) -> NewClient:
    """A client created from the CLI or at bootstrap (the admin API calls register_client)."""
    return await register_client(session, spec, clock, Actor(actor), encryptor=encryptor)


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
    if ("federated_jwt" in spec.auth_methods) != bool(spec.federated_credentials):
        raise RegistrationError("a federated_jwt client has federated credentials, and "
                                "only such a client")


def _checked_keys(spec: ClientSpec) -> tuple[dict[str, Any] | None, str | None]:
    """The JWK Set or jwks_uri to store: one of them for a private_key_jwt client
    (RFC 7591 §2: "MUST NOT both be present"), neither for any other."""
    if "private_key_jwt" not in spec.auth_methods:
        if spec.jwks is not None or spec.jwks_uri is not None:
            raise RegistrationError("jwks and jwks_uri are for private_key_jwt clients")
        return None, None
    if (spec.jwks is None) == (spec.jwks_uri is None):
        raise RegistrationError("a private_key_jwt client has a jwks or a jwks_uri (one of "
                                "them, not both)")
    try:
        if spec.jwks is not None:
            return check_client_jwks(dict(spec.jwks)), None
        return None, check_jwks_uri(spec.jwks_uri)
    except ValueError as error:
        raise RegistrationError(str(error)) from None


async def _checked_federation(session: AsyncSession,
                              spec: ClientSpec) -> list[dict[str, Any]] | None:
    """The federated credentials to store (each naming one of the client's tenant's
    trusted issuers), or None for a client without federated_jwt."""
    from issuer.trusted_issuers import check_federated_credentials  # it imports this module

    if "federated_jwt" not in spec.auth_methods:
        return None
    return await check_federated_credentials(session, spec.tenant_id,
                                             spec.federated_credentials)


def _encrypted(secret: str, client_id: str, encryptor: Encryptor | None) -> bytes:
    if encryptor is None:
        raise RegistrationError("client_secret_jwt needs the issuer's encryption key")
    return encryptor.encrypt(secret.encode(), secret_context(client_id))


# The admin API's changes: each audited with its full context (who,
# from where, which request) in the caller's transaction. ``visible`` is the
# caller's tenant guard: an object it may not see is reported as unknown, like a
# missing one.

#: ``<n>/<unit>``, the format of ISSUER_RATE_LIMIT.
RATE_LIMIT = re.compile(r"^[1-9][0-9]{0,8}/(second|minute|hour|day)$")
STATUSES = ("active", "disabled")
DEFAULT_GRACE_SECONDS = 86400  # the previous secret stays valid 24 h by default
MAX_GRACE_SECONDS = 30 * 86400
#: What ``update_client`` may change, by ``ClientSpec``/column name.
CLIENT_FIELDS = ("name", "allowed_scopes", "default_scopes", "allowed_audiences",
                 "default_audience", "grant_types", "auth_methods", "token_ttl", "rate_limit",
                 "status", "jwks", "jwks_uri", "dpop_bound_access_tokens",
                 "federated_credentials")
_Row = TypeVar("_Row", Tenant, Client)


class RegistrationConflict(RegistrationError):
    """The change conflicts with what is stored (a taken name, the platform tenant)."""


class UnknownObject(RegistrationError):
    """No such tenant or client -- or one the caller may not see."""


@dataclass(frozen=True)
class Actor:
    """Who makes a change, from where, in which request: its audit event's context."""

    client_id: str | None
    source: str | None = None
    request_id: str | None = None

    def audit_fields(self) -> dict[str, str | None]:
        return {"actor": self.client_id, "source": self.source, "request_id": self.request_id}


def _anyone(tenant_id: str) -> bool:
    return True


def check_rate_limit(value: str | None) -> str | None:
    """``None`` (the issuer's ISSUER_RATE_LIMIT applies) or e.g. ``600/minute``."""
    if value is None:
        return None
    compact = value.replace(" ", "")
    if not RATE_LIMIT.match(compact):
        raise RegistrationError("a rate limit looks like '600/minute' (per second, minute, "
                                "hour or day)")
    return compact


def _check_tenant_name(name: str) -> str:
    """The rules of :mod:`issuer.tenant_names` (the API checks them in its model)."""
    try:
        return tenant_names.check(name)
    except tenant_names.InvalidTenantName as error:
        raise RegistrationError(str(error)) from None


async def _check_name_free(session: AsyncSession, name: str, tenant_id: str | None = None,
                           ) -> None:
    """A conflict naming the tenant whose name is the same as ``name`` (the unique key
    column is what guarantees it; this only says which name it is)."""
    taken = await tenants.holder_of_name(session, name, other_than=tenant_id)
    if taken == name:
        raise RegistrationConflict(f"a tenant named {name!r} exists already")
    if taken is not None:
        raise RegistrationConflict(f"a tenant named {taken!r} exists already, and {name!r} "
                                   "is the same name")


async def register_tenant(session: AsyncSession, name: str, clock: Clock,
                          actor: Actor) -> TenantRecord:
    """Create a tenant, audited with ``actor``; a taken name, or one that is the same
    (:func:`issuer.tenant_names.key`), is a conflict."""
    name = _check_tenant_name(name)
    await _check_name_free(session, name)
    now = clock.now()
    row = Tenant(id=str(uuid.uuid4()), name=name, name_key=tenant_names.key(name),
                 status="active", platform=False, created_at=utc(now), updated_at=utc(now))
    try:
        await tenants.add(session, row)
    except IntegrityError:
        raise RegistrationConflict(f"a tenant named {name!r} exists already") from None
    await audit.record(session, AuditEvent.TENANT_CREATED, at=now, tenant_id=row.id,
                       details={"name": name}, **actor.audit_fields())
    return tenant_record(row)


async def update_tenant(session: AsyncSession, tenant_id: str, changes: Mapping[str, Any],
                        clock: Clock, actor: Actor) -> TenantRecord:
    """Rename a tenant or change its status. The platform tenant stays active: disabling
    it would lock every platform admin out."""
    row = _visible(await tenants.lock(session, tenant_id), "tenant")
    wanted = dict(changes)
    if set(wanted) - {"name", "status"}:
        raise RegistrationError("a tenant's name and status can change, nothing else")
    if "name" in wanted:
        wanted["name"] = _check_tenant_name(wanted["name"])
        wanted["name_key"] = tenant_names.key(wanted["name"])
        await _check_name_free(session, wanted["name"], tenant_id)
    if "status" in wanted and wanted["status"] not in STATUSES:
        raise RegistrationError(f"a status is one of {', '.join(STATUSES)}")
    if row.platform and wanted.get("status", row.status) != "active":
        raise RegistrationConflict("the platform tenant cannot be disabled")
    diff = _apply(row, wanted)
    diff.pop("name_key", None)  # follows the name
    if diff:
        _kill_switch(row, diff, clock.now())
        row.updated_at = utc(clock.now())
        await _flush_unique(session, f"a tenant named {row.name!r} exists already")
        await audit.record(session, AuditEvent.TENANT_UPDATED, at=clock.now(),
                           tenant_id=row.id, details={"changes": diff}, **actor.audit_fields())
    return tenant_record(row)


async def register_client(session: AsyncSession, spec: ClientSpec, clock: Clock,
                          actor: Actor, *, encryptor: Encryptor | None = None) -> NewClient:
    """Create a client (its secret shown once), audited with ``actor``. ``encryptor``
    keeps the secret readable for client_secret_jwt (see ``_SECRET_USING``)."""
    tenant = await tenants.get(session, spec.tenant_id)
    if tenant is None:
        raise UnknownObject("unknown tenant")
    _check(spec)
    jwks, jwks_uri = _checked_keys(spec)
    federated = await _checked_federation(session, spec)
    secret = new_client_secret() if _SECRET_USING & set(spec.auth_methods) else None
    client_id = new_client_id()
    now = clock.now()
    audiences = list(dict.fromkeys(spec.allowed_audiences))
    row = Client(
        id=client_id, tenant_id=spec.tenant_id, name=spec.name.strip() or "client",
        secret_hash=hash_secret(secret) if secret is not None else None,
        secret_encrypted=(_encrypted(secret, client_id, encryptor)
                          if secret is not None and "client_secret_jwt" in spec.auth_methods
                          else None),
        jwks=jwks, jwks_uri=jwks_uri, federated_credentials=federated,
        allowed_scopes=list(dict.fromkeys(spec.allowed_scopes)),
        default_scopes=list(spec.default_scopes) if spec.default_scopes is not None else None,
        allowed_audiences=audiences,
        default_audience=spec.default_audience or (audiences[0] if audiences else None),
        grant_types=list(spec.grant_types), auth_methods=list(spec.auth_methods),
        token_ttl=spec.token_ttl, rate_limit=check_rate_limit(spec.rate_limit),
        status="active", created_at=utc(now), updated_at=utc(now),
        dpop_bound_access_tokens=bool(spec.dpop_bound_access_tokens),
    )
    await clients.add(session, row)
    await audit.record(
        session, AuditEvent.CLIENT_CREATED, at=now, tenant_id=spec.tenant_id, client_id=row.id,
        details={"name": row.name, "allowedScopes": row.allowed_scopes,
                 "allowedAudiences": row.allowed_audiences, "authMethods": row.auth_methods,
                 **({"jwksKids": _kids(jwks)} if jwks is not None else {}),
                 **({"jwksUri": jwks_uri} if jwks_uri is not None else {}),
                 **({"dpopBound": True} if spec.dpop_bound_access_tokens
                    else {}),
                 **({"federatedCredentials": federated} if federated else {})},
        **actor.audit_fields(),
    )
    return NewClient(record=client_record(row, tenant.status), client_secret=secret)


async def update_client(session: AsyncSession, client_id: str, changes: Mapping[str, Any],
                        clock: Clock, actor: Actor, *,
                        visible: Callable[[str], bool] = _anyone) -> ClientRecord:
    """Change any of :data:`CLIENT_FIELDS`; the result is checked as a whole, like a new
    client. The default audience is the one given, else the first allowed one."""
    row = _visible(await clients.lock(session, client_id), "client", visible)
    if set(changes) - set(CLIENT_FIELDS):
        raise RegistrationError(f"a client's {', '.join(CLIENT_FIELDS)} can change")
    if changes.get("status", row.status) not in STATUSES:
        raise RegistrationError(f"a status is one of {', '.join(STATUSES)}")
    if changes.get("status") == "disabled" and client_id == actor.client_id:
        raise RegistrationConflict("a client cannot disable itself")
    spec = _merged_spec(row, changes)
    _check(spec)
    jwks, jwks_uri = _checked_keys(spec)
    # Stored credentials are not checked again: one naming a trusted issuer deleted since
    # authenticates nobody, and must not keep the client from being changed (disabled).
    federated = (await _checked_federation(session, spec)
                 if "federated_credentials" in changes
                 else [dict(entry) for entry in spec.federated_credentials] or None)
    diff = _apply(row, {
        "jwks": jwks, "jwks_uri": jwks_uri, "federated_credentials": federated,
        "name": spec.name, "allowed_scopes": list(spec.allowed_scopes),
        "default_scopes": list(spec.default_scopes) if spec.default_scopes is not None else None,
        "allowed_audiences": list(spec.allowed_audiences),
        "default_audience": spec.default_audience, "grant_types": list(spec.grant_types),
        "auth_methods": list(spec.auth_methods), "token_ttl": spec.token_ttl,
        "rate_limit": check_rate_limit(spec.rate_limit),
        "status": changes.get("status", row.status),
        "dpop_bound_access_tokens": bool(spec.dpop_bound_access_tokens),
    })
    _drop_unused_secrets(row)
    if diff:
        _kill_switch(row, diff, clock.now())
        row.updated_at = utc(clock.now())
        await session.flush()
        await audit.record(session, AuditEvent.CLIENT_UPDATED, at=clock.now(),
                           tenant_id=row.tenant_id, client_id=row.id,
                           details={"changes": diff}, **actor.audit_fields())
    return await _client_record(session, row)


def _kill_switch(row: Tenant | Client, diff: Mapping[str, Any], now: float) -> None:
    """Disabling is a kill switch: the tokens issued before it stay inactive after a
    re-enable. ``tokens_valid_after`` is the first whole second whose tokens may be
    active (tokens carry whole-second ``iat``s): past the disable's second when
    disabled, and on a re-enable at least the re-enable's second, which also kills a
    token a process issued before the disable notice reached it."""
    if "status" not in diff:
        return
    if row.status != "active":
        row.tokens_valid_after = utc(math.floor(now) + 1)
    elif row.tokens_valid_after is None or row.tokens_valid_after < utc(math.floor(now)):
        row.tokens_valid_after = utc(math.floor(now))


def _drop_unused_secrets(row: Client) -> None:
    """A client keeps no secret it may not use: no encrypted copy without
    client_secret_jwt, no secret at all with private_key_jwt alone."""
    if "client_secret_jwt" not in row.auth_methods:
        row.secret_encrypted = row.previous_secret_encrypted = None
    if not _SECRET_USING & set(row.auth_methods):
        row.secret_hash = row.previous_secret_hash = None
        row.previous_secret_expires_at = None


def _kids(jwks: Mapping[str, Any]) -> list[str | None]:
    return [key.get("kid") for key in jwks["keys"]]


def _merged_spec(row: Client, changes: Mapping[str, Any]) -> ClientSpec:
    def value(name: str) -> Any:
        return changes[name] if name in changes else getattr(row, name)

    audiences = list(dict.fromkeys(value("allowed_audiences")))
    # Setting one of jwks/jwks_uri replaces the other; dropping private_key_jwt drops both.
    jwks, jwks_uri = value("jwks"), value("jwks_uri")
    if changes.get("jwks_uri") is not None and "jwks" not in changes:
        jwks = None
    if changes.get("jwks") is not None and "jwks_uri" not in changes:
        jwks_uri = None
    if "private_key_jwt" not in value("auth_methods"):
        jwks = jwks if "jwks" in changes else None
        jwks_uri = jwks_uri if "jwks_uri" in changes else None
    federated = value("federated_credentials") or ()
    if "federated_jwt" not in value("auth_methods") and "federated_credentials" not in changes:
        federated = ()  # dropping federated_jwt drops the credentials
    default_audience = value("default_audience")
    if "default_audience" not in changes and default_audience not in audiences:
        default_audience = None  # the stored default is no longer allowed
    return ClientSpec(
        tenant_id=row.tenant_id, name=value("name").strip() or "client",
        allowed_scopes=list(dict.fromkeys(value("allowed_scopes"))),
        default_scopes=value("default_scopes"), allowed_audiences=audiences,
        default_audience=default_audience or (audiences[0] if audiences else None),
        auth_methods=value("auth_methods"), grant_types=value("grant_types"),
        token_ttl=value("token_ttl"), rate_limit=value("rate_limit"),
        jwks=jwks, jwks_uri=jwks_uri, federated_credentials=federated,
        dpop_bound_access_tokens=value("dpop_bound_access_tokens"),
    )


async def rotate_secret(session: AsyncSession, client_id: str, grace_seconds: int,
                        clock: Clock, actor: Actor, *,
                        visible: Callable[[str], bool] = _anyone,
                        encryptor: Encryptor | None = None) -> NewClient:
    """A new secret, returned once; the current one becomes the previous secret, valid
    ``grace_seconds`` more (0: revoked at once). An older previous secret is dropped:
    there is one grace slot."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise RegistrationError(f"a grace period is 0 to {MAX_GRACE_SECONDS} seconds")
    row = _visible(await clients.lock(session, client_id), "client", visible)
    if not _SECRET_USING & set(row.auth_methods):
        raise RegistrationConflict(f"this client authenticates with "
                                   f"{' and '.join(row.auth_methods)} only: it has no "
                                   "secret to rotate")
    now = clock.now()
    secret = new_client_secret()
    keep = grace_seconds > 0 and row.secret_hash is not None
    row.previous_secret_hash = row.secret_hash if keep else None
    row.previous_secret_expires_at = utc(now + grace_seconds) if keep else None
    row.secret_hash = hash_secret(secret)
    if "client_secret_jwt" in row.auth_methods:
        row.previous_secret_encrypted = row.secret_encrypted if keep else None
        row.secret_encrypted = _encrypted(secret, row.id, encryptor)
    row.updated_at = utc(now)
    await session.flush()
    until = row.previous_secret_expires_at
    await audit.record(session, AuditEvent.CLIENT_SECRET_ROTATED, at=now,
                       tenant_id=row.tenant_id, client_id=row.id,
                       details={"grace_seconds": grace_seconds,
                                "previous_valid_until": until.isoformat() if until else None},
                       **actor.audit_fields())
    return NewClient(record=await _client_record(session, row), client_secret=secret)


async def revoke_previous_secret(session: AsyncSession, client_id: str, clock: Clock,
                                 actor: Actor, *,
                                 visible: Callable[[str], bool] = _anyone) -> ClientRecord:
    """End the grace period of the previous secret now (idempotent)."""
    row = _visible(await clients.lock(session, client_id), "client", visible)
    now = clock.now()
    until = row.previous_secret_expires_at
    in_grace = (row.previous_secret_hash is not None and until is not None
                and now < until.timestamp())
    row.previous_secret_hash = None
    row.previous_secret_expires_at = None
    row.previous_secret_encrypted = None
    row.updated_at = utc(now)
    await session.flush()
    await audit.record(session, AuditEvent.CLIENT_PREVIOUS_SECRET_REVOKED, at=now,
                       tenant_id=row.tenant_id, client_id=row.id,
                       details={"was_in_grace": in_grace}, **actor.audit_fields())
    return await _client_record(session, row)


async def delete_client(session: AsyncSession, client_id: str, clock: Clock, actor: Actor, *,
                        visible: Callable[[str], bool] = _anyone) -> ClientRecord:
    """Delete a client and revoke its live tokens, so that they are refused at once
    everywhere (introspection, the admin API), not only when they expire."""
    row = _visible(await clients.lock(session, client_id), "client", visible)
    if client_id == actor.client_id:
        raise RegistrationConflict("a client cannot delete itself")
    record = await _client_record(session, row)
    now = utc(clock.now())
    revoked = await issued_tokens.revoke_live_of_client(session, client_id, now)
    await clients.remove(session, row)
    await audit.record(session, AuditEvent.CLIENT_DELETED, at=clock.now(),
                       tenant_id=record.tenant_id, client_id=client_id,
                       details={"name": record.name,
                                "issued_revoked": revoked},
                       **actor.audit_fields())
    return record


def _visible(row: _Row | None, kind: str, visible: Callable[[str], bool] = _anyone) -> _Row:
    """The locked row, if the caller may see it; an unknown object otherwise."""
    tenant_id = row.id if isinstance(row, Tenant) else row.tenant_id if row else None
    if row is None or tenant_id is None or not visible(tenant_id):
        raise UnknownObject(f"unknown {kind}")
    return row


def _apply(row: Tenant | Client, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Set the values that differ; returns ``{field: {"from": old, "to": new}}``."""
    diff: dict[str, dict[str, Any]] = {}
    for name, new in values.items():
        old = getattr(row, name)
        if old != new:
            diff[name] = {"from": old, "to": new}
            setattr(row, name, new)
    return diff


async def _flush_unique(session: AsyncSession, conflict: str) -> None:
    try:
        await session.flush()
    except IntegrityError:
        raise RegistrationConflict(conflict) from None


async def _client_record(session: AsyncSession, row: Client) -> ClientRecord:
    return client_record(row, await tenants.status(session, row.tenant_id))
