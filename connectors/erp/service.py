"""ConnectionService (configure, test, update, enable/disable) and PushService.

Each change commits with its audit event. Configurations are validated by their
connector (400 naming the field), encrypted with a fresh nonce on every
write and bound to their row (``store.associated_data``), and decrypted only to
be used. A ciphertext that fails its integrity check blocks the connection: the
caller gets :class:`~connectors.erp.errors.ConnectorBlocked`, the log and the audit log
get the connection id and the request id (never anything of the config).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from connectors.erp import store
from connectors.erp.errors import ConnectionTestFailed, ConnectorBlocked
from connectors.erp.events import ErpEvent
from connectors.erp.models import ConnectorConfig, DraftOrder
from connectors.erp.port import (
    ChecksReferences,
    ConfigError,
    ConnectorError,
    ERPConnectorPort,
    TestResult,
)
from connectors.erp.registry import ConnectorRegistry, UnknownConnectorType
from issuer import audit
from issuer.clock import Clock
from issuer.crypto import DecryptionError, Encryptor
from issuer.errors import Conflict, InvalidRequest, NotFound
from issuer.registration import Actor
from issuer.store.models import Tenant

log = logging.getLogger(__name__)

ONE_ACTIVE = "Only one active connector per org"
NO_ACTIVE = "No active connector"
TEST_PASSED = "Test file written and cleaned up successfully"


def invalid_config(error: ValidationError | ConfigError) -> InvalidRequest:
    """A refused configuration: 400, each bad field named (text and ``details.errors``)."""
    if isinstance(error, ConfigError):
        problems = [{"field": error.field, "message": error.reason}]
    else:
        problems = [{"field": ".".join(str(part) for part in item["loc"]),
                     "message": item["msg"]} for item in error.errors()]
    text = "; ".join(f"{problem['field']}: {problem['message']}" for problem in problems)
    return InvalidRequest(f"Invalid connector configuration: {text}",
                          details={"errors": problems})


class _Base:
    def __init__(self, engine: AsyncEngine, encryptor: Encryptor, registry: ConnectorRegistry,
                 clock: Clock) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._encryptor = encryptor
        self.registry = registry
        self._clock = clock

    def connector(self, connector_type: str) -> ERPConnectorPort:
        try:
            return self.registry.get(connector_type)
        except UnknownConnectorType as error:
            raise NotFound(reason=error.message) from None

    async def open_config(self, record: store.ConnectionRecord, actor: Actor
                          ) -> ConnectorConfig:
        """The decrypted, validated config of ``record``; ConnectorBlocked if it was
        altered, InvalidRequest if it is no longer valid here."""
        data = await self.decrypt(record, actor)
        if record.connector_type not in self.registry:
            raise Conflict(f"Connector type {record.connector_type} is not enabled on this "
                           "issuer")
        return self.parse(self.registry.get(record.connector_type), data)

    async def decrypt(self, record: store.ConnectionRecord, actor: Actor) -> dict[str, Any]:
        try:
            plaintext = self._encryptor.decrypt(record.config_encrypted,
                                                store.associated_data(record.id))
        except DecryptionError as error:
            log.error("ERP connection %s of org %s is blocked: its configuration failed the "
                      "integrity check (%s) request_id=%s", record.id, record.org_id, error,
                      actor.request_id)
            async with self._sessions() as session, session.begin():
                await audit.record(session, ErpEvent.ERP_CONNECTION_BLOCKED,
                                   at=self._clock.now(), tenant_id=record.org_id,
                                   details={"connection_id": str(record.id),
                                            "connector_type": record.connector_type,
                                            "reason": "decryption_failed"},
                                   **actor.audit_fields())
            raise ConnectorBlocked(reason="decryption_failed") from None
        data: dict[str, Any] = json.loads(plaintext)
        return data

    @staticmethod
    def parse(connector: ERPConnectorPort, data: Mapping[str, Any]) -> ConnectorConfig:
        try:
            return connector.parse_config(data)
        except (ValidationError, ConfigError) as error:
            raise invalid_config(error) from None

    @classmethod
    async def parse_for(cls, connector: ERPConnectorPort, data: Mapping[str, Any],
                        org_id: str) -> ConnectorConfig:
        """``data`` parsed, and whatever it names checked to be ``org_id``'s own: every
        config written or tested for an org comes through here."""
        config = cls.parse(connector, data)
        if isinstance(connector, ChecksReferences):
            await connector.check_references(config, org_id=org_id)
        return config

    def seal(self, connection_id: uuid.UUID, config: ConnectorConfig) -> bytes:
        plaintext = config.plaintext()
        return self._encryptor.encrypt(json.dumps(plaintext, separators=(",", ":")).encode(),
                                       store.associated_data(connection_id))

    async def visible(self, connection_id: uuid.UUID, sees: Any) -> store.ConnectionRecord:
        """The connection, if the caller may see it; another org's is a 404."""
        async with self._sessions() as session:
            record = await store.get_connection(session, connection_id)
        if record is None or not sees(record.org_id):
            raise NotFound(reason="unknown_or_other_org_connection")
        return record


