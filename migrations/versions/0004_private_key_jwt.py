"""private_key_jwt and client_secret_jwt clients (RFC 7523 §2.2): a client's JWKS or
jwks_uri, its secret kept encrypted when it may sign client_secret_jwt assertions, and
the used_assertion_jtis replay store

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("jwks", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("jwks_uri", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("secret_encrypted", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("previous_secret_encrypted", sa.LargeBinary(),
                                      nullable=True))

    op.create_table(
        "used_assertion_jtis",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_used_assertion_jtis")),
    )
    with op.batch_alter_table("used_assertion_jtis", schema=None) as batch_op:
        batch_op.create_index("ix_used_assertion_jtis_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("used_assertion_jtis", schema=None) as batch_op:
        batch_op.drop_index("ix_used_assertion_jtis_expires_at")
    op.drop_table("used_assertion_jtis")

    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("previous_secret_encrypted")
        batch_op.drop_column("secret_encrypted")
        batch_op.drop_column("jwks_uri")
        batch_op.drop_column("jwks")
