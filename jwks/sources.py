"""Where a verifier finds an issuer's public keys: the :class:`KeySource` seam.

A verifier asks its source for the keys published under one ``kid``; the source
decides how to get them. Two sources live here (both import nothing from ``issuer``):

- :class:`JWKSKeySource` fetches the JWK Set over HTTP (RFC 7517 §5), discovering
  ``jwks_uri`` through RFC 8414 §3.1 when it is not given (§3.3: "The 'issuer' value
  returned MUST be identical to the authorization server's issuer identifier value").
  The set is cached for ``Cache-Control: max-age`` minus ``Age`` (RFC 9111 §4.2.1,
  §5.2.2.1; absent: ``default_max_age``). An unknown ``kid`` causes one refetch, at
  most one per ``min_refetch_interval`` whatever the cause, and concurrent callers
  share it. After one good fetch, fetch errors do not fail known keys for up to
  ``max_stale`` seconds past freshness.
- :class:`StaticKeySource` holds a JWK Set given once (a test's, or one configured
  by hand).

The issuer itself verifies its own tokens through a third source that reads its key
ring (``issuer.keys.local``, on the issuer's side of the fence).

Only verification keys are kept: RSA (2048 bits or more, RFC 7518 §3.3), EC and OKP
members with ``use`` ``sig`` (or none) and, if ``key_ops`` is given, ``verify``;
private members are stripped and symmetric (``oct``) keys are never trusted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

from jwks.errors import KeySetUnavailable

log = logging.getLogger(__name__)

#: A JWK Set is never trusted as fresh for longer than a day, whatever max-age says.
MAX_CACHE_TTL = 86_400.0
#: The largest JWK Set document read (a few dozen keys fit in a few kilobytes).
MAX_DOCUMENT_BYTES = 256 * 1024
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

KeyIndex = Mapping[str, tuple[Key, ...]]

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
#: The asymmetric JWS algorithms a key source's keys can verify (and nothing else).
ASYMMETRIC_ALGORITHMS = frozenset(_KEY_FOR_ALG)


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock, UTC)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class KeySource(Protocol):
    """The public keys of one issuer, by ``kid``."""

    async def get(self, kid: str) -> tuple[Key, ...]:
        """The published keys with this ``kid`` -- none when there is no such key (after
        whatever refetch the source allows). Raises :class:`KeySetUnavailable` when the
        keys cannot be obtained at all."""
        ...

    async def aclose(self) -> None:
        """Release what the source opened (an HTTP client, a fetch in flight)."""
        ...


class StaticKeySource:
    """A JWK Set given once; ``get`` never does I/O."""

    def __init__(self, document: object) -> None:
        self._keys = index_key_set(document)

    async def get(self, kid: str) -> tuple[Key, ...]:
        return self._keys.get(kid, ())

    async def all_keys(self) -> tuple[Key, ...]:
        """Every key of the set (for a JWS whose header names no ``kid``)."""
        return tuple(key for keys in self._keys.values() for key in keys)

    async def aclose(self) -> None:
        return None


class JWKSKeySource:
    """A JWK Set fetched over HTTP and cached (module docstring).

    ``http_client`` is used as given and never closed here; without one, the source
    opens its own (5 s timeout) and :meth:`aclose` closes it. Give ``jwks_uri``, or
    ``issuer`` for RFC 8414 discovery, or both.
    """

    def __init__(
        self,
        *,
        issuer: str | None = None,
        jwks_uri: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        min_refetch_interval: float = 30.0,
        default_max_age: float = 300.0,
        max_stale: float = 86_400.0,
    ) -> None:
        if not issuer and not jwks_uri:
            raise ValueError("a JWKS key source needs jwks_uri or an issuer to discover it")
        if min(min_refetch_interval, default_max_age, max_stale) < 0:
            raise ValueError("intervals must not be negative")
        self.issuer = issuer
        self.min_refetch_interval = min_refetch_interval
        self.default_max_age = default_max_age
        self.max_stale = max_stale
        self._jwks_uri = jwks_uri
        self._clock: Clock = clock or SystemClock()
        self._http = http_client
        self._owns_http = http_client is None
        self._keys: KeyIndex | None = None
        self._fresh_until = -math.inf
        self._last_attempt: float | None = None
        self._last_error = "the key set was never fetched"
        self._inflight: asyncio.Task[None] | None = None

    @property
    def jwks_uri(self) -> str | None:
        """The JWK Set's URL: as given, or once discovered."""
        return self._jwks_uri

    async def __aenter__(self) -> JWKSKeySource:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop a fetch in flight; close the HTTP client if the source opened it."""
        if self._inflight is not None:
            self._inflight.cancel()
            self._inflight = None
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def get(self, kid: str) -> tuple[Key, ...]:
        """The keys for ``kid``, refetching the set when stale or when ``kid`` is new."""
        return (await self._current(kid)).get(kid, ())

    async def all_keys(self) -> tuple[Key, ...]:
        """Every key of the set (for a JWS whose header names no ``kid``), refetching
        the set when stale."""
        return tuple(key for keys in (await self._current(None)).values() for key in keys)

    async def _current(self, kid: str | None) -> KeyIndex:
        now = self._clock.now()
        needs_fetch = (self._keys is None or now >= self._fresh_until
                       or (kid is not None and kid not in self._keys))
        if needs_fetch:
            if self._inflight is not None and self._inflight.done():
                self._inflight = None  # cancelled before it ran (aclose)
            if self._inflight is None and self._may_fetch(now):
                self._inflight = asyncio.get_running_loop().create_task(self._refresh())
            if self._inflight is not None:
                # Single flight: everyone who needs the set awaits the one fetch;
                # shield() keeps a cancelled caller from cancelling it for the others.
                await asyncio.shield(self._inflight)
        if self._keys is None:
            raise KeySetUnavailable(self._last_error)
        if self._clock.now() >= self._fresh_until + self.max_stale:
            raise KeySetUnavailable(f"the cached key set is too stale; {self._last_error}")
        return self._keys

    def _may_fetch(self, now: float) -> bool:
        if self._last_attempt is None:
            return True
        elapsed = now - self._last_attempt
        return elapsed < 0 or elapsed >= self.min_refetch_interval  # < 0: the clock went back

    async def _refresh(self) -> None:
        self._last_attempt = self._clock.now()
        try:
            keys, ttl = await self._fetch()
        except KeySetUnavailable as error:
            self._last_error = str(error)
            log.warning("JWKS fetch for %s failed: %s", self.issuer or self._jwks_uri, error)
        else:
            self._keys = keys
            self._fresh_until = self._clock.now() + ttl
        finally:
            self._inflight = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0)
        return self._http

    async def _fetch(self) -> tuple[KeyIndex, float]:
        client = self._client()
        try:
            if self._jwks_uri is None:
                assert self.issuer is not None
                self._jwks_uri = await self._discover(client, self.issuer)
            status, headers, body = await _get(
                client, self._jwks_uri, "application/jwk-set+json, application/json")
            if status != 200:
                raise KeySetUnavailable(f"GET {self._jwks_uri} answered {status}")
            keys = index_key_set(json.loads(body))
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
            raise KeySetUnavailable(f"fetching the key set failed: {error!r}") from error
        return keys, freshness(headers, self.default_max_age)

    def _metadata_url(self, issuer: str) -> str:
        """Where ``issuer``'s metadata lies: RFC 8414 §3.1 (a subclass may differ)."""
        return metadata_url(issuer)

    async def _discover(self, client: httpx.AsyncClient, issuer: str) -> str:
        url = self._metadata_url(issuer)
        status, _, body = await _get(client, url, "application/json")
        if status != 200:
            raise KeySetUnavailable(f"GET {url} answered {status}")
        metadata = json.loads(body)
        if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
            # RFC 8414 §3.3: "If these values are not identical, the data contained in
            # the response MUST NOT be used."
            raise KeySetUnavailable(f"{url} describes another issuer")
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise KeySetUnavailable(f"{url} has no jwks_uri")
        return jwks_uri


