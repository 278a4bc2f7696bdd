"""netsuite_connectors and encrypted_keys: NetSuite OAuth 2.0 M2M connectors

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('netsuite_connectors',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('account_id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=200), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('token_url', sa.String(length=2000), nullable=False),
    sa.Column('rest_base_url', sa.String(length=2000), nullable=False),
    sa.Column('restlets_base_url', sa.String(length=2000), nullable=False),
    sa.Column('throttle_requests', sa.Integer(), nullable=False),
    sa.Column('throttle_period', sa.Integer(), nullable=False),
    sa.Column('max_concurrency', sa.Integer(), nullable=False),
    sa.Column('primary_key_id', sa.String(length=64), nullable=True),
    sa.Column('active_key_id', sa.String(length=64), nullable=True),
    sa.Column('secondary_key_id', sa.String(length=64), nullable=True),
    sa.Column('active_certificate_id', sa.String(length=200), nullable=True),
    sa.Column('pending_certificate_id', sa.String(length=200), nullable=True),
    sa.Column('certificate_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rotation_initiated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retiring_certificate_id', sa.String(length=200), nullable=True),
    sa.Column('retiring_certificate_revoke_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expiry_warned_certificate_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_netsuite_connectors_tenant_id_tenants'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_netsuite_connectors'))
    )
    with op.batch_alter_table('netsuite_connectors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_netsuite_connectors_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('encrypted_keys',
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('connector_id', sa.String(length=36), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('private_key_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('certificate_not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connector_id'], ['netsuite_connectors.id'], name=op.f('fk_encrypted_keys_connector_id_netsuite_connectors'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_encrypted_keys_tenant_id_tenants'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_encrypted_keys'))
    )
    with op.batch_alter_table('encrypted_keys', schema=None) as batch_op:
        batch_op.create_index('ix_encrypted_keys_connector_id', ['connector_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_encrypted_keys_tenant_id'), ['tenant_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('encrypted_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_encrypted_keys_tenant_id'))
        batch_op.drop_index('ix_encrypted_keys_connector_id')

    op.drop_table('encrypted_keys')
    with op.batch_alter_table('netsuite_connectors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_netsuite_connectors_tenant_id'))

    op.drop_table('netsuite_connectors')
