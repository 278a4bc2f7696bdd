"""Client authentication at the token endpoint (RFC 6749 §2.3).

Two parts: :func:`identify` runs before anything is loaded and rejects what the
RFC forbids (credentials in the URI, two methods at once, none at all);
:func:`client_secret_basic` / :func:`client_secret_post` are registered into
Authlib and verify the secret against the preloaded client. A JWT client assertion
(RFC 7523 §2.2: ``private_key_jwt``, ``client_secret_jwt``) is read here too and
verified by ``issuer.oauth.rfc7523``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from starlette.datastructures import Headers

from issuer.errors import InvalidClient, InvalidRequest
from issuer.oauth.rfc7523 import ClientAssertion, read_assertion

#: A client authenticated by a token its platform gave it (issuer.oauth.federation).
FEDERATED_JWT = "federated_jwt"
_CREDENTIAL_PARAMETERS = ("client_id", "client_secret", "client_assertion",
                          "client_assertion_type")


@dataclass(frozen=True)
class ClaimedClient:
    client_id: str
    # "client_secret_basic" | "client_secret_post" | "private_key_jwt" | "client_secret_jwt"
    # | "federated_jwt"
    method: str
    secret: str  # "" for a client assertion
    assertion: ClientAssertion | None = None


def identify(headers: Headers, form: Mapping[str, str],
             query: Mapping[str, str]) -> ClaimedClient:
    """Who claims to be calling, and how; nothing is verified yet."""
    # RFC 9110 §5.3: a field that is not a list (Authorization holds one set of
    # credentials, §11.6.2) appears once. Two would leave open which one counts.
    if len(headers.getlist("authorization")) > 1:
        raise InvalidRequest("Send one Authorization header", reason="repeated_authorization")
    # RFC 6749 §2.3.1: "The parameters can only be transmitted in the
    # request-body and MUST NOT be included in the request URI."
    if any(name in query for name in _CREDENTIAL_PARAMETERS):
        raise InvalidRequest("Client credentials must not be sent in the request URI",
                             reason="credentials_in_query")
    authorization = headers.get("authorization")
    basic = _basic(authorization) if authorization else None
    assertion = "client_assertion" in form or "client_assertion_type" in form
    in_body = "client_secret" in form or assertion
    # RFC 6749 §2.3: "The client MUST NOT use more than one authentication
    # method in each request."
    if (basic is not None and in_body) or ("client_secret" in form and assertion):
        raise InvalidRequest("Use exactly one client authentication method",
                             reason="multiple_auth_methods")
    if basic is not None:
        client_id, secret = basic
        if "client_id" in form and form["client_id"] != client_id:
            raise InvalidRequest("'client_id' does not match the authenticated client",
                                 reason="client_id_mismatch")
        return ClaimedClient(client_id, "client_secret_basic", secret)
    if assertion:
        presented = read_assertion(form)
        posted = form.get("client_id")
        if (posted and posted != presented.client_id
                and presented.issuer != presented.client_id):
            # Not self-issued (private_key_jwt's iss and sub are the client_id): a token
            # of an external issuer, for the client the form names (federated_jwt,
            # issuer.oauth.federation).
            return ClaimedClient(posted, FEDERATED_JWT, "", presented)
        # RFC 7521 §4.2: client_id, if present, "MUST identify the same client as is
        # identified by the client assertion".
        if "client_id" in form and form["client_id"] != presented.client_id:
            raise InvalidClient(reason="client_id_mismatch")
        return ClaimedClient(presented.client_id, presented.method, "", presented)
    posted_id, posted_secret = form.get("client_id"), form.get("client_secret")
    if not posted_id or not posted_secret:
        raise InvalidRequest("Client authentication is required", reason="missing_credentials")
    return ClaimedClient(posted_id, "client_secret_post", posted_secret)


def _basic(authorization: str) -> tuple[str, str]:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidRequest("Only HTTP Basic client authentication is accepted here",
                             reason="unsupported_authorization_scheme")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient(reason="malformed_basic_credentials",
                            headers=basic_challenge()) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id or not secret:
        raise InvalidClient(reason="malformed_basic_credentials", headers=basic_challenge())
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


def basic_challenge() -> dict[str, str]:
    # RFC 6749 §5.2: on a 401 the server "MUST include the WWW-Authenticate
    # response header field matching the authentication scheme used by the client".
    return {"WWW-Authenticate": 'Basic realm="m2m-issuer", charset="UTF-8"'}


def client_secret_basic(query_client: Any, request: Any) -> Any:
    """Authlib client-auth method: the claimed client, if its secret matches."""
    return _verified(request, "client_secret_basic")


def client_secret_post(query_client: Any, request: Any) -> Any:
    return _verified(request, "client_secret_post")


def _verified(request: Any, method: str) -> Any:
    claimed: ClaimedClient = request.claimed
    if claimed.method != method:
        return None  # the client used the other method; Authlib tries that one next
    client = request.preloaded_client
    if client is None or client.get_client_id() != claimed.client_id:
        raise InvalidClient(reason="unknown_client")
    if not client.check_endpoint_auth_method(method, "token"):
        raise InvalidClient(reason="auth_method_not_allowed")
    if not client.check_client_secret(claimed.secret):
        raise InvalidClient(reason="wrong_secret")
    return client
