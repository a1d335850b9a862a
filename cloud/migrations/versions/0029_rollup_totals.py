"""rollup totals: the sales rollup without the product (per machine x currency x bucket) and the fleet's
per product (product x currency x bucket, with its pending deltas), filled from ``sales_rollup``

Revision ID: 0029
Revises: 0028
"""

from alembic import op
import sqlalchemy as sa


revision = '0029'
down_revision = '0028'
branch_labels = None
depends_on = None


def _figures():
    return [sa.Column('count', sa.BigInteger(), nullable=False),
            sa.Column('amount', sa.BigInteger(), nullable=False),
            sa.Column('refund_count', sa.BigInteger(), nullable=False, server_default='0'),
            sa.Column('refunds', sa.BigInteger(), nullable=False, server_default='0')]


def upgrade() -> None:
    op.create_table('sales_machine_rollup',
                    sa.Column('machine_id', sa.String(length=32), nullable=False),
                    sa.Column('span', sa.SmallInteger(), autoincrement=False, nullable=False),
                    sa.Column('bucket', sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column('currency', sa.String(length=3), nullable=False),
                    *_figures(),
                    sa.PrimaryKeyConstraint('machine_id', 'span', 'bucket', 'currency'),
                    sqlite_with_rowid=False)
    op.create_index('sales_machine_rollup_by_time', 'sales_machine_rollup',
                    ['span', 'bucket', 'machine_id', 'currency', 'count', 'amount', 'refund_count', 'refunds'],
                    unique=False)
    op.create_table('sales_fleet_products',
                    sa.Column('product_id', sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column('span', sa.SmallInteger(), autoincrement=False, nullable=False),
                    sa.Column('bucket', sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column('currency', sa.String(length=3), nullable=False),
                    *_figures(),
                    sa.PrimaryKeyConstraint('product_id', 'span', 'bucket', 'currency'),
                    sqlite_with_rowid=False)
    op.create_index('sales_fleet_products_by_time', 'sales_fleet_products', ['span', 'bucket'], unique=False)
    op.create_table('sales_fleet_products_pending',
                    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                              nullable=False),
                    sa.Column('product_id', sa.Integer(), nullable=False),
                    sa.Column('hour', sa.Integer(), nullable=False),
                    sa.Column('currency', sa.String(length=3), nullable=False),
                    *_figures(),
                    sa.PrimaryKeyConstraint('id'))
    # The sales and counted refunds already in sales_rollup, summed over products and over machines (what
    # ingest adds per batch from now on): cloud/sales/rollups.py, as 0008 and 0027 use theirs.
    from cloud.sales.rollups import rebuild_totals

    rebuild_totals(op.get_bind())


def downgrade() -> None:
    op.drop_table('sales_fleet_products_pending')
    op.drop_index('sales_fleet_products_by_time', table_name='sales_fleet_products')
    op.drop_table('sales_fleet_products')
    op.drop_index('sales_machine_rollup_by_time', table_name='sales_machine_rollup')
    op.drop_table('sales_machine_rollup')
