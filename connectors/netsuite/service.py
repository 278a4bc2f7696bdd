"""``NetSuiteM2MService``: connectors, their key pairs, tokens and clients.

Every state change commits with its audit event in one transaction. Tokens: a fresh
assertion per token request, the answer cached (``cache.py``) and refreshed
single-flight -- in this process one shared future per connector, across processes
the Redis lock ``netsuite_m2m_token_lock:{id}`` -- so N concurrent callers on an empty
cache cause exactly one token request. Rotation lives in
``rotation.py``; the service exposes it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
from cryptography import x509
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from connectors.netsuite import autorotation, rotation, store
from connectors.netsuite.assertion import DEFAULT_LIFETIME, create_assertion
from connectors.netsuite.cache import LockHeld, Locks, MemoryTokenCache, RedisTokenCache, TokenCache
from connectors.netsuite.client import Backoff, Jitter, NetSuiteClient, Sleep, Throttle
from connectors.netsuite.connector import (
    ConnectorRecord,
    ConnectorSpec,
    check_certificate_id,
    check_url,
    resolve,
)
from connectors.netsuite.errors import (
    ConnectorNotFound,
    InvalidConnector,
    KeyPairExists,
    NoCertificateId,
    NoKeyPair,
)
from connectors.netsuite.events import NetSuiteEvent
from connectors.netsuite.keys import (
    CertificateSubject,
    PrivateKey,
    certificate_pem,
    generate_certificate,
    generate_key_pair,
    new_key_id,
)
from connectors.netsuite.kms import KeyManagementService
from connectors.netsuite.slots import SharedSlots
from connectors.netsuite.strategies import NETSUITE_M2M, AuthStrategies, NetSuiteM2MStrategy
from connectors.netsuite.token_client import AccessToken, TokenRequestFailed, request_token
from issuer import audit
from issuer.clock import Clock, utc
from issuer.crypto import Encryptor
from issuer.registration import Actor
from issuer.settings import Settings
from issuer.store.clients import PageKey
from issuer.store.models import Tenant

log = logging.getLogger(__name__)
Visible = Callable[[str], bool]
#: What PATCH may change; the account id and algorithm are fixed (certificates depend on them).
PATCHABLE = ("name", "client_id", "scopes", "token_url", "rest_base_url", "restlets_base_url",
             "throttle_requests", "throttle_period", "max_concurrency")
#: Changes after which a cached token is no longer the one NetSuite would grant.
_TOKEN_FIELDS = ("client_id", "scopes", "token_url")


def _anyone(tenant_id: str) -> bool:
    return True


@dataclass(frozen=True)
class CertificateProfile:
    """Subject defaults of the certificates we issue (ISSUER_PLATFORM_NAME etc.)."""

    platform_name: str = "m2m-issuer"
    organization: str | None = None
    country: str | None = None

    def subject(self, account_id: str) -> CertificateSubject:
        return CertificateSubject.for_account(self.platform_name, account_id,
                                              self.organization, self.country)


class NetSuiteM2MService:
    def __init__(self, *, engine: AsyncEngine, encryptor: Encryptor, clock: Clock,
                 http: httpx.AsyncClient, redis: Redis | None = None,
                 allowed_hosts: Iterable[str] = (),
                 profile: CertificateProfile | None = None,
                 assertion_lifetime: int = DEFAULT_LIFETIME, backoff: Backoff | None = None,
                 sleep: Sleep = asyncio.sleep, jitter: Jitter = random.random,
                 key_factory: Callable[[str], PrivateKey] = generate_key_pair) -> None:
        """``sleep`` and ``jitter`` drive the back-off and throttle; ``key_factory`` makes
        key pairs by algorithm. Tests inject all three."""
        self.clock = clock
        self.http = http
        self.allowed_hosts = tuple(allowed_hosts)
        self.profile = profile or CertificateProfile()
        self.assertion_lifetime = assertion_lifetime
        self.kms = KeyManagementService(engine, encryptor, clock)
        self.cache: TokenCache = (RedisTokenCache(redis, encryptor, clock) if redis is not None
                                  else MemoryTokenCache(encryptor, clock))
        self.locks = Locks(redis)
        self.strategies = AuthStrategies([NetSuiteM2MStrategy(self)])
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._backoff = backoff
        self._sleep = sleep
        self._jitter = jitter
        self._key_factory = key_factory
        self._flights: dict[str, asyncio.Future[AccessToken]] = {}
        #: Gauge: connectors whose certificate expires within 60 days (last maintenance).
        self.expiring_certificates = 0
        self._clients: dict[str, tuple[ConnectorRecord, NetSuiteClient]] = {}

    # Transactions ------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    async def load(self, session: AsyncSession, connector_id: str, visible: Visible = _anyone,
                   *, for_update: bool = False) -> ConnectorRecord:
        found = await store.get(session, connector_id, for_update=for_update)
        if found is None or not visible(found.tenant_id):
            raise ConnectorNotFound(connector_id)
        return found

    async def audit(self, session: AsyncSession, event: NetSuiteEvent, record: ConnectorRecord,
                    actor: Actor, **details: Any) -> None:
        await audit.record(session, event, at=self.clock.now(), tenant_id=record.tenant_id,
                           details={"connector_id": record.id, **details},
                           **actor.audit_fields())

    # Connectors --------------------------------------------------------------------

    async def create(self, spec: ConnectorSpec, actor: Actor) -> ConnectorRecord:
        columns = resolve(spec, self.allowed_hosts)
        async with self.transaction() as session:
            if await session.get(Tenant, spec.tenant_id) is None:
                raise ConnectorNotFound("unknown tenant")
            created = await store.insert(session, spec.tenant_id, columns, self.clock.now())
            await self.audit(session, NetSuiteEvent.NETSUITE_CONNECTOR_CREATED, created, actor,
                             name=created.name, account_id=created.account_id,
                             algorithm=created.algorithm, scopes=list(created.scopes))
        return created

    async def get(self, connector_id: str, visible: Visible = _anyone) -> ConnectorRecord:
        async with self._sessions() as session:
            return await self.load(session, connector_id, visible)

    async def page(self, *, tenant_id: str | None, after: PageKey | None,
                   limit: int) -> tuple[list[ConnectorRecord], list[str] | None]:
        async with self._sessions() as session:
            return await store.page(session, after=after, limit=limit, tenant_id=tenant_id)

    async def update(self, connector_id: str, changes: Mapping[str, Any], actor: Actor,
                     visible: Visible = _anyone) -> ConnectorRecord:
        """Change any of :data:`PATCHABLE`; a URL set to None goes back to its default."""
        unknown = set(changes) - set(PATCHABLE)
        if unknown:
            raise InvalidConnector(f"{', '.join(sorted(unknown))} cannot change", "")
        async with self.transaction() as session:
            current = await self.load(session, connector_id, visible, for_update=True)
            spec = ConnectorSpec(**{
                name: getattr(current, name) for name in ConnectorSpec.__dataclass_fields__})
            columns = resolve(replace(spec, **changes), self.allowed_hosts)
            diff = {name: value for name, value in columns.items()
                    if value != _column(current, name)}
            if diff:
                await store.change(session, connector_id, diff, self.clock.now())
                await self.audit(session, NetSuiteEvent.NETSUITE_CONNECTOR_UPDATED, current, actor,
                                 changes=sorted(diff))
            updated = await self.load(session, connector_id)
        self._clients.pop(connector_id, None)
        if set(diff) & set(_TOKEN_FIELDS):
            await self.bust_token_cache(connector_id)
        return updated

    async def delete(self, connector_id: str, actor: Actor, visible: Visible = _anyone) -> None:
        """The connector and its keys (the database cascades) go; its token is forgotten."""
        async with self.transaction() as session:
            current = await self.load(session, connector_id, visible, for_update=True)
            await store.delete(session, connector_id)
            await self.audit(session, NetSuiteEvent.NETSUITE_CONNECTOR_DELETED, current, actor,
                             name=current.name)
        self._clients.pop(connector_id, None)
        await self.bust_token_cache(connector_id)

    # Key pairs and certificates ------------------------------------------------------

    async def make_key(self, record: ConnectorRecord) -> tuple[PrivateKey, x509.Certificate]:
        """A key pair of the connector's algorithm and its self-signed certificate."""
        # RSA-4096 generation takes about a second: off the event loop, outside any
        # transaction.
        key = await asyncio.to_thread(self._key_factory, record.algorithm)
        return key, generate_certificate(key, record.algorithm,
                                         self.profile.subject(record.account_id),
                                         utc(self.clock.now()))

    async def store_key(self, session: AsyncSession, record: ConnectorRecord, key_id: str,
                        key: PrivateKey, certificate: x509.Certificate) -> None:
        await self.kms.store(session, tenant_id=record.tenant_id, connector_id=record.id,
                             key_id=key_id, algorithm=record.algorithm, key=key,
                             certificate=certificate)

    async def generate_key_pair(self, connector_id: str, actor: Actor,
                                visible: Visible = _anyone) -> str:
        """The connector's first key pair; returns its public certificate (PEM) to upload."""
        record = await self.get(connector_id, visible)
        if record.primary_key_id is not None:
            raise KeyPairExists()
        key, certificate = await self.make_key(record)
        key_id = new_key_id()
        not_after = certificate.not_valid_after_utc.timestamp()
        async with self.transaction() as session:
            won = await store.change(
                session, connector_id,
                {"primary_key_id": key_id, "certificate_expires_at": not_after},
                self.clock.now(), expect={"primary_key_id": None})
            if not won:  # another request made one meanwhile
                raise KeyPairExists()
            await self.store_key(session, record, key_id, key, certificate)
            await self.audit(session, NetSuiteEvent.NETSUITE_KEY_PAIR_GENERATED, record, actor,
                             key_id=key_id, algorithm=record.algorithm,
                             certificate_not_after=utc(not_after).isoformat())
        return certificate_pem(certificate)

    async def certificate(self, connector_id: str, visible: Visible = _anyone) -> str:
        """The public certificate of the connector's key pair (PEM)."""
        async with self._sessions() as session:
            record = await self.load(session, connector_id, visible)
            if record.primary_key_id is None:
                raise NoKeyPair()
            stored = await self.kms.describe(session, tenant_id=record.tenant_id,
                                             connector_id=record.id,
                                             key_id=record.primary_key_id)
        return stored.certificate_pem

    async def record_certificate_id(self, connector_id: str, certificate_id: str, actor: Actor,
                                    visible: Visible = _anyone) -> ConnectorRecord:
        """NetSuite's Certificate ID of the uploaded certificate: the assertions' ``kid``."""
        check_certificate_id(certificate_id)
        async with self.transaction() as session:
            record = await self.load(session, connector_id, visible, for_update=True)
            if record.primary_key_id is None:
                raise NoKeyPair()
            await store.change(session, connector_id,
                               {"active_certificate_id": certificate_id,
                                "active_key_id": record.primary_key_id}, self.clock.now())
            await self.audit(session, NetSuiteEvent.NETSUITE_CERTIFICATE_ID_RECORDED, record, actor,
                             certificate_id=certificate_id, key_id=record.primary_key_id)
            updated = await self.load(session, connector_id)
        await self.bust_token_cache(connector_id)
        return updated

    # Rotation (rotation.py) ----------------------------------------------------------

    async def initiate_rotation(self, connector_id: str, actor: Actor,
                                visible: Visible = _anyone) -> str:
        return await rotation.initiate(self, connector_id, actor, visible)

    async def confirm_rotation(self, connector_id: str, certificate_id: str, actor: Actor,
                               visible: Visible = _anyone) -> ConnectorRecord:
        return await rotation.confirm(self, connector_id, certificate_id, actor, visible)

    async def cancel_rotation(self, connector_id: str, actor: Actor,
                              visible: Visible = _anyone) -> ConnectorRecord:
        return await rotation.cancel(self, connector_id, actor, visible)

    async def auto_rotate(self, connector_id: str, *, entity: int, role: int, actor: Actor,
                          visible: Visible = _anyone,
                          overlap: int = autorotation.DEFAULT_OVERLAP) -> ConnectorRecord:
        """Rotate through NetSuite's certificate API (``autorotation.py``)."""
        return await autorotation.auto(self, connector_id, entity=entity, role=role,
                                       actor=actor, visible=visible, overlap=overlap)

    async def maintain(self) -> None:
        """Revoke old certificates whose overlap is over; warn about expiring ones."""
        await autorotation.revoke_due(self)
        await autorotation.check_expiry(self)

    def maintained(self, interval: float = 60.0) -> AbstractAsyncContextManager[None]:
        """:meth:`maintain` every ``interval`` seconds while the block runs."""
        return autorotation.maintained(self, interval)

    # Tokens ----------------------------------------------------------------------------

    async def create_assertion(self, record: ConnectorRecord) -> str:
        if record.active_key_id is None or record.active_certificate_id is None:
            raise NoCertificateId()
        key = await self.kms.get(tenant_id=record.tenant_id, connector_id=record.id,
                                 key_id=record.active_key_id)
        return create_assertion(key, algorithm=record.algorithm,
                                kid=record.active_certificate_id, client_id=record.client_id,
                                scopes=record.scopes, audience=record.token_url,
                                now=self.clock.now(), lifetime=self.assertion_lifetime)

    async def authenticate(self, record: ConnectorRecord) -> AccessToken:
        """One token request with a fresh assertion (no cache). TokenRequestFailed on any
        refusal; the URL is checked again before anything is sent."""
        url = check_url(record.token_url, self.allowed_hosts, "token_url")
        return await request_token(self.http, url, await self.create_assertion(record))

    async def get_or_refresh_access_token(self, connector_id: str,
                                          stale: str | None = None) -> AccessToken:
        """The cached token, else one new token shared by every concurrent caller.
        ``stale``: a token NetSuite refused (401); it is not handed out again."""
        # The flight is joined before anything is awaited: callers that arrive together
        # share one cache read and at most one token request, success or failure.
        token = await asyncio.shield(self._flight(connector_id, stale))
        if stale is not None and token.access_token == stale:
            # Joined a flight that read the token NetSuite has just refused.
            token = await asyncio.shield(self._flight(connector_id, stale, join=False))
        return token

    def _flight(self, connector_id: str, stale: str | None, *,
                join: bool = True) -> asyncio.Future[AccessToken]:
        flight = self._flights.get(connector_id) if join else None
        if flight is None:
            flight = asyncio.ensure_future(self._cached_or_refresh(connector_id, stale))
            self._flights[connector_id] = flight
            flight.add_done_callback(lambda done: self._landed(connector_id, done))
        return flight

    async def _cached_or_refresh(self, connector_id: str, stale: str | None) -> AccessToken:
        cached = await self.cache.get(connector_id)
        if cached is not None and cached.access_token != stale:
            return cached
        return await self._refresh(connector_id, stale)

    def _landed(self, connector_id: str, flight: asyncio.Future[AccessToken]) -> None:
        if self._flights.get(connector_id) is flight:
            del self._flights[connector_id]
        if not flight.cancelled():
            flight.exception()  # retrieved: a failure nobody awaits is not reported twice

    async def _refresh(self, connector_id: str, stale: str | None) -> AccessToken:
        try:
            return await self._refresh_locked(connector_id, stale)
        except LockHeld:
            raise TokenRequestFailed("another process has been fetching this connector's "
                                     "token for too long") from None

    async def _refresh_locked(self, connector_id: str, stale: str | None) -> AccessToken:
        async with self.locks.token_refresh(connector_id):
            cached = await self.cache.get(connector_id)  # another process may have refreshed
            if cached is not None and cached.access_token != stale:
                return cached
            token = await self.authenticate(await self.get(connector_id))
            await self.cache.put(connector_id, token)
            return token

    async def bust_token_cache(self, connector_id: str) -> None:
        await self.cache.bust(connector_id)

    async def verify(self, connector_id: str, actor: Actor,
                     visible: Visible = _anyone) -> AccessToken:
        """Forget the cached token and fetch a new one: does NetSuite accept us now?"""
        record = await self.get(connector_id, visible)
        await self.bust_token_cache(connector_id)
        try:
            token = await self.get_or_refresh_access_token(connector_id)
        except (TokenRequestFailed, NoCertificateId) as error:
            await self._verified(record, actor, success=False, error=str(error))
            raise
        await self._verified(record, actor, success=True)
        return token

    async def _verified(self, record: ConnectorRecord, actor: Actor, **details: Any) -> None:
        async with self.transaction() as session:
            await self.audit(session, NetSuiteEvent.NETSUITE_CONNECTION_VERIFIED, record, actor,
                             **details)

    # Calling NetSuite ------------------------------------------------------------------

    async def client(self, connector_id: str) -> NetSuiteClient:
        """This process's client of the connector: one throttle and concurrency cap (the
        cap shared with every process through Redis when there is one)."""
        record = await self.get(connector_id)
        kept = self._clients.get(connector_id)
        if kept is not None and kept[0].updated_at == record.updated_at:
            return kept[1]
        for field in ("rest_base_url", "restlets_base_url"):
            check_url(getattr(record, field), self.allowed_hosts, field)
        client = NetSuiteClient(
            self.http, self.strategies.get(NETSUITE_M2M).http_auth(connector_id),
            rest_base_url=record.rest_base_url, restlets_base_url=record.restlets_base_url,
            throttle=Throttle(record.throttle_requests, record.throttle_period, self.clock,
                              self._sleep),
            max_concurrency=record.max_concurrency, backoff=self._backoff, sleep=self._sleep,
            jitter=self._jitter,
            gate=(SharedSlots(self.locks.redis, connector_id, record.max_concurrency)
                  if self.locks.redis is not None else None))
        self._clients[connector_id] = (record, client)
        return client


def _column(record: ConnectorRecord, name: str) -> Any:
    value = getattr(record, name)
    return list(value) if isinstance(value, tuple) else value


def from_settings(settings: Settings, *, engine: AsyncEngine, encryptor: Encryptor,
                  clock: Clock, http: httpx.AsyncClient, redis: Redis | None,
                  **options: Any) -> NetSuiteM2MService:
    """The service as the settings configure it (allow-list, certificate subject)."""
    return NetSuiteM2MService(
        engine=engine, encryptor=encryptor, clock=clock, http=http, redis=redis,
        allowed_hosts=settings.netsuite_allowed_hosts,
        profile=CertificateProfile(settings.platform_name, settings.netsuite_cert_organization,
                                   settings.netsuite_cert_country), **options)
