"""Federated client credentials: the ``trusted_issuers`` table (a tenant's external
token issuers) and the clients' ``federated_credentials``

Revision ID: 0009
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trusted_issuers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("issuer", sa.String(length=2000), nullable=False),
        sa.Column("jwks_uri", sa.String(length=2000), nullable=True),
        sa.Column("allowed_algorithms", sa.JSON(), nullable=False),
        sa.Column("max_token_age", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="RESTRICT",
                                name=op.f("fk_trusted_issuers_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trusted_issuers")),
        sa.UniqueConstraint("tenant_id", "issuer", name="uq_trusted_issuers_tenant_id_issuer"),
    )
    with op.batch_alter_table("trusted_issuers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trusted_issuers_tenant_id"), ["tenant_id"],
                              unique=False)
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("federated_credentials", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("federated_credentials")
    with op.batch_alter_table("trusted_issuers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trusted_issuers_tenant_id"))
    op.drop_table("trusted_issuers")
