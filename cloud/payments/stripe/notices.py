"""Stripe's webhooks: the ``Stripe-Signature`` checked by the library's own ``WebhookSignature.verify_header``
(HMAC-SHA256 over ``{t}.{payload}`` under the endpoint's secret, no older than the tolerance), then the
event read into what the card provider acts on.

Events used: ``checkout.session.completed`` and ``setup_intent.succeeded`` (a card saved: the mandate),
``payment_intent.amount_capturable_updated`` (a hold made, e.g. after the customer authenticated),
``payment_intent.payment_failed`` (declined), ``payment_method.detached`` (the card removed: the mandate
revoked). Others are acknowledged and change nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import stripe

SIGNATURE_HEADER = "Stripe-Signature"
EVENT_ID_RE = re.compile(r"evt_[A-Za-z0-9_]{1,60}\Z")
MANDATE_EVENTS = ("checkout.session.completed", "setup_intent.succeeded")
PAYMENT_EVENTS = ("payment_intent.amount_capturable_updated", "payment_intent.payment_failed",
                  "payment_intent.succeeded")
REVOKE_EVENTS = ("payment_method.detached",)


class NoticeRefused(ValueError):
    """A delivery that changes nothing; ``why`` is signature, stale or malformed."""

    def __init__(self, why: str, message: str):
        super().__init__(message)
        self.why = why


@dataclass(frozen=True)
class Notice:
    """One Stripe event, as the card provider reads it."""

    id: str
    type: str
    order_id: str = ""  # a payment's metadata.order_id
    intent: str = ""  # the PaymentIntent id
    amount: int = 0
    currency: str = ""  # upper case, as our orders have it
    reason: str = ""
    customer_id: str = ""  # ours, from the metadata of a Checkout session or SetupIntent
    customer: str = ""  # Stripe's cus_...
    payment_method: str = ""
    session: str = ""  # the Checkout session, for a checkout.session.completed
    op_key: str = ""  # the payment's metadata.op_key: the outbox op that made it

    @property
    def succeeded(self) -> bool:
        return self.type in ("payment_intent.amount_capturable_updated", "payment_intent.succeeded")


def verify(secret: str, header: str | None, body: bytes, tolerance_s: float) -> Notice:
    """The event in a delivery whose ``Stripe-Signature`` is ours and fresh; NoticeRefused otherwise."""
    if not header:
        raise NoticeRefused("signature", f"no {SIGNATURE_HEADER} header")
    try:
        stripe.WebhookSignature.verify_header(body.decode("utf-8"), header, secret, int(tolerance_s))
    except UnicodeDecodeError:
        raise NoticeRefused("malformed", "the body is not UTF-8") from None
    except stripe.SignatureVerificationError as e:
        why = "stale" if "tolerance" in str(e) else "signature"
        raise NoticeRefused(why, f"Stripe-Signature refused: {e.user_message or e}") from None
    return parse(body)


def parse(body: bytes) -> Notice:
    """A verified body read; NoticeRefused("malformed") for what is not a Stripe event we can read."""
    try:
        ev = json.loads(body)
        eid, etype, obj = ev["id"], ev["type"], ev["data"]["object"]
        if not isinstance(obj, dict) or not isinstance(etype, str):
            raise TypeError("data.object must be an object")
    except (ValueError, KeyError, TypeError) as e:
        raise NoticeRefused("malformed", f"not a Stripe event: {type(e).__name__} {e}") from None
    if not isinstance(eid, str) or not EVENT_ID_RE.match(eid):
        raise NoticeRefused("malformed", "the event id must be evt_ and up to 60 letters, digits or _")
    try:
        if etype in MANDATE_EVENTS:
            meta = obj.get("metadata") or {}
            customer_id = str(meta.get("customer_id") or obj.get("client_reference_id") or "")
            pm = obj.get("payment_method") if etype == "setup_intent.succeeded" else ""
            seti = obj.get("setup_intent") if etype == "checkout.session.completed" else obj.get("id")
            return Notice(eid, etype, customer_id=customer_id, customer=str(obj.get("customer") or ""),
                          payment_method=str(pm or ""), session=str(obj.get("id")) if etype.startswith("checkout")
                          else "", intent=str(seti or ""))
        if etype in PAYMENT_EVENTS:
            amount = obj.get("amount")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
                raise NoticeRefused("malformed", "data.object.amount must be an amount")
            error = obj.get("last_payment_error") or {}
            meta = obj.get("metadata") or {}
            return Notice(eid, etype, order_id=str(meta.get("order_id") or ""), op_key=str(meta.get("op_key") or ""),
                          intent=str(obj["id"]), amount=amount, currency=str(obj.get("currency") or "").upper(),
                          reason=str(error.get("message") or "")[:200], customer=str(obj.get("customer") or ""),
                          payment_method=str(obj.get("payment_method") or ""))
        if etype in REVOKE_EVENTS:
            before = (ev["data"].get("previous_attributes") or {}).get("customer") or ""
            return Notice(eid, etype, customer=str(before), payment_method=str(obj["id"]))
    except KeyError as e:
        raise NoticeRefused("malformed", f"{etype} without {e}") from None
    return Notice(eid, etype)
