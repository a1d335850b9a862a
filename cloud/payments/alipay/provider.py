"""Alipay as the cloud's provider: a withholding agreement as the customer's mandate, and the outbox
(``cloud/payments/outbox.py``) sending each step to Alipay.

Alipay has no hold on an agreement payment (``alipay.trade.pay`` under ``agreement_params`` takes the money
at once), so "no drop, no charge" holds by not asking for money before the drop:

- authorise: ``alipay.user.agreement.query``: is the customer's agreement still valid? Nothing is held; a
  withdrawn agreement declines the order and revokes the mandate (next time the customer is asked to choose
  again);
- capture (the drop seen): ``alipay.trade.pay``, ``product_code`` GENERAL_WITHHOLDING, under an
  ``out_trade_no`` made from the op's key, so a retry is the same trade at Alipay (which refuses a second
  payment of one ``out_trade_no``); before a retry, ``alipay.trade.query`` asks whether the first went through;
- void (no drop): nothing was taken and nothing is held: the void is recorded, no request is made;
- refund: ``alipay.trade.refund`` with an ``out_request_no`` made from the refund's key (Alipay answers the
  same request number once), queried with ``alipay.trade.fastpay.refund.query`` before a retry;
- charge (a product that dropped after its order was closed): a fresh trade under the agreement, which
  lets the merchant charge without the customer at hand.

The customer's risk this leaves: the agreement can be valid at "Buy" and withdrawn (or the balance gone)
by the drop; the product is then out and the capture declined. That order is listed for a person
(reconciliation's ``sold_not_captured``), never retried silently as a success. ``docs/payments.md`` says why
this and not a fund authorisation (which this provider does not build).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import Counter
from datetime import datetime
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa

from cloud.payments import mandates
from cloud.payments.alipay.client import (AlipayClient, Answer, Refused, Unreachable as Silent, describe, fen,
                                          order_of, out_trade_no, request_no)
from cloud.payments.outbox import Outbox, Sent, Unreachable, payment_ops
from cloud.payments.provider import Payable
from cloud.payments.webhook import Event

log = logging.getLogger(__name__)

NAME = "alipay"
BOUNDARY = "alipay"
CURRENCY = "CNY"
RETURN_PATH = "/pay/alipay/agreement/return"
SIGN_PATH = "/pay/alipay/agreement/sign"
# Alipay's sub_codes that mean "try again later": its own trouble, not the customer's answer.
BUSY = ("ACQ.SYSTEM_ERROR", "SYSTEM_ERROR", "aop.ACQ.SYSTEM_ERROR", "isp.unknow-error", "ACQ.TRADE_HAS_CLOSE_RETRY")
# The agreement is gone: the customer is asked to choose again.
GONE = ("ACQ.AGREEMENT_NOT_EXIST", "ACQ.AGREEMENT_INVALID", "ACQ.AGREEMENT_STATUS_NOT_NORMAL",
        "ACQ.AGREEMENT_ERROR_PARAM", "NOT_EXIST", "UNSIGN", "STOP")


def external_agreement_no(customer_id: int) -> str:
    """Our number for a customer's agreement: it names the customer, and a fresh part per signing."""
    return f"vend{customer_id}x{secrets.token_hex(8)}"


def customer_of(external_no: str) -> int | None:
    head, sep, _ = external_no.removeprefix("vend").partition("x")
    return int(head) if external_no.startswith("vend") and sep and head.isdigit() else None


