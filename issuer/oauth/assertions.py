"""JWT client authentication, the async half (RFC 7523 §2.2; the sync half is ``rfc7523``).

Authlib runs synchronously on preloaded values, so what needs I/O happens
around it, in :meth:`AssertionAuthenticator.authenticate`:

1. load the keys the assertion may be verified with (:class:`ClientKeys`): the client's
   registered JWK Set, or its ``jwks_uri`` fetched through the injected
   ``httpx.AsyncClient`` (timeout there) and cached per client -- ``Cache-Control``
   honoured, an unknown ``kid`` refetched at most once per 30 s
   (``jwks.sources.JWKSKeySource``, the verifier's own cache); for
   ``client_secret_jwt``, the client secret, decrypted;
2. verify signature and claims on Authlib (``IssuerAuthorizationServer.authenticate``, no I/O);
3. spend the ``jti`` in the replay store (one insert; a second use is refused).

Only requests that carry a client assertion come here: ``client_secret_basic`` and
``client_secret_post`` pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import httpx
from joserfc.jwk import Key, OctKey

from issuer.clock import Clock
from issuer.crypto import DecryptionError, Encryptor
from issuer.errors import InvalidClient
from issuer.oauth.client_auth import FEDERATED_JWT, ClaimedClient
from issuer.oauth.federation import FederatedAuthenticator
from issuer.oauth.replay import ReplayStore
from issuer.oauth.rfc7523 import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    LEEWAY,
    AssertionKeys,
    ClientAssertion,
)
from issuer.secrets import secret_context
from issuer.store.records import ClientRecord
from jwks.errors import KeySetUnavailable
from jwks.sources import JWKSKeySource, StaticKeySource, key_fits

#: Keys tried for one assertion at most (an assertion without ``kid``, a large set).
MAX_CANDIDATES = 10
#: Remote key sets cached per process, at most.
MAX_CACHED_SOURCES = 10_000


class _Authenticates(Protocol):
    """The sync half: ``IssuerAuthorizationServer.authenticate`` (typed narrowly: no cycle)."""

    def authenticate(self, form: Mapping[str, str], headers: Mapping[str, str],
                     claimed: ClaimedClient, record: ClientRecord, keys: AssertionKeys,
                     endpoint: str) -> Any: ...


class ClientKeys:
    """The keys a client's assertions are verified with."""

    def __init__(self, http: httpx.AsyncClient, clock: Clock, encryptor: Encryptor, *,
                 min_refetch_interval: float = 30.0, default_max_age: float = 300.0) -> None:
        self._http = http
        self._clock = clock
        self._encryptor = encryptor
        self._min_refetch_interval = min_refetch_interval
        self._default_max_age = default_max_age
        self._remote: dict[tuple[str, str], JWKSKeySource] = {}
        self._inline: dict[str, tuple[dict[str, Any], StaticKeySource]] = {}

    async def for_assertion(self, record: ClientRecord,
                            assertion: ClientAssertion) -> AssertionKeys:
        if assertion.method == "client_secret_jwt":
            return self._secrets(record, assertion)
        return await self._public(record, assertion)

    def _secrets(self, record: ClientRecord, assertion: ClientAssertion) -> AssertionKeys:
        """OIDC Core §9: the HMAC key is "the octets of the UTF-8 representation of the
        client_secret" -- the current one, and the previous one during its grace."""
        if assertion.alg not in HMAC_ALGORITHMS:
            raise InvalidClient(reason="alg_not_allowed")
        if record.secret_encrypted is None:
            # A secret issued while the client was not allowed client_secret_jwt is
            # kept as a digest only: it cannot key an HMAC (rotate it to enable).
            raise InvalidClient(reason="no_readable_secret")
        context = secret_context(record.client_id)
        try:
            candidates = [("current", OctKey.import_key(
                self._encryptor.decrypt(record.secret_encrypted, context)))]
            grace = record.previous_secret_expires_at
            if (record.previous_secret_encrypted is not None and grace is not None
                    and self._clock.now() < grace):
                candidates.append(("previous", OctKey.import_key(
                    self._encryptor.decrypt(record.previous_secret_encrypted, context))))
        except DecryptionError:
            raise InvalidClient(reason="secret_undecryptable") from None
        return AssertionKeys(candidates)

    async def _public(self, record: ClientRecord, assertion: ClientAssertion) -> AssertionKeys:
        if assertion.alg not in ASYMMETRIC_ALGORITHMS:
            raise InvalidClient(reason="alg_not_allowed")  # "none" included
        source = self._source(record)
        if source is None:
            raise InvalidClient(reason="client_has_no_jwks")
        try:
            found = (await source.get(assertion.kid) if assertion.kid is not None
                     else await source.all_keys())
        except KeySetUnavailable:
            raise InvalidClient(reason="client_jwks_unavailable") from None
        fitting: list[tuple[str, Key]] = [
            (key.kid or "", key) for key in found if key_fits(key, assertion.alg)]
        if not fitting:
            raise InvalidClient(reason="unknown_kid" if assertion.kid else "no_key_for_alg")
        return AssertionKeys(fitting[:MAX_CANDIDATES])

    def _source(self, record: ClientRecord) -> StaticKeySource | JWKSKeySource | None:
        if record.jwks is not None:
            cached = self._inline.get(record.client_id)
            if cached is None or cached[0] != record.jwks:
                if len(self._inline) >= MAX_CACHED_SOURCES:
                    self._inline.clear()
                cached = (record.jwks, StaticKeySource(record.jwks))
                self._inline[record.client_id] = cached
            return cached[1]
        if record.jwks_uri is not None:
            key = (record.client_id, record.jwks_uri)
            remote = self._remote.get(key)
            if remote is None:
                if len(self._remote) >= MAX_CACHED_SOURCES:
                    self._remote.clear()
                remote = JWKSKeySource(jwks_uri=record.jwks_uri, http_client=self._http,
                                       clock=self._clock,
                                       min_refetch_interval=self._min_refetch_interval,
                                       default_max_age=self._default_max_age)
                self._remote[key] = remote
            return remote
        return None


