"""``connector_type`` -> connector: filled by the app factory, read on every push.

Nothing registers itself on import: ``issuer.app`` builds the registry in its
lifespan from the settings (DROPZONE_JSON_V1 always, MOCK only when
``ISSUER_ERP_MOCK_CONNECTOR`` is on). Resolution is one dict lookup
(``bench/erp_registry.py`` measures it against a bare dict).
"""

from __future__ import annotations

from connectors.erp.port import ConnectorError, ERPConnectorPort

DROPZONE_JSON_V1 = "DROPZONE_JSON_V1"
MOCK = "MOCK"


class UnknownConnectorType(ConnectorError):
    def __init__(self, connector_type: str, known: tuple[str, ...]) -> None:
        super().__init__(f"Unknown connector type {connector_type!r} (registered: "
                         f"{', '.join(known) or 'none'})", code="unknown_connector_type")
        self.connector_type = connector_type


class ConnectorRegistry:
    def __init__(self) -> None:
        self._connectors: dict[str, ERPConnectorPort] = {}

    def register(self, connector_type: str, connector: ERPConnectorPort) -> None:
        if connector_type in self._connectors:
            raise ValueError(f"connector type {connector_type!r} is registered already")
        self._connectors[connector_type] = connector

    def get(self, connector_type: str) -> ERPConnectorPort:
        try:
            return self._connectors[connector_type]
        except KeyError:
            raise UnknownConnectorType(connector_type, self.types()) from None

    def types(self) -> tuple[str, ...]:
        return tuple(sorted(self._connectors))

    def __contains__(self, connector_type: object) -> bool:
        return connector_type in self._connectors
