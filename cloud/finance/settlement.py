"""Settlement with site owners: rules per location, and statements for a period.

A rule is one of ``KINDS``, in one currency, valid from a day to a day (both inclusive; no end: open).
Rules of the same kind for the same location and currency never overlap. Percentages are stored in basis
points (1250 = 12.50 %).

A statement for a location and a period [from, to] (whole days, UTC) counts the sales of the machines while
they stood at the location (``sales`` rows with an amount above zero, by the ledger's timestamp, against
``locations.machine_placements``: a machine moved mid-month splits its sales between the two places), takes off refunds
booked in the period on orders sold there (from the journal), and the cost of goods sold there (the stock
book's ``sale`` movements). Each rule applies to the days where its dates and the period's meet:

- ``percent_gross``: rate x (gross - refunds) of those days;
- ``percent_profit``: rate x (gross - refunds - cost of goods sold) of those days, never below zero (a
  loss is the operator's, not paid back by the site);
- ``flat_monthly``: the monthly fee x days covered / days in that month, for each month touched;
- ``per_item``: the amount x items sold on those days.

Rounding: every commission is computed exactly in integers and rounded once, half up (towards +infinity),
to the currency's minor unit; a flat fee is rounded per month. The total due is the sum of the rounded
commissions, so the lines of a statement always add up to its total.

Posting a statement books commission expense against the location's commission payable, once per
(location, period, currency): posting again returns the first posting and moves nothing.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa

from cloud.fleet import locations
from cloud.core.db import UTCDateTime, metadata
from cloud.sales.records import sales
from cloud.fleet.machines import FleetError
from cloud.accounts.journal import account, accounts, entries, post, txns
from cloud.stock import book
from cloud.catalog import products as catalog
from cloud.finance.common import FinanceError, amount_of, currency_of, half_up, period_name, period_of, span
from cloud.finance.ledger import bounds, catch_up

PERCENT_GROSS, PERCENT_PROFIT, FLAT_MONTHLY, PER_ITEM = "percent_gross", "percent_profit", "flat_monthly", "per_item"
KINDS = (PERCENT_GROSS, PERCENT_PROFIT, FLAT_MONTHLY, PER_ITEM)
PERCENT_KINDS = (PERCENT_GROSS, PERCENT_PROFIT)
FAR = date(9999, 12, 31)

settlement_rules = sa.Table(
    "settlement_rules", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("location_id", sa.Integer, sa.ForeignKey("locations.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("rate_bp", sa.Integer, nullable=True),  # percent kinds: basis points, 0..10000
    sa.Column("amount", sa.BigInteger, nullable=True),  # flat_monthly, per_item: minor units
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("valid_from", sa.Date, nullable=False),
    sa.Column("valid_to", sa.Date, nullable=True),  # inclusive; none: open
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.Integer, sa.ForeignKey("staff.id"), nullable=True),
    sa.CheckConstraint("rate_bp >= 0 AND rate_bp <= 10000", name="settlement_rate_in_range"),
    sa.CheckConstraint("amount >= 0", name="settlement_amount_not_negative"),
)

statement_postings = sa.Table(
    "statement_postings", metadata,
    sa.Column("location_id", sa.Integer, sa.ForeignKey("locations.id"), primary_key=True),
    sa.Column("period", sa.String(24), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("txn_key", sa.String(100), nullable=False),
    sa.Column("posted_at", UTCDateTime, nullable=False),
    sa.Column("posted_by", sa.Integer, sa.ForeignKey("staff.id"), nullable=True),
)


# A posted statement whose figures changed afterwards (a refund of a sale in its period) is not posted again:
# the difference is carried into the next statement posted for the location, as an adjustment line, and
# recorded here when that statement is posted, so it is carried once.
statement_adjustments = sa.Table(
    "statement_adjustments", metadata,
    sa.Column("location_id", sa.Integer, sa.ForeignKey("locations.id"), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("period", sa.String(24), primary_key=True),  # the posted period whose figure changed
    sa.Column("carried_in", sa.String(24), primary_key=True),  # the statement that carried the difference
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

ADJUSTMENT = "adjustment"  # a statement line that is not a rule's: a posted period's change


def location(conn: sa.Connection, location_id):
    try:
        return locations.get(conn, location_id)
    except FleetError as e:
        raise FinanceError("location_id", str(e), 404 if isinstance(e, locations.NoSuchLocation) else 422) from None


def percent_bp(value, field: str = "percent") -> int:
    """A percentage given as a number (12.5) or text ('12.50') as basis points; at most two decimals."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FinanceError(field, "must be a number from 0 to 100")
    try:
        from decimal import Decimal, InvalidOperation

        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise FinanceError(field, "must be a number from 0 to 100") from None
    if not d.is_finite():
        raise FinanceError(field, "must be a number from 0 to 100")
    if d < 0:
        raise FinanceError(field, "must not be negative")
    if d > 100:
        raise FinanceError(field, "must be at most 100")
    bp = d * 100
    if bp != bp.to_integral_value():
        raise FinanceError(field, "at most two decimals (12.25)")
    return int(bp)


