"""ERP connector framework: a registry of connectors behind one port,
org connections stored encrypted, connection tests, and pushes of draft orders.

``issuer.app`` builds the registry and mounts :mod:`connectors.erp.routes`.
"""

from connectors.erp.dropzone import DropzoneConnector
from connectors.erp.mock import MockConnector
from connectors.erp.models import DraftOrder, DropzoneConfig, MockConfig
from connectors.erp.port import (
    ConfigError,
    ConnectorError,
    ERPConnectorPort,
    ExportResult,
    TestResult,
)
from connectors.erp.registry import DROPZONE_JSON_V1, MOCK, ConnectorRegistry
from connectors.erp.service import ConnectionService, ErpServices, PushService

__all__ = [
    "DROPZONE_JSON_V1",
    "MOCK",
    "ConfigError",
    "ConnectionService",
    "ConnectorError",
    "ConnectorRegistry",
    "DraftOrder",
    "DropzoneConfig",
    "DropzoneConnector",
    "ERPConnectorPort",
    "ErpServices",
    "ExportResult",
    "MockConfig",
    "MockConnector",
    "PushService",
    "TestResult",
]
