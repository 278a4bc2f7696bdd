"""SigningKey.sign builds the compact JWS itself (the protected header encoded once per
key): its tokens must be the very bytes joserfc's ``jws.serialize_compact`` makes, and
verify with joserfc (RFC 7515 §7.1, RFC 9068 §2.1)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from issuer.keys.ring import SigningKey, generate_private_key

CLAIMS: dict[str, Any] = {
    "iss": "https://issuer.test", "sub": "m2m_client", "aud": ["https://api.test", "x"],
    "exp": 1_900_000_600, "iat": 1_900_000_000, "nbf": 1_900_000_000, "jti": "abc",
    "client_id": "m2m_client", "scope": "orders:read orders:write", "tenant_id": "t-1",
    "mode": "m2m", "note": "caf\u00e9 \u2713",  # non-ASCII is escaped, as json.dumps does
}


def _key(alg: str) -> SigningKey:
    private = generate_private_key(alg)
    assert private.kid is not None
    return SigningKey(kid=private.kid, alg=alg, state="active",
                      public_jwk=private.as_dict(private=False), private=private)


def _joserfc(key: SigningKey, claims: dict[str, Any], typ: str) -> str:
    import json

    header = {"alg": key.alg, "kid": key.kid, "typ": typ}
    payload = json.dumps(claims, separators=(",", ":")).encode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jws.serialize_compact(header, payload, key.private, algorithms=[key.alg])


@pytest.mark.parametrize("typ", ["at+jwt", "JWT"])
def test_rs256_token_is_byte_for_byte_joserfcs_compact_serialization(typ: str) -> None:
    # RSASSA-PKCS1-v1_5 is deterministic: the whole token, signature included, matches.
    key = _key("RS256")
    assert key.sign(CLAIMS, typ=typ) == _joserfc(key, CLAIMS, typ)
    assert key.sign(CLAIMS, typ=typ) == _joserfc(key, CLAIMS, typ)  # the cached header too


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_other_algorithms_sign_the_same_header_and_payload_and_verify(alg: str) -> None:
    key = _key(alg)
    token = key.sign(CLAIMS)
    # ECDSA signatures are randomised: header and payload segments match exactly,
    # and the signature verifies with the public key.
    assert token.rsplit(".", 1)[0] == _joserfc(key, CLAIMS, "at+jwt").rsplit(".", 1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoded = jwt.decode(token, KeySet.import_key_set({"keys": [key.public_jwk]}),
                             algorithms=[alg])
    assert decoded.header == {"alg": alg, "kid": key.kid, "typ": "at+jwt"}
    assert decoded.claims == CLAIMS


def test_each_key_signs_with_its_own_kid() -> None:
    first, second = _key("RS256"), _key("RS256")
    first.sign(CLAIMS)  # the first key's header is cached now
    assert jws.extract_compact(second.sign(CLAIMS).encode()).headers()["kid"] == second.kid
    assert jws.extract_compact(first.sign(CLAIMS).encode()).headers()["kid"] == first.kid