async def _get(client: httpx.AsyncClient, url: str,
               accept: str) -> tuple[int, httpx.Headers, bytes]:
    """GET ``url``, reading at most :data:`MAX_DOCUMENT_BYTES` of the body."""
    async with client.stream("GET", url, headers={"Accept": accept}) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
        return response.status_code, response.headers, bytes(body)


def metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: the well-known suffix goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc,
                       f"/.well-known/oauth-authorization-server{path}", "", ""))


def index_key_set(document: object) -> dict[str, tuple[Key, ...]]:
    """RFC 7517 §5 JWK Set -> kid -> keys. Unusable members are skipped (§5: "Implementations
    SHOULD ignore JWKs within a JWK Set that use 'kty' values that are not understood")."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")
    index: dict[str, list[Key]] = {}
    for member in document["keys"]:
        key = import_verification_key(member)
        if key is not None and key.kid:
            index.setdefault(key.kid, []).append(key)
    return {kid: tuple(keys) for kid, keys in index.items()}


def import_verification_key(member: object) -> Key | None:
    """One JWK as a public verification key, or None when it cannot be one."""
    if not isinstance(member, dict) or member.get("kty") not in ("RSA", "EC", "OKP"):
        return None  # "oct" included: a published symmetric key is never trusted
    if member.get("use", "sig") != "sig":
        return None
    if "key_ops" in member and "verify" not in (member["key_ops"] or ()):
        return None
    public = {name: value for name, value in member.items() if name not in _PRIVATE_MEMBERS}
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


def key_fits(key: Key, alg: str) -> bool:
    """RFC 8725 §3.1: ``alg`` fits the key's ``kty`` (and ``crv``, and ``alg`` if set)."""
    if alg not in _KEY_FOR_ALG:
        return False
    kty, curves = _KEY_FOR_ALG[alg]
    if key.key_type != kty or key.alg not in (None, alg):
        return False
    return curves is None or key.get("crv") in curves


def freshness(headers: httpx.Headers, default: float) -> float:
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
