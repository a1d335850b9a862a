"""ledger identity: the ledger each machine's events come from, where a replacing ledger's events are
stored, and the changes of ledger a person must see

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('machines') as batch:
        batch.add_column(sa.Column('ledger_id', sa.String(length=64), server_default='', nullable=False))
        batch.add_column(sa.Column('ledger_base', sa.BigInteger(), server_default='0', nullable=False))
    op.create_table('ledger_changes',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.Column('old_ledger', sa.String(length=64), nullable=False),
    sa.Column('old_head', sa.BigInteger(), nullable=False),
    sa.Column('new_ledger', sa.String(length=64), nullable=False),
    sa.Column('base', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id', 'number')
    )


def downgrade() -> None:
    op.drop_table('ledger_changes')
    with op.batch_alter_table('machines') as batch:
        batch.drop_column('ledger_base')
        batch.drop_column('ledger_id')
