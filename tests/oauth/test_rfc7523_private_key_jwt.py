"""RFC 7523 §2.2 client authentication with a JWT: ``private_key_jwt`` and
``client_secret_jwt`` (OpenID Connect Core §9) at /token, /introspect and /revoke.

Every refusal is ``invalid_client`` 401 with the one public text; the reason is in the
``M2M_TOKEN_DENIED`` audit event. Assertions are signed here with joserfc (full control
of every header and claim) and, for the happy paths, by Authlib's own client auth.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import (
    ClientSecretJWT,
    PrivateKeyJWT,
    client_secret_jwt_sign,
    private_key_jwt_sign,
)
from joserfc import jws, jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from issuer.oauth.replay import ReplayStore
from issuer.store.models import Client, UsedAssertionJti
from tests.admin.test_tenants_api import INVALID_CLIENT, audit_events, bearer
from tests.conftest import ISSUER, FakeClock, Registered, app_client, issue_token
from tests.test_cli import issuer as issuer_cli

TOKEN = f"{ISSUER}/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWKS_URI = "https://client.example/.well-known/jwks.json"


@pytest.fixture(scope="module")
def rsa() -> RSAKey:
    return RSAKey.generate_key(2048, {"use": "sig"}, private=True, auto_kid=True)


@pytest.fixture(scope="module")
def other_rsa() -> RSAKey:
    return RSAKey.generate_key(2048, {"use": "sig"}, private=True, auto_kid=True)


@pytest.fixture(scope="module")
def ec() -> ECKey:
    return ECKey.generate_key("P-256", {"use": "sig"}, private=True, auto_kid=True)


def public_jwks(*keys: RSAKey | ECKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """README's FiveMinutePrivateKeyJWT: Authlib's assertions live an hour unless told
    otherwise; this server accepts five minutes (RFC 7523 §3 leaves it to the server)."""

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return private_key_jwt_sign(auth.client_secret, client_id=auth.client_id,
                                    token_endpoint=token_endpoint, alg=self.alg,
                                    expires_in=300)


class ShortLivedClientSecretJWT(ClientSecretJWT):
    def sign(self, auth: Any, token_endpoint: str) -> str:
        return client_secret_jwt_sign(OctKey.import_key(auth.client_secret),
                                      client_id=auth.client_id,
                                      token_endpoint=token_endpoint, alg=self.alg,
                                      expires_in=300)


class Assertions:
    """Client assertions signed on the test's clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def claims(self, client_id: str, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.now())
        claims = {"iss": client_id, "sub": client_id, "aud": TOKEN, "iat": now,
                  "exp": now + 300, "jti": uuid.uuid4().hex}
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def sign(self, key: Any, client_id: str, *, alg: str | None = None,
             header: dict[str, Any] | None = None, **overrides: Any) -> str:
        alg = alg or {"RSA": "RS256", "EC": "ES256", "oct": "HS256"}[key.key_type]
        full = {"alg": alg, **({"kid": key.kid} if key.kid else {}), **(header or {})}
        return jwt.encode(full, self.claims(client_id, **overrides), key, algorithms=[alg])

    @staticmethod
    def form(assertion: str, **extra: str) -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion, **extra}


@pytest.fixture
def assertions(clock: FakeClock) -> Assertions:
    return Assertions(clock)


@pytest.fixture
async def pkjwt(register: Callable[..., Awaitable[Registered]], rsa: RSAKey,
                ec: ECKey) -> Registered:
    """A private_key_jwt client with an RSA and an EC key."""
    return await register(allowed_scopes=["orders:read"],
                          auth_methods=["private_key_jwt"], jwks=public_jwks(rsa, ec))


async def denial_reasons(engine: AsyncEngine) -> list[str]:
    return [event.details["reason"] for event in await audit_events(engine, "M2M_TOKEN_DENIED")]


# Happy paths -----------------------------------------------------------------------------


