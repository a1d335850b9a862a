"""Ingest of machine ledgers: store each event once, in order, with its projections, then ack.

A batch is applied only where it continues the machine's stored chain: events at or below the stored head
are redeliveries and change nothing; a batch that starts past ``head + 1`` is a gap, stored not at all, and
answered with a resend request. The head moves by a conditional update, so two cloud processes sharing the
ingest never both apply the same events: the loser rolls back and sees them as redeliveries.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from protocol.messages import EventBatch

from . import orders
from .db import metadata
from .machines import machines, slots
from .payments import Provider

log = logging.getLogger(__name__)

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
)

sales = sa.Table(
    "sales", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("order_id", sa.String(40), nullable=False),
    sa.Column("slot", sa.String(3), nullable=False),
    sa.Column("product_id", sa.Integer, nullable=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Index("sales_by_time", "ts"),
)


class Rejected(ValueError):
    """A batch that must not be stored: unknown machine, broken chain."""


class Conflict(RuntimeError):
    """Another process moved this machine's head first; retry the batch."""


@dataclass
class Result:
    head: int
    stored: int = 0
    resend_from: int | None = None


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
    row = conn.execute(sa.select(machines.c.cloud_head, machines.c.cloud_head_hash)
                       .where(machines.c.id == machine_id)).first()
    if row is None:
        raise Rejected(f"unknown machine {machine_id!r}")
    head, head_hash = row
    fresh = [e for e in batch.events if e.seq > head]
    if not fresh:
        return Result(head)
    if fresh[0].seq != head + 1:
        return Result(head, resend_from=head + 1)
    if fresh[0].prev_hash != head_hash:
        raise Rejected(f"hash chain broken at seq {fresh[0].seq}: it does not follow the stored seq {head}")
    conn.execute(events.insert(), [
        dict(machine_id=machine_id, seq=e.seq, ts=e.ts, boot=e.boot, clock_synced=e.clock_synced, kind=e.kind,
             data=json.dumps(e.data, separators=(",", ":"), ensure_ascii=False), prev_hash=e.prev_hash,
             hash=e.hash) for e in fresh])
    _project(conn, provider, machine_id, fresh, now)
    last = fresh[-1]
    moved = conn.execute(machines.update().where(machines.c.id == machine_id, machines.c.cloud_head == head)
                         .values(cloud_head=last.seq, cloud_head_hash=last.hash, last_seen=now)).rowcount
    if not moved:
        raise Conflict(machine_id)
    return Result(last.seq, stored=len(fresh))


def _project(conn: sa.Connection, provider: Provider, machine_id: str, fresh: list, now: datetime) -> None:
    """Sales, slot stock and orders, from the events just stored."""
    prices = None
    sale_rows = []
    for e in fresh:
        d = e.data
        if e.kind == "vend.succeeded":
            if prices is None:
                prices = {r.slot: r for r in conn.execute(sa.select(slots).where(slots.c.machine_id == machine_id))}
            order = orders.get(conn, d["order_id"])
            slot_row = prices.get(d["slot"])
            if order is not None and order.machine_id == machine_id:
                amount, currency, product = order.amount, order.currency, order.product_id
            elif slot_row is not None:
                amount, currency, product = 0, slot_row.currency, slot_row.product_id
            else:
                amount, currency, product = 0, "XXX", None
            sale_rows.append(dict(machine_id=machine_id, seq=e.seq, ts=e.ts, order_id=d["order_id"],
                                  slot=d["slot"], product_id=product, amount=amount, currency=currency))
            conn.execute(slots.update().where(slots.c.machine_id == machine_id, slots.c.slot == d["slot"],
                                              slots.c.count > 0).values(count=slots.c.count - 1))
        elif e.kind in ("restock", "stock.adjusted"):
            conn.execute(slots.update().where(slots.c.machine_id == machine_id, slots.c.slot == d["slot"])
                         .values(count=d["count"], flagged=False))
        elif e.kind == "vend.failed":
            conn.execute(slots.update().where(slots.c.machine_id == machine_id, slots.c.slot == d["slot"])
                         .values(flagged=True))
        if e.kind in ("vend.started", "vend.succeeded", "vend.failed", "vend.unknown", "command.rejected"):
            orders.on_event(conn, provider, machine_id, e.kind, d, now)
    if sale_rows:
        conn.execute(sales.insert(), sale_rows)


def stored_events(conn: sa.Connection, machine_id: str) -> list:
    return list(conn.execute(sa.select(events).where(events.c.machine_id == machine_id).order_by(events.c.seq)))
