"""Stripe, through its own library (PyPI ``stripe``): the calls the card provider makes, each under an
``Idempotency-Key``, and what Stripe's answers mean for an outbox op.

Inside this package ``import stripe`` is Stripe's library: imports are absolute, so our package
``cloud.payments.stripe`` is only ever reached by that full name (``tests/cloud/payments/test_stripe.py``
checks it). The library retries nothing here (``max_network_retries=0``): the outbox's worker retries,
with backoff, under the same key, and asks Stripe first what became of a request whose answer was lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import stripe

from cloud.payments.outbox import Sent, Unreachable

log = logging.getLogger(__name__)

WEBHOOK_TOLERANCE_S = 300  # Stripe's own default: a signature older than this is a replay


@dataclass(frozen=True)
class Mandate:
    """What a saved card is at Stripe: the customer and their PaymentMethod."""

    customer: str
    payment_method: str

    @property
    def reference(self) -> str:
        return f"{self.customer}/{self.payment_method}"

    @classmethod
    def of(cls, reference: str) -> "Mandate":
        customer, _, payment_method = reference.partition("/")
        return cls(customer, payment_method)


def sent_of(pi) -> Sent:
    """What a PaymentIntent's status means for the op that made or moved it."""
    status, ref = pi["status"], pi["id"]
    if status == "requires_capture":
        return Sent("succeeded", platform_ref=ref)
    if status == "succeeded":
        return Sent("succeeded", platform_ref=ref)
    if status == "requires_action":
        action = pi.get("next_action") or {}
        url = (action.get("redirect_to_url") or {}).get("url") if action.get("type") == "redirect_to_url" else None
        if not url:
            return Sent("declined", f"Stripe asks for an action this cloud cannot send the customer to "
                                   f"({action.get('type')})", ref)
        return Sent("pending", platform_ref=ref, detail={"action_url": url})
    if status == "canceled":
        return Sent("declined", f"cancelled at Stripe ({pi.get('cancellation_reason') or 'no reason given'})", ref)
    if status == "processing":
        return Sent("pending", platform_ref=ref)
    error = pi.get("last_payment_error") or {}
    return Sent("declined", str(error.get("message") or f"Stripe: {status}")[:200], ref)


def refund_sent(r) -> Sent:
    """What a Refund's status means for the refund op."""
    status = {"succeeded": "succeeded", "pending": "pending", "requires_action": "pending"}.get(r["status"], "declined")
    return Sent(status, "" if status != "declined" else f"Stripe: the refund {r['status']}", r["id"])


