"""The NetSuite simulator enforces NetSuite's documented rules (the checklist in
``simulator.py``'s docstring, items 1-21): the client's own assertions pass it, and a
negative table proves it refuses what NetSuite refuses (or what we chose to refuse,
marked "ours" there). No database here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connectors.netsuite.assertion import create_assertion
from connectors.netsuite.keys import (
    CertificateSubject,
    PrivateKey,
    certificate_pem,
    generate_certificate,
    generate_key_pair,
)
from connectors.netsuite.token_client import JWT_BEARER
from tests.conftest import FakeClock
from tests.netsuite.conftest import ACCOUNT, SUITETALK, TOKEN_URL
from tests.netsuite.forge import certificate, jws
from tests.netsuite.simulator import INVALID_LOGIN, NetSuiteSimulator, UploadRejected

RESTLETS = "https://1234567-sb1.restlets.api.netsuite.com"
SUBJECT = CertificateSubject("m2m-issuer - Tenant 1234567_SB1")


@dataclass
class Mapping:
    """An integration with one uploaded certificate and the key behind it."""

    client_id: str
    certificate_id: str
    key: PrivateKey
    alg: str

    def claims(self, **changes: Any) -> dict[str, Any]:
        claims = {"iss": self.client_id, "scope": ["rest_webservices", "restlets"],
                  "aud": TOKEN_URL, "iat": NOW, "exp": NOW + 300}
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not DROP}

    def header(self, **changes: Any) -> dict[str, Any]:
        header = {"typ": "JWT", "alg": self.alg, "kid": self.certificate_id}
        header.update(changes)
        return {name: value for name, value in header.items() if value is not DROP}

    def assertion(self, header: dict[str, Any] | None = None,
                  claims: dict[str, Any] | None = None, **options: Any) -> str:
        return jws(self.key, header or self.header(), claims or self.claims(), **options)


DROP = object()
NOW = int(datetime.now(UTC).timestamp())


@pytest.fixture
def sim_clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def sim(sim_clock: FakeClock) -> NetSuiteSimulator:
    return NetSuiteSimulator(ACCOUNT, sim_clock)


@pytest.fixture
async def http(sim: NetSuiteSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as client:
        yield client


def mapping(sim: NetSuiteSimulator, alg: str = "ES256", key: PrivateKey | None = None,
            client_id: str | None = None) -> Mapping:
    key = key or generate_key_pair(alg)
    if client_id is None:
        client_id = sim.add_integration().client_id
    pem = certificate_pem(generate_certificate(key, alg,
                                               SUBJECT, datetime.fromtimestamp(NOW, UTC)))
    return Mapping(client_id, sim.upload(pem, client_id), key, alg)


@pytest.fixture
def p256(sim: NetSuiteSimulator) -> Mapping:
    return mapping(sim)


@pytest.fixture
def rsa_mapping(sim: NetSuiteSimulator, rsa_keys: list[PrivateKey]) -> Mapping:
    return mapping(sim, "PS256", rsa_keys[0])


def form(assertion: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion, **extra}


async def grant(http: httpx.AsyncClient, assertion: str, **extra: str) -> httpx.Response:
    return await http.post(TOKEN_URL, data=form(assertion, **extra))


# The client's own assertions pass -------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "PS256"])
async def test_the_clients_assertion_is_granted_and_the_answer_is_netsuites(
        http, sim, alg, rsa_keys):
    m = mapping(sim, alg, rsa_keys[1] if alg == "PS256" else None)
    assertion = create_assertion(m.key, algorithm=alg, kid=m.certificate_id,
                                 client_id=m.client_id, scopes=["rest_webservices"],
                                 audience=TOKEN_URL, now=NOW)
    response = await grant(http, assertion)
    assert response.status_code == 200, sim.rejections
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}  # 15: no refresh, no scope
    assert body["expires_in"] == "3600" and body["token_type"] == "bearer"
    assert sim.undocumented_claims == [] and sim.warnings == []  # 14: nothing to flag


async def test_expires_in_can_be_an_integer(http, sim, p256):
    sim.expires_in_as_string = False
    assert (await grant(http, p256.assertion())).json()["expires_in"] == 3600


# The negative table ------


def _rs256(m: Mapping) -> str:
    return m.assertion(m.header(alg="RS256"))


def _der(m: Mapping) -> str:
    return m.assertion(der=True)


NEGATIVE = {
    "RS256": (lambda m: _rs256(m), {}, 500, "server_error"),
    "missing kid": (lambda m: m.assertion(m.header(kid=DROP)), {}, 400, "invalid_grant"),
    "unknown kid": (lambda m: m.assertion(m.header(kid="Zm9vYmFy")), {}, 400, "invalid_grant"),
    "wrong aud": (lambda m: m.assertion(claims=m.claims(aud="https://evil.example/token")), {},
                  400, "invalid_grant"),
    "scope as a form field": (lambda m: m.assertion(), {"scope": "rest_webservices"}, 400,
                              "invalid_request"),
    "exp - iat > 3600": (lambda m: m.assertion(claims=m.claims(exp=NOW + 3601)), {}, 400,
                         "invalid_grant"),
    "DER ECDSA signature": (_der, {}, 400, "invalid_grant"),
    "client_id field": (lambda m: m.assertion(), {"client_id": "x"}, 400, "invalid_request"),
}


@pytest.mark.parametrize("case", list(NEGATIVE))
async def test_negative_table(http, sim, case, rsa_mapping, p256):
    make, extra, status, error = NEGATIVE[case]
    m = rsa_mapping if case == "RS256" else p256
    extra = {name: (m.client_id if value == "x" else value) for name, value in extra.items()}
    response = await grant(http, make(m), **extra)
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert sim.granted == 0 and len(sim.rejections) == 1


async def test_negative_table_a_2048_bit_key_cannot_be_uploaded(sim):
    client_id = sim.add_integration().client_id
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(UploadRejected, match="3072 or 4096"):
        sim.upload(certificate_pem(certificate(key)), client_id)
    assert sim.certificates == {}


# 1-4: endpoint, transport, form --------------------------------------------------------


async def test_s1_only_post_to_the_token_path_on_the_accounts_suitetalk_host(http, p256):
    assertion = p256.assertion()
    other_host = "https://7654321.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token"
    assert (await http.post(other_host, data=form(assertion))).status_code == 404
    assert (await http.post(f"{RESTLETS}/services/rest/auth/oauth2/v1/token",
                            data=form(assertion))).status_code == 404
    assert (await http.post(f"{SUITETALK}/services/rest/auth/oauth2/v2/token",
                            data=form(assertion))).status_code == 404
    assert (await http.get(TOKEN_URL)).status_code == 405
    # ours: the canonical lowercase host only (httpx would lowercase it, so set Host itself)
    upper = await http.post(TOKEN_URL, data=form(assertion),
                            headers={"Host": "1234567-SB1.suitetalk.api.netsuite.com"})
    assert upper.status_code == 404


FORM_CASES = {
    "json body": dict(json=True),
    "basic auth": dict(headers={"Authorization": "Basic eDp5"}),
    "client_secret": dict(extra={"client_secret": "s"}),
    "an extra field": dict(extra={"resource": "x"}),
    "wrong grant_type": dict(extra={"grant_type": "password"}),
    "wrong assertion type": dict(extra={"client_assertion_type": "urn:x"}),
    "empty assertion": dict(assertion=""),
    "missing assertion": dict(drop="client_assertion"),
    "repeated field": dict(repeat=True),
}


@pytest.mark.parametrize("case", list(FORM_CASES))
async def test_s2_s3_the_body_is_exactly_three_form_fields(http, sim, p256, case):
    options: dict[str, Any] = FORM_CASES[case]
    body = form(options.get("assertion", p256.assertion()))
    body.update(options.get("extra", {}))
    body.pop(options.get("drop", ""), None)
    if options.get("json"):
        response = await http.post(TOKEN_URL, json=body)
    elif options.get("repeat"):
        response = await http.post(TOKEN_URL, content=httpx.QueryParams(
            [*body.items(), ("grant_type", "client_credentials")]).__str__(),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        response = await http.post(TOKEN_URL, data=body, headers=options.get("headers"))
    assert (response.status_code, response.json()) == (400, {"error": "invalid_request"})
    assert sim.granted == 0


# 5-9: the JWT ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "none", "RS512", "EdDSA", None])
async def test_s6_any_other_alg_is_a_500_server_error(http, p256, alg):
    response = await grant(http, p256.assertion(p256.header(alg=alg), sign_as="ES256"))
    assert (response.status_code, response.json()) == (500, {"error": "server_error"})


@pytest.mark.parametrize("mangle", ["two segments", "padding", "typ", "not json"])
async def test_s5_three_unpadded_base64url_segments_and_typ_jwt(http, p256, mangle):
    assertion = p256.assertion()
    if mangle == "two segments":
        assertion = assertion.rsplit(".", 1)[0]
    elif mangle == "padding":
        assertion += "=="
    elif mangle == "typ":
        assertion = p256.assertion(p256.header(typ="at+jwt"))
    else:
        assertion = "bm90IGpzb24." + assertion.split(".", 1)[1]
    response = await grant(http, assertion)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


async def test_s7_kid_of_another_integration_or_revoked_or_expired_is_invalid_grant(
        http, sim, sim_clock, p256):
    other = mapping(sim)
    foreign = p256.assertion(p256.header(kid=other.certificate_id))
    assert (await grant(http, foreign)).json() == {"error": "invalid_grant"}
    sim.revoke(p256.certificate_id)
    assert (await grant(http, p256.assertion())).json() == {"error": "invalid_grant"}
    sim_clock.advance(730 * 86400)  # our certificates are valid for 729 days
    now = int(sim_clock.now())
    late = other.assertion(claims=other.claims(iat=now, exp=now + 60))
    assert (await grant(http, late)).json() == {"error": "invalid_grant"}
    assert sim.granted == 0


async def test_s8_alg_must_match_the_certificates_key(http, sim, rsa_mapping):
    p384 = mapping(sim, "ES384")
    p256_as_384 = mapping(sim, "ES256")
    cases = [
        p256_as_384.assertion(p256_as_384.header(alg="ES384"), sign_as="ES256"),
        jws(generate_key_pair("ES384"), p384.header(kid=rsa_mapping.certificate_id),
            rsa_mapping.claims(), sign_as="ES384"),
        jws(rsa_mapping.key, rsa_mapping.header(kid=p384.certificate_id), p384.claims()),
    ]
    for assertion in cases:
        assert (await grant(http, assertion)).json() == {"error": "invalid_grant"}


async def test_s9_pss_needs_a_salt_as_long_as_the_hash(http, rsa_mapping):
    assert (await grant(http, rsa_mapping.assertion(max_salt=True))).status_code == 400
    assert (await grant(http, rsa_mapping.assertion())).status_code == 200


async def test_s9_a_signature_by_another_key_is_invalid_grant(http, p256, sim):
    forged = jws(generate_key_pair("ES256"), p256.header(), p256.claims())
    assert (await grant(http, forged)).json() == {"error": "invalid_grant"}
    assert sim.rejections[-1].reason == "InvalidSignature"


# 10-14: claims ---------------------------------------------------------------------------


async def test_s10_unknown_or_blocked_integration_is_401_invalid_client(http, sim, p256):
    unknown = p256.assertion(claims=p256.claims(iss="0" * 64))
    assert ((await grant(http, unknown)).status_code, sim.rejections[-1].error) == (
        401, "invalid_client")
    sim.integrations[p256.client_id].blocked = True
    response = await grant(http, p256.assertion())
    assert (response.status_code, response.json()) == (401, {"error": "invalid_client"})


async def test_s11_aud_is_one_string_not_an_array(http, p256):
    response = await grant(http, p256.assertion(claims=p256.claims(aud=[TOKEN_URL])))
    assert response.json() == {"error": "invalid_grant"}


@pytest.mark.parametrize(("scope", "ok"), [
    (["rest_webservices"], True), ("rest_webservices,restlets", True),
    ("restlets , rest_webservices", True), ("rest_webservices restlets", False),
    ([], False), (["restlets", "restlets"], False), (["mcp", "restlets"], False),
    (["suite_analytics"], False),  # not enabled on the integration record
    (["orders:read"], False), ("", False), (None, False),
])
async def test_s12_scope_is_an_array_or_comma_separated_and_a_subset(http, sim, p256, scope, ok):
    response = await grant(http, p256.assertion(claims=p256.claims(scope=scope)))
    assert response.status_code == (200 if ok else 400)
    if not ok:
        assert sim.rejections[-1].reason == "ScopeMismatched"


@pytest.mark.parametrize(("iat", "exp", "ok"), [
    (NOW, NOW + 3600, True), (NOW, NOW + 3601, False), (NOW, NOW, False),
    (str(NOW), NOW + 300, False), (NOW + 0.5, NOW + 300, False), (NOW - 4000, NOW - 400, False),
    (NOW + 120, NOW + 400, False), (NOW + 30, NOW + 330, True), (True, NOW + 300, False),
], ids=["lifetime-3600", "lifetime-3601", "lifetime-0", "iat-string", "iat-fraction", "expired",
        "iat-120s-ahead", "iat-30s-ahead", "iat-boolean"])  # ids without the collection time
async def test_s13_iat_and_exp_are_integers_within_3600_and_current(http, p256, iat, exp, ok):
    response = await grant(http, p256.assertion(claims=p256.claims(iat=iat, exp=exp)))
    assert response.status_code == (200 if ok else 400)


async def test_s13_a_lifetime_above_900_seconds_is_warned_about(http, sim, p256):
    assert (await grant(http, p256.assertion(claims=p256.claims(exp=NOW + 901)))).status_code == 200
    assert sim.warnings == ["assertion lifetime above 900 s"]


async def test_s14_undocumented_claims_are_accepted_but_flagged(http, sim, p256):
    claims = p256.claims(jti="abc", nbf=NOW, sub="x")
    assert (await grant(http, p256.assertion(claims=claims))).status_code == 200
    assert sim.undocumented_claims == ["jti", "nbf", "sub"]


# 16-17: resource endpoints ---------------------------------------------------------------


async def _token(http: httpx.AsyncClient, m: Mapping, scope: list[str] | None = None) -> str:
    response = await grant(http, m.assertion(claims=m.claims(
        scope=scope or ["rest_webservices", "restlets"])))
    assert response.status_code == 200
    token: str = response.json()["access_token"]
    return token


async def test_s16_resources_take_only_bearer_tokens_with_the_right_scope(http, p256):
    rest = f"{SUITETALK}/services/rest/record/v1/customer/1"
    restlet = f"{RESTLETS}/app/site/hosting/restlet.nl?script=1&deploy=1"
    rest_only = await _token(http, p256, ["rest_webservices"])
    restlets_only = await _token(http, p256, ["restlets"])
    for url, token, status in [(rest, rest_only, 200), (restlet, rest_only, 401),
                               (restlet, restlets_only, 200), (rest, restlets_only, 401),
                               (rest, "unknown", 401)]:
        response = await http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == status, url
        if status == 401:
            assert response.json() == INVALID_LOGIN
    basic = await http.get(rest, headers={"Authorization": f"Basic {rest_only}"})
    assert basic.status_code == 401


async def test_s17_tokens_live_exactly_3600_seconds(http, sim_clock, p256):
    token = await _token(http, p256)
    url = f"{SUITETALK}/services/rest/record/v1/customer/1"
    sim_clock.advance(3599)
    assert (await http.get(url, headers={"Authorization": f"Bearer {token}"})).status_code == 200
    sim_clock.advance(1)
    assert (await http.get(url, headers={"Authorization": f"Bearer {token}"})).status_code == 401


# 18-20: certificates ---------------------------------------------------------------------


async def test_s18_upload_takes_pem_or_der_and_only_netsuites_key_types(sim, rsa_keys):
    client_id = sim.add_integration().client_id
    der = certificate(generate_key_pair("ES256")).public_bytes(serialization.Encoding.DER)
    assert sim.upload(der, client_id)
    assert sim.upload(certificate_pem(certificate(rsa_keys[2])), client_id)
    with pytest.raises(UploadRejected, match="curve"):
        sim.upload(certificate_pem(certificate(ec.generate_private_key(ec.SECP256K1()))),
                   client_id)
    with pytest.raises(UploadRejected, match=r"X\.509"):
        sim.upload("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", client_id)


async def test_s18_validity_is_clamped_to_two_years_and_pkcs1_self_signatures_warned(
        sim, rsa_keys):
    client_id = sim.add_integration().client_id
    long_lived = certificate(generate_key_pair("ES256"), days=1000)
    certificate_id = sim.upload(certificate_pem(long_lived), client_id)
    stored = sim.certificates[certificate_id]
    assert stored.not_after - stored.not_before == timedelta(days=730).total_seconds()
    sim.upload(certificate_pem(certificate(rsa_keys[1], pss=False)), client_id)
    assert sim.warnings == ["RSA certificate not self-signed with RSA-PSS"]


async def test_s18_a_certificate_maps_to_one_integration_entity_and_role(sim):
    pem = certificate_pem(certificate(generate_key_pair("ES256")))
    sim.upload(pem, sim.add_integration().client_id)
    with pytest.raises(UploadRejected, match="already mapped"):
        sim.upload(pem, sim.add_integration().client_id, role=4)


async def test_s19_five_active_certificates_per_integration_all_working(http, sim):
    client_id = sim.add_integration().client_id
    mappings = [mapping(sim, client_id=client_id) for _ in range(5)]
    with pytest.raises(UploadRejected, match="at most 5"):
        mapping(sim, client_id=client_id)
    for m in mappings:
        assert (await grant(http, m.assertion())).status_code == 200
    sim.revoke(mappings[0].certificate_id)
    assert (await grant(http, mappings[0].assertion())).status_code == 400
    assert (await grant(http, mappings[1].assertion())).status_code == 200
    assert mapping(sim, client_id=client_id).certificate_id  # a revoked one frees a place


@pytest.mark.parametrize("keep", [True, False])
async def test_s20_revocation_stops_new_grants_at_once_and_old_tokens_keep_or_die(
        http, sim, p256, keep):
    sim.keep_tokens_on_revoke = keep
    token = await _token(http, p256)
    sim.revoke(p256.certificate_id)
    assert (await grant(http, p256.assertion())).status_code == 400
    response = await http.get(f"{SUITETALK}/services/rest/record/v1/customer/1",
                              headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == (200 if keep else 401)
