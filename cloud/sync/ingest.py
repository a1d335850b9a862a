"""Ingest of machine ledgers: store each event once, in order, with its projections, then ack.

A batch is applied only where it continues the machine's stored chain: events at or below the stored head
are redeliveries and change nothing, once their hashes are found equal to the stored ones (a batch whose
hashes differ is refused, never acked); a batch that starts past ``head + 1`` is a gap, stored not at all,
and answered with a resend request. The head moves by a conditional update, so two cloud processes sharing
the ingest never both apply the same events: the loser rolls back and sees them as redeliveries.

Each batch names its ledger. A new ledger id for a machine (a new card) is a ledger change: recorded for a
person to see, the head starts over at 0 in the new ledger's numbering, and its events are stored after the
old ledger's (``cloud/fleet/ledger.py``). A batch from a ledger the machine has left is refused.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa

from protocol.messages import GENESIS_HASH, EventBatch, compact_json

from cloud.fleet import alerts, planogram
from cloud.sales import orders, reports
from cloud.core.db import bulk_insert
from cloud.fleet import ledger as ledgers
from cloud.fleet.ledger import EVENT_COLUMNS, events
from cloud.sales.records import INCIDENT_COLUMNS, PRIOR_PREFIX, sales
from cloud.fleet.machines import machines, slots
from cloud.payments import Provider
from cloud.stock import book as inventory

log = logging.getLogger(__name__)



class Rejected(ValueError):
    """A batch that must not be stored: unknown machine, broken chain."""


class Conflict(RuntimeError):
    """Another process moved this machine's head first; retry the batch."""


@dataclass
class Result:
    head: int
    stored: int = 0
    resend_from: int | None = None
    ledger: str = ""  # the ledger ``head`` is about (the ack names it: a machine's new card must not take
    # an ack of its old ledger for its own)


class Stats:
    """Counters a person can read at /api/v1/ingest: what was stored, what was refused and why."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.last_rejections: list[tuple[str, str]] = []

    def reject(self, topic: str, reason: str) -> None:
        self.counts["rejected"] += 1
        self.last_rejections = (self.last_rejections + [(topic, reason)])[-20:]
        log.warning("rejected message on %s: %s", topic, reason)


def store_batch(conn: sa.Connection, provider: Provider, machine_id: str, batch: EventBatch,
                now: datetime) -> Result:
    """Apply one batch in the caller's transaction; see the module docstring for the rules."""
    query = (sa.select(machines.c.cloud_head, machines.c.cloud_head_hash, machines.c.ledger_id,
                       machines.c.ledger_base).where(machines.c.id == machine_id))
    if conn.dialect.name == "postgresql":
        # Another cloud process storing this machine's batch waits here until it commits, then sees the
        # new head (SQLite's BEGIN IMMEDIATE already lets one writer in at a time).
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise Rejected(f"unknown machine {machine_id!r}")
    head, head_hash, current, base = row
    ledger = batch.ledger or current  # a controller older than ledger ids: the ledger the cloud follows
    same, differs = _continues(conn, machine_id, batch, head, head_hash, base)
    new_ledger = False
    if ledger != current:
        if current and ledgers.replaced(conn, machine_id, ledger):
            raise Rejected(f"events from ledger {ledger}, which this machine replaced with {current}")
        if not current and head and same is None:
            # Nothing to compare yet: the next event will tell.
            return Result(head, resend_from=head + 1, ledger=current)
        if current or (head and same is False):
            head, head_hash, base = _change_ledger(conn, provider, machine_id, current, head, ledger, base, now)
            same, new_ledger = None, True
        elif not conn.execute(machines.update().where(machines.c.id == machine_id, machines.c.ledger_id == "")
                              .values(ledger_id=ledger)).rowcount:
            raise Conflict(machine_id)
    if same is False:
        raise Rejected(differs)
    fresh = [e for e in batch.events if e.seq > head]
    if not fresh:
        return Result(head, ledger=ledger)
    if fresh[0].seq != head + 1:
        return Result(head, resend_from=head + 1, ledger=ledger)
    if fresh[0].prev_hash != head_hash:
        raise Rejected(f"hash chain broken at seq {fresh[0].seq}: it does not follow the stored seq {head}")
    last = fresh[-1].seq
    if base:  # a replacing ledger: stored after the ledgers before it, so every key stays (machine, seq)
        fresh = [replace(e, seq=base + e.seq) for e in fresh]
    _apply(conn, provider, [_Move(machine_id, head, base, fresh, ledger, new_ledger)], now)
    return Result(last, stored=len(fresh), ledger=ledger)


