"""Alerts: what about the fleet needs a person now, computed by one function, ``compute``, from the
machines' state, a few facts the ingest keeps, and each machine's newest temperature.

| alert          | raised when                                                                          |
| -------------- | ------------------------------------------------------------------------------------ |
| offline        | no word from the machine (status, events) for longer than ``offline_s``              |
| out_of_service | a slot is flagged out of service (a vend failed on it; a restock or a count clears it) |
| vend_failures  | ``failed_vends`` or more failed vends on one slot within ``failed_window_s``         |
| low_stock      | a slot holds less than ``low_stock_fraction`` of its par level (its capacity if none) |
| temperature    | the newest reading has been outside ``temp_min_c``..``temp_max_c`` for ``temp_for_s`` |
| door_open      | the ledger's last door event is ``door.opened``, older than ``door_open_s``          |
| not_synced     | the machine's ledger head is ahead of the cloud's, with no progress for ``unsynced_s`` |
| late_drop      | a product dropped for an order already closed, within ``incident_window_s``           |
| unknown_order  | a sale naming an order the machine was never sent, within ``incident_window_s``       |

A jammed slot is flagged out of service by its first failed vend (``cloud/sync/ingest.py``), while
``vend_failures`` waits for ``failed_vends`` of them: before ``out_of_service`` a jam raised nothing.

Times come from the machine's ledger where its clock was synchronised, and from the cloud's clock
otherwise (a Pi without a real-time clock can wake up in 1970). The limits are cloud settings
(``--alert-*``), read once at start.

Temperatures are kept in memory, not in a table: telemetry is QoS 0 and frequent, and a row written per
reading would cost more than the alert is worth. Every cloud process subscribes to all telemetry (the
ingest's shared subscription covers events only), so each one knows every machine's newest reading; a
process that has just started knows none until the machines' next readings, a minute at most.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from protocol.messages import Status, parse_time

from cloud.core.db import UTCDateTime, bulk_insert, db_value, metadata
from cloud.fleet.machines import machines, slots

vend_failures = sa.Table(
    "vend_failures", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("slot", sa.String(3), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("vend_failures_by_time", "at"),
)

# What the alerts need that no other table keeps: since when the door has been open, and since when the
# machine has had events the cloud lacks (with the first of them, to tell progress from none).
machine_watch = sa.Table(
    "machine_watch", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("door_open_since", UTCDateTime, nullable=True),
    sa.Column("unsynced_since", UTCDateTime, nullable=True),
    sa.Column("unsynced_seq", sa.BigInteger, nullable=False, server_default="0"),
)

# Drops the cloud did not sell, as the ingest classed them (``cloud/sales/orders.py``: INCIDENTS): the
# alert each one raises.
vend_incidents = sa.Table(
    "vend_incidents", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("slot", sa.String(3), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("vend_incidents_by_time", "at"),
)
INCIDENT_ALERTS = {"dropped_unpaid": "late_drop", "dropped_charged": "late_drop", "no_such_order": "unknown_order"}

KINDS = ("offline", "out_of_service", "vend_failures", "low_stock", "temperature", "door_open", "not_synced",
         "late_drop", "unknown_order")


@dataclass(frozen=True)
class Limits:
    """When each alert is raised; from the cloud's settings, with their defaults here."""

    offline_s: float = 600.0
    failed_vends: int = 3
    failed_window_s: float = 3600.0
    temp_min_c: float = 0.0
    temp_max_c: float = 30.0
    temp_for_s: float = 600.0
    door_open_s: float = 900.0
    unsynced_s: float = 900.0
    incident_window_s: float = 86400.0
    low_stock_fraction: float = 0.25

    def __post_init__(self):
        for name in ("offline_s", "failed_window_s", "temp_for_s", "door_open_s", "unsynced_s", "incident_window_s"):
            if not 0 <= getattr(self, name) <= 365 * 86400:
                raise ValueError(f"alert limit {name} must be 0 to a year in seconds, got {getattr(self, name)}")
        if not 1 <= self.failed_vends <= 1000:
            raise ValueError(f"alert limit failed_vends must be 1-1000, got {self.failed_vends}")
        if not 0 < self.low_stock_fraction <= 1:
            raise ValueError(f"alert limit low_stock_fraction must be more than 0 and at most 1, got "
                             f"{self.low_stock_fraction}")
        if not -60 <= self.temp_min_c < self.temp_max_c <= 100:
            raise ValueError(f"alert temperatures must be -60 <= min < max <= 100, got {self.temp_min_c} "
                             f"and {self.temp_max_c}")

    @classmethod
    def from_settings(cls, settings) -> "Limits":
        return cls(**{name: getattr(settings, f"alert_{name}") for name in cls.__dataclass_fields__})


