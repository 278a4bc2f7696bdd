"""NetSuiteClient: throttle, concurrency cap, back-off with jitter on 429 and on
``SSS_REQUEST_LIMIT_EXCEEDED``; and the auth-strategy
registry (the plan's strategy switch). Sleeps are injected: nothing really waits."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from connectors.netsuite import (
    NETSUITE_M2M,
    AuthStrategies,
    Backoff,
    NetSuiteAuth,
    NetSuiteM2MStrategy,
    Throttle,
    UnknownAuthType,
)
from connectors.netsuite.client import NetSuiteClient
from tests.conftest import store_independent


async def test_the_simulators_concurrency_cap_is_never_exceeded(make_service, ready_connector,
                                                               simulator):
    simulator.concurrency_limit = 3
    simulator.latency = 0.01
    service = make_service()
    record = await ready_connector(service, max_concurrency=3)
    client = await service.client(record.id)
    responses = await asyncio.gather(*(client.record("GET", "customer", str(n))
                                       for n in range(20)))
    assert [response.status_code for response in responses] == [200] * 20
    assert simulator.over_limit == 0
    assert simulator.max_in_flight == client.max_in_flight == 3


async def test_over_the_accounts_limit_requests_back_off_and_all_succeed(
        make_service, ready_connector, simulator, clock):
    """Another integration uses the account too: our cap of 5 meets NetSuite's 2."""
    simulator.concurrency_limit = 2
    simulator.latency = 0.01
    delays: list[float] = []

    async def scaled(seconds: float) -> None:  # a hundredth of the delay, really waited
        delays.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(seconds / 100)

    service = make_service(sleep=scaled, jitter=random.Random(7).random)
    record = await ready_connector(service, max_concurrency=5)
    client = await service.client(record.id)
    calls = [client.record("GET", "customer", str(n)) for n in range(6)] + [
        client.restlet("GET", 7, 1) for _ in range(6)]
    responses = await asyncio.gather(*calls)
    assert [response.status_code for response in responses] == [200] * 12
    assert simulator.over_limit > 0 and simulator.max_in_flight <= 2
    assert client.max_in_flight <= 5
    assert delays and all(delay >= 0.5 for delay in delays)
    assert len(set(delays)) > 1  # jittered: retries are not synchronised


async def test_429_and_sss_request_limit_exceeded_are_retried_with_growing_delays(
        make_service, ready_connector, simulator, sleeps):
    service = make_service(jitter=lambda: 0.5)
    record = await ready_connector(service)
    client = await service.client(record.id)
    await client.record("GET", "customer", "0")
    sleeps.delays.clear()
    simulator.scripted = ["429", "SSS", "429"]
    response = await client.restlet("POST", 12, 1, json={"a": 1})
    assert response.status_code == 200
    assert sleeps.delays == [0.75, 1.5, 3.0]  # equal jitter on 1, 2, 4 s


async def test_back_off_gives_up_after_its_retries_with_the_last_answer(
        make_service, ready_connector, simulator):
    service = make_service(backoff=Backoff(retries=2))
    record = await ready_connector(service)
    client = await service.client(record.id)
    simulator.scripted = ["SSS"] * 5
    response = await client.restlet("GET", 1, 1)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "SSS_REQUEST_LIMIT_EXCEEDED"
    assert simulator.resource_calls == 3


def test_jitter_spreads_delays_between_half_and_the_whole_step():
    backoff = Backoff(base=1.0, cap=8.0)
    assert [backoff.delay(n, 0.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [backoff.delay(n, 1.0) for n in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]


async def test_retry_after_is_honoured_as_a_minimum(clock, sleeps):
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200)])

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = NetSuiteClient(http, httpx.Auth(), rest_base_url="https://a.netsuite.com",
                                restlets_base_url="https://b.netsuite.com",
                                throttle=Throttle(20, 60, clock, sleeps), max_concurrency=1,
                                sleep=sleeps, jitter=lambda: 0.0)
        assert (await client.request("GET", "/x")).status_code == 200
    assert sleeps.delays == [7.0]


async def test_the_throttle_allows_n_starts_in_any_window(clock, sleeps):
    throttle = Throttle(3, 60, clock, sleeps)
    starts = []
    for _ in range(7):
        await throttle.acquire()
        starts.append(clock.now())
    begin = starts[0]
    assert [start - begin for start in starts] == [0, 0, 0, 60, 60, 60, 120]
    for index, start in enumerate(starts):
        assert sum(1 for other in starts[index:] if other < start + 60) <= 3


async def test_the_connectors_throttle_paces_its_requests(make_service, ready_connector,
                                                          simulator, sleeps, clock):
    service = make_service()
    record = await ready_connector(service, throttle_requests=2, throttle_period=10)
    client = await service.client(record.id)
    begin = clock.now()
    for n in range(5):
        assert (await client.record("GET", "customer", str(n))).status_code == 200
    assert clock.now() - begin == 20 and sleeps.delays == [10, 10]


async def test_paths_stay_below_the_connectors_base_url(make_service, ready_connector):
    service = make_service()
    client = await service.client((await ready_connector(service)).id)
    for path in ("https://evil.example/x", "//evil.example/x", "x"):
        with pytest.raises(ValueError, match="below the connector's base URL"):
            await client.request("GET", path)


async def test_the_registry_gives_the_m2m_strategy_by_auth_type(make_service, ready_connector,
                                                                 simulator):
    service = make_service()
    record = await ready_connector(service)
    strategy = service.strategies.get(NETSUITE_M2M)
    assert isinstance(strategy, NetSuiteM2MStrategy) and strategy.auth_type == "netsuite_m2m"
    assert isinstance(strategy.http_auth(record.id), NetSuiteAuth)
    header = await strategy.authorization(record.id)
    cached = await service.get_or_refresh_access_token(record.id)
    assert header == f"Bearer {cached.access_token}" and simulator.token_requests == 1
    assert service.strategies.auth_types == ("netsuite_m2m",)


@store_independent
def test_the_registry_refuses_unknown_and_duplicate_auth_types(make_service):
    strategies = AuthStrategies([NetSuiteM2MStrategy(make_service())])
    with pytest.raises(UnknownAuthType):
        strategies.get("netsuite_tba")
    with pytest.raises(ValueError, match="registered already"):
        strategies.register(NetSuiteM2MStrategy(make_service()))
