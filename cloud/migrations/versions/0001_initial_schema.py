"""initial schema

Revision ID: 0001
Revises: 
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'customer_id', 'currency', name='one_account_per_owner')
    )
    op.create_table('customers',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('payment_method', sa.String(length=20), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('phone')
    )
    op.create_table('machines',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('location', sa.String(length=200), server_default='', nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('online', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('last_seen', UTCDateTime(), nullable=True),
    sa.Column('firmware', sa.String(length=40), server_default='', nullable=False),
    sa.Column('boot', sa.Integer(), server_default='0', nullable=False),
    sa.Column('machine_head', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cloud_head', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('cloud_head_hash', sa.String(length=64), server_default='0000000000000000000000000000000000000000000000000000000000000000', nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('products',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sku', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sku')
    )
    op.create_table('txns',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_index(op.f('ix_txns_order_id'), 'txns', ['order_id'], unique=False)
    op.create_table('entries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('txn_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.ForeignKeyConstraint(['txn_id'], ['txns.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_entries_account_id'), 'entries', ['account_id'], unique=False)
    op.create_index(op.f('ix_entries_txn_id'), 'entries', ['txn_id'], unique=False)
    op.create_table('events',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('ts', sa.String(length=40), nullable=False),
    sa.Column('boot', sa.Integer(), nullable=False),
    sa.Column('clock_synced', sa.Boolean(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id', 'seq'),
    sqlite_with_rowid=False
    )
    op.create_table('orders',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('idem_key', sa.String(length=64), nullable=False),
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('slot', sa.String(length=3), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=200), server_default='', nullable=False),
    sa.Column('cmd_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cmd_id'),
    sa.UniqueConstraint('customer_id', 'idem_key', name='one_order_per_key')
    )
    op.create_index('orders_open', 'orders', ['status', 'expires_at'], unique=False)
    op.create_table('sales',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('ts', sa.String(length=40), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('slot', sa.String(length=3), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id', 'seq'),
    sqlite_with_rowid=False
    )
    op.create_index('sales_by_time', 'sales', ['ts'], unique=False)
    op.create_table('slots',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('slot', sa.String(length=3), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('price', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('flagged', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.CheckConstraint('count >= 0', name='count_not_negative'),
    sa.CheckConstraint('price >= 0', name='price_not_negative'),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.PrimaryKeyConstraint('machine_id', 'slot')
    )


def downgrade() -> None:
    op.drop_table('slots')
    op.drop_index('sales_by_time', table_name='sales')
    op.drop_table('sales')
    op.drop_index('orders_open', table_name='orders')
    op.drop_table('orders')
    op.drop_table('events')
    op.drop_index(op.f('ix_entries_txn_id'), table_name='entries')
    op.drop_index(op.f('ix_entries_account_id'), table_name='entries')
    op.drop_table('entries')
    op.drop_index(op.f('ix_txns_order_id'), table_name='txns')
    op.drop_table('txns')
    op.drop_table('products')
    op.drop_table('machines')
    op.drop_table('customers')
    op.drop_table('accounts')
