"""Federated client credentials (``federated_jwt``): a client authenticates with a JWT its
platform gave it -- a Kubernetes projected service-account token, a CI job's OIDC
token, a SPIFFE JWT-SVID -- sent as an RFC 7523 §2.2 client assertion with its
``client_id``::

    client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
    client_assertion=<the external JWT>&client_id=<the client>

It is told apart from ``private_key_jwt`` (``issuer.oauth.client_auth.identify``): a
private_key_jwt assertion is self-issued (``iss`` and ``sub`` are the client_id), an
external token names its issuer in ``iss`` and the workload in ``sub``.

The steps, I/O first and Authlib's check without I/O, as for private_key_jwt
(``issuer.oauth.assertions``):

1. the token's ``iss`` must be one of the *client's tenant's* trusted issuers
   (``issuer.store.trusted_issuers``; another tenant's is never looked at), active,
   named by one of the client's federated credentials, and its ``alg`` one the
   trusted issuer allows (``none`` and HMAC never are);
2. the issuer's keys (:class:`FederationKeys`): its ``jwks_uri``, or the one its
   ``{issuer}/.well-known/openid-configuration`` names, fetched through the outbound
   guard (``issuer.outbound``), cached per ``Cache-Control`` (at most a day), an
   unknown ``kid`` refetched at most once per 30 s per issuer, the last good set kept
   while the issuer is unreachable (``jwks.sources.JWKSKeySource``);
3. :class:`FederatedJWT`, registered into Authlib: the signature by one of those keys
   with an allowed ``alg``; ``exp`` not passed, ``iat`` at most the issuer's
   ``max_token_age`` ago, ``nbf`` reached (each with :data:`LEEWAY`); ``sub`` matching
   one of the client's credentials for that issuer (exactly, or a prefix ending in
   ``*``) and ``aud`` holding that credential's audience (default: this issuer's token
   endpoint URL);
4. the rate limits (``admit``), then the token's ``jti``, when it carries one, spent
   in the replay store as a private_key_jwt assertion's is.

Every refusal is ``invalid_client`` with the one public text; the precise reason
(``untrusted_issuer``, ``unknown_kid``, ``bad_signature``, ``expired``, ``too_old``,
``wrong_audience``, ``subject_mismatch``, ``disallowed_alg``, ...) goes to the audit event.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning
from joserfc.jwk import Key
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from issuer.clock import Clock
from issuer.errors import InvalidClient
from issuer.oauth.client_auth import FEDERATED_JWT, ClaimedClient
from issuer.oauth.replay import ReplayStore
from issuer.oauth.rfc7523 import MAX_JTI_LENGTH
from issuer.store import trusted_issuers
from issuer.store.bounds import bounded
from issuer.store.records import ClientRecord, FederatedCredential, TrustedIssuerRecord
from jwks.errors import KeySetUnavailable
from jwks.sources import JWKSKeySource, key_fits

#: Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` (seconds).
LEEWAY = 30
#: Keys tried for one token at most (a token without ``kid``, a large set).
MAX_CANDIDATES = 10
#: Issuers' key sets cached per process, at most (each at most
#: ``jwks.sources.MAX_DOCUMENT_BYTES`` as fetched).
MAX_CACHED_SOURCES = 1_000
#: A trusted issuer's key set is refetched for an unknown ``kid`` at most this often.
MIN_REFETCH_INTERVAL = 30.0
#: Freshness of a key set whose answer says nothing (``Cache-Control`` absent).
DEFAULT_MAX_AGE = 300.0
#: How long past its freshness the last good key set serves while the issuer is down.
MAX_STALE = 86_400.0
_LONGEST_ISSUER = 2000


@dataclass(frozen=True)
class FederatedKeys:
    """What Authlib's step needs, preloaded: the trusted issuer, the client's credentials
    for it, the candidate keys and the default audience."""

    trusted: TrustedIssuerRecord
    credentials: tuple[FederatedCredential, ...]
    candidates: tuple[tuple[str, Key], ...]
    default_audience: str


class OIDCKeySource(JWKSKeySource):
    """``JWKSKeySource`` discovering ``jwks_uri`` the OpenID Connect way: Discovery 1.0
    §4 appends ``/.well-known/openid-configuration`` to the issuer (RFC 8414 inserts
    its suffix before the path instead); §4.3: the document's ``issuer`` "MUST exactly
    match" the one it was fetched for."""

    def _metadata_url(self, issuer: str) -> str:
        return issuer.rstrip("/") + "/.well-known/openid-configuration"


