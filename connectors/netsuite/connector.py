"""A NetSuite connector's settings, checked once, and the frozen record the store hands out."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from connectors.netsuite import accounts
from connectors.netsuite.errors import InvalidConnector
from connectors.netsuite.keys import ALGORITHMS, DEFAULT_ALGORITHM

#: NetSuite's scope claim: "any of restlets, rest_webservices, suite_analytics"; ``mcp`` alone.
SCOPES = ("restlets", "rest_webservices", "suite_analytics")
MCP = "mcp"
#: The platform's connector template: 20 requests per 60 s.
DEFAULT_THROTTLE_REQUESTS = 20
DEFAULT_THROTTLE_PERIOD = 60
#: NetSuite's smallest per-account concurrency limit (section_1500275531).
DEFAULT_MAX_CONCURRENCY = 5
CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
#: Certificate IDs are opaque (observed: 43-character base64url); they go in the JWT header.
CERTIFICATE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


@dataclass(frozen=True)
class ConnectorSpec:
    tenant_id: str
    name: str
    account_id: str
    client_id: str
    scopes: Sequence[str]
    algorithm: str = DEFAULT_ALGORITHM
    token_url: str | None = None
    rest_base_url: str | None = None
    restlets_base_url: str | None = None
    throttle_requests: int = DEFAULT_THROTTLE_REQUESTS
    throttle_period: int = DEFAULT_THROTTLE_PERIOD
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY


@dataclass(frozen=True)
class ConnectorRecord:
    id: str
    tenant_id: str
    name: str
    account_id: str
    client_id: str
    scopes: tuple[str, ...]
    algorithm: str
    token_url: str
    rest_base_url: str
    restlets_base_url: str
    throttle_requests: int
    throttle_period: int
    max_concurrency: int
    primary_key_id: str | None
    active_key_id: str | None
    secondary_key_id: str | None
    active_certificate_id: str | None
    pending_certificate_id: str | None
    certificate_expires_at: float | None
    rotation_initiated_at: float | None
    retiring_certificate_id: str | None
    retiring_certificate_revoke_at: float | None
    expiry_warned_certificate_id: str | None
    created_at: float
    updated_at: float

    @property
    def rotation_in_progress(self) -> bool:
        return self.secondary_key_id is not None


def check_scopes(scopes: Iterable[str]) -> list[str]:
    wanted = list(scopes)
    if not wanted:
        raise InvalidConnector("at least one scope is needed", "scopes")
    if len(set(wanted)) != len(wanted):
        raise InvalidConnector("scopes are listed once each", "scopes")
    if MCP in wanted and len(wanted) > 1:
        raise InvalidConnector("mcp cannot be combined with other scopes", "scopes")
    unknown = [scope for scope in wanted if scope not in (*SCOPES, MCP)]
    if unknown:
        raise InvalidConnector(f"unknown scopes {unknown}; NetSuite's are "
                               f"{', '.join(SCOPES)} (or mcp alone)", "scopes")
    return wanted


def check_certificate_id(certificate_id: str) -> str:
    if not CERTIFICATE_ID.fullmatch(certificate_id):
        raise InvalidConnector("a Certificate ID is letters, digits, - and _ (as NetSuite "
                               "shows it)", "certificate_id")
    return certificate_id


def resolve(spec: ConnectorSpec, allowed_hosts: Iterable[str]) -> dict[str, object]:
    """The columns of a new connector: every field checked, URLs derived where not given."""
    hosts = tuple(allowed_hosts)
    account_id = accounts.check_account_id(spec.account_id)
    name = spec.name.strip()
    if not name or len(name) > 200:
        raise InvalidConnector("a name is 1 to 200 characters", "name")
    if not CLIENT_ID.fullmatch(spec.client_id):
        raise InvalidConnector("a Client ID is 1 to 200 letters, digits, '.', '_' or '-'",
                               "client_id")
    if spec.algorithm not in ALGORITHMS:
        raise InvalidConnector(f"algorithm is one of {', '.join(ALGORITHMS)}", "algorithm")
    check_throttle(spec.throttle_requests, spec.throttle_period, spec.max_concurrency)
    return {
        "name": name, "account_id": account_id, "client_id": spec.client_id,
        "scopes": check_scopes(spec.scopes), "algorithm": spec.algorithm,
        "token_url": check_url(spec.token_url or accounts.default_token_url(account_id),
                               hosts, "token_url"),
        "rest_base_url": check_url(spec.rest_base_url
                                   or accounts.default_rest_base_url(account_id),
                                   hosts, "rest_base_url").rstrip("/"),
        "restlets_base_url": check_url(spec.restlets_base_url
                                       or accounts.default_restlets_base_url(account_id),
                                       hosts, "restlets_base_url").rstrip("/"),
        "throttle_requests": spec.throttle_requests, "throttle_period": spec.throttle_period,
        "max_concurrency": spec.max_concurrency,
    }


def check_url(url: str, allowed_hosts: Iterable[str], field: str) -> str:
    try:
        return accounts.check_url(url, allowed_hosts)
    except InvalidConnector as error:
        raise InvalidConnector(str(error), field) from None


def check_throttle(requests: int, period: int, max_concurrency: int) -> None:
    if not 1 <= requests <= 10_000 or not 1 <= period <= 86_400:
        raise InvalidConnector("a throttle is 1-10000 requests per 1-86400 seconds", "throttle")
    if not 1 <= max_concurrency <= 100:
        raise InvalidConnector("max_concurrency is 1 to 100", "max_concurrency")
