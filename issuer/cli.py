"""The ``issuer`` command line. Also ``python -m issuer``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.config
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from issuer import audit
from issuer.app import CONNECTORS, ENCRYPTED_COLUMNS
from issuer.audit import AuditQuery
from issuer.bootstrap import bootstrap
from issuer.cli_trusted_issuers import register_commands as register_trusted_issuer_commands
from issuer.clock import SystemClock, utc
from issuer.connector import CommandError
from issuer.crypto import DecryptionError, Encryptor, check_master_key, encryptor_for
from issuer.keys.policy import RotationPolicy
from issuer.keys.ring import KeyRing, RotationRefused, list_keys
from issuer.logs import logging_config
from issuer.reencrypt import BATCH_SIZE, reencrypt
from issuer.registration import (
    AUTH_METHODS,
    DEFAULT_AUTH_METHODS,
    SECRET_METHODS,
    ClientSpec,
    NewClient,
    RegistrationError,
    create_client,
    create_tenant,
)
from issuer.settings import Settings, SettingsError
from issuer.store import clients as client_queries
from issuer.store import tenants as tenant_store
from issuer.store.db import create_engine
from issuer.store.migrate import current_revision, head_revision, upgrade
from issuer.store.records import ClientRecord

T = TypeVar("T")


def decrypt_connector_config() -> int:
    """The ``decrypt_connector_config`` console script: ``issuer decrypt-connector-config``."""
    return main(["decrypt-connector-config", *sys.argv[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env()
        result: int = args.handler(settings, args)
        return result
    except SettingsError as error:
        print(f"issuer: configuration error: {error}", file=sys.stderr)
        return 2
    except (CommandError, RegistrationError, DecryptionError) as error:
        print(f"issuer: error: {error}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as error:
        print(f"issuer: error: the store is unreachable: {type(error).__name__}: "
              f"{str(error).splitlines()[0] if str(error) else ''}", file=sys.stderr)
        return 1
    except Exception as error:
        message = _connector_error(error)
        if message is None:
            raise
        print(f"issuer: error: {message}", file=sys.stderr)
        return 1


def _connector_error(error: Exception) -> str | None:
    """A connector's one-line report of one of its errors (``Connector.command_errors``,
    the most specific class first), or None for an error no connector knows."""
    for kind in type(error).__mro__:
        for connector in CONNECTORS:
            describe = connector.command_errors.get(kind)
            if describe is not None:
                return describe(error)
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="issuer", description="m2m-issuer: OAuth 2.0 "
                                     "authorization server for machine clients")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=_positive, default=None,
                       help="worker processes (default: one per CPU)")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the latest")
    migrate.set_defaults(handler=_migrate)

    tenants = commands.add_parser("tenants", help="manage tenants").add_subparsers(
        metavar="ACTION")
    create = tenants.add_parser("create", help="create a tenant; prints its id")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=_tenants_create)
    listing = tenants.add_parser("list", help="list tenants")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_tenants_list)

    clients = commands.add_parser("clients", help="manage clients").add_subparsers(
        metavar="ACTION")
    create = clients.add_parser("create", help="register a client; prints its secret once")
    create.add_argument("--tenant", required=True, help="tenant name or id")
    create.add_argument("--scope", default="", help='allowed scopes, e.g. "orders:read '
                        'orders:*" (space-separated)')
    create.add_argument("--default-scope", default=None,
                        help="scopes granted when a request names none (default: every "
                        "exact allowed scope)")
    create.add_argument("--name", default=None)
    create.add_argument("--audience", action="append", default=[], metavar="URL",
                        help="an allowed audience (repeatable); the first is the default")
    create.add_argument("--auth-method", action="append", default=[], choices=AUTH_METHODS,
                        help="allowed token endpoint auth method (repeatable; default "
                        "client_secret_basic and client_secret_post)")
    key_source = create.add_mutually_exclusive_group()
    key_source.add_argument("--jwks-file", default=None, metavar="FILE",
                            help="private_key_jwt: a JSON file holding the client's public "
                            "JWK Set")
    key_source.add_argument("--jwks-uri", default=None, metavar="URL",
                            help="private_key_jwt: an https URL serving the client's public "
                            "JWK Set")
    create.add_argument("--federated-credential", action="append", nargs="+", default=[],
                        metavar="ISSUER_ID SUBJECT [AUDIENCE]",
                        help="federated_jwt: a trusted issuer's id, the sub its tokens carry "
                        "(or a prefix ending in *) and optionally the aud they must hold "
                        "(default: the token endpoint URL); repeatable")
    create.add_argument("--ttl", type=int, default=None, help="token lifetime in seconds")
    create.add_argument("--rate-limit", default=None, metavar="RATE",
                        help='token requests allowed, e.g. "600/minute" (default: '
                        "ISSUER_RATE_LIMIT)")
    create.add_argument("--dpop-bound", action="store_true",
                        help="every token request must carry a DPoP proof (RFC 9449 "
                        "dpop_bound_access_tokens)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=_clients_create)
    listing = clients.add_parser("list", help="list clients")
    listing.add_argument("--tenant", default=None)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_clients_list)
    show = clients.add_parser("show", help="show one client (never its secret)")
    show.add_argument("client_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_clients_show)

    fetch = commands.add_parser("token", help="fetch a token from a running issuer")
    fetch.add_argument("--client-id", required=True)
    fetch.add_argument("--client-secret", required=True)
    fetch.add_argument("--scope", default=None)
    fetch.add_argument("--resource", default=None)
    fetch.add_argument("--url", default=None, help="issuer URL (default: ISSUER_URL)")
    fetch.add_argument("--auth-method", default="client_secret_basic", choices=SECRET_METHODS)
    fetch.set_defaults(handler=_token)

    keys = commands.add_parser("keys", help="signing keys").add_subparsers(metavar="ACTION")
    listing = keys.add_parser("list", help="list signing keys (public metadata only)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_keys_list)
    rotate = keys.add_parser("rotate", help="promote the next key to active, retire the "
                             "active one, publish a new next key")
    rotate.add_argument("--force", action="store_true",
                        help="rotate even if the next key is younger than the JWKS max-age "
                        "(resource servers with a warm cache then refetch once)")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(handler=_keys_rotate)

    audit_events = commands.add_parser("audit", help="the audit log").add_subparsers(
        metavar="ACTION")
    export = audit_events.add_parser("export", help="write audit events as JSON Lines to "
                                     "stdout, oldest first")
    export.add_argument("--since", required=True, type=_timestamp, metavar="ISO8601",
                        help="events at or after this time (UTC when no zone is given)")
    export.add_argument("--until", default=None, type=_timestamp, metavar="ISO8601",
                        help="events before this time (default: now)")
    export.add_argument("--tenant", default=None, help="one tenant's events (name or id)")
    export.add_argument("--event", default=None, choices=audit.vocabulary(
        *(connector.audit_events for connector in CONNECTORS)))
    export.set_defaults(handler=_audit_export)

    rewrap = commands.add_parser("reencrypt", help="rewrap every stored secret under the "
                                 "current ENCRYPTION_MASTER_KEY (idempotent, resumable)")
    rewrap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    rewrap.add_argument("--json", action="store_true")
    rewrap.set_defaults(handler=_reencrypt)
    register_trusted_issuer_commands(commands, (_with_engine, _require_schema))
    for connector in CONNECTORS:
        connector.register_commands(commands)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# Store helpers -------------------------------------------------------------------


def _with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


async def _require_schema(engine: AsyncEngine) -> None:
    if await current_revision(engine) != head_revision():
        raise CommandError("the database schema is not up to date: run `issuer migrate`")


async def _prepare(settings: Settings, engine: AsyncEngine, encryptor: Encryptor) -> None:
    """Migrate when that is safe to do unasked, then make sure a signing key exists."""
    current = await current_revision(engine)
    if current != head_revision():
        if current is None or engine.dialect.name == "sqlite":
            await upgrade(engine)
        else:
            raise CommandError("the database schema is behind: run `issuer migrate` first")
    keyring = KeyRing(engine, encryptor, SystemClock(), alg=settings.signing_alg,
                      rsa_bits=settings.rsa_key_size)
    await keyring.ensure_active()
    _announce(await bootstrap(engine, SystemClock()))


def _announce(created: NewClient | None) -> None:
    """Print the bootstrap admin client's credentials: this once, never again."""
    if created is None:
        return
    print("Created the platform tenant 'default' and its admin client (scopes: "
          f"{' '.join(created.record.allowed_scopes)}).\n"
          "Store these credentials now; the secret is not shown again:\n"
          f"  client_id:     {created.record.client_id}\n"
          f"  client_secret: {created.client_secret}", flush=True)


