"""The stock book: lots and an append-only table of movements, from which every quantity and value is derived.

A movement is a signed quantity and a signed value of one product at one place: the warehouse (machine and
slot empty, always naming a lot) or a machine's slot. Kinds: ``receipt`` (goods into the warehouse as a
lot), ``transfer`` (warehouse to a slot: a pair of rows per lot, out and in, of equal value), ``sale`` (out
of a slot) and ``adjustment`` (a stock take, a technician's count, a write-off; with a reason). What is on
hand anywhere is the sum of the movements there; its value is the sum of their values. Rows are only ever
inserted: a mistake is put right by another movement, never by an edit.

Valuation is moving average cost, in integers. A receipt adds quantity x unit cost exactly. Anything
leaving a place with Q units worth V takes ``floor(V * q / Q)`` for q units, and all of V when q == Q, so
the remainder of every division stays with the units left behind and the last unit out carries it: the
value at a place is never negative, is zero exactly when the quantity is, and is always the sum of the
movements. A unit found (an adjustment up) is valued the same way at the current average, or at the
product's catalogue cost when there is none on hand.

Every operation runs under a key in ``stock_ops``: one that was applied already changes nothing.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, bulk_insert, insert_ignore, metadata
from cloud.catalog import products as catalog
from cloud.catalog.common import StockError
from cloud.catalog.products import get_product, list_products, lock_product, lock_products

log = logging.getLogger(__name__)

RECEIPT, TRANSFER, SALE, ADJUSTMENT = "receipt", "transfer", "sale", "adjustment"
KINDS = (RECEIPT, TRANSFER, SALE, ADJUSTMENT)

lots = sa.Table(
    "lots", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False, index=True),
    sa.Column("receipt_id", sa.Integer, sa.ForeignKey("receipts.id"), nullable=True),  # none: found in a count
    sa.Column("po_line_id", sa.Integer, sa.ForeignKey("purchase_order_lines.id"), nullable=True, index=True),
    sa.Column("quantity", sa.Integer, nullable=False),  # as received; what is left is in the movements
    sa.Column("unit_cost", sa.BigInteger, nullable=False),
    sa.Column("expires_on", sa.Date, nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("quantity > 0", name="lot_quantity_positive"),
    sa.CheckConstraint("unit_cost >= 0", name="lot_unit_cost_not_negative"),
)

movements = sa.Table(
    "stock_movements", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("op", sa.String(120), sa.ForeignKey("stock_ops.key"), nullable=False, index=True),
    sa.Column("kind", sa.String(12), nullable=False),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("lot_id", sa.Integer, sa.ForeignKey("lots.id"), nullable=True, index=True),
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), nullable=True),  # none: the warehouse
    sa.Column("slot", sa.String(3), nullable=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("staff.id"), nullable=True),  # none: a machine's ledger
    sa.CheckConstraint("quantity <> 0", name="movement_moves_something"),
    sa.Index("movements_by_place", "product_id", "machine_id", "slot"),
    sa.Index("movements_by_slot", "machine_id", "slot"),
)

# Running totals of the movements per product and place ('' for the warehouse's machine and slot), kept in
# the same statement group as each movement: reading a balance must not cost a scan of its history.
balances = sa.Table(
    "stock_balances", metadata,
    sa.Column("product_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("machine_id", sa.String(32), primary_key=True),
    sa.Column("slot", sa.String(3), primary_key=True),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("value", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# Counts from machines' ledgers that ingest stored and the book has not taken yet. Ingest only appends here
# (one bulk insert per batch that has any): booking a count takes a dozen statements, and ingest runs at
# tens of thousands of events a second. The sweeper books them within about a second (``book_pending``).
pending_counts = sa.Table(
    "stock_counts_pending", metadata,
    sa.Column("machine_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("slot", sa.String(3), nullable=False),
    sa.Column("product_id", sa.Integer, nullable=False),
    sa.Column("count_before", sa.Integer, nullable=False),
    sa.Column("count_after", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    sqlite_with_rowid=False,
)

# One row per applied operation: a receipt key, a stock take key, "ledger:{machine}:{seq}", ...
stock_ops = sa.Table(
    "stock_ops", metadata,
    sa.Column("key", sa.String(120), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
)


@dataclass(frozen=True)
class Place:
    """The warehouse (no machine) or one slot of one machine."""

    machine_id: str | None = None
    slot: str | None = None

    def where(self):
        m = movements
        if self.machine_id is None:
            return m.c.machine_id.is_(None)
        return sa.and_(m.c.machine_id == self.machine_id, m.c.slot == self.slot)

    def __str__(self):
        return "the warehouse" if self.machine_id is None else f"{self.machine_id} {self.slot}"


WAREHOUSE = Place()


def claim(conn: sa.Connection, key: str, kind: str, now: datetime) -> bool:
    """Record that operation ``key`` is being applied; False if it was applied before (then do nothing)."""
    if not isinstance(key, str) or not 1 <= len(key) <= 120 or not key.isprintable():
        raise StockError("key", "must be 1 to 120 printable characters")
    # RETURNING, not rowcount: psycopg reports -1 for an insert SQLAlchemy gave a RETURNING of its own.
    return conn.execute(insert_ignore(conn, stock_ops).values(key=key, kind=kind, at=now)
                        .returning(stock_ops.c.key)).first() is not None


def balance(conn: sa.Connection, product_id: int, place: Place = WAREHOUSE) -> tuple[int, int]:
    """(quantity, value) of a product at a place: the sums of its movements there (kept as running totals)."""
    b = balances
    row = conn.execute(sa.select(b.c.quantity, b.c.value).where(
        b.c.product_id == product_id, b.c.machine_id == (place.machine_id or ""), b.c.slot == (place.slot or ""))
    ).first()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def on_hand_anywhere(conn: sa.Connection, product_id: int) -> bool:
    b = balances
    return conn.execute(sa.select(b.c.product_id).where(b.c.product_id == product_id, b.c.quantity != 0)
                        .limit(1)).first() is not None


catalog.STOCK_HOLDERS.append(on_hand_anywhere)


def _add_to_balances(conn: sa.Connection, rows: list[dict]) -> None:
    totals: dict[tuple, list[int]] = {}
    for row in rows:
        key = (row["product_id"], row.get("machine_id") or "", row.get("slot") or "")
        t = totals.setdefault(key, [0, 0])
        t[0] += row["quantity"]
        t[1] += row["value"]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(balances)
    stmt = stmt.on_conflict_do_update(
        index_elements=[balances.c.product_id, balances.c.machine_id, balances.c.slot],
        set_={"quantity": balances.c.quantity + stmt.excluded.quantity,
              "value": balances.c.value + stmt.excluded.value})
    conn.execute(stmt, [{"product_id": p, "machine_id": m, "slot": s, "quantity": q, "value": v}
                        for (p, m, s), (q, v) in sorted(totals.items())])


@dataclass(frozen=True)
class LotLeft:
    lot_id: int
    product_id: int
    expires_on: date | None
    quantity: int
    unit_cost: int


def lots_on_hand(conn: sa.Connection, product_ids=None) -> list[LotLeft]:
    """Warehouse lots with something left, of the given products (all if None), by product, FEFO."""
    m = movements
    q = (sa.select(lots.c.id, lots.c.product_id, lots.c.expires_on, lots.c.unit_cost, sa.func.sum(m.c.quantity))
         .join(m, sa.and_(m.c.lot_id == lots.c.id, m.c.machine_id.is_(None)))
         .group_by(lots.c.id, lots.c.product_id, lots.c.expires_on, lots.c.unit_cost)
         .having(sa.func.sum(m.c.quantity) > 0))
    if product_ids is not None:
        q = q.where(lots.c.product_id.in_(list(product_ids)))
    rows = [LotLeft(r[0], r[1], r[2], int(r[4]), r[3]) for r in conn.execute(q)]
    return sorted(rows, key=lambda lot: (lot.product_id, fefo_key(lot)))


def fefo_key(lot: LotLeft, today: date | None = None):
    """First expiring first; lots with no expiry after them; with ``today``, lots already expired last."""
    expired = today is not None and lot.expires_on is not None and lot.expires_on < today
    return (expired, lot.expires_on is None, lot.expires_on or date.max, lot.lot_id)


MOVEMENT_DEFAULTS = dict(lot_id=None, machine_id=None, slot=None, reason="", user_id=None)


def _insert(conn: sa.Connection, rows: list[dict]) -> None:
    # Every row with every key: an executemany takes its columns from the first row and drops the rest.
    if rows:
        conn.execute(movements.insert(), [{**MOVEMENT_DEFAULTS, **row} for row in rows])
        _add_to_balances(conn, rows)


def _share(value: int, total_qty: int, qty: int) -> int:
    """The value of ``qty`` of ``total_qty`` units worth ``value``: see the module docstring."""
    return value if qty == total_qty else value * qty // total_qty


def take_from_warehouse(conn: sa.Connection, product_id: int, qty: int, today: date,
                        lot_id: int | None = None) -> list[tuple[int, int, int]]:
    """Which lots ``qty`` units come from (FEFO, or the one lot named) and what each part is worth:
    [(lot id, quantity, value)]. The caller holds the product's lock and writes the movements."""
    total, value = balance(conn, product_id)
    left = [lot for lot in lots_on_hand(conn, [product_id]) if lot_id is None or lot.lot_id == lot_id]
    available = sum(lot.quantity for lot in left)
    if qty > available:
        where = f"lot {lot_id}" if lot_id is not None else "the warehouse"
        raise StockError("quantity", f"{qty} wanted but {where} has {available}", 409)
    parts = []
    for lot in sorted(left, key=lambda lot: fefo_key(lot, today)):
        if qty == 0:
            break
        q = min(qty, lot.quantity)
        v = _share(value, total, q)
        parts.append((lot.lot_id, q, v))
        qty, total, value = qty - q, total - q, value - v
    return parts


