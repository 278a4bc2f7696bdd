"""Scope rules (RFC 6749 §3.3). Pure functions of loaded values.

An allowed-scope entry on a client is exact (``orders:read``), a prefix wildcard
(``orders:*`` allows every scope that starts with ``orders:``) or ``*`` (any
scope). A request with no scope gets the client's default scopes: the configured
default set, else every exact allowed scope.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")

#: Scopes that grant power over the issuer itself. A wildcard entry
#: never matches them: a client holds one only when it is listed exactly, so a
#: client allowed ``*`` cannot make itself an administrator.
RESERVED = frozenset({"admin", "integrator", "introspect"})


class ScopeDenied(Exception):
    def __init__(self, denied: Sequence[str]) -> None:
        super().__init__(" ".join(denied))
        self.denied = list(denied)


def is_scope_token(value: str) -> bool:
    return bool(_SCOPE_TOKEN.match(value))


def check_allowed_entry(entry: str) -> None:
    """Raise ValueError unless ``entry`` is ``*``, ``prefix:*`` or an exact scope."""
    if not is_scope_token(entry):
        raise ValueError(f"scope {entry!r} has characters RFC 6749 §3.3 does not allow")
    if "*" in entry and not (entry == "*" or (entry.endswith(":*") and entry.count("*") == 1)):
        raise ValueError(f"scope {entry!r}: a wildcard is '*' or 'prefix:*'")


def scope_allowed(scope: str, entries: Iterable[str]) -> bool:
    for entry in entries:
        if entry == scope:
            return True
        if scope in RESERVED:
            continue
        if entry == "*":
            return True
        if entry.endswith(":*") and scope.startswith(entry[:-1]) and len(scope) > len(entry) - 1:
            return True
    return False


def resolve_scopes(requested: str | None, allowed: Sequence[str],
                   default: Sequence[str] | None) -> list[str]:
    """The scopes to grant, in request order; ``ScopeDenied`` lists any not allowed.

    RFC 6749 §3.3: "If the client omits the scope parameter when requesting
    authorization, the authorization server MUST either process the request using
    a pre-defined default value or fail the request indicating an invalid scope."
    """
    if requested is None or not requested.strip():
        if default is not None:
            return list(default)
        return [entry for entry in allowed if "*" not in entry]
    scopes = list(dict.fromkeys(requested.split(" ")))
    denied = [s for s in scopes if not s or not is_scope_token(s) or "*" in s
              or not scope_allowed(s, allowed)]
    if denied:
        raise ScopeDenied([s for s in denied if s] or [""])
    return scopes