# Commands ------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from issuer import serving

    # JSON lines, here and in every worker (issuer.logs; no SQL parameters, no headers).
    log_config = logging_config(args.log_level)
    logging.config.dictConfig(log_config)
    # The whole configuration (the master key above all) before the store is touched.
    encryptor = encryptor_for(settings)
    _with_engine(settings, lambda engine: _prepare(settings, engine, encryptor))
    serving.serve(settings, host=args.host, port=args.port,
                  workers=args.workers or serving.default_workers(),
                  log_level=args.log_level, log_config=log_config)
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    check_master_key(settings)  # a store `issuer serve` would refuse is not migrated

    async def work(engine: AsyncEngine) -> tuple[str | None, NewClient | None, list[str]]:
        await upgrade(engine)
        notes = [line for connector in CONNECTORS
                 for line in await connector.migration_notes(settings, engine)]
        return await current_revision(engine), await bootstrap(engine, SystemClock()), notes

    revision, created, notes = _with_engine(settings, work)
    print(f"database at revision {revision}")
    _announce(created)
    for line in notes:  # what the operator must do for data the schema cannot carry over
        print(line)
    return 0


def _tenants_create(settings: Settings, args: argparse.Namespace) -> int:
    async def work(engine: AsyncEngine) -> dict[str, Any]:
        await _require_schema(engine)
        async with async_sessionmaker(engine)() as session, session.begin():
            tenant = await create_tenant(session, args.name, SystemClock(), actor="cli")
        return {"id": tenant.id, "name": tenant.name, "status": tenant.status}

    tenant = _with_engine(settings, work)
    print(json.dumps(tenant) if args.json else tenant["id"])
    return 0


