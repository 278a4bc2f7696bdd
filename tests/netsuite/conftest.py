"""Fixtures of the NetSuite connector's tests: a simulated NetSuite account, the service
bound to it (in-process cache or the real Redis), a tenant, ready connectors, and the
app with its outbound HTTP client bound to the simulator."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from connectors.netsuite import ConnectorRecord, ConnectorSpec, NetSuiteM2MService
from connectors.netsuite.keys import PrivateKey, generate_key_pair
from issuer.app import create_app
from issuer.crypto import encryptor_for
from issuer.registration import Actor, create_tenant
from issuer.settings import Settings
from tests.conftest import ISSUER, FakeClock, lifespan
from tests.netsuite.simulator import NetSuiteSimulator

ACCOUNT = "1234567_SB1"
SUITETALK = "https://1234567-sb1.suitetalk.api.netsuite.com"
TOKEN_URL = f"{SUITETALK}/services/rest/auth/oauth2/v1/token"
ACTOR = Actor("test-admin", "203.0.113.7", "req-1")


class Sleeps:
    """An injected sleep: records each delay and moves the fake clock instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


@pytest.fixture(scope="session")
def rsa_keys() -> list[PrivateKey]:
    """RSA-4096 keys, made once per run (about a second each)."""
    return [generate_key_pair("PS256") for _ in range(3)]


@pytest.fixture
def key_factory(rsa_keys: list[PrivateKey]) -> Callable[[str], PrivateKey]:
    """Key pairs for the service: RSA from the session's pool (each used once per test),
    EC made fresh (fast)."""
    pool = itertools.cycle(rsa_keys)

    def make(algorithm: str) -> PrivateKey:
        return next(pool) if algorithm == "PS256" else generate_key_pair(algorithm)

    return make


@pytest.fixture
def simulator(clock: FakeClock) -> NetSuiteSimulator:
    return NetSuiteSimulator(ACCOUNT, clock)


@pytest.fixture
async def outbound(simulator: NetSuiteSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator.app)) as http:
        yield http


@pytest.fixture
def sleeps(clock: FakeClock) -> Sleeps:
    return Sleeps(clock)


@pytest.fixture
async def make_service(engine: AsyncEngine, settings: Settings, clock: FakeClock,
                       outbound: httpx.AsyncClient, sleeps: Sleeps, redis_url: str,
                       key_factory: Callable[[str], PrivateKey],
                       ) -> AsyncIterator[Callable[..., NetSuiteM2MService]]:
    """``make_service(redis=True|False, **options)``: a service on the test store."""
    opened: list[Redis] = []

    def make(*, redis: bool = False, **options: Any) -> NetSuiteM2MService:
        client = None
        if redis:
            client = Redis.from_url(redis_url)
            opened.append(client)
        options.setdefault("http", outbound)
        options.setdefault("sleep", sleeps)
        options.setdefault("jitter", lambda: 0.5)
        options.setdefault("key_factory", key_factory)
        options.setdefault("encryptor", encryptor_for(settings))
        return NetSuiteM2MService(engine=engine, clock=clock, redis=client, **options)

    yield make
    for client in opened:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def service(request: pytest.FixtureRequest,
            make_service: Callable[..., NetSuiteM2MService]) -> NetSuiteM2MService:
    """The service with each cache backend: in-process, and the real Redis."""
    return make_service(redis=request.param == "redis")


@pytest.fixture
async def tenant_id(engine: AsyncEngine, clock: FakeClock) -> str:
    async with async_sessionmaker(engine)() as session, session.begin():
        return (await create_tenant(session, "acme", clock)).id


ReadyConnector = Callable[..., Awaitable[ConnectorRecord]]


@pytest.fixture
def ready_connector(simulator: NetSuiteSimulator, tenant_id: str) -> ReadyConnector:
    """``await ready_connector(service, algorithm="ES256")``: created, key pair made,
    certificate uploaded to the simulator, Certificate ID recorded."""

    async def make(service: NetSuiteM2MService, algorithm: str = "ES256",
                   scopes: tuple[str, ...] = ("rest_webservices", "restlets"),
                   **spec: Any) -> ConnectorRecord:
        integration = simulator.add_integration()
        created = await service.create(ConnectorSpec(
            tenant_id=tenant_id, name="erp sync", account_id=ACCOUNT,
            client_id=integration.client_id, scopes=scopes, algorithm=algorithm, **spec), ACTOR)
        pem = await service.generate_key_pair(created.id, ACTOR)
        certificate_id = simulator.upload(pem, integration.client_id)
        return await service.record_certificate_id(created.id, certificate_id, ACTOR)

    return make


class netsuite_app:
    """``async with netsuite_app(settings, clock, outbound) as http``: the issuer over ASGI,
    lifespan entered, its outbound calls going to the simulator."""

    def __init__(self, settings: Settings, clock: FakeClock, outbound: httpx.AsyncClient) -> None:
        self._manager = lifespan(create_app(settings, clock=clock, outbound=outbound))
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        await self._manager.__aenter__()
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._manager.app, client=("203.0.113.7", 4711)),
            base_url=ISSUER)
        return self._http

    async def __aexit__(self, *exc: object) -> None:
        assert self._http is not None
        await self._http.aclose()
        await self._manager.__aexit__(*exc)


@pytest.fixture
async def api(settings: Settings, clock: FakeClock,
              outbound: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    async with netsuite_app(settings, clock, outbound) as http:
        yield http


@pytest.fixture
def loopback(simulator: NetSuiteSimulator) -> Iterator[str]:
    """The simulator on a real loopback socket, standing for the account's suitetalk host
    (for other processes: the CLI, workers); yields its ``http://127.0.0.1:PORT``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    netloc = f"127.0.0.1:{sock.getsockname()[1]}"
    simulator.alias(netloc)
    server = uvicorn.Server(uvicorn.Config(simulator.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://{netloc}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()
