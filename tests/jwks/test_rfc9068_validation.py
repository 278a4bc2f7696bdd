"""RFC 9068 §4 token validation by JWKSVerifier, against a foreign issuer's keys: what is
accepted, and a negative table where every failure has its own typed error."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from joserfc.jwk import OctKey

from jwks.verifier import (
    BadSignature,
    DisallowedAlgorithm,
    Expired,
    InvalidClaim,
    InvalidTokenError,
    JWKSVerifier,
    KeySetUnavailable,
    MalformedToken,
    MissingClaim,
    NotYetValid,
    TokenError,
    UnknownKey,
    VerifiedToken,
    WrongAudience,
    WrongIssuer,
    WrongType,
)
from tests.jwks.conftest import AUDIENCE, DROP, IDP, FakeIssuer, b64, b64json, sign

# Accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize("key_name", ["rsa", "ec", "okp"])
async def test_tokens_signed_with_each_default_algorithm_verify(idp: FakeIssuer, keys, key_name):
    key = getattr(keys, key_name)
    result = await idp.verifier().verify(idp.token(key))
    assert result == VerifiedToken(claims=idp.claims(), kid=key.kid, client_id="client-1",
                                   tenant_id="tenant-1",
                                   scopes=frozenset({"orders:read", "orders:write"}))


async def test_verified_claims_are_read_only(idp: FakeIssuer, keys):
    result = await idp.verifier().verify(idp.token(keys.rsa))
    with pytest.raises(TypeError):
        result.claims["scope"] = "admin"  # type: ignore[index]


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT", "Application/At+JWT"])
async def test_s4_typ_at_jwt_is_accepted_with_or_without_application_prefix(idp, keys, typ):
    assert await idp.verifier().verify(idp.token(keys.rsa, header={"typ": typ}))


async def test_s4_aud_list_containing_the_audience_is_accepted(idp: FakeIssuer, keys):
    token = idp.token(keys.rsa, aud=["https://other.example", AUDIENCE])
    assert (await idp.verifier().verify(token)).claims["aud"][1] == AUDIENCE


async def test_s4_any_of_several_expected_audiences_is_accepted(idp: FakeIssuer, keys):
    verifier = idp.verifier(audience=["https://legacy.example", AUDIENCE])
    assert await verifier.verify(idp.token(keys.rsa))


async def test_scope_is_split_on_spaces_and_may_be_absent(idp: FakeIssuer, keys):
    verifier = idp.verifier()
    spaced = await verifier.verify(idp.token(keys.rsa, scope=" a  b c "))
    absent = await verifier.verify(idp.token(keys.rsa, scope=DROP, tenant_id=DROP))
    assert spaced.scopes == {"a", "b", "c"}
    assert absent.scopes == frozenset() and absent.tenant_id is None


async def test_jwk_alg_parameter_pins_the_algorithm_of_its_key(clock, keys):
    from joserfc.jwk import RSAKey

    pinned = RSAKey.import_key(keys.rsa.as_dict(private=True) | {"alg": "PS256"})
    issuer = FakeIssuer(clock, [pinned])
    try:
        verifier = issuer.verifier(algorithms=("RS256", "PS256"))
        assert await verifier.verify(issuer.token(pinned, header={"alg": "PS256"}))
        with pytest.raises(DisallowedAlgorithm):  # RFC 7517 §4.4: the key is for PS256 only
            await verifier.verify(issuer.token(pinned, header={"alg": "RS256"}))
    finally:
        await issuer.aclose()


# Time claims with leeway (RFC 7519 §4.1.4, §4.1.5, §4.1.6) -----------------------------


async def test_exp_is_accepted_until_leeway_then_expired(idp: FakeIssuer, keys, clock):
    verifier = idp.verifier(leeway=30)
    token = idp.token(keys.rsa, exp=int(clock.now()) + 60)
    clock.advance(89)
    assert await verifier.verify(token)
    clock.advance(1)  # now == exp + leeway: "on or after" exp is rejected
    with pytest.raises(Expired):
        await verifier.verify(token)


async def test_nbf_within_leeway_is_accepted_beyond_it_not_yet_valid(idp, keys, clock):
    verifier = idp.verifier(leeway=30)
    now = int(clock.now())
    assert await verifier.verify(idp.token(keys.rsa, nbf=now + 30))
    with pytest.raises(NotYetValid):
        await verifier.verify(idp.token(keys.rsa, nbf=now + 31))


async def test_iat_far_in_the_future_is_not_yet_valid(idp: FakeIssuer, keys, clock):
    token = idp.token(keys.rsa, iat=int(clock.now()) + 3600, nbf=DROP)
    with pytest.raises(NotYetValid, match="iat"):
        await idp.verifier().verify(token)


# The negative table --------------------------------------------------------------------


def _hs256_with_public_key(idp: FakeIssuer, keys) -> str:
    """The classic confusion attack: HMAC-SHA256 keyed with the RSA public key's PEM."""
    secret = keys.rsa.as_pem(private=False)
    signing_input = (f"{b64json({'alg': 'HS256', 'kid': keys.rsa.kid, 'typ': 'at+jwt'})}."
                     f"{b64json(idp.claims())}")
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _alg_none(idp: FakeIssuer, keys) -> str:
    header = {"alg": "none", "kid": keys.rsa.kid, "typ": "at+jwt"}
    return f"{b64json(header)}.{b64json(idp.claims())}."


