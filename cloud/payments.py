"""Payments: a provider interface, and the embedded stored-value wallet kept as double-entry accounts.

Every movement of money is one transaction of legs that sum to zero, stored under an idempotency key: the
same key twice moves money once. Signs: a positive leg increases what the account holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from .db import UTCDateTime, bulk_insert, db_value, insert_ignore, metadata

log = logging.getLogger(__name__)

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),  # wallet, hold, revenue, topup_clearing
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

MAX_TOPUP = 1_000_00  # minor units


class PaymentError(ValueError):
    """A payment request that cannot be done: bad amount, unbalanced legs."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str = ""
    created: bool = True  # False when the key had been used: nothing moved this time


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


def post(conn: sa.Connection, key: str, kind: str, legs: list[tuple[int, int]], now: datetime,
         order_id: str | None = None) -> bool:
    """Store one balanced transaction under ``key``; False if the key was used before (nothing posted)."""
    if sum(amount for _, amount in legs) != 0:
        raise PaymentError(f"transaction {key} does not balance: {legs}")
    inserted = conn.execute(insert_ignore(conn, txns).values(key=key, kind=kind, order_id=order_id,
                                                             created_at=now).returning(txns.c.id)).first()
    if inserted is None:
        return False
    conn.execute(entries.insert(), [dict(txn_id=inserted[0], account_id=a, amount=m) for a, m in legs])
    return True


class Provider:
    """What every payment provider does; each call is idempotent under the order id."""

    name = "abstract"

    def authorise(self, conn, order, now) -> Outcome:
        raise NotImplementedError

    def capture(self, conn, order, now) -> Outcome:
        raise NotImplementedError

    def void(self, conn, order, now) -> Outcome:
        raise NotImplementedError

    def settle(self, conn, items: list[tuple[object, str]], now) -> None:
        """Capture or void many orders, each exactly once; ``items`` are (order, "capture" | "void")."""
        for order, action in items:
            (self.capture if action == "capture" else self.void)(conn, order, now)


class Wallet(Provider):
    """The embedded stored-value wallet: authorise moves money to a hold, capture to revenue, void back."""

    name = "wallet"

    def _accounts(self, conn, customer_id: int, currency: str) -> tuple[int, int]:
        return account(conn, "wallet", customer_id, currency), account(conn, "hold", customer_id, currency)

    def balance(self, conn, customer_id: int, currency: str) -> int:
        wallet = find_account(conn, "wallet", customer_id, currency)
        return 0 if wallet is None else balance(conn, wallet)

    def topup(self, conn, customer_id: int, amount: int, currency: str, key: str, now: datetime) -> Outcome:
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_TOPUP:
            raise PaymentError(f"a top-up must be between 1 and {MAX_TOPUP} minor units")
        wallet = account(conn, "wallet", customer_id, currency)
        clearing = account(conn, "topup_clearing", 0, currency)
        created = post(conn, f"topup:{key}", "topup", [(wallet, amount), (clearing, -amount)], now)
        return Outcome(True, created=created)

    def authorise(self, conn, order, now) -> Outcome:
        wallet, hold = self._accounts(conn, order.customer_id, order.currency)
        if conn.dialect.name == "postgresql":
            # Serialise authorisations of one wallet so two orders cannot both spend the same money.
            conn.execute(sa.select(accounts.c.id).where(accounts.c.id == wallet).with_for_update())
        key = f"authorise:{order.id}"
        if conn.execute(sa.select(txns.c.id).where(txns.c.key == key)).first():
            return Outcome(True, created=False)
        available = balance(conn, wallet)
        if available < order.amount:
            return Outcome(False, f"not enough in the wallet ({available} < {order.amount})")
        post(conn, key, "authorise", [(wallet, -order.amount), (hold, order.amount)], now, order.id)
        return Outcome(True)

    def capture(self, conn, order, now) -> Outcome:
        _, hold = self._accounts(conn, order.customer_id, order.currency)
        revenue = account(conn, "revenue", 0, order.currency)
        created = post(conn, f"capture:{order.id}", "capture", [(hold, -order.amount), (revenue, order.amount)],
                       now, order.id)
        return Outcome(True, created=created)

    def void(self, conn, order, now) -> Outcome:
        wallet, hold = self._accounts(conn, order.customer_id, order.currency)
        created = post(conn, f"void:{order.id}", "void", [(hold, -order.amount), (wallet, order.amount)],
                       now, order.id)
        return Outcome(True, created=created)

    def settle(self, conn, items: list[tuple[object, str]], now) -> None:
        """Bulk capture and void: a handful of statements for a whole ingest batch.

        The caller has just moved each order out of an open state with a conditional update, so each key is
        new; a key seen before is a bug and fails the whole transaction rather than moving money twice.
        """
        for currency in sorted({order.currency for order, _ in items}):
            group = [(o, a) for o, a in items if o.currency == currency]
            customers = sorted({o.customer_id for o, _ in group})
            hold = accounts_of(conn, "hold", customers, currency)
            wallet = accounts_of(conn, "wallet", customers, currency)
            revenue = account(conn, "revenue", 0, currency)
            keys = [f"{a}:{o.id}" for o, a in group]
            # No RETURNING: on SQLite, SQLAlchemy falls back to one statement per row to keep its order.
            created = db_value(conn, txns.c.created_at, now)
            bulk_insert(conn, txns, ("key", "kind", "order_id", "created_at"),
                        [(k, a, o.id, created) for k, (o, a) in zip(keys, group)])
            ids: dict[str, int] = {}
            for i in range(0, len(keys), 1000):
                ids.update(conn.execute(sa.select(txns.c.key, txns.c.id).where(txns.c.key.in_(keys[i:i + 1000]))).all())
            legs = []
            for key, (o, a) in zip(keys, group):
                other = revenue if a == "capture" else wallet[o.customer_id]
                legs += [(ids[key], hold[o.customer_id], -o.amount), (ids[key], other, o.amount)]
            bulk_insert(conn, entries, ("txn_id", "account_id", "amount"), legs)

    def history(self, conn, customer_id: int, currency: str, limit: int = 50) -> list:
        wallet = find_account(conn, "wallet", customer_id, currency)
        if wallet is None:
            return []
        q = (sa.select(txns.c.kind, txns.c.order_id, txns.c.created_at, entries.c.amount)
             .join(entries, entries.c.txn_id == txns.c.id).where(entries.c.account_id == wallet)
             .order_by(txns.c.id.desc()).limit(limit))
        return list(conn.execute(q))
