"""The draft order a connector delivers, and the connectors' configurations.

Configuration validation: ``mode``; ``host``, ``username``, a credential
and ``host_key`` (unless ``insecure_skip_host_key``) required for sftp;
``export_path`` required; paths at most :data:`MAX_PATH_LENGTH` characters. Each
refusal names its field. Credentials are ``SecretStr``: a config's repr, or any log
line that prints one, shows ``**********``.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

if TYPE_CHECKING:
    import asyncssh

MAX_PATH_LENGTH = 1024
#: Text a person typed: no control characters (PostgreSQL refuses NUL in text).
_TEXT = r"^[^\x00-\x1F\x7F]*$"
Path = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_LENGTH, pattern=_TEXT)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_TEXT)]
#: A DNS name, an IPv4 address or an (unbracketed) IPv6 address.
Host = Annotated[str, StringConstraints(min_length=1, max_length=253,
                                        pattern=r"^[A-Za-z0-9._:-]+$")]


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Text | None = None
    name: Text
    email: Text | None = None


#: Decimal strings, up to 12 digits before the point and 6 after (never JSON numbers:
#: a float cannot hold 19.90). The patterns are the whole rule, for the server and the
#: document alike; a positive amount has a non-zero digit.
_AMOUNT = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?$"
_POSITIVE_AMOUNT = (r"^([1-9][0-9]{0,11}(\.[0-9]{1,6})?|0\.([1-9][0-9]{0,5}|0[1-9][0-9]{0,4}"
                    r"|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9]))$")


def _amount(pattern: str) -> Any:
    def parse(value: Any) -> Decimal:
        text = str(value) if isinstance(value, Decimal) else value
        if not isinstance(text, str) or not re.match(pattern, text):
            raise ValueError('a decimal string like "19.90" (at most 12 digits before the '
                             'point and 6 after)')
        return Decimal(text)

    return parse


Amount = Annotated[Decimal, BeforeValidator(_amount(_AMOUNT)),
                   WithJsonSchema({"type": "string", "pattern": _AMOUNT})]
PositiveAmount = Annotated[Decimal, BeforeValidator(_amount(_POSITIVE_AMOUNT)),
                           WithJsonSchema({"type": "string", "pattern": _POSITIVE_AMOUNT})]


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Text
    qty: PositiveAmount
    price: Amount = Field(description="unit price")
    description: Text | None = None


class DraftOrder(BaseModel):
    """An approved order as the platform hands it to a connector; its JSON is the
    document DROPZONE_JSON_V1 writes (amounts as decimal strings, never floats)."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    org_id: str = Field(min_length=1, max_length=36, pattern=r"^[A-Za-z0-9_.:-]+$")
    external_reference: Text
    customer: Customer
    lines: list[OrderLine] = Field(min_length=1, max_length=1000)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")
    metadata: dict[str, Any] = Field(default_factory=dict)


class ConnectorConfig(BaseModel):
    """Base of connector configurations: unknown fields refused, secrets masked."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def plaintext(self) -> dict[str, Any]:
        """The config as stored (encrypted): JSON values, credentials revealed."""
        data = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                data[name] = value.get_secret_value()
        return data


class DropzoneConfig(ConnectorConfig):
    """DROPZONE_JSON_V1: JSON files in a directory the ERP polls, over SFTP or on the
    issuer's own filesystem (inside the org's folder under ``ISSUER_ERP_DROPZONE_ROOT``)."""

    mode: Literal["sftp", "filesystem"]
    host: Host | None = Field(None, validate_default=True, description="required for sftp")
    port: int = Field(22, ge=1, le=65535)
    username: Text | None = Field(None, validate_default=True, description="required for sftp")
    password: SecretStr | None = Field(None, max_length=1024)
    private_key: SecretStr | None = Field(
        None, max_length=16384, validate_default=True,
        description="an unencrypted OpenSSH or PEM private key; sftp needs it or a password")
    insecure_skip_host_key: bool = Field(
        False, description="connect without verifying the server (never in production)")
    host_key: str | None = Field(
        None, max_length=16384, validate_default=True,
        description="the server's known_hosts line (or bare `type base64` key); required for "
        "sftp unless insecure_skip_host_key")
    export_path: Path = Field(description="the directory orders are written to (filesystem "
                              "mode: a folder inside the org's own, <root>/<org_id>/)")
    ack_path: Path | None = Field(None, description="where the ERP writes acknowledgements")
    atomic_write: bool = Field(True, description="write a temporary name, then rename")
    timeout_seconds: float = Field(10, gt=0, le=60)

    @field_validator("host", "username")
    @classmethod
    def _required_for_sftp(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("mode") == "sftp":
            raise ValueError("required when mode is sftp")
        return value

    @field_validator("private_key")
    @classmethod
    def _credential(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            if info.data.get("mode") == "sftp" and info.data.get("password") is None:
                raise ValueError("password or private_key is required when mode is sftp")
            return value
        import asyncssh  # on first use: the SSH library is not loaded until a key is read

        try:
            asyncssh.import_private_key(value.get_secret_value())
        except (asyncssh.KeyImportError, ValueError):
            raise ValueError("not an unencrypted OpenSSH or PEM private key") from None
        return value

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("mode") == "sftp" and not info.data.get("insecure_skip_host_key"):
                raise ValueError("required when mode is sftp (or set insecure_skip_host_key)")
            return value
        try:
            trusted_host_key(value)
        except ValueError:
            raise ValueError("not a known_hosts line or public key") from None
        return value


def trusted_host_key(line: str) -> asyncssh.SSHKey:
    """The public key of a known_hosts line (``[markers] hosts type base64 [comment]``)
    or of a bare ``type base64`` key. The host patterns are not matched: the key
    belongs to this connection's host by configuration."""
    import asyncssh  # on first use, as above

    fields = line.strip().split()
    if fields and fields[0].startswith("@"):
        raise ValueError("markers (@cert-authority, @revoked) are not supported")
    for start in (0, 1):
        candidate = fields[start:start + 2]
        if len(candidate) == 2:
            try:
                return asyncssh.import_public_key(" ".join(candidate))
            except (asyncssh.KeyImportError, ValueError):
                continue
    raise ValueError("no public key found")


class MockConfig(ConnectorConfig):
    """MOCK (tests and demos only): records orders in memory; ``fail`` makes every
    export and test fail with ``error_message``."""

    fail: bool = False
    error_message: Text = "Mock export failed"