def add_lot(conn: sa.Connection, product_id: int, qty: int, unit_cost: int, expires_on: date | None,
            now: datetime, receipt_id: int | None = None, po_line_id: int | None = None) -> int:
    return conn.execute(lots.insert().values(product_id=product_id, receipt_id=receipt_id, po_line_id=po_line_id,
                                             quantity=qty, unit_cost=unit_cost, expires_on=expires_on,
                                             received_at=now)).inserted_primary_key[0]


def receive(conn: sa.Connection, op: str, product_id: int, qty: int, unit_cost: int, expires_on: date | None,
            now: datetime, receipt_id: int | None = None, po_line_id: int | None = None,
            user_id: int | None = None) -> int:
    """A lot into the warehouse at ``unit_cost`` each; its id. The caller has claimed ``op``."""
    lock_product(conn, product_id)
    lot_id = add_lot(conn, product_id, qty, unit_cost, expires_on, now, receipt_id, po_line_id)
    _insert(conn, [dict(at=now, op=op, kind=RECEIPT, product_id=product_id, lot_id=lot_id, quantity=qty,
                        value=qty * unit_cost, user_id=user_id)])
    return lot_id


def expiry_for(conn: sa.Connection, product_id: int, received: date, given, field: str = "expires_on") -> date | None:
    """A lot's expiry: as given, or the day it is received plus the product's shelf life."""
    if given is not None:
        if given < received:
            raise StockError(field, f"{given} is before the day the goods are received ({received})")
        return given
    days = get_product(conn, product_id).shelf_life_days
    return received + timedelta(days=days) if days else None


