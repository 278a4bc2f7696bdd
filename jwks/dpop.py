"""RFC 9449 DPoP proofs: the checks of §4.3, shared by the issuer's token endpoint and
resource servers (§7), and the resource server's replay cache.

:func:`check_proof` is pure CPU (one signature verification): the caller decides what
the proof is checked against (method, URL, time, the access token's hash) and spends
its ``jti`` in a replay store afterwards (:class:`ReplayStore`; in one process
:class:`MemoryReplayCache`). Every failure raises :class:`DPoPProofInvalid` (or a
subclass) whose message is fixed text naming the failed check, never caller input.

Imports nothing from ``issuer``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning
from joserfc.jwk import Key, RSAKey, import_key

from jwks.errors import DPoPProofInvalid, DPoPProofReplayed
from jwks.sources import key_fits

__all__ = [
    "DPOP_ALGORITHMS",
    "MAX_PROOF_BYTES",
    "DPoPProof",
    "MemoryReplayCache",
    "ReplayStore",
    "access_token_hash",
    "check_proof",
    "normalize_htu",
    "replay_key",
]

#: The proof signing algorithms accepted by default: asymmetric only (§4.2: "MUST NOT
#: be none or an identifier for a symmetric algorithm").
DPOP_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
#: The largest ``DPoP`` header read: a proof carrying a 4096-bit RSA key is ~2 KB.
MAX_PROOF_BYTES = 8 * 1024
#: The longest ``jti`` accepted (§4.2 asks for 96 bits of randomness; UUIDs are 36).
MAX_JTI_LENGTH = 255
#: §4.2 ``typ``: "dpop+jwt".
PROOF_TYPE = "dpop+jwt"
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = "-._~"
# joserfc warns that RFC 9864 deprecates "EdDSA" (for "Ed25519"); clients still use it.
_EDDSA_DEPRECATION = "EdDSA is deprecated"


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A proof that passed :func:`check_proof`."""

    jkt: str  # RFC 7638 SHA-256 thumbprint of the proof's public key
    jti: str
    iat: float
    nonce: str | None  # checked by the caller, when it asks for nonces


def check_proof(proof: str, *, method: str, url: str, now: float, max_age: float = 60,
                leeway: float = 5, algorithms: Collection[str] = DPOP_ALGORITHMS,
                access_token: str | None = None) -> DPoPProof:
    """§4.3 checks 2-11 of one proof, cheapest first: JWS shape, ``typ``, ``alg``, a
    public ``jwk`` that verifies the signature, ``jti``, ``htm`` = ``method``,
    ``htu`` = ``url`` (query and fragment ignored), ``iat`` within ``max_age`` seconds
    past and ``leeway`` ahead, and -- for a proof sent with an access token --
    ``ath``. Raises :class:`DPoPProofInvalid`. The ``jti`` is the caller's to spend."""
    if not isinstance(proof, str) or len(proof) > MAX_PROOF_BYTES:
        raise DPoPProofInvalid("the DPoP proof is too large")
    parts = proof.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise DPoPProofInvalid("the DPoP proof is not a signed JWT")
    header = _json_segment(parts[0], "header")
    # §4.3 (4): "the typ JOSE Header Parameter has the value dpop+jwt".
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() != PROOF_TYPE:
        raise DPoPProofInvalid("the DPoP proof's typ is not dpop+jwt")
    # (5): "the alg ... indicates a registered asymmetric digital signature algorithm,
    # is not none, is supported by the application".
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise DPoPProofInvalid("the DPoP proof's alg is not supported")
    key = _public_key(header.get("jwk"), alg)
    # (6): "the JWT signature verifies with the public key contained in the jwk".
    claims = _verified_claims(proof, key, alg)
    jti, htm, htu = claims.get("jti"), claims.get("htm"), claims.get("htu")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise DPoPProofInvalid("the DPoP proof has no valid jti")
    # (8): "the htm claim matches the HTTP method of the current request".
    if htm != method:
        raise DPoPProofInvalid("the DPoP proof's htm does not match the request method")
    # (9): "the htu claim matches the HTTP URI value for the HTTP request in which the
    # JWT was received, ignoring any query and fragment parts".
    if not isinstance(htu, str) or _normalized_or_none(htu) != normalize_htu(url):
        raise DPoPProofInvalid("the DPoP proof's htu does not match the request URI")
    # (11): "the creation time of the JWT, as determined by ... iat, is within an
    # acceptable window".
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise DPoPProofInvalid("the DPoP proof has no valid iat")
    if iat < now - max_age:
        raise DPoPProofInvalid("the DPoP proof's iat is too old")
    if iat > now + leeway:
        raise DPoPProofInvalid("the DPoP proof's iat is in the future")
    if access_token is not None:
        # (12) / §7: "the value of the ath claim equals the hash of that access token".
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
                ath.encode(), access_token_hash(access_token).encode()):
            raise DPoPProofInvalid("the DPoP proof's ath does not match the access token")
    nonce = claims.get("nonce")
    return DPoPProof(jkt=key.thumbprint(), jti=jti, iat=float(iat),
                     nonce=nonce if isinstance(nonce, str) else None)


