"""RFC 9449 (DPoP) at the issuer, through HTTP: proofs at POST /token (§4, §5), the
server's nonces (§8), ``dpop_bound_access_tokens`` clients (§5.2), introspection and
revocation of DPoP-bound tokens (§6).

Proofs are built here with joserfc directly (every header and claim under the test's
control), never with the server's own helpers; thumbprints are computed by hand
(RFC 7638 §3.2: SHA-256 over the required members, sorted, no whitespace).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.settings import Settings
from issuer.store.models import IssuedToken, UsedAssertionJti
from tests.admin.test_tenants_api import audit_events, bearer
from tests.conftest import (
    ISSUER,
    REDIS_URL,
    SEEN_SECRETS,
    FakeClock,
    Registered,
    app_client,
    delete_redis_keys,
    issue_token,
)
from tests.test_cli import issuer as issuer_cli

TOKEN_URL = f"{ISSUER}/token"
GRANT = {"grant_type": "client_credentials"}
ProofKey = RSAKey | ECKey | OKPKey


@pytest.fixture(scope="module")
def keys() -> dict[str, ProofKey]:
    return {"RS256": RSAKey.generate_key(2048, private=True),
            "ES256": ECKey.generate_key("P-256", private=True),
            "EdDSA": OKPKey.generate_key("Ed25519", private=True)}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(key: ProofKey) -> str:
    """RFC 7638 §3.2, by hand: the required members in lexicographic order."""
    public = key.as_dict(private=False)
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                "OKP": ("crv", "kty", "x")}[public["kty"]]
    canonical = json.dumps({name: public[name] for name in required}, separators=(",", ":"),
                           sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


class Proofs:
    """DPoP proofs on the test's clock, built with joserfc."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def make(self, key: Any, alg: str = "ES256", *, header: dict[str, Any] | None = None,
             jwk: dict[str, Any] | None = None, **claims: Any) -> str:
        full_header = {"typ": "dpop+jwt", "alg": alg,
                       "jwk": jwk if jwk is not None else key.as_dict(private=False),
                       **(header or {})}
        full_header = {name: value for name, value in full_header.items() if value is not None}
        payload = {"jti": uuid.uuid4().hex, "htm": "POST", "htu": TOKEN_URL,
                   "iat": int(self.clock.now()), **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc warns that RFC 9864 deprecates "EdDSA"
            return jwt.encode(full_header, payload, key, algorithms=[alg])


@pytest.fixture
def proofs(clock: FakeClock) -> Proofs:
    return Proofs(clock)


@pytest.fixture
async def secret_client(register: Callable[..., Awaitable[Registered]]) -> Registered:
    return await register()


async def issued_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(
            select(func.count()).select_from(IssuedToken))).scalar_one())


async def denial_reasons(engine: AsyncEngine) -> list[str]:
    return [row.details["reason"] for row in await audit_events(engine, "M2M_TOKEN_DENIED")]


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def dpop_token(http: httpx.AsyncClient, registered: Registered, proof: str) -> Any:
    return await http.post("/token", data=GRANT, auth=registered.basic, headers={"DPoP": proof})


# §5 happy path ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_s5_a_valid_proof_binds_the_token_to_its_key(client, secret_client, proofs, keys,
                                                          alg, engine):
    key = keys[alg]
    response = await dpop_token(client, secret_client, proofs.make(key, alg))
    assert response.status_code == 200, response.text
    body = response.json()
    SEEN_SECRETS.add(body["access_token"])
    # §5: "token_type": "DPoP"; §6.1: the token carries the proof key's thumbprint.
    assert body["token_type"] == "DPoP"
    claims = claims_of(body["access_token"])
    assert claims["cnf"] == {"jkt": thumbprint(key)} == {"jkt": key.thumbprint()}
    assert "dpop-nonce" not in response.headers  # nonces are off by default
    assert await issued_count(engine) == 1
    (event,) = await audit_events(engine, "M2M_TOKEN_GENERATED")
    assert event.details["dpop_jkt"] == thumbprint(key)


async def test_a_request_without_a_proof_still_gets_a_bearer_token(client, secret_client):
    response = await client.post("/token", data=GRANT, auth=secret_client.basic)
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"
    assert "cnf" not in claims_of(response.json()["access_token"])


