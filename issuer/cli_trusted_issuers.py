"""``issuer trusted-issuers add|list|remove``: a tenant's trusted issuers from the command
line (``issuer.trusted_issuers`` checks and audits each change, as for the admin API)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from issuer import trusted_issuers
from issuer.clock import SystemClock, utc
from issuer.connector import CommandError
from issuer.oauth.rfc7523 import ASYMMETRIC_ALGORITHMS
from issuer.registration import Actor
from issuer.settings import Settings
from issuer.store import tenants
from issuer.store import trusted_issuers as store
from issuer.store.records import TrustedIssuerRecord

T = TypeVar("T")
WithEngine = Callable[[Settings, Callable[[AsyncEngine], Awaitable[T]]], T]
#: The CLI's own: run ``work`` on an engine, refuse a schema that is not up to date.
Helpers = tuple[Callable[..., Any], Callable[[AsyncEngine], Awaitable[None]]]


def register_commands(commands: Any, helpers: Helpers) -> None:
    """Add ``trusted-issuers`` to the CLI's subcommands."""
    with_engine, require_schema = helpers
    group = commands.add_parser("trusted-issuers", help="external token issuers a tenant "
                                "trusts for federated credentials").add_subparsers(
        metavar="ACTION")
    add = group.add_parser("add", help="trust an issuer for a tenant's clients; prints its id")
    add.add_argument("--tenant", required=True, help="tenant name or id")
    add.add_argument("--issuer", required=True, metavar="URL",
                     help="the external tokens' iss, exactly")
    add.add_argument("--jwks-uri", default=None, metavar="URL",
                     help="its JWK Set (default: discovered from "
                     "{issuer}/.well-known/openid-configuration)")
    add.add_argument("--alg", action="append", default=[], choices=ASYMMETRIC_ALGORITHMS,
                     help="an allowed algorithm (repeatable; default RS256 and ES256)")
    add.add_argument("--max-token-age", type=int, default=trusted_issuers.DEFAULT_MAX_TOKEN_AGE,
                     metavar="SECONDS", help="refuse tokens issued longer ago (default 3600)")
    add.add_argument("--json", action="store_true")
    listing = group.add_parser("list", help="list trusted issuers")
    listing.add_argument("--tenant", default=None, help="one tenant's (name or id)")
    listing.add_argument("--json", action="store_true")
    remove = group.add_parser("remove", help="stop trusting an issuer")
    remove.add_argument("trusted_issuer_id")

    def added(settings: Settings, args: argparse.Namespace) -> int:
        async def work(engine: AsyncEngine) -> dict[str, Any]:
            await require_schema(engine)
            async with async_sessionmaker(engine)() as session, session.begin():
                tenant = await tenants.find(session, args.tenant)
                if tenant is None:
                    raise CommandError(f"no tenant named {args.tenant!r}")
                record = await trusted_issuers.create_trusted_issuer(
                    session, tenant.id, issuer=args.issuer, jwks_uri=args.jwks_uri,
                    allowed_algorithms=args.alg or trusted_issuers.DEFAULT_ALGORITHMS,
                    max_token_age=args.max_token_age, clock=SystemClock(),
                    actor=Actor("cli"), allow_http=not settings.production)
            return _view(record)

        view = with_engine(settings, work)
        print(json.dumps(view, indent=2) if args.json else view["id"])
        return 0

    def listed(settings: Settings, args: argparse.Namespace) -> int:
        async def work(engine: AsyncEngine) -> list[dict[str, Any]]:
            await require_schema(engine)
            views: list[dict[str, Any]] = []
            async with async_sessionmaker(engine)() as session:
                tenant_id = None
                if args.tenant:
                    tenant = await tenants.find(session, args.tenant)
                    if tenant is None:
                        raise CommandError(f"no tenant named {args.tenant!r}")
                    tenant_id = tenant.id
                after = None
                while True:
                    page = await store.page(session, after=after, limit=200,
                                            tenant_id=tenant_id)
                    views.extend(_view(record) for record in page.items)
                    if page.next_cursor is None or not page.items:
                        return views
                    last = page.items[-1]
                    after = (utc(last.created_at), last.id)

        views = with_engine(settings, work)
        if args.json:
            print(json.dumps(views, indent=2))
        else:
            for view in views:
                print(f"{view['id']}  {view['status']:8}  {view['tenant_id']}  "
                      f"{view['issuer']}")
        return 0

    def removed(settings: Settings, args: argparse.Namespace) -> int:
        async def work(engine: AsyncEngine) -> None:
            await require_schema(engine)
            async with async_sessionmaker(engine)() as session, session.begin():
                await trusted_issuers.delete_trusted_issuer(
                    session, args.trusted_issuer_id, SystemClock(), Actor("cli"))

        with_engine(settings, work)
        return 0

    add.set_defaults(handler=added)
    listing.set_defaults(handler=listed)
    remove.set_defaults(handler=removed)


def _view(record: TrustedIssuerRecord) -> dict[str, Any]:
    return {"id": record.id, "tenant_id": record.tenant_id, "issuer": record.issuer,
            "jwks_uri": record.jwks_uri, "allowed_algorithms": list(record.allowed_algorithms),
            "max_token_age": record.max_token_age, "status": record.status,
            "created_at": utc(record.created_at).isoformat()}