def _tampered_payload(idp: FakeIssuer, keys) -> str:
    header, _, signature = idp.token(keys.rsa).split(".")
    return f"{header}.{b64json(idp.claims(scope='admin'))}.{signature}"


def _tampered_signature(idp: FakeIssuer, keys) -> str:
    header, payload, signature = idp.token(keys.rsa).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{payload}.{flipped}"


NEGATIVE = {
    # RFC 9068 §4: typ is required and must be at+jwt.
    "missing typ": (WrongType, lambda idp, k: idp.token(k.rsa, header={"typ": DROP})),
    "typ JWT": (WrongType, lambda idp, k: idp.token(k.rsa, header={"typ": "JWT"})),
    "typ not a string": (WrongType, lambda idp, k: idp.token(k.rsa, header={"typ": 1})),
    # RFC 8725 §3.1: the allow-list, and the alg must fit the key.
    "alg none": (DisallowedAlgorithm, _alg_none),
    "HS256 keyed with the public key": (DisallowedAlgorithm, _hs256_with_public_key),
    "RS256 header naming an EC key": (
        DisallowedAlgorithm,
        lambda idp, k: sign(k.rsa, {"alg": "RS256", "kid": k.ec.kid, "typ": "at+jwt"},
                            json.dumps(idp.claims()).encode())),
    "ES256 header naming an RSA key": (
        DisallowedAlgorithm,
        lambda idp, k: sign(k.ec, {"alg": "ES256", "kid": k.rsa.kid, "typ": "at+jwt"},
                            json.dumps(idp.claims()).encode())),
    "alg missing": (DisallowedAlgorithm, lambda idp, k: f"{b64json({'typ': 'at+jwt'})}.e30.x"),
    # Signature.
    "tampered payload": (BadSignature, _tampered_payload),
    "tampered signature": (BadSignature, _tampered_signature),
    "attacker key claiming a published kid": (
        BadSignature, lambda idp, k: idp.token(k.attacker, header={"kid": k.rsa.kid})),
    "unpublished kid": (UnknownKey, lambda idp, k: idp.token(k.attacker)),
    # RFC 8725 §3.10: keys named by the token itself (jku, jwk) are never fetched or used.
    "attacker key named by jku": (
        UnknownKey, lambda idp, k: idp.token(k.attacker, header={"jku": "https://evil.example/"})),
    "no kid": (UnknownKey, lambda idp, k: idp.token(k.rsa, header={"kid": DROP})),
    # Claims.
    "wrong iss": (WrongIssuer, lambda idp, k: idp.token(k.rsa, iss="https://evil.example")),
    "iss with a trailing slash": (WrongIssuer, lambda idp, k: idp.token(k.rsa, iss=IDP + "/")),
    "wrong aud": (WrongAudience, lambda idp, k: idp.token(k.rsa, aud="https://other.example")),
    "aud list without us": (
        WrongAudience, lambda idp, k: idp.token(k.rsa, aud=["https://a.example", "b"])),
    "aud not a string": (InvalidClaim, lambda idp, k: idp.token(k.rsa, aud=7)),
    "exp a string": (InvalidClaim, lambda idp, k: idp.token(k.rsa, exp="tomorrow")),
    "exp a boolean": (InvalidClaim, lambda idp, k: idp.token(k.rsa, exp=True)),
    "iat a string": (InvalidClaim, lambda idp, k: idp.token(k.rsa, iat="now")),
    "sub empty": (InvalidClaim, lambda idp, k: idp.token(k.rsa, sub="")),
    "client_id a number": (InvalidClaim, lambda idp, k: idp.token(k.rsa, client_id=42)),
    "scope a list": (InvalidClaim, lambda idp, k: idp.token(k.rsa, scope=["orders:read"])),
    "tenant_id a number": (InvalidClaim, lambda idp, k: idp.token(k.rsa, tenant_id=1)),
    "expired long ago": (Expired, lambda idp, k: idp.token(k.rsa, exp=1_000_000)),
    # Not a JWS at all.
    "empty string": (MalformedToken, lambda idp, k: ""),
    "one part": (MalformedToken, lambda idp, k: "abc"),
    "two parts": (MalformedToken, lambda idp, k: "abc.def"),
    "five parts (a JWE)": (MalformedToken, lambda idp, k: "a.b.c.d.e"),
    "header not base64 JSON": (MalformedToken, lambda idp, k: "!!!.e30.x"),
    "header a JSON array": (MalformedToken, lambda idp, k: f"{b64json([1])}.e30.x"),
    "header too long": (
        MalformedToken, lambda idp, k: idp.token(k.rsa, header={"x5u": "https://x/" * 60})),
    "payload not JSON": (
        MalformedToken,
        lambda idp, k: sign(k.rsa, {"alg": "RS256", "kid": k.rsa.kid, "typ": "at+jwt"},
                            b"not json")),
    "payload a JSON array": (
        MalformedToken,
        lambda idp, k: sign(k.rsa, {"alg": "RS256", "kid": k.rsa.kid, "typ": "at+jwt"},
                            b"[1, 2]")),
    "unknown critical header": (
        MalformedToken,
        lambda idp, k: idp.token(k.rsa, header={"crit": ["urn:x"], "urn:x": True})),
}


