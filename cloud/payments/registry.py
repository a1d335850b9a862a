"""The payment providers, registered by name in one place (``REGISTRY``, at the end of this file).

Each provider is a package (or module) of ``cloud/payments/`` that declares itself as a ``ProviderSpec``:
its name (what a customer chooses), its settings, its journal boundary account, its webhook (if it
confirms by signed notification) and what reconciliation needs from it. Everything that used to spell a
provider's name (the customer's payment choices, the journal's boundary accounts, the webhook routes,
reconciliation) asks the registry instead. ``docs/adding-a-payment-provider.md`` walks adding one.
"""

from __future__ import annotations

import importlib
import re

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from cloud.accounts.journal import add_boundary
from cloud.payments.provider import Provider


@dataclass(frozen=True)
class ProviderSpec:
    """What one provider declares to the registry."""

    name: str  # what a customer chooses at registration, and ``orders.provider``
    boundary: str  # the journal account money from this provider comes in through (runs negative)
    # build(settings, counts): the provider as ``settings`` configure it (settings None or not configuring
    # it: an idle one, which still finishes the orders placed while it was configured)
    build: Callable[..., Provider]
    offered: Callable[[object], bool] = lambda settings: True  # may new customers and orders choose it?
    settings: tuple[str, ...] = ()  # its ``Settings`` attributes (``--{name}-...`` options)
    # webhook(settings, headers, body) -> webhook.Event: its signed notification checked and read (raises
    # webhook.WebhookRefused); served at POST /api/v1/payments/webhook/{name}. None: it answers at once.
    webhook: Callable[[object, Mapping[str, str], bytes], object] | None = None
    # reported(conn, lo, hi, order_ids) -> rows (key, order_id, amount, currency): the captures the
    # provider itself confirmed in [lo, hi) or of ``order_ids``; reconciliation holds the journal's
    # captures under the key prefix "{name}:" against them. None: the journal is its only record.
    reported: Callable[[sa.Connection, datetime | None, datetime | None, list[str] | None], list] | None = None
    missing: str = ""  # the setting that turns it on, named when a webhook arrives and it is off
    label: str = ""  # what the registration page offers (an English msgid, translated where shown)
    user_agent: str = ""  # a regex over the phone's User-Agent: where it matches, offered first
    # statement(settings, data) -> [statement.StatementLine]: the platform's statement file read (raises
    # statement.StatementRefused). None: it has none to import.
    statement: Callable[[object, bytes], list] | None = None
    # reply(ok, reason) -> (HTTP status, media type, body): how the platform wants its notification answered
    # (Alipay: "success"; WeChat Pay: {"code": "SUCCESS"}). None: JSON, 200 or the refusal's 4xx.
    reply: Callable[[bool, str], tuple[int, str, str]] | None = None
    router: str = ""  # dotted path of its own pages module (return pages...), holding ``router``


class Registry:
    """Providers by name, in the order they were registered (the first is the default choice)."""

    def __init__(self) -> None:
        self._specs: dict[str, ProviderSpec] = {}

    def add(self, spec: ProviderSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"a payment provider named {spec.name!r} is registered already")
        add_boundary(spec.boundary)
        self._specs[spec.name] = spec

    def __iter__(self) -> Iterator[ProviderSpec]:
        return iter(self._specs.values())

    def __getitem__(self, name: str) -> ProviderSpec:
        return self._specs[name]

    def get(self, name: str) -> ProviderSpec | None:
        return self._specs.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def in_order_for(self, names, user_agent: str) -> tuple[str, ...]:
        """``names`` in the order that fits the phone: those whose ``user_agent`` matches it first (inside
        WeChat, WeChat Pay; inside Alipay, Alipay), the rest as registered."""
        names = tuple(names)
        fits = tuple(n for n in names if (spec := self._specs.get(n)) is not None and spec.user_agent
                     and re.search(spec.user_agent, user_agent or ""))
        return fits + tuple(n for n in names if n not in fits)


# The providers, one line each: the module that holds its ``PROVIDER``. The first is the default choice.
PROVIDERS = (
    "cloud.payments.wallet",
    "cloud.payments.sandbox",
    "cloud.payments.stripe",
    "cloud.payments.alipay",
    "cloud.payments.wechat",
)

REGISTRY = Registry()
for _module in PROVIDERS:
    REGISTRY.add(importlib.import_module(_module).PROVIDER)