def store_batches(conn: sa.Connection, provider: Provider, batches: list[tuple[str, EventBatch]],
                  now: datetime) -> tuple[dict[str, Result], list[tuple[str, EventBatch]]]:
    """Apply in the caller's transaction, all together, the batches (one per machine at most) that simply
    continue their machine's stored chain, repeating stored events or not (``_past_head``): a statement per
    table for the lot, where ``store_batch`` takes a dozen per batch. Returns their results by machine, and
    the batches left for ``store_batch``, one at a time: nothing new, gaps, a ledger that replaces another,
    events that differ from the stored ones, an unknown machine. A machine's first ledger is taken here.

    Every machine row of ``batches`` is locked first, in id order (PostgreSQL; SQLite's BEGIN IMMEDIATE lets
    one writer in), so the ``store_batch`` calls that follow take no lock this one does not hold. On any
    error the caller rolls back to before this call and stores each batch with ``store_batch``."""
    ids = sorted(m for m, _ in batches)
    m = machines.c
    found = {}
    for n in range(0, len(ids), 500):
        query = (sa.select(m.id, m.cloud_head, m.cloud_head_hash, m.ledger_id, m.ledger_base)
                 .where(m.id.in_(ids[n:n + 500])).order_by(m.id))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found.update((r.id, r) for r in conn.execute(query))
    moves, rest, first_ledgers = [], [], []
    for machine_id, batch in batches:
        row = found.get(machine_id)
        if row is None:
            rest.append((machine_id, batch))
            continue
        ledger = row.ledger_id
        if not ledger and not row.cloud_head and batch.ledger:
            # The machine's first ledger, taken as store_batch takes it: in a storm of machines whose first
            # sales came while they were cut off, most of the group (bench/fleet.py --storm).
            ledger = batch.ledger
        fresh = _past_head(batch, row) if (batch.ledger or ledger) == ledger else None
        if not fresh:
            rest.append((machine_id, batch))
            continue
        if row.ledger_base:
            fresh = [replace(e, seq=row.ledger_base + e.seq) for e in fresh]
        moves.append(_Move(machine_id, row.cloud_head, row.ledger_base, fresh, ledger, False))
        if ledger != row.ledger_id:
            first_ledgers.append({"b_id": machine_id, "b_ledger": ledger})
    if first_ledgers:
        taken = conn.execute(machines.update().where(machines.c.id == sa.bindparam("b_id"), machines.c.ledger_id == "")
                             .values(ledger_id=sa.bindparam("b_ledger")), first_ledgers).rowcount
        if taken != len(first_ledgers) and (len(first_ledgers) == 1 or conn.dialect.supports_sane_multi_rowcount):
            raise Conflict(", ".join(f["b_id"] for f in first_ledgers)[:200])
    if moves:
        _apply(conn, provider, moves, now)
    return {mv.machine_id: Result(mv.fresh[-1].seq - mv.base, stored=len(mv.fresh), ledger=mv.ledger)
            for mv in moves}, rest


def _past_head(batch: EventBatch, row) -> list | None:
    """The events of ``batch`` past the machine's stored head, if it simply continues it: its event at
    head + 1 names the stored head's hash as the one before it, so any events it repeats are the stored ones
    (a batch is one hash chain, and each event's hash covers the one before it). None otherwise: nothing
    new, a gap, or events that differ (``store_batch`` says which)."""
    head, first, last = row.cloud_head, batch.events[0].seq, batch.events[-1].seq
    if not first <= head + 1 <= last:
        return None
    fresh = list(batch.events[head + 1 - first:])
    return fresh if fresh[0].prev_hash == row.cloud_head_hash else None


@dataclass
class _Move:
    """Events that continue a machine's stored chain, and what to move its head from."""

    machine_id: str
    head: int  # the stored head they follow, in the ledger's own numbering
    base: int  # the ledger's base: ``fresh`` is numbered from it already
    fresh: list
    ledger: str
    new_ledger: bool  # the head starts over: the machine's head is what this ledger sent, not the larger