@dataclass
class Reading:
    temperature_c: float
    at: datetime
    out_since: datetime | None  # when the readings went out of range and stayed out; None while in range


class Readings:
    """Each machine's newest temperature, fed by the telemetry the cloud receives."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._lock = threading.Lock()
        self._by_machine: dict[str, Reading] = {}

    def note(self, machine_id: str, temperature_c: float | None, at: datetime) -> None:
        if temperature_c is None:
            return
        out = not self.limits.temp_min_c <= temperature_c <= self.limits.temp_max_c
        with self._lock:
            before = self._by_machine.get(machine_id)
            since = (before.out_since if before and before.out_since else at) if out else None
            self._by_machine[machine_id] = Reading(temperature_c, at, since)

    def snapshot(self) -> dict[str, Reading]:
        with self._lock:
            return dict(self._by_machine)


@dataclass(frozen=True)
class Alert:
    machine_id: str
    kind: str
    since: datetime
    detail: str
    slot: str | None = None
    value: float | int | None = None
    # For an alert made of events (failed vends, incidents): when the newest of them happened. A person who
    # resolved such an alert while its events were still counted sees it again only for a newer one.
    latest: datetime | None = None

    def public(self) -> dict:
        return {"machine_id": self.machine_id, "kind": self.kind, "slot": self.slot,
                "since": self.since.isoformat(), "detail": self.detail, "value": self.value}


def _ago(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


def compute(conn: sa.Connection, now: datetime, limits: Limits, readings: dict[str, Reading],
            machine_id: str | None = None) -> list[Alert]:
    """Every alert of the fleet (or of one machine) at ``now``, by machine, kind and slot.

    The database picks out the machines with something to say: the look runs beside the ingest, every few
    seconds, and a look that turned every machine's row into Python took a quarter of a second at ten
    thousand machines, during which the ingest's groups took four times as long (``bench/fleet.py``,
    issue 16). Each condition is the module table's sentence, compared in SQL."""
    m, w = machines.c, machine_watch.c
    one = (lambda column: column == machine_id) if machine_id is not None else (lambda column: sa.true())
    seen = sa.func.coalesce(m.last_seen, m.created_at, type_=UTCDateTime)
    fail_q = (sa.select(vend_failures.c.machine_id, vend_failures.c.slot, sa.func.count().label("n"),
                        sa.func.min(vend_failures.c.at).label("first"), sa.func.max(vend_failures.c.at).label("last"))
              .where(vend_failures.c.at > now - timedelta(seconds=limits.failed_window_s),
                     one(vend_failures.c.machine_id))
              .group_by(vend_failures.c.machine_id, vend_failures.c.slot)
              .having(sa.func.count() >= limits.failed_vends))
    incident_q = (sa.select(vend_incidents.c.machine_id, vend_incidents.c.kind, vend_incidents.c.order_id,
                            vend_incidents.c.at)
                  .where(vend_incidents.c.at > now - timedelta(seconds=limits.incident_window_s),
                         one(vend_incidents.c.machine_id))
                  .order_by(vend_incidents.c.at))
    alerts: list[Alert] = _incident_alerts(conn.execute(incident_q).all(), limits)
    for f in conn.execute(fail_q):
        alerts.append(Alert(f.machine_id, "vend_failures", f.first,
                            f"{f.n} failed vends on slot {f.slot} in the last {_ago(timedelta(seconds=limits.failed_window_s))}",
                            slot=f.slot, value=f.n, latest=f.last))
    alerts += _slot_alerts(conn, now, limits, machine_id)
    # A retired machine sells no more: nothing about it needs a person (its records stay). One read of the
    # machines finds the retired ones and the silent ones.
    retired = set()
    for r in conn.execute(sa.select(m.id, m.online, m.last_seen, seen.label("seen"), m.retired_at)
                          .where(one(m.id), sa.or_(m.retired_at.is_not(None),
                                                   seen < now - timedelta(seconds=limits.offline_s)))):
        if r.retired_at is not None:
            retired.add(r.id)
            continue
        said = "offline" if not r.online else "silent"
        alerts.append(Alert(r.id, "offline", r.seen, f"{said} for {_ago(now - r.seen)}"
                            + ("" if r.last_seen else " (never connected)")))
    door_open = w.door_open_since < now - timedelta(seconds=limits.door_open_s)
    unsynced = sa.and_(w.unsynced_since < now - timedelta(seconds=limits.unsynced_s), m.machine_head > m.cloud_head,
                       m.cloud_head < w.unsynced_seq)
    for r in conn.execute(sa.select(w.machine_id, w.door_open_since, w.unsynced_since, door_open.label("door"),
                                    unsynced.label("unsynced"), m.machine_head, m.cloud_head)
                          .join_from(machine_watch, machines, m.id == w.machine_id)
                          .where(one(w.machine_id), sa.or_(door_open, unsynced))):
        if r.door:
            alerts.append(Alert(r.machine_id, "door_open", r.door_open_since,
                                f"door open for {_ago(now - r.door_open_since)}"))
        if r.unsynced:
            behind = r.machine_head - r.cloud_head
            alerts.append(Alert(r.machine_id, "not_synced", r.unsynced_since,
                                f"{behind} events on the machine not in the cloud; none stored for "
                                f"{_ago(now - r.unsynced_since)}", value=behind))
    # A reading older than the offline limit is no news about now: the offline alert says it instead.
    hot = {i: r for i, r in readings.items() if r.out_since is not None and machine_id in (None, i)
           and now - r.at <= timedelta(seconds=limits.offline_s)
           and now - r.out_since >= timedelta(seconds=limits.temp_for_s)}
    ids = sorted(hot)
    for n in range(0, len(ids), 500):  # only the machines this cloud knows
        for i in conn.execute(sa.select(m.id).where(m.id.in_(ids[n:n + 500]))).scalars():
            r = hot[i]
            alerts.append(Alert(i, "temperature", r.out_since,
                                f"{r.temperature_c:.1f} C, outside {limits.temp_min_c:g}..{limits.temp_max_c:g} C "
                                f"for {_ago(now - r.out_since)}", value=r.temperature_c))
    alerts = [a for a in alerts if a.machine_id not in retired]
    alerts.sort(key=lambda a: (a.machine_id, KINDS.index(a.kind), a.slot or ""))
    return alerts


