"""The connector's typed errors. ``routes.py`` maps them onto the issuer's error table;
their messages are safe to show (no key material, assertion or token in any)."""

from __future__ import annotations


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
