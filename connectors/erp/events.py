"""The ERP connector's audit events, registered into the issuer's vocabulary
(``Connector.audit_events``)."""

from __future__ import annotations

from issuer.audit import Event, Severity


class ErpEvent(Event):
    ERP_CONNECTION_CREATED = "ERP_CONNECTION_CREATED"
    ERP_CONNECTION_UPDATED = "ERP_CONNECTION_UPDATED"
    ERP_CONNECTION_ENABLED = "ERP_CONNECTION_ENABLED"
    ERP_CONNECTION_DISABLED = "ERP_CONNECTION_DISABLED"
    ERP_CONNECTION_TESTED = "ERP_CONNECTION_TESTED"
    ERP_CONNECTION_DECRYPTED = "ERP_CONNECTION_DECRYPTED"
    ERP_CONNECTION_BLOCKED = "ERP_CONNECTION_BLOCKED"
    ERP_EXPORT_SUCCEEDED = "ERP_EXPORT_SUCCEEDED"
    ERP_EXPORT_FAILED = "ERP_EXPORT_FAILED"

    @property
    def severity(self) -> Severity:
        return _SEVERITY[self]


_SEVERITY: dict[ErpEvent, Severity] = {
    ErpEvent.ERP_CONNECTION_CREATED: Severity.MEDIUM,
    ErpEvent.ERP_CONNECTION_UPDATED: Severity.MEDIUM,
    ErpEvent.ERP_CONNECTION_ENABLED: Severity.MEDIUM,
    ErpEvent.ERP_CONNECTION_DISABLED: Severity.MEDIUM,
    ErpEvent.ERP_CONNECTION_TESTED: Severity.LOW,
    ErpEvent.ERP_CONNECTION_DECRYPTED: Severity.HIGH,
    ErpEvent.ERP_CONNECTION_BLOCKED: Severity.HIGH,
    ErpEvent.ERP_EXPORT_SUCCEEDED: Severity.LOW,
    ErpEvent.ERP_EXPORT_FAILED: Severity.MEDIUM,
}
