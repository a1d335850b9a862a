"""The office's view of orders: searched by machine, customer, time and state, newest first, a page at a
time by keyset (the last row's (created_at, id), never an OFFSET, so the thousandth page costs what the
first does); one order's money story; and a refund by a person, the one path the API and the dashboard
share (idempotent under the caller's key, audited in the transaction that moves the money).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa

from cloud import people
from cloud.core.db import reader
from cloud.accounts.journal import IdempotencyConflict, PaymentError
from cloud.core.money import format_money, parse_amount
from cloud.fleet import machines
from cloud.payments import mandates
from cloud.payments.provider import NotRefundable
from cloud.sales import orders, reports
from cloud.sales.orders import OPEN, SETTLED, WAITING

STATES = ("created", WAITING, *OPEN, *SETTLED)
MAX_LIMIT = 200
KEY_RE = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")
CURSOR_RE = re.compile(r"(\d{4}-\d\d-\d\dT[0-9:.]+\+00:00)~([A-Za-z0-9_-]{1,64})\Z")


class OfficeError(ValueError):
    """Input the office cannot act on: ``field`` names the input, ``status`` the HTTP answer; ``template``
    and ``fields`` let a page say it in the reader's language (the API says "field: message")."""

    def __init__(self, field: str, template: str, status: int = 422, **fields):
        super().__init__(f"{field}: " + template.format(**fields))
        self.field, self.template, self.fields, self.status = field, template, fields, status


@dataclass(frozen=True)
class Filters:
    """A checked order search: every field optional; ``start``/``end`` are UTC instants, [start, end)."""

    machine: str | None = None
    customer_id: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    status: str | None = None
    after: tuple[datetime, str] | None = None
    limit: int = 50


def find_customer(conn: sa.Connection, text: str):
    """The customer named by id or by phone number (with its +); OfficeError naming ``customer`` if none."""
    text = text.strip()
    row = None
    if text.isdigit() and len(text) <= 9:
        row = people.get(conn, int(text))
    elif text.startswith("+"):
        row = people.by_phone(conn, text)
    else:
        raise OfficeError("customer", "an id, or a phone number starting with +")
    if row is None:
        raise OfficeError("customer", "there is no customer {value}", 404, value=text)
    return row


def _day(text: str, field: str, tz) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(text), time(), tz).astimezone(timezone.utc)
    except ValueError:
        raise OfficeError(field, "“{value}” is not a date like 2026-11-01", value=text) from None


def cursor_of(row) -> str:
    """The ``after`` that asks for the page following ``row``."""
    return f"{row.created_at.astimezone(timezone.utc).isoformat()}~{row.id}"


def filters(conn: sa.Connection, machine: str = "", customer: str = "", start: str = "", end: str = "",
            status: str = "", tz: str = "", after: str = "", limit: int | str = 50) -> Filters:
    """Check a search as people and scripts write it: dates are local days of ``tz`` (UTC by default), ``end``
    the last day included; OfficeError names the first field that is wrong."""
    try:
        zone = reports.zone(tz.strip() or None)
    except reports.ReportError:
        raise OfficeError("tz", "“{value}” is not a time zone we know", value=tz) from None
    machine, status = machine.strip(), status.strip()
    if machine:
        try:
            machines.get(conn, machine[:32])
        except machines.NoSuchMachine:
            raise OfficeError("machine", "there is no machine {value}", 404, value=machine) from None
    customer_id = find_customer(conn, customer).id if customer.strip() else None
    if status and status not in STATES:
        raise OfficeError("status", "one of {states}", states=", ".join(STATES))
    first = _day(start.strip(), "from", zone) if start.strip() else None
    last = _day(end.strip(), "to", zone) + timedelta(days=1) if end.strip() else None
    if first and last and last <= first:
        raise OfficeError("to", "the last day must not be before the first")
    position = None
    if after:
        found = CURSOR_RE.match(after)
        try:
            position = (datetime.fromisoformat(found.group(1)), found.group(2)) if found else None
        except ValueError:
            position = None
        if position is None:
            raise OfficeError("after", "not a position this search gave (use its next link)")
    if isinstance(limit, str):
        limit = int(limit) if limit.isdigit() and len(limit) < 6 else 0
    if not 1 <= limit <= MAX_LIMIT:
        raise OfficeError("limit", "a whole number from 1 to {n}", n=MAX_LIMIT)
    return Filters(machine or None, customer_id, first, last, status or None, position, limit)


