"""What every part of the stock module shares: its error, the checks on numbers and dates, the row lock."""

from __future__ import annotations

from datetime import date


from cloud.core import fields
from cloud.core.fields import FieldError

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