def transfer(conn: sa.Connection, op: str, product_id: int, qty: int, to: Place, now: datetime,
             user_id: int | None = None, reason: str = "") -> int:
    """Move ``qty`` from the warehouse (FEFO lots) into a slot; the value moved. The caller claimed ``op``."""
    lock_product(conn, product_id)
    parts = take_from_warehouse(conn, product_id, qty, now.date())
    rows = []
    for lot_id, q, v in parts:
        common = dict(at=now, op=op, kind=TRANSFER, product_id=product_id, lot_id=lot_id, reason=reason,
                      user_id=user_id)
        rows += [dict(common, quantity=-q, value=-v), dict(common, machine_id=to.machine_id, slot=to.slot,
                                                           quantity=q, value=v)]
    _insert(conn, rows)
    return sum(v for _, _, v in parts)


def sell(conn: sa.Connection, op: str, product_id: int, qty: int, at: Place, now: datetime, reason: str = "") -> int:
    """``qty`` sold out of a slot, at the slot's average cost; the value (cost of goods sold)."""
    return _out_of_slot(conn, op, SALE, product_id, qty, at, now, reason, None)


def _out_of_slot(conn, op, kind, product_id, qty, at: Place, now, reason, user_id) -> int:
    total, value = balance(conn, product_id, at)
    if qty > total:
        raise StockError("quantity", f"{qty} wanted but {at} has {total} on the book", 409)
    v = _share(value, total, qty)
    _insert(conn, [dict(at=now, op=op, kind=kind, product_id=product_id, machine_id=at.machine_id, slot=at.slot,
                        quantity=-qty, value=-v, reason=reason, user_id=user_id)])
    return v


