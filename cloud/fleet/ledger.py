"""The machines' ledgers as the cloud stores them: every event once, keyed by (machine, seq), hash-chained."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.core.db import metadata

events = sa.Table(
    "events", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("boot", sa.Integer, nullable=False),
    sa.Column("clock_synced", sa.Boolean, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sqlite_with_rowid=False,  # one B-tree keyed by (machine, seq) instead of a rowid table plus an index
)

EVENT_COLUMNS = ("machine_id", "seq", "ts", "boot", "clock_synced", "kind", "data", "prev_hash", "hash")


def recent(conn: sa.Connection, machine_id: str, limit: int = 50) -> list:
    """A machine's newest stored events, newest first."""
    return conn.execute(sa.select(events).where(events.c.machine_id == machine_id)
                        .order_by(events.c.seq.desc()).limit(limit)).all()
