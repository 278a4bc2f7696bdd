"""JWT client authentication: RFC 7523 §2.2 and §3, OpenID Connect Core §9, on Authlib's
``JWTBearerClientAssertion`` -- registered under the standard names ``private_key_jwt``
and ``client_secret_jwt`` (Authlib would call it ``client_assertion_jwt``).

Pure CPU, like the rest of Authlib's part: :func:`read_assertion` reads the
presented assertion before anything is loaded (it names the client and the key); the
keys are preloaded asynchronously (``issuer.oauth.assertions``) onto the client; the
classes below verify signature and claims on those values; the ``jti`` is spent
afterwards, asynchronously, in the replay store. Every failure is ``invalid_client``
with the one public text; the reason goes to the audit event.

The claims (RFC 7523 §3):
- ``iss`` and ``sub`` are the ``client_id``: "The JWT MUST contain a 'sub' (subject)
  claim ... the subject MUST be the 'client_id' of the OAuth client."
- ``aud``: "The JWT MUST contain an 'aud' (audience) claim containing a value that
  identifies the authorization server as an intended audience" -- the issuer identifier
  or the token endpoint URL. The introspection and revocation endpoint URLs identify
  this server too and are accepted as well: clients such as Authlib's put the URL
  they post to in ``aud`` when they authenticate at /introspect or /revoke (RFC 7662
  §2.1, RFC 7009 §2.1: "as at the token endpoint"). The ``jti`` is single-use at all
  three endpoints alike.
- ``exp``: "The JWT MUST contain an 'exp' (expiration time) claim"; and this server
  accepts at most :data:`MAX_LIFETIME` seconds between ``iat`` (or now) and ``exp``,
  so that the replay store holds each ``jti`` for minutes, not days.
- ``jti``: required here (§3 makes it optional; OIDC Core §9 REQUIRED), single-use
  until the assertion expires.

Algorithms: ``private_key_jwt`` accepts only asymmetric ones (a public key never acts
as an HMAC secret, RFC 8725 §3.1); ``client_secret_jwt`` HS256 and HS384 -- RFC 7518
§3.2: "A key of the same size as the hash output ... or larger MUST be used", and the
secrets this server issues are 48 octets, too short for HS512.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeGuard

from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
    SecurityWarning,
)
from joserfc.jwk import Key

from issuer.clock import Clock
from issuer.errors import InvalidClient

#: RFC 7523 §2.2: the ``client_assertion_type`` of a JWT client assertion.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The longest an assertion may live, ``exp - iat`` (seconds).
MAX_LIFETIME = 300
#: Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` (seconds).
LEEWAY = 60
#: The longest ``jti`` kept (the replay store's column).
MAX_JTI_LENGTH = 255
#: A client assertion larger than this is not read (a JWS over a few claims is ~1 KiB).
MAX_ASSERTION_LENGTH = 8 * 1024
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
HMAC_ALGORITHMS = ("HS256", "HS384")


@dataclass(frozen=True)
class ClientAssertion:
    """An RFC 7523 client assertion as presented: read, not verified yet."""

    raw: str
    alg: str
    kid: str | None
    client_id: str  # its ``sub``
    jti: str | None
    exp: float | None
    #: Its ``iss``: the client itself for private_key_jwt; an external issuer for a
    #: federated credential (``issuer.oauth.federation``).
    issuer: str | None = None
    iat: float | None = None

    @property
    def method(self) -> str:
        """The client-auth method the assertion's ``alg`` means."""
        return "client_secret_jwt" if self.alg.startswith("HS") else "private_key_jwt"


@dataclass
class AssertionKeys:
    """The keys an assertion may be verified with, loaded before Authlib runs, each
    labelled (``current``/``previous`` secret, or the JWK's ``kid``); ``used`` tells
    afterwards which one verified it."""

    candidates: Sequence[tuple[str, Key]]
    used: str | None = field(default=None)


def read_assertion(form: Mapping[str, str]) -> ClientAssertion:
    """RFC 7521 §4.2 parameters: ``client_assertion_type`` and ``client_assertion``.
    Reads the header and claims without trusting them; raises InvalidClient."""
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise InvalidClient(reason="unsupported_client_assertion_type")
    raw = form.get("client_assertion", "")
    if not raw or len(raw) > MAX_ASSERTION_LENGTH:
        raise InvalidClient(reason="missing_or_oversized_client_assertion")
    parts = raw.split(".")
    if len(parts) != 3:
        raise InvalidClient(reason="client_assertion_not_a_jws")
    try:
        header, claims = (json.loads(_b64decode(part)) for part in parts[:2])
    except (ValueError, binascii.Error):
        raise InvalidClient(reason="client_assertion_not_a_jws") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidClient(reason="client_assertion_not_a_jws")
    alg, kid, sub = header.get("alg"), header.get("kid"), claims.get("sub")
    if not isinstance(alg, str) or not alg:
        raise InvalidClient(reason="client_assertion_without_alg")
    if not isinstance(sub, str) or not sub:
        # RFC 7523 §3: the subject "MUST be the 'client_id' of the OAuth client".
        raise InvalidClient(reason="client_assertion_without_sub")
    jti, exp, iss, iat = (claims.get(name) for name in ("jti", "exp", "iss", "iat"))
    return ClientAssertion(
        raw=raw, alg=alg, kid=kid if isinstance(kid, str) and kid else None, client_id=sub,
        jti=jti if isinstance(jti, str) else None,
        exp=float(exp) if _is_numeric_date(exp) else None,
        issuer=iss if isinstance(iss, str) else None,
        iat=float(iat) if _is_numeric_date(iat) else None)