def _tenants_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(engine: AsyncEngine) -> list[dict[str, Any]]:
        await _require_schema(engine)
        async with async_sessionmaker(engine)() as session:
            return [{"id": t.id, "name": t.name, "status": t.status}
                    for t in await tenant_store.list_all(session)]

    tenants = _with_engine(settings, work)
    if args.json:
        print(json.dumps(tenants, indent=2))
    else:
        for tenant in tenants:
            print(f"{tenant['id']}  {tenant['status']:8}  {tenant['name']}")
    return 0


def _read_jwks(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read a JSON JWK Set from {path}: {error}") from None
    if not isinstance(document, dict):
        raise CommandError(f'{path} must hold a JWK Set: {{"keys": [...]}}')
    return document


def _clients_create(settings: Settings, args: argparse.Namespace) -> int:
    jwks = _read_jwks(args.jwks_file)
    federated = _federated_credentials(args.federated_credential)
    methods = args.auth_method or (
        ["private_key_jwt"] if jwks is not None or args.jwks_uri
        else ["federated_jwt"] if federated else DEFAULT_AUTH_METHODS)

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        await _require_schema(engine)
        async with async_sessionmaker(engine)() as session, session.begin():
            tenant = await tenant_store.find(session, args.tenant)
            if tenant is None:
                raise CommandError(f"no tenant named {args.tenant!r}: create it with "
                                   f"`issuer tenants create {args.tenant}`")
            spec = ClientSpec(
                tenant_id=tenant.id, name=args.name or f"{tenant.name} client",
                allowed_scopes=args.scope.split(),
                default_scopes=args.default_scope.split() if args.default_scope else None,
                allowed_audiences=args.audience,
                auth_methods=methods,
                token_ttl=args.ttl,
                rate_limit=args.rate_limit,
                jwks=jwks, jwks_uri=args.jwks_uri, federated_credentials=federated,
                dpop_bound_access_tokens=args.dpop_bound,
            )
            created = await create_client(session, spec, SystemClock(), actor="cli",
                                          encryptor=encryptor_for(settings))
        return {**_client_view(created.record), "client_secret": created.client_secret}

    client = _with_engine(settings, work)
    if args.json:
        print(json.dumps(client, indent=2))
    else:
        print(f"client_id:     {client['client_id']}")
        if client["client_secret"] is None:
            print(f"The client authenticates with {' and '.join(methods)} only: it has no "
                  "secret.", file=sys.stderr)
        else:
            print(f"client_secret: {client['client_secret']}")
            print("The secret is shown this once; store it now.", file=sys.stderr)
    return 0


def _federated_credentials(given: list[list[str]]) -> list[dict[str, str | None]]:
    """``--federated-credential ISSUER_ID SUBJECT [AUDIENCE]`` values as credentials."""
    credentials: list[dict[str, str | None]] = []
    for values in given:
        if not 2 <= len(values) <= 3:
            raise CommandError("--federated-credential takes ISSUER_ID SUBJECT [AUDIENCE]")
        credentials.append({"trusted_issuer_id": values[0], "subject": values[1],
                            "audience": values[2] if len(values) == 3 else None})
    return credentials


def _clients_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(engine: AsyncEngine) -> list[dict[str, Any]]:
        await _require_schema(engine)
        async with async_sessionmaker(engine)() as session:
            tenant_id = None
            if args.tenant:
                tenant = await tenant_store.find(session, args.tenant)
                if tenant is None:
                    raise CommandError(f"no tenant named {args.tenant!r}")
                tenant_id = tenant.id
            return [_client_view(c) for c in await client_queries.list_clients(session,
                                                                              tenant_id)]

    clients = _with_engine(settings, work)
    if args.json:
        print(json.dumps(clients, indent=2))
    else:
        for client in clients:
            print(f"{client['client_id']}  {client['status']:8}  {client['name']}  "
                  f"scopes={' '.join(client['allowed_scopes'])}")
    return 0


def _clients_show(settings: Settings, args: argparse.Namespace) -> int:
    async def work(engine: AsyncEngine) -> dict[str, Any]:
        await _require_schema(engine)
        async with async_sessionmaker(engine)() as session:
            record = await client_queries.get_client(session, args.client_id)
        if record is None:
            raise CommandError(f"no client {args.client_id!r}")
        return _client_view(record)

    client = _with_engine(settings, work)
    if args.json:
        print(json.dumps(client, indent=2))
    else:
        for key, value in client.items():
            print(f"{key}: {value}")
    return 0


def _client_view(record: ClientRecord) -> dict[str, Any]:
    """What may be shown of a client: everything but its secret hashes."""
    view = asdict(record)
    for hidden in ("secret_hash", "previous_secret_hash", "secret_encrypted",
                   "previous_secret_encrypted"):
        view.pop(hidden)
    view["dpop_bound_access_tokens"] = view.pop("dpop_bound")
    view["created_at"] = utc(record.created_at).isoformat()
    if record.previous_secret_expires_at is not None:
        view["previous_secret_expires_at"] = utc(record.previous_secret_expires_at).isoformat()
    for key, value in view.items():
        if isinstance(value, tuple):
            view[key] = list(value)
    return view


def _token(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    url = (args.url or settings.issuer_url).rstrip("/") + "/token"
    form = {"grant_type": "client_credentials"}
    if args.scope:
        form["scope"] = args.scope
    if args.resource:
        form["resource"] = args.resource
    auth = None
    if args.auth_method == "client_secret_basic":
        auth = httpx.BasicAuth(args.client_id, args.client_secret)
    else:
        form.update(client_id=args.client_id, client_secret=args.client_secret)
    try:
        response = httpx.post(url, data=form, auth=auth, timeout=30)
    except httpx.HTTPError as error:
        raise CommandError(f"could not reach {url}: {error}") from None
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        raise CommandError(f"{url} answered {response.status_code} without JSON") from None
    return 0 if response.status_code == 200 else 1


def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(engine: AsyncEngine) -> list[dict[str, Any]]:
        await _require_schema(engine)
        async with async_sessionmaker(engine)() as session:
            rows = await list_keys(session)
        return [{"kid": r.kid, "alg": r.alg, "state": r.state,
                 "created_at": r.created_at.isoformat(),
                 "activated_at": r.activated_at.isoformat() if r.activated_at else None,
                 "retired_at": r.retired_at.isoformat() if r.retired_at else None}
                for r in rows]

    keys = _with_engine(settings, work)
    if args.json:
        print(json.dumps(keys, indent=2))
    else:
        for key in keys:
            print(f"{key['kid']}  {key['alg']:6}  {key['state']:8}  created {key['created_at']}")
    return 0


def _keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    """Rotate in the store; running issuer processes switch at their next reload."""
    async def work(engine: AsyncEngine) -> dict[str, Any]:
        await _require_schema(engine)
        keyring = KeyRing(engine, encryptor_for(settings), SystemClock(),
                          alg=settings.signing_alg, rsa_bits=settings.rsa_key_size,
                          policy=RotationPolicy(rotation_days=settings.key_rotation_days,
                                                token_ttl=settings.token_ttl))
        try:
            rotation = await keyring.rotate(force=args.force, actor="cli")
        except RotationRefused as refused:
            raise CommandError(str(refused)) from None
        return asdict(rotation)

    rotation = _with_engine(settings, work)
    if args.json:
        print(json.dumps(rotation, indent=2))
    else:
        print(f"active: {rotation['active_kid']}\nretired: {rotation['retired_kid']}\n"
              f"next: {rotation['next_kid']}")
    return 0


def _audit_export(settings: Settings, args: argparse.Namespace) -> int:
    """JSON Lines on stdout, streamed: an export of years never sits in memory."""
    async def work(engine: AsyncEngine) -> int:
        await _require_schema(engine)
        tenant_id = None
        if args.tenant is not None:
            async with async_sessionmaker(engine)() as session:
                tenant = await tenant_store.find(session, args.tenant)
            if tenant is None:
                raise CommandError(f"no tenant named {args.tenant!r}")
            tenant_id = tenant.id
        query = AuditQuery(tenant_id=tenant_id, event=args.event, since=args.since,
                           until=args.until)
        count = 0
        async with engine.connect() as connection:
            async for event in audit.oldest_first(connection, query):
                sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
                count += 1
        return count

    count = _with_engine(settings, work)
    sys.stdout.flush()
    print(f"exported {count} audit events", file=sys.stderr)
    return 0


def _reencrypt(settings: Settings, args: argparse.Namespace) -> int:
    """Rewrap under ENCRYPTION_MASTER_KEY what was written under the previous key."""
    if args.batch_size < 1:
        raise CommandError("--batch-size must be at least 1")

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        await _require_schema(engine)
        report = await reencrypt(engine, encryptor_for(settings), SystemClock(),
                                 columns=ENCRYPTED_COLUMNS, batch_size=args.batch_size)
        return {name: asdict(item) for name, item in report.items()}

    report = _with_engine(settings, work)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, item in report.items():
            print(f"{name}: rewrapped {item['rewrapped']}, already current {item['current']}, "
                  f"failed {len(item['failed'])}")
            for key in item["failed"]:
                print(f"  does not decrypt: {key}")
    return 1 if any(item["failed"] for item in report.values()) else 0