class Alipay(Outbox):
    """Paying by Alipay under the customer's withholding agreement."""

    currencies = (CURRENCY,)  # it takes yuan only
    name = NAME
    boundary = BOUNDARY
    needs_mandate = True
    can_charge = True  # the agreement lets the merchant charge without the customer at hand

    def __init__(self, client: AlipayClient | None, subject: str = "Vending machine", counts: Counter | None = None):
        super().__init__(live=client is not None, counts=counts)
        self.client = client
        self.subject = subject

    # -- registration --------------------------------------------------------------------------------

    def enrol(self, conn: sa.Connection, customer_id: int, return_url: str, now: datetime) -> str | None:
        """Record a pending agreement and send the customer on to sign it: to our own page (``pages.py``), which
        sends the phone to Alipay's. Not to Alipay's straight away: registration is a form, and a form's
        redirect to another site is blocked by the pages' content policy (``form-action 'self'``)."""
        if self.client is None:
            return None
        mandates.start(conn, customer_id, self.name, now, {"external_agreement_no": external_agreement_no(customer_id)})
        parts = urlsplit(return_url)
        next_path = parts.path + (f"?{parts.query}" if parts.query else "")
        return f"{parts.scheme}://{parts.netloc}{SIGN_PATH}?" + urlencode({"next": next_path or "/"})

    def agreement_page(self, conn: sa.Connection, customer_id: int, base_url: str, next_path: str) -> str | None:
        """The URL of Alipay's page where the customer signs the agreement they were sent to sign (Alipay sends
        them back to our return page, then on to ``next_path``); None when no signing waits."""
        mandate = mandates.get(conn, customer_id, self.name)
        if self.client is None or mandate is None or mandate.status != "pending" \
                or not mandate.detail.get("external_agreement_no"):
            return None
        back = base_url.rstrip("/") + RETURN_PATH + "?" + urlencode({"next": next_path})
        return self.client.agreement_page(mandate.detail["external_agreement_no"], back)

    def signed(self, conn: sa.Connection, fields: dict[str, str], now: datetime) -> int | None:
        """A verified word that an agreement was signed (its notification, or the return page's parameters):
        activate the mandate of the customer it was made for; that customer's id, or None when it names no
        agreement we are waiting for (then nothing changes)."""
        ours, agreement_no = fields.get("external_agreement_no", ""), fields.get("agreement_no", "")
        customer_id = customer_of(ours)
        if customer_id is None or not agreement_no or fields.get("status", "NORMAL") != "NORMAL":
            return None
        mandate = mandates.get(conn, customer_id, self.name)
        if mandate is None or mandate.detail.get("external_agreement_no") != ours:
            return None  # not the signing we sent this customer to (an old one, or someone else's)
        if mandate.status == "active" and mandate.reference == agreement_no:
            return customer_id
        detail = {"external_agreement_no": ours, "alipay_user_id": fields.get("alipay_user_id", ""),
                  "sign_time": fields.get("sign_time", "")}
        return customer_id if mandates.activate(conn, customer_id, self.name, agreement_no, now, detail) else None

    # -- the outbox's side ---------------------------------------------------------------------------

    def prepare(self, conn: sa.Connection, op: str, order: Payable, now: datetime) -> dict:
        if order.currency != CURRENCY:
            raise mandates.MandateMissing(f"Alipay takes {CURRENCY} only, not {order.currency}")
        if op == "authorise":
            return {"agreement_no": mandates.require(conn, order.customer_id, self.name).reference}
        if op == "charge":
            found = mandates.active(conn, order.customer_id, self.name)
            auth = self.authorisation(conn, order.id)
            return {"agreement_no": found.reference if found else (auth.platform_ref if auth else "")}
        return {}

    def send(self, op) -> Sent:
        detail = json.loads(op.detail or "{}")
        if op.op == "void":
            return Sent("succeeded", "nothing to release: an agreement payment is taken only on the drop")
        if op.op == "authorise":
            return self._check(detail.get("agreement_no", ""))
        if op.op in ("capture", "charge"):
            agreement_no = detail.get("agreement_no") or detail.get("authorisation", "")
            if not agreement_no:
                return Sent("declined", "the customer has no Alipay agreement to charge")
            trade = out_trade_no(op.order_id, op.key)
            answer = self._ask(lambda: self.client.pay(trade, op.amount, f"{self.subject} {op.order_id}", agreement_no))
            if answer.sub_code == "ACQ.TRADE_HAS_SUCCESS":  # paid already (an answer that was lost)
                return self.query(op) or Sent("failed", "Alipay says paid, but does not know the trade")
            return self._trade(answer)
        if op.op == "refund":
            trade_no = detail.get("payment", "")
            answer = self._ask(lambda: self.client.refund(op.amount, request_no(op.key), trade_no=trade_no))
            if answer.ok:
                return Sent("succeeded", f"fund_change {answer.body.get('fund_change', '')}", request_no(op.key))
            return Sent("declined", answer.reason)
        return Sent("failed", f"Alipay has no {op.op}")

    def query(self, op) -> Sent | None:
        detail = json.loads(op.detail or "{}")
        if op.op in ("authorise", "void"):
            return None  # a check and a no-op: asking again is the same as sending again
        if op.op in ("capture", "charge"):
            answer = self._ask(lambda: self.client.query(out_trade_no(op.order_id, op.key)))
            if answer.sub_code == "ACQ.TRADE_NOT_EXIST":
                return None
            if not answer.ok:
                return Sent("failed", answer.reason)
            return self._status(answer.body)
        if op.op == "refund":
            answer = self._ask(lambda: self.client.refund_query(request_no(op.key),
                                                                trade_no=detail.get("payment", "")))
            if answer.ok and answer.body.get("refund_amount"):
                return Sent("succeeded", "found by query", request_no(op.key))
            return None
        return None

    def settled(self, conn: sa.Connection, op, sent: Sent, now: datetime) -> None:
        """An agreement Alipay says is gone revokes the customer's mandate: asked to choose again next time."""
        if sent.status == "declined" and any(code in sent.reason for code in GONE):
            detail = json.loads(op.detail or "{}")
            agreement_no = detail.get("agreement_no") or detail.get("authorisation", "")
            if agreement_no and mandates.revoke(conn, self.name, agreement_no, now) is not None:
                log.warning("alipay: customer %s's agreement %s is no longer valid (%s); mandate revoked",
                            op.customer_id, agreement_no, sent.reason)

    def _ask(self, call) -> Answer:
        try:
            answer = call()
        except Silent as e:
            raise Unreachable(str(e)) from None
        except Refused as e:
            return Answer("40002", "refused", str(e))
        if answer.sub_code in BUSY:
            raise Unreachable(f"Alipay is busy: {answer.reason}")
        log.debug("alipay answered %s", describe(answer))
        return answer

    def _check(self, agreement_no: str) -> Sent:
        if not agreement_no:
            return Sent("declined", "NOT_EXIST: the customer has no Alipay agreement")
        try:
            status = self.client.agreement_status(agreement_no)
        except Silent as e:
            raise Unreachable(str(e)) from None
        except Refused as e:
            return Sent("failed", str(e)[:200])
        if status == "NORMAL":
            return Sent("succeeded", "agreement valid; nothing held until the drop", agreement_no)
        return Sent("declined", f"{status}: the Alipay agreement is not valid", agreement_no)

    def _trade(self, answer: Answer) -> Sent:
        if answer.code == "10003":  # still being paid: Alipay's notification (or a query) says how it ended
            return Sent("pending", "Alipay is still paying it", str(answer.body.get("trade_no", "")))
        if answer.ok:
            return Sent("succeeded", "", str(answer.body.get("trade_no", "")))
        if answer.code == "40002":
            return Sent("failed", answer.reason)
        return Sent("declined", answer.reason)

    @staticmethod
    def _status(body: dict) -> Sent | None:
        status, trade_no = body.get("trade_status", ""), str(body.get("trade_no", ""))
        if status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            return Sent("succeeded", "found by query", trade_no)
        if status == "WAIT_BUYER_PAY":
            return Sent("pending", "Alipay is still paying it", trade_no)
        if status == "TRADE_CLOSED":
            return Sent("declined", "TRADE_CLOSED: the trade was closed unpaid", trade_no)
        return None

    # -- Alipay's notifications (verified by ``verify`` in __init__.py) ------------------------------

    def notified(self, conn: sa.Connection, event: Event, now: datetime) -> str:
        data = event.data or {}
        if event.type == "mandate.activated":
            customer = self.signed(conn, data.get("fields", {}), now)
            return f"agreement of customer {customer} active" if customer else "no agreement of ours was being signed"
        if event.type == "op.succeeded" and data.get("out_trade_no"):
            for row in conn.execute(sa.select(payment_ops).where(
                    payment_ops.c.provider == self.name, payment_ops.c.order_id == event.order_id,
                    payment_ops.c.op.in_(("capture", "charge")))).all():
                if out_trade_no(row.order_id, row.key) == data["out_trade_no"]:
                    done = self.record(conn, row.order_id, row.op, Sent("succeeded", "notified", data["platform_ref"]),
                                       now, event.amount, event.currency)
                    return f"{row.op} {row.key} confirmed" if done else \
                        f"{row.op} {row.key}: nothing recorded (settled already, or another amount)"
            log.warning("alipay: a trade notification names no trade of ours: %s", data["out_trade_no"])
            return "no trade of ours"
        return super().notified(conn, event, now)


def event_of(fields: dict[str, str]) -> Event:
    """A verified notification as the webhook route's ``Event``: an agreement signed or ended, or a trade paid."""
    kind, notify_id = fields.get("notify_type", ""), fields.get("notify_id", "")
    if kind == "dut_user_sign":
        return Event(notify_id, "mandate.activated", "", 0, "", "", {"fields": fields})
    if kind == "dut_user_unsign":
        return Event(notify_id, "mandate.revoked", "", 0, "", "", {"reference": fields.get("agreement_no", "")})
    if kind == "trade_status_sync" and fields.get("trade_status") in ("TRADE_SUCCESS", "TRADE_FINISHED"):
        trade = fields.get("out_trade_no", "")
        return Event(notify_id, "op.succeeded", order_of(trade) or "", fen(fields.get("total_amount", "")), CURRENCY,
                     "", {"out_trade_no": trade, "platform_ref": fields.get("trade_no", "")})
    return Event(notify_id, f"alipay.{kind or 'unknown'}", order_of(fields.get("out_trade_no", "")) or "", 0, "", "",
                 {"trade_status": fields.get("trade_status", "")})
