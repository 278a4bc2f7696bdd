"""A token request as one typed, frozen value, and the form rules that build it.

The body of POST /token (and of /introspect and /revoke) is read by
:func:`read_form`; the endpoint then names the claimed client and hands one
:class:`TokenRequest` to the grant (``IssuerAuthorizationServer.issue``), which returns an
``IssuedToken``: nothing is set on a request object along the way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from issuer.errors import InvalidRequest
from issuer.oauth.client_auth import ClaimedClient

MAX_FORM_BYTES = 16 * 1024
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# RFC 8707 §2: "multiple 'resource' parameters MAY be used"; nothing else repeats.
_MAY_REPEAT = frozenset({"resource"})


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One POST /token: its parameters, its headers and who claims to be calling."""

    form: Mapping[str, str]  # single-valued parameters, empty ones dropped
    resources: tuple[str, ...]  # RFC 8707 ``resource`` values, in request order
    headers: Mapping[str, str]
    claimed: ClaimedClient


def check_content_type(content_type: str | None) -> None:
    """RFC 6749 §4.4.2: the request uses "application/x-www-form-urlencoded"."""
    if (content_type or "").split(";", 1)[0].strip().lower() != FORM_CONTENT_TYPE:
        raise InvalidRequest("The body must be application/x-www-form-urlencoded",
                             reason="bad_content_type")


def read_form(body: bytes) -> tuple[dict[str, str], list[str]]:
    """The body as single-valued parameters, plus the (repeatable) resources."""
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequest("The request body is too large", reason="body_too_large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=64, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The body is not valid form data", reason="bad_form") from None
    form: dict[str, str] = {}
    resources: list[str] = []
    for name, value in pairs:
        # RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if
        # they were omitted from the request."
        if value == "":
            continue
        if name in _MAY_REPEAT:
            resources.append(value)
            continue
        # RFC 6749 §3.1/§3.2: "Request and response parameters MUST NOT be
        # included more than once."
        if name in form:
            raise InvalidRequest(f"Parameter '{name[:64]}' is repeated",
                                 reason="repeated_parameter")
        form[name] = value
    return form, resources
