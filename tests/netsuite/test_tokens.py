"""Token exchange, caching and refresh against the simulator."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from redis.asyncio import Redis

from connectors.netsuite import NoCertificateId, TokenRequestFailed
from connectors.netsuite.cache import token_key
from connectors.netsuite.connector import ConnectorSpec
from connectors.netsuite.token_client import JWT_BEARER, request_token
from tests.netsuite.conftest import ACCOUNT, ACTOR, TOKEN_URL

AUDIT_TRAIL = ("Check NetSuite's Login Audit Trail (Setup > Users/Roles > User Management > "
               "View Login Audit Trail) for the reason.")


class Recorder(httpx.AsyncBaseTransport):
    """A transport in front of the simulator that keeps every token request's form."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.token_forms: list[tuple[dict[str, list[str]], httpx.Headers]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            body = httpx.QueryParams(request.content.decode())
            self.token_forms.append(({k: body.get_list(k) for k in body}, request.headers))
        return await self.inner.handle_async_request(request)


async def test_create_assertion_payload_claims_and_header(service, ready_connector, clock):
    record = await ready_connector(service)
    assertion = await service.create_assertion(record)
    private = await service.kms.get(tenant_id=record.tenant_id, connector_id=record.id,
                                    key_id=record.active_key_id)
    token = jwt.decode(assertion, ECKey.import_key(private.public_key()), algorithms=["ES256"])
    assert token.header == {"typ": "JWT", "alg": "ES256", "kid": record.active_certificate_id}
    now = int(clock.now())
    assert token.claims == {"iss": record.client_id, "scope": ["rest_webservices", "restlets"],
                            "aud": TOKEN_URL, "iat": now, "exp": now + 300}


async def test_the_token_request_is_exactly_three_form_fields(make_service, ready_connector,
                                                              simulator):
    recorder = Recorder(httpx.ASGITransport(app=simulator.app))
    async with httpx.AsyncClient(transport=recorder) as http:
        service = make_service(http=http)
        record = await ready_connector(service)
        token = await service.authenticate(record)
    assert token.expires_in == 3600
    [(form, headers)] = recorder.token_forms
    assert set(form) == {"grant_type", "client_assertion_type", "client_assertion"}
    assert form["grant_type"] == ["client_credentials"]
    assert form["client_assertion_type"] == [JWT_BEARER]
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in headers


async def test_cache_miss_then_hit_with_ttl_expires_in_minus_300(service, ready_connector,
                                                                 simulator, redis_url):
    record = await ready_connector(service)
    first = await service.get_or_refresh_access_token(record.id)
    second = await service.get_or_refresh_access_token(record.id)
    assert first == second and first.expires_in == 3600
    assert simulator.token_requests == 1
    if service.locks.redis is not None:
        redis = Redis.from_url(redis_url)
        try:
            ttl = await redis.ttl(token_key(record.id))
            stored = await redis.get(token_key(record.id))
        finally:
            await redis.aclose()
        assert 3290 <= ttl <= 3300
        assert first.access_token.encode() not in stored  # encrypted at rest


async def test_the_cached_token_is_renewed_300_seconds_before_it_expires(
        service, ready_connector, simulator, clock):
    record = await ready_connector(service)
    first = await service.get_or_refresh_access_token(record.id)
    clock.advance(3299)
    assert await service.get_or_refresh_access_token(record.id) == first
    clock.advance(1)
    second = await service.get_or_refresh_access_token(record.id)
    assert second != first and simulator.token_requests == 2


@pytest.mark.parametrize("as_string", [True, False])
async def test_expires_in_is_read_as_a_string_or_an_integer(service, ready_connector,
                                                            simulator, as_string):
    simulator.expires_in_as_string = as_string
    record = await ready_connector(service)
    assert (await service.authenticate(record)).expires_in == 3600


async def test_a_refusal_is_a_typed_error_with_netsuites_code_and_the_audit_trail_hint(
        service, ready_connector, simulator):
    record = await ready_connector(service)
    simulator.integrations[record.client_id].blocked = True
    with pytest.raises(TokenRequestFailed) as raised:
        await service.get_or_refresh_access_token(record.id)
    error = raised.value
    assert (error.status, error.error) == (401, "invalid_client")
    assert str(error) == ("NetSuite refused the token request: HTTP 401 invalid_client. "
                          + AUDIT_TRAIL)


@pytest.mark.parametrize(("status", "body", "message"), [
    (200, {"access_token": "t", "token_type": "mac", "expires_in": 3600},
     "NetSuite's answer is not a bearer token"),
    (200, {"access_token": "", "token_type": "bearer", "expires_in": 3600},
     "NetSuite's answer has no access_token"),
    (200, {"access_token": "t", "token_type": "Bearer", "expires_in": "soon"},
     "NetSuite's answer has no valid expires_in"),
    (500, {"error": "server_error"}, "NetSuite refused the token request: HTTP 500 server_error"),
    (400, "<html>", "NetSuite refused the token request: HTTP 400 unknown_error"),
])
async def test_malformed_answers_are_typed_errors(status, body, message):
    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        with pytest.raises(TokenRequestFailed) as raised:
            await request_token(http, TOKEN_URL, "a.b.c")
    assert str(raised.value) == f"{message}. {AUDIT_TRAIL}"


async def test_an_unreachable_netsuite_is_a_typed_error():
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route")

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as http:
        with pytest.raises(TokenRequestFailed, match="could not be reached"):
            await request_token(http, TOKEN_URL, "a.b.c")


