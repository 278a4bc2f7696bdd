"""The Authlib adapter: Authlib's synchronous core, run on preloaded values.

Authlib has no async server. The token endpoint loads the client
first (async), then :meth:`IssuerAuthorizationServer.issue` runs Authlib's grant
logic with no I/O at all, and the endpoint writes the result afterwards (async, one
transaction). Authlib's untyped surface stays inside this module and grants.py.

Authlib traps handled here: ``send_signal`` raises unless overridden; the
RFC 9068 generator adds no ``kid`` and would let joserfc pick any key of a set,
so we sign with the active key alone; Authlib's ``OAuth2Request`` refuses
``http://`` URIs unless an environment variable is set, so our request carries
no URI check (TLS is the deployment's job; production demands an https issuer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload

from issuer.clock import Clock
from issuer.errors import InvalidClient, InvalidScope, UnauthorizedClient, from_authlib
from issuer.keys.ring import KeyRing, SigningKey
from issuer.oauth import client_auth
from issuer.oauth.claims import access_token_claims, new_jti
from issuer.oauth.client_auth import FEDERATED_JWT, ClaimedClient
from issuer.oauth.federation import FederatedJWT, FederatedKeys
from issuer.oauth.grants import ClientCredentialsGrant, Granted
from issuer.oauth.rfc7523 import AssertionKeys, ClientSecretJWT, PrivateKeyJWT
from issuer.oauth.scopes import is_scope_token
from issuer.oauth.token_request import TokenRequest
from issuer.oauth.tokens import Introspection, Revocation
from issuer.secrets import verify_secret
from issuer.store.records import ClientRecord


@dataclass(frozen=True)
class IssuedToken:
    """A granted token, not yet signed: the endpoint signs ``claims`` with ``key``
    and persists the record (concurrently), then answers."""

    claims: dict[str, Any]
    key: SigningKey
    jti: str
    client: ClientRecord
    scopes: tuple[str, ...]
    audience: tuple[str, ...]
    issued_at: int
    expires_at: int
    secret_used: str  # "current" | "previous": which secret authenticated the client
    #: RFC 9449: the thumbprint of the DPoP key the token is bound to (``cnf.jkt``).
    jkt: str | None = None

    @property
    def token_type(self) -> str:
        """RFC 9449 §5: "DPoP" for a DPoP-bound token, else RFC 6750's "Bearer"."""
        return "DPoP" if self.jkt is not None else "Bearer"

    def bound_to(self, jkt: str) -> IssuedToken:
        """This token bound to a DPoP key: RFC 9449 §6.1 ``cnf: {"jkt": ...}``."""
        return replace(self, claims={**self.claims, "cnf": {"jkt": jkt}}, jkt=jkt)
    #: federated_jwt: the external token's (iss, sub) that authenticated the client.
    federated: tuple[str, str] | None = None

    def response(self, access_token: str) -> dict[str, Any]:
        """RFC 6749 §5.1. §4.4.3: "A refresh token SHOULD NOT be included."."""
        return {"access_token": access_token, "token_type": self.token_type,
                "expires_in": self.expires_at - self.issued_at, "scope": self.claims["scope"]}

    def response_body(self, access_token: str) -> bytes:
        """:meth:`response` as compact JSON: the bytes ``json.dumps(response,
        separators=(",", ":"))`` makes, without building the dict and an encoder."""
        return (f'{{"access_token":{_json_string(access_token)},'
                f'"token_type":"{self.token_type}",'
                f'"expires_in":{self.expires_at - self.issued_at:d},'
                f'"scope":{_json_string(self.claims["scope"])}}}').encode("ascii")


