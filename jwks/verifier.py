"""Offline verification of RFC 9068 JWT access tokens for resource servers.

Depends on httpx, joserfc and the standard library only (DESIGN §1): a resource
server installs it without the issuer, and a test proves ``issuer`` is never imported.

Keys:
- RFC 8414 §3.1: with no ``jwks_uri``, the metadata is read from
  ``{issuer-origin}/.well-known/oauth-authorization-server{issuer-path}``; §3.3: "The
  'issuer' value returned MUST be identical to the authorization server's issuer
  identifier value".
- RFC 7517 §5: the JWK Set is cached for ``Cache-Control: max-age`` minus ``Age``
  (RFC 9111 §4.2.1, §5.2.2.1); absent: ``default_max_age``. An unknown ``kid`` causes one
  refetch, at most one per ``min_refetch_interval`` whatever the cause, and concurrent
  callers share it. After one good fetch, fetch errors do not fail known keys for up to
  ``max_stale`` seconds past freshness.

Checks, each failing closed with a :class:`TokenError` (RFC 9068 §4, RFC 8725 §3):
``typ`` is ``at+jwt`` (required), ``alg`` allowed and fitting the key's ``kty``/``crv``/
``alg`` (never ``none``, never ``HS*``), signature, ``iss``, ``aud``, ``exp``/``nbf``/``iat``
with leeway, and the RFC 9068 §2.2 required claims.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

__all__ = [
    "BadSignature",
    "Clock",
    "DisallowedAlgorithm",
    "Expired",
    "InvalidClaim",
    "InvalidTokenError",
    "JWKSVerifier",
    "KeySetUnavailable",
    "MalformedToken",
    "MissingClaim",
    "NotYetValid",
    "TokenError",
    "TokenVerifier",
    "UnknownKey",
    "VerifiedToken",
    "WrongAudience",
    "WrongIssuer",
    "WrongType",
]

log = logging.getLogger(__name__)

#: RFC 9068 §2.2: claims every JWT access token carries.
REQUIRED_CLAIMS = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
#: RFC 9068 §4 and §2.1 (RFC 7515 §4.1.9: case-insensitive, "application/" optional).
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
#: A JWK Set is never trusted as fresh for longer than a day, whatever max-age says.
MAX_CACHE_TTL = 86_400.0

# Asymmetric JWS algorithms (RFC 7518 §3.1, RFC 8037 §3.1, RFC 8812, RFC 9864) and the
# key each needs: kty and, for curves, the allowed crv. Symmetric (HS*) and "none" are
# absent on purpose: RFC 8725 §3.1 "libraries MUST enable the caller to specify a
# supported set of algorithms and MUST NOT use any other algorithms".
_KEY_FOR_ALG: dict[str, tuple[str, frozenset[str] | None]] = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    "Ed25519": ("OKP", frozenset({"Ed25519"})),
    "Ed448": ("OKP", frozenset({"Ed448"})),
}
# joserfc warns that RFC 9864 deprecates "EdDSA" (for "Ed25519"); issuers still use it.
_EDDSA_DEPRECATION = "EdDSA is deprecated"


# Errors --------------------------------------------------------------------------------


class TokenError(Exception):
    """The token was not accepted. ``description`` is fixed text, safe to show callers;
    ``str(error)`` may carry detail (never the token) for logs."""

    description: ClassVar[str] = "The access token could not be verified"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.description)


class InvalidTokenError(TokenError):
    """The token itself is bad: RFC 6750 §3.1 ``invalid_token``."""

    description = "The access token is invalid"


class MalformedToken(InvalidTokenError):
    description = "The access token is not a well-formed signed JWT"


class WrongType(InvalidTokenError):
    description = "The token is not a JWT access token (typ must be at+jwt)"


class DisallowedAlgorithm(InvalidTokenError):
    description = "The access token's signing algorithm is not accepted"


class UnknownKey(InvalidTokenError):
    description = "The access token was signed by an unknown key"


class BadSignature(InvalidTokenError):
    description = "The access token's signature is invalid"


class MissingClaim(InvalidTokenError):
    description = "The access token lacks a required claim"

    def __init__(self, claim: str) -> None:
        super().__init__(f"the token has no {claim!r} claim")
        self.claim = claim


class InvalidClaim(InvalidTokenError):
    description = "The access token has a malformed claim"

    def __init__(self, claim: str) -> None:
        super().__init__(f"the token's {claim!r} claim has the wrong type")
        self.claim = claim


class WrongIssuer(InvalidTokenError):
    description = "The access token was issued by another issuer"


class WrongAudience(InvalidTokenError):
    description = "The access token is not meant for this resource server"


class Expired(InvalidTokenError):
    description = "The access token expired"


class NotYetValid(InvalidTokenError):
    description = "The access token is not valid yet"


class KeySetUnavailable(TokenError):
    """The issuer's keys could not be obtained: not the token's fault, still rejected."""

    description = "The issuer's signing keys are unavailable"


# Public values -------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock, UTC)."""
        ...


