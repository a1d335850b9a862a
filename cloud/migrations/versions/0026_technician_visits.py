"""technician visits: a machine's load marked "loaded" for a day, restock reports (door open)

Revision ID: 0026
Revises: 0024
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0026'
down_revision = '0024'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('route_loads',
                    sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
                    sa.Column('day', sa.Date(), nullable=False),
                    sa.Column('machine_id', sa.String(length=32), sa.ForeignKey('machines.id'), nullable=False),
                    sa.Column('key', sa.String(length=64), nullable=False, unique=True),
                    sa.Column('loaded_by', sa.String(length=80), nullable=False),
                    sa.Column('loaded_at', UTCDateTime(), nullable=False),
                    sa.UniqueConstraint('day', 'machine_id', name='a_machine_loaded_once_a_day'))
    op.create_table('restock_reports',
                    sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
                    sa.Column('machine_id', sa.String(length=32), sa.ForeignKey('machines.id'), nullable=False),
                    sa.Column('key', sa.String(length=64), nullable=False, unique=True),
                    sa.Column('counts', sa.Text(), nullable=False),
                    sa.Column('door_open_since', UTCDateTime(), nullable=False),
                    sa.Column('reported_by', sa.String(length=80), nullable=False),
                    sa.Column('reported_at', UTCDateTime(), nullable=False))
    op.create_index('restock_reports_by_machine', 'restock_reports', ['machine_id', 'reported_at'])


def downgrade() -> None:
    op.drop_index('restock_reports_by_machine', table_name='restock_reports')
    op.drop_table('restock_reports')
    op.drop_table('route_loads')
