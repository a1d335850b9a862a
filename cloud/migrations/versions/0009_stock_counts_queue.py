"""stock counts queue and running balances: restock counts ingest stored, waiting for the sweeper to book
them; and each product's quantity and value per place, so a balance is one row, not a scan of its history

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stock_counts_pending',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('slot', sa.String(length=3), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('count_before', sa.Integer(), nullable=False),
    sa.Column('count_after', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=200), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('machine_id', 'seq'),
    sqlite_with_rowid=False
    )


    op.create_table('stock_balances',
    sa.Column('product_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('slot', sa.String(length=3), nullable=False),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('product_id', 'machine_id', 'slot'),
    sqlite_with_rowid=False
    )
    op.execute("INSERT INTO stock_balances (product_id, machine_id, slot, quantity, value) "
               "SELECT product_id, COALESCE(machine_id, ''), COALESCE(slot, ''), SUM(quantity), SUM(value) "
               "FROM stock_movements GROUP BY product_id, COALESCE(machine_id, ''), COALESCE(slot, '')")


def downgrade() -> None:
    op.drop_table('stock_balances')
    op.drop_table('stock_counts_pending')
