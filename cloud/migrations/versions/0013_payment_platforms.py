"""payment platforms: customers' mandates, the outbox their requests go through (payment_ops), and the
platforms' imported statement lines

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mandates',
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('reference', sa.String(length=200), server_default='', nullable=False),
    sa.Column('detail', sa.Text(), server_default='{}', nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('customer_id', 'provider')
    )
    op.create_index('mandates_reference', 'mandates', ['provider', 'reference'], unique=False)
    op.create_table('payment_ops',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('op', sa.String(length=10), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=200), server_default='', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_try_at', UTCDateTime(), nullable=False),
    sa.Column('platform_ref', sa.String(length=100), server_default='', nullable=False),
    sa.Column('detail', sa.Text(), server_default='{}', nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provider', 'key', name='payment_ops_key')
    )
    op.create_index('payment_ops_due', 'payment_ops', ['provider', 'status', 'next_try_at'], unique=False)
    op.create_index('payment_ops_order', 'payment_ops', ['provider', 'order_id'], unique=False)
    op.create_table('statement_lines',
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('platform_id', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('fee', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('imported_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'platform_id', 'kind')
    )
    op.create_index(op.f('ix_statement_lines_order_id'), 'statement_lines', ['order_id'], unique=False)
    op.create_index('statement_lines_at', 'statement_lines', ['provider', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('statement_lines_at', table_name='statement_lines')
    op.drop_index(op.f('ix_statement_lines_order_id'), table_name='statement_lines')
    op.drop_table('statement_lines')
    op.drop_index('payment_ops_order', table_name='payment_ops')
    op.drop_index('payment_ops_due', table_name='payment_ops')
    op.drop_table('payment_ops')
    op.drop_index('mandates_reference', table_name='mandates')
    op.drop_table('mandates')