@dataclass(frozen=True)
class Created:
    connection: store.ConnectionRecord
    test: TestResult | None


class ConnectionService(_Base):
    async def create(self, org_id: str, connector_type: str, data: Mapping[str, Any], *,
                     test_on_save: bool, actor: Actor) -> Created:
        connector = self.connector(connector_type)
        config = await self.parse_for(connector, data, org_id)
        async with self._sessions() as session:
            if await session.get(Tenant, org_id) is None:
                raise NotFound(reason="unknown_org")
        result = None
        if test_on_save:
            result = await self._test(connector, config, org_id, connector_type, None, actor)
        connection_id = uuid.uuid4()
        now = self._clock.now()
        try:
            async with self._sessions() as session, session.begin():
                await store.insert_connection(
                    session, connection_id=connection_id, org_id=org_id,
                    connector_type=connector_type, config_encrypted=self.seal(connection_id,
                                                                              config),
                    now=now, tested=result is not None)
                await self._audit(session, ErpEvent.ERP_CONNECTION_CREATED, org_id, actor,
                                  connection_id=str(connection_id),
                                  connector_type=connector_type, tested=result is not None)
                created = await store.get_connection(session, connection_id)
        except IntegrityError:
            raise Conflict(ONE_ACTIVE) from None
        assert created is not None
        return Created(created, result)

    async def update(self, connection_id: uuid.UUID, changes: Mapping[str, Any], *, sees: Any,
                     actor: Actor) -> store.ConnectionRecord:
        """Merge ``changes`` into the config (null resets a field), validate the whole,
        re-encrypt with a fresh nonce. Only the merged config must be valid: a stored
        one that no longer is (a rule tightened since) can be mended this way."""
        record = await self.visible(connection_id, sees)
        connector = self.connector(record.connector_type)
        before = await self.decrypt(record, actor)
        config = await self.parse_for(connector, {**before, **changes}, record.org_id)
        after = config.plaintext()
        changed = sorted(name for name in changes if before.get(name) != after.get(name))
        async with self._sessions() as session, session.begin():
            if not await store.replace_config(session, record.id, old=record.config_encrypted,
                                              new=self.seal(record.id, config),
                                              now=self._clock.now()):
                raise Conflict("The connection changed meanwhile; retry")
            await self._audit(session, ErpEvent.ERP_CONNECTION_UPDATED, record.org_id, actor,
                              connection_id=str(record.id), fields=changed)
            updated = await store.get_connection(session, record.id)
        assert updated is not None
        return updated

    async def set_status(self, connection_id: uuid.UUID, status: str, *, sees: Any,
                         actor: Actor) -> store.ConnectionRecord:
        record = await self.visible(connection_id, sees)
        if record.status == status:
            return record
        event = (ErpEvent.ERP_CONNECTION_ENABLED if status == store.ACTIVE
                 else ErpEvent.ERP_CONNECTION_DISABLED)
        try:
            async with self._sessions() as session, session.begin():
                if not await store.set_status(session, record.id, old=record.status, new=status,
                                              now=self._clock.now()):
                    raise Conflict("The connection changed meanwhile; retry")
                await self._audit(session, event, record.org_id, actor,
                                  connection_id=str(record.id))
                updated = await store.get_connection(session, record.id)
        except IntegrityError:
            raise Conflict(ONE_ACTIVE) from None
        assert updated is not None
        return updated

    async def test(self, org_id: str, connector_type: str, data: Mapping[str, Any] | None, *,
                   actor: Actor) -> TestResult:
        """Test ``data`` (not saved), or else the org's active connection of that type
        (its ``last_test_at`` is set when the test passes). A failure raises
        ConnectionTestFailed with the connector's message."""
        connector = self.connector(connector_type)
        if data is not None:
            return await self._test(connector, await self.parse_for(connector, data, org_id),
                                    org_id, connector_type, None, actor)
        async with self._sessions() as session:
            record = await store.active_connection(session, org_id)
        if record is None or record.connector_type != connector_type:
            raise Conflict(f"{NO_ACTIVE} of type {connector_type}")
        config = await self.open_config(record, actor)
        return await self._test(connector, config, org_id, connector_type, record, actor)

    async def _test(self, connector: ERPConnectorPort, config: ConnectorConfig, org_id: str,
                    connector_type: str, record: store.ConnectionRecord | None,
                    actor: Actor) -> TestResult:
        try:
            result = await connector.test_connection(config, org_id=org_id)
        except Exception as failure:  # a connector's bug must not become a 500
            log.error("connector %s raised %s testing a connection of org %s request_id=%s",
                      connector_type, type(failure).__name__, org_id, actor.request_id)
            result = TestResult(False, f"Unexpected connector error ({type(failure).__name__})",
                                0.0)
        async with self._sessions() as session, session.begin():
            if record is not None and result.success:
                await store.record_test(session, record.id, self._clock.now())
            await self._audit(session, ErpEvent.ERP_CONNECTION_TESTED, org_id, actor,
                              connection_id=str(record.id) if record else None,
                              connector_type=connector_type, success=result.success,
                              error=result.error_message, latency_ms=result.latency_ms)
        if not result.success:
            raise ConnectionTestFailed(result.error_message or "The connection test failed",
                                       details={"success": False,
                                                "message": result.error_message,
                                                "latency_ms": result.latency_ms})
        return result

    async def decrypt_for_operator(self, connection_id: uuid.UUID, operator: str
                                   ) -> dict[str, Any]:
        """The stored config, decrypted as it is (valid here or not), for
        ``issuer decrypt-connector-config``; audited, the config never in the event."""
        record = await self.visible(connection_id, lambda org_id: True)
        actor = Actor(operator)
        data = await self.decrypt(record, actor)
        async with self._sessions() as session, session.begin():
            await self._audit(session, ErpEvent.ERP_CONNECTION_DECRYPTED, record.org_id,
                              actor, connection_id=str(record.id),
                              connector_type=record.connector_type)
        return data

    async def _audit(self, session: AsyncSession, event: ErpEvent, org_id: str,
                     actor: Actor, **details: Any) -> None:
        await audit.record(session, event, at=self._clock.now(), tenant_id=org_id,
                           details=details, **actor.audit_fields())