class _Client(ClientMixin):  # type: ignore[misc]  # Authlib's classes are untyped
    """Authlib's view of a :class:`ClientRecord`."""

    def __init__(self, record: ClientRecord, now: float) -> None:
        self.record = record
        self._now = now
        self.secret_used = "current"
        # The keys a client assertion may be verified with, preloaded (rfc7523).
        self.assertion_keys: AssertionKeys | None = None
        # federated_jwt: the trusted issuer, credentials and keys, preloaded (federation);
        # once verified, the external token's (iss, sub).
        self.federation: FederatedKeys | None = None
        self.federated_identity: tuple[str, str] | None = None

    def get_client_id(self) -> str:
        return self.record.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        if verify_secret(client_secret, self.record.secret_hash):
            self.secret_used = "current"
            return True
        expires = self.record.previous_secret_expires_at
        if expires is not None and self._now < expires and verify_secret(
            client_secret, self.record.previous_secret_hash
        ):
            self.secret_used = "previous"
            return True
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # The same methods at /token, /introspect (RFC 7662 §2.1) and /revoke
        # (RFC 7009 §2.1): each says the client authenticates as at the token endpoint.
        return (endpoint in ("token", "introspection", "revocation")
                and method in self.record.auth_methods)

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.record.grant_types


class _Request(OAuth2Request):  # type: ignore[misc]  # Authlib's classes are untyped
    def __init__(self, form: Mapping[str, str], resources: Sequence[str],
                 headers: Mapping[str, str], claimed: ClaimedClient,
                 client: _Client | None) -> None:
        # Deliberately not calling OAuth2Request.__init__ (it rejects http URIs).
        self.method = "POST"
        self.uri = ""
        self.headers = headers
        self._body = None
        self.payload = BasicOAuth2Payload(dict(form))
        self.client = None
        self.auth_method = None
        self.user = None
        self.authorization_code = None
        self.refresh_token = None
        self.credential = None
        self._scope = None
        self.claimed = claimed
        self.preloaded_client = client
        self.resources = list(resources)
        # Set when the client authenticated before the grant ran (a client assertion,
        # whose jti is spent between the two): the grant takes it as it is.
        self.authenticated: _Client | None = None

    @property
    def form(self) -> dict[str, str]:
        data: dict[str, str] = self.payload.data
        return data


