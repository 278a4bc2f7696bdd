"""The token request (section_162755359851).

``POST <token_url>`` with exactly three form fields -- ``grant_type=client_credentials``,
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and
``client_assertion`` -- and nothing else: no ``client_id``, no ``scope`` field (scope is
a claim of the assertion), no HTTP Basic header. The answer's ``expires_in`` may be a
number or a string (Oracle's sample shows ``"3600"``), ``token_type`` is compared
case-insensitively, and there is no refresh token.

NetSuite documents no errors for this flow and keeps the real reason in its Login
Audit Trail, so every failure becomes :class:`TokenRequestFailed` naming NetSuite's
error code and pointing there. Neither the assertion nor the token is ever logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx

log = logging.getLogger(__name__)

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUDIT_TRAIL_HINT = ("Check NetSuite's Login Audit Trail (Setup > Users/Roles > User Management "
                    "> View Login Audit Trail) for the reason.")


class TokenRequestFailed(Exception):
    """NetSuite refused the grant, or could not be reached. Safe to show: it carries
    NetSuite's error code and description, never the assertion."""

    def __init__(self, message: str, *, status: int | None = None,
                 error: str | None = None, description: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.description = description
        self.hint = AUDIT_TRAIL_HINT

    def __str__(self) -> str:
        return f"{self.args[0]}. {self.hint}"


@dataclass(frozen=True)
class AccessToken:
    access_token: str = field(repr=False)
    expires_in: int

    @property
    def preview(self) -> str:
        """What a person may see of it: ``Bearer <first 20 characters>...``."""
        return f"Bearer {self.access_token[:20]}..."


async def request_token(http: httpx.AsyncClient, token_url: str, assertion: str) -> AccessToken:
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion}
    try:
        response = await http.post(token_url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        log.warning("NetSuite token endpoint unreachable: %s", type(error).__name__)
        raise TokenRequestFailed(f"NetSuite's token endpoint could not be reached "
                                 f"({type(error).__name__})") from None
    body = json_object(response)
    if response.status_code != 200:
        error_code = _text(body.get("error")) or "unknown_error"
        description = _text(body.get("error_description"))
        log.warning("NetSuite refused the token request: HTTP %d %s", response.status_code,
                    error_code)
        message = f"NetSuite refused the token request: HTTP {response.status_code} {error_code}"
        raise TokenRequestFailed(message + (f" ({description})" if description else ""),
                                 status=response.status_code, error=error_code,
                                 description=description)
    return _parse(body, response.status_code)


def _parse(body: dict[str, object], status: int) -> AccessToken:
    token, token_type = body.get("access_token"), body.get("token_type")
    if not isinstance(token, str) or not token:
        raise TokenRequestFailed("NetSuite's answer has no access_token", status=status,
                                 error="invalid_response")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenRequestFailed("NetSuite's answer is not a bearer token", status=status,
                                 error="invalid_response")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in.strip())
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        raise TokenRequestFailed("NetSuite's answer has no valid expires_in", status=status,
                                 error="invalid_response")
    return AccessToken(access_token=token, expires_in=expires_in)


def json_object(response: httpx.Response) -> dict[str, object]:
    """The answer's JSON object, or {} when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: object) -> str | None:
    return value[:300] if isinstance(value, str) and value else None