def found_value(conn: sa.Connection, product_id: int, qty: int, place: Place) -> int:
    """What ``qty`` units found at a place are worth: the average there, else the warehouse's, else the
    catalogue cost."""
    for where in (place, WAREHOUSE):
        total, value = balance(conn, product_id, where)
        if total > 0:
            return value * qty // total
    return qty * (get_product(conn, product_id).cost or 0)


def adjust(conn: sa.Connection, op: str, product_id: int, delta: int, now: datetime, reason: str,
           place: Place = WAREHOUSE, lot_id: int | None = None, user_id: int | None = None) -> int:
    """Correct the book by ``delta`` units at a place (a count, a write-off); the value moved (signed).
    In the warehouse a loss comes from the lot named or FEFO, and a find goes to the lot named or, when
    none is, to a new lot without an expiry. The caller holds the product's lock and claimed ``op``."""
    if delta == 0:
        return 0
    if place.machine_id is not None:
        if delta < 0:
            return -_out_of_slot(conn, op, ADJUSTMENT, product_id, -delta, place, now, reason, user_id)
        v = found_value(conn, product_id, delta, place)
        _insert(conn, [dict(at=now, op=op, kind=ADJUSTMENT, product_id=product_id, machine_id=place.machine_id,
                            slot=place.slot, quantity=delta, value=v, reason=reason, user_id=user_id)])
        return v
    common = dict(at=now, op=op, kind=ADJUSTMENT, product_id=product_id, reason=reason, user_id=user_id)
    if delta < 0:
        parts = take_from_warehouse(conn, product_id, -delta, now.date(), lot_id)
        _insert(conn, [dict(common, lot_id=lot, quantity=-q, value=-v) for lot, q, v in parts])
        return -sum(v for _, _, v in parts)
    v = found_value(conn, product_id, delta, WAREHOUSE)
    if lot_id is None:
        lot_id = add_lot(conn, product_id, delta, v // delta, None, now)
    _insert(conn, [dict(common, lot_id=lot_id, quantity=delta, value=v)])
    return v


# -- what the machines' ledgers say ------------------------------------------------------------------

@dataclass(frozen=True)
class Count:
    """A technician's count of a slot from a machine's ledger (``restock`` or ``stock.adjusted``): the
    count before it, as the cloud had projected it, and after it."""

    seq: int
    kind: str
    slot: str
    product_id: int
    before: int
    after: int
    reason: str = ""


def ledger_counts(conn: sa.Connection, machine_id: str, counts: list[Count], now: datetime) -> None:
    """Book what a batch's counts say, in the ingest's transaction, once per (machine, seq).

    A slot's book is brought to the ledger's count each time: first the units gone since the last count
    are booked as sold (the slot's count only falls by vends in between: a technician's correction is a
    count too); then a restock's added units move from the warehouse (FEFO) into the slot, and a count
    that fell or a ``stock.adjusted`` is an adjustment at the slot. Units loaded that the warehouse has no
    book of come in as an adjustment, valued like any unit found, so the warehouse never goes below zero.
    """
    lock_products(conn, [c.product_id for c in counts])
    for c in counts:
        op = f"ledger:{machine_id}:{c.seq}"
        if not claim(conn, op, c.kind, now):
            continue
        lock_product(conn, c.product_id)
        place = Place(machine_id, c.slot)
        _close_other_products(conn, op, place, c.product_id, now)
        booked, _ = balance(conn, c.product_id, place)
        gone = booked - c.before
        if gone > 0:
            sell(conn, op, c.product_id, gone, place, now, "sold since the last count")
        elif gone < 0:
            adjust(conn, op, c.product_id, -gone, now, "more in the slot than on the book", place)
        delta = c.after - c.before
        if c.kind == "restock" and delta > 0:
            moved = min(delta, balance(conn, c.product_id)[0])
            if moved:
                transfer(conn, op, c.product_id, moved, place, now, reason=f"restock, ledger seq {c.seq}")
            if delta > moved:
                log.warning("machine %s slot %s: %d units loaded that the warehouse has no book of",
                            machine_id, c.slot, delta - moved)
                adjust(conn, op, c.product_id, delta - moved, now, "loaded without warehouse stock on the book",
                       place)
        elif delta:
            why = c.reason if c.kind != "restock" else "taken out at restock"
            adjust(conn, op, c.product_id, delta, now, (why or "technician's count")[:200], place)


PENDING_COLUMNS = ("machine_id", "seq", "kind", "slot", "product_id", "count_before", "count_after", "reason")


def queue_counts(conn: sa.Connection, machine_id: str, counts: list[Count]) -> None:
    """Keep counts that ingest just stored, for ``book_pending``; in ingest's transaction, one statement."""
    bulk_insert(conn, pending_counts, PENDING_COLUMNS,
                [(machine_id, c.seq, c.kind, c.slot, c.product_id, c.before, c.after, c.reason[:200])
                 for c in counts])


def book_pending(conn: sa.Connection, now: datetime, limit: int = 500) -> int:
    """Book up to ``limit`` queued counts, each machine's in ledger order; return how many. Safe to run in
    several processes at once: each count is claimed by its (machine, seq) before it moves anything."""
    p = pending_counts
    rows = conn.execute(sa.select(p).order_by(p.c.machine_id, p.c.seq).limit(limit)).all()
    for machine_id, group in itertools.groupby(rows, key=lambda r: r.machine_id):
        group = list(group)
        ledger_counts(conn, machine_id, [Count(r.seq, r.kind, r.slot, r.product_id, r.count_before, r.count_after,
                                               r.reason) for r in group], now)
        conn.execute(p.delete().where(p.c.machine_id == machine_id, p.c.seq.in_([r.seq for r in group])))
    return len(rows)


def _close_other_products(conn, op, place: Place, product_id: int, now: datetime) -> None:
    """A slot whose planogram now names another product: what the book still has of the old one is gone."""
    b = balances
    stale = conn.execute(sa.select(b.c.product_id, b.c.quantity).where(
        b.c.machine_id == place.machine_id, b.c.slot == place.slot, b.c.product_id != product_id,
        b.c.quantity != 0)).all()
    for other, qty in stale:
        lock_product(conn, other)
        adjust(conn, op, other, -int(qty), now, "the slot holds another product now", place)


# -- reading the book --------------------------------------------------------------------------------

def warehouse(conn: sa.Connection, today: date) -> list[dict]:
    """Every described product: quantity, value and average unit cost in the warehouse, with its lots."""
    m = movements
    sums = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(
        sa.select(m.c.product_id, sa.func.sum(m.c.quantity), sa.func.sum(m.c.value))
        .where(m.c.machine_id.is_(None)).group_by(m.c.product_id))}
    by_product: dict[int, list] = {}
    for lot in lots_on_hand(conn):
        by_product.setdefault(lot.product_id, []).append(lot)
    out = []
    for p in list_products(conn):
        if p.currency is None:
            continue
        qty, value = sums.get(p.id, (0, 0))
        out.append({"product_id": p.id, "sku": p.sku, "name": p.name, "currency": p.currency, "quantity": qty,
                    "value": value, "average_cost": value // qty if qty else None,
                    "reorder_level": p.reorder_level, "below_reorder_level": qty < p.reorder_level,
                    "lots": [{"lot_id": lot.lot_id, "quantity": lot.quantity, "expires_on": _iso(lot.expires_on),
                              "expired": lot.expires_on is not None and lot.expires_on < today}
                             for lot in sorted(by_product.get(p.id, []), key=fefo_key)]})
    return out


