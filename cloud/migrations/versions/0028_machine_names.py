"""machine names per language: one row per machine and language other than the default one

Revision ID: 0028
Revises: 0027
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'machine_names',
        sa.Column('machine_id', sa.String(length=32), sa.ForeignKey('machines.id'), primary_key=True),
        sa.Column('lang', sa.String(length=16), primary_key=True),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('machine_names')