async def test_s2_2_authlib_private_key_jwt_client_gets_tokens(client, pkjwt, rsa, engine):
    async with AsyncOAuth2Client(pkjwt.client_id, rsa, scope="orders:read",
                                 token_endpoint_auth_method=ShortLivedPrivateKeyJWT(TOKEN),
                                 transport=client._transport) as oauth:
        first = await oauth.fetch_token(TOKEN, grant_type="client_credentials")
        second = await oauth.fetch_token(TOKEN, grant_type="client_credentials")
    assert first["token_type"] == "Bearer" and first["scope"] == "orders:read"
    assert first["access_token"] != second["access_token"]
    claims = jwt.decode(first["access_token"], await _issuer_keys(client)).claims
    assert claims["client_id"] == pkjwt.client_id and claims["tenant_id"] == pkjwt.tenant_id
    events = await audit_events(engine, "M2M_TOKEN_GENERATED")
    assert [event.details["secret_used"] for event in events] == ["none", "none"]
    async with engine.connect() as connection:
        spent = (await connection.execute(select(func.count()).select_from(UsedAssertionJti)
                                          .where(UsedAssertionJti.client_id == pkjwt.client_id))
                 ).scalar()
    assert spent == 2


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
async def test_each_asymmetric_alg_with_a_kid_is_accepted(client, pkjwt, rsa, ec, assertions,
                                                          alg):
    key = ec if alg.startswith("ES") else rsa
    response = await client.post("/token", data=assertions.form(
        assertions.sign(key, pkjwt.client_id, alg=alg)))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("aud", [ISSUER, TOKEN, [TOKEN, "https://elsewhere.example"]])
async def test_s3_aud_may_be_the_issuer_or_the_token_endpoint(client, pkjwt, rsa, assertions,
                                                              aud):
    response = await client.post("/token", data=assertions.form(
        assertions.sign(rsa, pkjwt.client_id, aud=aud)))
    assert response.status_code == 200, response.text


async def test_client_id_parameter_naming_the_same_client_is_accepted(client, pkjwt, rsa,
                                                                     assertions):
    form = assertions.form(assertions.sign(rsa, pkjwt.client_id), client_id=pkjwt.client_id)
    assert (await client.post("/token", data=form)).status_code == 200


# Refusals --------------------------------------------------------------------------------


def _hs256_with_public_key(key: RSAKey, claims: dict[str, Any]) -> str:
    """The classic confusion: HS256 keyed with the public key's PEM (joserfc refuses to
    make such a key, so the HMAC is computed by hand)."""
    from tests.jwks.conftest import b64, b64json

    signing_input = f"{b64json({'alg': 'HS256', 'kid': key.kid})}.{b64json(claims)}"
    mac = hmac.new(key.as_pem(private=False), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(mac.digest())}"


def _unsigned(claims: dict[str, Any]) -> str:
    from tests.jwks.conftest import b64json

    return f"{b64json({'alg': 'none'})}.{b64json(claims)}."


