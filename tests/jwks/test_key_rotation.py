"""Signing-key rotation without breaking anyone, driven by the FakeClock.

States next -> active -> retired -> deleted; a verifier (``jwks.verifier`` against the
app over ASGI) keeps accepting every unexpired token through a rotation, meets no
unknown ``kid`` when its cache is warm (pre-publication), and a retired key leaves the
JWKS only after its tokens expired. Two issuer processes (two apps on one store, each
with its own key ring) rotate exactly once and converge on the new key. Every store
here starts empty of keys, so each test's keys are born on its clock.

The background task sleeps between iterations; tests call one iteration,
``KeyRing.maintain()``, themselves instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from issuer.app import create_app
from issuer.keys.policy import RotationPolicy
from issuer.keys.ring import KeyRing
from issuer.services import Services
from issuer.settings import Settings
from issuer.store.db import create_engine
from issuer.store.migrate import upgrade
from issuer.store.models import SigningKeyRow
from jwks.verifier import JWKSVerifier, UnknownKey
from tests.admin.test_tenants_api import audit_events, bearer
from tests.conftest import (
    BACKENDS,
    ISSUER,
    KEPT,
    FakeClock,
    Registered,
    issue_token,
    lifespan,
    reset_sql,
    run,
)
from tests.jwks.conftest import AUDIENCE, CountingTransport
from tests.test_cli import issuer as issuer_cli

JWKS = "/.well-known/jwks.json"
POLICY = RotationPolicy()  # the defaults: 90 days, max-age 3600 s, reload every 60 s
PERIOD = POLICY.rotation_period
MIN_NEXT_AGE = POLICY.min_next_age  # 3660 s
TTL = 3600  # ISSUER_TOKEN_TTL of these tests (the default)
RETIRED_LIFETIME = POLICY.retired_lifetime(TTL)  # 60 + 3600 + 60 s


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def keyless_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keyless") / "issuer.db"
    run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="module")
def keyless_postgres(fresh_postgres: Callable[[], str]) -> tuple[str, str]:
    """A migrated PostgreSQL store for this module, and the SQL that empties it of
    everything, signing keys included (run before each test)."""
    url = fresh_postgres()
    run(_migrate(url))
    return url, str(run(reset_sql(url, keep_rs256_key=False)))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Overrides tests/conftest.py: a migrated store with no signing key at all."""
    if request.param == "sqlite":
        target = tmp_path / "issuer.db"
        shutil.copyfile(request.getfixturevalue("keyless_sqlite"), target)
        return f"sqlite+aiosqlite:///{target}"
    url, empty = request.getfixturevalue("keyless_postgres")
    KEPT.execute(url, empty)
    return url


