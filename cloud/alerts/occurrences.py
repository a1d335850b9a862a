"""Alert occurrences: each alert raised is a row, kept, with who acknowledged it and when it ended.

``cloud/fleet/alerts.py`` (and the payments' failed requests, ``cloud/alerts/watch.py``) say what is wrong
now; ``refresh`` turns that into occurrences: a condition with no open occurrence of its (kind, machine,
slot) raises one (a partial unique index keeps one open per key, even with two cloud processes looking at
once); an open occurrence whose condition is gone is resolved by itself.

A person may resolve an occurrence whose condition still holds (a machine being retired, a known fault):
it stays resolved, marked ``held``, and is not raised again while that condition lasts; for an alert made
of events (failed vends, drops without an order, failed payments) a newer event than the resolution raises
it again. Once the condition has cleared, the next one raises a new occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, insert_ignore, metadata

STATES = ("open", "acknowledged", "resolved")
DETAIL_MAX = 300

alert_occurrences = sa.Table(
    "alert_occurrences", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("machine_id", sa.String(32), nullable=False),
    sa.Column("slot", sa.String(3), nullable=False, server_default=""),  # "" for a machine's own alert
    sa.Column("since", UTCDateTime, nullable=False),  # when the condition began, as far as is known
    sa.Column("raised_at", UTCDateTime, nullable=False),
    sa.Column("detail", sa.String(DETAIL_MAX), nullable=False, server_default=""),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("latest", UTCDateTime, nullable=True),  # the newest event an event-made alert counts
    sa.Column("acknowledged_by", sa.String(80), nullable=True),
    sa.Column("acknowledged_at", UTCDateTime, nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("resolved_by", sa.String(80), nullable=True),  # None: its condition cleared by itself
    sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("alert_occurrences_one_open", "kind", "machine_id", "slot", unique=True,
             sqlite_where=sa.text("resolved_at IS NULL"), postgresql_where=sa.text("resolved_at IS NULL")),
    sa.Index("alert_occurrences_by_key", "kind", "machine_id", "slot", "resolved_at"),
    sa.Index("alert_occurrences_raised", "raised_at"),
)


class AlertError(Exception):
    """An acknowledgement or resolution refused: ``status`` for the API, the message for a person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Condition:
    """What is wrong now, as ``cloud/fleet/alerts.py`` says it (kind, machine, slot, since, detail...)."""

    kind: str
    machine_id: str
    slot: str
    since: datetime
    detail: str
    value: float | None = None
    latest: datetime | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.machine_id, self.slot


def _key(row) -> tuple[str, str, str]:
    return row.kind, row.machine_id, row.slot


def refresh(conn: sa.Connection, found: list[Condition], judged: "callable", now: datetime) -> list[int]:
    """Raise, update and resolve occurrences from the conditions ``found`` now; return the ids raised.

    ``judged(kind, machine_id)`` says whether this process can tell that a condition of that kind is gone
    (a process that has no temperature reading of a machine cannot): occurrences it cannot judge stay open.
    """
    o = alert_occurrences
    wanted = {c.key: c for c in found}
    open_rows = {_key(r): r for r in conn.execute(sa.select(o).where(o.c.resolved_at.is_(None)))}
    held = {_key(r): r for r in conn.execute(sa.select(o).where(o.c.held).order_by(o.c.resolved_at))}
    raised = []
    for key, c in sorted(wanted.items()):
        detail = c.detail[:DETAIL_MAX]
        row = open_rows.get(key)
        if row is not None:
            if (row.detail, row.value, row.latest) != (detail, c.value, c.latest):
                conn.execute(o.update().where(o.c.id == row.id).values(detail=detail, value=c.value, latest=c.latest))
            continue
        kept = held.get(key)
        if kept is not None and not (c.latest is not None and c.latest > kept.resolved_at):
            continue  # a person resolved it while this condition held; it has not started again
        if kept is not None:
            conn.execute(o.update().where(o.c.id == kept.id).values(held=False))
        new = conn.execute(insert_ignore(conn, o).values(
            kind=c.kind, machine_id=c.machine_id, slot=c.slot, since=c.since, raised_at=now, detail=detail,
            value=c.value, latest=c.latest).returning(o.c.id)).first()
        if new is not None:  # None: another cloud process raised it a moment ago
            raised.append(new.id)
    # Only those raised before the look began: the conditions were read before this transaction (so that a
    # look at a big fleet does not hold the writers up), and another cloud process may have raised one since.
    gone = [r.id for key, r in open_rows.items()
            if key not in wanted and judged(r.kind, r.machine_id) and r.raised_at <= now]
    if gone:
        conn.execute(o.update().where(o.c.id.in_(gone), o.c.resolved_at.is_(None)).values(resolved_at=now))
    cleared = [r.id for key, r in held.items() if key not in wanted and judged(r.kind, r.machine_id)]
    if cleared:
        conn.execute(o.update().where(o.c.id.in_(cleared)).values(held=False))
    return raised