def add_rule(conn: sa.Connection, location_id, body: dict, now: datetime, user_id: int | None = None) -> dict:
    """A new settlement rule: {kind, percent (percent kinds) or amount (minor units), currency, valid_from,
    valid_to (optional)}; FinanceError naming the field for anything wrong, an overlap included."""
    location(conn, location_id)
    unknown = set(body) - {"kind", "percent", "amount", "currency", "valid_from", "valid_to"}
    if unknown:
        raise FinanceError(sorted(unknown)[0], "is not a settlement rule field")
    kind = body.get("kind")
    if kind not in KINDS:
        raise FinanceError("kind", f"must be one of: {', '.join(KINDS)}")
    rate = amount = None
    if kind in PERCENT_KINDS:
        if "amount" in body:
            raise FinanceError("amount", f"a {kind} rule takes a percent, not an amount")
        rate = percent_bp(body.get("percent"))
    else:
        if "percent" in body:
            raise FinanceError("percent", f"a {kind} rule takes an amount, not a percent")
        amount = amount_of(body.get("amount"), "amount")
    currency = currency_of(body.get("currency", "CNY"))
    if body.get("valid_to") is None:
        start, end = span(body.get("valid_from"), body.get("valid_from"), "valid_from", "valid_to")
        end = None
    else:
        start, end = span(body.get("valid_from"), body.get("valid_to"), "valid_from", "valid_to")
    r = settlement_rules
    q = sa.select(r.c.id, r.c.valid_from, r.c.valid_to).where(r.c.location_id == location_id, r.c.kind == kind,
                                                               r.c.currency == currency)
    if conn.dialect.name == "postgresql":
        # Serialise rule changes of one location, so two overlapping rules cannot both pass the check.
        conn.execute(sa.select(locations.locations.c.id).where(locations.locations.c.id == location_id)
                     .with_for_update())
    for other in conn.execute(q):
        if other.valid_from <= (end or FAR) and start <= (other.valid_to or FAR):
            raise FinanceError("valid_from", f"overlaps {kind} rule {other.id} ({other.valid_from} to "
                                             f"{other.valid_to or 'open'}) of this location", 409)
    rule_id = conn.execute(r.insert().values(
        location_id=location_id, kind=kind, rate_bp=rate, amount=amount, currency=currency, valid_from=start,
        valid_to=end, created_at=now, created_by=user_id)).inserted_primary_key[0]
    return public_rule(conn.execute(sa.select(r).where(r.c.id == rule_id)).one())


def public_rule(row) -> dict:
    return {"id": row.id, "location_id": row.location_id, "kind": row.kind,
            "percent": None if row.rate_bp is None else f"{row.rate_bp // 100}.{row.rate_bp % 100:02d}",
            "amount": row.amount, "currency": row.currency, "valid_from": row.valid_from.isoformat(),
            "valid_to": row.valid_to.isoformat() if row.valid_to else None}


