"""Stock takes in the warehouse: counted quantities per product or per lot, the variance against the book,
applied as adjustment movements with the take's reason, once under the take's key."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata
from cloud.stock import book
from cloud.catalog.products import described
from cloud.catalog.common import StockError, text, whole
from cloud.catalog.products import lock_product, lock_products

MAX_LINES = 2000

stock_takes = sa.Table(
    "stock_takes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(100), nullable=False, unique=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("staff.id"), nullable=True),
)

stock_take_lines = sa.Table(
    "stock_take_lines", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("take_id", sa.Integer, sa.ForeignKey("stock_takes.id"), nullable=False, index=True),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("lot_id", sa.Integer, sa.ForeignKey("lots.id"), nullable=True),  # none: the product as a whole
    sa.Column("book", sa.Integer, nullable=False),
    sa.Column("counted", sa.Integer, nullable=False),
    sa.Column("variance", sa.Integer, nullable=False),  # counted - book
    sa.Column("value", sa.BigInteger, nullable=False),  # of the adjustment, signed
    sa.CheckConstraint("counted >= 0", name="take_counted_not_negative"),
)


def _clean_lines(conn: sa.Connection, lines) -> list[dict]:
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_LINES:
        raise StockError("lines", f"give 1 to {MAX_LINES} counts")
    clean, whole_products, by_lot = [], set(), set()
    for i, line in enumerate(lines):
        f = f"lines.{i}"
        if not isinstance(line, dict):
            raise StockError(f, "must be an object with product_id, counted and optionally lot_id")
        unknown = set(line) - {"product_id", "lot_id", "counted"}
        if unknown:
            raise StockError(f"{f}.{sorted(unknown)[0]}", "is not a stock take field")
        product = described(conn, line.get("product_id"), f"{f}.product_id")
        lot_id = line.get("lot_id")
        if lot_id is not None:
            lot = conn.execute(sa.select(book.lots.c.product_id).where(book.lots.c.id == lot_id)).first() \
                if isinstance(lot_id, int) and not isinstance(lot_id, bool) else None
            if lot is None:
                raise StockError(f"{f}.lot_id", f"no lot {lot_id}", 404)
            if lot.product_id != product.id:
                raise StockError(f"{f}.lot_id", f"lot {lot_id} is of product {lot.product_id}, not {product.id}")
        if (lot_id is None and (product.id in whole_products or product.id in {p for p, _ in by_lot})) or \
                (lot_id is not None and (product.id in whole_products or (product.id, lot_id) in by_lot)):
            raise StockError(f"{f}.product_id", f"product {product.id} is counted on another line already: "
                                                "count it either as a whole or lot by lot, once")
        (whole_products.add(product.id) if lot_id is None else by_lot.add((product.id, lot_id)))
        clean.append({"product_id": product.id, "lot_id": lot_id,
                      "counted": whole(line.get("counted"), f"{f}.counted")})
    return clean


def record(conn: sa.Connection, key, lines, reason, now: datetime, user_id: int | None = None) -> tuple[int, bool]:
    """Apply a stock take: (its id, whether it was applied now). The same key with the same counts returns
    the first take and changes nothing."""
    if not isinstance(key, str) or not 1 <= len(key) <= 100 or not key.isprintable():
        raise StockError("key", "must be 1 to 100 printable characters")
    reason = text(reason, "reason", 200, 1)
    clean = _clean_lines(conn, lines)
    fingerprint = hashlib.sha256(json.dumps({"lines": clean, "reason": reason}, sort_keys=True).encode()).hexdigest()
    done = conn.execute(sa.select(stock_takes.c.id, stock_takes.c.fingerprint).where(stock_takes.c.key == key)).first()
    if done is not None:
        if done.fingerprint != fingerprint:
            raise StockError("key", f"{key!r} was used for another stock take: use a new key for a new count", 409)
        return done.id, False
    op = f"take:{key}"
    if not book.claim(conn, op, "stock_take", now):
        raise StockError("key", f"{key!r} is being used by another stock take", 409)
    lock_products(conn, [c["product_id"] for c in clean])
    take_id = conn.execute(stock_takes.insert().values(key=key, fingerprint=fingerprint, at=now, reason=reason,
                                                       user_id=user_id)).inserted_primary_key[0]
    rows = []
    for c in clean:
        lock_product(conn, c["product_id"])
        if c["lot_id"] is None:
            on_book = book.balance(conn, c["product_id"])[0]
        else:
            on_book = sum(lot.quantity for lot in book.lots_on_hand(conn, [c["product_id"]])
                          if lot.lot_id == c["lot_id"])
        variance = c["counted"] - on_book
        value = book.adjust(conn, op, c["product_id"], variance, now, f"stock take: {reason}"[:200],
                            lot_id=c["lot_id"], user_id=user_id)
        rows.append(dict(take_id=take_id, product_id=c["product_id"], lot_id=c["lot_id"], book=on_book,
                         counted=c["counted"], variance=variance, value=value))
    conn.execute(stock_take_lines.insert(), rows)
    return take_id, True


def get(conn: sa.Connection, take_id) -> dict:
    if not isinstance(take_id, int) or isinstance(take_id, bool):
        raise StockError("id", "must be a whole number")
    row = conn.execute(sa.select(stock_takes).where(stock_takes.c.id == take_id)).first()
    if row is None:
        raise StockError("id", f"no stock take {take_id}", 404)
    return _public(conn, row)


def list_takes(conn: sa.Connection, limit: int = 50) -> list[dict]:
    q = sa.select(stock_takes).order_by(stock_takes.c.id.desc()).limit(limit)
    return [_public(conn, r) for r in conn.execute(q)]


def _public(conn: sa.Connection, row) -> dict:
    lines = [{"product_id": r.product_id, "lot_id": r.lot_id, "book": r.book, "counted": r.counted,
              "variance": r.variance, "value": r.value}
             for r in conn.execute(sa.select(stock_take_lines).where(stock_take_lines.c.take_id == row.id)
                                   .order_by(stock_take_lines.c.id))]
    return {"id": row.id, "key": row.key, "at": row.at.isoformat(), "reason": row.reason, "user_id": row.user_id,
            "lines": lines, "variance_value": sum(line["value"] for line in lines)}
