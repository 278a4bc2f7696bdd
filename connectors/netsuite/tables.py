"""The NetSuite connector's tables, on the issuer's MetaData (``issuer.store.models.Base``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from issuer.store.models import Base


class NetSuiteConnectorRow(Base):
    """A tenant's NetSuite OAuth 2.0 M2M connector (connectors/netsuite).

    Key states: ``primary_key_id`` is the connector's key pair (its certificate is the
    one to upload); ``active_key_id`` is the key that signs assertions, set once
    NetSuite's Certificate ID for it is recorded (``active_certificate_id``, the JWT
    ``kid``); ``secondary_key_id`` is a rotation's pending key, whose Certificate ID
    is ``pending_certificate_id`` once known. After an automatic rotation the old
    certificate (``retiring_certificate_id``) is revoked at NetSuite at
    ``retiring_certificate_revoke_at``.
    """

    __tablename__ = "netsuite_connectors"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]]
    algorithm: Mapped[str] = mapped_column(String(16))
    token_url: Mapped[str] = mapped_column(String(2000))
    rest_base_url: Mapped[str] = mapped_column(String(2000))
    restlets_base_url: Mapped[str] = mapped_column(String(2000))
    throttle_requests: Mapped[int] = mapped_column(Integer)
    throttle_period: Mapped[int] = mapped_column(Integer)
    max_concurrency: Mapped[int] = mapped_column(Integer)
    primary_key_id: Mapped[str | None] = mapped_column(String(64))
    active_key_id: Mapped[str | None] = mapped_column(String(64))
    secondary_key_id: Mapped[str | None] = mapped_column(String(64))
    active_certificate_id: Mapped[str | None] = mapped_column(String(200))
    pending_certificate_id: Mapped[str | None] = mapped_column(String(200))
    certificate_expires_at: Mapped[datetime | None]
    rotation_initiated_at: Mapped[datetime | None]
    retiring_certificate_id: Mapped[str | None] = mapped_column(String(200))
    retiring_certificate_revoke_at: Mapped[datetime | None]
    #: The certificate whose coming expiry was last warned about (once per certificate).
    expiry_warned_certificate_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class EncryptedKeyRow(Base):
    """A NetSuite connector's private key, AES-256-GCM encrypted (issuer.crypto) and bound
    to its tenant, connector and key id; beside it the public X.509 certificate."""

    __tablename__ = "encrypted_keys"
    __table_args__ = (Index("ix_encrypted_keys_connector_id", "connector_id"),)

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"),
                                           index=True)
    connector_id: Mapped[str] = mapped_column(
        ForeignKey("netsuite_connectors.id", ondelete="CASCADE"))
    algorithm: Mapped[str] = mapped_column(String(16))
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    certificate_pem: Mapped[str] = mapped_column(Text)
    certificate_not_after: Mapped[datetime]
    created_at: Mapped[datetime]


TABLES: tuple[Table, ...] = (
    NetSuiteConnectorRow.__table__, EncryptedKeyRow.__table__)
