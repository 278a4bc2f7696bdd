"""POST /token (RFC 6749 §3.2, §4.4, §5) as a list of named steps.

parse the form -> identify the client -> load it (async, cached) -> [a client
assertion only: its keys (async), Authlib's check (sync), spend its jti (async)] ->
run the grant on Authlib (sync, no I/O) -> [a DPoP proof only: check it (sync),
spend its jti (async), bind the token to its key] -> persist the token record and its audit
event (one transaction, group-committed) -> answer with ``Cache-Control: no-store``.
A failure at any step is rendered by the one error table and audited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

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
from issuer.oauth.client_auth import FEDERATED_JWT, ClaimedClient, basic_challenge, identify
from issuer.oauth.dpop import replayed as dpop_replayed
from issuer.oauth.server import IssuedToken
from issuer.oauth.token_request import TokenRequest, check_content_type, read_form
from issuer.ratelimit import enforce
from issuer.services import Services, services_of
from issuer.store.bounds import bounded, request_budget
from issuer.store.models import AuditEventRow
from issuer.store.models import IssuedToken as IssuedTokenRow
from issuer.store.records import ClientRecord
from issuer.store.writer import Rows

# The Core tables the group writer inserts into.
_ISSUED_TOKENS = IssuedTokenRow.__table__
_AUDIT_EVENTS = AuditEventRow.__table__

#: The ``grant`` label of the tokens-issued metric for this endpoint.
GRANT = "client_credentials"


#: A reply: status, raw headers (before ``x-request-id``), body.
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
#: The 200 answer's headers, as Starlette's ``Response`` writes them for
#: ``media_type="application/json", headers=NO_STORE``.
_GRANTED_HEADERS = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in NO_STORE.items()]
_JSON = (b"content-type", b"application/json")
_NO_QUERY: Mapping[str, str] = {}


async def token(request: Request) -> Response:
    """POST /token as a Starlette endpoint (the route table's entry). The app serves
    the same requests from ASGI first (``issuer.oauth.token_route``); both run
    :func:`answer`."""
    status, headers, body = await answer(services_of(request), request.scope,
                                         request.headers, request.body)
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


async def answer(services: Services, scope: Scope, headers: Headers,
                 body: Callable[[], Awaitable[bytes]]) -> Reply:
    """Answer one POST /token. ``body`` reads the request body (called at most once,
    after the content type was checked); ``scope`` gives the caller's address and
    request id and receives the authenticated client id (for the access log)."""
    started = time.perf_counter()
    try:
        # Every wait for the store below draws on one budget (issuer.store.bounds).
        with request_budget(services.settings.store_timeout):
            reply = await _answer(services, scope, headers, body)
        nonces = services.dpop.nonces
        if nonces is not None:
            # RFC 9449 §8: while nonces are required, every answer carries the next one.
            reply[1].append((b"dpop-nonce", nonces.current().encode()))
        return reply
    finally:
        services.metrics.token_latency.observe(time.perf_counter() - started)


async def _answer(services: Services, scope: Scope, headers: Headers,
                  body: Callable[[], Awaitable[bytes]]) -> Reply:
    claimed: ClaimedClient | None = None
    record: ClientRecord | None = None
    source = scope_source(scope)
    try:
        check_content_type(headers.get("content-type"))
        form, resources = read_form(await body())
        query_string = scope.get("query_string")
        claimed = identify(headers, form,
                           QueryParams(query_string) if query_string else _NO_QUERY)
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise InvalidRequest("Missing 'grant_type' parameter", reason="missing_grant_type")
        if grant_type != "client_credentials":
            raise UnsupportedGrantType(reason=f"grant_type={grant_type[:64]}")
        # A client this process holds fresh needs no wait for the store.
        record = services.clients.cached(claimed.client_id)
        if record is None:
            record = await bounded(services.clients.get(claimed.client_id))
        issued = await _authenticated_grant(
            services, scope, source, TokenRequest(form, tuple(resources), headers, claimed),
            record)
        # RFC 9449: a DPoP proof binds the token to its key (issuer.oauth.dpop); without
        # one this is a header look-up and a flag.
        proofs = headers.getlist("dpop")
        spent: Rows = []
        if proofs or issued.client.dpop_bound:
            issued, spent = await services.dpop.bind(issued, proofs, issued.client)
        rows = granted_rows_for(issued, source=source, request_id=scope.get("request_id"))
        # Nothing leaves before it is durable: the answer waits for the record and its
        # audit event to commit; the token is signed meanwhile (on a thread, or here
        # on the loop when this process has a CPU to itself: ``Signer.inline``).
        signer = services.signer
        try:
            if signer.inline:
                access_token = issued.key.sign(issued.claims)
                await services.writer.write([*rows, *spent])  # within the budget
            else:
                access_token, _ = await asyncio.gather(
                    signer.sign(issued.key, issued.claims),
                    services.writer.write([*rows, *spent]))
        except IntegrityError:
            # The one unique key a granted token's rows can meet: a DPoP proof's spent
            # jti (RFC 9449 §11.1), spent by another request first.
            if not spent:
                raise
            raise dpop_replayed() from None
    except OAuthError as error:
        await record_denial(services, error, claimed, record, source=source,
                            request_id=scope.get("request_id"))
        challenge = basic_challenge() if (
            isinstance(error, InvalidClient) and claimed is not None
            and claimed.method == "client_secret_basic"
        ) else None
        return _reply(error_response(error, headers=challenge))
    except (SQLAlchemyError, OSError) as failure:
        # Down, or slower than ISSUER_STORE_TIMEOUT: 503 with Retry-After, no denial
        # event (there is no store to write it to).
        services.store_failures.report("POST /token", failure)
        refusal = StoreUnavailable()
        services.metrics.token_failed(refusal)
        return _reply(error_response(refusal))
    services.metrics.token_issued(issued.client.tenant_id, GRANT)
    content = issued.response_body(access_token)
    return 200, [*_GRANTED_HEADERS, (b"content-length", b"%d" % len(content)), _JSON], content


def _reply(response: Response) -> Reply:
    return response.status_code, response.raw_headers, bytes(response.body)


async def _authenticated_grant(services: Services, scope: Scope, source: str | None,
                               request: TokenRequest, record: ClientRecord | None
                               ) -> IssuedToken:
    """Authenticate the client and run the grant (Authlib, pure CPU), with the rate
    limits (issuer.ratelimit.policy) checked in one atomic step before any signing or
    write: after the secret was verified, or for a client assertion (RFC 7523)
    after its signature and claims were and before its ``jti`` is spent.

    A failed authentication is charged to the source address; once the address
    has spent its budget it gets 429 whether or not its next secret is right.
    """
    address = source or "unknown"
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
        claimed = request.claimed
        if claimed.assertion is not None:
            authenticated = await services.assertions.authenticate(
                request.form, request.headers, claimed, record, "token", admit=admit)
        issued = services.authorization_server.issue(request, record, authenticated=authenticated)
    except InvalidClient:
        await enforce(services.limiter, limits.failure(address))
        raise
    scope[CLIENT_ID] = record.client_id
    if not admitted:
        await admit()
    return issued


async def parse_form(request: Request) -> tuple[dict[str, str], list[str]]:
    """The body as single-valued parameters, plus the (repeatable) resources."""
    check_content_type(request.headers.get("content-type"))
    return read_form(await request.body())


def granted_rows(issued: IssuedToken, request: Request, *, actor: str | None = None,
                 details: Mapping[str, Any] | None = None) -> Rows:
    """:func:`granted_rows_for` a Starlette request."""
    return granted_rows_for(issued, source=request_source(request),
                            request_id=request_id(request), actor=actor, details=details)


def granted_rows_for(issued: IssuedToken, *, source: str | None, request_id: str | None,
                     actor: str | None = None,
                     details: Mapping[str, Any] | None = None) -> Rows:
    """The issued-token record and its ``M2M_TOKEN_GENERATED`` event, for one
    :meth:`GroupWriter.write`, so both commit in one transaction.

    Every path that grants a token writes these rows: POST /token (``actor`` is
    the client itself) and POST /auth/m2m/token (``actor`` is the administrator,
    who is also named in ``details``).
    """
    record = issued.client
    expires_at = utc(issued.expires_at)
    token_row = {
        "jti": issued.jti, "client_id": record.client_id, "tenant_id": record.tenant_id,
        "scope": " ".join(issued.scopes), "audience": list(issued.audience),
        "kid": issued.key.kid, "issued_at": utc(issued.issued_at),
        "expires_at": expires_at, "revoked_at": None,
    }
    event = audit_row(
        AuditEvent.M2M_TOKEN_GENERATED, at=issued.issued_at,
        actor=actor if actor is not None else record.client_id,
        tenant_id=record.tenant_id, client_id=record.client_id,
        source=source, request_id=request_id,
        details={"client_id": record.client_id, "tenant_id": record.tenant_id,
                 "scopes": list(issued.scopes), "audience": list(issued.audience),
                 "jti": issued.jti, "kid": issued.key.kid,
                 "expiresAt": expires_at.isoformat(),
                 "secret_used": issued.secret_used,
                 **({"dpop_jkt": issued.jkt} if issued.jkt is not None else {}),
                 **({"federated_issuer": issued.federated[0],
                     "federated_subject": issued.federated[1]} if issued.federated else {}),
                 **(details or {})},
    )
    return [(_ISSUED_TOKENS, token_row), (_AUDIT_EVENTS, event)]


async def audit_denial(services: Services, request: Request, error: OAuthError,
                       claimed: ClaimedClient | None, known: ClientRecord | None, *,
                       actor: str | None = None,
                       details: Mapping[str, Any] | None = None) -> None:
    """:func:`record_denial` of a Starlette request."""
    await record_denial(services, error, claimed, known, source=request_source(request),
                        request_id=request_id(request), actor=actor, details=details)


async def record_denial(services: Services, error: OAuthError, claimed: ClaimedClient | None,
                        known: ClientRecord | None, *, source: str | None,
                        request_id: str | None, actor: str | None = None,
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
        if claimed.method == FEDERATED_JWT and claimed.assertion is not None:
            # As presented (the reason says whether it verified).
            event_details["federated_issuer"] = (claimed.assertion.issuer or "")[:256]
            event_details["federated_subject"] = claimed.assertion.client_id[:256]
    if error.details:
        event_details.update(error.details)
    event_details.update(details or {})
    event = audit_row(
        AuditEvent.M2M_TOKEN_DENIED, at=services.clock.now(),
        actor=actor if actor is not None else (known.client_id if known else None),
        tenant_id=known.tenant_id if known else None,
        client_id=known.client_id if known else None,
        source=source, request_id=request_id,
        details=event_details,
    )
    try:
        await services.writer.write([(_AUDIT_EVENTS, event)])
    except (SQLAlchemyError, OSError) as failure:
        services.store_failures.report("recording a denied token request", failure)


def request_source(request: Request) -> str | None:
    """The caller's address, for audit events."""
    return scope_source(request.scope)


def scope_source(scope: Scope) -> str | None:
    """The caller's address (after any trusted proxy's ``X-Forwarded-For``)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def request_id(request: Request) -> str | None:
    """The id :class:`~issuer.middleware.RequestIdMiddleware` gave this request."""
    value = request.scope.get("request_id")
    return value if isinstance(value, str) else None
