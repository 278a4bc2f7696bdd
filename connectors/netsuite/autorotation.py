"""Automatic rotation end to end through NetSuite's certificate API, and the certificates' upkeep.

``auto``: a new key pair; its certificate uploaded with the connector's current token
for the same entity and role; the new Certificate ID proven by one token request with
the new key *before* anything switches (a refused one is revoked again and the rotation
discarded); then the switch, exactly as a confirmation, and the old certificate kept
until ``overlap`` has passed -- at least the 60-minute lifetime of tokens issued under it.

``maintain`` (every minute, from the app's lifespan): revokes old certificates whose
overlap is over, and warns once per certificate -- an audit event, a log line and the
``expiring_certificates`` gauge -- when one expires within 60 days (NetSuite e-mails its
administrators only from 2 months before, and not at all for short certificates).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from connectors.netsuite import rotation, store
from connectors.netsuite.accounts import check_url
from connectors.netsuite.auth import NetSuiteAuth
from connectors.netsuite.cache import LockHeld
from connectors.netsuite.certificates_api import CertificateApi, CertificateApiFailed
from connectors.netsuite.connector import ConnectorRecord
from connectors.netsuite.errors import (
    InvalidConnector,
    NetSuiteError,
    NoCertificateId,
    RotationBusy,
)
from connectors.netsuite.events import NetSuiteEvent
from connectors.netsuite.token_client import TokenRequestFailed
from issuer.background import every
from issuer.clock import utc
from issuer.registration import Actor

if TYPE_CHECKING:
    from connectors.netsuite.service import NetSuiteM2MService, Visible

log = logging.getLogger(__name__)
TOKEN_LIFETIME = 3600
#: Default overlap: NetSuite's token lifetime plus five minutes of clock skew.
DEFAULT_OVERLAP = TOKEN_LIFETIME + 300
WARN_BEFORE_DAYS = 60
SCHEDULER = Actor("scheduler")


class AutoRotationUnavailable(NetSuiteError):
    """The connector cannot rotate by itself now; the message says why."""


def _api(service: NetSuiteM2MService, record: ConnectorRecord) -> CertificateApi:
    base = check_url(record.restlets_base_url, service.allowed_hosts)
    return CertificateApi(service.http, NetSuiteAuth(service, record.id), base, record.client_id)


async def auto(service: NetSuiteM2MService, connector_id: str, *, entity: int, role: int,
               actor: Actor, visible: Visible,
               overlap: int = DEFAULT_OVERLAP) -> ConnectorRecord:
    if overlap < TOKEN_LIFETIME:
        raise InvalidConnector("the overlap is at least the 3600 s lifetime of NetSuite's "
                               "tokens", "overlap_seconds")
    record = await service.get(connector_id, visible)
    if record.active_certificate_id is None:
        raise NoCertificateId()
    if "rest_webservices" not in record.scopes:
        raise AutoRotationUnavailable("NetSuite's certificate API needs the rest_webservices "
                                      "scope")
    if record.retiring_certificate_id is not None:
        raise AutoRotationUnavailable("the previous certificate is still to be revoked "
                                      "(after its overlap); rotate again after that")
    api = _api(service, record)
    pem = await rotation.initiate(service, connector_id, actor, visible)
    pending = await service.get(connector_id)
    try:
        certificate_id = await api.upload(pem, entity=entity, role=role)
    except (CertificateApiFailed, TokenRequestFailed):
        await rotation.cancel(service, connector_id, actor, visible)
        raise
    async with service.transaction() as session:  # should we stop here, a person can confirm
        await store.change(session, connector_id, {"pending_certificate_id": certificate_id},
                           service.clock.now(), expect={"secondary_key_id":
                                                        pending.secondary_key_id})
    try:  # the new certificate must work before anything switches to it
        token = await service.authenticate(replace(
            pending, active_key_id=pending.secondary_key_id, active_certificate_id=certificate_id))
    except TokenRequestFailed:
        with contextlib.suppress(CertificateApiFailed, TokenRequestFailed):
            await api.revoke(certificate_id)
        await rotation.cancel(service, connector_id, actor, visible)
        raise
    try:
        async with service.locks.rotation(connector_id):
            promoted = await rotation.promote(
                service, connector_id, certificate_id, actor,
                retire=(record.active_certificate_id, service.clock.now() + overlap))
    except LockHeld:
        raise RotationBusy() from None
    await service.cache.put(connector_id, token)
    return promoted


async def revoke_due(service: NetSuiteM2MService) -> list[str]:
    """Revoke at NetSuite every old certificate whose overlap is over; their ids."""
    now = service.clock.now()
    async with service.transaction() as session:
        due = await store.due_revocations(session, now)
    revoked = []
    for record in due:
        old = record.retiring_certificate_id
        assert old is not None
        try:
            async with service.locks.rotation(record.id):
                await _api(service, record).revoke(old)
                async with service.transaction() as session:
                    won = await store.change(
                        session, record.id, {"retiring_certificate_id": None,
                                             "retiring_certificate_revoke_at": None},
                        service.clock.now(), expect={"retiring_certificate_id": old})
                    if won:
                        await service.audit(session, NetSuiteEvent.NETSUITE_CERTIFICATE_REVOKED,
                                            record, SCHEDULER, certificate_id=old)
                        revoked.append(old)
        except LockHeld:
            continue  # another process is at it
        except (NetSuiteError, TokenRequestFailed, InvalidConnector) as error:
            log.warning("could not revoke NetSuite certificate %s of connector %s: %s", old,
                        record.id, error)
    return revoked


async def check_expiry(service: NetSuiteM2MService) -> list[ConnectorRecord]:
    """Warn once per certificate expiring within 60 days; the connectors warned about now.
    ``service.expiring_certificates`` is how many expire within 60 days (a gauge)."""
    now = service.clock.now()
    async with service.transaction() as session:
        expiring = await store.expiring(session, now + WARN_BEFORE_DAYS * 86400)
    service.expiring_certificates = len(expiring)
    warned = []
    for record in expiring:
        if record.expiry_warned_certificate_id == record.active_certificate_id:
            continue
        assert record.certificate_expires_at is not None
        days = int((record.certificate_expires_at - now) // 86400)
        async with service.transaction() as session:
            won = await store.change(
                session, record.id, {"expiry_warned_certificate_id": record.active_certificate_id},
                now, expect={"expiry_warned_certificate_id": record.expiry_warned_certificate_id})
            if not won:
                continue
            await service.audit(session, NetSuiteEvent.NETSUITE_CERTIFICATE_EXPIRING, record,
                                SCHEDULER, certificate_id=record.active_certificate_id,
                                expires_at=utc(record.certificate_expires_at).isoformat(),
                                days_left=days)
        log.warning("NetSuite certificate %s of connector %s expires in %d days: rotate it",
                    record.active_certificate_id, record.id, days)
        warned.append(record)
    return warned


def maintained(service: NetSuiteM2MService, interval: float
               ) -> contextlib.AbstractAsyncContextManager[None]:
    """``service.maintain()`` every ``interval`` seconds (first after one interval: nothing
    is added to start-up) while the block runs; a failure is logged and retried later."""
    return every(interval, service.maintain, name="netsuite-certificates")
