"""POST /token answered straight from ASGI, ahead of Starlette's middleware stack.

The token endpoint is the hot path: every other route goes through Starlette's
stack (the middlewares of ``issuer.middleware``, exception handlers, the router, a
``Request`` and a ``Response`` per request), but POST /token is answered here with
the same rules and nothing it does not need:

- request id and access-log line as :class:`~issuer.middleware.RequestIdMiddleware`
  writes them (a hang-up before the body arrived is 499 ``client aborted``);
- the body limits of :class:`~issuer.middleware.BodySizeLimitMiddleware` (413) and
  :class:`~issuer.middleware.BodyTimeoutMiddleware` (408, ``Connection: close``);
- trusted proxies' ``X-Forwarded-For`` (the same wrapper as the app's);
- an unexpected exception answers the app's 500 and is re-raised for the server's
  log, as Starlette's ``ServerErrorMiddleware`` does.

The endpoint itself is :func:`issuer.oauth.endpoints.answer`, which the route
table's Starlette endpoint runs too (a request under a ``root_path`` takes that way).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from issuer.errors import RequestTimeout, ServerError, error_response
from issuer.middleware import (
    CLIENT_ABORTED,
    BodyTimeout,
    BodyTooLarge,
    declared_too_large,
    log_access,
    read_body,
    request_id_for,
    too_large,
)
from issuer.oauth.endpoints import Reply, answer

#: The app's 500 (``issuer.app``): JSON, never cached; its traceback goes to the log.
_SERVER_ERROR_BODY = json.dumps(ServerError().body()).encode()
_SERVER_ERROR: Reply = (500, [(b"cache-control", b"no-store"),
                              (b"content-length", b"%d" % len(_SERVER_ERROR_BODY)),
                              (b"content-type", b"application/json")], _SERVER_ERROR_BODY)


class TokenRoute:
    """ASGI: POST /token answered here; every other request goes on to ``app``.

    ``wrap`` wraps the token handler as the app wraps its stack (trusted proxies'
    headers); ``max_body`` and ``body_timeout`` are the app's body limits."""

    def __init__(self, app: ASGIApp, *, max_body: int, body_timeout: float,
                 wrap: Callable[[ASGIApp], ASGIApp] | None = None) -> None:
        self.app = app
        self._max_body = max_body
        self._body_timeout = body_timeout
        self._handle: ASGIApp = wrap(self._token) if wrap is not None else self._token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"] == "/token"
                and scope["method"] == "POST" and not scope.get("root_path")):
            await self._handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = scope["request_id"] = request_id_for(scope)
        status = 500
        outcome = "request"
        try:
            status = await self._respond(scope, receive, send, request_id)
        except ClientDisconnect:
            status, outcome = CLIENT_ABORTED, "client aborted"
        finally:
            log_access(scope, status, started, request_id, outcome)

    async def _respond(self, scope: Scope, receive: Receive, send: Send,
                       request_id: str) -> int:
        tagged = (b"x-request-id", request_id.encode())
        if declared_too_large(scope, self._max_body):
            await too_large(send, [tagged])
            return 413
        deadline = asyncio.get_running_loop().time() + self._body_timeout

        async def body() -> bytes:
            return await read_body(receive, self._max_body, deadline)

        try:
            status, headers, content = await answer(scope["state"]["services"], scope,
                                                    Headers(scope=scope), body)
        except BodyTooLarge:
            await too_large(send, [tagged])
            return 413
        except BodyTimeout:
            response = error_response(RequestTimeout(), headers={"Connection": "close"})
            status, headers, content = (response.status_code, response.raw_headers,
                                        bytes(response.body))
        except ClientDisconnect:
            raise
        except Exception:
            # The app's 500 (without the request id, as ServerErrorMiddleware sends
            # it), then the traceback to the server's log.
            await _send(send, _SERVER_ERROR)
            raise
        headers.append(tagged)
        await _send(send, (status, headers, content))
        return status


async def _send(send: Send, reply: Reply) -> None:
    status, headers, content = reply
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