def _apply(conn: sa.Connection, provider: Provider, moves: list[_Move], now: datetime) -> None:
    """Store the events of ``moves``, project them, and move each machine's head from what it was; another
    process that moved one first is a ``Conflict``."""
    _insert_events(conn, [(mv.machine_id, e) for mv in moves for e in mv.fresh])
    _project(conn, provider, {mv.machine_id: mv.fresh for mv in moves}, now)
    # The machine's head is at least what it sent: the events say it, so a status per new head is not needed.
    last = sa.bindparam("b_last")
    moved = conn.execute(
        machines.update().where(machines.c.id == sa.bindparam("b_id"), machines.c.cloud_head == sa.bindparam("b_head"))
        .values(cloud_head=last, cloud_head_hash=sa.bindparam("b_hash"), last_seen=now,
                machine_head=sa.case((sa.or_(sa.bindparam("b_reset"), machines.c.machine_head < last), last),
                                     else_=machines.c.machine_head)),
        [{"b_id": mv.machine_id, "b_head": mv.head, "b_last": mv.fresh[-1].seq - mv.base,
          "b_hash": mv.fresh[-1].hash, "b_reset": mv.new_ledger} for mv in moves]).rowcount
    if moved != len(moves) and (len(moves) == 1 or conn.dialect.supports_sane_multi_rowcount):
        raise Conflict(", ".join(mv.machine_id for mv in moves)[:200])


def _continues(conn: sa.Connection, machine_id: str, batch: EventBatch, head: int, head_hash: str,
               base: int) -> tuple[bool | None, str]:
    """Whether the batch agrees with what is stored: its events at or below the head have the stored
    hashes, and one at head + 1 follows the head (None: it has neither, it starts past head + 1); if not,
    what differs."""
    first, last = batch.events[0].seq, batch.events[-1].seq
    verdict = None
    if first <= head:
        stored = ledgers.stored_hashes(conn, machine_id, base + first, base + min(last, head))
        for e in batch.events[:head - first + 1]:
            if stored.get(base + e.seq, e.hash) != e.hash:
                return False, (f"seq {e.seq} differs from the stored event of that seq (head {head}): another "
                               f"ledger's events, or a changed one; not stored, not acked")
        verdict = True
    if first <= head + 1 <= last and batch.events[head - first + 1].prev_hash != head_hash:
        return False, f"hash chain broken at seq {head + 1}: it does not follow the stored seq {head}"
    return (True if first <= head + 1 <= last else verdict), ""


def _change_ledger(conn: sa.Connection, provider: Provider, machine_id: str, old: str, head: int, new: str,
                   base: int, now: datetime) -> tuple[int, str, int]:
    """Follow the machine's new ledger from its start, keeping the old one's events; the change is logged
    and kept for a person to see. Returns the new (head, head hash, base)."""
    new_base = base + head
    moved = conn.execute(machines.update().where(machines.c.id == machine_id, machines.c.ledger_id == old,
                                                 machines.c.cloud_head == head)
                         .values(ledger_id=new, ledger_base=new_base, cloud_head=0, cloud_head_hash=GENESIS_HASH)
                         ).rowcount
    if not moved:
        raise Conflict(machine_id)
    ledgers.record_change(conn, machine_id, old, head, new, new_base, now)
    orders.close_replaced(conn, provider, machine_id, now)
    log.warning("machine %s has a new ledger %s (was %s, stored to its seq %d): its events are kept from "
                "seq %d on", machine_id, new, old or "(no id)", head, new_base + 1)
    return 0, GENESIS_HASH, new_base


def _insert_events(conn: sa.Connection, fresh: list[tuple[str, object]]) -> None:
    """(machine id, event) pairs, numbered in the cloud's store already."""
    bulk_insert(conn, events, EVENT_COLUMNS, [
        (machine_id, e.seq, e.ts, e.boot, e.clock_synced, e.kind, e.data_json or compact_json(e.data),
         e.prev_hash, e.hash)
        for machine_id, e in fresh])


