"""The ERP connector's commands. ``issuer decrypt-connector-config``: a connection's
config, decrypted, for an operator (audited). ``issuer erp check-dropzone-paths``: the
operator's report on filesystem-mode dropzone connections now that each org writes
inside its own folder (:mod:`connectors.erp.pathcheck`); ``issuer migrate`` prints the
same findings."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.erp import pathcheck
from connectors.erp.registry import ConnectorRegistry
from connectors.erp.service import ConnectionService
from issuer.clock import SystemClock
from issuer.connector import CommandError
from issuer.crypto import encryptor_for
from issuer.errors import OAuthError
from issuer.settings import Settings, SettingsError
from issuer.store.db import create_engine
from issuer.store.migrate import current_revision, head_revision

COMMAND = "issuer erp check-dropzone-paths"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reveal = commands.add_parser("decrypt-connector-config",
                                 help="print an ERP connection's decrypted config (audited)")
    reveal.add_argument("connection_id")
    reveal.set_defaults(handler=_decrypt_connector_config)
    erp = commands.add_parser("erp", help="ERP connectors")
    actions = erp.add_subparsers(metavar="ACTION")
    paths = actions.add_parser(
        "check-dropzone-paths", help="list the filesystem-mode dropzone paths that need the "
        "operator since each org writes inside <root>/<org_id>/ (exit 1 if any)")
    paths.add_argument("--all", action="store_true", help="list the paths that are fine too")
    paths.add_argument("--json", action="store_true")
    paths.set_defaults(handler=_check_dropzone_paths)


def _check_dropzone_paths(settings: Settings, args: argparse.Namespace) -> int:
    root = settings.erp_dropzone_root
    if root is None:
        print("ISSUER_ERP_DROPZONE_ROOT is unset: filesystem mode is off, nothing to check",
              file=sys.stderr)
        return 0

    async def work() -> list[pathcheck.PathCheck] | None:
        engine = create_engine(settings.database_url)
        try:
            if await current_revision(engine) != head_revision():
                return None
            return await pathcheck.check(engine, encryptor_for(settings), root)
        finally:
            await engine.dispose()

    checks = asyncio.run(work())
    if checks is None:
        print("issuer: error: the database schema is not up to date: run `issuer migrate`",
              file=sys.stderr)
        return 1
    pending = pathcheck.needs_action(checks)
    shown = checks if args.all else pending
    if args.json:
        print(json.dumps(pathcheck.as_json(shown), indent=2))
    else:
        for item in shown:
            print(item.line())
    print(f"{len(checks)} filesystem dropzone path(s) checked, {len(pending)} need action",
          file=sys.stderr)
    return 1 if pending else 0


def _decrypt_connector_config(settings: Settings, args: argparse.Namespace) -> int:
    """For an operator: the config as the connector uses it, credentials included.
    The audit event records who and which connection, never the config."""
    try:
        connection_id = uuid.UUID(args.connection_id)
    except ValueError:
        raise CommandError(f"{args.connection_id!r} is not a connection id (a UUID)") from None

    async def work() -> dict[str, Any]:
        engine = create_engine(settings.database_url)
        try:
            if await current_revision(engine) != head_revision():
                raise CommandError("the database schema is not up to date: run "
                                   "`issuer migrate`")
            # Decrypting needs no connector: the stored JSON is printed as it is.
            service = ConnectionService(engine, encryptor_for(settings), ConnectorRegistry(),
                                        SystemClock())
            try:
                return await service.decrypt_for_operator(connection_id,
                                                          f"cli:{getpass.getuser()}")
            except OAuthError as error:
                raise CommandError(f"connection {connection_id}: "
                                   f"{error.error_description}") from None
        finally:
            await engine.dispose()

    print(json.dumps(asyncio.run(work()), indent=2))
    return 0


async def migration_notes(settings: Settings, engine: AsyncEngine) -> list[str]:
    """What ``issuer migrate`` tells the operator about filesystem dropzone paths
    (nothing when there is no filesystem mode or no dropzone connection)."""
    root = settings.erp_dropzone_root
    if root is None or not await pathcheck.filesystem_connections(engine):
        return []
    try:
        encryptor = encryptor_for(settings)
    except SettingsError:
        return [f"Filesystem dropzone paths were not checked (no ENCRYPTION_MASTER_KEY): "
                f"run `{COMMAND}` with the key set."]
    pending = pathcheck.needs_action(await pathcheck.check(engine, encryptor, root))
    if not pending:
        return []
    return [f"{len(pending)} filesystem dropzone path(s) need the operator: each org now "
            f"writes inside {root}/<org_id>/ (`{COMMAND}` lists them again):",
            *(f"  {item.line()}" for item in pending)]