class AssertionAuthenticator:
    """Authenticates a client by its assertion: keys, Authlib, the ``jti`` (module doc)."""

    def __init__(self, keys: ClientKeys, replay: ReplayStore, issuer: _Authenticates,
                 federation: FederatedAuthenticator | None = None) -> None:
        self._keys = keys
        self._replay = replay
        self._issuer = issuer
        # federated_jwt: an external token instead of the client's own assertion.
        self._federation = federation

    async def authenticate(self, form: Mapping[str, str], headers: Mapping[str, str],
                           claimed: ClaimedClient, record: ClientRecord,
                           endpoint: str = "token",
                           admit: Callable[[], Awaitable[None]] | None = None) -> Any:
        """The authenticated client (Authlib's view), ready for the grant or endpoint.

        ``admit`` runs once the assertion is verified and before its ``jti`` is
        spent (the token endpoint's rate limits: a refused request writes nothing).
        """
        if claimed.method == FEDERATED_JWT:
            if self._federation is None:
                raise InvalidClient(reason="auth_method_not_allowed")
            return await self._federation.authenticate(form, headers, claimed, record,
                                                       endpoint, admit)
        assertion = claimed.assertion
        assert assertion is not None
        if assertion.method not in record.auth_methods:
            # Before any key is loaded (or fetched): e.g. an HS256 assertion from a
            # private_key_jwt client, whose public key must never key an HMAC.
            raise InvalidClient(reason="auth_method_not_allowed")
        keys = await self._keys.for_assertion(record, assertion)
        client = self._issuer.authenticate(form, headers, claimed, record, keys, endpoint)
        # Verified: the claims read before Authlib ran are the signed ones, and Authlib's
        # step has required jti and exp.
        if assertion.jti is None or assertion.exp is None:
            raise InvalidClient(reason="client_assertion_missing_claim: jti or exp")
        if admit is not None:
            await admit()
        # RFC 7523 §3: "The authorization server MAY ensure that JWTs are not replayed";
        # an assertion is accepted until exp + leeway, so its jti is kept that long.
        if not await self._replay.use(record.client_id, assertion.jti,
                                      assertion.exp + LEEWAY):
            raise InvalidClient(reason="jti_replayed")
        return client
