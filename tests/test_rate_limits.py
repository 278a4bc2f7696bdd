"""The rate-limit policies through HTTP, on the in-process backend and on
the real Redis (ISSUER_TEST_REDIS_URL), with exact bodies and headers.

RFC 6585 §4 (429 Too Many Requests), RFC 9110 §10.2.3 (Retry-After) and the
RateLimit-* fields of draft-ietf-httpapi-ratelimit-headers. The clock is fake
on both backends: windows move when the test says so.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy import func, select

from issuer.app import create_app
from issuer.settings import Settings
from issuer.store.models import AuditEventRow, IssuedToken
from tests.conftest import ISSUER, REDIS_URL, FakeClock, delete_redis_keys, issue_token, lifespan

TOO_MANY = {"error": "too_many_requests", "error_description": "Too many token requests"}
TOO_MANY_ADMIN = {"error": "too_many_requests", "error_description": "Too many requests"}
GRANT = {"grant_type": "client_credentials"}
CALLER = "203.0.113.7"  # the address of the test's HTTP client


@pytest.fixture(params=["memory", "redis"])
async def backend_settings(request: pytest.FixtureRequest,
                           settings: Settings) -> AsyncIterator[Settings]:
    """The test's settings with no Redis, or with the real one under a key prefix
    of the test's own (deleted afterwards)."""
    if request.param == "memory":
        yield settings
        return
    prefix = f"test:{uuid.uuid4().hex}:"
    yield replace(settings, redis_url=REDIS_URL, redis_key_prefix=prefix)
    await delete_redis_keys(prefix)


class Issuer:
    """One app (lifespan entered) and HTTP clients from any source address."""

    def __init__(self, app: object) -> None:
        self._app = app
        self._clients: list[httpx.AsyncClient] = []

    def from_address(self, address: str = CALLER,
                     headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self._app,  # type: ignore[arg-type]
                                                               client=(address, 4711)),
                                 base_url=ISSUER, headers=headers)
        self._clients.append(http)
        return http

    async def close(self) -> None:
        for http in self._clients:
            await http.aclose()


@asynccontextmanager
async def running(settings: Settings, clock: FakeClock) -> AsyncIterator[Issuer]:
    async with lifespan(create_app(settings, clock=clock)) as manager:
        issuer = Issuer(manager.app)
        try:
            yield issuer
        finally:
            await issuer.close()


def assert_refused(response: httpx.Response, *, limit: int, retry_after: int,
                   body: dict[str, str] = TOO_MANY) -> None:
    assert response.status_code == 429
    assert response.json() == body
    assert response.headers["retry-after"] == str(retry_after)
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-reset"] == str(retry_after)
    assert response.headers["cache-control"] == "no-store"


async def _count(engine, model, *where) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(select(func.count()).select_from(model).where(*where))
                ).scalar_one()


async def _denials(engine, reason: str) -> list[dict]:
    async with engine.connect() as connection:
        rows = (await connection.execute(
            select(AuditEventRow).where(AuditEventRow.event == "M2M_TOKEN_DENIED")
            .order_by(AuditEventRow.id))).mappings().all()
    return [dict(row) for row in rows if row["details"].get("reason") == reason]


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# Per client at /token -----------------------------------------------------------------------


async def test_a_client_over_its_own_rate_limit_gets_429_with_retry_after(
        backend_settings, clock, register, engine):
    registered = await register(rate_limit="3/minute")
    async with running(backend_settings, clock) as issuer:
        http = issuer.from_address()
        for _ in range(3):
            assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 200
            clock.advance(5)  # tokens at 0, 5, 10 s
        refused = await http.post("/token", data=GRANT, auth=registered.basic)
        assert_refused(refused, limit=3, retry_after=45)  # the first leaves at 60 s
        # Checked before any signing or write: three token records, not four.
        assert await _count(engine, IssuedToken,
                            IssuedToken.client_id == registered.client_id) == 3
        clock.advance(45)
        assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 200
        metrics = (await http.get("/metrics")).text
    assert _metric(metrics, "issuer_rate_limit_rejections_total", policy="client") == 1
    assert _metric(metrics, "issuer_token_failures_total", reason="rate_limited") == 1