class _SystemClock:
    def now(self) -> float:
        return time.time()


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed every check; ``claims`` is read-only."""

    claims: Mapping[str, Any]
    scopes: frozenset[str]
    tenant_id: str | None
    client_id: str
    kid: str


class TokenVerifier(Protocol):
    """What the Starlette integration needs: anything that verifies a Bearer token."""

    async def verify(self, token: str) -> VerifiedToken: ...


# The verifier --------------------------------------------------------------------------

_KeyIndex = dict[str, tuple[Key, ...]]


class JWKSVerifier:
    """Verifies JWT access tokens against an issuer's published JWK Set.

    One instance per (issuer, audience), shared by every request: it holds the key
    cache. ``http_client`` is used as given and never closed here; without one, the
    verifier opens its own (5 s timeout) and :meth:`aclose` closes it.
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
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required")
        audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise ValueError("audience must be a non-empty string or strings")
        unsupported = sorted(set(algorithms) - set(_KEY_FOR_ALG))
        if unsupported or not algorithms:
            # "none" and HS* land here: a public key must never act as an HMAC secret.
            raise ValueError(f"unsupported or unsafe algorithms: {unsupported or 'none given'}")
        if min(leeway, min_refetch_interval, default_max_age, max_stale) < 0:
            raise ValueError("leeway and intervals must not be negative")
        self.issuer = issuer
        self.audiences = audiences
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway
        self.min_refetch_interval = min_refetch_interval
        self.default_max_age = default_max_age
        self.max_stale = max_stale
        self._jwks_uri = jwks_uri
        self._clock: Clock = clock or _SystemClock()
        self._http = http_client
        self._owns_http = http_client is None
        self._registries = {alg: jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
                            for alg in self.algorithms}
        self._keys: _KeyIndex | None = None
        self._fresh_until = -math.inf
        self._last_attempt: float | None = None
        self._last_error = "the key set was never fetched"
        self._inflight: asyncio.Task[None] | None = None

    async def __aenter__(self) -> JWKSVerifier:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop a fetch in flight; close the HTTP client if the verifier opened it."""
        if self._inflight is not None:
            self._inflight.cancel()
            self._inflight = None
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def verify(self, token: str) -> VerifiedToken:
        """Every check of RFC 9068 §4, cheapest first; raises a :class:`TokenError`."""
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
        """The key for ``kid``, refetching the set when stale or when ``kid`` is new."""
        now = self._clock.now()
        needs_fetch = self._keys is None or now >= self._fresh_until or kid not in self._keys
        if needs_fetch:
            if self._inflight is not None and self._inflight.done():
                self._inflight = None  # cancelled before it ran (aclose)
            if self._inflight is None and self._may_fetch(now):
                self._inflight = asyncio.get_running_loop().create_task(self._refresh())
            if self._inflight is not None:
                # Single flight: everyone who needs the set awaits the one fetch;
                # shield() keeps a cancelled caller from cancelling it for the others.
                await asyncio.shield(self._inflight)
        return self._select(kid, alg)

    def _may_fetch(self, now: float) -> bool:
        if self._last_attempt is None:
            return True
        elapsed = now - self._last_attempt
        return elapsed < 0 or elapsed >= self.min_refetch_interval  # < 0: the clock went back

    def _select(self, kid: str, alg: str) -> Key:
        if self._keys is None:
            raise KeySetUnavailable(self._last_error)
        if self._clock.now() >= self._fresh_until + self.max_stale:
            raise KeySetUnavailable(f"the cached key set is too stale; {self._last_error}")
        candidates = self._keys.get(kid)
        if not candidates:
            raise UnknownKey(f"no published key has kid {kid!r}")
        for key in candidates:
            if _fits(key, alg):
                return key
        # RFC 8725 §3.1: the alg must match the key; an RSA key never verifies ES256 etc.
        raise DisallowedAlgorithm(f"alg {alg!r} does not fit key {kid!r}")

    async def _refresh(self) -> None:
        self._last_attempt = self._clock.now()
        try:
            keys, ttl = await self._fetch()
        except KeySetUnavailable as error:
            self._last_error = str(error)
            log.warning("JWKS fetch for %s failed: %s", self.issuer, error)
        else:
            self._keys = keys
            self._fresh_until = self._clock.now() + ttl
        finally:
            self._inflight = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0)
        return self._http

    async def _fetch(self) -> tuple[_KeyIndex, float]:
        client = self._client()
        try:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover(client)
            response = await client.get(
                self._jwks_uri, headers={"Accept": "application/jwk-set+json, application/json"})
            if response.status_code != 200:
                raise KeySetUnavailable(f"GET {self._jwks_uri} answered {response.status_code}")
            keys = _index_key_set(response.json())
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
            raise KeySetUnavailable(f"fetching the key set failed: {error!r}") from error
        return keys, _freshness(response.headers, self.default_max_age)

    async def _discover(self, client: httpx.AsyncClient) -> str:
        url = metadata_url(self.issuer)
        response = await client.get(url, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise KeySetUnavailable(f"GET {url} answered {response.status_code}")
        metadata = response.json()
        if not isinstance(metadata, dict) or metadata.get("issuer") != self.issuer:
            # RFC 8414 §3.3: "If these values are not identical, the data contained in
            # the response MUST NOT be used."
            raise KeySetUnavailable(f"{url} describes another issuer")
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise KeySetUnavailable(f"{url} has no jwks_uri")
        return jwks_uri


# Helpers -------------------------------------------------------------------------------


def metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: the well-known suffix goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc,
                       f"/.well-known/oauth-authorization-server{path}", "", ""))


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


def _numeric(claims: Mapping[str, Any], name: str) -> float:
    """RFC 7519 §2 NumericDate: a JSON number (a bool is not one)."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidClaim(name)
    return float(value)


