"""Key pairs, certificates and assertions (RFC 7518 §3.3-3.5); account ids
and URLs (the simulator's checklist, item 25); the package's public face."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

import connectors.netsuite as package
from connectors.netsuite import (
    CertificateSubject,
    ConnectorSpec,
    DisallowedUrl,
    InvalidAccountId,
    check_account_id,
    create_assertion,
    generate_certificate,
    generate_key_pair,
)
from connectors.netsuite.accounts import canonical_host_label, check_url, default_token_url
from tests.conftest import store_independent
from tests.netsuite.conftest import ACTOR

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SUBJECT = CertificateSubject.for_account("Acme iPaaS", "1234567_SB1", "Acme Inc", "DE")


def test_rsa_keys_are_4096_bits_and_ec_keys_on_their_curves(rsa_keys):
    assert isinstance(rsa_keys[0], rsa.RSAPrivateKey) and rsa_keys[0].key_size == 4096
    for alg, curve in (("ES256", "secp256r1"), ("ES384", "secp384r1"), ("ES512", "secp521r1")):
        key = generate_key_pair(alg)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == curve
    with pytest.raises(ValueError, match="unsupported algorithm"):
        generate_key_pair("RS256")


def test_certificate_subject_validity_and_pss_self_signature(rsa_keys):
    certificate = generate_certificate(rsa_keys[0], "PS256", SUBJECT, NOW)
    assert certificate.subject == certificate.issuer  # self-signed
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "Acme iPaaS - Tenant 1234567_SB1"
    assert certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "Acme Inc"
    assert certificate.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
    validity = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert validity == timedelta(days=729)
    assert certificate.not_valid_before_utc <= NOW
    assert isinstance(certificate.signature_algorithm_parameters, padding.PSS)
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    certificate.verify_directly_issued_by(certificate)
    with pytest.raises(ValueError, match="1 to 729 days"):
        generate_certificate(rsa_keys[0], "PS256", SUBJECT, NOW, days=730)


def test_the_default_subject_names_the_platform():
    subject = CertificateSubject.for_account("m2m-issuer", "TSTDRV123")
    certificate = generate_certificate(generate_key_pair("ES256"), "ES256", subject, NOW)
    assert certificate.subject.rfc4514_string() == "O=m2m-issuer,CN=m2m-issuer - Tenant TSTDRV123"


def _parts(assertion: str) -> tuple[dict, dict, bytes, bytes]:
    def decode(segment: str) -> bytes:
        assert "=" not in segment
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))

    header, claims, signature = assertion.split(".")
    return (json.loads(decode(header)), json.loads(decode(claims)),
            f"{header}.{claims}".encode(), decode(signature))


def test_ps256_assertions_use_a_salt_as_long_as_the_hash(rsa_keys):
    key = rsa_keys[0]
    assertion = create_assertion(key, algorithm="PS256", kid="cert-1", client_id="c",
                                 scopes=["restlets"], audience="https://a", now=1000)
    header, claims, message, signature = _parts(assertion)
    assert header == {"typ": "JWT", "alg": "PS256", "kid": "cert-1"}
    assert claims == {"iss": "c", "scope": ["restlets"], "aud": "https://a", "iat": 1000,
                      "exp": 1300}
    strict = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    key.public_key().verify(signature, message, strict, hashes.SHA256())
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, message, padding.PSS(
            mgf=padding.MGF1(hashes.SHA256()), salt_length=64), hashes.SHA256())


@pytest.mark.parametrize(("alg", "size"), [("ES256", 64), ("ES384", 96), ("ES512", 132)])
def test_ecdsa_assertions_are_raw_r_s_of_the_curves_size(alg, size):
    key = generate_key_pair(alg)
    _, _, _, signature = _parts(create_assertion(key, algorithm=alg, kid="k", client_id="c",
                                                 scopes=["restlets"], audience="a", now=1))
    assert len(signature) == size


@pytest.mark.parametrize(("options", "message"), [
    ({"algorithm": "RS256"}, "NetSuite takes"), ({"lifetime": 3601}, "1 to 3600"),
    ({"lifetime": 0}, "1 to 3600"), ({"kid": ""}, "Certificate ID"),
])
def test_assertions_refuse_what_netsuite_refuses(options, message):
    arguments = {"algorithm": "ES256", "kid": "k", "client_id": "c", "scopes": ["restlets"],
                 "audience": "a", "now": 1, **options}
    with pytest.raises(ValueError, match=message):
        create_assertion(generate_key_pair("ES256"), **arguments)


@pytest.mark.parametrize(("account_id", "label"), [
    ("1234567", "1234567"), ("1234567_SB1", "1234567-sb1"), ("TSTDRV123", "tstdrv123"),
    ("1234567_RP", "1234567-rp")])
def test_account_ids_become_the_canonical_lowercase_host(account_id, label):
    assert canonical_host_label(account_id) == label
    assert default_token_url(account_id) == (
        f"https://{label}.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token")


@pytest.mark.parametrize("account_id", ["1234567.evil.com", "a/b", "a@b", "a:b", "a?b", "a#b",
                                        "a b", "a\tb", "a\nb", "a_b_c", "_a", "a_", "",
                                        "1" * 65, "\uff41", "1234567\n"])
def test_account_ids_that_could_inject_into_a_hostname_are_refused(account_id):
    with pytest.raises(InvalidAccountId):
        check_account_id(account_id)


@store_independent
async def test_injection_is_refused_before_any_network_call(make_service, tenant_id):
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        service = make_service(http=http)
        for account_id in ("1234567.evil.com", "a/b", "a@b"):
            with pytest.raises(InvalidAccountId):
                await service.create(ConnectorSpec(
                    tenant_id=tenant_id, name="n", account_id=account_id, client_id="c",
                    scopes=["restlets"]), ACTOR)
    assert sent == []


@pytest.mark.parametrize("url", [
    "https://1234567.suitetalk.api.netsuite.com/x", "https://system.netsuite.com",
    "http://127.0.0.1:8080/x", "http://localhost/x"])
def test_netsuite_hosts_and_allow_listed_ones_are_accepted(url):
    assert check_url(url, ["127.0.0.1:8080", "localhost"]) == url


@pytest.mark.parametrize("url", [
    "https://netsuite.com.evil.example/x", "https://evilnetsuite.com/x", "http://a.netsuite.com",
    "https://a.netsuite.com:444/x", "https://x@a.netsuite.com/", "https://a.netsuite.com/?q=1",
    "ftp://a.netsuite.com/", "https://a_b.netsuite.com/", "http://127.0.0.1:8081/x",
    "https://[::1]:99999/"])
def test_other_urls_are_refused(url):
    with pytest.raises(DisallowedUrl):
        check_url(url, ["127.0.0.1:8080"])


def test_the_package_exports_a_sorted_public_api():
    names = package.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(package, name) is not None
    constants = [name for name in names if name.isupper()]
    assert names == constants + sorted(set(names) - set(constants), key=str)
