"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 21:51:20.294746
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=8), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.Column('tenant_id', sa.String(length=36), nullable=True),
    sa.Column('client_id', sa.String(length=64), nullable=True),
    sa.Column('source', sa.String(length=64), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_at', ['at'], unique=False)
        batch_op.create_index('ix_audit_events_event_id', ['event', 'id'], unique=False)
        batch_op.create_index('ix_audit_events_tenant_id_id', ['tenant_id', 'id'], unique=False)

    op.create_table('issued_tokens',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('audience', sa.JSON(), nullable=False),
    sa.Column('kid', sa.String(length=128), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_issued_tokens'))
    )
    with op.batch_alter_table('issued_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_issued_tokens_client_issued', ['client_id', 'issued_at'], unique=False)
        batch_op.create_index('ix_issued_tokens_expires_at', ['expires_at'], unique=False)
        batch_op.create_index('ix_issued_tokens_tenant_issued', ['tenant_id', 'issued_at'], unique=False)

    op.create_table('signing_keys',
    sa.Column('kid', sa.String(length=128), nullable=False),
    sa.Column('alg', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('public_jwk', sa.JSON(), nullable=False),
    sa.Column('private_jwk_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_signing_keys'))
    )
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.create_index('uq_signing_keys_active_alg', ['alg'], unique=True, sqlite_where=sa.text("state = 'active'"), postgresql_where=sa.text("state = 'active'"))

    op.create_table('tenants',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants')),
    sa.UniqueConstraint('name', name=op.f('uq_tenants_name'))
    )
    op.create_table('clients',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('secret_hash', sa.String(length=128), nullable=True),
    sa.Column('previous_secret_hash', sa.String(length=128), nullable=True),
    sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('allowed_scopes', sa.JSON(), nullable=False),
    sa.Column('default_scopes', sa.JSON(), nullable=True),
    sa.Column('allowed_audiences', sa.JSON(), nullable=False),
    sa.Column('default_audience', sa.String(length=2000), nullable=True),
    sa.Column('grant_types', sa.JSON(), nullable=False),
    sa.Column('auth_methods', sa.JSON(), nullable=False),
    sa.Column('token_ttl', sa.Integer(), nullable=True),
    sa.Column('rate_limit', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_clients_tenant_id_tenants'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clients'))
    )
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clients_tenant_id'), ['tenant_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clients_tenant_id'))

    op.drop_table('clients')
    op.drop_table('tenants')
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_index('uq_signing_keys_active_alg', sqlite_where=sa.text("state = 'active'"), postgresql_where=sa.text("state = 'active'"))

    op.drop_table('signing_keys')
    with op.batch_alter_table('issued_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_issued_tokens_tenant_issued')
        batch_op.drop_index('ix_issued_tokens_expires_at')
        batch_op.drop_index('ix_issued_tokens_client_issued')

    op.drop_table('issued_tokens')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_tenant_id_id')
        batch_op.drop_index('ix_audit_events_event_id')
        batch_op.drop_index('ix_audit_events_at')

    op.drop_table('audit_events')

