"""The product catalogue: SKU, barcode, name, cost, list price, currency, shelf life and reorder level.

The ``products`` rows themselves (id, SKU, name) are declared in ``cloud/fleet/machines.py``, because a planogram
names products by SKU and makes one it has not seen; this module keeps the rest of what is known about
each in ``product_details``, one row per product, made when the product is first described here. A product
the planogram made but nobody has described yet is listed with its details empty (cost 0, no currency).
"""

from __future__ import annotations

from collections.abc import Callable

from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata
from cloud.catalog.common import StockError, amount, currency, text, whole

products = sa.Table(
    "products", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sku", sa.String(40), nullable=False, unique=True),
    sa.Column("name", sa.String(80), nullable=False),
)

product_details = sa.Table(
    "product_details", metadata,
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), primary_key=True, autoincrement=False),
    # GTIN-13: a UPC-A code is kept with the leading 0 EAN-13 gives it, so the same item is one barcode.
    sa.Column("barcode", sa.String(13), nullable=True, unique=True),
    sa.Column("cost", sa.BigInteger, nullable=False),  # the usual unit cost, for a PO line's default
    sa.Column("price", sa.BigInteger, nullable=False),  # the list price; a slot's price may differ
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("shelf_life_days", sa.Integer, nullable=True),  # none: does not expire
    sa.Column("reorder_level", sa.Integer, nullable=False, server_default="0"),  # warehouse units
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("cost >= 0", name="product_cost_not_negative"),
    sa.CheckConstraint("price >= 0", name="product_price_not_negative"),
    sa.CheckConstraint("shelf_life_days > 0", name="product_shelf_life_positive"),
    sa.CheckConstraint("reorder_level >= 0", name="product_reorder_level_not_negative"),
)

MAX_SHELF_LIFE = 3650
DETAIL_FIELDS = ("barcode", "cost", "price", "currency", "shelf_life_days", "reorder_level")


def gtin13(code, field: str = "barcode") -> str | None:
    """An EAN-13 or UPC-A barcode as 13 digits, its check digit verified; None stays None."""
    if code is None:
        return None
    if not isinstance(code, str) or not code.isascii() or not code.isdigit() or len(code) not in (12, 13):
        raise StockError(field, "must be an EAN-13 (13 digits) or UPC-A (12 digits) code")
    code = code.zfill(13)
    # GS1: weights 3 and 1 alternate from the digit next to the check digit, leftwards.
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(code[:-1])))
    if (10 - total % 10) % 10 != int(code[-1]):
        raise StockError(field, f"{code[-1]} is not the check digit of {code[:-1]}: a digit is mistyped")
    return code


def _clean(changes: dict) -> dict:
    out = {}
    for key, value in changes.items():
        if key == "barcode":
            out[key] = gtin13(value)
        elif key in ("cost", "price"):
            out[key] = amount(value, key)
        elif key == "currency":
            out[key] = currency(value)
        elif key == "shelf_life_days":
            out[key] = None if value is None else whole(value, key, 1, MAX_SHELF_LIFE)
        elif key == "reorder_level":
            out[key] = whole(value, key)
        elif key in ("name", "sku"):
            out[key] = text(value, key, 80 if key == "name" else 40, 1)
        else:
            raise StockError(key, "is not a product field")
    return out


def _barcode_free(conn: sa.Connection, barcode: str | None, product_id: int | None) -> None:
    if barcode is None:
        return
    other = conn.execute(sa.select(product_details.c.product_id).where(product_details.c.barcode == barcode)).scalar()
    if other is not None and other != product_id:
        raise StockError("barcode", f"{barcode} is product {other}'s already", 409)


def add_product(conn: sa.Connection, sku, name, cost, price, currency_, now: datetime, barcode=None,
                shelf_life_days=None, reorder_level=0) -> int:
    """A new product with its details; StockError if the SKU or barcode is taken."""
    values = _clean(dict(sku=sku, name=name, cost=cost, price=price, currency=currency_, barcode=barcode,
                         shelf_life_days=shelf_life_days, reorder_level=reorder_level))
    if conn.execute(sa.select(products.c.id).where(products.c.sku == values["sku"])).first() is not None:
        raise StockError("sku", f"{values['sku']!r} exists already", 409)
    _barcode_free(conn, values["barcode"], None)
    product_id = conn.execute(products.insert().values(sku=values.pop("sku"), name=values.pop("name"))
                              ).inserted_primary_key[0]
    conn.execute(product_details.insert().values(product_id=product_id, updated_at=now, **values))
    return product_id


