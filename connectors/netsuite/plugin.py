"""The NetSuite connector as the issuer hosts it (``issuer.connector.Connector``): its
endpoints, tables, audit events, encrypted column, error-table entries, commands, and
the service its routes read (:data:`NETSUITE_SERVICE`), built per app and maintained
in the background while the app runs (certificate revocation after an overlap, expiry
warnings)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.netsuite import cli, routes, tables
from connectors.netsuite.errors import ConnectorNotFound, NetSuiteError
from connectors.netsuite.events import NetSuiteEvent
from connectors.netsuite.kms import bound
from connectors.netsuite.service import from_settings
from connectors.netsuite.state import NETSUITE_SERVICE
from connectors.netsuite.token_client import TokenRequestFailed
from issuer.admin.http import Endpoint
from issuer.connector import Commands, ConnectorContext
from issuer.errors import Translation
from issuer.reencrypt import EncryptedColumn
from issuer.settings import Settings

#: Connectors' private keys, bound to their tenant, connector and key id (``kms.py``).
PRIVATE_KEY_COLUMN = EncryptedColumn(
    tables.EncryptedKeyRow.__table__, "key_id", "private_key_encrypted",
    lambda row: bound(row["tenant_id"], row["connector_id"], row["key_id"]),
    context=("tenant_id", "connector_id"))

COMMAND_ERRORS: dict[type[Exception], Callable[[Exception], str]] = {
    ConnectorNotFound: lambda error: f"no NetSuite connector {error}",
    NetSuiteError: str,
    TokenRequestFailed: str,
}


@dataclass(frozen=True)
class NetSuiteConnector:
    name: str = "netsuite"
    endpoints: tuple[Endpoint, ...] = tuple(routes.endpoints)
    tables: tuple[Table, ...] = tables.TABLES
    audit_events: tuple[NetSuiteEvent, ...] = tuple(NetSuiteEvent)
    encrypted_columns: tuple[EncryptedColumn, ...] = (PRIVATE_KEY_COLUMN,)
    errors: Mapping[type[Exception], Translation] = field(
        default_factory=lambda: dict(routes.ERRORS))
    command_errors: Mapping[type[Exception], Callable[[Exception], str]] = field(
        default_factory=lambda: dict(COMMAND_ERRORS))

    def register_commands(self, commands: Commands) -> None:
        cli.register(commands)

    async def migration_notes(self, settings: Settings, engine: AsyncEngine) -> list[str]:
        return []

    @asynccontextmanager
    async def lifespan(self, context: ConnectorContext) -> AsyncIterator[Mapping[str, object]]:
        service = from_settings(context.settings, engine=context.engine,
                                encryptor=context.encryptor, clock=context.clock,
                                http=context.outbound, redis=context.redis,
                                **({"sleep": context.sleep} if context.sleep else {}))
        context.metrics.watch_value(
            "issuer_netsuite_certificates_expiring",
            "NetSuite connector certificates that expire within 60 days",
            lambda: float(service.expiring_certificates))
        async with service.maintained():
            yield NETSUITE_SERVICE.entry(service)


NETSUITE = NetSuiteConnector()