def rules(conn: sa.Connection, location_id) -> list[dict]:
    location(conn, location_id)
    r = settlement_rules
    return [public_rule(x) for x in conn.execute(sa.select(r).where(r.c.location_id == location_id)
                                                 .order_by(r.c.kind, r.c.valid_from))]


# -- statements --------------------------------------------------------------------------------------

def _days(start: date, end: date):
    d = start
    while d <= end:
        yield d
        d += timedelta(days=1)


def _stamp(t: datetime) -> str:
    """An instant as the sales table's text timestamps are written (UTC, microseconds), for comparing."""
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _during(stays, machine_col, at_col, as_text: bool):
    """A condition: the row's machine stood at the location at the row's time (one term per stay)."""
    terms = []
    for machine_id, valid_from, valid_to in stays:
        term = [machine_col == machine_id]
        if valid_from is not None:
            term.append(at_col >= (_stamp(valid_from) if as_text else valid_from))
        if valid_to is not None:
            term.append(at_col < (_stamp(valid_to) if as_text else valid_to))
        terms.append(sa.and_(*term))
    return sa.or_(*terms)


def daily(conn: sa.Connection, location_id: int, start: date, end: date, currency: str) -> dict[date, dict]:
    """Per day of [start, end]: items, gross, refunds and cost of goods sold at the location's machines,
    each sale counted where its machine stood when it sold (``locations.machine_placements``): a machine
    moved mid-month splits its month between the two places. A refund counts where its sale did."""
    stays = locations.stays_at(conn, location_id)
    days = {d: {"items": 0, "gross": 0, "refunds": 0, "cogs": 0} for d in _days(start, end)}
    if not stays:
        return days
    lo, hi = bounds(start, end)
    s = sales
    here = _during(stays, s.c.machine_id, s.c.ts, True)
    day = sa.func.substr(s.c.ts, 1, 10)
    for d, n, gross in conn.execute(
            sa.select(day, sa.func.count(), sa.func.sum(s.c.amount))
            .where(here, s.c.amount > 0, s.c.currency == currency,
                   s.c.ts >= start.isoformat(), s.c.ts < (end + timedelta(days=1)).isoformat()).group_by(day)):
        days[date.fromisoformat(d)].update(items=int(n), gross=int(gross))
    revenue = [a for a in conn.execute(sa.select(accounts.c.id).where(
        accounts.c.kind == "revenue", accounts.c.currency == currency)).scalars()]
    sold_here = sa.select(s.c.order_id).where(here, s.c.amount > 0)
    for at, amount in conn.execute(
            sa.select(txns.c.created_at, entries.c.amount).join(entries, entries.c.txn_id == txns.c.id)
            .where(txns.c.kind == "refund", entries.c.account_id.in_(revenue), txns.c.created_at >= lo,
                   txns.c.created_at < hi, txns.c.order_id.in_(sold_here))):
        days[at.date()]["refunds"] += -amount
    m, d_ = book.movements, catalog.product_details
    for at, value in conn.execute(
            sa.select(m.c.at, m.c.value).join(d_, d_.c.product_id == m.c.product_id)
            .where(m.c.kind == book.SALE, _during(stays, m.c.machine_id, m.c.at, False), d_.c.currency == currency,
                   m.c.at >= lo, m.c.at < hi)):
        days[at.date()]["cogs"] += -value
    return days


