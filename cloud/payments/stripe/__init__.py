"""Cards, Apple Pay and Google Pay through Stripe: the provider (``provider.py``), Stripe's calls through
its own library (``platform.py``), its signed webhooks (``notices.py``), its statement (``report.py``),
the customer's return pages (``pages.py``), and ``PROVIDER``, what it declares to the registry.

The package is ``cloud.payments.stripe``; Stripe's library is ``stripe``. Python 3's imports are
absolute, so ``import stripe`` anywhere (here included) is the library; this package is only ever named
in full.
"""

from __future__ import annotations

import functools
import math
import os
import re
from urllib.parse import urlsplit

from cloud.core.secrets import read_secret
from cloud.payments import webhook
from cloud.payments.registry import ProviderSpec
from cloud.payments.outbox import reported_by
from cloud.payments.stripe import notices, report
from cloud.payments.stripe.platform import Mandate, StripePlatform
from cloud.payments.stripe.provider import BOUNDARY, NAME, Card

__all__ = ["BOUNDARY", "NAME", "PROVIDER", "Card", "Mandate", "StripePlatform", "build", "verify"]

SETTINGS = ("stripe_key_file", "stripe_webhook_secret_file", "stripe_api_url", "stripe_currency", "stripe_timeout_s",
            "stripe_tolerance_s", "stripe_confirm_timeout_s")
KEY_RE = re.compile(r"(sk|rk)_(live|test)_[A-Za-z0-9_]{8,}\Z")


def check(settings) -> None:
    """The Stripe settings, refused with the option that is wrong and why (SystemExit, at start)."""
    for option, value, low, high in (("--stripe-timeout", settings.stripe_timeout_s, 0.1, 60),
                                     ("--stripe-tolerance", settings.stripe_tolerance_s, 1, 3600),
                                     ("--stripe-confirm-timeout", settings.stripe_confirm_timeout_s, 10, 3600)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
            raise SystemExit(f"{option} {value!r}: must be from {low:g} to {high:g}")
    if not re.fullmatch(r"[A-Z]{3}", settings.stripe_currency or ""):
        raise SystemExit(f"--stripe-currency {settings.stripe_currency!r}: three capital letters, e.g. CNY")
    if settings.stripe_api_url:
        parts = urlsplit(settings.stripe_api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SystemExit(f"--stripe-api-url {settings.stripe_api_url!r}: use http(s)://HOST[:PORT]")
    if not settings.stripe_webhook_secret_file:
        raise SystemExit("--stripe-key-file is set, so --stripe-webhook-secret-file is needed: the webhook "
                         "endpoint's signing secret (whsec_...), in a file of mode 0600")


@functools.lru_cache(maxsize=8)
def _secret(option: str, path: str, changed: int) -> str:
    return read_secret(option, path)


def webhook_secret(settings) -> str:
    """The webhook signing secret, read through ``read_secret`` (again when the file changes)."""
    path = settings.stripe_webhook_secret_file
    try:
        changed = os.stat(path).st_mtime_ns
    except OSError:
        changed = 0
    return _secret("--stripe-webhook-secret-file", path, changed)


def build(settings=None, counts=None) -> Card:
    """Paying by card as ``settings`` configure it: the secret key and the webhook secret read from their
    files (a missing, unreadable or too open file stops the cloud, naming it); without a
    ``--stripe-key-file``, an idle provider that only queues."""
    if settings is None or not settings.stripe_key_file:
        return Card(None)
    check(settings)
    key = read_secret("--stripe-key-file", settings.stripe_key_file)
    if not KEY_RE.match(key):
        raise SystemExit(f"--stripe-key-file {settings.stripe_key_file}: not a Stripe secret key (sk_live_..., "
                         "sk_test_... or a restricted rk_...)")
    secret = webhook_secret(settings)
    if not secret.startswith("whsec_"):
        raise SystemExit(f"--stripe-webhook-secret-file {settings.stripe_webhook_secret_file}: not a webhook signing "
                         "secret (whsec_...)")
    platform = StripePlatform(key, settings.stripe_api_url, settings.stripe_timeout_s)
    return Card(platform, settings.public_url, settings.stripe_currency, settings.stripe_confirm_timeout_s, counts,
                secret, settings.stripe_tolerance_s)


def offered(settings) -> bool:
    """New customers and orders may pay by card when a ``--stripe-key-file`` is set."""
    return settings is not None and bool(settings.stripe_key_file)


def verify(settings, headers, body: bytes) -> webhook.Event:
    """A Stripe webhook, its ``Stripe-Signature`` checked by Stripe's library under the endpoint's secret
    and ``--stripe-tolerance``, read into the event the webhook route acts on: a hold made or refused
    (an order's authorisation), a card saved (``mandate.activated``) or removed (``mandate.revoked``)."""
    try:
        secret = webhook_secret(settings)
    except SystemExit as e:  # the file went away after start: refuse (Stripe sends it again later), never crash
        raise webhook.WebhookRefused("signature", f"cannot check the signature: {e}") from None
    try:
        n = notices.verify(secret, headers.get(notices.SIGNATURE_HEADER), body, settings.stripe_tolerance_s)
    except notices.NoticeRefused as e:
        raise webhook.WebhookRefused(e.why, str(e)) from None
    return event_of(n)


def event_of(n: notices.Notice) -> webhook.Event:
    """A Stripe event as the webhook route's ``Event``."""
    if n.type in ("payment_intent.amount_capturable_updated", "payment_intent.payment_failed") and n.order_id \
            and n.op_key.startswith("authorise:"):
        # A hold on a purchase. (An off-session charge is answered at once; its events change nothing.)
        kind = "authorisation.succeeded" if n.succeeded else "authorisation.declined"
        return webhook.Event(n.id, kind, n.order_id, n.amount, n.currency, n.reason or ("" if n.succeeded else
                                                                                          "declined by the bank"))
    if n.type == "setup_intent.succeeded" and n.customer_id.isdigit() and n.customer and n.payment_method:
        m = Mandate(n.customer, n.payment_method)
        # No "detail": the mandate keeps what enrol recorded (the Stripe customer, where to go back to).
        return webhook.Event(n.id, "mandate.activated", "", 0, "", "", {
            "customer_id": int(n.customer_id), "reference": m.reference})
    if n.type == "payment_method.detached" and n.customer and n.payment_method:
        return webhook.Event(n.id, "mandate.revoked", "", 0, "", "", {
            "reference": Mandate(n.customer, n.payment_method).reference})
    return webhook.Event(n.id, n.type, "", 0, "", "")


def statement(settings, data: bytes) -> list:
    """Stripe's itemized balance change report (CSV) read into statement lines."""
    return report.parse(data)


PROVIDER = ProviderSpec(name=NAME, boundary=BOUNDARY, build=build, offered=offered, settings=SETTINGS,
                        webhook=verify, reported=reported_by(NAME), missing="--stripe-key-file",
                        label="Card, Apple Pay or Google Pay", statement=statement,
                        router="cloud.payments.stripe.pages")
