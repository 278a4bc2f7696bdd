"""tenants.name_key: tenant names are unique as compared (NFKC, case folded, without
diacritics), enforced by a unique index; existing rows are backfilled

Two existing tenants whose names are the same once compared (``acme`` and ``ACME``)
stop the migration with a message naming both: rename one (``PATCH
/api/v1/tenants/{id}`` on the running version) and migrate again.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

from issuer.tenant_names import key

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_tenants = sa.table('tenants', sa.column('id', sa.String), sa.column('name', sa.String),
                    sa.column('name_key', sa.String))


class TenantNameCollision(RuntimeError):
    """Existing tenants whose names are the same name: the operator must rename one."""


def upgrade() -> None:
    connection = op.get_bind()
    # Checked before any change: SQLite commits DDL at once, so a refusal after the new
    # column existed would leave it behind.
    same: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    for tenant_id, name in connection.execute(
            sa.select(_tenants.c.id, _tenants.c.name).order_by(_tenants.c.id)):
        same[key(name)].append((tenant_id, name))
    collisions = [tenants for tenants in same.values() if len(tenants) > 1]
    if collisions:
        listed = "; ".join(", ".join(f"{name!r} ({tenant_id})" for tenant_id, name in tenants)
                           for tenants in collisions)
        raise TenantNameCollision(
            "tenant names must differ by more than case, width, accents or spacing, but "
            f"these are the same name: {listed}. Rename all but one of each (PATCH "
            "/api/v1/tenants/{id}) and run the migration again; nothing was changed.")
    # A default lets SQLite add a NOT NULL column in place (rebuilding the table would
    # trip the clients' foreign key); every row gets its key below.
    op.add_column('tenants', sa.Column('name_key', sa.String(length=400), nullable=False,
                                       server_default=''))
    for name_key, [(tenant_id, _)] in same.items():
        connection.execute(_tenants.update().where(_tenants.c.id == tenant_id)
                           .values(name_key=name_key))
    op.create_index('ix_tenants_name_key', 'tenants', ['name_key'], unique=True)
    if connection.dialect.name != 'sqlite':  # SQLite keeps it (no ALTER COLUMN)
        op.alter_column('tenants', 'name_key', server_default=None)


def downgrade() -> None:
    op.drop_index('ix_tenants_name_key', table_name='tenants')
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('name_key')