def commission(rule, days: dict[date, dict], start: date, end: date) -> tuple[int, str, date, date] | None:
    """(the rule's commission, how it was reached, first and last day it applied) or None if it did not."""
    first, last = max(start, rule.valid_from), min(end, rule.valid_to or FAR)
    if first > last:
        return None
    covered = [days[d] for d in _days(first, last)]
    net = sum(x["gross"] - x["refunds"] for x in covered)
    if rule.kind == PERCENT_GROSS:
        return half_up(net * rule.rate_bp, 10000), f"{rule.rate_bp / 100:.2f}% of {net}", first, last
    if rule.kind == PERCENT_PROFIT:
        profit = net - sum(x["cogs"] for x in covered)
        return max(0, half_up(profit * rule.rate_bp, 10000)), f"{rule.rate_bp / 100:.2f}% of {profit}", first, last
    if rule.kind == PER_ITEM:
        items = sum(x["items"] for x in covered)
        return items * rule.amount, f"{items} x {rule.amount}", first, last
    total, parts, month = 0, [], date(first.year, first.month, 1)
    while month <= last:
        length = calendar.monthrange(month.year, month.month)[1]
        month_end = month + timedelta(days=length - 1)
        n = (min(last, month_end) - max(first, month)).days + 1
        total += half_up(rule.amount * n, length)
        parts.append(f"{month:%Y-%m} {n}/{length} d")
        month = month_end + timedelta(days=1)
    return total, f"{rule.amount} a month: " + ", ".join(parts), first, last


def statement(conn: sa.Connection, location_id, start: date, end: date, currency: str, now: datetime) -> dict:
    """A location's settlement statement for [start, end] in one currency."""
    loc = location(conn, location_id)
    currency = currency_of(currency)
    catch_up(conn, now)
    days, lines = rule_lines(conn, location_id, start, end, currency)
    totals = {k: sum(x[k] for x in days.values()) for k in ("items", "gross", "refunds", "cogs")}
    period = period_name(start, end)
    posted = conn.execute(sa.select(statement_postings).where(
        statement_postings.c.location_id == location_id, statement_postings.c.period == period,
        statement_postings.c.currency == currency)).first()
    lines += adjustment_lines(conn, location_id, currency, start, period, posted is not None)
    return {"location_id": loc.id, "location": loc.name, "period": period, "from": start.isoformat(),
            "to": end.isoformat(), "currency": currency, "sales_count": totals["items"], "gross": totals["gross"],
            "refunds": totals["refunds"], "net": totals["gross"] - totals["refunds"], "cogs": totals["cogs"],
            "profit": totals["gross"] - totals["refunds"] - totals["cogs"], "lines": lines,
            "total_due": sum(x["commission"] for x in lines), "rounding": "each commission half up to the minor unit",
            "posted": None if posted is None else {"total": posted.total, "at": posted.posted_at.isoformat(),
                                                   "txn_key": posted.txn_key,
                                                   "carried": carried_from(conn, location_id, currency, period)}}


def rule_lines(conn: sa.Connection, location_id, start: date, end: date, currency: str) -> tuple[dict, list[dict]]:
    """The period's daily figures and one commission line per rule that applied."""
    days = daily(conn, location_id, start, end, currency)
    r = settlement_rules
    lines = []
    for rule in conn.execute(sa.select(r).where(r.c.location_id == location_id, r.c.currency == currency)
                             .order_by(r.c.kind, r.c.valid_from)):
        got = commission(rule, days, start, end)
        if got is not None:
            lines.append({"rule_id": rule.id, "kind": rule.kind, "basis": got[1], "from": got[2].isoformat(),
                          "to": got[3].isoformat(), "commission": got[0]})
    return days, lines


def carried_from(conn: sa.Connection, location_id, currency: str, period: str) -> list[dict]:
    """Where the changes to a posted period since its posting went: [{carried_in, amount}]."""
    a = statement_adjustments
    return [{"carried_in": r.carried_in, "amount": r.amount} for r in conn.execute(
        sa.select(a.c.carried_in, a.c.amount).where(a.c.location_id == location_id, a.c.currency == currency,
                                                    a.c.period == period).order_by(a.c.carried_in))]


