"""audits: EVA-DTS (DEX) files imported per machine, each read compared with the one before it

Revision ID: 0017
Revises: 0019
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0017'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audits',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('filename', sa.String(length=200), server_default='', nullable=False),
    sa.Column('imported_at', UTCDateTime(), nullable=False),
    sa.Column('read_at', UTCDateTime(), nullable=True),
    sa.Column('serial', sa.String(length=40), server_default='', nullable=False),
    sa.Column('board', sa.String(length=40), server_default='', nullable=False),
    sa.Column('crc', sa.String(length=12), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('note', sa.Text(), server_default='', nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('paid_count', sa.BigInteger(), nullable=False),
    sa.Column('paid_value', sa.BigInteger(), nullable=False),
    sa.Column('sold_count', sa.BigInteger(), nullable=False),
    sa.Column('sold_value', sa.BigInteger(), nullable=False),
    sa.Column('counters', sa.Text(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    op.create_index('audits_by_machine', 'audits', ['machine_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('audits_by_machine', table_name='audits')
    op.drop_table('audits')
