"""WeChat Pay (API v3), a package of its own: the client on the ``wechatpayv3`` library (``client.py``), the
provider (``provider.py``: JSAPI payments through the outbox), the trade bill reader (``bill.py``), the
customer's pages (``pages.py``: the OAuth return and the JSAPI payment page), and ``PROVIDER``, what it
declares to the registry: its settings (``--wechat-*``), its journal boundary account, its notification
check (the platform signature and the API v3 key's AES-256-GCM, through the library), its statement and
the answer WeChat Pay wants to a notification.
"""

from __future__ import annotations

import json
import threading
import time

from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from cloud.core.secrets import read_secret, read_secret_bytes
from cloud.payments import webhook
from cloud.payments.outbox import reported_by
from cloud.payments.registry import ProviderSpec
from cloud.payments.statement import StatementLine, StatementRefused
from cloud.payments.wechat import bill
from cloud.payments.wechat.client import Credentials, NotificationRefused, Unreachable, WeChatClient
from cloud.payments.wechat.provider import BOUNDARY, CURRENCY, NAME, WeChat, order_of

__all__ = ["BOUNDARY", "NAME", "PROVIDER", "WeChat", "client_for", "read_notification", "statement", "verify"]

SETTINGS = ("wechat_mchid", "wechat_appid", "wechat_cert_serial", "wechat_private_key_file",
            "wechat_apiv3_key_file", "wechat_app_secret_file", "wechat_public_key_file", "wechat_public_key_id",
            "wechat_api_url", "wechat_oauth_url", "wechat_token_url", "wechat_timeout_s", "wechat_tolerance_s",
            "wechat_confirm_timeout_s", "wechat_payscore_service_id")
WEBHOOK_PATH = "/api/v1/payments/webhook/wechat"

_clients: dict[tuple, WeChatClient] = {}
_clients_lock = threading.Lock()


def credentials(settings) -> Credentials:
    """The merchant's ids and secrets, each secret read from its file (mode 0600) and checked: a missing,
    unreadable or wrong one stops the cloud with the option and the file named, never its content."""
    key_option, key_file = "--wechat-private-key-file", settings.wechat_private_key_file
    private_key = read_secret_bytes(key_option, key_file)
    try:
        load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError):
        raise SystemExit(f"{key_option} {key_file}: not a PEM private key without a passphrase") from None
    apiv3 = read_secret("--wechat-apiv3-key-file", settings.wechat_apiv3_key_file)
    if len(apiv3.encode()) != 32:
        raise SystemExit(f"--wechat-apiv3-key-file {settings.wechat_apiv3_key_file}: an API v3 key is 32 "
                         "characters")
    public_key = ""
    if settings.wechat_public_key_file:
        raw = read_secret_bytes("--wechat-public-key-file", settings.wechat_public_key_file)
        try:
            load_pem_public_key(raw)
        except ValueError:
            raise SystemExit(f"--wechat-public-key-file {settings.wechat_public_key_file}: not a PEM public "
                             "key") from None
        public_key = raw.decode()
    return Credentials(mchid=settings.wechat_mchid, appid=settings.wechat_appid,
                       cert_serial=settings.wechat_cert_serial.upper(), private_key=private_key.decode(),
                       apiv3_key=apiv3, app_secret=read_secret("--wechat-app-secret-file",
                                                               settings.wechat_app_secret_file),
                       public_key=public_key, public_key_id=settings.wechat_public_key_id if public_key else "")


def client_for(settings) -> WeChatClient:
    """The client for these settings, one per merchant account and process: it keeps the platform
    certificates it fetched, for every request and notification after."""
    ident = tuple(getattr(settings, name) for name in SETTINGS) + (settings.public_url,)
    with _clients_lock:
        found = _clients.get(ident)
        if found is None:
            found = _clients[ident] = WeChatClient(
                credentials(settings), settings.public_url.rstrip("/") + WEBHOOK_PATH,
                gateway=settings.wechat_api_url, oauth_url=settings.wechat_oauth_url,
                token_url=settings.wechat_token_url, timeout_s=settings.wechat_timeout_s,
                tolerance_s=settings.wechat_tolerance_s)
        return found


def offered(settings) -> bool:
    """New customers and orders may pay by WeChat Pay when the merchant number is set."""
    return settings is not None and bool(getattr(settings, "wechat_mchid", ""))


def build(settings=None, counts=None) -> WeChat:
    """WeChat Pay as ``settings`` configure it; without them, one that only queues."""
    if not offered(settings):
        return WeChat(None)
    return WeChat(client_for(settings), settings.public_url, settings.wechat_confirm_timeout_s, counts,
                  settings.wechat_payscore_service_id)


def verify(settings, headers, body: bytes) -> webhook.Event:
    """A WeChat Pay notification, checked (the platform signature, no older than ``--wechat-tolerance``,
    decrypted with the API v3 key, this merchant's) and read; raises ``webhook.WebhookRefused``."""
    return read_notification(client_for(settings), headers, body, time.time())