# case -> (make(assertions, client_id, registered key, unregistered key), audited reason)
REFUSALS: dict[str, tuple[Callable[..., str], str]] = {
    "wrong aud": (lambda a, c, k, o: a.sign(k, c, aud="https://other.example/token"),
                  "wrong_audience"),
    "expired": (lambda a, c, k, o: a.sign(k, c, iat=int(a.clock.now()) - 400,
                                          exp=int(a.clock.now()) - 100),
                "client_assertion_expired"),
    "too long-lived": (lambda a, c, k, o: a.sign(k, c, exp=int(a.clock.now()) + 301),
                       "client_assertion_lifetime_too_long"),
    "too long-lived, no iat": (lambda a, c, k, o: a.sign(k, c, iat=None,
                                                         exp=int(a.clock.now()) + 301),
                               "client_assertion_lifetime_too_long"),
    "symmetric alg (HS256)": (lambda a, c, k, o: a.sign(OctKey.generate_key(256), c),
                              "auth_method_not_allowed"),
    "HS256 keyed with the public key": (lambda a, c, k, o: _hs256_with_public_key(
        k, a.claims(c)), "auth_method_not_allowed"),
    "alg none": (lambda a, c, k, o: _unsigned(a.claims(c)), "alg_not_allowed"),
    "unknown kid": (lambda a, c, k, o: a.sign(o, c), "unknown_kid"),
    "registered kid, other key": (lambda a, c, k, o: a.sign(o, c, header={"kid": k.kid}),
                                  "bad_signature"),
    "no jti": (lambda a, c, k, o: a.sign(k, c, jti=None), "client_assertion_missing_claim: jti"),
    "no exp": (lambda a, c, k, o: a.sign(k, c, exp=None), "client_assertion_missing_claim: exp"),
    "iss is not sub": (lambda a, c, k, o: a.sign(k, c, iss="someone-else"), "iss_is_not_sub"),
    "issued in the future": (lambda a, c, k, o: a.sign(k, c, iat=int(a.clock.now()) + 120,
                                                       exp=int(a.clock.now()) + 300),
                             "client_assertion_invalid_claim: iat"),
    "unknown client": (lambda a, c, k, o: a.sign(k, "m2m_nobody"), "unknown_client"),
    "not a JWS": (lambda a, c, k, o: "not.a-jws", "client_assertion_not_a_jws"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_s3_bad_assertions_are_invalid_client_401(client, pkjwt, rsa, other_rsa,
                                                        assertions, engine, case):
    make, reason = REFUSALS[case]
    response = await client.post("/token", data=assertions.form(
        make(assertions, pkjwt.client_id, rsa, other_rsa)))
    assert response.status_code == 401
    assert response.json() == INVALID_CLIENT
    assert response.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in response.headers  # no Basic was used
    assert await denial_reasons(engine) == [reason]


async def test_s3_a_replayed_jti_is_refused(client, pkjwt, rsa, assertions, engine):
    assertion = assertions.sign(rsa, pkjwt.client_id)
    assert (await client.post("/token", data=assertions.form(assertion))).status_code == 200
    replay = await client.post("/token", data=assertions.form(assertion))
    assert (replay.status_code, replay.json()) == (401, INVALID_CLIENT)
    # A new assertion reusing the jti is a replay too, signature and all.
    again = assertions.sign(rsa, pkjwt.client_id, jti=json.loads(
        jws.extract_compact(assertion.encode()).payload)["jti"])
    assert (await client.post("/token", data=assertions.form(again))).status_code == 401
    assert await denial_reasons(engine) == ["jti_replayed", "jti_replayed"]


async def test_s3_two_concurrent_uses_of_one_assertion_let_exactly_one_through(
        client, pkjwt, rsa, assertions):
    form = assertions.form(assertions.sign(rsa, pkjwt.client_id))
    responses = await asyncio.gather(*(client.post("/token", data=form) for _ in range(5)))
    assert sorted(response.status_code for response in responses) == [200, 401, 401, 401, 401]


async def test_the_same_jti_from_two_clients_is_no_replay(client, register, pkjwt, rsa, ec,
                                                          assertions):
    twin = await register(auth_methods=["private_key_jwt"], jwks=public_jwks(rsa))
    for registered in (pkjwt, twin):
        response = await client.post("/token", data=assertions.form(
            assertions.sign(rsa, registered.client_id, jti="shared-jti")))
        assert response.status_code == 200


async def test_an_expired_assertion_is_refused_after_the_leeway(client, pkjwt, rsa, assertions,
                                                                clock, engine):
    assertion = assertions.sign(rsa, pkjwt.client_id, exp=int(clock.now()) + 60)
    clock.advance(60 + 60)  # exp + the 60 s leeway
    response = await client.post("/token", data=assertions.form(assertion))
    assert response.status_code == 401
    assert await denial_reasons(engine) == ["client_assertion_expired"]


async def test_a_secret_client_presenting_an_assertion_is_refused(client, register, rsa,
                                                                 assertions, engine):
    secret_only = await register()
    response = await client.post("/token", data=assertions.form(
        assertions.sign(rsa, secret_only.client_id)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == ["auth_method_not_allowed"]


@pytest.mark.parametrize(("form", "reason"), [
    ({"client_assertion_type": "urn:example:other"}, "unsupported_client_assertion_type"),
    ({"client_id": "m2m_someone-else"}, "client_id_mismatch"),
])
async def test_request_level_assertion_errors(client, pkjwt, rsa, assertions, engine, form,
                                              reason):
    response = await client.post("/token", data={
        **assertions.form(assertions.sign(rsa, pkjwt.client_id)), **form})
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == [reason]


async def test_s2_3_an_assertion_and_a_secret_at_once_is_invalid_request(client, pkjwt, rsa,
                                                                         assertions):
    form = {**assertions.form(assertions.sign(rsa, pkjwt.client_id)),
            "client_id": pkjwt.client_id, "client_secret": "m2ms_x"}
    response = await client.post("/token", data=form)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Use exactly one client authentication "
                                                    "method"}


async def test_a_disabled_client_is_refused_even_with_a_good_assertion(client, pkjwt, rsa,
                                                                      assertions, set_status,
                                                                      engine, clock):
    await set_status(client_id=pkjwt.client_id)
    clock.advance(6)  # past the token endpoint's client cache
    response = await client.post("/token", data=assertions.form(
        assertions.sign(rsa, pkjwt.client_id)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == ["client_disabled"]


# The replay store ------------------------------------------------------------------------


async def test_spent_jtis_are_pruned_once_their_assertion_expired(engine, clock):
    store = ReplayStore(engine, clock)
    now = clock.now()
    assert await store.use("m2m_a", "jti-1", now + 300) is True
    assert await store.use("m2m_a", "jti-1", now + 300) is False
    assert await store.use("m2m_a", "jti-2", now + 600) is True
    clock.advance(300)
    assert await store.prune() == 0  # not before it expired
    clock.advance(1)
    assert await store.prune() == 1
    assert await store.use("m2m_a", "jti-2", now + 600) is False  # still held
    assert await store.use("m2m_a", "jti-1", now + 900) is True  # expired: gone


# jwks_uri --------------------------------------------------------------------------------


class ClientKeyServer:
    """The client's own tiny ASGI app serving its JWK Set, counting fetches."""

    def __init__(self, keys: list[Any]) -> None:
        self.keys = keys
        self.fetches: Counter[str] = Counter()
        self.cache_control = "max-age=300"
        self.down = False
        self.app = Starlette(routes=[Route("/.well-known/jwks.json", self._jwks)])

    async def _jwks(self, request: Request) -> Response:
        self.fetches[request.url.path] += 1
        if self.down:
            return Response(status_code=503)
        return JSONResponse(public_jwks(*self.keys),
                            headers={"Cache-Control": self.cache_control})

    @property
    def count(self) -> int:
        return self.fetches["/.well-known/jwks.json"]


@pytest.fixture
async def key_server(rsa: RSAKey) -> ClientKeyServer:
    return ClientKeyServer([rsa])


@pytest.fixture
async def issuer_with_outbound(settings, clock, key_server) -> AsyncIterator[httpx.AsyncClient]:
    """The issuer app whose outbound HTTP reaches the client's key server."""
    outbound = httpx.AsyncClient(transport=httpx.ASGITransport(app=key_server.app))
    async with outbound, app_client(settings, clock, http_client=outbound) as http:
        yield http


async def test_jwks_uri_is_fetched_once_and_cached_for_its_max_age(
        issuer_with_outbound, register, key_server, rsa, assertions, clock):
    http = issuer_with_outbound
    c = await register(auth_methods=["private_key_jwt"], jwks_uri=JWKS_URI)
    for _ in range(3):
        response = await http.post("/token", data=assertions.form(assertions.sign(rsa,
                                                                                  c.client_id)))
        assert response.status_code == 200, response.text
    assert key_server.count == 1
    clock.advance(299)
    assert (await http.post("/token", data=assertions.form(
        assertions.sign(rsa, c.client_id)))).status_code == 200
    assert key_server.count == 1
    clock.advance(1)
    assert (await http.post("/token", data=assertions.form(
        assertions.sign(rsa, c.client_id)))).status_code == 200
    assert key_server.count == 2


async def test_jwks_uri_refetched_once_for_a_new_kid_and_bounded_for_bogus_ones(
        issuer_with_outbound, register, key_server, rsa, other_rsa, assertions, clock, engine):
    http = issuer_with_outbound
    c = await register(auth_methods=["private_key_jwt"], jwks_uri=JWKS_URI)
    assert (await http.post("/token", data=assertions.form(
        assertions.sign(rsa, c.client_id)))).status_code == 200
    clock.advance(30)
    key_server.keys.append(other_rsa)  # the client rotated its key
    assert (await http.post("/token", data=assertions.form(
        assertions.sign(other_rsa, c.client_id)))).status_code == 200
    assert key_server.count == 2
    for n in range(20):  # bogus kids: at most one refetch per 30 s
        response = await http.post("/token", data=assertions.form(
            assertions.sign(other_rsa, c.client_id, header={"kid": f"bogus-{n}"})))
        assert response.status_code == 401
    assert key_server.count == 2
    assert set(await denial_reasons(engine)) == {"unknown_kid"}


async def test_an_unreachable_jwks_uri_is_invalid_client(issuer_with_outbound, register,
                                                        key_server, rsa, assertions, engine):
    key_server.down = True
    c = await register(auth_methods=["private_key_jwt"], jwks_uri=JWKS_URI)
    response = await issuer_with_outbound.post("/token", data=assertions.form(
        assertions.sign(rsa, c.client_id)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == ["client_jwks_unavailable"]


async def test_an_unreachable_jwks_uri_after_a_fetch_keeps_known_keys(
        issuer_with_outbound, register, key_server, rsa, assertions, clock):
    c = await register(auth_methods=["private_key_jwt"], jwks_uri=JWKS_URI)
    http = issuer_with_outbound
    assert (await http.post("/token", data=assertions.form(
        assertions.sign(rsa, c.client_id)))).status_code == 200
    key_server.down = True
    clock.advance(600)
    assert (await http.post("/token", data=assertions.form(
        assertions.sign(rsa, c.client_id)))).status_code == 200


# /introspect and /revoke -------------------------------------------------------------------


async def test_introspect_and_revoke_accept_private_key_jwt(client, pkjwt, rsa, assertions):
    token = (await client.post("/token", data=assertions.form(
        assertions.sign(rsa, pkjwt.client_id)))).json()["access_token"]

    def form(endpoint: str) -> dict[str, str]:
        assertion = assertions.sign(rsa, pkjwt.client_id, aud=f"{ISSUER}/{endpoint}")
        return {"token": token, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion}

    introspected = await client.post("/introspect", data=form("introspect"))
    assert introspected.status_code == 200 and introspected.json()["active"] is True
    assert (await client.post("/revoke", data=form("revoke"))).status_code == 200
    after = await client.post("/introspect", data=form("introspect"))
    assert after.json() == {"active": False}


async def test_introspect_refuses_a_replayed_assertion(client, pkjwt, rsa, assertions):
    assertion = assertions.sign(rsa, pkjwt.client_id, aud=ISSUER)
    form = {"token": "x", "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    assert (await client.post("/introspect", data=form)).status_code == 200
    replay = await client.post("/introspect", data=form)
    assert (replay.status_code, replay.json()) == (401, INVALID_CLIENT)


async def test_authlib_introspection_with_private_key_jwt(client, pkjwt, rsa):
    async with AsyncOAuth2Client(pkjwt.client_id, rsa,
                                 token_endpoint_auth_method=ShortLivedPrivateKeyJWT(),
                                 transport=client._transport) as oauth:
        token = await oauth.fetch_token(TOKEN, grant_type="client_credentials")
        response = await oauth.introspect_token(f"{ISSUER}/introspect",
                                                token=token["access_token"])
    assert response.json()["active"] is True


# client_secret_jwt ----------------------------------------------------------------------


async def test_authlib_client_secret_jwt_gets_tokens(client, register, engine):
    c = await register(auth_methods=["client_secret_jwt"])
    async with AsyncOAuth2Client(c.client_id, c.client_secret,
                                 token_endpoint_auth_method=ShortLivedClientSecretJWT(TOKEN),
                                 transport=client._transport) as oauth:
        token = await oauth.fetch_token(TOKEN, grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    [event] = await audit_events(engine, "M2M_TOKEN_GENERATED")
    assert event.details["secret_used"] == "current"
    # The secret is kept encrypted for the HMAC, never in the clear.
    async with engine.connect() as connection:
        row = (await connection.execute(select(Client).where(Client.id == c.client_id))).one()
    assert row.secret_encrypted is not None
    assert c.client_secret.encode() not in row.secret_encrypted


@pytest.mark.parametrize(("alg", "reason"), [("HS512", "alg_not_allowed"),
                                             ("RS256", "auth_method_not_allowed")])
async def test_client_secret_jwt_refuses_other_algorithms(client, register, rsa, assertions,
                                                         engine, alg, reason):
    c = await register(auth_methods=["client_secret_jwt"])
    key = rsa if alg == "RS256" else OctKey.import_key(c.client_secret.encode())
    response = await client.post("/token", data=assertions.form(
        assertions.sign(key, c.client_id, alg=alg)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == [reason]


async def test_client_secret_jwt_with_the_wrong_secret_is_refused(client, register, assertions,
                                                                 engine):
    c = await register(auth_methods=["client_secret_jwt"])
    wrong = OctKey.import_key((c.client_secret + "x").encode())
    response = await client.post("/token", data=assertions.form(assertions.sign(wrong,
                                                                                c.client_id)))
    assert response.status_code == 401
    assert await denial_reasons(engine) == ["bad_signature"]


@pytest.fixture
async def root(client, platform_admin) -> dict[str, str]:
    admin = await platform_admin()
    return bearer(await issue_token(client, admin, "admin"))


async def test_client_secret_jwt_accepts_the_previous_secret_during_the_grace(
        client, root, assertions, engine, clock):
    created = (await client.post("/api/v1/clients", headers=root, json={
        "name": "hmac", "allowed_scopes": ["orders:read"],
        "token_endpoint_auth_methods": ["client_secret_jwt"]})).json()
    old = created["client_secret"]
    rotated = (await client.post(f"/api/v1/clients/{created['client_id']}/secret", headers=root,
                                 json={"grace_seconds": 600})).json()
    new = rotated["client_secret"]
    clock.advance(6)  # past the token endpoint's client cache
    for secret in (new, old):
        response = await client.post("/token", data=assertions.form(assertions.sign(
            OctKey.import_key(secret.encode()), created["client_id"])))
        assert response.status_code == 200, response.text
    events = await audit_events(engine, "M2M_TOKEN_GENERATED")
    assert [e.details["secret_used"] for e in events[-2:]] == ["current", "previous"]
    clock.advance(600)
    late = await client.post("/token", data=assertions.form(assertions.sign(
        OctKey.import_key(old.encode()), created["client_id"])))
    assert late.status_code == 401


async def test_client_secret_jwt_enabled_later_needs_a_secret_rotation(client, root, assertions,
                                                                      engine, clock):
    created = (await client.post("/api/v1/clients", headers=root, json={
        "name": "basic first", "allowed_scopes": ["orders:read"]})).json()
    client_id = created["client_id"]
    patched = await client.patch(f"/api/v1/clients/{client_id}", headers=root, json={
        "token_endpoint_auth_methods": ["client_secret_basic", "client_secret_jwt"]})
    assert patched.status_code == 200
    clock.advance(6)
    secret = OctKey.import_key(created["client_secret"].encode())
    refused = await client.post("/token", data=assertions.form(assertions.sign(secret,
                                                                               client_id)))
    assert refused.status_code == 401
    assert (await denial_reasons(engine))[-1] == "no_readable_secret"
    rotated = (await client.post(f"/api/v1/clients/{client_id}/secret", headers=root,
                                 json={"grace_seconds": 0})).json()
    clock.advance(6)
    accepted = await client.post("/token", data=assertions.form(assertions.sign(
        OctKey.import_key(rotated["client_secret"].encode()), client_id)))
    assert accepted.status_code == 200, accepted.text
    # Dropping the method drops the readable copy at once.
    await client.patch(f"/api/v1/clients/{client_id}", headers=root,
                       json={"token_endpoint_auth_methods": ["client_secret_basic"]})
    async with engine.connect() as connection:
        row = (await connection.execute(select(Client).where(Client.id == client_id))).one()
    assert row.secret_encrypted is None and row.secret_hash is not None


# Registration ------------------------------------------------------------------------------


async def test_api_registers_a_private_key_jwt_client_without_a_secret(client, root, rsa,
                                                                      engine):
    response = await client.post("/api/v1/clients", headers=root, json={
        "name": "signer", "allowed_scopes": ["orders:read"],
        "token_endpoint_auth_methods": ["private_key_jwt"], "jwks": public_jwks(rsa)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["client_secret"] is None
    assert body["jwks"] == public_jwks(rsa) and body["jwks_uri"] is None
    assert body["token_endpoint_auth_methods"] == ["private_key_jwt"]
    [event] = [e for e in await audit_events(engine, "CLIENT_CREATED")
               if e.client_id == body["client_id"]]
    assert event.details["jwksKids"] == [rsa.kid]
    rotate = await client.post(f"/api/v1/clients/{body['client_id']}/secret", headers=root,
                               json={})
    assert rotate.status_code == 409
    assert rotate.json() == {"error": "conflict", "error_description":
                             "this client authenticates with private_key_jwt only: it has no "
                             "secret to rotate"}


@pytest.mark.parametrize(("body", "description"), [
    ({"token_endpoint_auth_methods": ["private_key_jwt"]},
     "a private_key_jwt client has a jwks or a jwks_uri (one of them, not both)"),
    ({"token_endpoint_auth_methods": ["private_key_jwt"], "jwks": "PRIVATE",
      "jwks_uri": JWKS_URI},
     "a private_key_jwt client has a jwks or a jwks_uri (one of them, not both)"),
    ({"token_endpoint_auth_methods": ["private_key_jwt"], "jwks": "PRIVATE"},
     "jwks key 1 holds private or symmetric key material (d, dp, dq, p, q, qi): register "
     "public keys only"),
    ({"token_endpoint_auth_methods": ["private_key_jwt"], "jwks": {"keys": [
        {"kty": "oct", "k": "c2VjcmV0"}]}},
     "jwks key 1 holds private or symmetric key material (k): register public keys only"),
    ({"token_endpoint_auth_methods": ["private_key_jwt"], "jwks": {"keys": []}},
     "jwks holds 1 to 20 keys"),
    ({"token_endpoint_auth_methods": ["private_key_jwt"], "jwks": {"nokeys": 1}},
     'jwks must be a JWK Set: {"keys": [...]}'),
    ({"token_endpoint_auth_methods": ["private_key_jwt"], "jwks": "SMALL_RSA"},
     "jwks key 1 is not a public signature key (RSA of 2048 bits or more, EC or OKP, use sig)"),
    ({"token_endpoint_auth_methods": ["private_key_jwt"], "jwks": "WRONG_ALG"},
     "jwks key 1 names alg 'ES256', which does not fit it"),
    ({"jwks": "PUBLIC"}, "jwks and jwks_uri are for private_key_jwt clients"),
])
async def test_api_refuses_unusable_client_keys_at_registration(client, root, rsa, body,
                                                                description):
    def small_rsa() -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc warns about 1024-bit keys: the point
            return {"keys": [RSAKey.generate_key(1024, private=False).as_dict()]}

    fill = {"PRIVATE": lambda: {"keys": [rsa.as_dict(private=True)]},
            "PUBLIC": lambda: public_jwks(rsa), "SMALL_RSA": small_rsa,
            "WRONG_ALG": lambda: {"keys": [{**rsa.as_dict(private=False), "alg": "ES256"}]}}
    payload = {"name": "signer", "allowed_scopes": ["orders:read"],
               **{k: fill[v]() if isinstance(v, str) and v in fill else v
                  for k, v in body.items()}}
    response = await client.post("/api/v1/clients", headers=root, json=payload)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": description}


async def test_api_refuses_a_plain_http_jwks_uri(client, root):
    response = await client.post("/api/v1/clients", headers=root, json={
        "name": "signer", "allowed_scopes": ["orders:read"],
        "token_endpoint_auth_methods": ["private_key_jwt"],
        "jwks_uri": "http://client.example/jwks.json"})
    assert response.status_code == 422
    assert response.json()["details"]["errors"][0]["field"] == "jwks_uri"


async def test_api_patch_swaps_jwks_for_a_jwks_uri_and_back(client, root, rsa):
    created = (await client.post("/api/v1/clients", headers=root, json={
        "name": "signer", "allowed_scopes": ["orders:read"],
        "token_endpoint_auth_methods": ["private_key_jwt"], "jwks": public_jwks(rsa)})).json()
    path = f"/api/v1/clients/{created['client_id']}"
    by_uri = (await client.patch(path, headers=root, json={"jwks_uri": JWKS_URI})).json()
    assert (by_uri["jwks"], by_uri["jwks_uri"]) == (None, JWKS_URI)
    by_value = (await client.patch(path, headers=root, json={"jwks": public_jwks(rsa)})).json()
    assert (by_value["jwks"], by_value["jwks_uri"]) == (public_jwks(rsa), None)
    to_basic = (await client.patch(path, headers=root, json={
        "token_endpoint_auth_methods": ["client_secret_basic"]})).json()
    assert (to_basic["jwks"], to_basic["jwks_uri"]) == (None, None)


async def test_cli_creates_a_private_key_jwt_client_from_a_jwks_file(
        client, database_url, tmp_path: Path, rsa, assertions):
    created_tenant = await asyncio.to_thread(issuer_cli, "tenants", "create", "acme",
                                             database_url=database_url, cwd=tmp_path)
    assert created_tenant.returncode == 0, created_tenant.stderr
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(rsa)))
    created = await asyncio.to_thread(
        issuer_cli, "clients", "create", "--tenant", "acme", "--scope", "orders:read",
        "--auth-method", "private_key_jwt", "--jwks-file", str(jwks_file), "--json",
        database_url=database_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert body["client_secret"] is None and body["auth_methods"] == ["private_key_jwt"]
    assert body["jwks"] == public_jwks(rsa)
    response = await client.post("/token", data=assertions.form(
        assertions.sign(rsa, body["client_id"])))
    assert response.status_code == 200, response.text

    by_uri = await asyncio.to_thread(
        issuer_cli, "clients", "create", "--tenant", "acme", "--scope", "orders:read",
        "--auth-method", "private_key_jwt", "--jwks-uri", JWKS_URI, "--json",
        database_url=database_url, cwd=tmp_path)
    assert by_uri.returncode == 0, by_uri.stderr
    assert json.loads(by_uri.stdout)["jwks_uri"] == JWKS_URI


async def test_cli_refuses_a_jwks_file_with_a_private_key(client, database_url, tmp_path, rsa):
    await asyncio.to_thread(issuer_cli, "tenants", "create", "acme", database_url=database_url,
                            cwd=tmp_path)
    jwks_file = tmp_path / "private.json"
    jwks_file.write_text(json.dumps({"keys": [rsa.as_dict(private=True)]}))
    created = await asyncio.to_thread(
        issuer_cli, "clients", "create", "--tenant", "acme", "--scope", "orders:read",
        "--auth-method", "private_key_jwt", "--jwks-file", str(jwks_file),
        database_url=database_url, cwd=tmp_path)
    assert created.returncode == 1
    assert created.stderr == ("issuer: error: jwks key 1 holds private or symmetric key "
                              "material (d, dp, dq, p, q, qi): register public keys only\n")


async def _issuer_keys(http: httpx.AsyncClient) -> Any:
    from joserfc.jwk import KeySet

    return KeySet.import_key_set((await http.get("/.well-known/jwks.json")).json())

