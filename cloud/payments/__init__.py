"""Payments: the provider interface (``provider.py``), the providers registered by name
(``registry.py``; each a package or module of its own: ``wallet.py``, ``sandbox/``), signed webhooks
(``webhook.py``), the double-entry journal they post to (``cloud/accounts/journal.py``), and the staff
and webhook routes (``routes.py``).

``Payments`` is what the rest of the cloud holds: every registered provider, by name. It is itself a
provider that hands each call to the one the order was placed with.
"""

from __future__ import annotations

from cloud.accounts.journal import (BOUNDARY, IdempotencyConflict, PaymentError, account, accounts, accounts_of, balance, entries, find_account, post, txns)
from cloud.payments.provider import NotRefundable, Outcome, Payable, Provider
from cloud.payments.registry import REGISTRY, ProviderSpec
from cloud.payments.sandbox import Sandbox, SandboxClient
from cloud.payments.wallet import MAX_TOPUP, Wallet
from cloud.payments.webhook import webhook_events

__all__ = [
    "BOUNDARY", "MAX_TOPUP", "REGISTRY", "IdempotencyConflict", "NotRefundable", "Outcome", "Payable",
    "PaymentError", "Payments", "Provider", "ProviderSpec", "Sandbox", "SandboxClient", "Wallet", "account",
    "accounts", "accounts_of", "balance", "entries", "find_account", "post", "txns", "webhook_events",
]


class Payments(Provider):
    """Every registered provider; those configured are offered to new orders, the rest still finish the
    orders placed while they were. Each order's calls go to the order's provider."""

    name = "payments"

    def __init__(self, **configured: Provider):
        """``configured``: providers by name (e.g. ``sandbox=Sandbox(client)``); a registered provider not
        given is offered if it needs no settings (the wallet), else kept idle."""
        unknown = set(configured) - set(REGISTRY.names)
        if unknown:
            raise ValueError(f"no payment provider registered as {', '.join(sorted(unknown))}")
        self.providers: dict[str, Provider] = {}  # what new orders may use
        self._all: dict[str, Provider] = {}
        for spec in REGISTRY:
            provider = configured.get(spec.name)
            if provider is None:
                provider = spec.build(None, None)
                if spec.offered(None):
                    self.providers[spec.name] = provider
            else:
                self.providers[spec.name] = provider
            self._all[spec.name] = provider
        # The wallet's own pages (balance, history, top-up) need the wallet, whichever name it has.
        self._wallet = next(p for p in self._all.values() if isinstance(p, Wallet))

    @classmethod
    def from_settings(cls, settings, counts=None) -> "Payments":
        """The providers ``settings`` configure; ``counts`` is where their workers count what went wrong
        (the cloud's, shown at /api/v1/health)."""
        return cls(**{spec.name: spec.build(settings, counts) for spec in REGISTRY if spec.offered(settings)})

    def __getattr__(self, name: str):
        """A provider by name (``payments.wallet``), None when it is registered but not configured."""
        if name.startswith("_") or name not in REGISTRY.names:
            raise AttributeError(name)
        return self.providers.get(name)

    def configured(self, name: str) -> Provider | None:
        """The provider ``name`` if this cloud is configured for it."""
        return self.providers.get(name)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.providers)

    def methods_for(self, user_agent: str, currency: str | None = None) -> tuple[str, ...]:
        """The methods new customers may choose, in the order that fits their phone (``Registry.in_order_for``);
        with ``currency``, only those that take it."""
        names = [n for n, p in self.providers.items() if currency is None or p.takes(currency)]
        return REGISTRY.in_order_for(names, user_agent)

    def listen(self, on_authorisation) -> None:
        """``on_authorisation(order_id, ok, reason)``: called when a provider learns of an authorisation's end
        outside the order flow (its worker, the customer's return from the platform's page)."""
        for provider in self._all.values():
            if hasattr(provider, "on_authorisation"):
                provider.on_authorisation = on_authorisation

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

    def charge(self, conn, order, key, now) -> Outcome:
        return self.of(order).charge(conn, order, key, now)

    def refund(self, conn, order, amount, key, now) -> Outcome:
        return self.of(order).refund(conn, order, amount, key, now)

    def refunded(self, conn, order) -> tuple[int, int]:
        return self.of(order).refunded(conn, order)

    def story(self, conn, order) -> list:
        return self.of(order).story(conn, order)

    def settle(self, conn, items, now) -> None:
        groups: dict[str, list] = {}
        for order, action in items:
            groups.setdefault(order.provider, []).append((order, action))
        for group in groups.values():
            self.of(group[0][0]).settle(conn, group, now)

    # The wallet's own calls, for the customer's pages.

    def balance(self, conn, customer_id: int, currency: str) -> int:
        return self._wallet.balance(conn, customer_id, currency)

    def history(self, conn, customer_id: int, currency: str, limit: int = 50) -> list:
        return self._wallet.history(conn, customer_id, currency, limit)

    def topup(self, conn, customer_id: int, amount: int, currency: str, key: str, now) -> Outcome:
        return self._wallet.topup(conn, customer_id, amount, currency, key, now)

    def credit(self, conn, customer_id: int, amount: int, currency: str, key: str, now) -> Outcome:
        return self._wallet.credit(conn, customer_id, amount, currency, key, now)

    # The configured providers' workers (those that have one), started and stopped with the cloud.

    def _workers(self):
        return [p for p in self.providers.values() if hasattr(p, "start")]

    def start(self, engine) -> None:
        for provider in self._workers():
            provider.start(engine)

    def kick(self) -> None:
        for provider in self._workers():
            provider.kick()

    def stop(self) -> None:
        for provider in reversed(self._workers()):
            provider.stop()
