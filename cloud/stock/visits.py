"""The technician's day at the machines: "loaded" (the van holds a machine's pick list) and "restocked"
(what the technician says they put in each slot), each kept once under an idempotency key.

A restock report is refused unless the cloud's last word from the machine says its service door is open:
a machine that is offline, or whose newest door event is ``door.closed`` (or that never said), cannot be
seeing the restock. The report is the technician's word, not a stock movement: the stock book keeps booking
a machine's stock from the ``restock`` events its own ledger writes (``book.ledger_counts``), so the
machine's ledger stays the truth and a report never counts twice. (The protocol has no restock command
for the cloud to send; see docs/technician.md.)
"""

from __future__ import annotations

import json
from datetime import date, datetime

import sqlalchemy as sa

from cloud.catalog.common import StockError
from cloud.core.db import UTCDateTime, metadata
from cloud.fleet import machines
from cloud.fleet.alerts import machine_watch

KEY_MAX = 64
MAX_COUNT = 1000  # what the machine's own service request accepts per slot (controller/service.py)

route_loads = sa.Table(
    "route_loads", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), nullable=False),
    sa.Column("key", sa.String(KEY_MAX), nullable=False, unique=True),
    sa.Column("loaded_by", sa.String(80), nullable=False),
    sa.Column("loaded_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("day", "machine_id", name="a_machine_loaded_once_a_day"),
)

restock_reports = sa.Table(
    "restock_reports", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), nullable=False),
    sa.Column("key", sa.String(KEY_MAX), nullable=False, unique=True),
    sa.Column("counts", sa.Text, nullable=False),  # {"A1": 8, ...} as JSON: units put in each slot
    sa.Column("door_open_since", UTCDateTime, nullable=False),  # the door event the report was accepted on
    sa.Column("reported_by", sa.String(80), nullable=False),
    sa.Column("reported_at", UTCDateTime, nullable=False),
    sa.Index("restock_reports_by_machine", "machine_id", "reported_at"),
)


class VisitError(StockError):
    """A load or restock refused; ``code`` says why, for a page to put in the reader's language."""

    def __init__(self, code: str, field: str, message: str, status: int = 422):
        super().__init__(field, message, status)
        self.code = code


def _key(key) -> str:
    if not isinstance(key, str) or not 8 <= len(key) <= KEY_MAX or not key.isascii() or not key.isprintable():
        raise VisitError("key", "key", f"an idempotency key is 8 to {KEY_MAX} printable ASCII characters")
    return key


def _machine(conn: sa.Connection, machine_id):
    if not isinstance(machine_id, str):
        raise VisitError("machine", "machine_id", "must be a machine id")
    try:
        return machines.in_service(conn, machine_id)
    except machines.Retired as e:
        raise VisitError("retired", "machine_id", str(e), 409) from None
    except machines.FleetError:
        raise VisitError("machine", "machine_id", f"no machine {machine_id!r}", 404) from None


def door(conn: sa.Connection, machine_id: str) -> tuple[str, datetime | None]:
    """The cloud's last word on a machine's service door: ("open", since when), ("shut", None) or
    ("offline", None) when the machine is not connected now."""
    row = _machine(conn, machine_id)
    if not row.online:
        return "offline", None
    since = conn.execute(sa.select(machine_watch.c.door_open_since)
                         .where(machine_watch.c.machine_id == machine_id)).scalar()
    return ("open", since) if since is not None else ("shut", None)


# -- loaded ------------------------------------------------------------------------------------------

def mark_loaded(conn: sa.Connection, day: date, machine_id, key, who: str, now: datetime) -> tuple[object, bool]:
    """Say a machine's load for ``day`` is in the van; (the row, whether this call made it). The same key
    again, or the same machine and day under another key (a second tap), changes nothing."""
    key = _key(key)
    _machine(conn, machine_id)
    t = route_loads
    row = conn.execute(sa.select(t).where(t.c.key == key)).first()
    if row is not None:
        if (row.day, row.machine_id) != (day, machine_id):
            raise VisitError("key_used", "key", "this key was used for another machine or day", 409)
        return row, False
    row = conn.execute(sa.select(t).where(t.c.day == day, t.c.machine_id == machine_id)).first()
    if row is not None:
        return row, False
    conn.execute(t.insert().values(day=day, machine_id=machine_id, key=key, loaded_by=who, loaded_at=now))
    return conn.execute(sa.select(t).where(t.c.key == key)).first(), True


def loads(conn: sa.Connection, day: date) -> dict[str, object]:
    """The machines loaded for ``day``: {machine id: row}."""
    return {r.machine_id: r for r in conn.execute(sa.select(route_loads).where(route_loads.c.day == day))}


def load_public(row) -> dict:
    return {"id": row.id, "day": row.day.isoformat(), "machine_id": row.machine_id, "loaded_by": row.loaded_by,
            "loaded_at": row.loaded_at.isoformat()}


# -- restocked ---------------------------------------------------------------------------------------

def check_counts(conn: sa.Connection, machine_id: str, counts) -> dict[str, int]:
    """Units put in each slot: the machine's own slots, whole numbers 0 to MAX_COUNT, at least one slot."""
    if not isinstance(counts, dict) or not counts:
        raise VisitError("no_counts", "counts", "give the units put in each slot, like {\"A1\": 8}")
    known = {r.slot for r in machines.menu(conn, machine_id)}
    out = {}
    for slot, count in counts.items():
        if slot not in known:
            raise VisitError("slot", f"counts.{slot}", f"no slot {slot!r} on {machine_id}")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_COUNT:
            raise VisitError("count", f"counts.{slot}", f"must be a whole number 0 to {MAX_COUNT}")
        out[slot] = count
    return dict(sorted(out.items()))


def report_restock(conn: sa.Connection, machine_id, counts, key, who: str, now: datetime) -> tuple[object, bool]:
    """Keep the technician's restock of a machine whose door the cloud last heard open; (row, whether this
    call made it). The same key again gives the first report back, whatever the door says now."""
    key = _key(key)
    _machine(conn, machine_id)
    t = restock_reports
    row = conn.execute(sa.select(t).where(t.c.key == key)).first()
    if row is not None:
        if row.machine_id != machine_id:
            raise VisitError("key_used", "key", "this key was used for another machine", 409)
        return row, False
    counts = check_counts(conn, machine_id, counts)
    state, since = door(conn, machine_id)
    if state == "offline":
        raise VisitError("offline", "door", f"{machine_id} is offline: the cloud cannot know that its service door "
                                            "is open. Open the service door first: the machine must see you restock",
                         409)
    if state == "shut":
        raise VisitError("door_shut", "door", "the service door is shut: open the service door first, the machine "
                                              "must see you restock", 409)
    conn.execute(t.insert().values(machine_id=machine_id, key=key, counts=json.dumps(counts), door_open_since=since,
                                   reported_by=who, reported_at=now))
    return conn.execute(sa.select(t).where(t.c.key == key)).first(), True


def reports(conn: sa.Connection, machine_id: str, since: datetime) -> list:
    """A machine's restock reports from ``since`` on, newest first."""
    t = restock_reports
    return conn.execute(sa.select(t).where(t.c.machine_id == machine_id, t.c.reported_at >= since)
                        .order_by(t.c.reported_at.desc(), t.c.id.desc())).all()


def report_public(row) -> dict:
    return {"id": row.id, "machine_id": row.machine_id, "counts": json.loads(row.counts),
            "door_open_since": row.door_open_since.isoformat(), "reported_by": row.reported_by,
            "reported_at": row.reported_at.isoformat()}
