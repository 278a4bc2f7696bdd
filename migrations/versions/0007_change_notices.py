"""Client and tenant kill switch and the change stamp: ``tokens_valid_after`` on clients
and tenants (tokens issued before it are inactive), and the one-row ``change_stamp``
whose version every client or tenant change bumps (SQLite's change notice)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("clients", "tenants"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("tokens_valid_after", sa.DateTime(timezone=True),
                                          nullable=True))
    stamp = op.create_table(
        "change_stamp",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_stamp")),
    )
    op.bulk_insert(stamp, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("change_stamp")
    for table in ("tenants", "clients"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("tokens_valid_after")
