"""customer sign-in codes: one-time codes (kept hashed) that bring an account to a new phone, and the
customer's optional e-mail address they can be sent to

Revision ID: 0012
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers') as batch:
        batch.add_column(sa.Column('email', sa.String(length=254), nullable=True))
    op.create_table('customer_codes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('ended_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_customer_codes_customer_id'), 'customer_codes', ['customer_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_customer_codes_customer_id'), table_name='customer_codes')
    op.drop_table('customer_codes')
    with op.batch_alter_table('customers') as batch:
        batch.drop_column('email')