def _slot_alerts(conn: sa.Connection, now: datetime, limits: Limits, machine_id: str | None) -> list[Alert]:
    """Slots out of service (since their newest failed vend) and slots low on stock, from the slots table."""
    last_failure = (sa.select(sa.func.max(vend_failures.c.at))
                    .where(vend_failures.c.machine_id == slots.c.machine_id, vend_failures.c.slot == slots.c.slot)
                    .scalar_subquery())
    level = sa.case((slots.c.par_level > 0, slots.c.par_level), else_=slots.c.capacity)
    q = (sa.select(slots.c.machine_id, slots.c.slot, slots.c.count, slots.c.flagged, level.label("level"),
                   last_failure.label("failed_at"))
         .where(slots.c.in_planogram, sa.or_(slots.c.flagged, slots.c.count < level * limits.low_stock_fraction)))
    if machine_id is not None:
        q = q.where(slots.c.machine_id == machine_id)
    found = []
    for r in conn.execute(q):
        if r.flagged:
            found.append(Alert(r.machine_id, "out_of_service", r.failed_at or now,
                               f"slot {r.slot} is out of service after a failed vend; a restock or a stock count "
                               "on the machine clears it", slot=r.slot))
        if r.count < r.level * limits.low_stock_fraction:
            found.append(Alert(r.machine_id, "low_stock", now, f"slot {r.slot} holds {r.count} of its par level "
                               f"{r.level}", slot=r.slot, value=r.count))
    return found


