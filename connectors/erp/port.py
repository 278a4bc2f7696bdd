"""The seam every ERP connector implements.

A connector turns an approved :class:`~connectors.erp.models.DraftOrder` into
whatever its ERP reads, and can prove a configuration works before anything is
pushed through it. Every connector answers with the same two shapes:
connector-specific facts go in ``connector_metadata`` (``dropzone_path`` for
DROPZONE_JSON_V1), never new fields.

``export`` and ``test_connection`` are told the org they act for (``org_id``), so a
connector that keeps orgs apart on a shared resource (DROPZONE_JSON_V1's folders
on the issuer's filesystem) decides by the caller's org, never by the config.

Messages a connector puts in :class:`ConnectorError`, ``ExportResult.error_message``
and ``TestResult.error_message`` reach API callers and the audit log: they name
what failed, never a credential.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from connectors.erp.models import ConnectorConfig, DraftOrder


class ConnectorError(Exception):
    """A connector could not do its work; ``message`` is safe to show to the org."""

    def __init__(self, message: str, *, code: str = "connector_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ConfigError(ConnectorError):
    """A configuration the connector refuses; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", code="invalid_config")
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class ExportResult:
    success: bool
    export_id: uuid.UUID
    error_message: str | None = None
    storage_key: str | None = None
    connector_metadata: dict[str, Any] = field(default_factory=dict)
    #: Facts the export's audit event carries besides the common ones (e.g. the ERP's
    #: record id); never a credential.
    audit_details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class

    success: bool
    error_message: str | None
    latency_ms: float


class ERPConnectorPort(Protocol):
    """What the registry holds for each ``connector_type``."""

    #: The pydantic model of this connector's configuration (validates API bodies
    #: and every decrypted config before use). Read-only, so that a connector may
    #: name its own subclass.
    @property
    def config_model(self) -> type[ConnectorConfig]: ...

    def parse_config(self, data: Mapping[str, Any]) -> ConnectorConfig:
        """``data`` as this connector's config; :class:`ConfigError` or
        ``pydantic.ValidationError`` naming the field otherwise."""
        ...

    async def export(self, draft_order: DraftOrder, config: Any, *, org_id: str
                     ) -> ExportResult:
        """Deliver the order for ``org_id``; raise :class:`ConnectorError` (or return
        a failed result) when it could not be delivered."""
        ...

    async def test_connection(self, config: Any, *, org_id: str) -> TestResult:
        """Prove ``config`` works end to end for ``org_id`` without delivering an
        order."""
        ...


@runtime_checkable
class ChecksReferences(Protocol):
    """A connector whose config names other org-scoped resources (another connector,
    say): they are checked to be ``org_id``'s own whenever a config is written."""

    async def check_references(self, config: Any, *, org_id: str) -> None:
        """Raise the resource's not-found error unless everything ``config`` names
        belongs to ``org_id``."""
        ...
