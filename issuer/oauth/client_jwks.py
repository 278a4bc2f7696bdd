"""A ``private_key_jwt`` client's keys at registration: RFC 7591 §2 ``jwks`` (the JWK Set
by value) or ``jwks_uri`` (by reference) -- "These two parameters MUST NOT both be
present in the same request or response."

A registered JWK Set holds public signature keys only: a member carrying private key
material (``d``, ``p``, ``q``, ``dp``, ``dq``, ``qi``, ``oth``) or a symmetric key
(``oct``, ``k``) is refused, never stripped -- someone pasted a private key where only
its public half belongs, and should know. RSA keys have 2048 bits or more (RFC 7518
§3.3); ``alg``, when a member names one, must be an asymmetric algorithm that fits it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from jwks.sources import import_verification_key, key_fits

MAX_KEYS = 20
MAX_JWKS_BYTES = 64 * 1024
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def check_client_jwks(document: object) -> dict[str, Any]:
    """The JWK Set to store; ValueError (a message for the caller) when unusable."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('jwks must be a JWK Set: {"keys": [...]}')
    members = document["keys"]
    if not 1 <= len(members) <= MAX_KEYS:
        raise ValueError(f"jwks holds 1 to {MAX_KEYS} keys")
    if len(json.dumps(document)) > MAX_JWKS_BYTES:
        raise ValueError(f"jwks is larger than {MAX_JWKS_BYTES} bytes")
    kids: set[str] = set()
    for number, member in enumerate(members, 1):
        if not isinstance(member, dict):
            raise ValueError(f"jwks key {number} is not a JSON object")
        private = sorted(_PRIVATE_MEMBERS & set(member))
        if private or member.get("kty") == "oct":
            raise ValueError(f"jwks key {number} holds private or symmetric key material "
                             f"({', '.join(private) or 'kty oct'}): register public keys only")
        key = import_verification_key(member)
        if key is None:
            raise ValueError(f"jwks key {number} is not a public signature key (RSA of 2048 "
                             "bits or more, EC or OKP, use sig)")
        alg = member.get("alg")
        if alg is not None and not (isinstance(alg, str) and key_fits(key, alg)):
            raise ValueError(f"jwks key {number} names alg {alg!r}, which does not fit it")
        kid = member.get("kid")
        if kid is not None:
            if not isinstance(kid, str) or not kid or kid in kids:
                raise ValueError(f"jwks key {number} has an empty or repeated kid")
            kids.add(kid)
    return {"keys": [dict(member) for member in members]}


def check_jwks_uri(uri: object) -> str:
    """An absolute https URL without credentials or fragment; ValueError otherwise."""
    if not isinstance(uri, str) or not uri or len(uri) > 2000:
        raise ValueError("jwks_uri must be an https URL of at most 2000 characters")
    try:
        parts = urlsplit(uri)
        hostname = parts.hostname
    except ValueError:
        raise ValueError("jwks_uri is not a valid URL") from None
    if parts.scheme != "https" or not hostname:
        raise ValueError("jwks_uri must be an absolute https URL")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError("jwks_uri must not carry credentials or a fragment")
    if any(c.isspace() or ord(c) < 0x20 for c in uri):
        raise ValueError("jwks_uri must not contain spaces or control characters")
    return uri