def _project(conn: sa.Connection, provider: Provider, fresh_of: dict[str, list], now: datetime) -> None:
    """Sales, slot stock and orders from the events just stored ({machine id: its fresh events}): a few
    statements for all the machines together, not per machine or per event."""
    ids = sorted(fresh_of)
    stock: dict[tuple[str, str], object] = {}
    for n in range(0, len(ids), 500):
        stock.update(((r.machine_id, r.slot), r) for r in conn.execute(
            sa.select(slots.c.machine_id, slots.c.slot, slots.c.count, slots.c.flagged, slots.c.currency,
                      slots.c.product_id, slots.c.price).where(slots.c.machine_id.in_(ids[n:n + 500]))))
    counts = {key: [r.count, r.flagged] for key, r in stock.items()}
    changed: set[tuple[str, str]] = set()
    sold_of, order_events = {}, {}
    for machine_id in ids:
        sold, mine, counted = [], [], []
        for e in fresh_of[machine_id]:
            d = e.data
            if e.kind in orders.EVENT_KINDS:
                mine.append(e)
            key = (machine_id, d.get("slot"))
            slot = counts.get(key)
            if e.kind == "vend.succeeded":
                sold.append(e)
                # Every drop counts, even one no order paid for or one naming another machine's order: the
                # product left this machine, and the count mirrors its own ledger (a restock's count would
                # correct it anyway). The money side is the sale row's incident.
                if slot is not None and slot[0] > 0:
                    slot[0] -= 1
            elif e.kind in ("restock", "stock.adjusted") and slot is not None:
                # A technician's count is the truth about a slot, and a restock means it was looked at.
                counted.append(inventory.Count(e.seq, e.kind, d["slot"], stock[key].product_id, slot[0], d["count"],
                                               d.get("reason", "")))
                slot[0], slot[1] = d["count"], False
            elif e.kind == "vend.failed" and slot is not None and d.get("slot_ok") is not True:
                slot[1] = True  # slot_ok: a cancelled or timed-out cashless session says nothing against the slot
            else:
                continue
            if slot is not None:
                changed.add(key)
        if counted:  # booked into the stock book by the sweeper, off the ingest path
            inventory.queue_counts(conn, machine_id, counted)
        if mine:
            order_events[machine_id] = mine
        if sold:
            sold_of[machine_id] = sold
    if changed:
        conn.execute(slots.update().where(slots.c.machine_id == sa.bindparam("b_machine"),
                                          slots.c.slot == sa.bindparam("b_slot"))
                     .values(count=sa.bindparam("b_count"), flagged=sa.bindparam("b_flagged")),
                     [{"b_machine": m, "b_slot": s, "b_count": counts[(m, s)][0], "b_flagged": counts[(m, s)][1]}
                      for m, s in sorted(changed)])
    try:
        followed = orders.follow_many(conn, provider, order_events, now)
    except orders.StaleOrders as e:
        raise Conflict(str(e)) from None
    rows, incidents = [], {}
    for machine_id, sold in sold_of.items():
        for e in sold:
            result, slot = followed.get(machine_id, {}).get(e.seq), stock.get((machine_id, e.data["slot"]))
            order = result.order if result else None
            # The amount is money this sale took: 0 for a drop no order paid for (an incident, below).
            amount = result.amount if result else 0
            # History from before the machine joined this cloud (follow passed it by; a later one is an incident).
            prior = e.data["order_id"].startswith(PRIOR_PREFIX) and result is None
            if prior and slot is not None:
                amount = slot.price  # the machine's history from before this cloud, at the slot's price here
            currency = order.currency if order else (slot.currency if slot else "XXX")
            product = order.product_id if order else (slot.product_id if slot else None)
            incident = result.incident if result else ""
            rows.append((machine_id, e.seq, e.ts, e.data["order_id"], e.data["slot"], product, amount, currency,
                         incident))
            if incident:
                incidents.setdefault(machine_id, []).append((e, incident))
    if rows:
        bulk_insert(conn, sales, INCIDENT_COLUMNS, rows)
        reports.project(conn, rows)
    for machine_id, noted in incidents.items():
        alerts.note_incidents(conn, machine_id, noted, now)
    for machine_id in ids:
        planogram.project(conn, machine_id, fresh_of[machine_id], now)
        alerts.project(conn, machine_id, fresh_of[machine_id], now)


def stored_events(conn: sa.Connection, machine_id: str) -> list:
    return list(conn.execute(sa.select(events).where(events.c.machine_id == machine_id).order_by(events.c.seq)))
