"""Offline verification of RFC 9068 JWT access tokens for resource servers.

Depends on httpx, joserfc and the standard library only: a resource
server installs it without the issuer, and a test proves ``issuer`` is never imported.

Keys come from a :class:`KeySource` (``jwks.sources``): by default a
:class:`JWKSKeySource` that discovers ``jwks_uri`` through RFC 8414, caches the JWK Set
for its ``max-age`` and refetches on an unknown ``kid`` at most once per
``min_refetch_interval``. The issuer verifies its own tokens (the admin API) with the
same verifier over a source that reads its key ring instead of HTTP.

Checks, each failing closed with a :class:`TokenError` (RFC 9068 §4, RFC 8725 §3):
``typ`` is ``at+jwt`` (required), ``alg`` allowed and fitting the key's ``kty``/``crv``/
``alg`` (never ``none``, never ``HS*``), signature, ``iss``, ``aud``, ``exp``/``nbf``/``iat``
with leeway, and the RFC 9068 §2.2 required claims.

DPoP (RFC 9449 §7): :meth:`JWKSVerifier.verify` is the Bearer scheme and refuses a
DPoP-bound token (one with ``cnf.jkt``); :meth:`JWKSVerifier.verify_dpop` is the DPoP
scheme: the token's checks, then the proof's (``jwks.dpop.check_proof``: signature,
``typ``, ``htm``/``htu`` of the request, ``iat`` window, ``ath``), the proof key's
thumbprint equal to ``cnf.jkt``, and the proof's ``jti`` spent in a replay store (in
memory by default; one shared by several processes when given).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, runtime_checkable

import httpx
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning
from joserfc.jwk import Key

from jwks.dpop import DPOP_ALGORITHMS, MemoryReplayCache, ReplayStore, check_proof, replay_key
from jwks.errors import (
    BadSignature,
    DisallowedAlgorithm,
    DPoPBoundTokenAsBearer,
    DPoPKeyMismatch,
    DPoPProofInvalid,
    DPoPProofReplayed,
    Expired,
    InvalidClaim,
    InvalidTokenError,
    KeySetUnavailable,
    MalformedToken,
    MissingClaim,
    MissingDPoPProof,
    NotDPoPBound,
    NotYetValid,
    TokenError,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongType,
)
from jwks.sources import (
    ASYMMETRIC_ALGORITHMS,
    Clock,
    JWKSKeySource,
    KeySource,
    StaticKeySource,
    SystemClock,
    key_fits,
    metadata_url,
)

__all__ = [
    "BadSignature",
    "Clock",
    "DPoPBoundTokenAsBearer",
    "DPoPKeyMismatch",
    "DPoPProofInvalid",
    "DPoPProofReplayed",
    "DPoPVerifier",
    "DisallowedAlgorithm",
    "Expired",
    "InvalidClaim",
    "InvalidTokenError",
    "JWKSKeySource",
    "JWKSVerifier",
    "KeySetUnavailable",
    "KeySource",
    "MalformedToken",
    "MemoryReplayCache",
    "MissingClaim",
    "MissingDPoPProof",
    "NotDPoPBound",
    "NotYetValid",
    "ReplayStore",
    "StaticKeySource",
    "TokenError",
    "TokenVerifier",
    "UnknownKey",
    "VerifiedToken",
    "WrongAudience",
    "WrongIssuer",
    "WrongType",
    "metadata_url",
]

log = logging.getLogger(__name__)

#: RFC 9068 §2.2: claims every JWT access token carries.
REQUIRED_CLAIMS = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
#: RFC 9068 §4 and §2.1 (RFC 7515 §4.1.9: case-insensitive, "application/" optional).
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})

# joserfc warns that RFC 9864 deprecates "EdDSA" (for "Ed25519"); issuers still use it.
_EDDSA_DEPRECATION = "EdDSA is deprecated"


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed every check; ``claims`` is read-only."""

    claims: Mapping[str, Any]
    scopes: frozenset[str]
    tenant_id: str | None
    client_id: str
    kid: str
    #: RFC 9449: the thumbprint of the key the token is bound to (``cnf.jkt``), when
    #: it was presented with the DPoP scheme and its proof.
    jkt: str | None = None