def search(conn: sa.Connection, f: Filters) -> tuple[list, str | None]:
    """One page of orders, newest first, and the ``after`` of the next page (None: this is the last)."""
    o = orders.orders.c
    query = sa.select(orders.orders, people.customers.c.phone, people.customers.c.name.label("customer_name")) \
        .join(people.customers, people.customers.c.id == o.customer_id) \
        .order_by(o.created_at.desc(), o.id.desc()).limit(f.limit + 1)
    for column, value in ((o.machine_id, f.machine), (o.customer_id, f.customer_id), (o.status, f.status)):
        if value is not None:
            query = query.where(column == value)
    if f.start is not None:
        query = query.where(o.created_at >= f.start)
    if f.end is not None:
        query = query.where(o.created_at < f.end)
    if f.after is not None:
        query = query.where(sa.tuple_(o.created_at, o.id) < sa.tuple_(*f.after))
    rows = conn.execute(query).all()
    more = len(rows) > f.limit
    rows = rows[:f.limit]
    return rows, cursor_of(rows[-1]) if more else None


def public(row) -> dict:
    """An order as the API shows it."""
    return {"id": row.id, "created_at": row.created_at, "machine_id": row.machine_id, "slot": row.slot,
            "customer_id": row.customer_id, "amount": row.amount, "currency": row.currency,
            "provider": row.provider, "status": row.status, "reason": row.reason}


def detail(conn: sa.Connection, payments, order_id: str, lang: str | None = None) -> dict | None:
    """One order with its customer, product, machine (named in ``lang`` where it can be) and money story
    (captured, refunded, each step)."""
    row = orders.get(conn, order_id)
    if row is None:
        return None
    try:
        captured, refunded = payments.refunded(conn, row)
        story = payments.story(conn, row)
    except PaymentError:
        captured, refunded, story = 0, 0, []  # paid by a provider this cloud no longer knows
    customer = people.get(conn, row.customer_id)
    machine = machines.get(conn, row.machine_id, lang)  # the orders table's foreign key keeps it
    product = conn.execute(sa.select(machines.products.c.sku, machines.products.c.name)
                           .where(machines.products.c.id == row.product_id)).first()
    return {**public(row), "customer": {"id": customer.id, "name": customer.name, "phone": customer.phone},
            "machine_name": machine.name or row.machine_id,
            "product": {"sku": product.sku, "name": product.name} if product else None,
            "captured": captured, "refunded": refunded,
            "refundable": captured - refunded if row.status in orders.REFUNDABLE else 0,
            "story": [{"at": s.at, "what": s.what, "amount": s.amount, "status": s.status,
                       "reason": s.reason, "reference": s.reference} for s in story]}


def clean_reason(text) -> str:
    reason = unicodedata.normalize("NFC", (text or "").strip())
    if not 1 <= len(reason) <= 200 or any(unicodedata.category(ch).startswith("C") for ch in reason):
        raise OfficeError("reason", "say why, in 1 to 200 characters without control characters")
    return reason


@dataclass(frozen=True)
class Refunded:
    order: object
    outcome: object
    reason: str