async def test_without_a_limit_of_its_own_a_client_gets_issuer_rate_limit(
        backend_settings, clock, register):
    registered = await register()
    async with running(replace(backend_settings, rate_limit="2/hour"), clock) as issuer:
        http = issuer.from_address()
        for _ in range(2):
            assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 200
        assert_refused(await http.post("/token", data=GRANT, auth=registered.basic),
                       limit=2, retry_after=3600)


async def test_each_client_has_its_own_budget(backend_settings, clock, register):
    first, second = await register(rate_limit="1/minute"), await register(rate_limit="1/minute")
    async with running(backend_settings, clock) as issuer:
        http = issuer.from_address()
        assert (await http.post("/token", data=GRANT, auth=first.basic)).status_code == 200
        assert (await http.post("/token", data=GRANT, auth=first.basic)).status_code == 429
        assert (await http.post("/token", data=GRANT, auth=second.basic)).status_code == 200


async def test_concurrent_requests_never_exceed_the_client_budget(backend_settings, clock,
                                                                  register, engine):
    registered = await register(rate_limit="10/minute")
    async with running(backend_settings, clock) as issuer:
        http = issuer.from_address()
        responses = await asyncio.gather(*[http.post("/token", data=GRANT, auth=registered.basic)
                                           for _ in range(25)])
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 15
    assert await _count(engine, IssuedToken, IssuedToken.client_id == registered.client_id) == 10


async def test_a_busy_client_is_leased_and_its_slots_go_back_at_shutdown(settings, clock,
                                                                       register):
    # With Redis, a client that asks again and again is served from slots this
    # process reserved in the shared log (issuer.ratelimit.leases); when the issuer stops,
    # the unused ones are handed back: the log then holds exactly the tokens issued.
    prefix = f"test:{uuid.uuid4().hex}:"
    registered = await register(rate_limit="1000/minute")
    log_key = f"{prefix}rl:token:{registered.client_id}"
    redis = Redis.from_url(REDIS_URL)
    try:
        async with running(replace(settings, redis_url=REDIS_URL, redis_key_prefix=prefix),
                           clock) as issuer:
            http = issuer.from_address()
            for _ in range(40):
                assert (await http.post("/token", data=GRANT,
                                        auth=registered.basic)).status_code == 200
            reserved = await redis.zcard(log_key)
        assert reserved > 40  # a lease was open: slots reserved beyond those spent
        assert await redis.zcard(log_key) == 40
    finally:
        await delete_redis_keys(prefix)
        await redis.aclose()


async def test_only_the_first_refusal_of_a_window_is_audited(backend_settings, clock, register,
                                                             engine):
    registered = await register(rate_limit="1/minute")
    async with running(backend_settings, clock) as issuer:
        http = issuer.from_address()
        await http.post("/token", data=GRANT, auth=registered.basic)
        for _ in range(5):
            assert (await http.post("/token", data=GRANT, auth=registered.basic)).status_code == 429
    (denial,) = await _denials(engine, "rate_limited")
    assert denial["client_id"] == registered.client_id
    assert denial["details"]["policy"] == "client"
    assert denial["details"]["error"] == "too_many_requests"


# Per source address, for failed client authentication ----------------------------------------


async def test_wrong_secrets_from_one_address_are_429_after_the_budget(
        backend_settings, clock, register, engine):
    registered = await register()
    wrong = (registered.client_id, registered.client_secret[:-2] + "xx")
    async with running(backend_settings, clock) as issuer:
        guesser, elsewhere = issuer.from_address(), issuer.from_address("198.51.100.20")
        for _ in range(20):
            assert (await guesser.post("/token", data=GRANT, auth=wrong)).status_code == 401
        assert_refused(await guesser.post("/token", data=GRANT, auth=wrong),
                       limit=20, retry_after=60)
        # Even the right secret: the address is blocked, so 429 says nothing of a guess.
        assert_refused(await guesser.post("/token", data=GRANT, auth=registered.basic),
                       limit=20, retry_after=60)
        # The same client from another address still works.
        assert (await elsewhere.post("/token", data=GRANT, auth=registered.basic)
                ).status_code == 200
        clock.advance(60)
        assert (await guesser.post("/token", data=GRANT, auth=registered.basic)
                ).status_code == 200
    (denial,) = await _denials(engine, "rate_limited")
    assert (denial["details"]["policy"], denial["source"]) == ("failed_auth", CALLER)


