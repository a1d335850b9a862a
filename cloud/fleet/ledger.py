"""The machines' ledgers as the cloud stores them: every event once, keyed by (machine, seq), hash-chained.

A machine may replace its ledger (a new card starts again at seq 1, with a new ledger id). The cloud then
keeps the old ledger's events and stores the new one's after them: the new ledger's seq n is kept as seq
``base + n``, where ``base`` is the last seq stored before it (``machines.ledger_base``). So (machine, seq)
stays the key of every event, sale and count, the old sales keep their rows, and each change is a row in
``ledger_changes`` that the machine's page, the API and ``vendctl machines`` show.
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata

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

ledger_changes = sa.Table(
    "ledger_changes", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),  # 1 for the machine's first change
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("old_ledger", sa.String(64), nullable=False),
    sa.Column("old_head", sa.BigInteger, nullable=False),  # the old ledger's last stored seq, in its numbering
    sa.Column("new_ledger", sa.String(64), nullable=False),
    sa.Column("base", sa.BigInteger, nullable=False),  # the new ledger's seq n is stored as events seq base + n
)


def recent(conn: sa.Connection, machine_id: str, limit: int = 50) -> list:
    """A machine's newest stored events, newest first."""
    return conn.execute(sa.select(events).where(events.c.machine_id == machine_id)
                        .order_by(events.c.seq.desc()).limit(limit)).all()


def stored_hashes(conn: sa.Connection, machine_id: str, first: int, last: int) -> dict[int, str]:
    """The stored hashes of events seq first..last (the cloud's numbering), by seq."""
    return dict(conn.execute(sa.select(events.c.seq, events.c.hash).where(
        events.c.machine_id == machine_id, events.c.seq.between(first, last))).all())


def changes(conn: sa.Connection, machine_id: str | None = None) -> list:
    """Ledger changes, oldest first; of one machine, or of all."""
    query = sa.select(ledger_changes).order_by(ledger_changes.c.machine_id, ledger_changes.c.number)
    if machine_id is not None:
        query = query.where(ledger_changes.c.machine_id == machine_id)
    return conn.execute(query).all()


def replaced(conn: sa.Connection, machine_id: str, ledger: str) -> bool:
    """Whether this machine has left ``ledger`` for another: its late batches must never switch back."""
    return conn.execute(sa.select(sa.literal(1)).where(ledger_changes.c.machine_id == machine_id,
                                                       ledger_changes.c.old_ledger == ledger)).first() is not None


def record_change(conn: sa.Connection, machine_id: str, old_ledger: str, old_head: int, new_ledger: str,
                  base: int, at: datetime) -> None:
    """Keep one ledger change of a machine, for a person to see."""
    number = conn.execute(sa.select(sa.func.coalesce(sa.func.max(ledger_changes.c.number), 0))
                          .where(ledger_changes.c.machine_id == machine_id)).scalar() + 1
    conn.execute(ledger_changes.insert().values(machine_id=machine_id, number=number, at=at, old_ledger=old_ledger,
                                                old_head=old_head, new_ledger=new_ledger, base=base))


def last_selftest(conn: sa.Connection, machine_id: str) -> dict | None:
    """The newest self-test the machine's ledger holds (``controller/selftest.py``): when, on which boot, and its
    checks; None before the first."""
    row = conn.execute(sa.select(events.c.seq, events.c.ts, events.c.boot, events.c.clock_synced, events.c.data)
                       .where(events.c.machine_id == machine_id, events.c.kind == "selftest")
                       .order_by(events.c.seq.desc()).limit(1)).first()
    if row is None:
        return None
    data = json.loads(row.data)
    checks = [{"check": c["check"], "ok": c["ok"], "detail": c["detail"]} for c in data["checks"]]
    return {"seq": row.seq, "ts": row.ts, "boot": row.boot, "clock_synced": row.clock_synced,
            "passed": all(c["ok"] for c in checks), "checks": checks}
