"""reports: the sales rollups (per machine x product x bucket, and fleet totals per hour), filled from sales

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sales_rollup',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('span', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('bucket', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('product_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('machine_id', 'span', 'bucket', 'product_id', 'currency'),
    sqlite_with_rowid=False
    )
    op.create_index('sales_rollup_by_time', 'sales_rollup', ['span', 'bucket'], unique=False)
    op.create_index('sales_rollup_by_product', 'sales_rollup', ['product_id', 'span', 'bucket'], unique=False)
    op.create_table('sales_fleet_hourly',
    sa.Column('hour', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('hour', 'currency'),
    sqlite_with_rowid=False
    )
    op.create_table('sales_fleet_pending',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('hour', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    # The sales already stored: the same arithmetic ingest does per batch (cloud/sales/reports.py rollup_rows),
    # over the whole table, in raw SQL that reads only the sales columns this revision knows.
    from cloud.sales.reports import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table('sales_fleet_pending')
    op.drop_table('sales_fleet_hourly')
    op.drop_index('sales_rollup_by_product', table_name='sales_rollup')
    op.drop_index('sales_rollup_by_time', table_name='sales_rollup')
    op.drop_table('sales_rollup')