def read_notification(client: WeChatClient, headers, body: bytes, now: float) -> webhook.Event:
    """A notification checked by ``client`` and read as the webhook route's event."""
    try:
        data = client.notification(headers, body, now)
    except NotificationRefused as e:
        raise webhook.WebhookRefused(e.why, str(e)) from None
    except Unreachable as e:
        raise webhook.WebhookRefused("signature", f"the platform certificates cannot be fetched now ({e})") from None
    r, event_id, kind = data["resource"], str(data["id"]), str(data.get("event_type", ""))
    if not webhook.EVENT_ID_RE.match(event_id):
        raise webhook.WebhookRefused("malformed", "the notification id must be 1 to 64 letters, digits, - or _")
    if r.get("mchid") != client.creds.mchid or ("appid" in r and r.get("appid") != client.creds.appid):
        raise webhook.WebhookRefused("malformed", f"the notification is merchant {r.get('mchid')}'s, not ours")
    order_id = order_of(str(r.get("out_trade_no") or r.get("out_order_no") or ""), str(r.get("attach") or ""))
    if order_id is None:
        raise webhook.WebhookRefused("malformed", "the notification names no order of this cloud")
    amount = r.get("amount") or {}
    if kind == "TRANSACTION.SUCCESS":
        total, currency = amount.get("total"), amount.get("currency")
        if r.get("trade_state") != "SUCCESS" or not isinstance(total, int) or not isinstance(currency, str):
            raise webhook.WebhookRefused("malformed", "a TRANSACTION.SUCCESS names a trade_state SUCCESS, an "
                                                      "amount and a currency")
        return webhook.Event(event_id, "authorisation.succeeded", order_id, total, currency, "",
                             {"platform_ref": str(r.get("transaction_id", ""))})
    if kind == "PAYSCORE.USER_CONFIRM":  # the customer confirmed a Pay Score order: nothing taken yet
        amount = (r.get("risk_fund") or {}).get("amount")
        if r.get("state") != "DOING" or not isinstance(amount, int):
            raise webhook.WebhookRefused("malformed", "a PAYSCORE.USER_CONFIRM names state DOING and a risk fund")
        return webhook.Event(event_id, "authorisation.succeeded", order_id, amount, CURRENCY, "",
                             {"platform_ref": str(r.get("order_id", ""))})
    if kind == "PAYSCORE.USER_PAID":  # WeChat Pay took a completed order's amount: the capture
        collection = r.get("collection") or {}
        details = collection.get("details") or [{}]
        if collection.get("state") != "USER_PAID" or not isinstance(collection.get("paid_amount"), int):
            raise webhook.WebhookRefused("malformed", "a PAYSCORE.USER_PAID names a collection USER_PAID")
        return webhook.Event(event_id, "op.succeeded", order_id, collection["paid_amount"], "", "",
                             {"op": "capture", "platform_ref": str(details[-1].get("transaction_id", ""))})
    if kind in ("REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED"):
        op = str(r.get("out_refund_no", "")).partition("-")[0]
        if op not in ("void", "refund") or not isinstance(amount.get("refund"), int):
            raise webhook.WebhookRefused("malformed", "the refund notification names no refund of ours")
        return webhook.Event(event_id, "op.succeeded" if kind == "REFUND.SUCCESS" else "op.failed", order_id,
                             amount["refund"], "", "" if kind == "REFUND.SUCCESS" else f"WeChat Pay: {kind}",
                             {"op": op, "platform_ref": str(r.get("refund_id", ""))})
    raise webhook.WebhookRefused("malformed", f"unknown event type {kind!r}")


def reply(ok: bool, reason: str) -> tuple[int, str, str]:
    """WeChat Pay's answer: 200 with no body when recorded; otherwise its {"code": "FAIL"} (and the route's
    own 4xx/5xx status, so WeChat Pay sends it again later)."""
    if ok:
        return 200, "application/json", ""
    return 0, "application/json", '{"code": "FAIL", "message": %s}' % json.dumps(reason[:200])


def statement(settings, data: bytes) -> list[StatementLine]:
    """The trade bill as statement lines. A full refund for a product that never dropped (out_refund_no
    "void-...") is no sale and no refund in the journal: it and its payment are "other"."""
    try:
        rows = bill.parse(data, settings.wechat_mchid)
    except bill.BillRefused as e:
        raise StatementRefused(str(e)) from None
    voided = {r.out_trade_no: r.fee for r in rows if r.kind == "refund" and r.out_refund_no.startswith("void-")}
    lines = []
    for r in rows:
        order_id = order_of(r.out_trade_no, r.attach)
        kind, fee = r.kind, max(r.fee, 0)
        if r.out_trade_no in voided:
            kind = "other"
            if r.kind == "capture":
                fee = max(r.fee + voided[r.out_trade_no], 0)  # what WeChat Pay kept net of the fee it gave back
        lines.append(StatementLine(r.platform_id, kind, order_id, r.amount, r.currency, r.at, fee))
    return lines


PROVIDER = ProviderSpec(name=NAME, boundary=BOUNDARY, build=build, offered=offered, settings=SETTINGS,
                        webhook=verify, reported=reported_by(NAME), missing="--wechat-mchid", label="WeChat Pay",
                        user_agent="MicroMessenger", statement=statement, reply=reply,
                        router="cloud.payments.wechat.pages")
