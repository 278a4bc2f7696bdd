"""RFC 9449 DPoP: ``dpop_bound_access_tokens`` on clients (§5.2: such a client's token
requests must carry a DPoP proof). Spent proof jtis share ``used_assertion_jtis``
under a ``dpop:<jkt>`` namespace, and a token's binding is its ``cnf`` claim: no
other table changes.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dpop_bound_access_tokens", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("dpop_bound_access_tokens")
