"""Certificate rotation with an overlap window.

1. ``initiate``: a secondary key pair and certificate; the certificate (PEM) is
   uploaded to NetSuite for the same application, entity and role, next to the
   current one ("Several active certificates for the same mapping all work at once").
2. ``confirm(certificate_id)``: NetSuite's Certificate ID of the new certificate. The
   secondary becomes primary and active, new assertions carry the new ``kid``, the old
   private key is deleted and the token cache is busted. Then the old certificate is
   removed from NetSuite once tokens issued under it have run out (at most 60 min).
3. ``cancel``: discard a pending secondary.

Two confirmations can never both win: with Redis the first holds
``netsuite_m2m_rotation_lock:{id}`` (30 s) and the others get 503 at once; in every
case the promotion is a conditional UPDATE on the state it read (``secondary_key_id``
and ``rotation_initiated_at``), so of two racing promotions exactly one changes the
row -- the only guard without Redis.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from connectors.netsuite import store
from connectors.netsuite.cache import LockHeld
from connectors.netsuite.connector import ConnectorRecord, check_certificate_id
from connectors.netsuite.errors import (
    InvalidConnector,
    NoKeyPair,
    NoRotationInProgress,
    RotationBusy,
    RotationInProgress,
)
from connectors.netsuite.events import NetSuiteEvent
from connectors.netsuite.keys import certificate_pem, new_key_id
from issuer.registration import Actor

if TYPE_CHECKING:
    from connectors.netsuite.service import NetSuiteM2MService, Visible

log = logging.getLogger(__name__)
CONFIRMED = "Certificate rotation complete. Remove the old certificate from NetSuite."


async def initiate(service: NetSuiteM2MService, connector_id: str, actor: Actor,
                   visible: Visible) -> str:
    """A secondary key pair; returns its certificate (PEM) to upload to NetSuite."""
    record = await service.get(connector_id, visible)
    if record.primary_key_id is None:
        raise NoKeyPair()
    if record.rotation_in_progress:
        raise RotationInProgress()
    key, certificate = await service.make_key(record)
    key_id = new_key_id()
    now = service.clock.now()
    async with service.transaction() as session:
        won = await store.change(session, connector_id,
                                 {"secondary_key_id": key_id, "rotation_initiated_at": now,
                                  "pending_certificate_id": None},
                                 now, expect={"secondary_key_id": None})
        if not won:
            raise RotationInProgress()
        await service.store_key(session, record, key_id, key, certificate)
        await service.audit(session, NetSuiteEvent.NETSUITE_ROTATION_INITIATED, record, actor,
                            key_id=key_id, certificate_not_after=certificate
                            .not_valid_after_utc.isoformat())
    return certificate_pem(certificate)


async def confirm(service: NetSuiteM2MService, connector_id: str, certificate_id: str,
                  actor: Actor, visible: Visible) -> ConnectorRecord:
    """Promote the secondary key, now known to NetSuite as ``certificate_id``."""
    check_certificate_id(certificate_id)
    record = await service.get(connector_id, visible)
    if not record.rotation_in_progress:
        raise NoRotationInProgress()
    try:
        async with service.locks.rotation(connector_id):
            return await promote(service, connector_id, certificate_id, actor)
    except LockHeld:
        raise RotationBusy() from None


async def promote(service: NetSuiteM2MService, connector_id: str, certificate_id: str,
                  actor: Actor, *, retire: tuple[str, float] | None = None) -> ConnectorRecord:
    """The switch. ``retire``: (old Certificate ID, when to revoke it at NetSuite), for an
    automatic rotation; a manual one leaves the old certificate to the person."""
    async with service.transaction() as session:
        current = await service.load(session, connector_id)
        new_key = current.secondary_key_id
        if new_key is None:
            raise NoRotationInProgress()
        if certificate_id == current.active_certificate_id:
            raise InvalidConnector("that is the current certificate's ID: give the new "
                                   "certificate's", "certificate_id")
        stored = await service.kms.describe(session, tenant_id=current.tenant_id,
                                            connector_id=connector_id, key_id=new_key)
        won = await store.change(
            session, connector_id,
            {"primary_key_id": new_key, "active_key_id": new_key, "secondary_key_id": None,
             "active_certificate_id": certificate_id, "pending_certificate_id": None,
             "rotation_initiated_at": None,
             "certificate_expires_at": stored.certificate_not_after.timestamp(),
             **({"retiring_certificate_id": retire[0],
                 "retiring_certificate_revoke_at": retire[1]} if retire else {})},
            service.clock.now(),
            expect={"secondary_key_id": new_key,
                    "rotation_initiated_at": current.rotation_initiated_at})
        if not won:  # another confirmation or a cancellation came first
            raise NoRotationInProgress()
        await service.audit(session, NetSuiteEvent.NETSUITE_ROTATION_CONFIRMED, current, actor,
                            key_id=new_key, previous_key_id=current.primary_key_id,
                            certificate_id=certificate_id,
                            previous_certificate_id=current.active_certificate_id,
                            automatic=retire is not None)
        promoted = await service.load(session, connector_id)
    for old in {current.primary_key_id, current.active_key_id} - {None, new_key}:
        assert old is not None
        await _delete_key(service, current, old)
    await service.bust_token_cache(connector_id)
    return promoted


async def cancel(service: NetSuiteM2MService, connector_id: str, actor: Actor,
                 visible: Visible) -> ConnectorRecord:
    """Discard the pending secondary key; the primary stays as it was."""
    record = await service.get(connector_id, visible)
    secondary = record.secondary_key_id
    if secondary is None:
        raise NoRotationInProgress()
    async with service.transaction() as session:
        won = await store.change(session, connector_id,
                                 {"secondary_key_id": None, "rotation_initiated_at": None,
                                  "pending_certificate_id": None},
                                 service.clock.now(), expect={"secondary_key_id": secondary})
        if not won:
            raise NoRotationInProgress()
        await service.audit(session, NetSuiteEvent.NETSUITE_ROTATION_CANCELLED, record, actor,
                            key_id=secondary)
        cancelled = await service.load(session, connector_id)
    await _delete_key(service, record, secondary)
    return cancelled


async def _delete_key(service: NetSuiteM2MService, record: ConnectorRecord,
                      key_id: str) -> None:
    """A key no longer in use; a failure is logged (the row is harmless), not raised."""
    try:
        await service.kms.delete(tenant_id=record.tenant_id, connector_id=record.id,
                                 key_id=key_id)
    except Exception:
        log.exception("could not delete NetSuite key %s of connector %s", key_id, record.id)
