"""``issuer serve``: the app under Granian, in worker processes.

Granian (an HTTP server in Rust, with an ASGI interface) is used because it bounds
what a stranger's connection can hold, which uvicorn does not (uvicorn starts no
timer before a connection's first request, none while its head trickles in, and
shares one listening socket among its workers, so connections opened at once can
all land on one of them):

- a connection must deliver a complete request head within
  ``ISSUER_HTTP_HEADER_TIMEOUT`` of connecting, and again of each response: an idle
  connection, a half-sent head and an idle keep-alive connection are all closed;
- a request head larger than :data:`MAX_HEAD_BYTES` is refused (431);
- a worker holds at most ``ISSUER_HTTP_MAX_CONNECTIONS`` connections. Past that it
  stops accepting: new connections wait in the kernel's accept queue
  (:data:`BACKLOG` deep, beyond which the kernel drops connection attempts) until
  a held one closes, which the timeouts bound;
- on Linux each worker listens on a socket of its own (``SO_REUSEPORT``), so the
  kernel spreads connections over the workers (by a hash of their addresses);
- HTTP/1.1 only (no h2c, no WebSocket): nothing else is served here, and HTTP/2's
  streams would escape the head timeout.

The body's deadline is :class:`issuer.middleware.BodyTimeoutMiddleware` (408). On
SIGTERM or SIGINT each worker stops accepting, finishes the requests in flight,
closes idle connections and runs the app's shutdown (background tasks stop, leased
rate-limit slots go back to Redis); a worker still busy after
:data:`SHUTDOWN_GRACE` seconds is killed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from issuer.settings import Settings

#: The ASGI app factory every worker calls.
APP = "issuer.app:create_app_from_env"
#: Connections the kernel queues per listening socket before refusing more.
BACKLOG = 1024
#: Seconds a stopping worker has to finish its requests before it is killed.
SHUTDOWN_GRACE = 30
#: Bytes a connection's read buffer holds: the largest request head (431 past it).
MAX_HEAD_BYTES = 64 * 1024
#: How ``issuer serve`` tells its workers how many of them there are.
WORKERS_ENV = "ISSUER_SERVE_WORKERS"
#: Seconds a worker's busy event loop keeps the GIL from a thread that asks for it
#: (``sys.setswitchinterval``; Python's default is 5 ms). The group writer's SQLite
#: thread takes the GIL back after every statement of a commit, holding the
#: database's write lock meanwhile, and Granian's threads take it to hand requests
#: over: at 5 ms a commit of a few rows took 6-8 ms next to a busy loop, at 0.5 ms
#: about 2.
SWITCH_INTERVAL = 0.0005


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def sign_threads() -> int | None:
    """The signing threads of a worker (``issuer.keys.ring.Signer``): none -- sign on the event
    loop -- when there are at least as many workers as CPUs, since a signing thread
    would find no idle core and the hand-off would only cost; else one per CPU."""
    workers = os.environ.get(WORKERS_ENV, "")
    return 0 if workers.isdigit() and int(workers) >= default_workers() else None


def serve(settings: Settings, *, host: str, port: int, workers: int, log_level: str,
          log_config: dict[str, Any]) -> None:
    """Run until SIGTERM/SIGINT. Announces the bound address (the real port when
    ``port`` is 0) on stderr before the workers start."""
    os.environ[WORKERS_ENV] = str(workers)  # inherited by the workers (sign_threads)
    server = _Server(
        APP, factory=True, address=host, port=port, interface=Interfaces.ASGI,
        workers=workers, loop=Loops.uvloop, http=HTTPModes.http1, websockets=False,
        backlog=BACKLOG, backpressure=settings.http_max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(settings.http_header_timeout * 1000)),
            keep_alive=True, max_buffer_size=MAX_HEAD_BYTES),
        log_enabled=True, log_level=LogLevels(log_level), log_dictconfig=log_config,
        log_access=False, respawn_failed_workers=True, workers_kill_timeout=SHUTDOWN_GRACE,
    )
    server.announce = lambda bound: print(
        f"issuer: serving {settings.issuer_url} on http://{bound}", file=sys.stderr, flush=True)
    server.serve()


class _Server(Server):  # type: ignore[misc,valid-type]  # an alias of the build's server class
    """Granian's server, telling which port it bound (``--port 0`` picks a free one)."""

    announce: Any

    def _init_shared_socket(self) -> None:
        super()._init_shared_socket()
        self.bind_port = self._bound_port()  # for Granian's own "Listening at" line too
        host = f"[{self.bind_addr}]" if ":" in self.bind_addr else self.bind_addr
        self.announce(f"{host}:{self.bind_port}")

    def _bound_port(self) -> int:
        # On Linux the listener spec was bound (each worker then binds its own
        # SO_REUSEPORT socket to the same port); elsewhere one shared socket is.
        if self._ssp is not None:
            port: int = self._ssp.__getstate__()[1]
            return port
        import socket

        with socket.socket(fileno=os.dup(self._sfd)) as shared:
            return int(shared.getsockname()[1])
