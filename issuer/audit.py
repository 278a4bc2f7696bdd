"""Audit events: one enum, one row shape, written in the same transaction as the change,
and read back by filters (``GET /api/v1/audit-events``, ``issuer audit export``); the SQL is
``issuer.store.audit_events``'s.

An audit row never carries a secret, a token or a hash: callers pass identifiers
and reasons only, and :func:`audit_row` refuses detail keys that name secrets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from issuer.clock import utc
from issuer.store import audit_events
from issuer.store.audit_events import AuditQuery

__all__ = ["AuditEvent", "AuditQuery", "Severity", "audit_row", "event_json", "oldest_first",
           "record"]


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Event(StrEnum):
    """Base of every vocabulary of audit events: the core's :class:`AuditEvent`, and each
    connector's own (``Connector.audit_events``). An event knows its severity."""

    @property
    def severity(self) -> Severity:
        raise NotImplementedError


class AuditEvent(Event):
    """The core's events."""

    M2M_TOKEN_GENERATED = "M2M_TOKEN_GENERATED"
    M2M_TOKEN_DENIED = "M2M_TOKEN_DENIED"
    M2M_TOKEN_USED = "M2M_TOKEN_USED"
    M2M_TOKEN_REVOKED = "M2M_TOKEN_REVOKED"
    TENANT_CREATED = "TENANT_CREATED"
    TENANT_UPDATED = "TENANT_UPDATED"
    CLIENT_CREATED = "CLIENT_CREATED"
    CLIENT_UPDATED = "CLIENT_UPDATED"
    CLIENT_DELETED = "CLIENT_DELETED"
    CLIENT_SECRET_ROTATED = "CLIENT_SECRET_ROTATED"
    CLIENT_PREVIOUS_SECRET_REVOKED = "CLIENT_PREVIOUS_SECRET_REVOKED"
    PLATFORM_BOOTSTRAPPED = "PLATFORM_BOOTSTRAPPED"
    SIGNING_KEY_CREATED = "SIGNING_KEY_CREATED"
    SIGNING_KEY_ROTATED = "SIGNING_KEY_ROTATED"
    SIGNING_KEY_DELETED = "SIGNING_KEY_DELETED"
    SECRETS_REENCRYPTED = "SECRETS_REENCRYPTED"
    TRUSTED_ISSUER_CREATED = "TRUSTED_ISSUER_CREATED"
    TRUSTED_ISSUER_UPDATED = "TRUSTED_ISSUER_UPDATED"
    TRUSTED_ISSUER_DELETED = "TRUSTED_ISSUER_DELETED"

    @property
    def severity(self) -> Severity:
        return _SEVERITY[self]


_SEVERITY: dict[AuditEvent, Severity] = {
    AuditEvent.M2M_TOKEN_GENERATED: Severity.MEDIUM,
    AuditEvent.M2M_TOKEN_DENIED: Severity.MEDIUM,
    AuditEvent.M2M_TOKEN_USED: Severity.LOW,
    AuditEvent.M2M_TOKEN_REVOKED: Severity.MEDIUM,
    AuditEvent.TENANT_CREATED: Severity.MEDIUM,
    AuditEvent.TENANT_UPDATED: Severity.MEDIUM,
    AuditEvent.CLIENT_CREATED: Severity.MEDIUM,
    AuditEvent.CLIENT_UPDATED: Severity.MEDIUM,
    AuditEvent.CLIENT_DELETED: Severity.HIGH,
    AuditEvent.CLIENT_SECRET_ROTATED: Severity.HIGH,
    AuditEvent.CLIENT_PREVIOUS_SECRET_REVOKED: Severity.MEDIUM,
    AuditEvent.PLATFORM_BOOTSTRAPPED: Severity.HIGH,
    AuditEvent.SIGNING_KEY_CREATED: Severity.HIGH,
    AuditEvent.SIGNING_KEY_ROTATED: Severity.HIGH,
    AuditEvent.SIGNING_KEY_DELETED: Severity.HIGH,
    AuditEvent.SECRETS_REENCRYPTED: Severity.HIGH,
    AuditEvent.TRUSTED_ISSUER_CREATED: Severity.HIGH,
    AuditEvent.TRUSTED_ISSUER_UPDATED: Severity.HIGH,
    AuditEvent.TRUSTED_ISSUER_DELETED: Severity.HIGH,
}


def vocabulary(*more: Iterable[Event]) -> tuple[str, ...]:
    """Every event name the log may hold: the core's, then each connector's, in order.
    Two vocabularies may not share a name (an event means one thing)."""
    names = [event.value for event in AuditEvent]
    for events in more:
        for event in events:
            if event.value in names:
                raise ValueError(f"audit event {event.value} is declared twice")
            names.append(event.value)
    return tuple(names)


_FORBIDDEN_DETAIL_KEYS = ("secret", "token", "hash", "password", "assertion", "private")
#: Detail keys already checked and allowed (at most :data:`_ALLOWED_KEYS_KEPT`), so that
#: the token path's fixed keys are checked once, not once per event.
_ALLOWED_DETAIL_KEYS: set[str] = set()
_ALLOWED_KEYS_KEPT = 1024


def _check_detail_key(key: str) -> None:
    lowered = key.lower()
    if any(word in lowered for word in _FORBIDDEN_DETAIL_KEYS) and not lowered.endswith(
        ("_type", "_used", "kind")
    ):
        raise ValueError(f"audit details must not carry {key!r}")
    if len(_ALLOWED_DETAIL_KEYS) < _ALLOWED_KEYS_KEPT:
        _ALLOWED_DETAIL_KEYS.add(key)


def audit_row(
    event: Event,
    *,
    at: float,
    actor: str | None = None,
    tenant_id: str | None = None,
    client_id: str | None = None,
    source: str | None = None,
    request_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The column values of one audit event."""
    details = dict(details or {})
    for key in details:
        if key not in _ALLOWED_DETAIL_KEYS:
            _check_detail_key(key)
    return {
        "at": utc(at),
        "event": event.value,
        "severity": event.severity.value,
        "actor": actor,
        "tenant_id": tenant_id,
        "client_id": client_id,
        "source": source,
        "request_id": request_id,
        "details": details,
    }


async def record(target: AsyncConnection | AsyncSession, event: Event,
                 **fields: Any) -> None:
    """Insert one audit event through ``target`` -- inside the caller's transaction."""
    await audit_events.insert(target, [audit_row(event, **fields)])


async def oldest_first(connection: AsyncConnection, query: AuditQuery, *,
                       batch: int = 1000) -> AsyncIterator[dict[str, Any]]:
    """Every matching event in its public shape, oldest first (for export)."""
    async for row in audit_events.oldest_first(connection, query, batch=batch):
        yield event_json(row)


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The public shape of one event (the API's and the export's)."""
    at: datetime = row["at"]
    if at.tzinfo is None:  # SQLite hands back naive UTC
        at = at.replace(tzinfo=UTC)
    return {
        "id": row["id"], "at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": row["event"], "severity": row["severity"], "actor": row["actor"],
        "tenant_id": row["tenant_id"], "client_id": row["client_id"],
        "source": row["source"], "request_id": row["request_id"],
        "details": row["details"],
    }