async def test_unknown_client_ids_spend_the_address_budget_too(backend_settings, clock):
    async with running(replace(backend_settings, failed_auth_rate_limit="2/minute"),
                       clock) as issuer:
        http = issuer.from_address()
        for number in range(2):
            response = await http.post("/token", data=GRANT, auth=(f"nobody-{number}", "x"))
            assert response.status_code == 401
        assert_refused(await http.post("/token", data=GRANT, auth=("nobody-3", "x")),
                       limit=2, retry_after=60)


async def test_guessing_at_introspection_spends_the_same_budget(backend_settings, clock,
                                                                 register):
    registered = await register()
    wrong = (registered.client_id, "not-the-secret")
    async with running(replace(backend_settings, failed_auth_rate_limit="3/minute"),
                       clock) as issuer:
        http = issuer.from_address()
        for path in ("/introspect", "/revoke", "/token"):
            data = GRANT if path == "/token" else {"token": "x"}
            assert (await http.post(path, data=data, auth=wrong)).status_code == 401
        assert_refused(await http.post("/introspect", data={"token": "x"}, auth=wrong),
                       limit=3, retry_after=60)
        assert_refused(await http.post("/introspect", data={"token": "x"},
                                       auth=registered.basic), limit=3, retry_after=60)


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(backend_settings, clock,
                                                                register):
    registered = await register()
    wrong = (registered.client_id, "not-the-secret")
    limited = replace(backend_settings, failed_auth_rate_limit="1/minute")

    def spoofing(issuer, address: str) -> httpx.AsyncClient:
        return issuer.from_address(CALLER, headers={"X-Forwarded-For": address})

    # Untrusted: X-Forwarded-For is ignored, so changing it does not escape the guard.
    async with running(limited, clock) as issuer:
        assert (await spoofing(issuer, "192.0.2.1").post("/token", data=GRANT, auth=wrong)
                ).status_code == 401
        assert (await spoofing(issuer, "192.0.2.2").post("/token", data=GRANT, auth=wrong)
                ).status_code == 429
    # Trusted (CALLER is the proxy): each forwarded address has a budget of its own.
    async with running(replace(limited, trusted_proxies=(f"{CALLER}/32",),
                               redis_key_prefix=limited.redis_key_prefix + "trusted:"),
                       clock) as issuer:
        first, second = spoofing(issuer, "192.0.2.1"), spoofing(issuer, "192.0.2.2")
        assert (await first.post("/token", data=GRANT, auth=wrong)).status_code == 401
        assert (await first.post("/token", data=GRANT, auth=wrong)).status_code == 429
        assert (await second.post("/token", data=GRANT, auth=wrong)).status_code == 401


# The admin API and /auth/m2m/token -------------------------------------------------------


async def test_the_admin_api_is_limited_per_admin_client(backend_settings, clock, platform_admin):
    admin = await platform_admin()
    async with running(replace(backend_settings, admin_rate_limit="3/minute"), clock) as issuer:
        http = issuer.from_address()
        token = await issue_token(http, admin, "admin")
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(3):
            assert (await http.get("/api/v1/tenants", headers=headers)).status_code == 200
        assert_refused(await http.get("/api/v1/tenants", headers=headers), limit=3,
                       retry_after=60, body=TOO_MANY_ADMIN)
        # The budget is the admin client's, whichever of its tokens it uses.
        other = {"Authorization": f"Bearer {await issue_token(http, admin, 'admin')}"}
        assert (await http.get("/api/v1/clients", headers=other)).status_code == 429


