"""The connector's typed errors, and its own row of the issuer's error table
(:class:`NetSuiteRequestFailed`). ``routes.py`` registers how each maps onto the table
(``ERRORS``); their messages are safe to show (no key material, assertion or token in
any)."""

from __future__ import annotations

from issuer.errors import OAuthError


class NetSuiteError(Exception):
    """Base of the connector's errors."""


class ConnectorNotFound(NetSuiteError):
    """No such connector -- or one of a tenant the caller may not see."""


class InvalidConnector(NetSuiteError, ValueError):
    """The connector's settings are not acceptable; ``field`` names the culprit."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class KeyPairExists(NetSuiteError):
    def __init__(self) -> None:
        super().__init__("Key pair already exists. Use the rotation endpoint.")


class NoKeyPair(NetSuiteError):
    def __init__(self) -> None:
        super().__init__("The connector has no key pair yet: generate one first.")


class NoCertificateId(NetSuiteError):
    def __init__(self) -> None:
        super().__init__("No Certificate ID is recorded: upload the certificate to NetSuite "
                         "and record the Certificate ID it shows.")


class RotationInProgress(NetSuiteError):
    def __init__(self) -> None:
        super().__init__("Rotation already in progress")


class NoRotationInProgress(NetSuiteError):
    def __init__(self) -> None:
        super().__init__("No rotation in progress")


class RotationBusy(NetSuiteError):
    def __init__(self) -> None:
        super().__init__("The rotation is being confirmed by another request; try again "
                         "shortly")


class NetSuiteRequestFailed(OAuthError):
    """NetSuite refused a call the connector made for the caller (a token request, its
    certificate API) or could not be reached; the description carries NetSuite's error
    code and a hint, never an assertion or a token."""

    error = "netsuite_request_failed"
    status = 422
    public_text = "The request to NetSuite failed"
    exposes_description = True