def in_machines(conn: sa.Connection, machine_id: str | None = None) -> list[dict]:
    """What the book says is in each machine's slots, at cost."""
    m = movements
    q = (sa.select(m.c.machine_id, m.c.slot, m.c.product_id, sa.func.sum(m.c.quantity), sa.func.sum(m.c.value))
         .where(m.c.machine_id.is_not(None)).group_by(m.c.machine_id, m.c.slot, m.c.product_id)
         .having(sa.func.sum(m.c.quantity) != 0).order_by(m.c.machine_id, m.c.slot))
    if machine_id is not None:
        q = q.where(m.c.machine_id == machine_id)
    return [{"machine_id": r[0], "slot": r[1], "product_id": r[2], "quantity": int(r[3]), "value": int(r[4])}
            for r in conn.execute(q)]


def list_movements(conn: sa.Connection, product_id=None, kind=None, machine_id=None, since=None, until=None,
                   before_id=None, limit: int = 100) -> list[dict]:
    """Movements newest first, narrowed by whichever filters are given; ``until`` is exclusive."""
    m = movements
    q = sa.select(m).order_by(m.c.id.desc()).limit(limit)
    for column, value in ((m.c.product_id, product_id), (m.c.kind, kind), (m.c.machine_id, machine_id)):
        if value is not None:
            q = q.where(column == value)
    if since is not None:
        q = q.where(m.c.at >= since)
    if until is not None:
        q = q.where(m.c.at < until)
    if before_id is not None:
        q = q.where(m.c.id < before_id)
    return [{"id": r.id, "at": r.at.isoformat(), "op": r.op, "kind": r.kind, "product_id": r.product_id,
             "lot_id": r.lot_id, "machine_id": r.machine_id, "slot": r.slot, "quantity": r.quantity,
             "value": r.value, "reason": r.reason, "user_id": r.user_id} for r in conn.execute(q)]


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d is not None else None


