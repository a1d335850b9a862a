"""What every payment provider does: authorise, capture, void and refund, each idempotent under a key.

The contract, which tests/cloud/payments/test_payments.py checks for every registered provider:

- the same key twice returns the first result and moves nothing (``Outcome.created`` is False);
- the same key with different arguments raises IdempotencyConflict, and moves nothing;
- an order is authorised once, then captured or voided once (another key for that step is refused);
- refunds follow a capture, partial or full, never more than was captured in total.

A provider that answers later (an external one, confirming by webhook) returns ``pending``; the order
waits for the confirmation. Calls run inside the caller's transaction, so what a provider records commits
with the order's change or not at all; a provider never makes a network call inside that transaction.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa

from cloud.accounts.journal import PaymentError


class Payable(Protocol):
    """What a provider needs to know of an order (an ``orders`` row has all of it)."""

    id: str
    customer_id: int
    amount: int
    currency: str


@dataclass(frozen=True)
class Outcome:
    """The result of one call. ``ok`` with ``pending``: accepted, the provider confirms later."""

    ok: bool
    reason: str = ""
    created: bool = True  # False when the key had been used: nothing moved this time
    pending: bool = False
    amount: int = 0  # what moved (or will): set by refund, whose amount may be "the rest"


@dataclass(frozen=True)
class Step:
    """One movement of an order's money as its provider recorded it, for the office's order page:
    ``what`` is authorise, capture, void, refund, charge or decline; ``status`` succeeded, pending,
    declined, failed..."""

    at: datetime
    what: str
    amount: int
    status: str = "succeeded"
    reason: str = ""
    reference: str = ""  # the platform's id for it, when there is one


class NotRefundable(PaymentError):
    """A refund the order cannot have: not captured, or more than is left of what was captured."""


def check_amount(amount) -> int:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise PaymentError(f"an amount must be a whole number of minor units above zero, not {amount!r}")
    return amount


def refund_amount(asked: int | None, captured: int, refunded: int, order_id: str) -> int:
    """The amount a new refund moves: ``asked``, or all that is left when None."""
    left = captured - refunded
    if captured <= 0:
        raise NotRefundable(f"order {order_id} was not captured: there is nothing to refund")
    if asked is None:
        if left <= 0:
            raise NotRefundable(f"order {order_id} is refunded in full already")
        return left
    check_amount(asked)
    if asked > left:
        raise NotRefundable(f"a refund of {asked} is more than the {left} left to refund on order {order_id} "
                            f"(captured {captured}, refunded {refunded})")
    return asked


class Provider(abc.ABC):
    """One payment provider, named by what a customer chose at registration."""

    name = "abstract"
    confirm_timeout_s = 60.0  # how long an order waits for a ``pending`` authorisation to be confirmed

    @abc.abstractmethod
    def authorise(self, conn: sa.Connection, order: Payable, key: str, now: datetime) -> Outcome:
        """Hold ``order.amount``."""

    @abc.abstractmethod
    def capture(self, conn: sa.Connection, order: Payable, key: str, now: datetime) -> Outcome:
        """Take the held amount: the product dropped."""

    @abc.abstractmethod
    def void(self, conn: sa.Connection, order: Payable, key: str, now: datetime) -> Outcome:
        """Release the hold: nothing dropped."""

    @abc.abstractmethod
    def refund(self, conn: sa.Connection, order: Payable, amount: int | None, key: str,
               now: datetime) -> Outcome:
        """Give back part (``amount``) or all that is left (None) of a captured order."""

    @abc.abstractmethod
    def refunded(self, conn: sa.Connection, order: Payable) -> tuple[int, int]:
        """(captured, refunded so far) of an order."""

    def story(self, conn: sa.Connection, order: Payable) -> list[Step]:
        """Every movement of the order's money so far, oldest first (a provider that keeps none: empty)."""
        return []

    def charge(self, conn: sa.Connection, order: Payable, key: str, now: datetime) -> Outcome:
        """Take ``order.amount`` afresh, under ``key``, for an order whose hold was released (or never
        made) but whose product dropped anyway: a machine that vended a command the cloud had given up on.

        Only a provider that can take money without the customer at hand does it; the default answers
        "not charged", and the order stays ``dropped_unpaid`` for a person to settle."""
        return Outcome(False, f"paying by {self.name} cannot be charged again without the customer")

    def settle(self, conn: sa.Connection, items: list[tuple[Payable, str]], now: datetime) -> None:
        """Capture or void many orders, each under its order id as the key; ``items`` are
        (order, "capture" | "void")."""
        for order, action in items:
            (self.capture if action == "capture" else self.void)(conn, order, order.id, now)

    def answer(self, engine: sa.Engine, key: str) -> str | None:
        """For a provider that answers a ``pending`` refund soon (not by webhook): wait for that answer and
        give the request's status; None when there is nothing to wait for."""
        return None

    # A provider that confirms authorisations by signed notification (its ``ProviderSpec.webhook``) also
    # has ``confirm(conn, event, now) -> bool`` (record its word on an authorisation; False if it names
    # none that is waiting) and ``void_late(conn, order, event_id, now)`` (release an authorisation
    # confirmed after its order stopped waiting); see ``cloud/payments/sandbox/provider.py``.

    # -- a customer's standing permission (a saved card, an agreement, an openid) and their own steps ---

    needs_mandate = False  # does paying by it need the customer's mandate (``cloud/payments/mandates.py``)?
    currencies: tuple[str, ...] = ()  # the currencies it takes; empty: any

    def takes(self, currency: str) -> bool:
        """Can it pay a price in ``currency``? (Per-currency routing: a machine selling in euros offers no
        WeChat Pay.)"""
        return not self.currencies or currency in self.currencies

    def enrol(self, conn: sa.Connection, customer_id: int, return_url: str, now: datetime) -> str | None:
        """Registration's next step with this provider: record a pending mandate and give the URL of the
        platform's page where the customer sets it up (it sends them back to ``return_url``); None when
        there is nothing to set up."""
        return None

    def action_url(self, conn: sa.Connection, order: Payable) -> str | None:
        """Where the customer confirms a pending authorisation themselves (3-D Secure, a JSAPI payment);
        None when nothing is asked of them."""
        return None

    def choose(self, method: str) -> "Provider":
        """The provider for a customer's payment method."""
        if method != self.name:
            raise PaymentError(f"paying by {method} is not available here")
        return self

    @property
    def methods(self) -> tuple[str, ...]:
        return (self.name,)
