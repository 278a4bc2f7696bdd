"""Federated client credentials (``federated_jwt``): a workload authenticates with a
JWT its platform gave it, sent as an RFC 7523 §2.2 client assertion with its client_id,
verified against a trusted issuer's keys fetched from a real loopback HTTP server
(``tests.fake_oidc``) through the app's outbound guard (loopback allowed here).

Covers the happy paths (a Kubernetes-shaped RS256 token, a CI-shaped ES256 one), the
refusal table (each ``invalid_client`` with its audited reason), key rotation at the
external issuer, an external issuer that is down, and /introspect and /revoke
authenticated by a federated credential.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from issuer.registration import Actor
from issuer.settings import Settings
from issuer.trusted_issuers import create_trusted_issuer
from tests.admin.conftest import Admin
from tests.admin.test_tenants_api import INVALID_CLIENT, audit_events
from tests.conftest import ISSUER, FakeClock, Registered, app_client, issue_token
from tests.fake_oidc import FakeIssuer, FakeOIDC

TOKEN_ENDPOINT = f"{ISSUER}/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
K8S_SUBJECT = "system:serviceaccount:billing:invoicer"


def federated_form(client_id: str, external_token: str, **more: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id,
            "client_assertion_type": JWT_BEARER, "client_assertion": external_token, **more}


async def denial_reasons(engine: AsyncEngine) -> list[str]:
    return [event.details["reason"] for event in await audit_events(engine, "M2M_TOKEN_DENIED")]


@pytest.fixture
def loopback_settings(settings: Settings) -> Settings:
    """The test settings, allowing outbound connections to loopback (the fake issuer)."""
    return replace(settings, outbound_allowed_networks=("127.0.0.0/8",))


@pytest.fixture
async def client(loopback_settings: Settings, clock: FakeClock
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(loopback_settings, clock) as http:
        yield http


@pytest.fixture
async def platform(client, platform_admin) -> Admin:
    admin = await platform_admin()
    return Admin(admin, await issue_token(client, admin, "admin"))


@pytest.fixture
async def acme_admin(client, register) -> Admin:
    admin = await register(tenant="acme", allowed_scopes=["admin"])
    return Admin(admin, await issue_token(client, admin, "admin"))


@pytest.fixture
async def globex_admin(client, register) -> Admin:
    admin = await register(tenant="globex", allowed_scopes=["admin"])
    return Admin(admin, await issue_token(client, admin, "admin"))


@dataclass
class Federation:
    """Trusted issuers and federated clients, made straight in the store."""

    engine: AsyncEngine
    clock: FakeClock
    register: Callable[..., Any]

    async def trust(self, tenant_id: str, issuer: FakeIssuer, **options: Any) -> str:
        sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        async with sessions() as session, session.begin():
            record = await create_trusted_issuer(session, tenant_id, issuer=issuer.url,
                                                 clock=self.clock, actor=Actor("test"),
                                                 allow_http=True, **options)
        return record.id

    async def client(self, tenant: str, trusted_issuer_id: str, subject: str,
                     audience: str | None = None, **spec: Any) -> Registered:
        credential = {"trusted_issuer_id": trusted_issuer_id, "subject": subject,
                      "audience": audience}
        spec.setdefault("auth_methods", ["federated_jwt"])
        registered: Registered = await self.register(
            tenant=tenant, federated_credentials=[credential], **spec)
        return registered

    async def tenant(self, name: str) -> str:
        """A tenant's id (made with a throwaway client)."""
        registered: Registered = await self.register(tenant=name)
        return registered.tenant_id


@pytest.fixture
def federation(engine: AsyncEngine, clock: FakeClock, register: Any) -> Federation:
    return Federation(engine, clock, register)


@dataclass
class Workload:
    """A client of tenant ``acme`` whose Kubernetes service account authenticates it."""

    client: Registered
    trusted_issuer_id: str
    issuer: FakeIssuer


@pytest.fixture
async def k8s(federation: Federation, fake_oidc: FakeOIDC) -> Workload:
    tenant_id = await federation.tenant("acme")
    trusted = await federation.trust(tenant_id, fake_oidc.rs256)
    registered = await federation.client("acme", trusted, K8S_SUBJECT)
    return Workload(registered, trusted, fake_oidc.rs256)


