"""RFC 6749 §4.4 Client Credentials Grant, on Authlib's ``ClientCredentialsGrant``.

Handles Authlib's traps on purpose: it would silently drop disallowed scopes
(we reject them, §3.3), it knows nothing of audiences (RFC 8707), and its
default token lifetime is 10 days (we use the client's TTL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import grants

from issuer.errors import InvalidClient, InvalidScope, UnauthorizedClient
from issuer.oauth.audience import resolve_audience
from issuer.oauth.scopes import ScopeDenied, resolve_scopes

ADMIN_SCOPES = frozenset({"admin", "integrator"})


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]  # Authlib's classes are untyped
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post",
                                   "private_key_jwt", "client_secret_jwt"]

    def authenticate_token_endpoint_client(self) -> Any:
        # A client assertion authenticated before the grant ran (its jti was spent
        # in between, asynchronously); every other method authenticates here.
        authenticated = self.request.authenticated
        if authenticated is not None:
            self.request.client = authenticated
            self.request.auth_method = self.request.claimed.method
            return authenticated
        return super().authenticate_token_endpoint_client()

    def grant(self) -> Granted:
        """Authenticate the client and decide the token's scopes and audience. Pure CPU."""
        # §4.4.2: "The authorization server MUST authenticate the client."
        client = self.authenticate_token_endpoint_client()
        record = client.record
        if not record.active:
            raise InvalidClient(reason="client_disabled")
        if record.tenant_status != "active":
            raise InvalidClient(reason="tenant_disabled")
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClient(reason="grant_type_not_allowed")
        self.request.client = client
        form = self.request.form
        try:
            scopes = resolve_scopes(form.get("scope"), record.allowed_scopes,
                                    record.default_scopes)
        except ScopeDenied as denied:
            raise InvalidScope(
                "Scope not allowed for this client: " + " ".join(denied.denied),
                reason="scope_not_allowed", details={"invalidScopes": denied.denied},
            ) from None
        audience = resolve_audience(record, self.request.resources, form.get("audience"),
                                    self.server.default_audience)
        # The issuer is its own resource server (the admin API); a token granting
        # an admin scope carries the issuer's URL among its audiences.
        if ADMIN_SCOPES & set(scopes) and self.server.issuer not in audience:
            audience.append(self.server.issuer)
        return Granted(client, tuple(scopes), tuple(audience))

    def validate_token_request(self) -> None:
        """Authlib's entry point, kept for its interface: :meth:`grant` decides, and
        ``IssuerAuthorizationServer.issue`` builds the token from what it returns."""
        self.grant()

    def create_token_response(self) -> Any:
        raise NotImplementedError("IssuerAuthorizationServer.issue builds the token from grant()")


@dataclass(frozen=True, slots=True)
class Granted:
    """What the grant decided: the authenticated client, the scopes, the audience."""

    client: Any  # issuer.oauth.server._Client (Authlib's view of the ClientRecord)
    scopes: tuple[str, ...]
    audience: tuple[str, ...]
