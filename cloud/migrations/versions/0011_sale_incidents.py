"""sale incidents: the sales row keeps what a drop no order paid for was (dropped after its order closed,
charged afresh or not; naming an order the machine was never sent), and the alerts keep when it happened

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sales') as batch:
        batch.add_column(sa.Column('incident', sa.String(length=20), server_default='', nullable=False))
    op.create_table('vend_incidents',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('slot', sa.String(length=3), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id', 'seq')
    )
    op.create_index('vend_incidents_by_time', 'vend_incidents', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('vend_incidents_by_time', table_name='vend_incidents')
    op.drop_table('vend_incidents')
    with op.batch_alter_table('sales') as batch:
        batch.drop_column('incident')
