"""The one seam between the issuer and a connector (``connectors/*``).

A connector is a :class:`Connector`: it declares everything the issuer needs to host
it -- endpoints, tables, audit events, encrypted columns, error-table entries, command
line -- and builds its services in :meth:`Connector.lifespan` from what the issuer
lends it (:class:`ConnectorContext`). ``issuer/app.py`` and ``issuer/cli.py`` list the
connectors explicitly and are the only modules of the core that import ``connectors``;
the rest of the core knows none of them (a test walks the imports to hold this).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

import httpx
from redis.asyncio import Redis
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.admin.http import Endpoint
from issuer.audit import Event
from issuer.clock import Clock
from issuer.crypto import Encryptor
from issuer.errors import Translation
from issuer.metrics import Metrics
from issuer.reencrypt import EncryptedColumn
from issuer.settings import Settings

#: A wait of so many seconds (``asyncio.sleep``; tests give one that moves their clock).
Sleep = Callable[[float], Awaitable[None]]
#: The ``issuer`` command's subcommand registry (argparse's).
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandError(Exception):
    """A one-line error for the user of the ``issuer`` command; exit status 1."""


@dataclass(frozen=True)
class ConnectorContext:
    """What the issuer lends its connectors for the lifetime of the app."""

    settings: Settings
    clock: Clock
    engine: AsyncEngine
    encryptor: Encryptor
    metrics: Metrics
    #: Calls to outside systems: TLS verified, no redirects (tests bind it to simulators).
    outbound: httpx.AsyncClient
    #: ISSUER_REDIS_URL's pool; None = a single process.
    redis: Redis | None = None
    #: How connectors wait (back-offs, throttles); None = ``asyncio.sleep``.
    sleep: Sleep | None = None
    #: What the connectors started before this one yielded (their services, by state
    #: key): a connector that builds on another's reads it here.
    state: Mapping[str, object] = field(default_factory=dict)


class Connector(Protocol):
    """What a connector declares to the issuer, and how it starts and stops."""

    @property
    def name(self) -> str:
        """Its name, for messages ("erp", "netsuite")."""

    @property
    def endpoints(self) -> Sequence[Endpoint]:
        """Its HTTP endpoints, in the order their routes match; documented in /openapi.json."""

    @property
    def tables(self) -> Sequence[Table]:
        """Its tables, defined on the issuer's MetaData (``issuer.store.models.Base``)."""

    @property
    def audit_events(self) -> Iterable[Event]:
        """Its audit events: added to the vocabulary the audit log is filtered by."""

    @property
    def encrypted_columns(self) -> Sequence[EncryptedColumn]:
        """Its AES-GCM columns, rewrapped by ``issuer reencrypt``."""

    @property
    def errors(self) -> Mapping[type[Exception], Translation]:
        """Its exceptions onto rows of the error table (``issuer.errors.ErrorTable``)."""

    @property
    def command_errors(self) -> Mapping[type[Exception], Callable[[Exception], str]]:
        """Its exceptions the command line reports in one line (exit status 1)."""

    def register_commands(self, commands: Commands) -> None:
        """Add its subcommands to the ``issuer`` command."""

    async def migration_notes(self, settings: Settings, engine: AsyncEngine) -> list[str]:
        """What ``issuer migrate`` tells the operator about this connector's data."""

    def lifespan(self, context: ConnectorContext
                 ) -> AbstractAsyncContextManager[Mapping[str, object]]:
        """Build its services (and start its background work) for the app's lifetime;
        the mapping it yields joins the lifespan state its handlers read (through a
        :class:`issuer.state.StateKey` of its own)."""
