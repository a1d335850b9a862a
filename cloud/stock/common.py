"""What every part of the stock module shares: its error, the checks on numbers and dates, the row lock."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from cloud.core import fields
from cloud.core.fields import FieldError
from cloud.fleet.machines import products

MAX_QUANTITY = 1_000_000  # units in one line or one movement: past this it is a typing mistake
MAX_AMOUNT = 10**12  # minor units in one price or cost: past this it is a typing mistake


class StockError(FieldError):
    """Bad input to a stock function (see ``FieldError``)."""


def whole(value, field: str, low: int = 0, high: int = MAX_QUANTITY) -> int:
    """``value`` as an int in [low, high], or StockError naming ``field`` (a bool is not a number)."""
    return fields.whole(value, field, low, high, StockError)


def quantity(value, field: str = "quantity") -> int:
    """A count of units that moves something: 1 or more."""
    return whole(value, field, 1)


def amount(value, field: str) -> int:
    """Money in the currency's smallest unit, zero or more."""
    return whole(value, field, 0, MAX_AMOUNT)


def currency(value, field: str = "currency") -> str:
    return fields.currency(value, field, StockError)


def text(value, field: str, most: int, least: int = 0) -> str:
    """Printable text, stripped, ``least`` to ``most`` characters."""
    if not isinstance(value, str):
        raise StockError(field, "must be text")
    value = value.strip()
    if not least <= len(value) <= most or not value.isprintable():
        raise StockError(field, f"must be {least} to {most} printable characters")
    return value


def day(value, field: str) -> date | None:
    """A calendar date (a ``date`` or 'YYYY-MM-DD'), or None."""
    return fields.day(value, field, StockError, "2024-05-31")


def lock_products(conn: sa.Connection, product_ids) -> None:
    """Serialise stock changes of these products across cloud processes (PostgreSQL: row locks until commit,
    taken in id order so that two operations on the same products never wait for each other in a circle;
    SQLite: BEGIN IMMEDIATE already lets one writer in at a time); StockError 404 for a product not there."""
    ids = sorted(set(product_ids))
    query = sa.select(products.c.id).where(products.c.id.in_(ids)).order_by(products.c.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    found = set(conn.execute(query).scalars())
    for product_id in ids:
        if product_id not in found:
            raise StockError("product_id", f"no product {product_id}", 404)


def lock_product(conn: sa.Connection, product_id: int) -> None:
    lock_products(conn, [product_id])