async def test_s4_3_htu_is_compared_without_query_fragment_and_with_normalised_case(
        client, secret_client, proofs, keys):
    proof = proofs.make(keys["ES256"], htu="HTTPS://Issuer.TEST:443/token?x=1#frag")
    assert (await dpop_token(client, secret_client, proof)).status_code == 200


async def test_s5_1_discovery_lists_the_dpop_algorithms(client):
    document = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert document["dpop_signing_alg_values_supported"] == ["RS256", "PS256", "ES256", "EdDSA"]


# §4.3 refusals -----------------------------------------------------------------------------


def _alg_none(proofs: Proofs, keys: dict[str, ProofKey]) -> str:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": keys["ES256"].as_dict(private=False)}
    claims = {"jti": uuid.uuid4().hex, "htm": "POST", "htu": TOKEN_URL,
              "iat": int(proofs.clock.now())}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def _hs256(proofs: Proofs, keys: dict[str, ProofKey]) -> str:
    secret = OctKey.generate_key(256)
    return proofs.make(secret, "HS256", jwk=secret.as_dict(private=False))


def _bad_signature(proofs: Proofs, keys: dict[str, ProofKey]) -> str:
    # Signed by one key, carrying another's public half.
    other = ECKey.generate_key("P-256", private=True)
    return proofs.make(other, "ES256", jwk=keys["ES256"].as_dict(private=False))


REFUSALS: dict[str, tuple[Callable[[Proofs, dict[str, ProofKey]], str], str]] = {
    "missing typ": (lambda p, k: p.make(k["ES256"], header={"typ": None}),
                    "The DPoP proof's typ is not dpop+jwt"),
    "alg none": (_alg_none, "The DPoP proof's alg is not supported"),
    "HS256": (_hs256, "The DPoP proof's alg is not supported"),
    "private key in jwk": (lambda p, k: p.make(k["ES256"], jwk=k["ES256"].as_dict(private=True)),
                           "The DPoP proof's jwk holds a private key"),
    "bad signature": (_bad_signature, "The DPoP proof's signature does not verify"),
    "wrong htm": (lambda p, k: p.make(k["ES256"], htm="GET"),
                  "The DPoP proof's htm does not match the request method"),
    "wrong htu": (lambda p, k: p.make(k["ES256"], htu=f"{ISSUER}/introspect"),
                  "The DPoP proof's htu does not match the request URI"),
    "iat too old": (lambda p, k: p.make(k["ES256"], iat=int(p.clock.now()) - 61),
                    "The DPoP proof's iat is too old"),
    "iat too far ahead": (lambda p, k: p.make(k["ES256"], iat=int(p.clock.now()) + 6),
                          "The DPoP proof's iat is in the future"),
    "no jti": (lambda p, k: p.make(k["ES256"], jti=""), "The DPoP proof has no valid jti"),
    "not a JWT": (lambda p, k: "not-a-jwt", "The DPoP proof is not a signed JWT"),
    "too large": (lambda p, k: p.make(k["ES256"], pad="x" * 9000),
                  "The DPoP proof is too large"),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
async def test_s4_3_a_bad_proof_is_invalid_dpop_proof_and_nothing_is_issued(
        client, secret_client, proofs, keys, engine, case):
    make, description = REFUSALS[case]
    response = await dpop_token(client, secret_client, make(proofs, keys))
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_dpop_proof", "error_description": description}
    assert response.headers["cache-control"] == "no-store"
    assert await issued_count(engine) == 0
    assert len(await denial_reasons(engine)) == 1


async def test_s4_3_two_dpop_headers_are_refused(client, secret_client, proofs, keys, engine):
    first, second = proofs.make(keys["ES256"]), proofs.make(keys["ES256"])
    response = await client.post("/token", data=GRANT, auth=secret_client.basic,
                                 headers=[("DPoP", first), ("DPoP", second)])
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_dpop_proof",
                               "error_description": "Send one DPoP header"}
    assert await issued_count(engine) == 0
    assert await denial_reasons(engine) == ["dpop_two_headers"]


async def test_s11_1_a_replayed_proof_is_refused(client, secret_client, proofs, keys, engine):
    proof = proofs.make(keys["ES256"])
    assert (await dpop_token(client, secret_client, proof)).status_code == 200
    replayed = await dpop_token(client, secret_client, proof)
    assert replayed.status_code == 400
    assert replayed.json() == {"error": "invalid_dpop_proof",
                               "error_description": "The DPoP proof was used before"}
    assert await issued_count(engine) == 1
    assert await denial_reasons(engine) == ["dpop_jti_replayed"]