# Who may hold a product in stock (the stock book registers itself): a product's currency cannot change
# while its stock is valued in the old one. A list filled from above, so the catalogue imports no stock.
STOCK_HOLDERS: list[Callable[[sa.Connection, int], bool]] = []


def update_product(conn: sa.Connection, product_id: int, changes: dict, now: datetime) -> dict:
    """Change a product's name or details; {field: [old, new]} of what changed. A product the planogram
    made gets its details here (cost, price and currency all needed then). The currency cannot change
    while stock of the product is on the book: its value is in that currency."""
    values = _clean(changes)
    if "sku" in values:
        raise StockError("sku", "cannot change: machines' ledgers and planograms name the product by it")
    row = get_product(conn, product_id)
    if row.currency is None and set(values) - {"name"}:
        missing = [k for k in ("cost", "price", "currency") if k not in values]
        if missing:
            raise StockError(missing[0], "needed: this product has no details yet")
    _barcode_free(conn, values.get("barcode"), product_id)
    if "currency" in values and row.currency is not None and values["currency"] != row.currency:
        if any(held(conn, product_id) for held in STOCK_HOLDERS):
            raise StockError("currency", "cannot change while the product is in stock: its value is in "
                                         f"{row.currency}", 409)
    diff = {k: [getattr(row, k), v] for k, v in values.items() if getattr(row, k) != v}
    if not diff:
        return diff
    if "name" in values:
        conn.execute(products.update().where(products.c.id == product_id).values(name=values.pop("name")))
    if values:
        if row.currency is None:
            conn.execute(product_details.insert().values(product_id=product_id, updated_at=now, **values))
        else:
            conn.execute(product_details.update().where(product_details.c.product_id == product_id)
                         .values(updated_at=now, **values))
    return diff


def _query():
    d = product_details
    return (sa.select(products.c.id, products.c.sku, products.c.name, d.c.barcode, d.c.cost, d.c.price, d.c.currency,
                      d.c.shelf_life_days, d.c.reorder_level)
            .select_from(products.outerjoin(d, d.c.product_id == products.c.id)))


def get_product(conn: sa.Connection, product_id, field: str = "product_id") -> sa.Row:
    """One product with its details (None where not described yet); StockError 404 if unknown."""
    if not isinstance(product_id, int) or isinstance(product_id, bool):
        raise StockError(field, "must be a whole number")
    row = conn.execute(_query().where(products.c.id == product_id)).first()
    if row is None:
        raise StockError(field, f"no product {product_id}", 404)
    return row


def described(conn: sa.Connection, product_id: int, field: str = "product_id", lock: bool = False) -> sa.Row:
    """A product that has a cost currency, which anything moving it needs; optionally locked for that."""
    row = get_product(conn, product_id, field)
    if lock:
        lock_product(conn, product_id)
    if row.currency is None:
        raise StockError(field, f"product {product_id} ({row.sku}) has no cost and currency yet: "
                                f"PATCH /api/v1/products/{product_id} first")
    return row


def list_products(conn: sa.Connection, search: str | None = None) -> list:
    q = _query().order_by(products.c.sku)
    if search:
        like = f"%{search.lower()}%"
        q = q.where(sa.or_(sa.func.lower(products.c.sku).like(like), sa.func.lower(products.c.name).like(like),
                           product_details.c.barcode == search))
    return list(conn.execute(q))


def public(row) -> dict:
    return {"id": row.id, "sku": row.sku, "name": row.name, "barcode": row.barcode, "cost": row.cost,
            "price": row.price, "currency": row.currency, "shelf_life_days": row.shelf_life_days,
            "reorder_level": row.reorder_level if row.reorder_level is not None else 0}


def lock_products(conn: sa.Connection, product_ids) -> None:
    """Serialise stock changes of these products across cloud processes (PostgreSQL: row locks until commit,
    taken in id order so that two operations on the same products never wait for each other in a circle;
    SQLite: BEGIN IMMEDIATE already lets one writer in at a time); StockError 404 for a product not there."""
    ids = sorted(set(product_ids))
    query = sa.select(products.c.id).where(products.c.id.in_(ids)).order_by(products.c.id)
    if conn.dialect.name == "postgresql":
        # FOR NO KEY UPDATE: it keeps stock changes apart as well as FOR UPDATE, but does not block the
        # foreign-key checks of rows that name the product (an order's insert), which deadlocked purchases
        # with the ingest.
        query = query.with_for_update(key_share=True)
    found = set(conn.execute(query).scalars())
    for product_id in ids:
        if product_id not in found:
            raise StockError("product_id", f"no product {product_id}", 404)


def lock_product(conn: sa.Connection, product_id: int) -> None:
    lock_products(conn, [product_id])
