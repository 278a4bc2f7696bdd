"""RFC 6749 §4.4 Client Credentials Grant, on Authlib's ``ClientCredentialsGrant``.

Handles Authlib's traps on purpose: it would silently drop disallowed scopes
(we reject them, §3.3), it knows nothing of audiences (RFC 8707), and its
default token lifetime is 10 days (we use the client's TTL).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import grants

from issuer.errors import InvalidClient, InvalidScope, UnauthorizedClient
from issuer.oauth.audience import resolve_audience
from issuer.oauth.scopes import ScopeDenied, resolve_scopes

ADMIN_SCOPES = frozenset({"admin", "integrator"})


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
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

    def validate_token_request(self) -> None:
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
        try:
            scopes = resolve_scopes(self.request.payload.scope, record.allowed_scopes,
                                    record.default_scopes)
        except ScopeDenied as denied:
            raise InvalidScope(
                "Scope not allowed for this client: " + " ".join(denied.denied),
                reason="scope_not_allowed", details={"invalidScopes": denied.denied},
            ) from None
        self.request.granted_scopes = scopes
        audience = resolve_audience(
            record, self.request.resources, self.request.payload.data.get("audience"),
            self.server.default_audience,
        )
        # DESIGN §4.5: the issuer is its own resource server; a token granting
        # an admin scope carries the issuer's URL among its audiences.
        if ADMIN_SCOPES & set(scopes) and self.server.issuer not in audience:
            audience.append(self.server.issuer)
        self.request.audience = audience

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        # The claims only: the endpoint signs and persists them after Authlib returns.
        claims = self.server.issue_access_token(self.request)
        self.save_token(claims)
        return 200, claims, self.TOKEN_RESPONSE_HEADER