def access_token_hash(access_token: str) -> str:
    """§4.2 ``ath``: base64url (no padding) of SHA-256 over the token's ASCII bytes."""
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def normalize_htu(url: str) -> str:
    """``url`` as §4.3 compares it (RFC 3986 §6.2.2 and §6.2.3): scheme and host in
    lower case, the default port dropped, an empty path as ``/``, percent-encodings in
    upper case with unreserved characters decoded; no query, no fragment."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        raise ValueError("not an absolute http(s) URI")
    port = parts.port  # ValueError for a malformed port
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        authority += f":{port}"
    path = quote(unquote(parts.path or "/"), safe="/!$&'()*+,;=:@" + _UNRESERVED)
    return f"{scheme}://{authority}{path}"


def replay_key(proof: DPoPProof) -> str:
    """A fixed-size key for a proof's ``jti`` under its key (two keys may pick one jti)."""
    return hashlib.sha256(f"{proof.jkt}:{proof.jti}".encode()).hexdigest()


class ReplayStore(Protocol):
    """Where spent proof ``jti``s are kept (§11.1): :class:`MemoryReplayCache` in one
    process; several processes share one (e.g. Redis ``SET NX EX``)."""

    async def use(self, key: str, expires_at: float, now: float) -> bool:
        """Spend ``key`` until ``expires_at``; False when it was spent already."""
        ...


class MemoryReplayCache:
    """Spent proofs of this process, each kept until its proof could no longer be
    accepted. Bounded: at most ``max_entries`` at once; past that a new proof is
    refused (fail closed) until old ones expire."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        # Insertion order is expiry order (every entry lives the same window from
        # ``now``), so expired entries are always at the front.
        self._spent: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._spent)

    async def use(self, key: str, expires_at: float, now: float) -> bool:
        spent = self._spent
        while spent:
            oldest = next(iter(spent))
            if spent[oldest] > now:
                break
            del spent[oldest]
        if key in spent:
            return False
        if len(spent) >= self.max_entries:
            raise DPoPProofReplayed("the DPoP replay cache is full")
        spent[key] = expires_at
        return True


# Helpers -------------------------------------------------------------------------------


def _json_segment(segment: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise DPoPProofInvalid(f"the DPoP proof's {name} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise DPoPProofInvalid(f"the DPoP proof's {name} is not a JSON object")
    return value


def _public_key(jwk: object, alg: str) -> Key:
    """§4.3 (7): "the jwk JOSE Header Parameter does not contain a private key"."""
    if not isinstance(jwk, Mapping):
        raise DPoPProofInvalid("the DPoP proof has no jwk header")
    if _PRIVATE_MEMBERS & set(jwk):
        raise DPoPProofInvalid("the DPoP proof's jwk holds a private key")
    try:
        key = import_key(dict(jwk))
    except (JoseError, ValueError, TypeError, KeyError):
        raise DPoPProofInvalid("the DPoP proof's jwk is not a valid public key") from None
    if not key_fits(key, alg):
        raise DPoPProofInvalid("the DPoP proof's jwk does not fit its alg")
    if isinstance(key, RSAKey) and key.public_key.key_size < 2048:
        raise DPoPProofInvalid("the DPoP proof's RSA key is shorter than 2048 bits")
    return key


def _registry(alg: str) -> jws.JWSRegistry:
    """joserfc's registry for ``alg`` alone, admitting a header as large as a proof
    (joserfc's default bound, 512 bytes, is smaller than an RSA ``jwk``)."""
    registry = _REGISTRIES.get(alg)
    if registry is None:
        registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
        registry.max_header_length = MAX_PROOF_BYTES
        _REGISTRIES[alg] = registry
    return registry


_REGISTRIES: dict[str, jws.JWSRegistry] = {}


def _verified_claims(proof: str, key: Key, alg: str) -> dict[str, Any]:
    registry = _registry(alg)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _EDDSA_DEPRECATION, SecurityWarning)
            signed = jws.deserialize_compact(proof, key, [alg], registry)
    except BadSignatureError:
        raise DPoPProofInvalid("the DPoP proof's signature does not verify") from None
    except (JoseError, ValueError, TypeError, KeyError):
        raise DPoPProofInvalid("the DPoP proof is not a valid JWS") from None
    try:
        claims = json.loads(signed.payload or b"")
    except ValueError:
        raise DPoPProofInvalid("the DPoP proof's payload is not JSON") from None
    if not isinstance(claims, dict):
        raise DPoPProofInvalid("the DPoP proof's payload is not a JSON object")
    return claims


def _normalized_or_none(url: str) -> str | None:
    try:
        return normalize_htu(url)
    except ValueError:
        return None
