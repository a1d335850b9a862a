"""What the finance module's parts share: its error, the checks on input, periods, and rounding."""

from __future__ import annotations

import calendar
import re
from datetime import date

from cloud.core import fields
from cloud.core.fields import FieldError

MAX_AMOUNT = 10**12  # minor units: past this it is a typing mistake
KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}\Z")
MONTH_RE = re.compile(r"([0-9]{4})-([0-9]{2})\Z")


class FinanceError(FieldError):
    """Bad input to a finance function (see ``FieldError``)."""


def amount_of(value, field: str, low: int = 0, high: int = MAX_AMOUNT) -> int:
    return fields.whole(value, field, low, high, FinanceError, "a whole number of minor units")


def currency_of(value, field: str = "currency") -> str:
    return fields.currency(value, field, FinanceError)


def key_of(value, field: str = "key") -> str:
    if not isinstance(value, str) or not KEY_RE.match(value):
        raise FinanceError(field, "must be 1 to 100 letters, digits, '.', ':', '-' or '_' (the same key makes a "
                                  "retry safe)")
    return value


def text_of(value, field: str, most: int) -> str:
    if not isinstance(value, str):
        raise FinanceError(field, "must be text")
    value = value.strip()
    if len(value) > most or not value.isprintable():
        raise FinanceError(field, f"must be at most {most} printable characters")
    return value


def day_of(value, field: str) -> date | None:
    """A calendar date (a ``date`` or 'YYYY-MM-DD'), or None."""
    return fields.day(value, field, FinanceError, "2026-11-30")


def span(start, end, start_field: str = "from", end_field: str = "to") -> tuple[date, date]:
    """Two dates in order (both inclusive)."""
    start, end = day_of(start, start_field), day_of(end, end_field)
    if start is None or end is None:
        raise FinanceError(start_field if start is None else end_field, "is needed: a date like 2026-11-30")
    if end < start:
        raise FinanceError(end_field, f"{end} is before {start_field} ({start}): dates in the wrong order")
    return start, end


def month_span(text: str) -> tuple[date, date]:
    """'2026-11' as its first and last day."""
    m = MONTH_RE.match(text or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise FinanceError("month", f"{text!r} is not a month like 2026-11")
    year, month = int(m.group(1)), int(m.group(2))
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def period_of(text: str) -> tuple[date, date]:
    """A statement's period as written in its URL: '2026-11', or '2026-11-03..2026-11-17'."""
    if isinstance(text, str) and ".." in text:
        start, _, end = text.partition("..")
        return span(start, end)
    return month_span(text)


def period_name(start: date, end: date) -> str:
    """The canonical name of a period: the month when it is one whole month, else 'from..to'."""
    first, last = month_span(start.strftime("%Y-%m"))
    return start.strftime("%Y-%m") if (start, end) == (first, last) else f"{start}..{end}"


def half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, a half going up (towards +infinity): exact,
    in integers. 12.5 -> 13, 12.4999 -> 12, -12.5 -> -12."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    return (2 * numerator + denominator) // (2 * denominator)
