"""The API's reports a page at a time: ``limit`` rows after the position ``after``, and ``next``, the ``after``
of the following page (None on the last), as the orders and customers lists answer.

A position is the last row's key as text, so a page never depends on an OFFSET and a row added or changed
between two pages moves no other row across the cut. A sales report's rows are finished in memory (its
totals need them all), so its page is cut from them here; the stock report's page is a keyset in its query
(``reports.stock_report``, which reads its own ``after``). Totals and summaries are always over the whole
report, never the page.
"""

from __future__ import annotations

import re
from datetime import date

from cloud.sales.reports import ReportError

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
CURRENCY_RE = re.compile(r"[A-Z]{3}\Z")
NOWHERE = "-"  # the key of "(no location)" in a position: it sorts after every place


def limit_of(text: str | None) -> int:
    """A page's size as the query string gives it (None or "": the default)."""
    if text is None or text == "":
        return DEFAULT_LIMIT
    n = int(text) if text.isdigit() and len(text) < 6 else 0
    if not 1 <= n <= MAX_LIMIT:
        raise ReportError("limit", f"a whole number from 1 to {MAX_LIMIT}")
    return n


def _lost() -> ReportError:
    return ReportError("after", "not a position this report gave (use its next)")


def _order(key, currency: str) -> tuple:
    """Where a row of a sales report stands: the order ``sales_report`` gives its rows (no key last)."""
    return key is None, "" if key is None else key, currency


def sales_position(by: str, after: str | None) -> tuple | None:
    """The order of the row an ``after`` names in a report by ``by`` (None: from the first row)."""
    if not after:
        return None
    text, _, currency = after.rpartition("~")
    if not text or not CURRENCY_RE.match(currency) or len(text) > 32:
        raise _lost()
    key: str | int | None = text
    if by == "day":
        try:
            key = date.fromisoformat(text).isoformat()
        except ValueError:
            raise _lost() from None
    elif by == "hour" or by == "product" or (by == "location" and text != NOWHERE):
        if not text.isdigit() or len(text) > 9 or (by == "hour" and int(text) > 23):
            raise _lost()
        key = int(text)
    elif by == "location":
        key = None
    return _order(key, currency)


def _position_of(row: dict) -> str:
    return f"{NOWHERE if row['key'] is None else row['key']}~{row['currency']}"


def sales_page(report: dict, position: tuple | None, limit: int) -> dict:
    """The report with only the ``limit`` rows after ``position`` (``sales_position``) and ``next``; its
    totals stay the whole report's."""
    rows = report["rows"]
    if position is not None:
        rows = [r for r in rows if _order(r["key"], r["currency"]) > position]
    page = rows[:limit]
    return {**report, "rows": page, "next": _position_of(page[-1]) if len(rows) > limit else None}
