"""places: where each machine stood when (a settlement counts each sale at the place its machine stood),
retired machines, locations' names per language and time zone, routes' weekdays

Revision ID: 0024
Revises: 0023
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('machines') as batch:
        batch.add_column(sa.Column('retired_at', UTCDateTime(), nullable=True))
    with op.batch_alter_table('locations') as batch:
        batch.add_column(sa.Column('tz', sa.String(length=64), nullable=False, server_default='UTC'))
    with op.batch_alter_table('routes') as batch:
        batch.add_column(sa.Column('weekdays', sa.String(length=7), nullable=False, server_default='1234567'))
    op.create_table('location_names',
                    sa.Column('location_id', sa.Integer(), sa.ForeignKey('locations.id'), nullable=False),
                    sa.Column('lang', sa.String(length=16), nullable=False),
                    sa.Column('name', sa.String(length=80), nullable=False),
                    sa.PrimaryKeyConstraint('location_id', 'lang'))
    op.create_table('machine_placements',
                    sa.Column('id', sa.Integer(), nullable=False, autoincrement=True),
                    sa.Column('machine_id', sa.String(length=32), sa.ForeignKey('machines.id'), nullable=False),
                    sa.Column('location_id', sa.Integer(), sa.ForeignKey('locations.id'), nullable=False),
                    sa.Column('valid_from', UTCDateTime(), nullable=True),
                    sa.Column('valid_to', UTCDateTime(), nullable=True),
                    sa.Column('placed_at', UTCDateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_machine_placements_location_id', 'machine_placements', ['location_id'])
    op.create_index('placements_of_machine', 'machine_placements', ['machine_id', 'valid_to'])
    # Where machines stand now becomes each one's first stay: before this, a settlement counted every sale
    # of a machine at the place it stands now, and so does this stay (no start).
    op.execute("INSERT INTO machine_placements (machine_id, location_id, valid_from, valid_to, placed_at) "
               "SELECT machine_id, location_id, NULL, NULL, since FROM machine_locations")


def downgrade() -> None:
    op.drop_index('placements_of_machine', table_name='machine_placements')
    op.drop_index('ix_machine_placements_location_id', table_name='machine_placements')
    op.drop_table('machine_placements')
    op.drop_table('location_names')
    with op.batch_alter_table('routes') as batch:
        batch.drop_column('weekdays')
    with op.batch_alter_table('locations') as batch:
        batch.drop_column('tz')
    with op.batch_alter_table('machines') as batch:
        batch.drop_column('retired_at')