async def test_no_certificate_id_yet_means_no_token_request(service, simulator, tenant_id):
    integration = simulator.add_integration()
    created = await service.create(ConnectorSpec(
        tenant_id=tenant_id, name="n", account_id=ACCOUNT, client_id=integration.client_id,
        scopes=["restlets"], algorithm="ES256"), ACTOR)
    await service.generate_key_pair(created.id, ACTOR)
    with pytest.raises(NoCertificateId):
        await service.get_or_refresh_access_token(created.id)
    assert simulator.token_requests == 0


async def test_bust_token_cache_forces_a_new_token(service, ready_connector, simulator):
    record = await ready_connector(service)
    first = await service.get_or_refresh_access_token(record.id)
    await service.bust_token_cache(record.id)
    assert await service.get_or_refresh_access_token(record.id) != first
    assert simulator.token_requests == 2


async def test_single_flight_50_concurrent_callers_on_an_empty_cache_one_token_request(
        service, ready_connector, simulator):
    record = await ready_connector(service)
    tokens = await asyncio.gather(*(service.get_or_refresh_access_token(record.id)
                                    for _ in range(50)))
    assert len({token.access_token for token in tokens}) == 1
    assert simulator.token_requests == 1


async def test_single_flight_failure_reaches_every_caller_with_one_request(
        service, ready_connector, simulator):
    record = await ready_connector(service)
    simulator.integrations[record.client_id].blocked = True
    results = await asyncio.gather(*(service.get_or_refresh_access_token(record.id)
                                     for _ in range(20)), return_exceptions=True)
    assert all(isinstance(result, TokenRequestFailed) for result in results)
    assert simulator.token_requests == 1


async def test_single_flight_across_two_service_instances_sharing_redis(
        make_service, ready_connector, simulator):
    """Two services with separate in-process state (as two processes have) and one Redis;
    tests/netsuite/test_multiprocess.py does the same with real processes."""
    first, second = make_service(redis=True), make_service(redis=True)
    record = await ready_connector(first)
    tokens = await asyncio.gather(*(service.get_or_refresh_access_token(record.id)
                                    for _ in range(25) for service in (first, second)))
    assert len({token.access_token for token in tokens}) == 1
    assert simulator.token_requests == 1


async def test_a_401_on_a_rest_call_refreshes_once_and_retries_once(
        service, ready_connector, simulator):
    record = await ready_connector(service)
    client = await service.client(record.id)
    assert (await client.record("GET", "customer", "1")).status_code == 200
    simulator.scripted = ["401"]
    response = await client.record("GET", "customer", "1")
    assert response.status_code == 200
    assert simulator.token_requests == 2 and simulator.resource_calls == 3


async def test_a_401_twice_fails_after_one_refresh(service, ready_connector, simulator):
    record = await ready_connector(service)
    client = await service.client(record.id)
    simulator.scripted = ["401", "401", "401"]
    response = await client.record("GET", "customer", "1")
    assert response.status_code == 401
    assert simulator.token_requests == 2 and simulator.resource_calls == 2


async def test_many_requests_meeting_one_401_share_one_refresh(service, ready_connector,
                                                               simulator):
    record = await ready_connector(service)
    client = await service.client(record.id)
    await client.record("GET", "customer", "1")
    simulator.tokens.clear()  # NetSuite forgot every token it issued
    responses = await asyncio.gather(*(client.record("GET", "customer", str(n))
                                       for n in range(5)))
    assert [response.status_code for response in responses] == [200] * 5
    assert simulator.token_requests == 2


async def test_an_expired_token_after_a_clock_advance_is_reminted_once(
        service, ready_connector, simulator, clock):
    """Checklist 17: past 3600 s NetSuite answers 401; our cache renews at 3300 s, so the
    next call mints exactly one new token before it is sent."""
    record = await ready_connector(service)
    client = await service.client(record.id)
    await client.record("GET", "customer", "1")
    clock.advance(3601)
    assert (await client.record("GET", "customer", "1")).status_code == 200
    assert (await client.record("GET", "customer", "2")).status_code == 200
    assert simulator.token_requests == 2 and simulator.resource_calls == 3


async def test_a_token_expired_at_netsuite_only_is_reminted_once_on_its_401(
        service, ready_connector, simulator):
    record = await ready_connector(service)
    client = await service.client(record.id)
    await client.record("GET", "customer", "1")
    for issued in simulator.tokens.values():
        issued.expires_at = 0  # NetSuite's clock ran ahead of ours
    assert (await client.record("GET", "customer", "1")).status_code == 200
    assert simulator.token_requests == 2


async def test_no_log_line_carries_an_assertion_or_a_token(service, ready_connector,
                                                          simulator, caplog):
    caplog.set_level(logging.DEBUG)
    record = await ready_connector(service)
    token = await service.get_or_refresh_access_token(record.id)
    client = await service.client(record.id)
    simulator.scripted = ["401"]
    await client.record("GET", "customer", "1")
    simulator.integrations[record.client_id].blocked = True
    await service.bust_token_cache(record.id)
    with pytest.raises(TokenRequestFailed):
        await service.get_or_refresh_access_token(record.id)
    text = caplog.text
    assert token.access_token not in text
    for issued in simulator.tokens:
        assert issued not in text
    assert "eyJ" not in text  # no JWS (assertion) of any kind
    assert "PRIVATE KEY" not in text
