"""The ERP connector's rows of the issuer's error table (``issuer.errors``)."""

from __future__ import annotations

from issuer.errors import OAuthError


class ConnectionTestFailed(OAuthError):
    """A connection test failed; the description is the connector's fixed message
    ("Authentication failed", "Connection timeout", ...), never a credential."""

    error = "connection_test_failed"
    status = 400
    public_text = "The connection test failed"
    exposes_description = True


class ConnectorBlocked(OAuthError):
    """The stored configuration failed its AES-GCM integrity check (altered, or under
    a master key this issuer no longer holds): nothing is sent through it."""

    error = "connector_blocked"
    status = 409
    public_text = ("The connection's stored configuration failed its integrity check; the "
                   "connection is blocked: disable it and configure a new one")
