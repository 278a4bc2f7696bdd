"""NetSuite account ids and the URLs derived from them.

An account id ends up in a hostname, so it is checked before it is ever put in one:
"Validate the account ID before putting it into a hostname" -- an unrestricted id let
an assertion be posted to an attacker's host (activepieces PR #14806). Oracle says not
to build the account domain yourself (section_1498251763), so the derived URLs are
defaults only; each connector stores its own, and any URL it is given must point at a
``*.netsuite.com`` host (https) or a host listed in ``ISSUER_NETSUITE_ALLOWED_HOSTS``
(tests' loopback simulator).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from connectors.netsuite.errors import InvalidConnector

#: NetSuite's account id forms: ``1234567``, ``1234567_SB1``, ``TSTDRV123``.
ACCOUNT_ID = re.compile(r"[A-Za-z0-9]+(_[A-Za-z0-9]+)?")  # fullmatch: no trailing \n
TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
NETSUITE_DOMAIN = ".netsuite.com"
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class InvalidAccountId(InvalidConnector):
    """The account id could inject into a hostname; nothing was sent anywhere."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "account_id")


class DisallowedUrl(InvalidConnector):
    """A URL outside NetSuite's domain (and the allow-list), or not a plain https URL."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message, field)


def check_account_id(account_id: str) -> str:
    if len(account_id) > 64 or not ACCOUNT_ID.fullmatch(account_id):
        raise InvalidAccountId("an account id is letters and digits, optionally followed by "
                               "_ and a suffix (e.g. 1234567 or 1234567_SB1)")
    return account_id


def canonical_host_label(account_id: str) -> str:
    """``1234567_SB1`` -> ``1234567-sb1``: lowercase, ``_`` -> ``-`` (the same
    form goes into the host and into ``aud``)."""
    return check_account_id(account_id).lower().replace("_", "-")


def default_token_url(account_id: str) -> str:
    return f"https://{canonical_host_label(account_id)}.suitetalk.api.netsuite.com{TOKEN_PATH}"


def default_rest_base_url(account_id: str) -> str:
    return f"https://{canonical_host_label(account_id)}.suitetalk.api.netsuite.com"


def default_restlets_base_url(account_id: str) -> str:
    """RESTlets live on the account's restlets domain (section_4697322330)."""
    return f"https://{canonical_host_label(account_id)}.restlets.api.netsuite.com"


def check_url(url: str, allowed_hosts: Iterable[str]) -> str:
    """``url`` if it may receive an assertion or a token; DisallowedUrl otherwise.

    NetSuite hosts need https. An allow-listed host (``host`` or ``host:port``) may use
    http: it exists for a loopback simulator in tests."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DisallowedUrl("not a URL") from None
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise DisallowedUrl("a URL with user information is not allowed")
    if parts.query or parts.fragment:
        raise DisallowedUrl("a base URL has no query or fragment")
    allowed = {entry.lower() for entry in allowed_hosts}
    netloc = f"{host}:{port}" if port is not None else host
    if host in allowed or netloc in allowed:
        if parts.scheme not in ("http", "https"):
            raise DisallowedUrl("an http(s) URL is needed")
        return url
    if parts.scheme != "https":
        raise DisallowedUrl("NetSuite URLs use https")
    if port not in (None, 443) or not _netsuite_host(host):
        raise DisallowedUrl("the host must be a NetSuite host (*.netsuite.com)")
    return url


def _netsuite_host(host: str) -> bool:
    if not host.endswith(NETSUITE_DOMAIN) or len(host) > 253:
        return False
    labels = host.split(".")
    return len(labels) >= 3 and all(_LABEL.fullmatch(label) for label in labels)