async def test_the_eleventh_mint_in_an_hour_is_429(backend_settings, clock, platform_admin,
                                                   register):
    admin = await platform_admin()
    target = await register()
    async with running(backend_settings, clock) as issuer:
        http = issuer.from_address()
        headers = {"Authorization": f"Bearer {await issue_token(http, admin, 'admin')}"}
        body = {"clientId": target.client_id, "tenantId": target.tenant_id, "scopes": []}
        for number in range(10):
            response = await http.post("/auth/m2m/token", json=body, headers=headers)
            assert response.status_code == 200
            assert response.headers["ratelimit-remaining"] == str(9 - number)
        assert_refused(await http.post("/auth/m2m/token", json=body, headers=headers),
                       limit=10, retry_after=3600)


# Settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ISSUER_FAILED_AUTH_RATE_LIMIT", "lots", "ISSUER_FAILED_AUTH_RATE_LIMIT must look like"),
    ("ISSUER_ADMIN_RATE_LIMIT", "10/fortnight", "ISSUER_ADMIN_RATE_LIMIT must look like"),
    ("ISSUER_TRUSTED_PROXIES", "10.0.0.0/8, proxy.example", "ISSUER_TRUSTED_PROXIES must list"),
    ("ISSUER_REDIS_URL", "http://127.0.0.1:6379", "ISSUER_REDIS_URL must be a redis://"),
    ("ISSUER_RATE_LIMITING", "sometimes", "ISSUER_RATE_LIMITING must be one of on, off"),
])
def test_bad_rate_limit_settings_stop_the_start(name, value, message):
    from issuer.settings import SettingsError

    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value}, env_file=None)


def test_rate_limit_settings_have_the_documented_defaults():
    settings = Settings.from_env({}, env_file=None)
    assert (settings.rate_limit, settings.failed_auth_rate_limit, settings.admin_rate_limit,
            settings.rate_limit_fail) == ("1200/minute", "20/minute", "600/minute", "open")



async def test_rate_limiting_off_leaves_every_budget_to_a_gateway(settings, clock, register):
    registered = await register(rate_limit="1/minute")
    wrong = (registered.client_id, "not-the-secret")
    async with running(replace(settings, rate_limiting=False,
                               failed_auth_rate_limit="1/minute"), clock) as issuer:
        http = issuer.from_address()
        for _ in range(3):
            assert (await http.post("/token", data=GRANT, auth=registered.basic)
                    ).status_code == 200
            assert (await http.post("/token", data=GRANT, auth=wrong)).status_code == 401
    assert Settings.from_env({"ISSUER_RATE_LIMITING": "off"}, env_file=None).rate_limiting is False


# Client assertions (RFC 7523) ------------------------------------------------------------


async def test_a_private_key_jwt_client_over_its_budget_keeps_its_assertion_unspent(
        backend_settings, clock, register, engine):
    # The check runs after the assertion was verified and before its jti is spent:
    # a refused request writes nothing, so the same assertion works once the window moves.
    from joserfc.jwk import ECKey

    from issuer.store.models import UsedAssertionJti
    from tests.oauth.test_rfc7523_private_key_jwt import Assertions, public_jwks

    key = ECKey.generate_key("P-256", {"use": "sig"}, private=True, auto_kid=True)
    registered = await register(auth_methods=["private_key_jwt"], jwks=public_jwks(key),
                                rate_limit="1/minute")
    assertions = Assertions(clock)
    async with running(backend_settings, clock) as issuer:
        http = issuer.from_address()
        first = assertions.form(assertions.sign(key, registered.client_id))
        assert (await http.post("/token", data=first)).status_code == 200
        second = assertions.form(assertions.sign(key, registered.client_id))
        assert_refused(await http.post("/token", data=second), limit=1, retry_after=60)
        assert await _count(engine, UsedAssertionJti) == 1
        clock.advance(60)
        assert (await http.post("/token", data=second)).status_code == 200
        # A bad signature is a failed authentication, charged to the address.
        other = ECKey.generate_key("P-256", {"use": "sig", "kid": key.kid}, private=True)
        forged = assertions.form(assertions.sign(other, registered.client_id))
        assert (await http.post("/token", data=forged)).status_code == 401
    (denial,) = await _denials(engine, "rate_limited")
    assert denial["details"]["policy"] == "client"
