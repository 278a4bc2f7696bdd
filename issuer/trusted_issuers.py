"""A tenant's trusted issuers and its clients' federated credentials: input checked
here, once, for the admin API and the CLI; each change audited in its transaction.

A trusted issuer is an external token issuer (a Kubernetes cluster's service-account
issuer, a CI system's OIDC issuer, a SPIFFE trust domain's JWT-SVID issuer) whose
tokens may authenticate the tenant's clients that name it in a federated credential
(``issuer.oauth.federation``). Its ``issuer`` is compared exactly with the tokens'
``iss``; its keys come from ``jwks_uri`` or, when none is given, from the ``jwks_uri``
of ``{issuer}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0 §4).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from issuer import audit
from issuer.audit import AuditEvent
from issuer.clock import Clock, utc
from issuer.oauth.rfc7523 import ASYMMETRIC_ALGORITHMS
from issuer.registration import (
    STATUSES,
    Actor,
    RegistrationConflict,
    RegistrationError,
    UnknownObject,
)
from issuer.store import tenants, trusted_issuers
from issuer.store.models import TrustedIssuer
from issuer.store.records import TrustedIssuerRecord

#: What a trusted issuer accepts unless told otherwise.
DEFAULT_ALGORITHMS = ("RS256", "ES256")
DEFAULT_MAX_TOKEN_AGE = 3600
MIN_MAX_TOKEN_AGE, MAX_MAX_TOKEN_AGE = 60, 86_400
#: Federated credentials one client may hold.
MAX_CREDENTIALS = 20
MAX_SUBJECT_LENGTH = 1024
MAX_URL_LENGTH = 2000
#: What ``update_trusted_issuer`` may change.
FIELDS = ("issuer", "jwks_uri", "allowed_algorithms", "max_token_age", "status")


def _anyone(tenant_id: str) -> bool:
    return True


def check_url(name: str, value: object, *, allow_http: bool) -> str:
    """An absolute https URL (http too where ``allow_http``: outside production), without
    credentials, query or fragment; RegistrationError otherwise."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        raise RegistrationError(f"{name} must be a URL of at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise RegistrationError(f"{name} must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:
        raise RegistrationError(f"{name} is not a valid URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not hostname:
        raise RegistrationError(f"{name} must be an absolute https URL")
    if parts.username is not None or parts.password is not None or parts.query \
            or parts.fragment:
        raise RegistrationError(f"{name} must not carry credentials, a query or a fragment")
    return value


def check_algorithms(values: Sequence[str]) -> list[str]:
    """Asymmetric JWS algorithms only (RFC 8725 §3.1: a public key never keys an HMAC)."""
    chosen = list(dict.fromkeys(values))
    if not chosen or set(chosen) - set(ASYMMETRIC_ALGORITHMS):
        raise RegistrationError("allowed_algorithms are some of "
                                + ", ".join(ASYMMETRIC_ALGORITHMS))
    return chosen


def _check_age(value: int) -> int:
    if isinstance(value, bool) or not MIN_MAX_TOKEN_AGE <= value <= MAX_MAX_TOKEN_AGE:
        raise RegistrationError(f"max_token_age is {MIN_MAX_TOKEN_AGE} to "
                                f"{MAX_MAX_TOKEN_AGE} seconds")
    return value


async def create_trusted_issuer(session: AsyncSession, tenant_id: str, *, issuer: str,
                                clock: Clock, actor: Actor, allow_http: bool,
                                jwks_uri: str | None = None,
                                allowed_algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
                                max_token_age: int = DEFAULT_MAX_TOKEN_AGE,
                                status: str = "active") -> TrustedIssuerRecord:
    """Trust ``issuer`` for ``tenant_id``'s clients; an issuer trusted already is a
    conflict."""
    if await tenants.get(session, tenant_id) is None:
        raise UnknownObject("unknown tenant")
    if status not in STATUSES:
        raise RegistrationError(f"a status is one of {', '.join(STATUSES)}")
    now = clock.now()
    row = TrustedIssuer(
        id=str(uuid.uuid4()), tenant_id=tenant_id,
        issuer=check_url("issuer", issuer, allow_http=allow_http),
        jwks_uri=(check_url("jwks_uri", jwks_uri, allow_http=allow_http)
                  if jwks_uri is not None else None),
        allowed_algorithms=check_algorithms(allowed_algorithms),
        max_token_age=_check_age(max_token_age), status=status,
        created_at=utc(now), updated_at=utc(now))
    if await trusted_issuers.by_issuer(session, tenant_id, row.issuer) is not None:
        raise RegistrationConflict("this tenant trusts that issuer already")
    try:
        await trusted_issuers.add(session, row)
    except IntegrityError:
        raise RegistrationConflict("this tenant trusts that issuer already") from None
    record = trusted_issuers.trusted_issuer_record(row)
    await audit.record(session, AuditEvent.TRUSTED_ISSUER_CREATED, at=now, tenant_id=tenant_id,
                       details={"trusted_issuer_id": row.id, **_described(record)},
                       **actor.audit_fields())
    return record


async def update_trusted_issuer(session: AsyncSession, trusted_issuer_id: str,
                                changes: Mapping[str, Any], clock: Clock, actor: Actor, *,
                                allow_http: bool,
                                visible: Callable[[str], bool] = _anyone
                                ) -> TrustedIssuerRecord:
    """Change any of :data:`FIELDS` (``jwks_uri`` null: discover it again)."""
    row = _visible(await trusted_issuers.lock(session, trusted_issuer_id), visible)
    if set(changes) - set(FIELDS):
        raise RegistrationError(f"a trusted issuer's {', '.join(FIELDS)} can change")
    wanted: dict[str, Any] = {}
    if "issuer" in changes:
        wanted["issuer"] = check_url("issuer", changes["issuer"], allow_http=allow_http)
        other = await trusted_issuers.by_issuer(session, row.tenant_id, wanted["issuer"])
        if other is not None and other.id != row.id:
            raise RegistrationConflict("this tenant trusts that issuer already")
    if "jwks_uri" in changes:
        wanted["jwks_uri"] = (check_url("jwks_uri", changes["jwks_uri"], allow_http=allow_http)
                              if changes["jwks_uri"] is not None else None)
    if "allowed_algorithms" in changes:
        wanted["allowed_algorithms"] = check_algorithms(changes["allowed_algorithms"])
    if "max_token_age" in changes:
        wanted["max_token_age"] = _check_age(changes["max_token_age"])
    if "status" in changes:
        if changes["status"] not in STATUSES:
            raise RegistrationError(f"a status is one of {', '.join(STATUSES)}")
        wanted["status"] = changes["status"]
    diff: dict[str, dict[str, Any]] = {}
    for name, new in wanted.items():
        old = getattr(row, name)
        if old != new:
            diff[name] = {"from": old, "to": new}
            setattr(row, name, new)
    if diff:
        row.updated_at = utc(clock.now())
        try:
            await session.flush()
        except IntegrityError:
            raise RegistrationConflict("this tenant trusts that issuer already") from None
        await audit.record(session, AuditEvent.TRUSTED_ISSUER_UPDATED, at=clock.now(),
                           tenant_id=row.tenant_id,
                           details={"trusted_issuer_id": row.id, "changes": diff},
                           **actor.audit_fields())
    return trusted_issuers.trusted_issuer_record(row)


async def delete_trusted_issuer(session: AsyncSession, trusted_issuer_id: str, clock: Clock,
                                actor: Actor, *,
                                visible: Callable[[str], bool] = _anyone
                                ) -> TrustedIssuerRecord:
    """Stop trusting an issuer: the credentials naming it authenticate nobody from now
    on (a new trusted issuer of the same URL gets a new id, so they stay dead)."""
    row = _visible(await trusted_issuers.lock(session, trusted_issuer_id), visible)
    record = trusted_issuers.trusted_issuer_record(row)
    await trusted_issuers.remove(session, row)
    await audit.record(session, AuditEvent.TRUSTED_ISSUER_DELETED, at=clock.now(),
                       tenant_id=record.tenant_id,
                       details={"trusted_issuer_id": record.id, "issuer": record.issuer},
                       **actor.audit_fields())
    return record


def _visible(row: TrustedIssuer | None,
             visible: Callable[[str], bool]) -> TrustedIssuer:
    if row is None or not visible(row.tenant_id):
        raise UnknownObject("unknown trusted issuer")
    return row


def _described(record: TrustedIssuerRecord) -> dict[str, Any]:
    return {"issuer": record.issuer, "jwks_uri": record.jwks_uri,
            "allowed_algorithms": list(record.allowed_algorithms),
            "max_age_seconds": record.max_token_age, "status": record.status}


async def check_federated_credentials(session: AsyncSession, tenant_id: str,
                                      credentials: Sequence[Mapping[str, Any]]
                                      ) -> list[dict[str, Any]]:
    """A client's federated credentials as stored: each names one of *its tenant's*
    trusted issuers (another tenant's is unknown, like a missing one), an exact
    ``subject`` or a prefix ending in ``*``, and an ``audience`` (None: this issuer's
    token endpoint URL)."""
    if len(credentials) > MAX_CREDENTIALS:
        raise RegistrationError(f"a client holds at most {MAX_CREDENTIALS} federated "
                                "credentials")
    checked: list[dict[str, Any]] = []
    for number, credential in enumerate(credentials, 1):
        issuer_id, subject = credential.get("trusted_issuer_id"), credential.get("subject")
        audience = credential.get("audience")
        if not isinstance(issuer_id, str) or not issuer_id:
            raise RegistrationError(f"federated credential {number} names no trusted issuer")
        if (not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH
                or any(ord(c) < 0x20 or ord(c) == 0x7F for c in subject)):
            raise RegistrationError(f"federated credential {number}: subject is 1 to "
                                    f"{MAX_SUBJECT_LENGTH} visible characters")
        if "*" in subject[:-1] or subject == "*":
            raise RegistrationError(f"federated credential {number}: '*' may only end a "
                                    "subject prefix (and a bare '*' would trust every "
                                    "subject of the issuer)")
        if audience is not None and (not isinstance(audience, str) or not audience
                                     or len(audience) > MAX_URL_LENGTH
                                     or any(c.isspace() for c in audience)):
            raise RegistrationError(f"federated credential {number}: audience is 1 to "
                                    f"{MAX_URL_LENGTH} characters without spaces")
        entry = {"trusted_issuer_id": issuer_id, "subject": subject, "audience": audience}
        if entry not in checked:
            checked.append(entry)
    known = await trusted_issuers.of_tenant(session, tenant_id,
                                            [entry["trusted_issuer_id"] for entry in checked])
    for entry in checked:
        if entry["trusted_issuer_id"] not in known:
            raise RegistrationError(f"unknown trusted issuer {entry['trusted_issuer_id']!r} "
                                    "(a client names its own tenant's trusted issuers)")
    return checked
