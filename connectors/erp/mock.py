"""MOCK: a connector that delivers nowhere (tests and demos).

Registered only when ``ISSUER_ERP_MOCK_CONNECTOR`` is on (never in production). It
keeps the orders it was given, in order, so a test can see exactly what was pushed;
``MockConfig.fail`` makes it fail like a broken ERP would.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from connectors.erp.models import DraftOrder, MockConfig
from connectors.erp.port import ConnectorError, ExportResult, TestResult


class MockConnector:
    config_model = MockConfig

    def __init__(self) -> None:
        self.exported: list[DraftOrder] = []

    def parse_config(self, data: Mapping[str, Any]) -> MockConfig:
        return MockConfig.model_validate(data)

    async def export(self, draft_order: DraftOrder, config: MockConfig, *, org_id: str
                     ) -> ExportResult:
        if config.fail:
            raise ConnectorError(config.error_message)
        self.exported.append(draft_order)
        return ExportResult(success=True, export_id=uuid.uuid4(),
                            storage_key=f"mock/{draft_order.id}.json",
                            connector_metadata={"mock": True,
                                                "position": len(self.exported)})

    async def test_connection(self, config: MockConfig, *, org_id: str) -> TestResult:
        if config.fail:
            return TestResult(False, config.error_message, 0.0)
        return TestResult(True, None, 0.0)