class FederationKeys:
    """The trusted issuers' public keys, one cached source per ``issuer`` and
    ``jwks_uri``: tenants trusting the same issuer share its (public) keys and its
    refetch budget, and a changed ``jwks_uri`` starts a new cache."""

    def __init__(self, http: httpx.AsyncClient, clock: Clock, *,
                 min_refetch_interval: float = MIN_REFETCH_INTERVAL,
                 default_max_age: float = DEFAULT_MAX_AGE, max_stale: float = MAX_STALE
                 ) -> None:
        self._http = http
        self._clock = clock
        self._min_refetch_interval = min_refetch_interval
        self._default_max_age = default_max_age
        self._max_stale = max_stale
        self._sources: dict[tuple[str, str | None], OIDCKeySource] = {}

    async def candidates(self, trusted: TrustedIssuerRecord, alg: str,
                         kid: str | None) -> tuple[tuple[str, Key], ...]:
        """The keys of ``trusted`` that may have signed a token of ``alg`` and ``kid``."""
        source = self._source(trusted)
        try:
            found = await source.get(kid) if kid is not None else await source.all_keys()
        except KeySetUnavailable:
            raise InvalidClient(reason="issuer_keys_unavailable") from None
        fitting = [(key.kid or "", key) for key in found if key_fits(key, alg)]
        if not fitting:
            raise InvalidClient(reason="unknown_kid" if kid is not None else "no_key_for_alg")
        return tuple(fitting[:MAX_CANDIDATES])

    def _source(self, trusted: TrustedIssuerRecord) -> OIDCKeySource:
        key = (trusted.issuer, trusted.jwks_uri)
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= MAX_CACHED_SOURCES:
                self._sources.clear()
            source = OIDCKeySource(issuer=trusted.issuer, jwks_uri=trusted.jwks_uri,
                                   http_client=self._http, clock=self._clock,
                                   min_refetch_interval=self._min_refetch_interval,
                                   default_max_age=self._default_max_age,
                                   max_stale=self._max_stale)
            self._sources[key] = source
        return source


class _Authenticates(Protocol):
    """The sync half: ``IssuerAuthorizationServer.authenticate`` (typed narrowly: no cycle)."""

    def authenticate(self, form: Mapping[str, str], headers: Mapping[str, str],
                     claimed: ClaimedClient, record: ClientRecord, keys: Any,
                     endpoint: str) -> Any: ...


class FederatedAuthenticator:
    """Authenticates a client by an external token: trusted issuer, keys, Authlib, the
    ``jti`` (module docstring)."""

    def __init__(self, engine: AsyncEngine, keys: FederationKeys, replay: ReplayStore,
                 issuer: _Authenticates, *, token_endpoint: str) -> None:
        self._engine = engine
        self._keys = keys
        self._replay = replay
        self._issuer = issuer
        self._token_endpoint = token_endpoint

    async def authenticate(self, form: Mapping[str, str], headers: Mapping[str, str],
                           claimed: ClaimedClient, record: ClientRecord,
                           endpoint: str = "token",
                           admit: Callable[[], Awaitable[None]] | None = None) -> Any:
        assertion = claimed.assertion
        assert assertion is not None
        if FEDERATED_JWT not in record.auth_methods or not record.federated_credentials:
            raise InvalidClient(reason="auth_method_not_allowed")
        issuer = assertion.issuer
        if not issuer or len(issuer) > _LONGEST_ISSUER:
            raise InvalidClient(reason="untrusted_issuer")
        # The client's own tenant's trusted issuers only: another tenant's never counts.
        trusted = await bounded(self._trusted(record.tenant_id, issuer))
        if trusted is None:
            raise InvalidClient(reason="untrusted_issuer")
        if not trusted.active:
            raise InvalidClient(reason="trusted_issuer_disabled")
        credentials = tuple(credential for credential in record.federated_credentials
                            if credential.trusted_issuer_id == trusted.id)
        if not credentials:
            raise InvalidClient(reason="issuer_not_in_client_credentials")
        if assertion.alg not in trusted.allowed_algorithms:
            # Before any key is fetched: "none", HMAC (a public key never keys one).
            raise InvalidClient(reason="disallowed_alg")
        keys = FederatedKeys(trusted, credentials,
                             await self._keys.candidates(trusted, assertion.alg, assertion.kid),
                             self._token_endpoint)
        client = self._issuer.authenticate(form, headers, claimed, record, keys, endpoint)
        if admit is not None:
            await admit()
        if assertion.jti is not None:
            # Verified: the claims read before Authlib ran are the signed ones. The token
            # is refused after exp or after iat + max_token_age, whichever comes first.
            assert assertion.exp is not None and assertion.iat is not None
            until = min(assertion.exp, assertion.iat + trusted.max_token_age) + LEEWAY
            if not await self._replay.use(record.client_id, assertion.jti, until):
                raise InvalidClient(reason="jti_replayed")
        return client

    async def _trusted(self, tenant_id: str, issuer: str) -> TrustedIssuerRecord | None:
        async with AsyncSession(self._engine) as session:
            return await trusted_issuers.by_issuer(session, tenant_id, issuer)