@pytest.mark.parametrize(("expected", "make"), NEGATIVE.values(), ids=NEGATIVE.keys())
async def test_negative_table_fails_closed_with_a_typed_error(idp, keys, expected, make):
    with pytest.raises(expected) as raised:
        await idp.verifier().verify(make(idp, keys))
    assert isinstance(raised.value, InvalidTokenError)
    assert raised.value.description == expected.description


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"])
async def test_s2_2_each_required_claim_missing_is_missing_claim(idp, keys, claim):
    with pytest.raises(MissingClaim) as raised:
        await idp.verifier().verify(idp.token(keys.rsa, **{claim: DROP}))
    assert raised.value.claim == claim


async def test_nbf_may_be_absent(idp: FakeIssuer, keys):
    assert await idp.verifier().verify(idp.token(keys.rsa, nbf=DROP))


async def test_header_checks_fail_before_any_key_fetch(idp: FakeIssuer, keys):
    verifier = idp.verifier()
    for token in (_alg_none(idp, keys), _hs256_with_public_key(idp, keys),
                  idp.token(keys.rsa, header={"typ": DROP}), "abc"):
        with pytest.raises(InvalidTokenError):
            await verifier.verify(token)
    assert sum(idp.requests.values()) == 0


async def test_algorithm_outside_the_configured_allow_list_is_disallowed(idp, keys):
    with pytest.raises(DisallowedAlgorithm):
        await idp.verifier(algorithms=("RS256",)).verify(idp.token(keys.ec))


async def test_symmetric_key_published_in_the_jwks_is_never_used(clock, keys):
    """Even an oct key in the JWK Set is ignored: HS256 cannot be switched on."""
    oct_key = OctKey.import_key({"kty": "oct", "kid": "shared", "k": b64(b"s" * 32)})
    issuer = FakeIssuer(clock, [keys.rsa, oct_key])
    try:
        token = sign(oct_key, {"alg": "HS256", "kid": "shared", "typ": "at+jwt"},
                     json.dumps(issuer.claims()).encode())
        with pytest.raises(DisallowedAlgorithm):
            await issuer.verifier().verify(token)
        with pytest.raises(ValueError, match="HS256"):
            issuer.verifier(algorithms=("RS256", "HS256"))
    finally:
        await issuer.aclose()


@pytest.mark.parametrize("algorithms", [("none",), ("HS256",), ("RS256", "HS512"), ("XYZ",), ()])
def test_constructor_refuses_unsafe_or_unknown_algorithms(algorithms):
    with pytest.raises(ValueError):
        JWKSVerifier(IDP, AUDIENCE, algorithms=algorithms)


@pytest.mark.parametrize("audience", ["", [], [""]])
def test_constructor_refuses_an_empty_audience(audience):
    with pytest.raises(ValueError):
        JWKSVerifier(IDP, audience)


async def test_encryption_keys_and_small_rsa_keys_in_the_jwks_are_skipped(clock, keys):
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc.jwk import RSAKey

    enc = RSAKey.import_key(keys.rsa_next.as_dict(private=False) | {"use": "enc"})
    weak = rsa.generate_private_key(65537, 1024)  # noqa: S505 -- the verifier must skip it
    numbers = weak.public_key().public_numbers()
    small = {"kty": "RSA", "kid": "small", "e": b64(numbers.e.to_bytes(3, "big")),
             "n": b64(numbers.n.to_bytes(128, "big"))}
    issuer = FakeIssuer(clock, [keys.rsa, enc])
    issuer.raw_keys.append(small)
    try:
        verifier = issuer.verifier()
        assert await verifier.verify(issuer.token(keys.rsa))
        for kid_source in (keys.rsa_next, "small"):  # enc-only; RSA-1024 (RFC 7518 §3.3)
            kid = kid_source if isinstance(kid_source, str) else kid_source.kid
            with pytest.raises(UnknownKey):
                await verifier.verify(issuer.token(keys.rsa, header={"kid": kid}))
    finally:
        await issuer.aclose()


def test_error_hierarchy_separates_bad_tokens_from_unavailable_keys():
    invalid = [BadSignature, DisallowedAlgorithm, Expired, InvalidClaim, MalformedToken,
               MissingClaim, NotYetValid, UnknownKey, WrongAudience, WrongIssuer, WrongType]
    assert all(issubclass(error, InvalidTokenError) for error in invalid)
    assert issubclass(InvalidTokenError, TokenError)
    assert issubclass(KeySetUnavailable, TokenError)
    assert not issubclass(KeySetUnavailable, InvalidTokenError)
    assert len({error.description for error in invalid}) == len(invalid)