def k8s_token(workload: Workload, clock: FakeClock, **options: Any) -> str:
    options.setdefault("aud", TOKEN_ENDPOINT)
    return workload.issuer.kubernetes_token(clock.now(), namespace="billing",
                                            service_account="invoicer", **options)


# Happy paths ----------------------------------------------------------------------------


async def test_a_kubernetes_service_account_token_gets_an_access_token(client, k8s, clock,
                                                                      engine):
    response = await client.post("/token", data=federated_form(
        k8s.client.client_id, k8s_token(k8s, clock)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    keys = KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())
    claims = jwt.decode(body["access_token"], keys).claims
    assert claims["sub"] == claims["client_id"] == k8s.client.client_id
    assert claims["iss"] == ISSUER  # this issuer's token, not the external one
    [event] = await audit_events(engine, "M2M_TOKEN_GENERATED")
    assert event.details["federated_issuer"] == k8s.issuer.url
    assert event.details["federated_subject"] == K8S_SUBJECT
    assert event.details["secret_used"] == "none"


async def test_a_ci_token_es256_matching_a_subject_prefix_gets_an_access_token(
        client, federation, fake_oidc, clock):
    ci = fake_oidc.es256
    tenant_id = await federation.tenant("acme")
    trusted = await federation.trust(tenant_id, ci)
    registered = await federation.client("acme", trusted, "repo:acme/billing:*",
                                         audience="https://issuer.test/ci")
    token = ci.ci_token(clock.now(), repository="acme/billing", ref="refs/heads/main",
                        aud=["https://issuer.test/ci", "https://other.example"])
    response = await client.post("/token", data=federated_form(registered.client_id, token))
    assert response.status_code == 200, response.text


async def test_a_spiffe_jwt_svid_without_jti_may_be_used_again(client, federation,
                                                               fake_oidc, clock):
    spire = fake_oidc.rs256
    tenant_id = await federation.tenant("acme")
    trusted = await federation.trust(tenant_id, spire)
    spiffe_id = "spiffe://acme.example/ns/billing/sa/invoicer"
    registered = await federation.client("acme", trusted, spiffe_id)
    svid = spire.spiffe_token(clock.now(), spiffe_id=spiffe_id, aud=TOKEN_ENDPOINT)
    for _ in range(2):
        response = await client.post("/token", data=federated_form(registered.client_id, svid))
        assert response.status_code == 200, response.text


# Refusals -------------------------------------------------------------------------------


def _hs256_with_public_key(issuer: FakeIssuer, claims: dict[str, Any]) -> str:
    """HS256 keyed with the issuer's public key (PEM): the classic confusion."""
    from tests.jwks.conftest import b64, b64json

    key = issuer.key
    assert isinstance(key, RSAKey)
    signing_input = f"{b64json({'alg': 'HS256', 'kid': key.kid})}.{b64json(claims)}"
    mac = hmac.new(key.as_pem(private=False), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(mac.digest())}"


def _unsigned(claims: dict[str, Any]) -> str:
    from tests.jwks.conftest import b64json

    return f"{b64json({'alg': 'none'})}.{b64json(claims)}."


def _claims(workload: Workload, clock: FakeClock) -> dict[str, Any]:
    now = int(clock.now())
    return {"iss": workload.issuer.url, "sub": K8S_SUBJECT, "aud": TOKEN_ENDPOINT,
            "iat": now, "exp": now + 600}


_OTHER_KEY = RSAKey.generate_key(2048)

# case -> (make(workload, clock, fake_oidc), audited reason)
REFUSALS: dict[str, tuple[Callable[..., str], str]] = {
    "an issuer nobody trusts": (lambda w, c, f: f.es256.token(
        c.now(), sub=K8S_SUBJECT, aud=TOKEN_ENDPOINT), "untrusted_issuer"),
    "an unknown kid": (lambda w, c, f: k8s_token(w, c, header={"kid": "no-such-kid"}),
                       "unknown_kid"),
    "a known kid, another key": (lambda w, c, f: k8s_token(w, c, key=_OTHER_KEY,
                                                           header={"kid": w.issuer.key.kid}),
                                 "bad_signature"),
    "expired": (lambda w, c, f: k8s_token(w, c, iat=int(c.now()) - 700, nbf=None,
                                          lifetime=-631), "expired"),
    "issued longer ago than max_token_age": (lambda w, c, f: k8s_token(
        w, c, iat=int(c.now()) - 3600 - 31, lifetime=7200), "too_old"),
    "not yet valid": (lambda w, c, f: k8s_token(w, c, nbf=int(c.now()) + 120),
                      "not_yet_valid"),
    "another audience": (lambda w, c, f: k8s_token(w, c, aud="https://vault.example"),
                         "wrong_audience"),
    "another subject": (lambda w, c, f: w.issuer.kubernetes_token(
        c.now(), namespace="billing", service_account="intruder", aud=TOKEN_ENDPOINT),
        "subject_mismatch"),
    "an alg the trusted issuer does not allow (PS256)": (lambda w, c, f: k8s_token(
        w, c, header={"alg": "PS256"}), "disallowed_alg"),
    "HS256 keyed with the issuer's public key": (lambda w, c, f: _hs256_with_public_key(
        w.issuer, _claims(w, c)), "disallowed_alg"),
    "alg none": (lambda w, c, f: _unsigned(_claims(w, c)), "disallowed_alg"),
    "no iat": (lambda w, c, f: k8s_token(w, c, iat=None), "missing_claim: iat"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_each_bad_external_token_is_invalid_client_with_its_reason_audited(
        client, k8s, clock, fake_oidc, engine, case):
    make, reason = REFUSALS[case]
    response = await client.post("/token", data=federated_form(
        k8s.client.client_id, make(k8s, clock, fake_oidc)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert response.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in response.headers
    assert await denial_reasons(engine) == [reason]
    [denial] = await audit_events(engine, "M2M_TOKEN_DENIED")
    assert denial.details["auth_method"] == "federated_jwt"
    assert denial.details["federated_issuer"] in (k8s.issuer.url, fake_oidc.es256.url)
    assert denial.client_id == k8s.client.client_id


async def test_a_token_of_another_tenants_trusted_issuer_is_refused(
        client, federation, fake_oidc, clock, engine):
    """Tenant B trusts the CI issuer, tenant A does not: A's client never consults it."""
    ci = fake_oidc.es256
    b_tenant = await federation.tenant("tenant-b")
    b_trusted = await federation.trust(b_tenant, ci)
    await federation.client("tenant-b", b_trusted, "repo:b/app:ref:refs/heads/main")
    a_tenant = await federation.tenant("tenant-a")
    a_trusted = await federation.trust(a_tenant, fake_oidc.rs256)
    a_client = await federation.client("tenant-a", a_trusted, "repo:b/app:ref:refs/heads/main")
    token = ci.ci_token(clock.now(), repository="b/app", ref="refs/heads/main",
                        aud=TOKEN_ENDPOINT)
    response = await client.post("/token", data=federated_form(a_client.client_id, token))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == ["untrusted_issuer"]


async def test_a_disabled_trusted_issuer_authenticates_nobody(client, k8s, clock, engine,
                                                              platform):
    response = await client.patch(f"/api/v1/trusted-issuers/{k8s.trusted_issuer_id}",
                                  json={"status": "disabled"}, headers=platform.headers)
    assert response.status_code == 200, response.text
    [updated] = await audit_events(engine, "TRUSTED_ISSUER_UPDATED")
    assert updated.details["changes"] == {"status": {"from": "active", "to": "disabled"}}
    assert updated.actor == platform.client.client_id
    response = await client.post("/token", data=federated_form(
        k8s.client.client_id, k8s_token(k8s, clock)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == ["trusted_issuer_disabled"]


@pytest.mark.parametrize("what", ["client", "tenant"])
async def test_a_disabled_client_or_tenant_gets_nothing(client, k8s, clock, engine,
                                                        set_status, what):
    if what == "client":
        await set_status(client_id=k8s.client.client_id)
    else:
        await set_status(tenant_id=k8s.client.tenant_id)
    response = await client.post("/token", data=federated_form(
        k8s.client.client_id, k8s_token(k8s, clock)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == [f"{what}_disabled"]


async def test_the_external_tokens_jti_is_spent_like_an_assertions(client, k8s, clock,
                                                                   engine):
    token = k8s_token(k8s, clock)
    assert (await client.post("/token", data=federated_form(
        k8s.client.client_id, token))).status_code == 200
    replay = await client.post("/token", data=federated_form(k8s.client.client_id, token))
    assert (replay.status_code, replay.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == ["jti_replayed"]


async def test_a_secret_client_cannot_be_authenticated_by_an_external_token(
        client, k8s, register, clock, engine):
    secret_client = await register(tenant="acme")
    response = await client.post("/token", data=federated_form(
        secret_client.client_id, k8s_token(k8s, clock)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == ["auth_method_not_allowed"]


async def test_the_clients_rate_limit_applies(client, federation, fake_oidc, clock):
    tenant_id = await federation.tenant("acme")
    trusted = await federation.trust(tenant_id, fake_oidc.rs256)
    limited = await federation.client("acme", trusted, K8S_SUBJECT, rate_limit="1/minute")
    workload = Workload(limited, trusted, fake_oidc.rs256)
    statuses = [(await client.post("/token", data=federated_form(
        limited.client_id, k8s_token(workload, clock)))).status_code for _ in range(2)]
    assert statuses == [200, 429]


# The external issuer's keys ---------------------------------------------------------------


async def _trusted_workload(federation: Federation, issuer: FakeIssuer) -> Workload:
    tenant_id = await federation.tenant("acme")
    trusted = await federation.trust(tenant_id, issuer)
    return Workload(await federation.client("acme", trusted, K8S_SUBJECT), trusted, issuer)


async def test_a_rotated_key_is_picked_up_once_and_bogus_kids_do_not_flood_the_issuer(
        client, federation, fake_oidc, clock, engine):
    issuer = fake_oidc.new_issuer("rotating")
    workload = await _trusted_workload(federation, issuer)

    async def status(token: str) -> int:
        response = await client.post("/token", data=federated_form(
            workload.client.client_id, token))
        return response.status_code

    assert await status(k8s_token(workload, clock)) == 200
    assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 1)
    clock.advance(31)
    issuer.rotate()
    assert await status(k8s_token(workload, clock)) == 200  # the new kid: one refetch
    assert issuer.jwks_requests == 2
    # Refused, and soon refused by the source address's failure budget (429) as well.
    for number in range(100):
        assert await status(k8s_token(workload, clock, header={"kid": f"bogus-{number}"})) \
            in (401, 429)
    assert issuer.jwks_requests == 2  # within 30 s of the last fetch: none
    clock.advance(31)
    for number in range(100):
        assert await status(k8s_token(workload, clock, header={"kid": f"more-{number}"})) \
            in (401, 429)
    assert issuer.jwks_requests == 3  # one per 30 s, whatever the number of bogus kids
    assert "unknown_kid" in await denial_reasons(engine)


async def test_an_unreachable_issuer_with_keys_cached_still_authenticates(
        client, federation, fake_oidc, clock):
    issuer = fake_oidc.new_issuer("flaky")
    workload = await _trusted_workload(federation, issuer)
    first = await client.post("/token", data=federated_form(
        workload.client.client_id, k8s_token(workload, clock)))
    assert first.status_code == 200
    issuer.down = True
    clock.advance(issuer.max_age + 60)  # the cached set is stale: a refetch is tried
    later = await client.post("/token", data=federated_form(
        workload.client.client_id, k8s_token(workload, clock)))
    assert later.status_code == 200, later.text
    assert issuer.jwks_requests == 2  # the failed refetch; the last good set served


async def test_an_unreachable_issuer_never_fetched_is_refused(client, federation, fake_oidc,
                                                              clock, engine):
    issuer = fake_oidc.new_issuer("down")
    issuer.down = True
    workload = await _trusted_workload(federation, issuer)
    response = await client.post("/token", data=federated_form(
        workload.client.client_id, k8s_token(workload, clock)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == ["issuer_keys_unavailable"]


async def test_an_oversized_key_set_is_not_read(client, federation, fake_oidc, clock, engine):
    issuer = fake_oidc.new_issuer("bloated")
    issuer.padding = 300 * 1024  # past the 256 KiB a key set may take
    workload = await _trusted_workload(federation, issuer)
    response = await client.post("/token", data=federated_form(
        workload.client.client_id, k8s_token(workload, clock)))
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert await denial_reasons(engine) == ["issuer_keys_unavailable"]


async def test_a_configured_jwks_uri_is_used_without_discovery(client, federation,
                                                               fake_oidc, clock):
    issuer = fake_oidc.new_issuer("static")
    tenant_id = await federation.tenant("acme")
    trusted = await federation.trust(tenant_id, issuer, jwks_uri=f"{issuer.url}/jwks")
    registered = await federation.client("acme", trusted, K8S_SUBJECT)
    workload = Workload(registered, trusted, issuer)
    response = await client.post("/token", data=federated_form(
        registered.client_id, k8s_token(workload, clock)))
    assert response.status_code == 200, response.text
    assert (issuer.discovery_requests, issuer.jwks_requests) == (0, 1)


async def test_a_public_only_outbound_guard_refuses_a_loopback_issuer(
        settings, federation, fake_oidc, clock, engine):
    """Without ISSUER_OUTBOUND_ALLOWED_NETWORKS the issuer never connects to loopback."""
    issuer = fake_oidc.new_issuer("guarded")
    workload = await _trusted_workload(federation, issuer)
    async with app_client(settings, clock) as http:
        response = await http.post("/token", data=federated_form(
            workload.client.client_id, k8s_token(workload, clock)))
    assert response.status_code == 401
    assert issuer.discovery_requests == 0
    assert await denial_reasons(engine) == ["issuer_keys_unavailable"]


# /introspect and /revoke ----------------------------------------------------------------


async def test_rfc7662_and_rfc7009_a_federated_client_introspects_and_revokes(
        client, k8s, clock, engine):
    issued = await client.post("/token", data=federated_form(
        k8s.client.client_id, k8s_token(k8s, clock)))
    access_token = issued.json()["access_token"]

    def form(**more: str) -> dict[str, str]:
        return {"client_id": k8s.client.client_id, "client_assertion_type": JWT_BEARER,
                "client_assertion": k8s_token(k8s, clock), **more}

    introspected = await client.post("/introspect", data=form(token=access_token))
    assert introspected.status_code == 200, introspected.text
    assert introspected.json()["active"] is True
    revoked = await client.post("/revoke", data=form(token=access_token))
    assert revoked.status_code == 200, revoked.text
    again = await client.post("/introspect", data=form(token=access_token))
    assert again.json() == {"active": False}
    refused = await client.post("/introspect", data=form(token=access_token) | {
        "client_assertion": k8s_token(k8s, clock, aud="https://vault.example")})
    assert (refused.status_code, refused.json()) == (401, INVALID_CLIENT)


# The admin API and discovery --------------------------------------------------------------


async def test_admin_api_trusts_an_issuer_and_registers_a_secretless_client(
        client, acme_admin, fake_oidc, clock, engine):
    issuer = fake_oidc.new_issuer("admin-api")
    created = await client.post("/api/v1/trusted-issuers", headers=acme_admin.headers,
                                json={"issuer": issuer.url})
    assert created.status_code == 201, created.text
    trusted = created.json()
    assert trusted["allowed_algorithms"] == ["RS256", "ES256"]
    assert trusted["max_token_age"] == 3600 and trusted["jwks_uri"] is None
    assert created.headers["location"] == f"/api/v1/trusted-issuers/{trusted['id']}"
    credential = {"trusted_issuer_id": trusted["id"], "subject": K8S_SUBJECT}
    registered = await client.post("/api/v1/clients", headers=acme_admin.headers, json={
        "name": "invoicer", "allowed_scopes": ["orders:read"],
        "token_endpoint_auth_methods": ["federated_jwt"],
        "federated_credentials": [credential]})
    assert registered.status_code == 201, registered.text
    body = registered.json()
    assert body["client_secret"] is None
    assert body["federated_credentials"] == [{**credential, "audience": None}]
    token = issuer.kubernetes_token(clock.now(), namespace="billing",
                                    service_account="invoicer", aud=TOKEN_ENDPOINT)
    response = await client.post("/token", data=federated_form(body["client_id"], token))
    assert response.status_code == 200, response.text
    events = [row.event for row in await audit_events(engine, "TRUSTED_ISSUER_CREATED")]
    assert events == ["TRUSTED_ISSUER_CREATED"]
    deleted = await client.delete(f"/api/v1/trusted-issuers/{trusted['id']}",
                                  headers=acme_admin.headers)
    assert deleted.status_code == 204
    assert len(await audit_events(engine, "TRUSTED_ISSUER_DELETED")) == 1
    token = issuer.kubernetes_token(clock.now(), namespace="billing",
                                    service_account="invoicer", aud=TOKEN_ENDPOINT)
    response = await client.post("/token", data=federated_form(body["client_id"], token))
    assert response.status_code == 401
    # A credential naming the deleted issuer does not keep the client from changing.
    disabled = await client.patch(f"/api/v1/clients/{body['client_id']}",
                                  headers=acme_admin.headers, json={"status": "disabled"})
    assert disabled.status_code == 200, disabled.text


@pytest.mark.parametrize(("body", "status"), [
    ({"issuer": "ftp://cluster.example"}, 422),
    ({"issuer": "https://cluster.example", "allowed_algorithms": ["HS256"]}, 422),
    ({"issuer": "https://cluster.example", "allowed_algorithms": ["none"]}, 422),
    ({"issuer": "https://cluster.example", "max_token_age": 10}, 422),
    ({"issuer": "https://cluster.example?x=1"}, 400),
])
async def test_admin_api_refuses_a_bad_trusted_issuer(client, acme_admin, body, status):
    response = await client.post("/api/v1/trusted-issuers", headers=acme_admin.headers,
                                 json=body)
    assert response.status_code == status, response.text


async def test_admin_api_refuses_a_second_trust_of_the_same_issuer(client, acme_admin):
    body = {"issuer": "https://cluster.example"}
    first = await client.post("/api/v1/trusted-issuers", headers=acme_admin.headers, json=body)
    assert first.status_code == 201
    again = await client.post("/api/v1/trusted-issuers", headers=acme_admin.headers, json=body)
    assert again.status_code == 409


@pytest.mark.parametrize(("credential", "reason"), [
    ({"subject": "*"}, "bare *"),
    ({"subject": "system:*:invoicer"}, "* inside"),
    ({"trusted_issuer_id": "00000000-0000-0000-0000-000000000000"}, "unknown issuer"),
])
async def test_admin_api_refuses_a_bad_federated_credential(client, acme_admin, credential,
                                                             reason):
    trusted = (await client.post("/api/v1/trusted-issuers", headers=acme_admin.headers,
                                 json={"issuer": "https://cluster.example"})).json()
    entry = {"trusted_issuer_id": trusted["id"], "subject": K8S_SUBJECT, **credential}
    response = await client.post("/api/v1/clients", headers=acme_admin.headers, json={
        "name": "x", "allowed_scopes": ["a"], "token_endpoint_auth_methods": ["federated_jwt"],
        "federated_credentials": [entry]})
    assert response.status_code == 400, (reason, response.text)


async def test_a_client_cannot_name_another_tenants_trusted_issuer(client, acme_admin,
                                                                   globex_admin):
    foreign = (await client.post("/api/v1/trusted-issuers", headers=globex_admin.headers,
                                 json={"issuer": "https://cluster.example"})).json()
    response = await client.post("/api/v1/clients", headers=acme_admin.headers, json={
        "name": "x", "allowed_scopes": ["a"], "token_endpoint_auth_methods": ["federated_jwt"],
        "federated_credentials": [{"trusted_issuer_id": foreign["id"], "subject": "s"}]})
    assert response.status_code == 400
    assert "unknown trusted issuer" in response.json()["error_description"]


async def test_patching_a_client_to_federated_drops_its_secret_need(client, acme_admin,
                                                                    register):
    trusted = (await client.post("/api/v1/trusted-issuers", headers=acme_admin.headers,
                                 json={"issuer": "https://cluster.example"})).json()
    existing = await register(tenant="acme")
    credential = {"trusted_issuer_id": trusted["id"], "subject": K8S_SUBJECT,
                  "audience": "https://issuer.test/k8s"}
    response = await client.patch(f"/api/v1/clients/{existing.client_id}",
                                  headers=acme_admin.headers, json={
                                      "token_endpoint_auth_methods": ["federated_jwt"],
                                      "federated_credentials": [credential]})
    assert response.status_code == 200, response.text
    assert response.json()["federated_credentials"] == [credential]
    shown = await client.get(f"/api/v1/clients/{existing.client_id}",
                             headers=acme_admin.headers)
    assert shown.json()["federated_credentials"] == [credential]
    back = await client.patch(f"/api/v1/clients/{existing.client_id}",
                              headers=acme_admin.headers,
                              json={"token_endpoint_auth_methods": ["private_key_jwt"],
                                    "jwks_uri": "https://keys.example/jwks.json"})
    assert back.status_code == 200, back.text
    assert back.json()["federated_credentials"] == []


async def test_rfc8414_metadata_advertises_federated_jwt(client):
    metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
    for name in ("token", "introspection", "revocation"):
        assert "federated_jwt" in metadata[f"{name}_endpoint_auth_methods_supported"]


# README's three setups, run as written ------------------------------------------------------


def _readme_setups() -> dict[str, str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Secretless clients (federated credentials)\n", 1)[1]
    section = section.split("\n### ", 1)[0]
    return {part.split("\n", 1)[0].split(":")[0]: part
            for part in section.split("\n#### ")[1:]}


def _bodies(setup: str, trusted_issuer_id: str) -> list[dict[str, Any]]:
    """The JSON bodies of the setup's ``curl -d '…'`` lines, as the shell passes them."""
    bodies = []
    for line in setup.splitlines():
        line = line.strip()
        if line.startswith("-d '{"):
            text = line[len("-d '"):].rstrip("'").replace("'$TRUSTED_ISSUER_ID'",
                                                          trusted_issuer_id)
            bodies.append(json.loads(text))
    return bodies


def _token_form(setup: str, client_id: str, external_token: str) -> dict[str, str]:
    """The form of the setup's ``curl $ISSUER/token`` request, as curl sends it."""
    request = setup.split("curl -s $ISSUER/token", 1)[1].split("```", 1)[0]
    form: dict[str, str] = {}
    for option, value in re.findall(r"(-d|--data-urlencode) (\S+)", request):
        name, _, given = value.partition("=") if option == "-d" else value.partition("@")
        form[name] = given
    substitutions = {"$CLIENT_ID": client_id, "$ID_TOKEN": external_token,
                     "$SVID": external_token,
                     "/var/run/secrets/m2m-issuer/token": external_token}
    return {name: substitutions.get(value, value) for name, value in form.items()}


def _platform_audience(setup: str) -> str:
    """The audience the platform is told to put in the token (pod spec, job, agent)."""
    found = (re.search(r"audience: (\S+)", setup) or re.search(r"audience=(\S+?)\"", setup)
             or re.search(r"-audience (\S+)", setup))
    assert found, "the setup names the token's audience"
    return found[1]


@pytest.mark.parametrize("name", ["Kubernetes", "CI", "SPIFFE"])
async def test_readme_federated_setups_work_as_written(client, platform, fake_oidc, clock,
                                                       name):
    setup = _readme_setups()[name]
    trusted_body, _ = _bodies(setup, "-")
    external = fake_oidc.new_issuer(name.lower(), trusted_body["allowed_algorithms"][0])
    created = await client.post("/api/v1/trusted-issuers", headers=platform.headers,
                                json={**trusted_body, "issuer": external.url})
    assert created.status_code == 201, created.text
    _, client_body = _bodies(setup, created.json()["id"])
    registered = await client.post("/api/v1/clients", headers=platform.headers,
                                   json=client_body)
    assert registered.status_code == 201, registered.text
    assert registered.json()["client_secret"] is None
    [credential] = client_body["federated_credentials"]
    audience = _platform_audience(setup)
    assert audience == credential["audience"]  # what the platform is told matches the client
    subject = credential["subject"].rstrip("*") + ("x" if credential["subject"][-1] == "*"
                                                   else "")
    token = external.token(clock.now(), sub=subject, aud=audience, lifetime=600)
    response = await client.post("/token", data=_token_form(
        setup, registered.json()["client_id"], token))
    assert response.status_code == 200, response.text
