"""Stripe's statement: the itemized "Balance change from activity" report (``balance_change_from_activity
.itemized``), as CSV, read into statement lines: each charge (a capture, with Stripe's fee), each refund,
each fee billed on its own. Amounts there are in major units ("3.50"); ours are minor units.

A file is refused whole, with the reason, when its header lacks a column we need (the wrong report), a
row is cut short or does not add up (gross - fee != net: a truncated or edited file), or no charge in it
names an order of ours (another merchant's account: our PaymentIntents carry ``metadata.order_id`` and
the description "vend order ID").
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from cloud.core.money import EXPONENT
from cloud.payments.statement import StatementLine, StatementRefused

NEEDED = ("balance_transaction_id", "created_utc", "currency", "gross", "fee", "net", "reporting_category")
KINDS = {"charge": "capture", "refund": "refund", "fee": "fee"}
DESCRIPTION_RE = re.compile(r"vend order ([A-Za-z0-9_-]{1,64})")
MAX_BYTES = 20 * 1024 * 1024  # as the statement route takes


def minor(text: str, currency: str, column: str, row: int) -> int:
    """A report amount ("3.50", "-1.20") in minor units of ``currency``, exactly."""
    digits = EXPONENT.get(currency, 2)
    try:
        value = Decimal(text.replace(",", "")) * (10 ** digits)
    except InvalidOperation:
        raise StatementRefused(f"row {row}: {column} {text!r} is not an amount") from None
    if value != value.to_integral_value():
        raise StatementRefused(f"row {row}: {column} {text!r} has more decimals than {currency} has")
    return int(value)


def order_of(row: dict) -> str | None:
    for column in ("payment_metadata[order_id]", "refund_metadata[order_id]"):
        if row.get(column):
            return row[column]
    m = DESCRIPTION_RE.search(row.get("description") or "")
    return m.group(1) if m else None


def parse(data: bytes) -> list[StatementLine]:
    """The report's lines; ``StatementRefused`` naming what is wrong with it otherwise."""
    if len(data) > MAX_BYTES:
        raise StatementRefused(f"the file is {len(data)} bytes; a Stripe report here is at most {MAX_BYTES}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StatementRefused("not a Stripe report: the file is not UTF-8 text") from None
    if not text.strip():
        raise StatementRefused("the file is empty")
    if not text.endswith("\n"):
        raise StatementRefused("the file is cut short: its last line has no end (a truncated download?)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        missing = [c for c in NEEDED if c not in header]
        if missing:
            raise StatementRefused("not Stripe's itemized balance change report: no column " + ", ".join(missing))
        rows = list(reader)
    except csv.Error as e:
        raise StatementRefused(f"not a CSV file: {e}") from None
    lines, ours, charges = [], 0, 0
    for n, values in enumerate(rows, start=2):
        if not any(values):
            continue
        if len(values) != len(header):
            raise StatementRefused(f"row {n} has {len(values)} fields, the header {len(header)}: the file is cut "
                                   "short or not one report")
        row = dict(zip(header, values))
        currency = row["currency"].upper()
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise StatementRefused(f"row {n}: currency {row['currency']!r} is not a currency")
        gross, fee, net = (minor(row[c], currency, c, n) for c in ("gross", "fee", "net"))
        if gross - fee != net:
            raise StatementRefused(f"row {n}: gross {row['gross']} - fee {row['fee']} is not net {row['net']}")
        try:
            at = datetime.strptime(row["created_utc"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
        except ValueError:
            raise StatementRefused(f"row {n}: created_utc {row['created_utc']!r} is not YYYY-MM-DD HH:MM:SS") from None
        kind = KINDS.get(row["reporting_category"], "other")
        order_id = order_of(row)
        if kind == "capture":
            charges += 1
            ours += order_id is not None
        if kind == "fee":
            amount, fee = abs(net), 0
        else:
            amount = abs(gross)
        if amount <= 0:
            continue
        lines.append(StatementLine(platform_id=row["balance_transaction_id"], kind=kind, order_id=order_id,
                                   amount=amount, currency=currency, at=at, fee=fee))
    if charges and not ours:
        raise StatementRefused(f"none of the {charges} charges in this report names an order of ours: it is "
                               "another Stripe account's")
    return lines