def state_of(row) -> str:
    if row.resolved_at is not None:
        return "resolved"
    return "acknowledged" if row.acknowledged_at is not None else "open"


def public(row) -> dict:
    """An occurrence as the API gives it (times in ISO 8601, UTC)."""
    def iso(t):
        return t.isoformat() if t is not None else None
    return {"id": row.id, "kind": row.kind, "machine_id": row.machine_id, "slot": row.slot or None,
            "since": iso(row.since), "raised_at": iso(row.raised_at), "detail": row.detail, "value": row.value,
            "state": state_of(row), "acknowledged_by": row.acknowledged_by, "acknowledged_at": iso(row.acknowledged_at),
            "resolved_by": row.resolved_by, "resolved_at": iso(row.resolved_at)}


def listing(conn: sa.Connection, states: tuple[str, ...] = ("open", "acknowledged"), machine_id: str | None = None,
            limit: int = 200, machine_ids: list[str] | None = None) -> list:
    """Occurrences in ``states`` (of one machine, or of these machines), newest raised first."""
    o = alert_occurrences
    wanted = []
    if "open" in states:
        wanted.append(sa.and_(o.c.resolved_at.is_(None), o.c.acknowledged_at.is_(None)))
    if "acknowledged" in states:
        wanted.append(sa.and_(o.c.resolved_at.is_(None), o.c.acknowledged_at.is_not(None)))
    if "resolved" in states:
        wanted.append(o.c.resolved_at.is_not(None))
    if not wanted:
        return []
    q = sa.select(o).where(sa.or_(*wanted)).order_by(o.c.raised_at.desc(), o.c.id.desc()).limit(limit)
    if machine_id is not None:
        q = q.where(o.c.machine_id == machine_id)
    if machine_ids is not None:
        q = q.where(o.c.machine_id.in_(machine_ids))
    return conn.execute(q).all()


def unresolved_by_machine(conn: sa.Connection) -> dict[str, int]:
    """{machine id: occurrences open or acknowledged}, counted in the database (the fleet page's figures and
    map, without reading every alert of a big fleet)."""
    o = alert_occurrences
    return dict(conn.execute(sa.select(o.c.machine_id, sa.func.count()).where(o.c.resolved_at.is_(None))
                             .group_by(o.c.machine_id)).all())


def get(conn: sa.Connection, occurrence_id: int):
    row = conn.execute(sa.select(alert_occurrences).where(alert_occurrences.c.id == occurrence_id)).first()
    if row is None:
        raise AlertError(404, f"there is no alert {occurrence_id}")
    return row


def acknowledge(conn: sa.Connection, occurrence_id: int, who: str, now: datetime) -> tuple[object, bool]:
    """Mark an open occurrence as seen by ``who``; (the row, whether it changed). Acknowledging twice or a
    resolved one changes nothing."""
    o = alert_occurrences
    changed = conn.execute(o.update().where(o.c.id == occurrence_id, o.c.acknowledged_at.is_(None),
                                            o.c.resolved_at.is_(None))
                           .values(acknowledged_by=who, acknowledged_at=now)).rowcount
    return get(conn, occurrence_id), bool(changed)


def resolve(conn: sa.Connection, occurrence_id: int, who: str, now: datetime) -> tuple[object, bool]:
    """End an occurrence by hand; it is ``held`` (not raised again) while its condition lasts."""
    o = alert_occurrences
    changed = conn.execute(o.update().where(o.c.id == occurrence_id, o.c.resolved_at.is_(None))
                           .values(resolved_by=who, resolved_at=now, held=True)).rowcount
    return get(conn, occurrence_id), bool(changed)


def counts(conn: sa.Connection) -> dict[str, int]:
    """How many occurrences are open and acknowledged now."""
    o = alert_occurrences
    rows = conn.execute(sa.select(o.c.acknowledged_at.is_not(None), sa.func.count())
                        .where(o.c.resolved_at.is_(None)).group_by(o.c.acknowledged_at.is_not(None))).all()
    found = {"open": 0, "acknowledged": 0}
    for acked, n in rows:
        found["acknowledged" if acked else "open"] += n
    return found
