"""The ERP connector's tables, on the issuer's MetaData (``issuer.store.models.Base``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from issuer.store.models import Base


class ErpConnectionRow(Base):
    """An org's ERP connection (connectors/erp); the config, credentials included, is
    AES-256-GCM encrypted and bound to the row's id (``erp_connection:<id>``)."""

    __tablename__ = "erp_connection"
    __table_args__ = (
        Index("ix_erp_connection_org_id_status", "org_id", "status"),
        # One ACTIVE connection per org, enforced by the database (concurrent creates too).
        Index("uq_erp_connection_active_org", "org_id", unique=True,
              sqlite_where=text("status = 'ACTIVE'"), postgresql_where=text("status = 'ACTIVE'")),
        CheckConstraint("status IN ('ACTIVE', 'DISABLED')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    connector_type: Mapped[str] = mapped_column(String(64))
    config_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    last_test_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ErpExportRow(Base):
    """One push of a draft order through an org's connection, successful or not."""

    __tablename__ = "erp_export"
    __table_args__ = (
        Index("ix_erp_export_org_id_created_at", "org_id", "created_at"),
        CheckConstraint("status IN ('SUCCESS', 'FAILED')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)  # ExportResult.export_id
    org_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("erp_connection.id", ondelete="RESTRICT"), index=True)
    connector_type: Mapped[str] = mapped_column(String(64))
    draft_order_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(16))
    error_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    dropzone_path: Mapped[str | None] = mapped_column(Text)
    storage_key: Mapped[str | None] = mapped_column(Text)
    connector_metadata: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]  # the push began
    completed_at: Mapped[datetime]  # the connector answered (or failed)


TABLES: tuple[Table, ...] = (ErpConnectionRow.__table__, ErpExportRow.__table__)
