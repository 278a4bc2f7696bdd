"""Client and tenant changes reach every process's client cache within about a second.

A change is recorded in its own transaction (:func:`record`) and announced once it
has committed (:meth:`ChangeNotices.published`, which also drops this process's
stale entries at once). Every process listens (:meth:`ChangeNotices.listening`):

- ``ISSUER_REDIS_URL`` set: Redis pub/sub on ``<ISSUER_REDIS_KEY_PREFIX>client-changes``,
  published after the commit;
- else PostgreSQL: ``NOTIFY issuer_client_changes`` sent inside the transaction
  (PostgreSQL delivers it at the commit, never before and never for a rollback),
  heard on a ``LISTEN`` connection of the process's own;
- else SQLite: the one-row ``change_stamp`` bumped inside the transaction and read
  every :data:`STAMP_POLL` seconds by a background task (never on the token path;
  :class:`StampReader`).

A notice can be lost (Redis or the LISTEN connection drops; a process dies between
the commit and the publish): the cache's own TTL still bounds how long an entry
lives, and every (re)connection drops the whole cache, since what was missed is
unknown. A listening connection that stays quiet is pinged every
:data:`KEEPALIVE` seconds, so a silently dead one is noticed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from issuer.store import change_stamp
from issuer.store.change_stamp import StampReader
from issuer.store.clients import ClientStore
from issuer.store.db import asyncpg_arguments, connect_raw

log = logging.getLogger(__name__)

PG_CHANNEL = "issuer_client_changes"
#: The LISTEN connection's name in ``pg_stat_activity``.
PG_APPLICATION = "issuer-change-notices"
REDIS_CHANNEL = "client-changes"  # after ISSUER_REDIS_KEY_PREFIX
#: Seconds between two reads of SQLite's change stamp.
STAMP_POLL = 0.25
#: Seconds a listening connection may stay quiet before it is pinged.
KEEPALIVE = 5.0
#: Seconds to connect, or to answer a ping, before the connection counts as lost.
TIMEOUT = 2.0
#: Seconds between attempts to reconnect a lost listening connection.
RECONNECT = 1.0
_PENDING = "issuer.changes.pending"  # the changes a session's transaction recorded


@dataclass(frozen=True)
class Change:
    """A client or a tenant changed (or was deleted): what its cached clients are."""

    kind: Literal["client", "tenant"]
    id: str

    @property
    def payload(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def parse(cls, payload: str) -> Change | None:
        kind, _, object_id = payload.partition(":")
        if kind == "client" and object_id:
            return cls("client", object_id)
        if kind == "tenant" and object_id:
            return cls("tenant", object_id)
        return None


def client_changed(client_id: str) -> Change:
    return Change("client", client_id)


def tenant_changed(tenant_id: str) -> Change:
    return Change("tenant", tenant_id)


async def record(session: AsyncSession, change: Change) -> None:
    """Record ``change`` in the session's transaction: on PostgreSQL a NOTIFY (sent by
    the commit), on SQLite the change stamp's bump; the change is kept on the session
    for :meth:`ChangeNotices.published` after the commit."""
    session.info.setdefault(_PENDING, []).append(change)
    if session.get_bind().dialect.name == "postgresql":
        await change_stamp.notify(session, PG_CHANNEL, change.payload)
    else:
        await change_stamp.bump(session)


class ChangeNotices:
    """One process's end of the change notices: publishes its own, applies everyone's
    to its :class:`ClientStore`."""

    def __init__(self, clients: ClientStore, engine: AsyncEngine, *,
                 redis_url: str | None = None, redis: Redis | None = None,
                 redis_prefix: str = "") -> None:
        """``redis``: the process's client, to publish with; ``redis_url``: where a
        connection of its own subscribes (both or neither)."""
        self._clients = clients
        self._engine = engine
        self._redis_url = redis_url
        self._redis = redis
        self._redis_channel = redis_prefix + REDIS_CHANNEL
        #: Whether this process hears every notice now (False while reconnecting).
        self.connected = False
        self._warned = False  # the current run of failures was logged

    @property
    def mode(self) -> str:
        if self._redis_url is not None:
            return "redis"
        return "postgresql" if self._engine.dialect.name == "postgresql" else "sqlite"

    async def published(self, session: AsyncSession) -> None:
        """After the commit of ``session``'s transaction: apply its changes here and
        announce them to the other processes (Redis; PostgreSQL and SQLite have done
        so in the transaction). A failed publish is logged, not raised: the change
        is committed, and other processes see it once their entries expire."""
        changes: list[Change] = session.info.pop(_PENDING, [])
        for change in changes:
            self.apply(change)
        if self._redis is None or not changes:
            return
        try:
            for change in changes:
                await self._redis.publish(self._redis_channel, change.payload)
        except (RedisError, OSError) as error:
            log.warning("could not publish a client change notice (%s); other processes "
                        "see the change when their cached clients expire", type(error).__name__)

    def apply(self, change: Change) -> None:
        if change.kind == "client":
            self._clients.forget(change.id)
        else:
            self._clients.forget_tenant(change.id)

    def _heard(self, payload: str | bytes) -> None:
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        change = Change.parse(text)
        if change is None:
            log.warning("ignored a malformed client change notice")
            return
        self.apply(change)

    def _reconnected(self) -> None:
        """Listening (again): whatever changed while nobody listened is unknown."""
        self._clients.forget_all()
        if not self.connected:
            log.info("listening for client change notices (%s)", self.mode)
        self.connected, self._warned = True, False

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        """Listen in a background task while the block runs."""
        if self.mode == "sqlite" and self._engine.url.database in (None, "", ":memory:"):
            yield  # a store in memory has one process: nobody to hear from
            return
        listen: Callable[[], Coroutine[Any, Any, None]]
        listen = {"redis": self._listen_redis, "postgresql": self._listen_postgresql,
                  "sqlite": self._poll_stamp}[self.mode]
        task = asyncio.create_task(self._forever(listen), name="client-change-notices")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forever(self, listen: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``listen`` again whenever its connection is lost or cannot be made; the
        first failure of a run of them is logged."""
        while True:
            try:
                await listen()
            except Exception as error:  # whatever the driver raised: retried, never fatal
                if not self._warned:
                    log.warning("client change notices are not heard (%s); cached clients "
                                "expire on their own until the %s connection is back",
                                type(error).__name__, self.mode)
                self.connected, self._warned = False, True
            await asyncio.sleep(RECONNECT)

    async def _listen_redis(self) -> None:
        assert self._redis_url is not None
        redis = Redis.from_url(self._redis_url, socket_connect_timeout=TIMEOUT,
                               socket_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0))
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(self._redis_channel)
            confirmed = await pubsub.get_message(timeout=TIMEOUT)
            if confirmed is None or confirmed["type"] != "subscribe":
                raise TimeoutError("no confirmation of SUBSCRIBE")
            self._reconnected()
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=KEEPALIVE if not pinged else TIMEOUT)
                if message is None:
                    if pinged:
                        raise TimeoutError("no answer to PING")
                    await pubsub.ping()
                    pinged = True
                    continue
                pinged = False  # anything heard proves the connection
                if message["type"] == "message":
                    self._heard(message["data"])
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            with contextlib.suppress(RedisError, OSError):
                await redis.aclose()

    async def _listen_postgresql(self) -> None:
        # A raw connection of its own, outside the pool, that stays open for LISTEN (an
        # engine of its own would only add its dialect's set-up queries to each start).
        raw = await connect_raw({**asyncpg_arguments(self._engine), "timeout": TIMEOUT,
                                 "server_settings": {"application_name": PG_APPLICATION}})
        try:
            await self._listen_on(raw)
        finally:
            raw.terminate()  # closed without a reset (the connection may be dead already)

    async def _listen_on(self, raw: Any) -> None:
        """LISTEN on an asyncpg connection until it is lost or stops answering."""
        lost = asyncio.Event()
        raw.add_termination_listener(lambda _connection: lost.set())
        await raw.add_listener(
            PG_CHANNEL, lambda _connection, _pid, _channel, payload: self._heard(payload))
        self._reconnected()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), KEEPALIVE)
            if lost.is_set():
                raise ConnectionError("the LISTEN connection was closed")
            await raw.fetchval("SELECT 1", timeout=TIMEOUT)

    async def _poll_stamp(self) -> None:
        reader = StampReader(self._engine.url.database or "", timeout=TIMEOUT)
        try:
            seen: int | None = None
            while True:
                version = await reader.read()
                if seen is None:
                    self._reconnected()
                elif version != seen:
                    self._clients.forget_all()
                seen = version
                await asyncio.sleep(STAMP_POLL)
        finally:
            await reader.close()