@pytest.fixture(params=["database", "redis"])
async def shared_settings(request: pytest.FixtureRequest,
                          settings: Settings) -> AsyncIterator[Settings]:
    """The settings of several issuer processes sharing one replay store: the database
    alone, or Redis (a prefix of this test's own)."""
    if request.param == "database":
        yield settings
        return
    prefix = f"{settings.redis_key_prefix}{uuid.uuid4().hex[:8]}:"
    yield replace(settings, redis_url=REDIS_URL, redis_key_prefix=prefix)
    await delete_redis_keys(prefix)


async def test_s11_1_a_proof_spent_in_one_process_is_refused_by_another(
        shared_settings, clock, secret_client, proofs, keys, engine):
    # Two app instances (two processes' worth of state: caches, Redis pools, engines)
    # on one database, as two workers of ``issuer serve`` are.
    proof = proofs.make(keys["EdDSA"], "EdDSA")
    async with app_client(shared_settings, clock) as first, \
            app_client(shared_settings, clock) as second:
        assert (await dpop_token(first, secret_client, proof)).status_code == 200
        replayed = await dpop_token(second, secret_client, proof)
        assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_dpop_proof")
        # A fresh proof of the same key is fine in either.
        assert (await dpop_token(second, secret_client,
                                 proofs.make(keys["EdDSA"], "EdDSA"))).status_code == 200
    assert await issued_count(engine) == 2
    assert await denial_reasons(engine) == ["dpop_jti_replayed"]
    # Redis, when configured, holds the spent jtis; else the database's replay table.
    async with engine.connect() as connection:
        held = (await connection.execute(select(func.count()).select_from(UsedAssertionJti)
                                         )).scalar_one()
    assert held == (0 if shared_settings.redis_url else 2)


async def test_a_jti_is_held_while_its_proof_could_be_accepted(client, secret_client, proofs,
                                                              keys, clock):
    proof = proofs.make(keys["ES256"], iat=int(clock.now()) + 5)  # the most future allowed
    assert (await dpop_token(client, secret_client, proof)).status_code == 200
    clock.advance(5 + 60)  # the last second iat is still within the window
    assert (await dpop_token(client, secret_client, proof)).json()["error_description"] == (
        "The DPoP proof was used before")


# §8 nonces ---------------------------------------------------------------------------------


@pytest.fixture
async def nonce_client(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(replace(settings, dpop_nonce=True, dpop_nonce_lifetime=300),
                          clock) as http:
        yield http


async def test_s8_a_proof_without_the_required_nonce_gets_use_dpop_nonce(
        nonce_client, secret_client, proofs, keys, engine):
    refused = await dpop_token(nonce_client, secret_client, proofs.make(keys["ES256"]))
    assert refused.status_code == 400
    assert refused.json() == {"error": "use_dpop_nonce", "error_description":
                              "Authorization server requires nonce in DPoP proof"}
    nonce = refused.headers["dpop-nonce"]
    assert await issued_count(engine) == 0
    granted = await dpop_token(nonce_client, secret_client,
                               proofs.make(keys["ES256"], nonce=nonce))
    assert granted.status_code == 200, granted.text
    assert granted.headers["dpop-nonce"] == nonce  # the next nonce: the same slot's
    assert await denial_reasons(engine) == ["dpop_nonce_missing"]


async def test_s8_every_token_response_carries_the_next_nonce(nonce_client, secret_client):
    bearer_answer = await nonce_client.post("/token", data=GRANT, auth=secret_client.basic)
    refusal = await nonce_client.post("/token", data=GRANT, auth=(secret_client.client_id, "x"))
    assert bearer_answer.status_code == 200 and refusal.status_code == 401
    assert bearer_answer.headers["dpop-nonce"] == refusal.headers["dpop-nonce"]


async def test_s8_a_stale_nonce_is_refused_and_the_previous_slot_still_accepted(
        nonce_client, secret_client, proofs, keys, clock, engine):
    nonce = (await dpop_token(nonce_client, secret_client,
                              proofs.make(keys["ES256"]))).headers["dpop-nonce"]
    clock.advance(300)  # the next slot: the previous slot's nonce is still valid
    assert (await dpop_token(nonce_client, secret_client,
                             proofs.make(keys["ES256"], nonce=nonce))).status_code == 200
    clock.advance(300)  # two slots on: stale
    stale = await dpop_token(nonce_client, secret_client, proofs.make(keys["ES256"], nonce=nonce))
    assert (stale.status_code, stale.json()["error"]) == (400, "use_dpop_nonce")
    assert stale.headers["dpop-nonce"] != nonce
    forged = await dpop_token(nonce_client, secret_client,
                              proofs.make(keys["ES256"], nonce=b64(b"\0" * 24)))
    assert forged.json()["error"] == "use_dpop_nonce"
    assert await issued_count(engine) == 1
    assert await denial_reasons(engine) == ["dpop_nonce_missing", "dpop_nonce_stale",
                                            "dpop_nonce_stale"]


async def test_s8_nonces_are_the_same_in_every_process(settings, clock, secret_client):
    nonce_settings = replace(settings, dpop_nonce=True)
    answers = []
    for _ in range(2):
        async with app_client(nonce_settings, clock) as http:
            answers.append(await http.post("/token", data=GRANT, auth=secret_client.basic))
    assert answers[0].headers["dpop-nonce"] == answers[1].headers["dpop-nonce"]


# §5.2 dpop_bound_access_tokens ---------------------------------------------------------------


async def test_s5_2_a_dpop_bound_client_without_a_proof_is_invalid_request(
        client, register, proofs, keys, engine):
    bound = await register(dpop_bound_access_tokens=True)
    refused = await client.post("/token", data=GRANT, auth=bound.basic)
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_request",
                              "error_description": "This client must send a DPoP proof"}
    assert await issued_count(engine) == 0
    assert await denial_reasons(engine) == ["dpop_proof_required"]
    granted = await dpop_token(client, bound, proofs.make(keys["ES256"]))
    assert granted.json()["token_type"] == "DPoP"