class StripePlatform:
    """One Stripe account, through ``stripe.StripeClient``; ``api_url`` points it at a local fake."""

    def __init__(self, api_key: str, api_url: str = "", timeout_s: float = 10.0):
        self.client = stripe.StripeClient(
            api_key, base_addresses={"api": api_url} if api_url else None, max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout_s))

    @staticmethod
    def _options(key: str) -> dict:
        return {"idempotency_key": key}

    def call(self, what: str, fn, *args, **kwargs):
        """One library call; a failure to reach Stripe (a timeout, a connection error, 5xx, 429) is
        ``Unreachable``, which the worker retries under the same key. Other errors propagate. The answer
        is a plain dict."""
        try:
            return fn(*args, **kwargs).to_dict()  # plain dicts from here on: StripeObject is not one
        except (stripe.APIConnectionError, stripe.RateLimitError) as e:
            raise Unreachable(f"Stripe did not answer {what}: {type(e).__name__}: {e.user_message or e}") from None
        except stripe.APIError as e:
            raise Unreachable(f"Stripe answered {what} with HTTP {e.http_status}: {e.user_message or e}") from None

    # -- the mandate: a customer and a card saved through Checkout in setup mode ----------------------

    def create_customer(self, key: str, customer_id: int) -> str:
        c = self.call("creating a customer", self.client.v1.customers.create,
                      {"metadata": {"customer_id": str(customer_id)}, "description": f"vend customer {customer_id}"},
                      self._options(key))
        return c["id"]

    def setup_session(self, key: str, customer: str, currency: str, success_url: str, cancel_url: str,
                      customer_id: int) -> tuple[str, str]:
        """A Checkout session in setup mode: (its id, the hosted page's URL). The card is typed there, at
        Stripe, never on our pages."""
        s = self.call("creating a Checkout session", self.client.v1.checkout.sessions.create, {
            "mode": "setup", "customer": customer, "currency": currency.lower(),
            "success_url": success_url, "cancel_url": cancel_url, "client_reference_id": str(customer_id),
            "metadata": {"customer_id": str(customer_id)},
            "setup_intent_data": {"metadata": {"customer_id": str(customer_id)}}}, self._options(key))
        return s["id"], s["url"]

    def session_page(self, session_id: str) -> tuple[str, str]:
        """A Checkout session's status (open, complete, expired) and the URL of its page at Stripe."""
        s = self.call("reading a Checkout session", self.client.v1.checkout.sessions.retrieve, session_id)
        return str(s.get("status") or ""), str(s.get("url") or "")

    def session_mandate(self, session_id: str) -> tuple[str, Mandate | None]:
        """A Checkout session's customer id (ours, from its metadata) and the saved card, once complete."""
        s = self.call("reading a Checkout session", self.client.v1.checkout.sessions.retrieve, session_id,
                      {"expand": ["setup_intent"]})
        seti = s.get("setup_intent")
        owner = str((s.get("metadata") or {}).get("customer_id", ""))
        if s.get("status") != "complete" or not isinstance(seti, dict) or seti.get("status") != "succeeded" \
                or not seti.get("payment_method"):
            return owner, None
        return owner, Mandate(s["customer"], seti["payment_method"])

    # -- payments -------------------------------------------------------------------------------------

    def authorise(self, key: str, amount: int, currency: str, mandate: Mandate, order_id: str,
                  return_url: str) -> Sent:
        """A PaymentIntent on the saved card, held (``capture_method=manual``), the customer at hand
        (``off_session`` false: Stripe may ask them to authenticate, and ``return_url`` brings them back)."""
        return self._intent(key, {
            "amount": amount, "currency": currency.lower(), "customer": mandate.customer,
            "payment_method": mandate.payment_method, "capture_method": "manual", "confirm": True,
            "off_session": False, "return_url": return_url, "payment_method_types": ["card"],
            "metadata": {"order_id": order_id, "op_key": key}, "description": f"vend order {order_id}"})

    def charge(self, key: str, amount: int, currency: str, mandate: Mandate, order_id: str) -> Sent:
        """A fresh payment taken at once, the customer gone (``off_session``): a late drop after a void."""
        return self._intent(key, {
            "amount": amount, "currency": currency.lower(), "customer": mandate.customer,
            "payment_method": mandate.payment_method, "capture_method": "automatic", "confirm": True,
            "off_session": True, "payment_method_types": ["card"],
            "metadata": {"order_id": order_id, "op_key": key}, "description": f"vend order {order_id}"})

    def _intent(self, key: str, params: dict) -> Sent:
        try:
            pi = self.call("creating a PaymentIntent", self.client.v1.payment_intents.create, params,
                           self._options(key))
        except stripe.CardError as e:
            ref = ((e.json_body or {}).get("error") or {}).get("payment_intent", {}).get("id", "")
            return Sent("declined", str(e.user_message or e.code or "declined")[:200], ref)
        except stripe.StripeError as e:
            return self.refused("creating a PaymentIntent", e)
        return sent_of(pi)

    def capture(self, key: str, intent: str, amount: int) -> Sent:
        try:
            pi = self.call("capturing", self.client.v1.payment_intents.capture, intent,
                           {"amount_to_capture": amount}, self._options(key))
        except stripe.InvalidRequestError as e:
            pi = self._unexpected(e)
            if pi is not None and pi.get("status") == "succeeded":
                return Sent("succeeded", platform_ref=intent)  # captured already (by another key or process)
            return self.refused("capturing", e)
        except stripe.StripeError as e:
            return self.refused("capturing", e)
        return sent_of(pi)

    def cancel(self, key: str, intent: str) -> Sent:
        try:
            pi = self.call("cancelling", self.client.v1.payment_intents.cancel, intent,
                           {"cancellation_reason": "abandoned"}, self._options(key))
        except stripe.InvalidRequestError as e:
            pi = self._unexpected(e)
            if pi is not None and pi.get("status") == "canceled":
                return Sent("succeeded", platform_ref=intent)
            return self.refused("cancelling", e)
        except stripe.StripeError as e:
            return self.refused("cancelling", e)
        return Sent("succeeded", platform_ref=pi["id"])

    def refund(self, key: str, intent: str, amount: int, order_id: str) -> Sent:
        try:
            r = self.call("refunding", self.client.v1.refunds.create, {
                "payment_intent": intent, "amount": amount, "metadata": {"order_id": order_id, "op_key": key}},
                self._options(key))
        except stripe.StripeError as e:
            return self.refused("refunding", e)
        return refund_sent(r)

    def find(self, mandate: Mandate, key: str) -> Sent | None:
        """The PaymentIntent made under ``key``, if Stripe has one: what became of a create whose answer
        never came (``metadata.op_key`` names it)."""
        page = self.call("listing PaymentIntents", self.client.v1.payment_intents.list,
                         {"customer": mandate.customer, "limit": 100})
        for pi in page["data"]:
            if (pi.get("metadata") or {}).get("op_key") == key:
                return sent_of(pi)
        return None

    def find_refund(self, intent: str, key: str) -> Sent | None:
        """The refund made under ``key``, if Stripe has one (``metadata.op_key`` names it)."""
        page = self.call("listing refunds", self.client.v1.refunds.list, {"payment_intent": intent, "limit": 100})
        for r in page["data"]:
            if (r.get("metadata") or {}).get("op_key") == key:
                return refund_sent(r)
        return None

    def intent(self, intent: str):
        return self.call("reading a PaymentIntent", self.client.v1.payment_intents.retrieve, intent)

    @staticmethod
    def _unexpected(e) -> dict | None:
        error = (e.json_body or {}).get("error") or {}
        return error.get("payment_intent") if error.get("code") == "payment_intent_unexpected_state" else None

    @staticmethod
    def refused(what: str, e) -> Sent:
        """Stripe said no to the request itself (not the card): a final answer, logged with its reason."""
        log.warning("Stripe refused %s: %s %s", what, type(e).__name__, e.user_message or e)
        return Sent("failed", f"Stripe refused {what}: {e.user_message or e.code or type(e).__name__}"[:200])
