"""payments: wallet declines, the sandbox provider's requests, webhook events seen

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('wallet_declines',
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_index(op.f('ix_wallet_declines_order_id'), 'wallet_declines', ['order_id'], unique=False)
    op.create_table('sandbox_ops',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('op', sa.String(length=10), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=200), server_default='', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_try_at', UTCDateTime(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_index(op.f('ix_sandbox_ops_order_id'), 'sandbox_ops', ['order_id'], unique=False)
    op.create_index('sandbox_ops_due', 'sandbox_ops', ['status', 'next_try_at'], unique=False)
    op.create_table('webhook_events',
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('received_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'event_id')
    )


def downgrade() -> None:
    op.drop_table('webhook_events')
    op.drop_index('sandbox_ops_due', table_name='sandbox_ops')
    op.drop_index(op.f('ix_sandbox_ops_order_id'), table_name='sandbox_ops')
    op.drop_table('sandbox_ops')
    op.drop_index(op.f('ix_wallet_declines_order_id'), table_name='wallet_declines')
    op.drop_table('wallet_declines')