class TokenVerifier(Protocol):
    """What the Starlette integration needs: anything that verifies a Bearer token."""

    async def verify(self, token: str) -> VerifiedToken: ...


@runtime_checkable
class DPoPVerifier(Protocol):
    """A verifier that also accepts the DPoP scheme (RFC 9449 §7); the integrations
    use it for ``Authorization: DPoP`` when the verifier has it."""

    #: The proof algorithms accepted, for the ``algs`` of a DPoP challenge (§7.1).
    dpop_algorithms: frozenset[str]

    async def verify_dpop(self, token: str, proof: str | Sequence[str] | None, *,
                          method: str, url: str) -> VerifiedToken: ...


class JWKSVerifier:
    """Verifies JWT access tokens against an issuer's published keys.

    One instance per (issuer, audience), shared by every request: its key source holds
    the key cache. Keys come from ``key_source`` when given; otherwise from a
    :class:`JWKSKeySource` built from ``jwks_uri`` (discovered via RFC 8414 when
    omitted), ``http_client`` and the interval options, which :meth:`aclose` closes.
    ``http_client`` is used as given and never closed here; without one, the source
    opens its own (5 s timeout).
    """

    def __init__(
        self,
        issuer: str,
        audience: str | Collection[str],
        *,
        jwks_uri: str | None = None,
        algorithms: Collection[str] = ("RS256", "ES256", "EdDSA"),
        leeway: float = 30,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        min_refetch_interval: float = 30.0,
        default_max_age: float = 300.0,
        max_stale: float = 86_400.0,
        key_source: KeySource | None = None,
        dpop_replay: ReplayStore | None = None,
        dpop_max_age: float = 60,
        dpop_leeway: float = 5,
        dpop_algorithms: Collection[str] = DPOP_ALGORITHMS,
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required")
        audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise ValueError("audience must be a non-empty string or strings")
        unsupported = sorted(set(algorithms) - ASYMMETRIC_ALGORITHMS)
        if unsupported or not algorithms:
            # "none" and HS* land here: a public key must never act as an HMAC secret.
            raise ValueError(f"unsupported or unsafe algorithms: {unsupported or 'none given'}")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        if key_source is not None and (jwks_uri is not None or http_client is not None):
            raise ValueError("give a key_source or jwks_uri/http_client, not both")
        self.issuer = issuer
        self.audiences = audiences
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway
        self._clock: Clock = clock or SystemClock()
        self._owns_source = key_source is None
        self.key_source: KeySource = key_source or JWKSKeySource(
            issuer=issuer, jwks_uri=jwks_uri, http_client=http_client, clock=self._clock,
            min_refetch_interval=min_refetch_interval, default_max_age=default_max_age,
            max_stale=max_stale)
        self._registries = {alg: jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
                            for alg in self.algorithms}
        # RFC 9449 §7: proofs (``verify_dpop``). Several processes share a replay store
        # given as ``dpop_replay``; the default holds this process's spent proofs.
        unsafe = sorted(set(dpop_algorithms) - ASYMMETRIC_ALGORITHMS)
        if unsafe or not dpop_algorithms:
            raise ValueError(f"unsupported or unsafe DPoP algorithms: {unsafe or 'none given'}")
        if dpop_max_age <= 0 or dpop_leeway < 0:
            raise ValueError("dpop_max_age must be positive and dpop_leeway not negative")
        self.dpop_algorithms = frozenset(dpop_algorithms)
        self.dpop_max_age = dpop_max_age
        self.dpop_leeway = dpop_leeway
        self.dpop_replay: ReplayStore = dpop_replay or MemoryReplayCache()

    async def __aenter__(self) -> JWKSVerifier:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the key source if the verifier built it (a given one stays open)."""
        if self._owns_source:
            await self.key_source.aclose()

    async def verify(self, token: str) -> VerifiedToken:
        """Every check of RFC 9068 §4, cheapest first, for a token presented as a Bearer
        token; raises a :class:`TokenError`. RFC 9449 §7.2: a DPoP-bound token (one
        with ``cnf.jkt``) is refused here (:class:`DPoPBoundTokenAsBearer`)."""
        verified = await self._verify_token(token)
        if _bound_key(verified.claims) is not None:
            raise DPoPBoundTokenAsBearer("a DPoP-bound token presented as a Bearer token")
        return verified

    async def verify_dpop(self, token: str, proof: str | Sequence[str] | None, *,
                          method: str, url: str) -> VerifiedToken:
        """RFC 9449 §7: ``Authorization: DPoP <token>`` with the request's ``DPoP``
        header(s) ``proof``, its ``method`` and its absolute ``url``. The token's checks
        (as :meth:`verify`), then the proof's (§4.3, with ``ath``), then its key's
        thumbprint against the token's ``cnf.jkt``, then its ``jti`` is spent. Raises
        :class:`DPoPProofInvalid` (``invalid_dpop_proof``) or another
        :class:`TokenError` (``invalid_token``)."""
        proofs = [proof] if isinstance(proof, str) else list(proof or ())
        verified = await self._verify_token(token)
        jkt = _bound_key(verified.claims)
        if jkt is None:
            raise NotDPoPBound("the token has no cnf.jkt")
        if not proofs:
            raise MissingDPoPProof("no DPoP header")
        if len(proofs) > 1:
            # §4.3 (1): "there is not more than one DPoP HTTP request header field".
            raise DPoPProofInvalid("more than one DPoP header")
        now = self._clock.now()
        checked = check_proof(proofs[0], method=method, url=url, now=now,
                              max_age=self.dpop_max_age, leeway=self.dpop_leeway,
                              algorithms=self.dpop_algorithms, access_token=token)
        # §7 (12): "the public key to which the access token is bound" matches the proof's.
        if not hmac.compare_digest(checked.jkt.encode(), jkt.encode()):
            raise DPoPKeyMismatch("the proof's key is not the token's cnf.jkt")
        # §11.1: a proof is kept as long as its iat would be accepted.
        if not await self.dpop_replay.use(replay_key(checked),
                                          now + self.dpop_max_age + self.dpop_leeway, now):
            raise DPoPProofReplayed("the proof's jti was used before")
        return replace(verified, jkt=jkt)

    async def _verify_token(self, token: str) -> VerifiedToken:
        header = _decode_header(token)
        _check_type(header)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            # RFC 9068 §4: "The resource server MUST validate the signature of all
            # incoming JWT access tokens according to [RFC7515] using the algorithm
            # specified in the JWT 'alg' Header Parameter. The resource server MUST reject
            # any JWT in which the value of 'alg' is 'none'." Ours is an allow-list.
            raise DisallowedAlgorithm(f"alg {alg!r} is not in the allow-list")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnknownKey("the token names no key (kid)")
        key = await self._key(kid, alg)
        claims = self._verify_signature(token, key, alg)
        self._check_claims(claims)
        scope = claims.get("scope", "")
        tenant_id = claims.get("tenant_id")
        if not isinstance(scope, str):
            raise InvalidClaim("scope")
        if tenant_id is not None and not isinstance(tenant_id, str):
            raise InvalidClaim("tenant_id")
        return VerifiedToken(claims=MappingProxyType(claims), scopes=frozenset(scope.split()),
                             tenant_id=tenant_id, client_id=claims["client_id"], kid=kid)

    # Signature and claims ------------------------------------------------------------

    def _verify_signature(self, token: str, key: Key, alg: str) -> dict[str, Any]:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", _EDDSA_DEPRECATION, SecurityWarning)
                signed = jws.deserialize_compact(token, key, [alg], self._registries[alg])
        except BadSignatureError as error:
            raise BadSignature("the signature does not verify with the key") from error
        except (JoseError, ValueError) as error:
            raise MalformedToken(f"joserfc rejected the JWS: {error}") from error
        try:
            claims = json.loads(signed.payload or b"")
        except ValueError as error:
            raise MalformedToken("the payload is not JSON") from error
        if not isinstance(claims, dict):
            raise MalformedToken("the payload is not a JSON object")
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        for name in REQUIRED_CLAIMS:
            if name not in claims:
                raise MissingClaim(name)
        for name in ("iss", "sub", "client_id", "jti"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise InvalidClaim(name)
        # RFC 9068 §4: "The issuer identifier for the authorization server ... MUST
        # exactly match the value of the 'iss' claim."
        if claims["iss"] != self.issuer:
            raise WrongIssuer(f"iss {claims['iss']!r} is not {self.issuer!r}")
        # §4: "The resource server MUST validate that the 'aud' claim contains a resource
        # indicator value corresponding to an identifier the resource server expects".
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise InvalidClaim("aud")
        if self.audiences.isdisjoint(audiences):
            raise WrongAudience("aud does not name this resource server")
        now = self._clock.now()
        # RFC 7519 §4.1.4: "MUST NOT be accepted for processing on or after" exp.
        if now >= _numeric(claims, "exp") + self.leeway:
            raise Expired("exp has passed")
        # §4.1.5: "MUST NOT be accepted for processing before" nbf.
        if "nbf" in claims and now + self.leeway < _numeric(claims, "nbf"):
            raise NotYetValid("nbf is in the future")
        if now + self.leeway < _numeric(claims, "iat"):
            raise NotYetValid("iat is in the future")

    # Keys ----------------------------------------------------------------------------

    async def _key(self, kid: str, alg: str) -> Key:
        """The key named ``kid`` that fits ``alg``, from the key source."""
        candidates = await self.key_source.get(kid)
        if not candidates:
            raise UnknownKey(f"no published key has kid {kid!r}")
        for key in candidates:
            if key_fits(key, alg):
                return key
        # RFC 8725 §3.1: the alg must match the key; an RSA key never verifies ES256 etc.
        raise DisallowedAlgorithm(f"alg {alg!r} does not fit key {kid!r}")


# Helpers -------------------------------------------------------------------------------



def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _decode_header(token: str) -> dict[str, Any]:
    """The protected header, read before any key is looked up (it names the key)."""
    if not isinstance(token, str):
        raise MalformedToken("the token is not a string")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise MalformedToken("a JWS compact serialization has three parts")
    if len(parts[0]) > jws.JWSRegistry.max_header_length:  # joserfc's bound, checked early
        raise MalformedToken("the header is too long")
    try:
        header = json.loads(_b64decode(parts[0]))
    except (ValueError, binascii.Error) as error:  # UnicodeDecodeError is a ValueError
        raise MalformedToken("the header is not base64url JSON") from error
    if not isinstance(header, dict):
        raise MalformedToken("the header is not a JSON object")
    return header


def _check_type(header: Mapping[str, Any]) -> None:
    # RFC 9068 §4: "The resource server MUST verify that the 'typ' header value is
    # 'at+jwt' or 'application/at+jwt' and reject tokens carrying any other value" --
    # a missing typ included (Authlib's rfc9068 validator lets that through).
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
        raise WrongType(f"typ {typ!r} is not at+jwt")


def _bound_key(claims: Mapping[str, Any]) -> str | None:
    """RFC 9449 §6.1: the ``jkt`` of the token's ``cnf``; a malformed ``cnf`` is refused."""
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise InvalidClaim("cnf")
    return jkt


def _numeric(claims: Mapping[str, Any], name: str) -> float:
    """RFC 7519 §2 NumericDate: a JSON number (a bool is not one)."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidClaim(name)
    return float(value)