class _StateProbe:
    """Pure ASGI: remembers the lifespan state a request carries (the Services)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.state = scope.get("state")  # set in place by the lifespan's state hop


class IssuerProcess:
    """One issuer process: ``create_app`` with its lifespan entered, its own key ring."""

    def __init__(self, settings: Settings, clock: FakeClock) -> None:
        self._manager = lifespan(create_app(settings, clock=clock))
        self._probe = _StateProbe(self._manager.app)
        self.transport = httpx.ASGITransport(app=self._probe, client=("203.0.113.7", 4711))
        self.http = httpx.AsyncClient(transport=self.transport, base_url=ISSUER)

    async def __aenter__(self) -> IssuerProcess:
        await self._manager.__aenter__()
        assert (await self.http.get("/healthz")).status_code == 200
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self._manager.__aexit__(*exc)

    @property
    def services(self) -> Services:
        assert self._probe.state is not None
        services: Services = self._probe.state["services"]
        return services

    @property
    def ring(self) -> KeyRing:
        return self.services.keyring

    async def kid_of_new_token(self, registered: Registered) -> str:
        return _kid(await issue_token(self.http, registered))


@pytest.fixture
async def process(settings: Settings, clock: FakeClock) -> AsyncIterator[IssuerProcess]:
    async with IssuerProcess(settings, clock) as first:
        yield first


@pytest.fixture
async def verifiers(process: IssuerProcess, clock: FakeClock
                    ) -> AsyncIterator[Callable[[], tuple[JWKSVerifier, CountingTransport]]]:
    """Resource-server verifiers reaching the app over ASGI, their requests counted."""
    opened: list[httpx.AsyncClient] = []

    def make() -> tuple[JWKSVerifier, CountingTransport]:
        counting = CountingTransport(process.transport)
        http = httpx.AsyncClient(transport=counting, base_url=ISSUER)
        opened.append(http)
        return JWKSVerifier(ISSUER, AUDIENCE, http_client=http, clock=clock), counting

    yield make
    for http in opened:
        await http.aclose()


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _kid(token: str) -> str:
    kid: str = json.loads(_b64(token.split(".")[0]))["kid"]
    return kid


async def _states(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(SigningKeyRow.kid, SigningKeyRow.state))
        return dict(rows.all())


async def _published(http: httpx.AsyncClient) -> set[str]:
    return {key["kid"] for key in (await http.get(JWKS)).json()["keys"]}


def _by_state(states: dict[str, str], state: str) -> list[str]:
    return [kid for kid, value in states.items() if value == state]


# A full cycle ----------------------------------------------------------------------------


async def test_full_cycle_tokens_signed_before_a_rotation_keep_verifying_through_it(
        process, verifiers, register, engine, clock):
    c = await register(allowed_audiences=[AUDIENCE])
    states = await _states(engine)
    [first], [upcoming] = _by_state(states, "active"), _by_state(states, "next")
    created = await audit_events(engine, "SIGNING_KEY_CREATED")
    assert [(e.details["kid"], e.details["state"]) for e in created] == [
        (first, "active"), (upcoming, "next")]

    # Just before the scheduled rotation: a token of the first key, and a verifier
    # whose cache is warm (fetched now, fresh for the JWKS max-age).
    clock.advance(PERIOD - 60)
    assert (await process.ring.maintain()).rotation is None
    before = await issue_token(process.http, c)
    assert _kid(before) == first
    verifier, counting = verifiers()
    await verifier.verify(before)

    clock.advance(60)
    rotation = (await process.ring.maintain()).rotation
    assert rotation is not None
    assert (rotation.retired_kid, rotation.active_kid) == (first, upcoming)
    assert rotation.forced is False
    after = await issue_token(process.http, c)
    assert _kid(after) == upcoming
    # Both verify, and the warm cache already held the new key: zero refetches.
    assert (await verifier.verify(before)).kid == first
    assert (await verifier.verify(after)).kid == upcoming
    assert counting.paths[JWKS] == 1

    states = await _states(engine)
    assert states[first] == "retired" and states[upcoming] == "active"
    assert states[rotation.next_kid] == "next"
    assert await _published(process.http) == {first, upcoming, rotation.next_kid}
    [rotated] = await audit_events(engine, "SIGNING_KEY_ROTATED")
    assert rotated.actor == "scheduler"
    assert rotated.details == {"alg": "RS256", "retired_kid": first, "active_kid": upcoming,
                               "next_kid": rotation.next_kid, "forced": False,
                               "reason": "scheduled"}

    # A cold verifier fetching late in the old token's life still finds the retired key.
    clock.advance(TTL - 60 - 1)
    cold, _ = verifiers()
    assert (await cold.verify(before)).kid == first

    # The retired key stays published until every token it signed has expired, plus the
    # reload interval (other processes sign with it until they reload) and leeway.
    clock.advance(RETIRED_LIFETIME - (TTL - 60 - 1) - 1)
    assert (await process.ring.maintain()).deleted == ()
    assert first in await _published(process.http)
    assert await audit_events(engine, "SIGNING_KEY_DELETED") == []
    clock.advance(1)
    assert (await process.ring.maintain()).deleted == (first,)
    assert await _published(process.http) == {upcoming, rotation.next_kid}
    assert first not in await _states(engine)
    [deleted] = await audit_events(engine, "SIGNING_KEY_DELETED")
    assert deleted.actor == "scheduler"
    assert deleted.details["kid"] == first and deleted.details["alg"] == "RS256"
    # A second pass (or another process) deletes nothing and audits nothing more.
    assert (await process.ring.maintain()).deleted == ()
    assert len(await audit_events(engine, "SIGNING_KEY_DELETED")) == 1

    # The next scheduled rotation promotes the key published at the first one.
    clock.advance(PERIOD - RETIRED_LIFETIME)
    second = (await process.ring.maintain()).rotation
    assert second is not None and second.active_kid == rotation.next_kid
    assert await process.kid_of_new_token(c) == rotation.next_kid


async def test_the_retired_keys_lifetime_follows_the_longest_client_token_ttl(
        process, register, clock):
    await register(token_ttl=7200)
    rotation = await process.ring.rotate(force=True)
    clock.advance(POLICY.retired_lifetime(TTL))
    assert (await process.ring.maintain()).deleted == ()
    clock.advance(7200 - TTL)
    assert (await process.ring.maintain()).deleted == (rotation.retired_kid,)


# Pre-publication -------------------------------------------------------------------------


async def test_warm_cache_meets_no_unknown_kid_after_a_rotation_at_min_next_age(
        process, verifiers, register, clock):
    """The next key is published for the JWKS max-age + reload interval before it signs:
    any cache still fresh at the rotation was fetched after every process published it."""
    c = await register(allowed_audiences=[AUDIENCE])
    clock.advance(MIN_NEXT_AGE - POLICY.jwks_max_age + 1)  # the oldest cache still fresh
    verifier, counting = verifiers()
    await verifier.verify(await issue_token(process.http, c))
    clock.advance(POLICY.jwks_max_age - 1)
    rotation = await process.ring.rotate()  # not forced: the next key is old enough
    token = await issue_token(process.http, c)
    assert (await verifier.verify(token)).kid == rotation.active_kid
    assert counting.paths[JWKS] == 1


async def test_a_forced_rotation_of_a_young_key_costs_warm_caches_one_refetch(
        process, verifiers, register, clock):
    """The contrast: promote a key younger than the cache, and the verifier meets an
    unknown kid once (and refetches once, as jwks.verifier does)."""
    c = await register(allowed_audiences=[AUDIENCE])
    verifier, counting = verifiers()
    await verifier.verify(await issue_token(process.http, c))
    first = await process.ring.rotate(force=True)  # promotes the key of the cache
    assert (await verifier.verify(await issue_token(process.http, c))).kid == first.active_kid
    assert counting.paths[JWKS] == 1
    clock.advance(31)
    second = await process.ring.rotate(force=True)  # promotes a key published 31 s ago
    assert (await verifier.verify(await issue_token(process.http, c))).kid == second.active_kid
    assert counting.paths[JWKS] == 2


# Manual rotation -----------------------------------------------------------------------


async def test_api_rotation_is_refused_409_while_next_is_too_young_then_allowed(
        process, platform_admin, engine, clock):
    admin = await platform_admin()
    headers = bearer(await issue_token(process.http, admin, "admin"))
    states = await _states(engine)
    [active], [upcoming] = _by_state(states, "active"), _by_state(states, "next")
    clock.advance(100)

    refused = await process.http.post("/api/v1/keys/rotate", json={}, headers=headers)
    assert refused.status_code == 409
    assert refused.json() == {"error": "conflict", "error_description": (
        f"the next key {upcoming} has been published for 100 s; a key signs only after "
        f"3660 s (JWKS max-age 3600 s + reload interval), so that no resource server meets "
        f"an unknown kid: retry in 3560 s, or force the rotation")}
    assert await _states(engine) == states
    assert await audit_events(engine, "SIGNING_KEY_ROTATED") == []

    clock.advance(MIN_NEXT_AGE - 100)
    headers = bearer(await issue_token(process.http, admin, "admin"))  # the first expired
    rotated = await process.http.post("/api/v1/keys/rotate", json={}, headers=headers)
    assert rotated.status_code == 200
    body = rotated.json()
    assert {k: body[k] for k in ("alg", "retired_kid", "active_kid", "forced")} == {
        "alg": "RS256", "retired_kid": active, "active_kid": upcoming, "forced": False}
    [event] = await audit_events(engine, "SIGNING_KEY_ROTATED")
    assert event.actor == admin.client_id
    assert event.details["reason"] == "manual"

    listed = (await process.http.get("/api/v1/keys", headers=headers)).json()["items"]
    assert [(k["kid"], k["state"]) for k in listed] == [
        (active, "retired"), (upcoming, "active"), (body["next_kid"], "next")]
    assert all(set(k) == {"kid", "alg", "state", "created_at", "activated_at", "retired_at"}
               for k in listed)


async def test_api_forced_rotation_promotes_a_young_key(process, platform_admin, engine):
    admin = await platform_admin()
    headers = bearer(await issue_token(process.http, admin, "admin"))
    [upcoming] = _by_state(await _states(engine), "next")
    forced = await process.http.post("/api/v1/keys/rotate", json={"force": True},
                                     headers=headers)
    assert forced.status_code == 200
    assert forced.json()["active_kid"] == upcoming and forced.json()["forced"] is True
    assert await process.kid_of_new_token(admin) == upcoming
    [event] = await audit_events(engine, "SIGNING_KEY_ROTATED")
    assert event.details["forced"] is True


async def test_api_rotation_is_for_platform_admins_only(process, register):
    tenant_admin = await register(allowed_scopes=["admin"])
    headers = bearer(await issue_token(process.http, tenant_admin, "admin"))
    for method, path in (("POST", "/api/v1/keys/rotate"), ("GET", "/api/v1/keys")):
        response = await process.http.request(method, path, json={}, headers=headers)
        assert response.status_code == 403
        assert response.json()["error"] == "insufficient_scope"


async def test_cli_rotation_is_refused_while_next_is_too_young_and_forced_works(
        process, database_url, engine, tmp_path):
    states = await _states(engine)
    [active], [upcoming] = _by_state(states, "active"), _by_state(states, "next")
    refused = await asyncio.to_thread(issuer_cli, "keys", "rotate", database_url=database_url,
                                      cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"issuer: error: the next key {upcoming} has been "
                                     "published for ")
    assert refused.stderr.rstrip().endswith("or force the rotation")
    assert await _states(engine) == states

    forced = await asyncio.to_thread(issuer_cli, "keys", "rotate", "--force", "--json",
                                     database_url=database_url, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    result = json.loads(forced.stdout)
    assert (result["retired_kid"], result["active_kid"], result["forced"]) == (
        active, upcoming, True)
    [event] = await audit_events(engine, "SIGNING_KEY_ROTATED")
    assert event.actor == "cli"
    listed = await asyncio.to_thread(issuer_cli, "keys", "list", "--json",
                                     database_url=database_url, cwd=tmp_path)
    assert {k["kid"]: k["state"] for k in json.loads(listed.stdout)} == {
        active: "retired", upcoming: "active", result["next_kid"]: "next"}


# Two processes ---------------------------------------------------------------------------


async def test_two_processes_the_other_signs_with_the_new_key_after_its_reload(
        process, settings, clock, register, verifiers):
    c = await register(allowed_audiences=[AUDIENCE])
    async with IssuerProcess(settings, clock) as other:
        old = await other.kid_of_new_token(c)
        assert old == await process.kid_of_new_token(c)
        clock.advance(MIN_NEXT_AGE)
        rotation = await process.ring.rotate()
        assert await process.kid_of_new_token(c) == rotation.active_kid
        assert await other.kid_of_new_token(c) == old  # until it reloads
        # Within the reload interval (60 s, at most the JWKS max-age) it has switched.
        clock.advance(POLICY.reload_every)
        assert (await other.ring.maintain()).reloaded is True
        token = await issue_token(other.http, c)
        assert _kid(token) == rotation.active_kid
        assert await _published(other.http) == await _published(process.http)
        verifier, _ = verifiers()
        assert (await verifier.verify(token)).kid == rotation.active_kid


async def test_two_processes_due_at_once_rotate_exactly_once(process, settings, clock, engine):
    async with IssuerProcess(settings, clock) as other:
        for round_ in range(1, 4):
            clock.advance(PERIOD)
            results = await asyncio.gather(process.ring.rotate_if_due(),
                                           other.ring.rotate_if_due())
            rotations = [result for result in results if result is not None]
            assert len(rotations) == 1, results
            states = await _states(engine)
            assert len(_by_state(states, "active")) == 1
            assert len(_by_state(states, "next")) == 1
            assert len(_by_state(states, "retired")) == round_
            assert len(await audit_events(engine, "SIGNING_KEY_ROTATED")) == round_
            # Both rings now sign with the one new active key.
            await process.ring.reload()
            await other.ring.reload()
            assert process.ring.active.kid == other.ring.active.kid == rotations[0].active_kid


async def test_admin_api_accepts_a_token_signed_by_a_key_another_process_just_promoted(
        process, settings, clock, platform_admin):
    """The admin API's verifier reads the ring (no HTTP); a kid it has not loaded yet
    (another process forced a rotation a moment ago) makes it reload the ring once."""
    admin = await platform_admin()
    async with IssuerProcess(settings, clock) as other:
        await other.ring.rotate(force=True)
        rotation = await other.ring.rotate(force=True)  # promotes a key born just now
        assert rotation.active_kid not in {key.kid for key in process.ring.keys}
        token = await issue_token(other.http, admin, "admin")
        assert _kid(token) == rotation.active_kid
        listed = await process.http.get("/api/v1/keys", headers=bearer(token))
        assert listed.status_code == 200
        assert process.ring.active.kid == rotation.active_kid


async def test_admin_api_refuses_a_kid_the_ring_never_held(process, platform_admin, clock):
    admin = await platform_admin()
    genuine = await issue_token(process.http, admin, "admin")
    claims = json.loads(_b64(genuine.split(".")[1]))
    forger = RSAKey.generate_key(2048, private=True, auto_kid=True)
    forged = jwt.encode({"alg": "RS256", "kid": forger.kid, "typ": "at+jwt"}, claims, forger)
    response = await process.http.get("/api/v1/keys", headers=bearer(forged))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


# Algorithms ------------------------------------------------------------------------------


@pytest.mark.parametrize(("alg", "rsa_bits", "kty", "size"), [
    ("RS256", 2048, "RSA", 2048), ("RS256", 3072, "RSA", 3072), ("RS256", 4096, "RSA", 4096),
    ("ES256", 2048, "EC", "P-256"), ("EdDSA", 2048, "OKP", "Ed25519")])
async def test_each_signing_alg_signs_at_jwt_tokens_with_a_kid_the_verifier_accepts(
        settings, clock, register, alg, rsa_bits, kty, size):
    c = await register(allowed_audiences=[AUDIENCE])
    configured = replace(settings, signing_alg=alg, rsa_key_size=rsa_bits)
    async with IssuerProcess(configured, clock) as issuer:
        token = await issue_token(issuer.http, c)
        header = json.loads(_b64(token.split(".")[0]))
        assert header == {"alg": alg, "kid": issuer.ring.active.kid, "typ": "at+jwt"}
        [published] = [k for k in (await issuer.http.get(JWKS)).json()["keys"]
                       if k["kid"] == header["kid"]]
        assert published["kty"] == kty and "d" not in published
        if kty == "RSA":
            assert len(_b64(published["n"])) * 8 == size
        else:
            assert published["crv"] == size
        async with httpx.AsyncClient(transport=issuer.transport, base_url=ISSUER) as http:
            verifier = JWKSVerifier(ISSUER, AUDIENCE, http_client=http, clock=clock)
            result = await verifier.verify(token)
    assert result.kid == header["kid"] and result.client_id == c.client_id


async def test_unknown_kid_from_a_rotation_nobody_published_is_refused(
        process, verifiers, register):
    c = await register(allowed_audiences=[AUDIENCE])
    verifier, _ = verifiers()
    await verifier.verify(await issue_token(process.http, c))
    foreign = RSAKey.generate_key(2048, private=True, auto_kid=True)
    claims = json.loads(_b64((await issue_token(process.http, c)).split(".")[1]))
    with pytest.raises(UnknownKey):
        await verifier.verify(jwt.encode({"alg": "RS256", "kid": foreign.kid, "typ": "at+jwt"},
                                         claims, foreign))
