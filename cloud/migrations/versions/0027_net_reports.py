"""net reports: refunds in the sales rollups (count and amount beside each cell's sales), the refunds
already counted, and the newest transaction looked at; filled from the journal's refunds

Revision ID: 0027
Revises: 0026
"""

from alembic import op
import sqlalchemy as sa


revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None

ROLLUPS = ('sales_rollup', 'sales_fleet_hourly', 'sales_fleet_pending')


def upgrade() -> None:
    # A plain ADD COLUMN with a default (no table copy, on SQLite as on PostgreSQL): the rollups can be big.
    for table in ROLLUPS:
        op.add_column(table, sa.Column('refund_count', sa.BigInteger(), nullable=False, server_default='0'))
        op.add_column(table, sa.Column('refunds', sa.BigInteger(), nullable=False, server_default='0'))
    op.create_table('sales_refunds_counted',
                    sa.Column('txn_id', sa.Integer(), autoincrement=False, nullable=False),
                    sa.PrimaryKeyConstraint('txn_id'))
    op.create_table('sales_refunds_mark',
                    sa.Column('id', sa.SmallInteger(), autoincrement=False, nullable=False),
                    sa.Column('txn_id', sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    # The refunds already booked: the same arithmetic the sweeper does per look (cloud/sales/reports.py).
    from cloud.sales.reports import backfill_refunds  # the rollup's own arithmetic, as 0008 uses

    backfill_refunds(op.get_bind())


def downgrade() -> None:
    op.drop_table('sales_refunds_mark')
    op.drop_table('sales_refunds_counted')
    for table in ROLLUPS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column('refunds')
            batch.drop_column('refund_count')
