"""erp_connection and erp_export: the ERP connector framework (connectors/erp)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ACTIVE_ONLY = sa.text("status = 'ACTIVE'")


def upgrade() -> None:
    op.create_table(
        "erp_connection",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("connector_type", sa.String(length=64), nullable=False),
        sa.Column("config_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_test_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('ACTIVE', 'DISABLED')", name=op.f("ck_erp_connection_status")),
        sa.ForeignKeyConstraint(["org_id"], ["tenants.id"], name=op.f("fk_erp_connection_org_id_tenants"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erp_connection")),
    )
    with op.batch_alter_table("erp_connection", schema=None) as batch_op:
        batch_op.create_index("ix_erp_connection_org_id_status", ["org_id", "status"], unique=False)
        # One ACTIVE connection per org: the database refuses a second one.
        batch_op.create_index("uq_erp_connection_active_org", ["org_id"], unique=True,
                              sqlite_where=ACTIVE_ONLY, postgresql_where=ACTIVE_ONLY)

    op.create_table(
        "erp_export",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("connector_type", sa.String(length=64), nullable=False),
        sa.Column("draft_order_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_json", sa.JSON(), nullable=True),
        sa.Column("dropzone_path", sa.Text(), nullable=True),
        sa.Column("storage_key", sa.Text(), nullable=True),
        sa.Column("connector_metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('SUCCESS', 'FAILED')", name=op.f("ck_erp_export_status")),
        sa.ForeignKeyConstraint(["connection_id"], ["erp_connection.id"], name=op.f("fk_erp_export_connection_id_erp_connection"), ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["org_id"], ["tenants.id"], name=op.f("fk_erp_export_org_id_tenants"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erp_export")),
    )
    with op.batch_alter_table("erp_export", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_erp_export_connection_id"), ["connection_id"], unique=False)
        batch_op.create_index("ix_erp_export_org_id_created_at", ["org_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("erp_export", schema=None) as batch_op:
        batch_op.drop_index("ix_erp_export_org_id_created_at")
        batch_op.drop_index(batch_op.f("ix_erp_export_connection_id"))
    op.drop_table("erp_export")
    with op.batch_alter_table("erp_connection", schema=None) as batch_op:
        batch_op.drop_index("uq_erp_connection_active_org", sqlite_where=ACTIVE_ONLY,
                            postgresql_where=ACTIVE_ONLY)
        batch_op.drop_index("ix_erp_connection_org_id_status")
    op.drop_table("erp_connection")