async def test_s5_2_the_admin_api_registers_and_changes_dpop_bound_clients(
        client, platform_admin, proofs, keys):
    admin = await platform_admin()
    root = bearer(await issue_token(client, admin, "admin"))
    created = await client.post("/api/v1/clients", headers=root, json={
        "name": "bound", "allowed_scopes": ["orders:read"], "dpop_bound_access_tokens": True})
    assert created.status_code == 201, created.text
    body = created.json()
    SEEN_SECRETS.add(body["client_secret"])
    assert body["dpop_bound_access_tokens"] is True
    item = f"/api/v1/clients/{body['client_id']}"
    assert (await client.get(item, headers=root)).json()["dpop_bound_access_tokens"] is True
    basic = (body["client_id"], body["client_secret"])
    assert (await client.post("/token", data=GRANT, auth=basic)).status_code == 400
    patched = await client.patch(item, headers=root, json={"dpop_bound_access_tokens": False})
    assert patched.json()["dpop_bound_access_tokens"] is False
    assert (await client.post("/token", data=GRANT, auth=basic)).status_code == 200
    refused = await client.patch(item, headers=root, json={"dpop_bound_access_tokens": None})
    assert refused.status_code == 422


def test_s5_2_the_cli_registers_a_dpop_bound_client(database_url, tmp_path):
    assert issuer_cli("tenants", "create", "acme", database_url=database_url,
                      cwd=tmp_path).returncode == 0
    created = issuer_cli("clients", "create", "--tenant", "acme", "--scope", "orders:read",
                         "--dpop-bound", "--json", database_url=database_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    client = json.loads(created.stdout)
    SEEN_SECRETS.add(client["client_secret"])
    assert client["dpop_bound_access_tokens"] is True
    shown = issuer_cli("clients", "show", client["client_id"], "--json",
                       database_url=database_url, cwd=tmp_path)
    assert json.loads(shown.stdout)["dpop_bound_access_tokens"] is True


# §6 introspection and revocation ------------------------------------------------------------


async def test_s6_2_introspection_says_dpop_and_returns_cnf(client, secret_client, proofs, keys):
    token = (await dpop_token(client, secret_client, proofs.make(keys["RS256"], "RS256"))
             ).json()["access_token"]
    SEEN_SECRETS.add(token)
    body = (await client.post("/introspect", data={"token": token},
                              auth=secret_client.basic)).json()
    assert body["active"] is True
    assert body["token_type"] == "DPoP"
    assert body["cnf"] == {"jkt": thumbprint(keys["RS256"])}
    bearer_token = await issue_token(client, secret_client)
    plain = (await client.post("/introspect", data={"token": bearer_token},
                               auth=secret_client.basic)).json()
    assert plain["token_type"] == "Bearer" and "cnf" not in plain


async def test_rfc7009_a_dpop_bound_token_is_revoked_like_any_other(client, secret_client,
                                                                   proofs, keys):
    token = (await dpop_token(client, secret_client, proofs.make(keys["ES256"]))
             ).json()["access_token"]
    SEEN_SECRETS.add(token)
    revoked = await client.post("/revoke", data={"token": token}, auth=secret_client.basic)
    assert revoked.status_code == 200
    body = (await client.post("/introspect", data={"token": token},
                              auth=secret_client.basic)).json()
    assert body == {"active": False}


# §7 at the issuer's own admin API: a DPoP-bound admin token --------------------------

TENANTS_URL = f"{ISSUER}/api/v1/tenants"


async def dpop_admin_token(http: httpx.AsyncClient, platform_admin: Any, proofs: Proofs,
                           key: ProofKey) -> str:
    admin = await platform_admin()
    response = await http.post("/token", data={**GRANT, "scope": "admin"}, auth=admin.basic,
                               headers={"DPoP": proofs.make(key, "ES256")})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    SEEN_SECRETS.add(token)
    return token


def ath(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


async def test_s7_the_admin_api_accepts_a_dpop_bound_token_with_its_proof(
        client, platform_admin, proofs, keys):
    key = keys["ES256"]
    token = await dpop_admin_token(client, platform_admin, proofs, key)
    proof = proofs.make(key, "ES256", htm="GET", htu=TENANTS_URL, ath=ath(token))
    response = await client.get("/api/v1/tenants",
                                headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code == 200, response.text
    # The same proof again is a replay (§11.1): refused.
    again = await client.get("/api/v1/tenants",
                             headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_dpop_proof"


@pytest.mark.parametrize("case", ["no proof", "other url", "other method", "wrong ath",
                                  "other key"])
async def test_s7_1_the_admin_api_refuses_a_bad_proof_with_a_dpop_challenge(
        client, platform_admin, proofs, keys, case):
    key = keys["ES256"]
    token = await dpop_admin_token(client, platform_admin, proofs, key)
    claims: dict[str, Any] = {"htm": "GET", "htu": TENANTS_URL, "ath": ath(token)}
    signer, alg = key, "ES256"
    if case == "other url":
        claims["htu"] = f"{ISSUER}/api/v1/clients"
    elif case == "other method":
        claims["htm"] = "POST"
    elif case == "wrong ath":
        claims["ath"] = ath(token + "x")
    elif case == "other key":
        signer, alg = keys["EdDSA"], "EdDSA"
    headers = {"Authorization": f"DPoP {token}"}
    if case != "no proof":
        headers["DPoP"] = proofs.make(signer, alg, **claims)
    response = await client.get("/api/v1/tenants", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_dpop_proof"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("DPoP ") and 'error="invalid_dpop_proof"' in challenge
    assert 'algs="' in challenge and "ES256" in challenge


async def test_s7_2_a_dpop_bound_admin_token_sent_as_bearer_is_refused(
        client, platform_admin, proofs, keys):
    token = await dpop_admin_token(client, platform_admin, proofs, keys["ES256"])
    response = await client.get("/api/v1/tenants", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith("Bearer ")


async def test_s7_a_bearer_admin_token_sent_with_the_dpop_scheme_is_refused(
        client, platform_admin, proofs, keys):
    admin = await platform_admin()
    token = await issue_token(client, admin, "admin")
    proof = proofs.make(keys["ES256"], "ES256", htm="GET", htu=TENANTS_URL, ath=ath(token))
    response = await client.get("/api/v1/tenants",
                                headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith("DPoP ")


async def test_s7_1_a_dpop_caller_without_the_scope_gets_403_with_a_dpop_challenge(
        client, register, proofs, keys):
    key = keys["ES256"]
    reader = await register(allowed_scopes=["orders:read"])
    issued = await client.post("/token", data={**GRANT, "scope": "orders:read"},
                               auth=reader.basic, headers={"DPoP": proofs.make(key, "ES256")})
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    SEEN_SECRETS.add(token)
    proof = proofs.make(key, "ES256", htm="GET", htu=TENANTS_URL, ath=ath(token))
    response = await client.get("/api/v1/tenants",
                                headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("DPoP ") and 'error="insufficient_scope"' in challenge
    assert 'scope="admin"' in challenge and 'algs="' in challenge
