"""WeChat Pay as the cloud sees it: an outbox provider (``cloud/payments/outbox.py``) on JSAPI payments.

The customer's mandate is their openid (from WeChat's OAuth at registration). A purchase is a JSAPI
order placed before the vend (``/v3/pay/transactions/jsapi``, its prepay_id kept in the authorisation's
``detail``); the customer confirms it on this provider's own page (``pages.py``: ``WeixinJSBridge``'s
``getBrandWCPayRequest`` with the parameters signed by the merchant key), and WeChat Pay's signed
notification (or the query the page makes when the customer comes back) confirms the authorisation. The
money has then moved: "capture" on the drop asks nothing of WeChat Pay, and "void" on a jam is a full
refund (``/v3/refund/domestic/refunds``), or the order closed if it was never paid. A manager's refund is
a refund of part or all. Each request is named by the cloud's own numbers, which WeChat Pay keeps unique:
``out_trade_no`` from the order id, ``out_refund_no`` from the outbox key, so a request sent again after a
lost answer is the same request; and before sending again the worker asks (``query``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import timedelta, timezone

import sqlalchemy as sa

from cloud.payments import mandates
from cloud.payments.outbox import Outbox, Sent, Unreachable
from cloud.payments.wechat import client as wx
from cloud.payments.wechat import payscore

log = logging.getLogger(__name__)

NAME = "wechat"
BOUNDARY = "wechat"  # the journal account of what WeChat Pay holds for us
CURRENCY = "CNY"  # a domestic merchant's JSAPI orders are in yuan (fen)
PREFIX = "vend"
OUT_TRADE_NO_RE = re.compile(r"[A-Za-z0-9_\-|*]{6,32}\Z")
OUT_REFUND_NO_RE = re.compile(r"[A-Za-z0-9_\-|*@]{1,64}\Z")
BEIJING = timezone(timedelta(hours=8))


def out_trade_no(order_id: str) -> str:
    """The merchant's number of the order's payment: "vend" and the order id (6 to 32 characters), or
    "vendh" and a hash of an id that does not fit (the order id then travels in ``attach``)."""
    number = PREFIX + order_id
    if OUT_TRADE_NO_RE.match(number):
        return number
    return PREFIX + "h" + hashlib.sha256(order_id.encode()).hexdigest()[:27]


def order_of(number: str, attach: str = "") -> str | None:
    """The order id a trade of ours names (its ``attach``, else its out_trade_no); None for another's."""
    if attach and 1 <= len(attach) <= 64:
        return attach
    if number.startswith(PREFIX) and not number.startswith(PREFIX + "h"):
        return number[len(PREFIX):]
    return None


def out_refund_no(key: str) -> str:
    """The merchant's number of a refund, from its outbox key ("void:o12", "refund:abc"): "void-o12" or, if
    that does not fit, the op and a hash. Its first word says which op it is."""
    op, _, rest = key.partition(":")
    number = f"{op}-{rest}"
    if OUT_REFUND_NO_RE.match(number):
        return number
    return f"{op}-" + hashlib.sha256(key.encode()).hexdigest()[:48]


def refund_number(op) -> str:
    """The out_refund_no of a void or refund row. Every void of an order (its own, and one for a payment that
    came after the order gave up) is the one full refund "void-{order}": asked twice, it is made once."""
    return out_refund_no(f"void:{op.order_id}" if op.op == "void" else op.key)


def refund_sent(answer: dict, reason: str) -> Sent:
    """A refund's status as WeChat Pay gave it, as the outbox records answers."""
    status, ref = answer.get("status"), str(answer.get("refund_id", ""))
    if status == "SUCCESS":
        return Sent("succeeded", reason, ref, {"refund_id": ref})
    if status == "PROCESSING":
        return Sent("pending", reason, ref, {"refund_id": ref})
    return Sent("failed", f"WeChat Pay: the refund is {status}", ref)


