"""machine credentials: a broker password per machine, and the previous secrets during a rotation

Revision ID: 0002
Revises: 0001
"""

import secrets

from alembic import op
import sqlalchemy as sa

from cloud.core.db import UTCDateTime


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('machines') as batch:
        batch.add_column(sa.Column('mqtt_password', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('mqtt_generation', sa.Integer(), server_default='1', nullable=False))
        batch.add_column(sa.Column('prev_secret', sa.String(length=128), nullable=True))
        batch.add_column(sa.Column('prev_mqtt_password', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('prev_until', UTCDateTime(), nullable=True))
    # Machines made before this revision get their broker password now, each its own.
    conn = op.get_bind()
    machines = sa.table('machines', sa.column('id', sa.String), sa.column('mqtt_password', sa.String))
    for (machine_id,) in conn.execute(sa.select(machines.c.id)).all():
        conn.execute(machines.update().where(machines.c.id == machine_id)
                     .values(mqtt_password=secrets.token_urlsafe(24)))
    with op.batch_alter_table('machines') as batch:
        batch.alter_column('mqtt_password', existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('machines') as batch:
        batch.drop_column('prev_until')
        batch.drop_column('prev_mqtt_password')
        batch.drop_column('prev_secret')
        batch.drop_column('mqtt_generation')
        batch.drop_column('mqtt_password')