def _fits(key: Key, alg: str) -> bool:
    kty, curves = _KEY_FOR_ALG[alg]
    if key.key_type != kty or key.alg not in (None, alg):
        return False
    return curves is None or key.get("crv") in curves


def _index_key_set(document: object) -> _KeyIndex:
    """RFC 7517 §5 JWK Set -> kid -> keys. Unusable members are skipped (§5: "Implementations
    SHOULD ignore JWKs within a JWK Set that use 'kty' values that are not understood")."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")
    index: dict[str, list[Key]] = {}
    for member in document["keys"]:
        key = _import_verification_key(member)
        if key is not None and key.kid:
            index.setdefault(key.kid, []).append(key)
    return {kid: tuple(keys) for kid, keys in index.items()}


def _import_verification_key(member: object) -> Key | None:
    if not isinstance(member, dict) or member.get("kty") not in ("RSA", "EC", "OKP"):
        return None  # "oct" included: a published symmetric key is never trusted
    if member.get("use", "sig") != "sig":
        return None
    if "key_ops" in member and "verify" not in (member["key_ops"] or ()):
        return None
    public = {name: value for name, value in member.items()
              if name not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)  # small RSA: checked below
            key = import_key(public, public["kty"])
    except (JoseError, ValueError, TypeError, KeyError) as error:
        log.warning("skipping an unusable JWK %r: %s", member.get("kid"), error)
        return None
    if isinstance(key, RSAKey) and key.public_key.key_size < 2048:
        # RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used".
        return None
    assert isinstance(key, RSAKey | ECKey | OKPKey)
    return key


def _freshness(headers: httpx.Headers, default: float) -> float:
    """Seconds the JWK Set stays fresh: max-age - Age (RFC 9111 §4.2), capped at a day."""
    max_age: float | None = None
    for directive in headers.get("cache-control", "").split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            max_age = 0.0
            break
        if name == "max-age":
            try:
                max_age = float(int(value.strip().strip('"')))
            except ValueError:
                max_age = None
    if max_age is None:
        return min(default, MAX_CACHE_TTL)
    try:
        age = float(int(headers.get("age", "0")))
    except ValueError:
        age = 0.0
    return min(max(max_age - age, 0.0), MAX_CACHE_TTL)
