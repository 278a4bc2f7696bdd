"""``issuer serve`` as a stranger and a busy deployment meet it: a real server
process, raw sockets where the bytes on the wire matter.

The connection bounds are set small in the server's environment
(``ISSUER_HTTP_HEADER_TIMEOUT``, ``ISSUER_HTTP_BODY_TIMEOUT``: 1 s), so nothing
waits the default 30 s. The tests wait on the socket for the server to act, with
:data:`SLACK` on top of a bound for a loaded machine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker

from issuer import cli, serving
from issuer.clock import SystemClock
from issuer.crypto import Encryptor
from issuer.registration import ClientSpec, create_client, create_tenant
from issuer.store.db import create_engine
from tests.conftest import (
    REDIS_URL,
    SEEN_SECRETS,
    TEST_MASTER_KEY,
    Registered,
    ServeProcess,
    delete_redis_keys,
    run,
)

HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
#: Seconds beyond a bound that a loaded machine may take to act on it.
SLACK = 4.0
GRANT = "grant_type=client_credentials"


@dataclass
class Served:
    server: ServeProcess
    client: Registered

    @property
    def address(self) -> tuple[str, int]:
        return _address(self.server.url)


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _environment(database_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "ENCRYPTION_"))}
    env.update({"ISSUER_DATABASE_URL": database_url,
                "ENCRYPTION_MASTER_KEY": TEST_MASTER_KEY.hex(), **settings})
    return env


async def _register(database_url: str, **spec: Any) -> Registered:
    engine = create_engine(database_url)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            tenant = await create_tenant(session, "acme", SystemClock())
            created = await create_client(
                session, ClientSpec(tenant_id=tenant.id, name="served",
                                    allowed_scopes=["orders:read"], **spec),
                SystemClock(), encryptor=Encryptor(current=TEST_MASTER_KEY))
    finally:
        await engine.dispose()
    SEEN_SECRETS.add(created.client_secret)
    return Registered(created.record.client_id, created.client_secret, tenant.id)


def _store(directory: Path, template: Path) -> str:
    shutil.copyfile(template, directory / "issuer.db")
    return f"sqlite+aiosqlite:///{directory / 'issuer.db'}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Served]:
    """One ``issuer serve --workers 2`` with 1-second bounds, shared by this module."""
    directory = tmp_path_factory.mktemp("served")
    database_url = _store(directory, sqlite_template)
    client = run(_register(database_url))
    server = ServeProcess(_environment(database_url,
                                       ISSUER_HTTP_HEADER_TIMEOUT=str(HEAD_TIMEOUT),
                                       ISSUER_HTTP_BODY_TIMEOUT=str(BODY_TIMEOUT)),
                          directory, "--workers", "2")
    server.scrape_workers(2)  # both workers are listening
    yield Served(server, client)
    server.stop()


def _basic(client: Registered) -> str:
    raw = f"{client.client_id}:{client.client_secret}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _token_request(client: Registered) -> bytes:
    return (f"POST /token HTTP/1.1\r\nHost: issuer\r\nAuthorization: {_basic(client)}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(GRANT)}\r\n\r\n{GRANT}").encode()


class Wire:
    """A raw client socket and the server's bytes as they come."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=SLACK)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self, deadline: float) -> bytes:
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        return self.sock.recv(65536)

    def response(self, within: float = SLACK) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 response (with Content-Length)."""
        deadline = time.monotonic() + within
        while b"\r\n\r\n" not in self.buffer:
            chunk = self._more(deadline)
            assert chunk, f"closed before a response: {self.buffer!r}"
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self._more(deadline)
            assert chunk, "closed in the middle of a response"
            rest += chunk
        self.buffer = rest[length:]
        return int(status_line.split()[1]), headers, rest[:length]

    def seconds_until_closed(self, within: float) -> float:
        """How long the server takes to close this connection, sending nothing more."""
        started = time.monotonic()
        try:
            chunk = self._more(started + within)
        except TimeoutError:
            raise AssertionError(f"still open after {within} s") from None
        assert chunk == b"", f"the server sent {chunk!r}"
        return time.monotonic() - started

    def answers_within(self, seconds: float) -> bool:
        """Whether the server sends anything within ``seconds``."""
        try:
            chunk = self._more(time.monotonic() + seconds)
        except TimeoutError:
            return False
        self.buffer += chunk
        return True


@pytest.fixture
def wire(served: Served) -> Iterator[Wire]:
    connection = Wire(served.address)
    yield connection
    connection.close()


# Connection bounds ---------------------------------------------------------------------


def test_an_idle_connection_is_closed_after_the_header_timeout(wire):
    assert wire.seconds_until_closed(HEAD_TIMEOUT + SLACK) >= HEAD_TIMEOUT * 0.9


def test_a_half_sent_request_head_is_closed_after_the_header_timeout(wire):
    wire.send(b"POST /token HTTP/1.1\r\nHost: issuer\r\nContent-Type: application/x-www-")
    assert wire.seconds_until_closed(HEAD_TIMEOUT + SLACK) >= HEAD_TIMEOUT * 0.9


def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout(wire):
    wire.send(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n")
    status, headers, _ = wire.response()
    assert status == 200 and headers.get("connection") != "close"
    assert wire.seconds_until_closed(HEAD_TIMEOUT + SLACK) >= HEAD_TIMEOUT * 0.9


def test_a_request_head_over_64_kib_is_refused(wire):
    wire.send(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\nX-Padding: ")
    for _ in range(32):  # up to 256 KiB of one header, 8 KiB at a time
        wire.send(b"a" * 8192)
        if wire.answers_within(0.05):
            break
    status, _, _ = wire.response()
    assert status == 431  # RFC 6585 §5: Request Header Fields Too Large
    assert wire.seconds_until_closed(SLACK) < SLACK


def test_keep_alive_requests_on_one_connection_are_all_answered(served, wire):
    for _ in range(5):
        wire.send(_token_request(served.client))
        status, headers, body = wire.response()
        assert status == 200, body
        assert json.loads(body)["token_type"] == "Bearer"
        assert headers.get("connection") != "close"


def test_a_trickling_body_gets_408_and_the_connection_closes(served, wire):
    # RFC 9110 §15.5.9: the server "did not receive a complete request message
    # within the time that it was prepared to wait".
    wire.send(f"POST /token HTTP/1.1\r\nHost: issuer\r\nAuthorization: {_basic(served.client)}"
              "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200"
              "\r\n\r\n".encode())
    started = time.monotonic()
    sent = 0
    while not wire.answers_within(0.2):  # a byte every 0.2 s: never done in time
        assert time.monotonic() - started < BODY_TIMEOUT + SLACK, "no answer"
        wire.send(GRANT[sent % len(GRANT)].encode())
        sent += 1
    status, headers, body = wire.response()
    assert status == 408
    assert time.monotonic() - started >= BODY_TIMEOUT * 0.9
    assert json.loads(body) == {"error": "invalid_request",
                                "error_description": "The request body did not arrive in time"}
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert wire.seconds_until_closed(SLACK) < SLACK


def test_connections_beyond_the_cap_wait_until_a_held_one_closes(tmp_path, sqlite_template):
    server = ServeProcess(_environment(_store(tmp_path, sqlite_template),
                                       ISSUER_HTTP_MAX_CONNECTIONS="2"),
                          tmp_path, "--workers", "1")
    try:
        server.scrape_workers(1)
        address = _address(server.url)
        held = [Wire(address), Wire(address)]
        waiting = Wire(address)
        waiting.send(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n")
        # Two connections held: the third is not taken up, however long it waits
        # (here: a second) -- the worker holds no more than its cap.
        assert not waiting.answers_within(1.0)
        held[0].close()
        status, _, body = waiting.response()
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        for connection in (held[1], waiting):
            connection.close()
    finally:
        server.stop()


# Two Authorization headers (RFC 9110 §5.3: not a list field) --------------------------


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_two_authorization_headers_are_invalid_request_on_the_wire(served, wire, path):
    authorization = _basic(served.client)
    body = GRANT if path == "/token" else "token=abc"
    wire.send(f"POST {path} HTTP/1.1\r\nHost: issuer\r\nAuthorization: {authorization}\r\n"
              f"Authorization: {authorization}\r\n"
              "Content-Type: application/x-www-form-urlencoded\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    status, headers, answer = wire.response()
    assert status == 400
    assert json.loads(answer) == {"error": "invalid_request",
                                  "error_description": "Send one Authorization header"}
    assert headers["cache-control"] == "no-store"


# Client aborts -------------------------------------------------------------------------


def _token_failures(server: ServeProcess) -> dict[str, float]:
    """Refused token requests by reason, summed over the workers."""
    failures: dict[str, float] = {}
    for page in server.scrape_workers(2).values():
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                if sample.name == "issuer_token_failures_total":
                    reason = sample.labels["reason"]
                    failures[reason] = failures.get(reason, 0.0) + sample.value
    return failures


def test_a_client_hanging_up_mid_body_is_logged_as_an_abort(served, wire):
    failures = _token_failures(served.server)
    wire.send(f"POST /token HTTP/1.1\r\nHost: issuer\r\nX-Request-ID: hang-up-1\r\n"
              f"Authorization: {_basic(served.client)}\r\n"
              "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n"
              "\r\ngrant_type=".encode())
    assert not wire.answers_within(0.2)  # the body is still on its way
    wire.close()
    line = json.loads(served.server.wait_for_line(lambda text: "hang-up-1" in text))
    assert {key: line[key] for key in ("level", "logger", "message", "path", "status")} == {
        "level": "info", "logger": "issuer.access", "message": "client aborted",
        "path": "/token", "status": 499}
    # One line, and no error, traceback or 500 anywhere.
    assert sum("hang-up-1" in text for text in served.server.log) == 1
    log = "".join(served.server.log)
    assert "Traceback" not in log and '"level":"error"' not in log
    assert _token_failures(served.server) == failures


# Workers -------------------------------------------------------------------------------


def _tokens_by_worker(server: ServeProcess) -> dict[str, float]:
    return {pid: sum(sample.value for family in text_string_to_metric_families(page)
                     for sample in family.samples
                     if sample.name == "issuer_tokens_issued_total")
            for pid, page in server.scrape_workers(2).items()}


def test_keep_alive_clients_are_shared_by_both_workers(served):
    before = _tokens_by_worker(served.server)

    async def keep_alive_client() -> list[int]:
        # One connection, kept open for every request of this client.
        async with httpx.AsyncClient(base_url=served.server.url,
                                     limits=httpx.Limits(max_connections=1)) as http:
            return [(await http.post("/token", content=GRANT, headers={
                "Authorization": _basic(served.client),
                "Content-Type": "application/x-www-form-urlencoded"})).status_code
                for _ in range(3)]

    async def clients() -> list[list[int]]:
        # 24 connections opened at once: the kernel spreads them over the workers
        # (all on one worker: a chance of 2 in 2**24).
        return await asyncio.gather(*[keep_alive_client() for _ in range(24)])

    statuses = asyncio.run(clients())
    assert statuses == [[200, 200, 200]] * 24
    after = _tokens_by_worker(served.server)
    issued = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    assert len(issued) == 2 and sum(issued.values()) == 72
    assert all(count > 0 for count in issued.values()), issued


def test_serve_defaults_to_one_worker_per_cpu(tmp_path, sqlite_template, monkeypatch):
    root = logging.getLogger()  # `serve` configures logging: put it back afterwards
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith(("ISSUER_", "ENCRYPTION_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ISSUER_DATABASE_URL", _store(tmp_path, sqlite_template))
    monkeypatch.setenv("ENCRYPTION_MASTER_KEY", TEST_MASTER_KEY.hex())
    started: list[int] = []
    monkeypatch.setattr(serving, "serve", lambda settings, **options: started.append(
        options["workers"]))
    assert cli.main(["serve"]) == 0
    assert cli.main(["serve", "--workers", "3"]) == 0
    assert started == [len(os.sched_getaffinity(0)), 3]


# Shutdown ------------------------------------------------------------------------------


def test_sigterm_lets_the_request_in_flight_finish_and_runs_the_app_shutdown(tmp_path,
                                                                            sqlite_template):
    database_url = _store(tmp_path, sqlite_template)
    client = run(_register(database_url, rate_limit="1000/minute"))
    prefix = f"test:{os.urandom(8).hex()}:"
    log_key = f"{prefix}rl:token:{client.client_id}"
    server = ServeProcess(_environment(database_url, ISSUER_REDIS_URL=REDIS_URL,
                                       ISSUER_REDIS_KEY_PREFIX=prefix), tmp_path, "--workers", "1")

    async def count() -> int:
        redis = Redis.from_url(REDIS_URL)
        try:
            return int(await redis.zcard(log_key))
        finally:
            await redis.aclose()

    try:
        server.scrape_workers(1)
        wire = Wire(_address(server.url))
        for _ in range(40):
            wire.send(_token_request(client))
            assert wire.response()[0] == 200
        # A busy client is served from slots leased in Redis: more are reserved
        # than were spent.
        assert run(count()) > 40
        request = _token_request(client)
        wire.send(request[:-5])  # the last bytes of the body are still to come
        server.process.terminate()
        server.wait_for_line(lambda text: "Stopping worker-1" in text)
        wire.send(request[-5:])
        status, headers, _ = wire.response()
        assert status == 200 and headers["connection"] == "close"
        wire.close()
        assert server.stop() == 0
        # The app's shutdown ran: the unused leased slots went back to Redis.
        assert run(count()) == 41
        assert '"level":"error"' not in "".join(server.log)
    finally:
        server.stop()
        run(delete_redis_keys(prefix))


def test_workers_sign_on_the_event_loop_only_when_every_cpu_has_one(monkeypatch):
    # A signing thread helps only when a core is idle; with a worker per CPU there is none.
    cpus = serving.default_workers()
    monkeypatch.setenv(serving.WORKERS_ENV, str(cpus))
    assert serving.sign_threads() == 0
    monkeypatch.setenv(serving.WORKERS_ENV, str(cpus + 1))
    assert serving.sign_threads() == 0
    if cpus > 1:
        monkeypatch.setenv(serving.WORKERS_ENV, str(cpus - 1))
        assert serving.sign_threads() is None
    monkeypatch.delenv(serving.WORKERS_ENV)
    assert serving.sign_threads() is None  # not under `issuer serve`: threads
