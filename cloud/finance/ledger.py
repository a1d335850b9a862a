"""The general journal's finance side: goods received and cost of goods sold from the stock book, supplier
payments, account balances and the trial balance.

Everything posts through ``cloud.accounts.journal.post``, which refuses legs that do not sum to zero in each
currency, under a key, so that posting again moves nothing:

| what                  | key                                   | legs (credit positive)                          |
| --------------------- | ------------------------------------- | ----------------------------------------------- |
| goods received        | ``stock:receipt:{op}:{currency}``     | inventory -V, supplier_payable[supplier] +V     |
| sold (counted)        | ``stock:sale:{op}:{currency}``        | cogs -V, inventory +V                           |
| stock adjustment      | ``stock:adjustment:{op}:{currency}``  | stock_adjustment -V, inventory +V (V signed)    |
| supplier payment      | ``supplier_payment:{key}``            | supplier_payable[supplier] -A, bank +A          |
| statement posted      | ``statement:{location}:{period}:...`` | commission_expense -T, commission_payable +T    |
| DEX audit's sales     | ``audit:{audit}:{device}:{currency}`` | dex_cash (or dex_cashless1, ...) -V, revenue +V |

The stock book (``cloud/stock/book.py``) stays the only writer of movements: ``catch_up`` posts, in the
caller's transaction, every receipt, sale and adjustment operation the journal has not seen yet, dated when
the movement was, so the inventory account is always minus the book's value once it has run. Every finance
read and write calls it first (the stock module need not know finance exists). Transfers between the
warehouse and a slot stay inside inventory and post nothing. It also books any DEX audit's sales the
journal does not hold yet (``cloud/audits/booking.py``; an import books its own at once).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, time, timezone

import sqlalchemy as sa

from cloud.people import staff
from cloud.core.db import UTCDateTime, metadata
from cloud.accounts.journal import DEBIT_KINDS, NAMES, account, accounts, entries, post, txns
from cloud.stock import book, purchasing
from cloud.audits.imports import book_unbooked
from cloud.catalog import products as catalog
from cloud.finance.common import FinanceError, amount_of, currency_of, day_of, key_of, text_of

supplier_payments = sa.Table(
    "supplier_payments", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(100), nullable=False, unique=True),
    sa.Column("supplier_id", sa.Integer, sa.ForeignKey("suppliers.id"), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("paid_on", sa.Date, nullable=False),
    sa.Column("reference", sa.String(100), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("staff.id"), nullable=True),
    sa.CheckConstraint("amount > 0", name="supplier_payment_positive"),
)

COUNTERPART = {book.RECEIPT: "supplier_payable", book.SALE: "cogs", book.ADJUSTMENT: "stock_adjustment"}
TXN_KIND = {book.RECEIPT: "goods_received", book.SALE: "cogs", book.ADJUSTMENT: "stock_adjustment"}


def catch_up(conn: sa.Connection, now: datetime) -> int:
    """Post every stock operation (and DEX audit) not yet in the journal; how many transactions were posted."""
    m, d, lots, receipts = book.movements, catalog.product_details, book.lots, purchasing.receipts
    posted = sa.select(txns.c.id).where(txns.c.key == sa.literal("stock:") + m.c.kind + ":" + m.c.op + ":"
                                        + d.c.currency)
    q = (sa.select(m.c.op, m.c.kind, d.c.currency, purchasing.purchase_orders.c.supplier_id,
                   sa.func.sum(m.c.value), sa.func.max(m.c.at))
         .join(d, d.c.product_id == m.c.product_id)
         .outerjoin(lots, sa.and_(lots.c.id == m.c.lot_id, m.c.kind == book.RECEIPT))
         .outerjoin(receipts, receipts.c.id == lots.c.receipt_id)
         .outerjoin(purchasing.purchase_orders, purchasing.purchase_orders.c.id == receipts.c.po_id)
         .where(m.c.kind.in_(tuple(COUNTERPART)), ~sa.exists(posted))
         .group_by(m.c.op, m.c.kind, d.c.currency, purchasing.purchase_orders.c.supplier_id)
         .order_by(sa.func.min(m.c.id)))
    done = 0
    for op, kind, currency, supplier_id, value, at in conn.execute(q).all():
        value = int(value)
        owner = supplier_id if kind == book.RECEIPT else 0
        if kind == book.RECEIPT and supplier_id is None:
            continue  # a lot found in a count is an adjustment, not a purchase
        inventory = account(conn, "inventory", 0, currency)
        other = account(conn, COUNTERPART[kind], owner or 0, currency)
        when = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        done += post(conn, f"stock:{kind}:{op}:{currency}", TXN_KIND[kind],
                     [(inventory, -value), (other, value)], when)
    return done + book_unbooked(conn)


# -- supplier payments -------------------------------------------------------------------------------

def pay_supplier(conn: sa.Connection, supplier_id: int, key, amount, currency, paid_on, reference,
                 now: datetime, user_id: int | None = None) -> tuple[dict, bool]:
    """A payment to a supplier (it lowers what we owe them): (the payment, whether it was made now). The
    same key with the same payment again changes nothing; with another, FinanceError 409."""
    if staff.get_supplier(conn, supplier_id) is None:
        raise FinanceError("supplier_id", f"no supplier {supplier_id}", 404)
    key = key_of(key)
    amount = amount_of(amount, "amount", low=1)
    currency = currency_of(currency)
    paid_on = day_of(paid_on, "paid_on")
    if paid_on is None:
        raise FinanceError("paid_on", "must be a date like 2026-11-30")
    reference = text_of(reference, "reference", 100)
    before = conn.execute(sa.select(supplier_payments).where(supplier_payments.c.key == key)).first()
    if before is not None:
        if (before.supplier_id, before.amount, before.currency, before.paid_on, before.reference) != \
                (supplier_id, amount, currency, paid_on, reference):
            raise FinanceError("key", f"{key!r} was used for another payment (of {before.amount} {before.currency} "
                                      f"to supplier {before.supplier_id}): use a new key", 409)
        return public_payment(before), False
    row_id = conn.execute(supplier_payments.insert().values(
        key=key, supplier_id=supplier_id, amount=amount, currency=currency, paid_on=paid_on, reference=reference,
        created_at=now, user_id=user_id)).inserted_primary_key[0]
    payable = account(conn, "supplier_payable", supplier_id, currency)
    bank = account(conn, "bank", 0, currency)
    at = datetime.combine(paid_on, time(), tzinfo=timezone.utc)  # the journal dates it when it was paid
    post(conn, f"supplier_payment:{key}", "supplier_payment", [(payable, -amount), (bank, amount)], at)
    row = conn.execute(sa.select(supplier_payments).where(supplier_payments.c.id == row_id)).one()
    return public_payment(row), True


def public_payment(row) -> dict:
    return {"id": row.id, "key": row.key, "supplier_id": row.supplier_id, "amount": row.amount,
            "currency": row.currency, "paid_on": row.paid_on.isoformat(), "reference": row.reference}


def supplier_statement(conn: sa.Connection, supplier_id: int, start: date, end: date, currency: str) -> dict:
    """Purchases received and payments in [start, end] (inclusive), with the balance owed before and after."""
    supplier = staff.get_supplier(conn, supplier_id)
    if supplier is None:
        raise FinanceError("supplier_id", f"no supplier {supplier_id}", 404)
    payable = account(conn, "supplier_payable", supplier_id, currency)
    lo, hi = bounds(start, end)
    rows = conn.execute(sa.select(txns.c.key, txns.c.kind, txns.c.created_at, entries.c.amount)
                        .join(entries, entries.c.txn_id == txns.c.id)
                        .where(entries.c.account_id == payable).order_by(txns.c.created_at, txns.c.id)).all()
    opening = sum(r.amount for r in rows if r.created_at < lo)
    lines = [{"at": r.created_at.isoformat(), "kind": r.kind, "key": r.key, "amount": r.amount}
             for r in rows if lo <= r.created_at < hi]
    purchases = sum(x["amount"] for x in lines if x["kind"] == "goods_received")
    paid = -sum(x["amount"] for x in lines if x["kind"] == "supplier_payment")
    return {"supplier_id": supplier_id, "supplier": supplier.name, "currency": currency, "from": start.isoformat(),
            "to": end.isoformat(), "opening_balance": opening, "purchases": purchases, "payments": paid,
            "closing_balance": opening + purchases - paid, "lines": lines}


# -- reading the journal -----------------------------------------------------------------------------

def bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, the day after end 00:00) in UTC."""
    from datetime import timedelta

    return (datetime.combine(start, time(), tzinfo=timezone.utc),
            datetime.combine(end + timedelta(days=1), time(), tzinfo=timezone.utc))


