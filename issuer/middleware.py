"""Pure ASGI middleware, listed in order in ``issuer.app``."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from issuer.errors import RequestTimeout, error_response

access_log = logging.getLogger("issuer.access")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: The scope key where a handler names the client it authenticated (for the log).
CLIENT_ID = "issuer.client_id"
#: The access log's status of a request whose client hung up before it was read.
CLIENT_ABORTED = 499


class RequestIdMiddleware:
    """Tags every request with an id (the caller's ``X-Request-ID`` if sane), echoes
    it in the response, and writes one structured access-log line (``issuer.logs``):
    method, path (never the query string, which could carry credentials a careless
    client put there), status, duration, request id, source address, and the client
    id once a handler has authenticated one (``scope[CLIENT_ID]``).

    A client that hangs up before its request has arrived in full is no server
    error: its line says ``client aborted`` with status 499 (the status nginx logs
    for it; no response was sent), and nothing else is logged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope["request_id"] = request_id_for(scope)
        started = time.perf_counter()
        status = 500
        outcome = "request"

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            status, outcome = CLIENT_ABORTED, "client aborted"
        finally:
            log_access(scope, status, started, request_id, outcome)


def request_id_for(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` if it is sane, else a new one: 16 hex digits.

    A request id names a request in logs and audit events; it guards nothing, so it
    comes from the process's PRNG (reseeded in every forked worker) rather than the
    operating system's, which costs a system call per request."""
    incoming = _header(scope, b"x-request-id")
    if incoming and _SAFE_REQUEST_ID.match(incoming):
        return incoming
    return f"{random.getrandbits(64):016x}"


def log_access(scope: Scope, status: int, started: float, request_id: str,
               outcome: str = "request") -> None:
    """The request's access-log line (:class:`RequestIdMiddleware`); ``started`` is
    its ``time.perf_counter()`` at arrival."""
    if access_log.isEnabledFor(logging.INFO):
        client = scope.get("client")
        access_log.info(outcome, extra={"fields": {
            "method": scope["method"], "path": scope["path"], "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "request_id": request_id,
            "source": client[0] if client else None,
            "client_id": scope.get(CLIENT_ID),
        }})


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 before a handler reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int = 1024 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope, self.max_bytes):
            await too_large(send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await too_large(send)


class BodyTimeoutMiddleware:
    """Answers 408 and closes the connection when a request's body has not arrived
    in full within ``seconds`` of its head (a client trickling a byte a second
    would otherwise hold a connection and a task for as long as it likes). The
    server bounds the head itself (``issuer.serving``)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False
        responded = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # the body is in; what follows is a wait for a disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except BodyTimeout:
            if not responded:
                await error_response(RequestTimeout(), headers={"Connection": "close"})(
                    scope, receive, send)


def declared_too_large(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's ``Content-Length`` is not a number or exceeds ``max_bytes``
    (:class:`BodySizeLimitMiddleware` answers it 413 before any handler runs)."""
    declared = _header(scope, b"content-length")
    return declared is not None and (not declared.isdigit() or int(declared) > max_bytes)


class BodyTooLarge(Exception):
    """The body grew past its limit while it was read (413)."""


class BodyTimeout(Exception):
    """The body did not arrive in full by its deadline (408)."""


async def read_body(receive: Receive, max_bytes: int, deadline: float) -> bytes:
    """The whole body, read as the middlewares above would let a handler read it:
    past ``max_bytes`` :class:`BodyTooLarge`, past ``deadline`` (the loop's clock)
    :class:`BodyTimeout`, a disconnect ``ClientDisconnect`` (as Starlette's
    ``Request.body``). One timer for the whole body, not one per message."""
    chunks: list[bytes] = []
    seen = 0
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    if message["type"] == "http.disconnect":
                        raise ClientDisconnect
                    continue
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > max_bytes:
                    raise BodyTooLarge
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyTimeout from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def too_large(send: Send, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": "invalid_request",
                       "error_description": "The request body is too large"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
