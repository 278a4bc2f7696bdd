"""POST /token (RFC 6749 §3.2, §4.4, §5) as a list of named steps.

parse the form -> identify the client -> load it (async, cached) -> [a client
assertion only: its keys (async), Authlib's check (sync), spend its jti (async)] ->
run the grant on Authlib (sync, no I/O) -> persist the token record and its audit
event (one transaction, group-committed) -> answer with ``Cache-Control: no-store``.
A failure at any step is rendered by the one error table and audited.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qsl

from sqlalchemy import Table
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from issuer.audit import AuditEvent, audit_row
from issuer.clock import utc
from issuer.errors import (
    NO_STORE,
    InvalidClient,
    InvalidRequest,
    OAuthError,
    RateLimitUnavailable,
    StoreUnavailable,
    TooManyRequests,
    UnsupportedGrantType,
    error_response,
)
from issuer.middleware import CLIENT_ID
from issuer.oauth.client_auth import ClaimedClient, basic_challenge, identify
from issuer.oauth.server import IssuedToken
from issuer.ratelimit import enforce
from issuer.services import Services
from issuer.store.bounds import bounded, request_budget
from issuer.store.models import AuditEventRow
from issuer.store.models import IssuedToken as IssuedTokenRow
from issuer.store.records import ClientRecord
from issuer.store.writer import Rows

# The Core tables the group writer inserts into (the ORM types ``__table__`` loosely).
_ISSUED_TOKENS = cast(Table, IssuedTokenRow.__table__)
_AUDIT_EVENTS = cast(Table, AuditEventRow.__table__)

MAX_FORM_BYTES = 16 * 1024
#: The ``grant`` label of the tokens-issued metric for this endpoint.
GRANT = "client_credentials"
# RFC 8707 §2: "multiple 'resource' parameters MAY be used"; nothing else repeats.
_MAY_REPEAT = frozenset({"resource"})


async def token(request: Request) -> Response:
    services: Services = request.state.services
    started = time.perf_counter()
    try:
        # Every wait for the store below draws on one budget (issuer.store.bounds).
        with request_budget(services.settings.store_timeout):
            return await _token(request, services)
    finally:
        services.metrics.token_latency.observe(time.perf_counter() - started)


async def _token(request: Request, services: Services) -> Response:
    claimed: ClaimedClient | None = None
    record: ClientRecord | None = None
    try:
        form, resources = await parse_form(request)
        claimed = identify(request.headers, form, request.query_params)
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise InvalidRequest("Missing 'grant_type' parameter", reason="missing_grant_type")
        if grant_type != "client_credentials":
            raise UnsupportedGrantType(reason=f"grant_type={grant_type[:64]}")
        record = await bounded(services.clients.get(claimed.client_id))
        issued = await _authenticated_grant(request, services, form, resources, claimed, record)
        # Sign (on a thread) while the record and its audit event commit; answer
        # only when both are done: nothing leaves before it is durable.
        access_token, _ = await asyncio.gather(
            services.signer.sign(issued.key, issued.claims),
            services.writer.write(granted_rows(issued, request)),  # within the budget
        )
    except OAuthError as error:
        await audit_denial(services, request, error, claimed, record)
        headers = basic_challenge() if (
            isinstance(error, InvalidClient) and claimed is not None
            and claimed.method == "client_secret_basic"
        ) else None
        return error_response(error, headers=headers)
    except (SQLAlchemyError, OSError) as failure:
        # Down, or slower than ISSUER_STORE_TIMEOUT: 503 with Retry-After, no denial
        # event (there is no store to write it to).
        services.store_failures.report("POST /token", failure)
        refusal = StoreUnavailable()
        services.metrics.token_failed(refusal)
        return error_response(refusal)
    services.metrics.tokens_issued.labels(record.tenant_id, GRANT).inc()
    return Response(json.dumps(issued.response(access_token), separators=(",", ":")),
                    status_code=200,
                    media_type="application/json", headers=NO_STORE)


async def _authenticated_grant(request: Request, services: Services, form: dict[str, str],
                               resources: list[str], claimed: ClaimedClient,
                               record: ClientRecord | None) -> IssuedToken:
    """Authenticate the client and run the grant (Authlib, pure CPU), with the rate
    limits (issuer.ratepolicy) checked in one atomic step before any signing or
    write: after the secret was verified, or for a client assertion (RFC 7523)
    after its signature and claims were and before its ``jti`` is spent.

    A failed authentication is charged to the source address; once the address
    has spent its budget it gets 429 whether or not its next secret is right.
    """
    address = request_source(request) or "unknown"
    limits = services.rate_policies
    admitted = False

    async def admit() -> None:
        nonlocal admitted
        assert record is not None
        admitted = True
        await enforce(services.limiter, *limits.token(address, record))

    try:
        if record is None:
            raise InvalidClient(reason="unknown_client")
        authenticated = None
        if claimed.assertion is not None:
            authenticated = await services.assertions.authenticate(
                form, request.headers, claimed, record, "token", admit=admit)
        issued = services.token_issuer.issue(form, resources, request.headers, claimed, record,
                                             authenticated=authenticated)
    except InvalidClient:
        await enforce(services.limiter, limits.failure(address))
        raise
    request.scope[CLIENT_ID] = record.client_id
    if not admitted:
        await admit()
    return issued


async def parse_form(request: Request) -> tuple[dict[str, str], list[str]]:
    """The body as single-valued parameters, plus the (repeatable) resources."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    # RFC 6749 §4.4.2: the request uses "application/x-www-form-urlencoded".
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("The body must be application/x-www-form-urlencoded",
                             reason="bad_content_type")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequest("The request body is too large", reason="body_too_large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=64, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The body is not valid form data", reason="bad_form") from None
    form: dict[str, str] = {}
    resources: list[str] = []
    for name, value in pairs:
        # RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if
        # they were omitted from the request."
        if value == "":
            continue
        if name in _MAY_REPEAT:
            resources.append(value)
            continue
        # RFC 6749 §3.1/§3.2: "Request and response parameters MUST NOT be
        # included more than once."
        if name in form:
            raise InvalidRequest(f"Parameter '{name[:64]}' is repeated",
                                 reason="repeated_parameter")
        form[name] = value
    return form, resources