LOOK_BACK_DAYS = 30  # lots that expired longer ago than this are not looked for in machines any more


def expiring_in_machines(conn: sa.Connection, today: date, until: date) -> dict[str, list[dict]]:
    """What the book says is in machines and expires on or before ``until`` (or expired in the last
    ``LOOK_BACK_DAYS``): {machine id: [{"sku", "name", "quantity", "expires_on"}]}, soonest first.

    A sale out of a slot names no lot, so which lots a slot still holds is reckoned: a slot sells first what
    was loaded first, so the units it holds now are the last ones put in. A lot put into a slot is still there
    for as many of its units as the slot holds beyond what was put in after it. Only the lots expiring in the
    window are read, through the lot index, with the later loads of their own slots: no scan of the history."""
    m, later, p, b = movements, movements.alias("later"), catalog.products, balances
    soon = sa.select(lots.c.id).where(lots.c.expires_on >= today - timedelta(days=LOOK_BACK_DAYS),
                                      lots.c.expires_on <= until)
    loaded_after = (sa.select(sa.func.coalesce(sa.func.sum(later.c.quantity), 0))
                    .where(later.c.machine_id == m.c.machine_id, later.c.slot == m.c.slot,
                           later.c.product_id == m.c.product_id, later.c.kind == TRANSFER, later.c.quantity > 0,
                           later.c.id > m.c.id).scalar_subquery())
    q = (sa.select(m.c.machine_id, m.c.quantity, loaded_after, b.c.quantity, lots.c.expires_on, p.c.sku, p.c.name)
         .join(lots, lots.c.id == m.c.lot_id).join(p, p.c.id == m.c.product_id)
         .join(b, sa.and_(b.c.product_id == m.c.product_id, b.c.machine_id == m.c.machine_id, b.c.slot == m.c.slot))
         .where(m.c.lot_id.in_(soon), m.c.kind == TRANSFER, m.c.quantity > 0, m.c.machine_id.is_not(None),
                b.c.quantity > 0))
    left: dict[tuple, int] = defaultdict(int)
    for machine_id, put_in, after, holds, expires_on, sku, name in conn.execute(q):
        units = min(int(put_in), int(holds) - int(after))
        if units > 0:
            left[(expires_on, machine_id, sku, name)] += units
    out: dict[str, list[dict]] = {}
    for (expires_on, machine_id, sku, name), units in sorted(left.items()):
        out.setdefault(machine_id, []).append({"sku": sku, "name": name, "quantity": units, "expires_on": expires_on})
    return out
