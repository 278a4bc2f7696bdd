"""The client assertion NetSuite's token endpoint takes (RFC 7523 §2.2).

Header ``{typ: "JWT", alg, kid}`` where ``kid`` is "the value of the Certificate ID
generated during the mapping of the application"; claims exactly ``iss`` (the
integration's Client ID), ``scope`` (a JSON array), ``aud`` (the token endpoint URL),
``iat`` and ``exp`` as integer NumericDates. ``exp`` "must be less than 60 minutes
greater than" ``iat``; we use 300 s so moderate clock skew cannot push it past 3600.
No ``jti``, ``sub`` or ``nbf``: not in NetSuite's documented claim set.

Signed by joserfc (RFC 7518 §3.3-3.5): PS256 with MGF1-SHA-256 and a salt as long as
the hash; ES256/384/512 as raw R||S of 64/96/132 bytes, never DER.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from connectors.netsuite.keys import ALGORITHMS, PrivateKey

DEFAULT_LIFETIME = 300
MAX_LIFETIME = 3600
#: The only claims NetSuite documents for this flow (section_162790605110).
CLAIMS = ("iss", "scope", "aud", "iat", "exp")


def create_assertion(key: PrivateKey, *, algorithm: str, kid: str, client_id: str,
                     scopes: Sequence[str], audience: str, now: float,
                     lifetime: int = DEFAULT_LIFETIME) -> str:
    """A fresh signed assertion; build one for every token request."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"NetSuite takes {', '.join(ALGORITHMS)}, not {algorithm!r}")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise ValueError(f"exp - iat is 1 to {MAX_LIFETIME} seconds")
    if not kid:
        raise ValueError("the kid (NetSuite's Certificate ID) is required")
    issued_at = int(now)
    header = {"typ": "JWT", "alg": algorithm, "kid": kid}
    claims = {"iss": client_id, "scope": list(scopes), "aud": audience, "iat": issued_at,
              "exp": issued_at + lifetime}
    jwk = RSAKey.import_key(key) if isinstance(key, rsa.RSAPrivateKey) else (
        ECKey.import_key(key) if isinstance(key, ec.EllipticCurvePrivateKey) else None)
    if jwk is None:
        raise ValueError("an RSA or EC private key is needed")
    return jwt.encode(header, claims, jwk, algorithms=[algorithm])
