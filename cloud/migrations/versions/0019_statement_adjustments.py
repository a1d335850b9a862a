"""statement adjustments: what a posted settlement statement's figures changed by afterwards (a refund),
carried once into the next statement posted for the location

Revision ID: 0019
Revises: 0013
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0019'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('statement_adjustments',
    sa.Column('location_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('period', sa.String(length=24), nullable=False),
    sa.Column('carried_in', sa.String(length=24), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['location_id'], ['locations.id'], ),
    sa.PrimaryKeyConstraint('location_id', 'currency', 'period', 'carried_in')
    )


def downgrade() -> None:
    op.drop_table('statement_adjustments')