def balances(conn: sa.Connection, kind: str | None = None) -> list[dict]:
    """Every account (of ``kind``) with its balance (credit positive) and its natural-side balance."""
    q = (sa.select(accounts.c.id, accounts.c.kind, accounts.c.customer_id, accounts.c.currency,
                   sa.func.coalesce(sa.func.sum(entries.c.amount), 0))
         .outerjoin(entries, entries.c.account_id == accounts.c.id)
         .group_by(accounts.c.id, accounts.c.kind, accounts.c.customer_id, accounts.c.currency)
         .order_by(accounts.c.currency, accounts.c.kind, accounts.c.customer_id))
    if kind is not None:
        q = q.where(accounts.c.kind == kind)
    out = []
    for r in conn.execute(q):
        debit = r.kind in DEBIT_KINDS
        out.append({"account_id": r.id, "kind": r.kind, "name": NAMES.get(r.kind, ""), "owner": r.customer_id, "currency": r.currency,
                    "balance": int(r[4]), "side": "debit" if debit else "credit",
                    "natural_balance": -int(r[4]) if debit else int(r[4])})
    return out


def trial_balance(conn: sa.Connection) -> dict:
    """Per currency: the sum of every account's balance, which post() keeps at zero."""
    totals: dict[str, int] = defaultdict(int)
    rows = balances(conn)
    for r in rows:
        totals[r["currency"]] += r["balance"]
    return {"accounts": rows, "totals": [{"currency": c, "sum": s} for c, s in sorted(totals.items())],
            "balanced": all(s == 0 for s in totals.values())}


def legs(conn: sa.Connection, account_id: int, limit: int = 100) -> list[dict]:
    """An account's legs, newest first."""
    q = (sa.select(txns.c.id, txns.c.key, txns.c.kind, txns.c.order_id, txns.c.created_at, entries.c.amount)
         .join(entries, entries.c.txn_id == txns.c.id).where(entries.c.account_id == account_id)
         .order_by(txns.c.id.desc()).limit(limit))
    return [{"txn_id": r.id, "key": r.key, "kind": r.kind, "order_id": r.order_id,
             "at": r.created_at.isoformat(), "amount": r.amount} for r in conn.execute(q)]