class _JWTClientAuth(JWTBearerClientAssertion):  # type: ignore[misc]  # Authlib's classes are untyped
    """One JWT client-auth method on Authlib's class, over preloaded values: the client
    is the request's preloaded one, its keys ``client.assertion_keys``."""

    CLIENT_AUTH_METHOD: ClassVar[str]
    ALGORITHMS: ClassVar[tuple[str, ...]]

    def __init__(self, issuer: str, clock: Clock) -> None:
        super().__init__(validate_jti=True, leeway=LEEWAY)
        self._clock = clock
        self._audiences = [issuer, f"{issuer}/token", f"{issuer}/introspect",
                           f"{issuer}/revoke"]

    def __call__(self, query_client: Callable[[str], Any], request: Any) -> Any:
        claimed = request.claimed
        if claimed.method != self.CLIENT_AUTH_METHOD:
            return None  # another method's request; Authlib tries that one
        preloaded = request.preloaded_client
        if preloaded is None or preloaded.get_client_id() != claimed.client_id:
            raise InvalidClient(reason="unknown_client")
        if not preloaded.check_endpoint_auth_method(self.CLIENT_AUTH_METHOD, "token"):
            # e.g. an HS256 assertion from a client registered for private_key_jwt only.
            raise InvalidClient(reason="auth_method_not_allowed")
        client = super().__call__(
            lambda client_id: preloaded if client_id == claimed.client_id else None, request)
        client.secret_used = client.assertion_keys.used if self.CLIENT_AUTH_METHOD == \
            "client_secret_jwt" else "none"
        return client

    def get_audiences(self) -> list[str]:
        return self._audiences

    def resolve_client_public_key(self, client: Any) -> AssertionKeys:
        keys: AssertionKeys | None = client.assertion_keys
        if keys is None or not keys.candidates:
            raise InvalidClient(reason="no_key_for_client_assertion")
        return keys

    def process_assertion_claims(self, assertion: str, keys: AssertionKeys) -> dict[str, Any]:
        """The signature by one of the preloaded keys, with an allowed ``alg``; then the
        claims. (Authlib's own decode would accept any algorithm joserfc knows.)"""
        for label, key in keys.candidates:
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
                    token = jwt.decode(assertion, key, algorithms=list(self.ALGORITHMS))
            except BadSignatureError:
                continue  # e.g. the previous secret, or another key without a kid
            except (JoseError, ValueError, TypeError, KeyError) as error:
                raise InvalidClient(reason=f"client_assertion_rejected: "
                                           f"{type(error).__name__}") from None
            keys.used = label
            claims: dict[str, Any] = token.claims
            self.verify_claims(claims)
            return claims
        raise InvalidClient(reason="bad_signature")

    def verify_claims(self, claims: dict[str, Any]) -> None:
        """RFC 7523 §3 on this server's clock (module docstring)."""
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock.now()), leeway=self.leeway,
            iss={"essential": True}, sub={"essential": True},
            aud={"essential": True, "values": self._audiences},
            exp={"essential": True}, jti={"essential": True})
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise InvalidClient(reason="client_assertion_expired") from None
        except MissingClaimError as error:
            raise InvalidClient(reason=f"client_assertion_missing_claim: {error.claim}") from None
        except InvalidClaimError as error:
            reason = ("wrong_audience" if error.claim == "aud"
                      else f"client_assertion_invalid_claim: {error.claim}")
            raise InvalidClient(reason=reason) from None
        # §3: "The JWT MUST contain an 'iss' (issuer) claim that contains a unique
        # identifier for the entity that issued the JWT" -- for client authentication,
        # the client itself: iss and sub are both the client_id.
        if claims["iss"] != claims["sub"]:
            raise InvalidClient(reason="iss_is_not_sub")
        jti = claims["jti"]
        if not isinstance(jti, str) or len(jti) > MAX_JTI_LENGTH:
            raise InvalidClient(reason="client_assertion_invalid_claim: jti")
        issued_at = claims.get("iat", self._clock.now())
        if claims["exp"] - issued_at > MAX_LIFETIME:
            raise InvalidClient(reason="client_assertion_lifetime_too_long")

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        """Not here: the replay store is I/O, spent after Authlib returns."""
        return True


class PrivateKeyJWT(_JWTClientAuth):
    """``private_key_jwt`` (OIDC Core §9): signed with the client's private key."""

    CLIENT_AUTH_METHOD = "private_key_jwt"
    ALGORITHMS = ASYMMETRIC_ALGORITHMS


class ClientSecretJWT(_JWTClientAuth):
    """``client_secret_jwt`` (OIDC Core §9): an HMAC keyed with the client secret."""

    CLIENT_AUTH_METHOD = "client_secret_jwt"
    ALGORITHMS = HMAC_ALGORITHMS


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _is_numeric_date(value: object) -> TypeGuard[int | float]:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value))
