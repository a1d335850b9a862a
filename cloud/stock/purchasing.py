"""Purchase orders to suppliers, and the goods received against them as lots in the warehouse.

A purchase order goes draft -> sent -> partly received -> received, or to cancelled from any state before
received (cancelling a partly received order closes it short: what came stays). Nothing else: ``TRANSITIONS``
is the whole list. Lines are fixed once the order is sent. The supplier it is addressed to may confirm it
while it is sent, with the date they promise; confirming again changes nothing.

A receipt is applied once under its key: the same key with the same lines returns the first receipt and
changes nothing; the same key with other lines is refused. Receiving more than is still due on a line is
refused unless the receipt says ``allow_over`` (a supplier's extra case accepted at the door): then the
excess is received and priced like the rest, and the order counts as received.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata
from cloud.catalog.products import products
from cloud.people import staff
from cloud.stock import book
from cloud.catalog.products import described
from cloud.catalog.common import StockError, amount, currency, day, quantity, text
from cloud.catalog.products import lock_products

DRAFT, SENT, PARTLY, RECEIVED, CANCELLED = "draft", "sent", "partly_received", "received", "cancelled"
STATUSES = (DRAFT, SENT, PARTLY, RECEIVED, CANCELLED)
TRANSITIONS = {DRAFT: {SENT, CANCELLED}, SENT: {PARTLY, RECEIVED, CANCELLED}, PARTLY: {PARTLY, RECEIVED, CANCELLED},
               RECEIVED: set(), CANCELLED: set()}
MAX_LINES = 500

purchase_orders = sa.Table(
    "purchase_orders", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("supplier_id", sa.Integer, sa.ForeignKey("suppliers.id"), nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("expected_on", sa.Date, nullable=True),  # delivery: as ordered, then as the supplier confirms
    sa.Column("note", sa.String(500), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.Integer, sa.ForeignKey("staff.id"), nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Column("confirmed_at", UTCDateTime, nullable=True),
    sa.Column("confirmed_by", sa.Integer, sa.ForeignKey("staff.id"), nullable=True),
    sa.Column("closed_at", UTCDateTime, nullable=True),  # received in full, or cancelled
    sa.Column("cancel_reason", sa.String(200), nullable=False, server_default=""),
)

purchase_order_lines = sa.Table(
    "purchase_order_lines", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("po_id", sa.Integer, sa.ForeignKey("purchase_orders.id"), nullable=False),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_cost", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("po_id", "product_id", name="one_line_per_product"),
    sa.CheckConstraint("quantity > 0", name="po_line_quantity_positive"),
    sa.CheckConstraint("unit_cost >= 0", name="po_line_unit_cost_not_negative"),
)

receipts = sa.Table(
    "receipts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(120), nullable=False, unique=True),
    sa.Column("po_id", sa.Integer, sa.ForeignKey("purchase_orders.id"), nullable=False, index=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # of what was asked: a reused key must ask the same
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("staff.id"), nullable=True),
    sa.Column("note", sa.String(500), nullable=False, server_default=""),
)


MAX_ID = 2 ** 63 - 1  # the largest id a database integer holds: a larger one is no row, not an OverflowError


def _get(conn: sa.Connection, po_id, lock: bool = False):
    if not isinstance(po_id, int) or isinstance(po_id, bool):
        raise StockError("id", "must be a whole number")
    if not 0 < po_id <= MAX_ID:
        raise StockError("id", f"no purchase order {po_id}", 404)
    q = sa.select(purchase_orders).where(purchase_orders.c.id == po_id)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None:
        raise StockError("id", f"no purchase order {po_id}", 404)
    return row


def _move(conn: sa.Connection, row, to: str, **values) -> None:
    if to not in TRANSITIONS[row.status]:
        raise StockError("status", f"purchase order {row.id} is {row.status.replace('_', ' ')}: it cannot become "
                                   f"{to.replace('_', ' ')}", 409)
    conn.execute(purchase_orders.update().where(purchase_orders.c.id == row.id).values(status=to, **values))


def create(conn: sa.Connection, supplier_id, currency_, lines: list, now: datetime, user_id: int | None = None,
           expected_on=None, note: str = "") -> int:
    """A draft purchase order; ``lines`` are {product_id, quantity, unit_cost (default: the product's cost)}."""
    if not isinstance(supplier_id, int) or isinstance(supplier_id, bool):
        raise StockError("supplier_id", "must be a whole number")
    if not 0 < supplier_id <= MAX_ID or staff.get_supplier(conn, supplier_id) is None:
        raise StockError("supplier_id", f"no supplier {supplier_id}", 404)
    currency_ = currency(currency_)
    expected_on = day(expected_on, "expected_on")
    if expected_on is not None and expected_on < now.date():
        raise StockError("expected_on", f"{expected_on} is before the order date ({now.date()})")
    note = text(note, "note", 500)
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_LINES:
        raise StockError("lines", f"give 1 to {MAX_LINES} lines")
    clean, seen = [], set()
    for i, line in enumerate(lines):
        f = f"lines.{i}"
        if not isinstance(line, dict):
            raise StockError(f, "must be an object with product_id and quantity")
        unknown = set(line) - {"product_id", "quantity", "unit_cost"}
        if unknown:
            raise StockError(f"{f}.{sorted(unknown)[0]}", "is not a line field")
        product = described(conn, line.get("product_id"), f"{f}.product_id")
        if product.id in seen:
            raise StockError(f"{f}.product_id", f"product {product.id} is on another line already: one line each")
        seen.add(product.id)
        if product.currency != currency_:
            raise StockError(f"{f}.product_id", f"product {product.id} is costed in {product.currency}, "
                                                f"this order is in {currency_}")
        cost = line.get("unit_cost", product.cost)
        clean.append(dict(product_id=product.id, quantity=quantity(line.get("quantity"), f"{f}.quantity"),
                          unit_cost=amount(cost, f"{f}.unit_cost")))
    po_id = conn.execute(purchase_orders.insert().values(
        supplier_id=supplier_id, status=DRAFT, currency=currency_, expected_on=expected_on, note=note,
        created_at=now, created_by=user_id)).inserted_primary_key[0]
    conn.execute(purchase_order_lines.insert(), [dict(po_id=po_id, **c) for c in clean])
    return po_id


def send(conn: sa.Connection, po_id: int, now: datetime) -> None:
    """Draft to sent: the lines are fixed from now on."""
    _move(conn, _get(conn, po_id, lock=True), SENT, sent_at=now)


def cancel(conn: sa.Connection, po_id: int, reason, now: datetime) -> None:
    """Cancel an order not yet received in full; the reason is kept."""
    reason = text(reason, "reason", 200, 1)
    _move(conn, _get(conn, po_id, lock=True), CANCELLED, closed_at=now, cancel_reason=reason)


def confirm(conn: sa.Connection, po_id: int, now: datetime, user_id: int | None, expected_on=None,
            supplier_id: int | None = None) -> bool:
    """The supplier confirms a sent order, optionally with the delivery date it promises; False if it was
    confirmed already (nothing changes). With ``supplier_id`` (a supplier's own account), an order addressed
    to another supplier is as unknown as a missing one."""
    row = _get(conn, po_id, lock=True)
    if supplier_id is not None and row.supplier_id != supplier_id:
        raise StockError("id", f"no purchase order {po_id}", 404)
    expected_on = day(expected_on, "expected_on")
    if row.confirmed_at is not None:
        return False
    if row.status != SENT:
        raise StockError("status", f"purchase order {po_id} is {row.status.replace('_', ' ')}: only a sent order "
                                   "is confirmed", 409)
    if expected_on is not None and expected_on < row.sent_at.date():
        raise StockError("expected_on", f"{expected_on} is before the order was sent ({row.sent_at.date()})")
    values = dict(confirmed_at=now, confirmed_by=user_id)
    if expected_on is not None:
        values["expected_on"] = expected_on
    conn.execute(purchase_orders.update().where(purchase_orders.c.id == po_id).values(**values))
    return True


def _received(conn: sa.Connection, po_id: int) -> dict[int, int]:
    """Units received so far per line id (from the lots each receipt made)."""
    lines, lots = purchase_order_lines, book.lots
    return {r[0]: int(r[1]) for r in conn.execute(
        sa.select(lots.c.po_line_id, sa.func.sum(lots.c.quantity)).join(lines, lines.c.id == lots.c.po_line_id)
        .where(lines.c.po_id == po_id).group_by(lots.c.po_line_id))}


def _fingerprint(po_id: int, lines: list, allow_over: bool) -> str:
    text_ = json.dumps({"po": po_id, "lines": lines, "over": allow_over}, sort_keys=True, default=str)
    return hashlib.sha256(text_.encode()).hexdigest()


def receive(conn: sa.Connection, po_id: int, key, lines: list, now: datetime, user_id: int | None = None,
            allow_over: bool = False, note: str = "") -> tuple[int, bool]:
    """Goods received against a sent order, each line {line_id or product_id, quantity, expires_on
    (default: today plus the shelf life), unit_cost (default: the order's)}: (receipt id, whether it was
    applied now). The same key again returns the first receipt and changes nothing."""
    if not isinstance(key, str) or not 1 <= len(key) <= 100 or not key.isprintable():
        raise StockError("key", "must be 1 to 100 printable characters")
    note = text(note, "note", 500)
    row = _get(conn, po_id, lock=True)
    order_lines = {r.id: r for r in conn.execute(sa.select(purchase_order_lines)
                                                 .where(purchase_order_lines.c.po_id == po_id))}
    by_product = {r.product_id: r for r in order_lines.values()}
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_LINES:
        raise StockError("lines", f"give 1 to {MAX_LINES} lines")
    clean, seen = [], set()
    for i, line in enumerate(lines):
        f = f"lines.{i}"
        if not isinstance(line, dict):
            raise StockError(f, "must be an object with line_id (or product_id) and quantity")
        unknown = set(line) - {"line_id", "product_id", "quantity", "expires_on", "unit_cost"}
        if unknown:
            raise StockError(f"{f}.{sorted(unknown)[0]}", "is not a receipt line field")
        if "line_id" in line:
            order_line = order_lines.get(line["line_id"])
            if order_line is None:
                raise StockError(f"{f}.line_id", f"purchase order {po_id} has no line {line['line_id']}", 404)
        else:
            order_line = by_product.get(line.get("product_id"))
            if order_line is None:
                raise StockError(f"{f}.product_id", f"purchase order {po_id} has no line for product "
                                                    f"{line.get('product_id')}", 404)
        if order_line.id in seen:
            raise StockError(f"{f}.line_id", f"line {order_line.id} appears twice: one entry per line")
        seen.add(order_line.id)
        clean.append({"line_id": order_line.id, "quantity": quantity(line.get("quantity"), f"{f}.quantity"),
                      "expires_on": day(line.get("expires_on"), f"{f}.expires_on"),
                      "unit_cost": amount(line.get("unit_cost", order_line.unit_cost), f"{f}.unit_cost")})
    fingerprint = _fingerprint(po_id, clean, bool(allow_over))
    done = conn.execute(sa.select(receipts.c.id, receipts.c.fingerprint).where(receipts.c.key == key)).first()
    if done is not None:
        if done.fingerprint != fingerprint:
            raise StockError("key", f"{key!r} was used for another receipt: use a new key for new goods", 409)
        return done.id, False
    if row.status == DRAFT:
        raise StockError("status", f"purchase order {po_id} is a draft: send it before receiving against it", 409)
    if row.status not in (SENT, PARTLY):
        raise StockError("status", f"purchase order {po_id} is {row.status}: nothing more is received on it", 409)
    received = _received(conn, po_id)
    for i, c in enumerate(clean):
        due = order_lines[c["line_id"]].quantity - received.get(c["line_id"], 0)
        if c["quantity"] > due and not allow_over:
            raise StockError(f"lines.{i}.quantity", f"{c['quantity']} is more than the {max(due, 0)} still due "
                                                    "on this line; send allow_over to receive them anyway", 409)
        c["expires_on"] = book.expiry_for(conn, order_lines[c["line_id"]].product_id, now.date(), c["expires_on"],
                                          f"lines.{i}.expires_on")
    if not book.claim(conn, f"receipt:{key}", "receipt", now):
        raise StockError("key", f"{key!r} is being used by another receipt", 409)
    lock_products(conn, [order_lines[c["line_id"]].product_id for c in clean])
    receipt_id = conn.execute(receipts.insert().values(key=key, po_id=po_id, fingerprint=fingerprint, received_at=now,
                                                       user_id=user_id, note=note)).inserted_primary_key[0]
    for c in clean:
        book.receive(conn, f"receipt:{key}", order_lines[c["line_id"]].product_id, c["quantity"], c["unit_cost"],
                     c["expires_on"], now, receipt_id, c["line_id"], user_id)
        received[c["line_id"]] = received.get(c["line_id"], 0) + c["quantity"]
    complete = all(received.get(line_id, 0) >= line.quantity for line_id, line in order_lines.items())
    _move(conn, row, RECEIVED if complete else PARTLY, **({"closed_at": now} if complete else {}))
    return receipt_id, True


def receipt_lots(conn: sa.Connection, receipt_id: int) -> list[dict]:
    lots = book.lots
    return [{"lot_id": r.id, "line_id": r.po_line_id, "product_id": r.product_id, "quantity": r.quantity,
             "unit_cost": r.unit_cost, "expires_on": r.expires_on.isoformat() if r.expires_on else None}
            for r in conn.execute(sa.select(lots).where(lots.c.receipt_id == receipt_id).order_by(lots.c.id))]


def get(conn: sa.Connection, po_id: int, supplier_id: int | None = None) -> dict:
    """A purchase order with its lines, what was received on each, and its totals. With ``supplier_id``,
    an order addressed to another supplier is as unknown as a missing one."""
    row = _get(conn, po_id)
    if supplier_id is not None and row.supplier_id != supplier_id:
        raise StockError("id", f"no purchase order {po_id}", 404)
    return _public(conn, row)


def list_orders(conn: sa.Connection, supplier_id: int | None = None, status: str | None = None,
                limit: int = 100) -> list[dict]:
    if status is not None and status not in STATUSES:
        raise StockError("status", f"must be one of: {', '.join(STATUSES)}")
    q = sa.select(purchase_orders).order_by(purchase_orders.c.id.desc()).limit(limit)
    if supplier_id is not None:
        q = q.where(purchase_orders.c.supplier_id == supplier_id)
    if status is not None:
        q = q.where(purchase_orders.c.status == status)
    return [_public(conn, r) for r in conn.execute(q).all()]


def _public(conn: sa.Connection, row) -> dict:
    lines = purchase_order_lines
    received = _received(conn, row.id)
    supplier = staff.get_supplier(conn, row.supplier_id)
    out_lines = []
    for r in conn.execute(sa.select(lines, products.c.sku, products.c.name)
                          .join(products, products.c.id == lines.c.product_id)
                          .where(lines.c.po_id == row.id).order_by(lines.c.id)):
        got = received.get(r.id, 0)
        out_lines.append({"line_id": r.id, "product_id": r.product_id, "sku": r.sku, "name": r.name,
                          "quantity": r.quantity, "unit_cost": r.unit_cost, "received": got,
                          "due": max(r.quantity - got, 0) if row.status not in (CANCELLED, RECEIVED) else 0})
    iso = lambda t: t.isoformat() if t is not None else None  # noqa: E731
    return {"id": row.id, "supplier_id": row.supplier_id, "supplier": supplier.name, "status": row.status,
            "currency": row.currency, "expected_on": iso(row.expected_on), "note": row.note,
            "created_at": iso(row.created_at), "sent_at": iso(row.sent_at), "confirmed_at": iso(row.confirmed_at),
            "closed_at": iso(row.closed_at), "cancel_reason": row.cancel_reason, "lines": out_lines,
            "total": sum(line["quantity"] * line["unit_cost"] for line in out_lines)}


def supplier_of(conn: sa.Connection, po_id: int) -> int:
    return _get(conn, po_id).supplier_id


def due_by_product(conn: sa.Connection) -> dict[int, int]:
    """Units still due per product on sent and partly received orders."""
    lines, lots = purchase_order_lines, book.lots
    got = (sa.select(lots.c.po_line_id, sa.func.sum(lots.c.quantity).label("n"))
           .where(lots.c.po_line_id.is_not(None)).group_by(lots.c.po_line_id).subquery())
    due: dict[int, int] = {}
    for product_id, ordered, received in conn.execute(
            sa.select(lines.c.product_id, lines.c.quantity, sa.func.coalesce(got.c.n, 0))
            .join(purchase_orders, purchase_orders.c.id == lines.c.po_id)
            .outerjoin(got, got.c.po_line_id == lines.c.id)
            .where(purchase_orders.c.status.in_((SENT, PARTLY)))):
        due[product_id] = due.get(product_id, 0) + max(ordered - int(received), 0)
    return due