def granted_rows(issued: IssuedToken, request: Request, *, actor: str | None = None,
                 details: Mapping[str, Any] | None = None) -> Rows:
    """The issued-token record and its ``M2M_TOKEN_GENERATED`` event, for one
    :meth:`GroupWriter.write` (DESIGN §3.7: both in one transaction).

    Every path that grants a token writes these rows: POST /token (``actor`` is
    the client itself) and POST /auth/m2m/token (``actor`` is the administrator,
    who is also named in ``details``).
    """
    record = issued.client
    token_row = {
        "jti": issued.jti, "client_id": record.client_id, "tenant_id": record.tenant_id,
        "scope": " ".join(issued.scopes), "audience": list(issued.audience),
        "kid": issued.key.kid, "issued_at": utc(issued.issued_at),
        "expires_at": utc(issued.expires_at), "revoked_at": None,
    }
    event = audit_row(
        AuditEvent.M2M_TOKEN_GENERATED, at=issued.issued_at,
        actor=actor if actor is not None else record.client_id,
        tenant_id=record.tenant_id, client_id=record.client_id,
        source=request_source(request), request_id=request_id(request),
        details={"client_id": record.client_id, "tenant_id": record.tenant_id,
                 "scopes": list(issued.scopes), "audience": list(issued.audience),
                 "jti": issued.jti, "kid": issued.key.kid,
                 "expiresAt": utc(issued.expires_at).isoformat(),
                 "secret_used": issued.secret_used, **(details or {})},
    )
    return [(_ISSUED_TOKENS, token_row), (_AUDIT_EVENTS, event)]


async def audit_denial(services: Services, request: Request, error: OAuthError,
                       claimed: ClaimedClient | None, known: ClientRecord | None, *,
                       actor: str | None = None,
                       details: Mapping[str, Any] | None = None) -> None:
    """Count a refused token request and record its ``M2M_TOKEN_DENIED`` event with
    the server-side reason; never raises for the store (the denial is answered
    either way). ``actor`` defaults to the client when it is known, else nobody.
    Of a run of rate-limited requests only the first is audited, and of a run
    refused because Redis is down (``ISSUER_RATE_LIMIT_FAIL=closed``) the first of
    each interval."""
    services.metrics.token_failed(error)
    event_details: dict[str, object] = {"error": error.error, "reason": error.reason}
    if isinstance(error, TooManyRequests | RateLimitUnavailable) and not error.first_refusal:
        # Counted by the metrics; audited once per window, so a flood of refused
        # requests cannot flood the audit log.
        return
    if isinstance(error, TooManyRequests):
        event_details["policy"] = error.policy
    if claimed is not None:
        event_details["claimed_client_id"] = claimed.client_id[:64]
        event_details["auth_method"] = claimed.method
    if error.details:
        event_details.update(error.details)
    event_details.update(details or {})
    event = audit_row(
        AuditEvent.M2M_TOKEN_DENIED, at=services.clock.now(),
        actor=actor if actor is not None else (known.client_id if known else None),
        tenant_id=known.tenant_id if known else None,
        client_id=known.client_id if known else None,
        source=request_source(request), request_id=request_id(request),
        details=event_details,
    )
    try:
        await services.writer.write([(_AUDIT_EVENTS, event)])
    except (SQLAlchemyError, OSError) as failure:
        services.store_failures.report("recording a denied token request", failure)


def request_source(request: Request) -> str | None:
    """The caller's address, for audit events."""
    return request.client.host if request.client else None


def request_id(request: Request) -> str | None:
    """The id :class:`~issuer.middleware.RequestIdMiddleware` gave this request."""
    value = request.scope.get("request_id")
    return value if isinstance(value, str) else None
