"""The Alipay payment provider, a package of its own: the client on Alipay's library (``client.py``), the
provider on the outbox (``provider.py``), the trade bill reader (``bill.py``), the agreement's return page
(``pages.py``), and ``PROVIDER``, what it declares to the registry.

The package is ``cloud.payments.alipay``; the library is the top-level ``alipay``. Every import here is
absolute, so ``import alipay`` anywhere gets the library (tests/cloud/payments/test_alipay_client.py checks).
"""

from __future__ import annotations

import logging
import urllib.parse

from cloud.core.secrets import read_secret_bytes
from cloud.payments import webhook
from cloud.payments.alipay.bill import read_bill
from cloud.payments.alipay.client import AlipayClient, NotificationRefused, fen
from cloud.payments.alipay.provider import BOUNDARY, CURRENCY, NAME, Alipay, event_of
from cloud.payments.outbox import reported_by
from cloud.payments.registry import ProviderSpec

__all__ = ["Alipay", "AlipayClient", "BOUNDARY", "NAME", "PROVIDER", "client_of", "verify"]

log = logging.getLogger(__name__)

SETTINGS = ("alipay_app_id", "alipay_private_key_file", "alipay_public_key_file", "alipay_gateway", "alipay_pid",
            "alipay_timeout_s", "alipay_subject")
WEBHOOK_PATH = f"/api/v1/payments/webhook/{NAME}"
_clients: dict[tuple, AlipayClient] = {}


def client_of(settings) -> AlipayClient:
    """The client ``settings`` configure, its keys read from their 0600 files (once per set of settings); a
    missing, unreadable or wrong key stops the cloud with an error naming the option and the file."""
    ident = (settings.alipay_app_id, settings.alipay_private_key_file, settings.alipay_public_key_file,
             settings.alipay_gateway, settings.alipay_timeout_s, settings.public_url)
    if ident not in _clients:
        private = read_secret_bytes("--alipay-private-key-file", settings.alipay_private_key_file)
        public = read_secret_bytes("--alipay-public-key-file", settings.alipay_public_key_file)
        try:
            _clients[ident] = AlipayClient(
                settings.alipay_app_id, private, public, settings.alipay_gateway, settings.alipay_timeout_s,
                notify_url=settings.public_url.rstrip("/") + WEBHOOK_PATH)
        except ValueError as e:
            raise SystemExit(f"--alipay-private-key-file {settings.alipay_private_key_file} / "
                             f"--alipay-public-key-file {settings.alipay_public_key_file}: {e}") from None
    return _clients[ident]


def build(settings=None, counts=None) -> Alipay:
    """Alipay as ``settings`` configure it; without an ``--alipay-app-id``, one that only queues."""
    if not offered(settings):
        return Alipay(None)
    return Alipay(client_of(settings), settings.alipay_subject, counts)


def offered(settings) -> bool:
    return settings is not None and bool(getattr(settings, "alipay_app_id", ""))


def verify(settings, headers, body: bytes) -> webhook.Event:
    """Alipay's asynchronous notification (a form-encoded POST), its RSA2 signature checked with Alipay's public
    key, naming our app (and our merchant, where it says); raises ``webhook.WebhookRefused``."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as e:
        raise webhook.WebhookRefused("malformed", f"not a form-encoded notification: {e}") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise webhook.WebhookRefused("malformed", "a parameter given twice")
    try:
        fields = client_of(settings).verified(fields)
    except NotificationRefused as e:
        raise webhook.WebhookRefused("signature", f"{e.why}: {e}") from None
    if not webhook.EVENT_ID_RE.match(fields.get("notify_id", "")):
        raise webhook.WebhookRefused("malformed", "notify_id must be 1 to 64 letters, digits, - or _")
    if settings.alipay_pid and fields.get("seller_id", settings.alipay_pid) != settings.alipay_pid:
        raise webhook.WebhookRefused("signature", f"seller_id {fields['seller_id']} is another merchant's")
    if fields.get("trans_currency", CURRENCY) != CURRENCY:
        raise webhook.WebhookRefused("malformed", f"trans_currency {fields['trans_currency']}: only {CURRENCY} is taken")
    try:
        if "total_amount" in fields:
            fen(fields["total_amount"])
        return event_of(fields)
    except ValueError as e:
        raise webhook.WebhookRefused("malformed", str(e)) from None


def reply(ok: bool, reason: str) -> tuple[int, str, str]:
    """Alipay stops sending a notification once the answer's body is ``success``; anything else, it sends again.
    A refusal keeps the route's own status (401 a bad signature, 400 a malformed body): hence 0 here."""
    return (200, "text/plain", "success") if ok else (0, "text/plain", "fail")


def statement(settings, data: bytes) -> list:
    return read_bill(data, settings.alipay_pid if settings is not None else "")


PROVIDER = ProviderSpec(name=NAME, boundary=BOUNDARY, build=build, offered=offered, settings=SETTINGS,
                        webhook=verify, reported=reported_by(NAME), missing="--alipay-app-id", label="Alipay",
                        user_agent="AlipayClient", statement=statement, reply=reply,
                        router="cloud.payments.alipay.pages")
