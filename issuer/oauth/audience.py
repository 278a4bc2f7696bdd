"""Choosing a token's audience: RFC 8707 ``resource`` or ``audience``. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from issuer.errors import InvalidRequest, InvalidTarget
from issuer.store.records import ClientRecord


def resolve_audience(client: ClientRecord, resources: Sequence[str], audience: str | None,
                     issuer_default: str) -> list[str]:
    """The ``aud`` values of the token, never empty.

    RFC 8707 §2: the ``resource`` value "MUST be an absolute URI ... MUST NOT
    include a fragment component"; a resource the client may not use is
    ``invalid_target``. ``audience`` (a logical name, as in RFC 8693) is accepted
    alike. Without either, the client's default audience, else the issuer's.
    """
    if resources and audience is not None:
        raise InvalidRequest("Use either 'resource' or 'audience', not both")
    for resource in resources:
        parts = urlsplit(resource)
        if not parts.scheme or parts.fragment or "#" in resource:
            raise InvalidTarget("The 'resource' parameter must be an absolute URI without a "
                                "fragment", reason="resource_malformed")
    wanted = list(dict.fromkeys(resources)) or ([audience] if audience is not None else [])
    if not wanted:
        return [client.default_audience or issuer_default]
    denied = [value for value in wanted if value not in client.allowed_audiences]
    if denied:
        raise InvalidTarget(reason="audience_not_allowed", details={"invalidTargets": denied})
    return wanted