class IssuerAuthorizationServer(AuthorizationServer):  # type: ignore[misc]  # Authlib's classes are untyped
    """Authlib's ``AuthorizationServer`` for this issuer: the client_credentials grant,
    four client authentication methods, introspection and revocation, all run on
    preloaded values (:meth:`issue`, :meth:`mint`, :meth:`authenticate`)."""

    def __init__(self, *, issuer: str, default_audience: str, default_ttl: int,
                 keyring: KeyRing, clock: Clock) -> None:
        super().__init__(scopes_supported=None)
        self.issuer = issuer
        self.default_audience = default_audience
        self.default_ttl = default_ttl
        self.keyring = keyring
        self.clock = clock
        self.register_grant(ClientCredentialsGrant)
        self.register_client_auth_method("client_secret_basic", client_auth.client_secret_basic)
        self.register_client_auth_method("client_secret_post", client_auth.client_secret_post)
        # RFC 7523 §2.2 under the standard names (Authlib: "client_assertion_jwt").
        self.register_client_auth_method("private_key_jwt", PrivateKeyJWT(issuer, clock))
        self.register_client_auth_method("client_secret_jwt", ClientSecretJWT(issuer, clock))
        self.register_client_auth_method(FEDERATED_JWT, FederatedJWT(clock))
        # RFC 7662 and RFC 7009 endpoints, run (like the grant) on preloaded values.
        self.introspection = Introspection(self)
        self.revocation = Revocation(self)
        self.register_endpoint(self.introspection)
        self.register_endpoint(self.revocation)

    def authenticate(self, form: Mapping[str, str], headers: Mapping[str, str],
                     claimed: ClaimedClient, record: ClientRecord,
                     keys: AssertionKeys | FederatedKeys, endpoint: str) -> _Client:
        """Client authentication alone, by a client assertion (or an external token,
        federated_jwt) verified with the preloaded ``keys`` (``issuer.oauth.assertions``,
        ``issuer.oauth.federation``). Pure CPU."""
        client = _Client(record, self.clock.now())
        if isinstance(keys, FederatedKeys):
            client.federation = keys
        else:
            client.assertion_keys = keys
        request = _Request(form, (), headers, claimed, client)
        try:
            authenticated: _Client = self.authenticate_client(request, [claimed.method],
                                                              endpoint)
        except OAuth2Error as error:
            raise from_authlib(error) from None
        return authenticated

    def issue(self, request: TokenRequest, record: ClientRecord, *,
              authenticated: _Client | None = None) -> IssuedToken:
        """Run the client_credentials grant on preloaded values. Pure CPU: no I/O, no
        await. ``authenticated``: the client, already authenticated by
        :meth:`authenticate` (a client assertion).

        The grant is built directly (the endpoint already refused any other
        ``grant_type``), on a request object Authlib's client authentication reads.
        """
        client = authenticated or _Client(record, self.clock.now())
        oauth_request = _Request(request.form, request.resources, request.headers,
                                 request.claimed, client)
        oauth_request.authenticated = authenticated
        try:
            granted = ClientCredentialsGrant(oauth_request, self).grant()
        except OAuth2Error as error:
            raise from_authlib(error) from None
        return self.issue_access_token(granted)

    def issue_access_token(self, granted: Granted) -> IssuedToken:
        """The RFC 9068 claims of what was granted, for the active key.

        Signing happens after the grant returns (``Signer``), while the endpoint
        persists the record: ``IssuedToken`` holds everything both need.
        """
        client: _Client = granted.client
        record = client.record
        issued_at = int(self.clock.now())
        ttl = record.token_ttl or self.default_ttl
        jti = new_jti()
        claims = access_token_claims(
            issuer=self.issuer, client=record, scopes=granted.scopes,
            audience=granted.audience, issued_at=issued_at, ttl=ttl, jti=jti,
        )
        return IssuedToken(
            claims=claims, key=self.keyring.active, jti=jti, client=record,
            scopes=granted.scopes, audience=granted.audience, issued_at=issued_at,
            expires_at=issued_at + ttl, secret_used=client.secret_used,
            federated=client.federated_identity,
        )

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        """Nothing here: the endpoint persists the ``IssuedToken`` :meth:`issue` returns."""

    def query_client(self, client_id: str) -> None:
        """Unused: our client-auth methods read the preloaded client."""
        return None

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib raises NotImplementedError here by default; we have no signals."""

    def mint(self, record: ClientRecord, scopes: Sequence[str]) -> IssuedToken:
        """A token for ``record`` as if it had asked itself (POST /auth/m2m/token).

        The very grant of POST /token runs -- client and tenant active,
        ``client_credentials`` allowed, scopes (none = the client's defaults),
        audience and claims -- with one step swapped: an administrator, already
        authorized by the caller, names the client instead of its credentials.
        Pure CPU, like :meth:`issue`.
        """
        # A JSON list carries scopes one by one; one that is not a single RFC 6749
        # §3.3 scope-token would be split (or dropped) by the space-joined form.
        malformed = [scope for scope in scopes if not is_scope_token(scope)]
        if malformed:
            raise InvalidScope("Scope not allowed for this client: " + " ".join(malformed),
                               reason="scope_malformed", details={"invalidScopes": malformed})
        form = {"grant_type": "client_credentials"}
        if scopes:
            form["scope"] = " ".join(scopes)
        client = _Client(record, self.clock.now())
        client.secret_used = "none"  # no secret: an administrator asked for the token
        request = _Request(form, (), {}, ClaimedClient(record.client_id, "admin", ""), client)
        try:
            granted = _AdminMintGrant(request, self).grant()
        except InvalidClient as error:
            # Nothing authenticated, so nothing failed to: a disabled client or
            # tenant simply may not get tokens (403, not the 401 of /token).
            raise UnauthorizedClient(reason=error.reason) from None
        except OAuth2Error as error:
            raise from_authlib(error) from None
        return self.issue_access_token(granted)


class _AdminMintGrant(ClientCredentialsGrant):
    """:class:`ClientCredentialsGrant` for :meth:`IssuerAuthorizationServer.mint`: the client is
    the preloaded one, named by an authorized administrator, not authenticated."""

    def authenticate_token_endpoint_client(self) -> _Client:
        client: _Client = self.request.preloaded_client
        return client
