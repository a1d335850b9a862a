"""planogram: locations, cabinets, planogram versions, each machine's desired and applied config, the
facts alerts need; slots gain their cabinet, par level and whether the newest planogram has them

Every machine gets cabinet 1. A machine that had slots gets planogram version 1 made of them (par level 0,
cabinet 1), so the ``slots`` table is the newest planogram from the start; the cloud sends it to the
machine the next time the machine reports itself online without it.

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('locations',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('address', sa.String(length=200), server_default='', nullable=False),
    sa.Column('latitude', sa.Float(), nullable=True),
    sa.Column('longitude', sa.Float(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('machine_locations',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('location_id', sa.Integer(), nullable=False),
    sa.Column('since', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['location_id'], ['locations.id'], ),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id')
    )
    op.create_index(op.f('ix_machine_locations_location_id'), 'machine_locations', ['location_id'], unique=False)
    op.create_table('cabinets',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=40), server_default='', nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id', 'number')
    )
    conn = op.get_bind()
    machines = sa.table('machines', sa.column('id', sa.String))
    cabinets = sa.table('cabinets', sa.column('machine_id', sa.String), sa.column('number', sa.Integer),
                        sa.column('name', sa.String))
    ids = conn.execute(sa.select(machines.c.id)).scalars().all()
    if ids:
        conn.execute(cabinets.insert(), [{'machine_id': i, 'number': 1, 'name': 'main'} for i in ids])

    # SQLite cannot add a constraint to a table: batch mode copies slots into a new one (nothing refers to
    # slots, so dropping the old copy trips no foreign key). The existing CHECKs are named, and reflected.
    with op.batch_alter_table('slots') as batch:
        batch.add_column(sa.Column('cabinet', sa.Integer(), server_default='1', nullable=False))
        batch.add_column(sa.Column('par_level', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('in_planogram', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch.create_foreign_key('slot_in_cabinet', 'cabinets', ['machine_id', 'cabinet'], ['machine_id', 'number'])
        batch.create_check_constraint('par_not_negative', 'par_level >= 0')
        batch.create_check_constraint('par_within_capacity', 'par_level <= capacity')

    op.create_table('planograms',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('note', sa.String(length=200), server_default='', nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['staff.id'], ),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id', 'version')
    )
    op.create_table('planogram_slots',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('slot', sa.String(length=3), nullable=False),
    sa.Column('cabinet', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('price', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('par_level', sa.Integer(), nullable=False),
    sa.CheckConstraint('capacity >= 1', name='planogram_capacity_positive'),
    sa.CheckConstraint('par_level <= capacity', name='planogram_par_within_capacity'),
    sa.CheckConstraint('par_level >= 0', name='planogram_par_not_negative'),
    sa.CheckConstraint('price >= 0', name='planogram_price_not_negative'),
    sa.ForeignKeyConstraint(['machine_id', 'cabinet'], ['cabinets.machine_id', 'cabinets.number'],
                            name='planogram_slot_in_cabinet'),
    sa.ForeignKeyConstraint(['machine_id', 'version'], ['planograms.machine_id', 'planograms.version'],
                            name='slot_of_version'),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.PrimaryKeyConstraint('machine_id', 'version', 'slot')
    )
    op.create_table('machine_configs',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('desired', sa.Integer(), server_default='0', nullable=False),
    sa.Column('applied', sa.Integer(), server_default='0', nullable=False),
    sa.Column('applied_at', UTCDateTime(), nullable=True),
    sa.Column('rejected', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rejected_reason', sa.String(length=200), server_default='', nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id')
    )
    op.create_table('vend_failures',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('slot', sa.String(length=3), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id', 'seq')
    )
    op.create_index('vend_failures_by_time', 'vend_failures', ['at'], unique=False)
    op.create_table('machine_watch',
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('door_open_since', UTCDateTime(), nullable=True),
    sa.Column('unsynced_since', UTCDateTime(), nullable=True),
    sa.Column('unsynced_seq', sa.BigInteger(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], ),
    sa.PrimaryKeyConstraint('machine_id')
    )
    _first_versions(conn)


def _first_versions(conn) -> None:
    """Version 1 of every machine that has slots: the slots as they are."""
    slots = sa.table('slots', sa.column('machine_id', sa.String), sa.column('slot', sa.String),
                     sa.column('product_id', sa.Integer), sa.column('price', sa.BigInteger),
                     sa.column('currency', sa.String), sa.column('capacity', sa.Integer))
    planograms = sa.table('planograms', sa.column('machine_id', sa.String), sa.column('version', sa.Integer),
                          sa.column('created_at', UTCDateTime), sa.column('note', sa.String))
    planogram_slots = sa.table('planogram_slots', *(sa.column(c) for c in (
        'machine_id', 'version', 'slot', 'cabinet', 'product_id', 'price', 'currency', 'capacity', 'par_level')))
    configs = sa.table('machine_configs', sa.column('machine_id', sa.String), sa.column('desired', sa.Integer))
    rows = conn.execute(sa.select(slots).order_by(slots.c.machine_id, slots.c.slot)).all()
    if not rows:
        return
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    machine_ids = sorted({r.machine_id for r in rows})
    conn.execute(planograms.insert(), [{'machine_id': m, 'version': 1, 'created_at': now,
                                        'note': 'the slots before planograms'} for m in machine_ids])
    conn.execute(planogram_slots.insert(), [
        {'machine_id': r.machine_id, 'version': 1, 'slot': r.slot, 'cabinet': 1, 'product_id': r.product_id,
         'price': r.price, 'currency': r.currency, 'capacity': r.capacity, 'par_level': 0} for r in rows])
    conn.execute(configs.insert(), [{'machine_id': m, 'desired': 1} for m in machine_ids])


def downgrade() -> None:
    op.drop_table('machine_watch')
    op.drop_index('vend_failures_by_time', table_name='vend_failures')
    op.drop_table('vend_failures')
    op.drop_table('machine_configs')
    op.drop_table('planogram_slots')
    op.drop_table('planograms')
    with op.batch_alter_table('slots') as batch:
        batch.drop_constraint('par_within_capacity', type_='check')
        batch.drop_constraint('par_not_negative', type_='check')
        batch.drop_constraint('slot_in_cabinet', type_='foreignkey')
        batch.drop_column('in_planogram')
        batch.drop_column('par_level')
        batch.drop_column('cabinet')
    op.drop_table('cabinets')
    op.drop_index(op.f('ix_machine_locations_location_id'), table_name='machine_locations')
    op.drop_table('machine_locations')
    op.drop_table('locations')