def adjustment_lines(conn: sa.Connection, location_id, currency: str, start: date, period: str,
                     posted: bool) -> list[dict]:
    """The adjustments a statement carries: once posted, those recorded with it; before, each earlier
    posted period's change since its posting (what it owes now, less what was posted and carried before)."""
    a, p = statement_adjustments, statement_postings
    if posted:
        rows = conn.execute(sa.select(a.c.period, a.c.amount).where(
            a.c.location_id == location_id, a.c.currency == currency, a.c.carried_in == period)).all()
        owed = {r.period: (r.amount, None, None) for r in rows}
    else:
        owed = {}
        for earlier in conn.execute(sa.select(p).where(p.c.location_id == location_id, p.c.currency == currency)):
            first, last = period_of(earlier.period)
            if last >= start:
                continue
            # What it owes now: its rules over its figures as they are, and what it carried of earlier ones.
            now_due = sum(x["commission"] for x in rule_lines(conn, location_id, first, last, currency)[1]) + \
                sum(x["commission"] for x in adjustment_lines(conn, location_id, currency, first, earlier.period, True))
            carried = sum(x["amount"] for x in carried_from(conn, location_id, currency, earlier.period))
            change = now_due - earlier.total - carried
            if change:
                owed[earlier.period] = (change, earlier.total + carried, now_due)
    lines = []
    for name in sorted(owed):
        amount, booked, now_due = owed[name]
        first, last = period_of(name)
        basis = f"{name}: booked {booked}, now {now_due}" if booked is not None else f"{name}"
        lines.append({"rule_id": None, "kind": ADJUSTMENT, "basis": basis, "period": name, "from": first.isoformat(),
                      "to": last.isoformat(), "commission": amount})
    return lines


def post_statement(conn: sa.Connection, location_id, start: date, end: date, currency: str, now: datetime,
                   user_id: int | None = None) -> tuple[dict, bool]:
    """Book a statement's total (commission expense against the location's commission payable) once per
    location, period and currency: (the statement, whether it was posted now)."""
    found = statement(conn, location_id, start, end, currency, now)
    if found["posted"] is not None:
        return found, False
    if end >= now.astimezone(timezone.utc).date():
        # Sales still to come would change what is owed after it was booked.
        raise FinanceError("period", f"{found['period']} has not ended yet: it can be posted from "
                                     f"{(end + timedelta(days=1)).isoformat()} (UTC)", 409)
    key = f"statement:{found['location_id']}:{found['period']}:{currency}"
    expense = account(conn, "commission_expense", 0, currency)
    payable = account(conn, "commission_payable", found["location_id"], currency)
    total = found["total_due"]
    post(conn, key, "commission", [(expense, -total), (payable, total)], now)
    conn.execute(statement_postings.insert().values(location_id=found["location_id"], period=found["period"],
                                                    currency=currency, total=total, txn_key=key, posted_at=now,
                                                    posted_by=user_id))
    for x in found["lines"]:
        if x["kind"] == ADJUSTMENT:  # carried now: the next statement does not carry it again
            conn.execute(statement_adjustments.insert().values(
                location_id=found["location_id"], currency=currency, period=x["period"], carried_in=found["period"],
                amount=x["commission"], created_at=now))
    found["posted"] = {"total": total, "at": now.isoformat(), "txn_key": key}
    return found, True


CSV_FIELDS = ("line", "rule_id", "kind", "from", "to", "basis", "amount")


def csv_rows(s: dict) -> list[tuple]:
    """A statement as CSV rows: a header, the figures, one row per rule, the total due."""
    rows = [CSV_FIELDS]
    for name in ("sales_count", "gross", "refunds", "net", "cogs", "profit"):
        rows.append((name, "", "", s["from"], s["to"], s["currency"], s[name]))
    for x in s["lines"]:
        rows.append(("commission", x["rule_id"], x["kind"], x["from"], x["to"], x["basis"], x["commission"]))
    rows.append(("total_due", "", "", s["from"], s["to"], s["currency"], s["total_due"]))
    return rows


def totals_by_kind(lines: list[dict]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for x in lines:
        out[x["kind"]] += x["commission"]
    return dict(out)
