"""Client identifiers and secrets: generation and verification.

Secrets are generated here, never chosen by people: 32 random bytes (256 bits)
from ``secrets.token_urlsafe``. Only a SHA-256 digest of a secret is stored.

Why a plain SHA-256 and not a password hash (bcrypt, scrypt, Argon2)? A password
hash is slow on purpose so that guessing a *low-entropy, human-chosen* password
from a stolen hash costs too much. A 256-bit random secret cannot be guessed:
even at 10^12 SHA-256 evaluations per second an attacker holding the digest
needs ~10^57 years on average. Key stretching adds nothing to that and would cost
tens of milliseconds of CPU on every token request (django-oauth-toolkit's
6 tokens/s), so it would only make the token endpoint a denial-of-service target.
This reasoning holds only because the server generates every secret; never
accept a client-chosen secret into this scheme.

Digests are compared with ``hmac.compare_digest`` (constant time).

One exception, chosen by the client: ``client_secret_jwt`` (OIDC Core §9) keys an HMAC
with the secret itself, so for a client allowed that method the secret is also kept
encrypted under the master key (``issuer.crypto``, context :func:`secret_context`);
see ``issuer.registration``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_PREFIX = "m2ms_"  # makes a leaked secret findable by secret scanners
_SCHEME = "sha256$"


def new_client_id() -> str:
    return "m2m_" + secrets.token_urlsafe(16)


def new_client_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return _SCHEME + hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(secret: str, stored: str | None) -> bool:
    """Constant-time check of ``secret`` against a stored digest."""
    if not stored or not stored.startswith(_SCHEME):
        # Still spend the digest so a missing hash is not faster to detect.
        hmac.compare_digest(hash_secret(secret), _SCHEME + "0" * 64)
        return False
    return hmac.compare_digest(hash_secret(secret), stored)


def secret_context(client_id: str) -> bytes:
    """The encryption context (associated data) of a client's encrypted secrets."""
    return f"client_secret:{client_id}".encode()
