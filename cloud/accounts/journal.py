"""The double-entry journal: accounts, transactions and their legs.

Every movement of money is one transaction of legs that sum to zero in each currency, stored under a unique
key: the same key twice moves money once, and the same key with other legs is refused. Signs: credit is
positive, so a positive leg increases what the operator owes or earned (a wallet, revenue, a payable).
Money enters from outside through boundary accounts (one per payment provider: what that provider owes us,
or what customers paid in), which therefore run negative; this module does not know their names: each
provider adds its own with ``add_boundary`` (``cloud/payments/registry.py``). So do the debit-side accounts
finance adds (``DEBIT_KINDS``: inventory, cost of goods sold, ...; see ``cloud/finance/``). The owner
column (``customer_id``) is a customer for wallets, a supplier for ``supplier_payable``, a location for
``commission_payable``, and 0 for the operator's own accounts.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, insert_ignore, metadata

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),  # e.g. wallet, hold, revenue, a provider's boundary
    sa.Column("customer_id", sa.Integer, nullable=False),  # 0 for the operator's own accounts
    sa.Column("currency", sa.String(3), nullable=False),
    sa.UniqueConstraint("kind", "customer_id", "currency", name="one_account_per_owner"),
)

txns = sa.Table(
    "txns", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(100), nullable=False, unique=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("order_id", sa.String(64), nullable=True, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

entries = sa.Table(
    "entries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("txn_id", sa.Integer, sa.ForeignKey("txns.id"), nullable=False, index=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
)

# Where money comes in from outside (these run negative): filled by the payment providers, through
# ``add_boundary``, as ``cloud.payments`` registers them.
BOUNDARY: list[str] = []
# Accounts whose natural balance is a debit (negative here): the boundary accounts, and the assets and
# expenses finance posts to.
DEBIT_KINDS: list[str] = ["inventory", "cogs", "stock_adjustment", "commission_expense", "bank"]
# An account kind's name for people (an English msgid), where its kind alone does not say it.
NAMES: dict[str, str] = {}


def add_boundary(kind: str, name: str = "") -> None:
    """Make ``kind`` a boundary account: money from outside comes in through it, so it runs negative;
    ``name`` is what people read for it (``vendctl journal``)."""
    if len(kind) > 20:
        raise ValueError(f"an account kind is at most 20 characters, not {kind!r}")
    for kinds in (BOUNDARY, DEBIT_KINDS):
        if kind not in kinds:
            kinds.append(kind)
    if name:
        NAMES[kind] = name


class PaymentError(ValueError):
    """A payment request that cannot be done: bad amount, unbalanced legs, wrong state."""


class IdempotencyConflict(PaymentError):
    """A key used before for a different request: the first request stands, this one is refused."""


def find_account(conn: sa.Connection, kind: str, customer_id: int, currency: str) -> int | None:
    """The account's id, or None if it was never needed; reads only."""
    return conn.execute(sa.select(accounts.c.id).where(
        accounts.c.kind == kind, accounts.c.customer_id == customer_id, accounts.c.currency == currency)).scalar()


def account(conn: sa.Connection, kind: str, customer_id: int, currency: str) -> int:
    """The account's id, created on first use."""
    found = find_account(conn, kind, customer_id, currency)
    if found is not None:
        return found
    conn.execute(insert_ignore(conn, accounts).values(kind=kind, customer_id=customer_id, currency=currency))
    return find_account(conn, kind, customer_id, currency)


def accounts_of(conn: sa.Connection, kind: str, customer_ids: list[int], currency: str) -> dict[int, int]:
    """{customer_id: account id} of one kind, creating the missing ones."""
    conn.execute(insert_ignore(conn, accounts), [dict(kind=kind, customer_id=c, currency=currency)
                                                 for c in customer_ids])
    return dict(conn.execute(sa.select(accounts.c.customer_id, accounts.c.id).where(
        accounts.c.kind == kind, accounts.c.currency == currency, accounts.c.customer_id.in_(customer_ids))).all())


def balance(conn: sa.Connection, account_id: int) -> int:
    # int(): PostgreSQL sums a bigint into a numeric, which would reach Python as a Decimal.
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(entries.c.amount), 0))
                            .where(entries.c.account_id == account_id)).scalar())


def legs_of(conn: sa.Connection, txn_id: int) -> list[tuple[int, int]]:
    return [tuple(r) for r in conn.execute(sa.select(entries.c.account_id, entries.c.amount)
                                           .where(entries.c.txn_id == txn_id))]


def check_balanced(conn: sa.Connection, key: str, legs: list[tuple[int, int]]) -> None:
    """Refuse legs that are not whole numbers on known accounts summing to zero in each currency."""
    if not legs or any(not isinstance(m, int) or isinstance(m, bool) for _, m in legs):
        raise PaymentError(f"transaction {key} needs legs of whole minor units: {legs}")
    currency_of = dict(conn.execute(sa.select(accounts.c.id, accounts.c.currency)
                                    .where(accounts.c.id.in_({a for a, _ in legs}))).all())
    sums: Counter = Counter()
    for account_id, amount in legs:
        if account_id not in currency_of:
            raise PaymentError(f"transaction {key} names no account {account_id}")
        sums[currency_of[account_id]] += amount
    unbalanced = {c: s for c, s in sums.items() if s != 0}
    if unbalanced:
        raise PaymentError(f"transaction {key} does not balance: {unbalanced} left over ({legs})")


def post(conn: sa.Connection, key: str, kind: str, legs: list[tuple[int, int]], now: datetime,
         order_id: str | None = None) -> bool:
    """Store one balanced transaction under ``key``; False if this very transaction was stored before.

    Raises IdempotencyConflict if the key was used for another transaction (other kind, order or legs).
    """
    check_balanced(conn, key, legs)
    inserted = conn.execute(insert_ignore(conn, txns).values(key=key, kind=kind, order_id=order_id,
                                                             created_at=now).returning(txns.c.id)).first()
    if inserted is None:
        before = conn.execute(sa.select(txns).where(txns.c.key == key)).one()
        if (before.kind, before.order_id) != (kind, order_id) or Counter(legs_of(conn, before.id)) != Counter(legs):
            raise IdempotencyConflict(f"key {key} was used for another transaction ({before.kind}"
                                      + (f" of order {before.order_id}" if before.order_id else "") + ")")
        return False
    conn.execute(entries.insert(), [dict(txn_id=inserted[0], account_id=a, amount=m) for a, m in legs])
    return True


def order_txns(conn: sa.Connection, order_id: str, kinds: tuple[str, ...]) -> list:
    """(id, key, kind) of an order's transactions of these kinds, oldest first."""
    return conn.execute(sa.select(txns.c.id, txns.c.key, txns.c.kind).where(
        txns.c.order_id == order_id, txns.c.kind.in_(kinds)).order_by(txns.c.id)).all()


def moved(conn: sa.Connection, txn_ids: list[int], account_id: int) -> int:
    """What these transactions put into one account (negative: took out)."""
    if not txn_ids:
        return 0
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(entries.c.amount), 0)).where(
        entries.c.txn_id.in_(txn_ids), entries.c.account_id == account_id)).scalar())
