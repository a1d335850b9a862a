"""office pages: a customer can be blocked from buying (when, why); orders searched newest first by time,
machine or customer without scanning the table

Revision ID: 0022
Revises: 0020
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0022'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers') as batch:
        batch.add_column(sa.Column('blocked_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('blocked_reason', sa.String(length=200), nullable=False, server_default=''))
    op.create_index('orders_newest', 'orders', ['created_at', 'id'])
    op.create_index('orders_by_machine', 'orders', ['machine_id', 'created_at', 'id'])
    op.create_index('orders_by_customer', 'orders', ['customer_id', 'created_at', 'id'])


def downgrade() -> None:
    op.drop_index('orders_by_customer', table_name='orders')
    op.drop_index('orders_by_machine', table_name='orders')
    op.drop_index('orders_newest', table_name='orders')
    with op.batch_alter_table('customers') as batch:
        batch.drop_column('blocked_reason')
        batch.drop_column('blocked_at')
