"""alerts kept and delivered: alert occurrences (one open per kind, machine and slot), the rules of who is
told of which kinds, and each delivery with its tries

Revision ID: 0020
Revises: 0017
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0020'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_occurrences',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('slot', sa.String(length=3), server_default='', nullable=False),
    sa.Column('since', UTCDateTime(), nullable=False),
    sa.Column('raised_at', UTCDateTime(), nullable=False),
    sa.Column('detail', sa.String(length=300), server_default='', nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('latest', UTCDateTime(), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=80), nullable=True),
    sa.Column('acknowledged_at', UTCDateTime(), nullable=True),
    sa.Column('resolved_at', UTCDateTime(), nullable=True),
    sa.Column('resolved_by', sa.String(length=80), nullable=True),
    sa.Column('held', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('alert_occurrences_one_open', 'alert_occurrences', ['kind', 'machine_id', 'slot'], unique=True,
                    sqlite_where=sa.text('resolved_at IS NULL'), postgresql_where=sa.text('resolved_at IS NULL'))
    op.create_index('alert_occurrences_by_key', 'alert_occurrences', ['kind', 'machine_id', 'slot', 'resolved_at'])
    op.create_index('alert_occurrences_raised', 'alert_occurrences', ['raised_at'])
    op.create_table('alert_rules',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kinds', sa.String(length=300), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('target', sa.String(length=300), nullable=False),
    sa.Column('note', sa.String(length=80), server_default='', nullable=False),
    sa.Column('created_by', sa.String(length=80), server_default='', nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('alert_deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('occurrence_id', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('target', sa.String(length=300), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_try_at', UTCDateTime(), nullable=False),
    sa.Column('last_error', sa.String(length=300), server_default='', nullable=False),
    sa.Column('delivered_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['occurrence_id'], ['alert_occurrences.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('occurrence_id', 'rule_id', name='alert_deliveries_once')
    )
    op.create_index('alert_deliveries_due', 'alert_deliveries', ['status', 'next_try_at'])


def downgrade() -> None:
    op.drop_index('alert_deliveries_due', table_name='alert_deliveries')
    op.drop_table('alert_deliveries')
    op.drop_table('alert_rules')
    op.drop_index('alert_occurrences_raised', table_name='alert_occurrences')
    op.drop_index('alert_occurrences_by_key', table_name='alert_occurrences')
    op.drop_index('alert_occurrences_one_open', table_name='alert_occurrences')
    op.drop_table('alert_occurrences')
