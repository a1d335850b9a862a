"""product names per language: one row per product and language other than the default one

Revision ID: 0023
Revises: 0022
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'product_names',
        sa.Column('product_id', sa.Integer(), sa.ForeignKey('products.id'), primary_key=True, autoincrement=False),
        sa.Column('lang', sa.String(length=16), primary_key=True),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('product_names')