class PushService(_Base):
    async def push(self, org_id: str, draft_order: DraftOrder, *, actor: Actor
                   ) -> store.ExportRecord:
        """Export through the org's ACTIVE connection and record the outcome; a
        connector's failure is a FAILED export (``error_json``), never a 500."""
        if draft_order.org_id != org_id:
            raise InvalidRequest("draft_order.org_id is not the org the push is for",
                                 details={"errors": [{"field": "draft_order.org_id",
                                                      "message": "not the org's"}]})
        async with self._sessions() as session:
            record = await store.active_connection(session, org_id)
        if record is None:
            raise Conflict(NO_ACTIVE)
        config = await self.open_config(record, actor)
        started = self._clock.now()
        connector = self.registry.get(record.connector_type)
        export_id, error, result = uuid.uuid4(), None, None
        try:
            result = await connector.export(draft_order, config, org_id=org_id)
        except ConnectorError as failure:
            error = {"code": failure.code, "message": failure.message}
        except Exception as failure:  # a connector's bug must not become a 500
            # The type only: an exception's text may quote the configuration.
            log.error("connector %s raised %s exporting order %s request_id=%s",
                      record.connector_type, type(failure).__name__, draft_order.id,
                      actor.request_id)
            error = {"code": "connector_exception",
                     "message": f"Unexpected connector error ({type(failure).__name__})"}
        if result is not None:
            export_id = result.export_id
            if not result.success:
                error = {"code": "export_failed",
                         "message": result.error_message or "The export failed"}
        metadata = dict(result.connector_metadata) if result is not None else {}
        exported = store.ExportRecord(
            id=export_id, org_id=org_id, connection_id=record.id,
            connector_type=record.connector_type, draft_order_id=draft_order.id,
            status=store.FAILED if error else store.SUCCESS, error_json=error,
            dropzone_path=metadata.get("dropzone_path") if not error else None,
            storage_key=result.storage_key if result is not None and not error else None,
            connector_metadata=metadata, created_at=started, completed_at=self._clock.now())
        async with self._sessions() as session, session.begin():
            await store.insert_export(session, exported)
            await audit.record(
                session, ErpEvent.ERP_EXPORT_FAILED if error else ErpEvent.ERP_EXPORT_SUCCEEDED,
                at=exported.completed_at, tenant_id=org_id, details={
                    "export_id": str(exported.id), "connection_id": str(record.id),
                    "connector_type": record.connector_type,
                    "draft_order_id": str(draft_order.id),
                    "dropzone_path": exported.dropzone_path, "error": error,
                    **(result.audit_details if result is not None and not error else {})},
                **actor.audit_fields())
        return exported

    async def get(self, export_id: uuid.UUID, *, sees: Any) -> store.ExportRecord:
        async with self._sessions() as session:
            record = await store.get_export(session, export_id)
        if record is None or not sees(record.org_id):
            raise NotFound(reason="unknown_or_other_org_export")
        return record


@dataclass(frozen=True)
class ErpServices:
    """What the ERP routes use (``connectors.erp.connector.ERP``), built by its lifespan."""

    engine: AsyncEngine
    registry: ConnectorRegistry
    connections: ConnectionService
    pushes: PushService

    @classmethod
    def build(cls, engine: AsyncEngine, encryptor: Encryptor, registry: ConnectorRegistry,
              clock: Clock) -> ErpServices:
        return cls(engine, registry, ConnectionService(engine, encryptor, registry, clock),
                   PushService(engine, encryptor, registry, clock))