def _incident_alerts(rows: list, limits: Limits) -> list[Alert]:
    """One alert per machine and kind for the incidents in the window (rows oldest first)."""
    found: dict[tuple[str, str], list] = {}
    for r in rows:
        found.setdefault((r.machine_id, INCIDENT_ALERTS.get(r.kind, "late_drop")), []).append(r)
    window = _ago(timedelta(seconds=limits.incident_window_s))
    alerts = []
    for (machine_id, kind), group in found.items():
        newest = group[-1].order_id
        if kind == "late_drop":
            unpaid = sum(1 for r in group if r.kind == "dropped_unpaid")
            detail = (f"{len(group)} products dropped for orders already closed in the last {window}, "
                      f"{unpaid} not charged (newest: order {newest})")
        else:
            detail = f"{len(group)} sales naming orders this machine was never sent in the last {window} (newest: {newest})"
        alerts.append(Alert(machine_id, kind, group[0].at, detail, value=len(group), latest=group[-1].at))
    return alerts


def note_incidents(conn: sa.Connection, machine_id: str, incidents: list, now: datetime) -> None:
    """Keep the drops the cloud did not sell, (event, incident) pairs from the ingest, for ``compute``."""
    at = vend_incidents.c.at
    bulk_insert(conn, vend_incidents, ("machine_id", "seq", "kind", "order_id", "slot", "at"),
                [(machine_id, e.seq, kind, str(e.data.get("order_id", ""))[:64], str(e.data.get("slot", ""))[:3],
                  db_value(conn, at, _when(e, now))) for e, kind in incidents])


def _when(e, now: datetime) -> datetime:
    """When an event happened: its own time if the machine's clock was synchronised, else ``now``."""
    return parse_time(e.ts, "ts") if e.clock_synced else now


def _watch(conn: sa.Connection, machine_id: str, **values) -> None:
    updated = conn.execute(machine_watch.update().where(machine_watch.c.machine_id == machine_id)
                           .values(**values)).rowcount
    if not updated:
        conn.execute(machine_watch.insert().values(machine_id=machine_id, **values))


def project(conn: sa.Connection, machine_id: str, fresh: list, now: datetime) -> None:
    """Failed vends and the door's state from a batch of ledger events; no statement when it has none."""
    failed, door = [], None
    for e in fresh:
        if e.kind == "vend.failed":
            failed.append(e)
        elif e.kind == "door.opened" or e.kind == "door.closed":
            door = e
    if failed:
        at = vend_failures.c.at
        bulk_insert(conn, vend_failures, ("machine_id", "seq", "slot", "at"),
                    [(machine_id, e.seq, e.data["slot"], db_value(conn, at, _when(e, now))) for e in failed])
    if door is not None:
        _watch(conn, machine_id, door_open_since=_when(door, now) if door.kind == "door.opened" else None)


def note_status(conn: sa.Connection, machine_id: str, status: Status, now: datetime) -> None:
    """Keep since when a machine has had events the cloud lacks: the clock starts when a status first shows
    the machine ahead, and starts again whenever the cloud has stored the event it was waiting for."""
    note_statuses(conn, {machine_id: status}, now)


def note_statuses(conn: sa.Connection, statuses: dict[str, Status], now: datetime) -> None:
    """``note_status`` for many machines: one read for all of them, a write only where the clock changes."""
    heads = {m: s.ledger_head for m, s in statuses.items() if s.ledger_head}  # a last will carries no head
    if not heads:
        return
    rows = conn.execute(sa.select(machines.c.id, machines.c.cloud_head, machine_watch.c.machine_id.label("watched"),
                                  machine_watch.c.unsynced_since, machine_watch.c.unsynced_seq)
                        .select_from(machines.outerjoin(machine_watch, machine_watch.c.machine_id == machines.c.id))
                        .where(machines.c.id.in_(sorted(heads))))
    update, insert = [], []
    for row in rows.all():
        if heads[row.id] <= row.cloud_head:
            if row.unsynced_since is None:
                continue
            values = {"b_id": row.id, "b_since": None, "b_seq": 0}
        elif row.unsynced_since is None or row.cloud_head >= row.unsynced_seq:
            values = {"b_id": row.id, "b_since": now, "b_seq": row.cloud_head + 1}
        else:
            continue
        (update if row.watched is not None else insert).append(values)
    if update:
        conn.execute(machine_watch.update().where(machine_watch.c.machine_id == sa.bindparam("b_id"))
                     .values(unsynced_since=sa.bindparam("b_since"), unsynced_seq=sa.bindparam("b_seq")), update)
    if insert:
        conn.execute(machine_watch.insert().values(machine_id=sa.bindparam("b_id"), unsynced_since=sa.bindparam("b_since"),
                                                   unsynced_seq=sa.bindparam("b_seq")), insert)