class WeChat(Outbox):
    """WeChat Pay by JSAPI: paid before the vend, refunded in full if nothing drops."""

    currencies = (CURRENCY,)  # it takes yuan only
    name = NAME
    boundary = BOUNDARY
    needs_mandate = True
    can_charge = False  # a JSAPI payment needs the customer at the phone; a late drop is for a person

    def __init__(self, client: wx.WeChatClient | None, public_url: str = "", confirm_timeout_s: float = 180.0,
                 counts=None, payscore_service_id: str = ""):
        """``payscore_service_id``: the merchant's WeChat Pay Score service; new purchases are then service
        orders, paid after the drop (``payscore.py``), in place of JSAPI payments before it."""
        super().__init__(live=client is not None, confirm_timeout_s=confirm_timeout_s, counts=counts)
        self.client = client
        self.public_url = public_url.rstrip("/")
        self.service_id = payscore_service_id

    # -- registration: the openid through OAuth ---------------------------------------------------------

    def enrol(self, conn, customer_id: int, return_url: str, now) -> str | None:
        """Record a pending mandate (with a one-time ``state`` and where to go after) and send the phone on to
        WeChat's OAuth page (``snsapi_base``: silent inside WeChat), which comes back to ``/pay/wechat/oauth``.

        The phone goes there through this provider's own page (``/pay/wechat/enrol``), not by a redirect
        from the registration form: the pages' content policy (``form-action 'self'``) makes the browser
        refuse a form whose answer redirects to another site."""
        if self.client is None:
            return None
        mandates.start(conn, customer_id, NAME, now, {"state": wx.nonce(24), "next": return_url})
        return f"{self.public_url}/pay/wechat/enrol"

    def oauth_url(self, mandate) -> str:
        """WeChat's OAuth page for a pending mandate, carrying its one-time state."""
        return self.client.authorize_url(f"{self.public_url}/pay/wechat/oauth", str(mandate.detail.get("state", "")))

    # -- the outbox's hooks -----------------------------------------------------------------------------

    def prepare(self, conn, op: str, order, now) -> dict:
        if op == "authorise":
            mandate = mandates.require(conn, order.customer_id, NAME)
            expire = (now + timedelta(seconds=self.confirm_timeout_s)).astimezone(BEIJING)
            machine, slot = getattr(order, "machine_id", ""), getattr(order, "slot", "")
            # The way it is paid is fixed when the order is placed: a merchant who turns Pay Score on or off
            # meanwhile does not change how an open order is completed or cancelled.
            return {"openid": mandate.reference, "expire": expire.isoformat(timespec="seconds"),
                    "description": f"Vending {machine} {slot}".strip(),
                    "mode": payscore.MODE if self.service_id else "jsapi", "service_id": self.service_id}
        auth = self.authorisation(conn, order.id)
        first = json.loads(auth.detail or "{}") if auth is not None else {}
        return {"total": order.amount, "mode": first.get("mode", "jsapi"), "service_id": first.get("service_id", ""),
                "description": first.get("description", "Vending")}

    def send(self, op) -> Sent:
        if self.client is None:
            raise Unreachable("WeChat Pay is not configured")
        detail = json.loads(op.detail or "{}")
        try:
            if detail.get("mode") == payscore.MODE:
                return self._send_payscore(op, detail)
            if op.op == "authorise":
                return self._place(op, detail)
            if op.op == "capture":
                # A JSAPI payment moved the money when the customer paid: the drop asks nothing of WeChat Pay.
                return Sent("succeeded", "paid before the vend", detail.get("authorisation", ""))
            if op.op == "void":
                return self._void(op, detail)
            if op.op == "refund":
                return refund_sent(self.client.refund(refund_number(op), out_trade_no(op.order_id), op.amount,
                                                      int(detail["total"]), "refund"), "")
        except wx.Unreachable as e:
            raise Unreachable(str(e)) from None
        except wx.Refused as e:
            return Sent("failed", f"WeChat Pay refused it: {e}")
        return Sent("failed", f"WeChat Pay has no {op.op}")

    def _send_payscore(self, op, detail: dict) -> Sent:
        number, service = out_trade_no(op.order_id), detail["service_id"]
        if op.op == "authorise":
            if op.currency != CURRENCY:
                return Sent("declined", f"WeChat Pay Score takes {CURRENCY} here, not {op.currency}")
            return payscore.open_order(self.client, service, op, detail, number, self._action_url(op))
        if op.op == "capture":
            return payscore.complete(self.client, service, op, detail, number)
        if op.op == "void":
            return payscore.cancel(self.client, service, number)
        if op.op == "refund":  # a Pay Score payment is named by its transaction_id
            return refund_sent(self.client.refund(refund_number(op), number, op.amount, int(detail["total"]),
                                                  "refund", transaction_id=detail.get("payment", "")), "")
        return Sent("failed", f"WeChat Pay Score has no {op.op}")

    def _action_url(self, op) -> str:
        return f"{self.public_url}/pay/wechat/{op.order_id}"

    def _place(self, op, detail: dict) -> Sent:
        if op.currency != CURRENCY:
            return Sent("declined", f"WeChat Pay takes {CURRENCY} here, not {op.currency}")
        try:
            prepay_id = self.client.jsapi(out_trade_no(op.order_id), detail["description"], op.amount,
                                          detail["openid"], attach=op.order_id, time_expire=detail.get("expire"))
        except wx.Refused as e:
            if e.code in ("ORDERPAID", "ORDER_CLOSED"):  # decided already (another process sent it first)
                found = self._trade_state(op)
                if found is not None:
                    return found
            raise
        return Sent("pending", "", prepay_id, {"prepay_id": prepay_id, "action_url": self._action_url(op)})

    def _trade_state(self, op) -> Sent | None:
        """The payment's state at WeChat Pay, as an answer to its authorisation; None: not decided."""
        detail = json.loads(op.detail or "{}")
        if detail.get("mode") == payscore.MODE:
            return payscore.authorisation(self.client, detail["service_id"], out_trade_no(op.order_id),
                                          self._action_url(op))
        trade = self.client.query(out_trade_no(op.order_id))
        if trade is None:
            return None
        state, amount = trade.get("trade_state"), trade.get("amount") or {}
        if state in ("SUCCESS", "REFUND"):
            if (amount.get("total"), amount.get("currency", CURRENCY)) != (op.amount, op.currency):
                return Sent("failed", f"WeChat Pay holds {amount.get('total')} {amount.get('currency')} for it, "
                                      f"not {op.amount} {op.currency}")
            return Sent("succeeded", "", str(trade.get("transaction_id", "")))
        if state in ("CLOSED", "REVOKED", "PAYERROR"):
            return Sent("declined", f"WeChat Pay: the payment is {state}")
        return None  # NOTPAY, USERPAYING: the customer has not paid (yet)

    def _void(self, op, detail: dict) -> Sent:
        """Nothing dropped: an unpaid order is closed (it can then never be paid); a paid one refunded in full."""
        number = out_trade_no(op.order_id)
        trade = self.client.query(number)
        if trade is None:
            return Sent("succeeded", "no payment was placed")
        state = trade.get("trade_state")
        if state in ("NOTPAY", "USERPAYING"):
            try:
                self.client.close(number)
                return Sent("succeeded", "closed unpaid")
            except wx.Refused as e:
                if e.code != "ORDERPAID":
                    raise
                state = "SUCCESS"  # paid in the moment between: refund it
        if state not in ("SUCCESS", "REFUND"):
            return Sent("succeeded", f"nothing was paid ({state})")
        answer = self.client.refund(refund_number(op), number, op.amount, int(detail.get("total", op.amount)),
                                    "not dropped")
        return refund_sent(answer, "refunded in full: not dropped")

    def query(self, op) -> Sent | None:
        if self.client is None:
            raise Unreachable("WeChat Pay is not configured")
        try:
            if op.op == "authorise":
                return self._trade_state(op)  # None while unpaid: sent again, it gives the same prepay_id
            detail = json.loads(op.detail or "{}")
            if detail.get("mode") == payscore.MODE and op.op in ("capture", "void"):
                number = out_trade_no(op.order_id)
                return (payscore.capture(self.client, detail["service_id"], number) if op.op == "capture"
                        else None)  # a void is sent again: it asks first, and a cancel is the same cancel
            if op.op in ("void", "refund"):
                found = self.client.query_refund(refund_number(op))
                return None if found is None else refund_sent(found, "")
        except wx.Unreachable as e:
            raise Unreachable(str(e)) from None
        except wx.Refused as e:
            return Sent("failed", f"WeChat Pay refused the query: {e}")
        return None

    # -- the platform's later word ------------------------------------------------------------------------

    def confirm(self, conn, event, now) -> bool:
        """A verified TRANSACTION.SUCCESS: the authorisation succeeded, named by WeChat Pay's transaction_id."""
        sent = Sent("succeeded" if event.succeeded else "declined", event.reason,
                    str((event.data or {}).get("platform_ref", "")))
        return self.record(conn, event.order_id, "authorise", sent, now, event.amount, event.currency)

    def check_paid(self, engine: sa.Engine, order_id: str, now) -> str | None:
        """The customer came back from paying: ask WeChat Pay (the page's word is not proof) and record what
        it says; the authorisation's status, or None if there is none."""
        with engine.connect() as conn:
            auth = self.authorisation(conn, order_id)
        if auth is None:
            return None
        if auth.status not in ("queued", "pending") or self.client is None:
            return auth.status
        try:
            sent = self._trade_state(auth)
        except (wx.Unreachable, wx.Refused) as e:
            log.warning("wechat: could not ask about order %s's payment: %s", order_id, e)
            return auth.status
        if sent is None or sent.status == "pending":  # not decided yet: the notification will say
            return auth.status
        with engine.begin() as conn:
            recorded = self.record(conn, order_id, "authorise", sent, now, auth.amount, auth.currency)
        if recorded:
            self.tell(order_id, sent.status == "succeeded", sent.reason)
        return sent.status

    def owns(self, conn, order_id: str, customer_id: int) -> bool:
        """Is ``order_id`` this customer's WeChat Pay order?"""
        auth = self.authorisation(conn, order_id)
        return auth is not None and auth.customer_id == customer_id

    def payment_page(self, conn, order_id: str, customer_id: int) -> dict | None:
        """What the JSAPI page shows: the authorisation's amount and state and, while it waits, the signed
        ``getBrandWCPayRequest`` parameters; None if the order is not this customer's WeChat Pay order."""
        auth = self.authorisation(conn, order_id)
        if auth is None or auth.customer_id != customer_id:
            return None
        detail = json.loads(auth.detail or "{}")
        waiting = auth.status == "pending" and self.client is not None
        if detail.get("mode") == payscore.MODE:
            package = detail.get("package")
            params = self.client.business_view_params(package) if package and waiting else None
        else:
            prepay_id = detail.get("prepay_id")
            params = self.client.pay_params(prepay_id) if prepay_id and waiting else None
        return {"order_id": order_id, "amount": auth.amount, "currency": auth.currency, "status": auth.status,
                "params": params, "mode": detail.get("mode", "jsapi")}

