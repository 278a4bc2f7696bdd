"""``issuer netsuite create|key-pair|certificate|rotate|confirm|verify``.

The operator's console: it acts on the store directly (no tenant scoping; audited as
``cli``) and, for ``verify``, calls NetSuite with the connector's own URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from redis.asyncio import Redis

from connectors.netsuite.connector import SCOPES, ConnectorSpec
from connectors.netsuite.errors import NetSuiteError
from connectors.netsuite.keys import ALGORITHMS, DEFAULT_ALGORITHM
from connectors.netsuite.rotation import CONFIRMED
from connectors.netsuite.service import NetSuiteM2MService, from_settings
from connectors.netsuite.token_client import TokenRequestFailed
from issuer.clock import SystemClock
from issuer.crypto import encryptor_for
from issuer.registration import Actor
from issuer.settings import Settings
from issuer.store import clients as client_queries
from issuer.store.db import create_engine

T = TypeVar("T")
CLI = Actor("cli")


class UnknownTenant(NetSuiteError):
    """No tenant by that name or id."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    netsuite = commands.add_parser("netsuite", help="NetSuite OAuth 2.0 M2M connectors")
    actions = netsuite.add_subparsers(metavar="ACTION")

    create = actions.add_parser("create", help="create a connector; prints its id")
    create.add_argument("--tenant", required=True, help="tenant name or id")
    create.add_argument("--name", required=True)
    create.add_argument("--account-id", required=True, help="e.g. 1234567 or 1234567_SB1")
    create.add_argument("--client-id", required=True, help="the integration's Client ID")
    create.add_argument("--scope", action="append", choices=[*SCOPES, "mcp"], required=True,
                        help="a NetSuite scope (repeatable)")
    create.add_argument("--algorithm", choices=list(ALGORITHMS), default=DEFAULT_ALGORITHM)
    create.add_argument("--token-url", default=None)
    create.add_argument("--rest-base-url", default=None)
    create.add_argument("--restlets-base-url", default=None)
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=_create)

    key_pair = actions.add_parser("key-pair", help="generate the key pair; prints the public "
                                  "certificate to upload to NetSuite")
    key_pair.add_argument("connector_id")
    key_pair.add_argument("--out", type=Path, default=None, help="write the PEM here")
    key_pair.set_defaults(handler=_key_pair)

    certificate = actions.add_parser("certificate", help="print the public certificate, or "
                                     "record NetSuite's Certificate ID for it")
    certificate.add_argument("connector_id")
    certificate.add_argument("--set-id", metavar="CERTIFICATE_ID", default=None)
    certificate.add_argument("--out", type=Path, default=None)
    certificate.set_defaults(handler=_certificate)

    rotate = actions.add_parser("rotate", help="start a rotation; prints the new certificate")
    rotate.add_argument("connector_id")
    rotate.add_argument("--cancel", action="store_true", help="discard a pending rotation")
    rotate.add_argument("--out", type=Path, default=None)
    rotate.set_defaults(handler=_rotate)

    confirm = actions.add_parser("confirm", help="switch to the new certificate")
    confirm.add_argument("connector_id")
    confirm.add_argument("certificate_id", help="NetSuite's Certificate ID of the new one")
    confirm.set_defaults(handler=_confirm)

    verify = actions.add_parser("verify", help="fetch a fresh token from NetSuite")
    verify.add_argument("connector_id")
    verify.set_defaults(handler=_verify)


def _run(settings: Settings, work: Callable[[NetSuiteM2MService], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(settings.database_url)
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                return await work(from_settings(
                    settings, engine=engine, encryptor=encryptor_for(settings),
                    clock=SystemClock(), http=http, redis=redis))
        finally:
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    return asyncio.run(run())


def _emit(pem: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(pem)
    else:
        out.write_text(pem)
        print(f"wrote {out}", file=sys.stderr)


def _create(settings: Settings, args: argparse.Namespace) -> int:
    async def work(service: NetSuiteM2MService) -> dict[str, Any]:
        async with service.transaction() as session:
            tenant = await client_queries.find_tenant(session, args.tenant)
        if tenant is None:
            raise UnknownTenant(f"no tenant named {args.tenant!r}")
        record = await service.create(ConnectorSpec(
            tenant_id=tenant.id, name=args.name, account_id=args.account_id,
            client_id=args.client_id, scopes=args.scope, algorithm=args.algorithm,
            token_url=args.token_url, rest_base_url=args.rest_base_url,
            restlets_base_url=args.restlets_base_url), CLI)
        return {"id": record.id, "tenant_id": record.tenant_id, "name": record.name,
                "account_id": record.account_id, "algorithm": record.algorithm,
                "token_url": record.token_url}

    created = _run(settings, work)
    print(json.dumps(created, indent=2) if args.json else created["id"])
    return 0


def _key_pair(settings: Settings, args: argparse.Namespace) -> int:
    _emit(_run(settings, lambda service: service.generate_key_pair(args.connector_id, CLI)),
          args.out)
    return 0


def _certificate(settings: Settings, args: argparse.Namespace) -> int:
    if args.set_id:
        _run(settings, lambda service: service.record_certificate_id(args.connector_id,
                                                                     args.set_id, CLI))
        print(f"recorded Certificate ID {args.set_id}")
        return 0
    _emit(_run(settings, lambda service: service.certificate(args.connector_id)), args.out)
    return 0


def _rotate(settings: Settings, args: argparse.Namespace) -> int:
    if args.cancel:
        _run(settings, lambda service: service.cancel_rotation(args.connector_id, CLI))
        print("Rotation cancelled; the pending key was discarded.")
        return 0
    _emit(_run(settings, lambda service: service.initiate_rotation(args.connector_id, CLI)),
          args.out)
    print("Upload this certificate to NetSuite, then run `issuer netsuite confirm "
          f"{args.connector_id} <Certificate ID>`.", file=sys.stderr)
    return 0


def _confirm(settings: Settings, args: argparse.Namespace) -> int:
    _run(settings, lambda service: service.confirm_rotation(args.connector_id,
                                                            args.certificate_id, CLI))
    print(CONFIRMED)
    return 0


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    try:
        token = _run(settings, lambda service: service.verify(args.connector_id, CLI))
    except (TokenRequestFailed, NetSuiteError) as error:
        print(json.dumps({"success": False, "error": str(error)}, indent=2))
        return 1
    print(json.dumps({"success": True, "token_preview": token.preview,
                      "expires_in": token.expires_in}, indent=2))
    return 0
