"""One NetSuite call of the ERP connector, and what its failures mean to the org.

Calls go through the org's NetSuite M2M connector's :class:`NetSuiteClient`, which
already holds the connector's throttle and concurrency cap (shared by every process
through Redis when there is one), retries 429 and request-limit answers with
jittered back-off honouring ``Retry-After`` (bounded), and fetches a new token once
on a 401. What is left here is naming the outcome: NetSuite's own error body
(``o:errorDetails[].detail``, ``o:errorCode``, ``o:errorPath``) for a refusal, a
fixed message otherwise -- never a token, an assertion or a key.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter

from connectors.erp.port import ConnectorError
from connectors.netsuite.client import NetSuiteClient
from connectors.netsuite.errors import ConnectorNotFound, NoCertificateId
from connectors.netsuite.token_client import TokenRequestFailed, json_object

NOT_FOUND = "NetSuite connection not found"
NOT_ACTIVE = "NetSuite connection not active"
AUTHENTICATION_FAILED = "Authentication failed"
PERMISSION_DENIED = "Permission denied"
UNAVAILABLE = "NetSuite unavailable"
LIMIT_EXCEEDED = "NetSuite request limit exceeded"
#: NetSuite's error codes for "too many requests at once" (REST, RESTlets).
_LIMIT_CODES = ("CONCURRENCY_LIMIT_EXCEEDED", "SSS_REQUEST_LIMIT_EXCEEDED")
_MAX_MESSAGE = 1000
#: Whatever looks like a credential is cut out of text NetSuite sent back.
_CREDENTIALS = re.compile(r"(?i)bearer\s+\S+|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+")


class NetSuiteRequests:
    """``issuer_netsuite_requests_total{operation,status}``: calls the connector made,
    by their final status (HTTP status after retries, or ``timeout``,
    ``unreachable``, ``token_refused``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.counter = Counter(
            "issuer_netsuite_requests",
            "Calls of the NETSUITE_REST_V1 ERP connector to NetSuite, by operation and final "
            "status (HTTP status after retries, timeout, unreachable, token_refused)",
            ["operation", "status"], registry=registry)

    def count(self, operation: str, status: str) -> None:
        self.counter.labels(operation, status).inc()


class NetSuiteCalls:
    """The org's NetSuite client, each call's outcome counted and its failure named."""

    def __init__(self, client: NetSuiteClient, requests: NetSuiteRequests) -> None:
        self._client = client
        self._requests = requests

    async def call(self, operation: str, method: str, path: str,
                   **options: Any) -> httpx.Response:
        """A 2xx response, or :class:`ConnectorError` saying what went wrong."""
        try:
            response = await self._client.request(method, path, **options)
        except httpx.TimeoutException:
            self._requests.count(operation, "timeout")
            raise ConnectorError(UNAVAILABLE, code="netsuite_unavailable") from None
        except httpx.HTTPError:
            self._requests.count(operation, "unreachable")
            raise ConnectorError(UNAVAILABLE, code="netsuite_unavailable") from None
        except TokenRequestFailed as refused:
            self._requests.count(operation, "token_refused")
            raise token_failure(refused) from None
        except NoCertificateId:
            raise ConnectorError(NOT_ACTIVE, code="netsuite_not_active") from None
        except ConnectorNotFound:  # deleted since the config was read
            raise ConnectorError(NOT_FOUND, code="not_found") from None
        self._requests.count(operation, str(response.status_code))
        if response.is_success:
            return response
        raise refusal(response)

    async def suiteql(self, operation: str, query: str) -> list[dict[str, Any]]:
        """The rows of a read-only query (``Prefer: transient``), up to 1000."""
        response = await self.call(operation, "POST", "/services/rest/query/v1/suiteql",
                                   json={"q": query}, params={"limit": "1000"},
                                   headers={"Prefer": "transient"})
        rows = json_object(response).get("items")
        if not isinstance(rows, list):
            raise ConnectorError("NetSuite's SuiteQL answer has no items",
                                 code="netsuite_error")
        return [row for row in rows if isinstance(row, dict)]


def token_failure(refused: TokenRequestFailed) -> ConnectorError:
    if refused.status is None or refused.status >= 500:
        return ConnectorError(UNAVAILABLE, code="netsuite_unavailable")
    return ConnectorError(AUTHENTICATION_FAILED, code="authentication_failed")


def refusal(response: httpx.Response) -> ConnectorError:
    """A non-2xx answer as the org should read it."""
    details = error_details(response)
    codes = [code for _, code, _ in details if code]
    status = response.status_code
    text = describe(details)
    if status == 401:
        return ConnectorError(AUTHENTICATION_FAILED, code="authentication_failed")
    if status == 403 or "INSUFFICIENT_PERMISSION" in codes:
        return ConnectorError(PERMISSION_DENIED + (f": {text}" if text else ""),
                              code="permission_denied")
    if status == 429 or any(code in _LIMIT_CODES for code in codes):
        reason = next((code for code in codes if code in _LIMIT_CODES), f"HTTP {status}")
        return ConnectorError(f"{LIMIT_EXCEEDED} ({reason}); gave up after retrying",
                              code="rate_limited")
    if status >= 500:
        return ConnectorError(f"{UNAVAILABLE} (HTTP {status})", code="netsuite_unavailable")
    return ConnectorError(f"NetSuite refused the request (HTTP {status})"
                          + (f": {text}" if text else ""), code="netsuite_error")


def error_details(response: httpx.Response) -> list[tuple[str, str, str]]:
    """``(detail, o:errorCode, o:errorPath)`` of each of NetSuite's error details."""
    body = json_object(response)
    found = []
    items = body.get("o:errorDetails")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            found.append(tuple(str(item.get(name) or "") for name in
                               ("detail", "o:errorCode", "o:errorPath")))
    error = body.get("error")  # RESTlets: {"error": {"code": ..., "message": ...}}
    if isinstance(error, dict):
        found.append((str(error.get("message") or ""), str(error.get("code") or ""), ""))
    return [(_clean(detail), _clean(code), _clean(path)) for detail, code, path in found]


def describe(details: list[tuple[str, str, str]]) -> str:
    """``detail [CODE at path]; ...``, credential-like text removed, bounded."""
    parts = []
    for detail, code, path in details:
        tag = " ".join(part for part in (code, f"at {path}" if path else "") if part)
        parts.append(f"{detail} [{tag}]" if detail and tag else detail or tag)
    text = "; ".join(part for part in parts if part)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 1] + "…"


def _clean(text: str) -> str:
    return _CREDENTIALS.sub("[redacted]", " ".join(text.split()))[:_MAX_MESSAGE]
