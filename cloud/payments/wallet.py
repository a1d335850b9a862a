"""The embedded stored-value wallet: customers top up, orders hold, capture, void and refund.

Authorise moves money from the customer's wallet to their hold, capture from the hold to revenue, void
back to the wallet, refund from revenue back to the wallet. The journal is the wallet's idempotency
record: each call posts one transaction under ``{step}:{key}``. A declined authorisation moves nothing,
so it is kept apart (``wallet_declines``) to answer the same key with the same "declined".
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, bulk_insert, db_value, metadata
from cloud.accounts.journal import (IdempotencyConflict, PaymentError, account, accounts, accounts_of, balance, entries, find_account, moved, order_txns, post, txns)
from cloud.payments.registry import ProviderSpec
from cloud.payments.provider import Outcome, Payable, Provider, Step, check_amount, refund_amount

log = logging.getLogger(__name__)

declines = sa.Table(
    "wallet_declines", metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("order_id", sa.String(64), nullable=False, index=True),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

MAX_TOPUP = 1_000_00  # minor units
NAME = "wallet"  # how customers choose it, and the registry knows it
BOUNDARY = "topup_clearing"  # the journal account top-ups come in through
DEMO_CURRENCY = "CNY"  # the currency the customer's pages show the wallet and the menu in


class Wallet(Provider):
    """The embedded stored-value wallet, kept as double-entry accounts."""

    name = NAME

    def _accounts(self, conn, customer_id: int, currency: str) -> tuple[int, int]:
        return account(conn, "wallet", customer_id, currency), account(conn, "hold", customer_id, currency)

    def _once(self, conn, order: Payable, steps: tuple[str, ...], key: str, what: str) -> None:
        """Refuse a step the order has taken already under another key."""
        for _, other, kind in order_txns(conn, order.id, steps):
            if other != key:
                raise PaymentError(f"order {order.id} was {kind}d already (under another key): cannot {what} it")

    # -- money in ------------------------------------------------------------------------------------

    def topup(self, conn, customer_id: int, amount: int, currency: str, key: str, now: datetime) -> Outcome:
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_TOPUP:
            raise PaymentError(f"a top-up must be between 1 and {MAX_TOPUP} minor units")
        wallet = account(conn, "wallet", customer_id, currency)
        clearing = account(conn, BOUNDARY, 0, currency)
        created = post(conn, f"topup:{key}", "topup", [(wallet, amount), (clearing, -amount)], now)
        return Outcome(True, created=created, amount=amount)

    def credit(self, conn, customer_id: int, amount: int, currency: str, key: str, now: datetime) -> Outcome:
        """Money an administrator grants (goodwill, a refund made outside, a correction), posted like a
        top-up through the wallet's boundary account, once per ``key``."""
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_TOPUP:
            raise PaymentError(f"a credit must be between 1 and {MAX_TOPUP} minor units")
        wallet = account(conn, "wallet", customer_id, currency)
        clearing = account(conn, BOUNDARY, 0, currency)
        created = post(conn, f"credit:{key}", "credit", [(wallet, amount), (clearing, -amount)], now)
        return Outcome(True, created=created, amount=amount)

    # -- the provider interface ----------------------------------------------------------------------

    def authorise(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        check_amount(order.amount)
        wallet, hold = self._accounts(conn, order.customer_id, order.currency)
        if conn.dialect.name == "postgresql":
            # Serialise authorisations of one wallet so two orders cannot both spend the same money.
            conn.execute(sa.select(accounts.c.id).where(accounts.c.id == wallet).with_for_update())
        full_key = f"authorise:{key}"
        legs = [(wallet, -order.amount), (hold, order.amount)]
        declined = conn.execute(sa.select(declines).where(declines.c.key == full_key)).first()
        if declined is not None:
            if (declined.order_id, declined.customer_id, declined.amount, declined.currency) != \
                    (order.id, order.customer_id, order.amount, order.currency):
                raise IdempotencyConflict(f"key {full_key} was used for order {declined.order_id}")
            return Outcome(False, declined.reason, created=False)
        self._once(conn, order, ("authorise",), full_key, "authorise")
        if conn.execute(sa.select(txns.c.id).where(txns.c.key == full_key)).first() is None:
            if conn.execute(sa.select(declines.c.key).where(declines.c.order_id == order.id)).first():
                raise PaymentError(f"order {order.id} was declined already (under another key)")
            short = self._decline_if_short(conn, wallet, order, full_key, now)
            if short is not None:
                return short
        created = post(conn, full_key, "authorise", legs, now, order.id)
        return Outcome(True, created=created, amount=order.amount)

    def _decline_if_short(self, conn, wallet: int, order: Payable, key: str, now: datetime) -> Outcome | None:
        """A decline, kept under ``key`` so the same key answers the same, when the wallet holds less than the
        order's amount; None when it holds enough."""
        available = balance(conn, wallet)
        if available >= order.amount:
            return None
        reason = f"not enough in the wallet ({available} < {order.amount})"
        conn.execute(declines.insert().values(key=key, order_id=order.id, customer_id=order.customer_id,
                                              amount=order.amount, currency=order.currency, reason=reason,
                                              created_at=now))
        return Outcome(False, reason)

    def _held(self, conn, order: Payable, what: str) -> None:
        """Refuse to capture or void what was never held, or held for another amount."""
        authorised = order_txns(conn, order.id, ("authorise",))
        _, hold = self._accounts(conn, order.customer_id, order.currency)
        if not authorised:
            raise PaymentError(f"order {order.id} was never authorised: nothing to {what}")
        held = moved(conn, [t.id for t in authorised], hold)
        if held != order.amount:
            raise PaymentError(f"order {order.id} holds {held}, not {order.amount}: cannot {what} it")

    def capture(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        full_key = f"capture:{key}"
        self._once(conn, order, ("capture", "void"), full_key, "capture")
        self._held(conn, order, "capture")
        _, hold = self._accounts(conn, order.customer_id, order.currency)
        revenue = account(conn, "revenue", 0, order.currency)
        created = post(conn, full_key, "capture", [(hold, -order.amount), (revenue, order.amount)], now, order.id)
        return Outcome(True, created=created, amount=order.amount)

    def void(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        full_key = f"void:{key}"
        self._once(conn, order, ("capture", "void"), full_key, "void")
        self._held(conn, order, "void")
        wallet, hold = self._accounts(conn, order.customer_id, order.currency)
        created = post(conn, full_key, "void", [(hold, -order.amount), (wallet, order.amount)], now, order.id)
        return Outcome(True, created=created, amount=order.amount)

    def charge(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        """A fresh authorisation and capture of ``order.amount`` under ``key`` (``authorise:{key}``,
        ``capture:{key}``), for an order whose first hold was released but whose product dropped.

        The wallet can: the money is in the customer's own account here. Refused (as a decline, kept under
        ``charge:{key}`` so the same key answers the same) when the wallet no longer holds enough; a
        PaymentError when the order was captured already or still holds its first authorisation (that one
        is to be captured, not a second one taken)."""
        check_amount(order.amount)
        auth_key, capture_key, decline_key = f"authorise:{key}", f"capture:{key}", f"charge:{key}"
        if conn.execute(sa.select(txns.c.id).where(txns.c.key == capture_key)).first() is not None:
            return Outcome(True, created=False, amount=order.amount)
        declined = conn.execute(sa.select(declines).where(declines.c.key == decline_key)).first()
        if declined is not None:
            if declined.order_id != order.id:
                raise IdempotencyConflict(f"key {decline_key} was used for order {declined.order_id}")
            return Outcome(False, declined.reason, created=False)
        self._once(conn, order, ("capture",), capture_key, "charge")
        before = order_txns(conn, order.id, ("authorise", "void"))
        if sum(1 for t in before if t.kind == "authorise") > sum(1 for t in before if t.kind == "void"):
            raise PaymentError(f"order {order.id} still holds its authorisation: capture it, do not charge again")
        wallet, hold = self._accounts(conn, order.customer_id, order.currency)
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(accounts.c.id).where(accounts.c.id == wallet).with_for_update())
        short = self._decline_if_short(conn, wallet, order, decline_key, now)
        if short is not None:
            return short
        revenue = account(conn, "revenue", 0, order.currency)
        post(conn, auth_key, "authorise", [(wallet, -order.amount), (hold, order.amount)], now, order.id)
        post(conn, capture_key, "capture", [(hold, -order.amount), (revenue, order.amount)], now, order.id)
        return Outcome(True, amount=order.amount)

    def refunded(self, conn, order: Payable) -> tuple[int, int]:
        revenue = find_account(conn, "revenue", 0, order.currency)
        if revenue is None:
            return 0, 0
        done = order_txns(conn, order.id, ("capture", "refund"))
        captured = moved(conn, [t.id for t in done if t.kind == "capture"], revenue)
        return captured, -moved(conn, [t.id for t in done if t.kind == "refund"], revenue)

    def story(self, conn, order: Payable) -> list[Step]:
        # Each step is one transaction; what it moved is the sum of its credit legs.
        moved_ = sa.func.sum(sa.case((entries.c.amount > 0, entries.c.amount), else_=0))
        rows = conn.execute(sa.select(txns.c.created_at, txns.c.kind, moved_.label("amount"))
                            .join(entries, entries.c.txn_id == txns.c.id).where(txns.c.order_id == order.id)
                            .group_by(txns.c.id, txns.c.created_at, txns.c.kind).order_by(txns.c.id)).all()
        steps = [Step(r.created_at, r.kind, int(r.amount)) for r in rows]
        steps += [Step(r.created_at, "authorise", r.amount, "declined", r.reason) for r in conn.execute(
            sa.select(declines).where(declines.c.order_id == order.id))]
        return sorted(steps, key=lambda s: s.at)

    def refund(self, conn, order: Payable, amount: int | None, key: str, now: datetime) -> Outcome:
        full_key = f"refund:{key}"
        wallet = account(conn, "wallet", order.customer_id, order.currency)
        revenue = account(conn, "revenue", 0, order.currency)
        before = conn.execute(sa.select(txns.c.id, txns.c.kind, txns.c.order_id).where(txns.c.key == full_key)).first()
        if before is not None:
            # The key decides: the first refund under it is the answer, whatever is left to refund now.
            given = moved(conn, [before.id], wallet)
            if before.kind != "refund" or before.order_id != order.id or amount not in (None, given):
                raise IdempotencyConflict(f"key {full_key} was used for another refund ({before.kind} of order "
                                          f"{before.order_id}, {given})")
            return Outcome(True, created=False, amount=given)
        if conn.dialect.name == "postgresql":
            # Serialise refunds of one order: two at once must not both see the same amount left.
            conn.execute(sa.select(txns.c.id).where(txns.c.order_id == order.id, txns.c.kind == "capture")
                         .with_for_update())
        captured, refunded = self.refunded(conn, order)
        amount = refund_amount(amount, captured, refunded, order.id)
        post(conn, full_key, "refund", [(revenue, -amount), (wallet, amount)], now, order.id)
        return Outcome(True, amount=amount)

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

    # -- what a customer sees ------------------------------------------------------------------------

    def balance(self, conn, customer_id: int, currency: str) -> int:
        wallet = find_account(conn, "wallet", customer_id, currency)
        return 0 if wallet is None else balance(conn, wallet)

    def history(self, conn, customer_id: int, currency: str, limit: int = 50) -> list:
        wallet = find_account(conn, "wallet", customer_id, currency)
        if wallet is None:
            return []
        q = (sa.select(txns.c.kind, txns.c.order_id, txns.c.created_at, entries.c.amount)
             .join(entries, entries.c.txn_id == txns.c.id).where(entries.c.account_id == wallet)
             .order_by(txns.c.id.desc()).limit(limit))
        return list(conn.execute(q))


def build(settings=None, counts=None) -> Wallet:
    """The wallet needs no settings: every cloud offers it."""
    return Wallet()


PROVIDER = ProviderSpec(name=NAME, boundary=BOUNDARY, build=build, label="Wallet (top up, then buy)")
