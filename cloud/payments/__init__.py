"""Payments: the provider interface (``provider.py``), the embedded wallet (``wallet.py``), the sandbox
external provider (``sandbox.py``) with its signed webhooks (``webhook.py``), the double-entry journal they
post to (``journal.py``), and the staff and webhook routes (``routes.py``).

``Payments`` is what the rest of the cloud holds: every provider this cloud has, by name. It is itself a
provider that hands each call to the one the order was placed with.
"""

from __future__ import annotations

from cloud.accounts.journal import (BOUNDARY, IdempotencyConflict, PaymentError, account, accounts, accounts_of, balance, entries, find_account, post, txns)
from cloud.payments.provider import NotRefundable, Outcome, Payable, Provider
from cloud.payments.sandbox import Sandbox, SandboxClient
from cloud.payments.wallet import MAX_TOPUP, Wallet
from cloud.payments.webhook import webhook_events

__all__ = [
    "BOUNDARY", "MAX_TOPUP", "IdempotencyConflict", "NotRefundable", "Outcome", "Payable", "PaymentError",
    "Payments", "Provider", "Sandbox", "SandboxClient", "Wallet", "account", "accounts", "accounts_of", "balance",
    "entries", "find_account", "post", "txns", "webhook_events",
]


class Payments(Provider):
    """The wallet, and the sandbox when one is configured; each order's calls go to the order's provider."""

    name = "payments"

    def __init__(self, wallet: Wallet | None = None, sandbox: Sandbox | None = None):
        self.wallet = wallet or Wallet()
        self.sandbox = sandbox
        # What new orders may use; ``of`` also finds the sandbox for orders placed while it was configured:
        # their captures and voids queue up until it is again, instead of stopping the ingest.
        self.providers: dict[str, Provider] = {p.name: p for p in (self.wallet, sandbox) if p is not None}
        self._all = {**self.providers, "sandbox": sandbox or Sandbox(None)}

    @classmethod
    def from_settings(cls, settings, counts=None) -> "Payments":
        """The providers ``settings`` configure; ``counts`` is where the sandbox's worker counts what went
        wrong (the cloud's, shown at /api/v1/health)."""
        if not settings.sandbox_url:
            return cls()
        client = SandboxClient(settings.sandbox_url, settings.sandbox_timeout_s, settings.sandbox_retries)
        return cls(sandbox=Sandbox(client, settings.sandbox_confirm_timeout_s, counts))

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.providers)

    def choose(self, method: str) -> Provider:
        provider = self.providers.get(method)
        if provider is None:
            raise PaymentError(f"paying by {method} is not available here")
        return provider

    def of(self, order) -> Provider:
        """The provider an order was placed with."""
        provider = self._all.get(order.provider)
        if provider is None:
            raise PaymentError(f"order {order.id} was paid by {order.provider}, which this cloud does not know")
        return provider

    def authorise(self, conn, order, key, now) -> Outcome:
        return self.of(order).authorise(conn, order, key, now)

    def capture(self, conn, order, key, now) -> Outcome:
        return self.of(order).capture(conn, order, key, now)

    def void(self, conn, order, key, now) -> Outcome:
        return self.of(order).void(conn, order, key, now)

    def refund(self, conn, order, amount, key, now) -> Outcome:
        return self.of(order).refund(conn, order, amount, key, now)

    def refunded(self, conn, order) -> tuple[int, int]:
        return self.of(order).refunded(conn, order)

    def settle(self, conn, items, now) -> None:
        groups: dict[str, list] = {}
        for order, action in items:
            groups.setdefault(order.provider, []).append((order, action))
        for group in groups.values():
            self.of(group[0][0]).settle(conn, group, now)

    # The wallet's own calls, for the customer's pages.

    def balance(self, conn, customer_id: int, currency: str) -> int:
        return self.wallet.balance(conn, customer_id, currency)

    def history(self, conn, customer_id: int, currency: str, limit: int = 50) -> list:
        return self.wallet.history(conn, customer_id, currency, limit)

    def topup(self, conn, customer_id: int, amount: int, currency: str, key: str, now) -> Outcome:
        return self.wallet.topup(conn, customer_id, amount, currency, key, now)

    # The sandbox's worker, started and stopped with the cloud.

    def start(self, engine) -> None:
        if self.sandbox is not None:
            self.sandbox.start(engine)

    def kick(self) -> None:
        if self.sandbox is not None:
            self.sandbox.kick()

    def stop(self) -> None:
        if self.sandbox is not None:
            self.sandbox.stop()
