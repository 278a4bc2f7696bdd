"""The ERP connector as the issuer hosts it (``issuer.connector.Connector``): its
endpoints, tables, audit events, encrypted column, commands, and the services its
routes read (:data:`ERP_SERVICES`), built per app from the settings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.erp import cli, routes, tables
from connectors.erp.dropzone import DropzoneConnector
from connectors.erp.events import ErpEvent
from connectors.erp.mock import MockConnector
from connectors.erp.netsuite_rest import NETSUITE_REST_V1, NetSuiteRequests, NetSuiteRestConnector
from connectors.erp.netsuite_rest import routes as netsuite_rest_routes
from connectors.erp.registry import DROPZONE_JSON_V1, MOCK, ConnectorRegistry
from connectors.erp.service import ErpServices
from connectors.erp.state import ERP_SERVICES
from connectors.erp.store import associated_data
from connectors.netsuite.state import NETSUITE_SERVICE
from issuer.admin.http import Endpoint
from issuer.clock import Clock
from issuer.connector import Commands, ConnectorContext
from issuer.errors import Translation
from issuer.outbound import OutboundPolicy
from issuer.reencrypt import EncryptedColumn
from issuer.settings import Settings

#: The config, credentials included, bound to its row (``erp_connection:<id>``).
CONFIG_COLUMN = EncryptedColumn(
    tables.ErpConnectionRow.__table__, "id", "config_encrypted",
    lambda row: associated_data(uuid.UUID(str(row["id"]))))


def registry(settings: Settings, clock: Clock) -> ConnectorRegistry:
    """The ERP connectors this issuer offers: built here, never by import side effect."""
    built = ConnectorRegistry()
    built.register(DROPZONE_JSON_V1, DropzoneConnector(
        clock, settings.erp_dropzone_root,
        outbound=OutboundPolicy.allowing(settings.outbound_allowed_networks)))
    if settings.erp_mock_connector:  # tests and demos only (refused in production)
        built.register(MOCK, MockConnector())
    return built


@dataclass(frozen=True)
class ErpConnector:
    name: str = "erp"
    #: NETSUITE_REST_V1's ahead of the generic ``/api/v1/connectors/{connector}``.
    endpoints: tuple[Endpoint, ...] = (*netsuite_rest_routes.endpoints, *routes.endpoints)
    tables: tuple[Table, ...] = tables.TABLES
    audit_events: tuple[ErpEvent, ...] = tuple(ErpEvent)
    encrypted_columns: tuple[EncryptedColumn, ...] = (CONFIG_COLUMN,)
    #: Its refusals are rows of the table already (``connectors.erp.errors``).
    errors: Mapping[type[Exception], Translation] = field(default_factory=dict)
    command_errors: Mapping[type[Exception], Callable[[Exception], str]] = field(
        default_factory=dict)

    def register_commands(self, commands: Commands) -> None:
        cli.register(commands)

    async def migration_notes(self, settings: Settings, engine: AsyncEngine) -> list[str]:
        return await cli.migration_notes(settings, engine)

    @asynccontextmanager
    async def lifespan(self, context: ConnectorContext) -> AsyncIterator[Mapping[str, object]]:
        built = registry(context.settings, context.clock)
        netsuite = NETSUITE_SERVICE.of(context.state)
        if netsuite is not None:  # NETSUITE_REST_V1 works through the NetSuite connector
            built.register(NETSUITE_REST_V1, NetSuiteRestConnector(
                netsuite, NetSuiteRequests(context.metrics.registry)))
        yield ERP_SERVICES.entry(ErpServices.build(context.engine, context.encryptor, built,
                                                   context.clock))


ERP = ErpConnector()