class FederatedJWT:
    """The ``federated_jwt`` client-auth method, registered into Authlib: verifies the
    external token against the preloaded :class:`FederatedKeys` (``client.federation``)
    on this server's clock. Pure CPU."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def __call__(self, query_client: Callable[[str], Any], request: Any) -> Any:
        claimed: ClaimedClient = request.claimed
        if claimed.method != FEDERATED_JWT:
            return None  # another method's request; Authlib tries that one
        client = request.preloaded_client
        if client is None or client.get_client_id() != claimed.client_id:
            raise InvalidClient(reason="unknown_client")
        if not client.check_endpoint_auth_method(FEDERATED_JWT, "token"):
            raise InvalidClient(reason="auth_method_not_allowed")
        keys: FederatedKeys | None = client.federation
        assert claimed.assertion is not None
        if keys is None or not keys.candidates:
            raise InvalidClient(reason="unknown_kid")
        claims = self.verify(claimed.assertion.raw, keys)
        client.secret_used = "none"
        client.federated_identity = (claims["iss"], claims["sub"])
        return client

    def verify(self, token: str, keys: FederatedKeys) -> dict[str, Any]:
        """The signature, then the claims; the claims, or InvalidClient with the reason."""
        trusted = keys.trusted
        for _, key in keys.candidates:
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
                    decoded = jwt.decode(token, key, algorithms=list(trusted.allowed_algorithms))
            except BadSignatureError:
                continue
            except (JoseError, ValueError, TypeError, KeyError) as error:
                raise InvalidClient(reason=f"external_token_rejected: "
                                           f"{type(error).__name__}") from None
            claims: dict[str, Any] = decoded.claims
            self._check_claims(claims, keys)
            return claims
        raise InvalidClient(reason="bad_signature")

    def _check_claims(self, claims: dict[str, Any], keys: FederatedKeys) -> None:
        now = self._clock.now()
        trusted = keys.trusted
        if claims.get("iss") != trusted.issuer:
            raise InvalidClient(reason="untrusted_issuer")
        exp, iat = _date(claims, "exp"), _date(claims, "iat")
        nbf = _date(claims, "nbf") if "nbf" in claims else None
        if exp + LEEWAY <= now:
            raise InvalidClient(reason="expired")
        if nbf is not None and nbf > now + LEEWAY:
            raise InvalidClient(reason="not_yet_valid")
        if iat > now + LEEWAY:
            raise InvalidClient(reason="issued_in_the_future")
        if now - iat > trusted.max_token_age + LEEWAY:
            raise InvalidClient(reason="too_old")
        jti = claims.get("jti")
        if jti is not None and (not isinstance(jti, str) or not jti
                                or len(jti) > MAX_JTI_LENGTH):
            raise InvalidClient(reason="invalid_claim: jti")
        subject, audience = claims.get("sub"), claims.get("aud")
        if not isinstance(subject, str) or not subject:
            raise InvalidClient(reason="missing_claim: sub")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not audiences:
            raise InvalidClient(reason="missing_claim: aud")
        matching = [credential for credential in keys.credentials
                    if subject_matches(credential.subject, subject)]
        if not matching:
            raise InvalidClient(reason="subject_mismatch")
        if not any((credential.audience or keys.default_audience) in audiences
                   for credential in matching):
            raise InvalidClient(reason="wrong_audience")


def subject_matches(pattern: str, subject: str) -> bool:
    """``pattern`` exactly, or -- ending in ``*`` -- any subject starting with the rest."""
    if pattern.endswith("*"):
        return subject.startswith(pattern[:-1])
    return subject == pattern


def _date(claims: Mapping[str, Any], name: str) -> float:
    """A required NumericDate claim (RFC 7519 §2); InvalidClient naming it otherwise."""
    value = claims.get(name)
    if value is None:
        raise InvalidClient(reason=f"missing_claim: {name}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidClient(reason=f"invalid_claim: {name}")
    return float(value)