def refund(engine: sa.Engine, payments, caller, order_id: str, amount, key: str, reason, now: datetime) -> Refunded:
    """Refund ``amount`` (minor units, the amount as written in the order's currency, or None: all that is
    left) of a sale, with a reason, under ``key``; audited when money moved. OfficeError names the field."""
    reason = clean_reason(reason)
    if not KEY_RE.match(key or ""):
        raise OfficeError("key", "8 to 64 letters, digits, - or _ (the same key makes a retry safe)")
    if isinstance(amount, bool) or (isinstance(amount, int) and amount <= 0):
        raise OfficeError("amount", "must be more than zero")
    try:
        with engine.begin() as conn:
            found = orders.get(conn, order_id)
            if isinstance(amount, str) and found is not None:
                try:
                    amount = parse_amount(amount, found.currency) if amount.strip() else None
                except ValueError:
                    written = re.fullmatch(r"[0.]+", amount.strip())  # an amount, but nothing: 0, 0.00
                    raise (OfficeError("amount", "must be more than zero") if written else OfficeError(
                        "amount", "“{value}” is not an amount: write it like 10 or 10.50", value=amount)) from None
            order, outcome = orders.refund(conn, payments, order_id, amount, key, now)
            if outcome.created:
                people.audit.record(conn, caller, "order.refund", "order", order_id, {
                    "amount": outcome.amount, "currency": order.currency, "reason": reason, "key": key,
                    "provider": order.provider}, now)
    except orders.OrderError as e:
        raise OfficeError("order", "{detail}", 404 if e.code == "unknown_order" else 409, detail=str(e)) from None
    except IdempotencyConflict as e:
        raise OfficeError("key", "{detail}", 409, detail=str(e)) from None
    except PaymentError as e:
        with reader(engine).connect() as conn:
            found = orders.get(conn, order_id)
            captured, refunded = payments.refunded(conn, found)
        if isinstance(e, NotRefundable) and captured > 0:
            raise OfficeError("amount", "{asked} is more than the {left} left to refund ({refunded} of {captured} "
                              "refunded already)", 409, asked=format_money(amount, found.currency),
                              left=format_money(captured - refunded, found.currency),
                              refunded=format_money(refunded, found.currency),
                              captured=format_money(captured, found.currency)) from None
        raise OfficeError("amount", "{detail}", 409, detail=str(e)) from None
    return Refunded(order, outcome, reason)


def customer_public(row) -> dict:
    return {"id": row.id, "name": row.name, "phone": row.phone, "payment_method": row.payment_method,
            "created_at": row.created_at, "blocked": row.blocked_at is not None,
            "blocked_at": row.blocked_at,
            "blocked_reason": row.blocked_reason}


def customer_detail(conn: sa.Connection, payments, row, currency: str = "CNY", limit: int = 20) -> dict:
    """A customer for the office: their newest orders, wallet balance and history, and the state of the
    mandate their payment method needs (None: it needs none, or they never set one up)."""
    mandate = mandates.get(conn, row.id, row.payment_method)
    newest, _ = search(conn, Filters(customer_id=row.id, limit=limit))
    return {**customer_public(row), "currency": currency,
            "balance": payments.balance(conn, row.id, currency),
            "history": [{"at": h.created_at, "kind": h.kind, "order_id": h.order_id, "amount": h.amount}
                        for h in payments.history(conn, row.id, currency, limit)],
            "mandate": None if mandate is None else {"provider": mandate.provider, "status": mandate.status,
                                                     "reference": mandate.reference},
            "orders": [public(o) for o in newest]}


def set_blocked(engine: sa.Engine, caller, customer: str, blocked: bool, reason, now: datetime):
    """Block a customer from buying (a reason is required) or unblock them; audited when it changed.
    Returns (customer row, changed)."""
    reason = clean_reason(reason) if blocked or (reason or "").strip() else ""
    with engine.begin() as conn:
        row = find_customer(conn, customer)
        changed = people.set_blocked(conn, row.id, blocked, reason, now)
        if changed:
            people.audit.record(conn, caller, "customer.block" if blocked else "customer.unblock", "customer",
                                row.id, {"reason": reason}, now)
        return people.get(conn, row.id), changed
