"""Cards, Apple Pay and Google Pay through Stripe, as the cloud sees them: an ``Outbox`` provider.

- Registration (``enrol``): a Stripe Customer and a Checkout session in setup mode; the card is typed on
  Stripe's page, never ours. The customer comes back to ``/pay/stripe/saved`` (``pages.py``), or Stripe
  says ``setup_intent.succeeded``: the mandate is then the Customer and its PaymentMethod.
- A purchase: a PaymentIntent on the saved card with ``capture_method=manual``, the customer at hand
  (``off_session`` false), captured when the product drops, cancelled when it does not. If the bank wants
  the customer to authenticate (``requires_action``), the order waits and its page sends the phone to
  Stripe's authentication page on the spot; they come back to ``/pay/stripe/return/{order}``.
- A product that dropped after its order was voided is charged afresh on the saved card, off-session.
- Every request carries the op's key as its ``Idempotency-Key``; one whose answer was lost is looked up at
  Stripe before it is sent again (``query``).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from types import SimpleNamespace

import sqlalchemy as sa

from cloud.accounts.journal import PaymentError
from cloud.payments import mandates
from cloud.payments.outbox import Outbox, Sent, Unreachable, detail_of, payment_ops
from cloud.payments.provider import Payable
from cloud.payments.stripe.platform import Mandate, StripePlatform, sent_of

log = logging.getLogger(__name__)

NAME = "stripe"  # how customers choose it, and the registry knows it
BOUNDARY = "stripe"  # the journal account of what Stripe owes us
CHECKOUT_PATH = "/pay/stripe/checkout"  # our step before Stripe's Checkout page (pages.py says why)
SAVED_PATH = "/pay/stripe/saved"  # where Checkout sends the customer back (pages.py)
RETURN_PATH = "/pay/stripe/return"  # where Stripe's authentication page sends them back, + /{order id}


class Card(Outbox):
    """Paying by a card saved at Stripe."""

    name = NAME
    boundary = BOUNDARY
    needs_mandate = True
    can_charge = True

    def __init__(self, platform: StripePlatform | None, public_url: str = "", currency: str = "CNY",
                 confirm_timeout_s: float = 300.0, counts: Counter | None = None, webhook_secret: str = "",
                 tolerance_s: float = 300.0):
        super().__init__(platform is not None, confirm_timeout_s, counts)
        self.platform = platform
        self.public_url = public_url.rstrip("/")
        self.currency = currency
        self.currencies = (currency,)  # the account's currency (--stripe-currency)
        self.webhook_secret = webhook_secret
        self.tolerance_s = tolerance_s

    # -- registration -------------------------------------------------------------------------------

    def enrol(self, conn: sa.Connection, customer_id: int, return_url: str, now: datetime) -> str | None:
        """A Stripe Customer (one per customer of ours, kept in the mandate's detail) and a Checkout session
        in setup mode for them: the URL of our page that takes them on to Stripe's, where they save a card."""
        if self.platform is None:
            raise PaymentError("paying by card is not configured on this cloud")
        before = mandates.get(conn, customer_id, NAME)
        customer = (before.detail.get("customer") if before is not None else "") or ""
        try:
            if not customer:
                customer = self.platform.create_customer(f"customer:{customer_id}", customer_id)
            session, _ = self.platform.setup_session(
                f"setup:{customer_id}:{now.timestamp():.6f}", customer, self.currency,
                f"{self.public_url}{SAVED_PATH}?session_id={{CHECKOUT_SESSION_ID}}", return_url or self.public_url,
                customer_id)
        except Unreachable as e:
            # Registration goes on; the card is not saved yet, so their first purchase asks them to save it.
            log.warning("stripe: could not start saving a card for customer %d: %s", customer_id, e)
            mandates.start(conn, customer_id, NAME, now, {"customer": customer} if customer else None)
            return None
        mandates.start(conn, customer_id, NAME, now, {"customer": customer, "session": session,
                                                      "next": self.local(return_url)})
        # Not Stripe's page itself: a form's answer may only send the browser on to this cloud (the pages'
        # content policy, form-action 'self'), so our own page takes the phone on to ``url``.
        return f"{self.public_url}{CHECKOUT_PATH}?session_id={session}"

    def local(self, url: str) -> str:
        """The path of an address on this cloud (where the customer goes after saving a card)."""
        if url.startswith(self.public_url + "/"):
            return url[len(self.public_url):]
        return url if url.startswith("/") else "/"

    def mandate_of(self, conn: sa.Connection, customer_id: int) -> mandates.Mandate | None:
        return mandates.get(conn, customer_id, NAME)

    def saved(self, conn: sa.Connection, customer_id: int, mandate: Mandate, now: datetime) -> bool:
        """Stripe confirmed the card ``mandate`` saved for ``customer_id`` (a return page, a webhook). Only
        for the Stripe customer enrol made for them: a SetupIntent some other system on the same Stripe
        account made, naming one of our customer ids, changes nothing."""
        found = mandates.get(conn, customer_id, NAME)
        detail = dict(found.detail) if found is not None else {}
        if found is None or detail.get("customer") != mandate.customer:
            log.warning("stripe: a card saved for Stripe customer %s names our customer %d, who was not sent to "
                        "save one with it; ignored", mandate.customer, customer_id)
            return False
        if found.status == "active" and found.reference == mandate.reference:
            return False  # said twice (the return page and the webhook): changes nothing
        done = mandates.activate(conn, customer_id, NAME, mandate.reference, now,
                                 {**detail, "customer": mandate.customer, "payment_method": mandate.payment_method})
        if done:
            log.info("stripe: customer %d saved a card (%s)", customer_id, mandate.payment_method)
        return done

    def notified(self, conn: sa.Connection, event, now: datetime) -> str:
        """A card saved goes through ``saved`` (its Stripe customer checked); the rest as ``Outbox`` does."""
        if event.type == "mandate.activated":
            data = event.data or {}
            done = self.saved(conn, int(data["customer_id"]), Mandate.of(str(data["reference"])), now)
            return "mandate activated" if done else "no card of that Stripe customer was being saved for them"
        return super().notified(conn, event, now)

    # -- what the outbox asks of a platform ---------------------------------------------------------

    def prepare(self, conn: sa.Connection, op: str, order: Payable, now: datetime) -> dict:
        """The customer's saved card for a new payment (none active: MandateMissing, nothing is sent); for a
        capture, void or refund, the card the authorisation used (to look the payment up if its answer was
        lost), whatever became of the mandate since."""
        if op in ("authorise", "charge"):
            mandate = mandates.require(conn, order.customer_id, NAME)
            return {"mandate": mandate.reference, "return_url": f"{self.public_url}{RETURN_PATH}/{order.id}"}
        auth = self.authorisation(conn, order.id)
        return {"mandate": detail_of(auth).get("mandate", "") if auth is not None else "",
                "auth_key": auth.key if auth is not None else ""}

    def send(self, op) -> Sent:
        if self.platform is None:
            raise Unreachable("Stripe is not configured on this cloud")
        detail = detail_of(op)
        if op.op == "authorise":
            return self.platform.authorise(op.key, op.amount, op.currency, Mandate.of(detail["mandate"]), op.order_id,
                                           detail["return_url"])
        if op.op == "charge":
            return self.platform.charge(op.key, op.amount, op.currency, Mandate.of(detail["mandate"]), op.order_id)
        if op.op == "refund":
            return self.platform.refund(op.key, detail["payment"], op.amount, op.order_id)
        intent = detail.get("authorisation") or self._lost_intent(detail)
        if op.op == "capture":
            if not intent:
                return Sent("failed", "no PaymentIntent to capture")
            return self.platform.capture(op.key, intent, op.amount)
        if not intent:
            return Sent("succeeded", "nothing was held at Stripe")
        return self.platform.cancel(op.key, intent)

    def _lost_intent(self, detail: dict) -> str:
        """The PaymentIntent of an authorisation whose answer never came, found at Stripe by its key."""
        if not detail.get("mandate") or not detail.get("auth_key"):
            return ""
        found = self.platform.find(Mandate.of(detail["mandate"]), detail["auth_key"])
        return found.platform_ref if found is not None else ""

    def query(self, op) -> Sent | None:
        """What Stripe has of a request whose answer never came. A payment is found by its key (in its
        metadata); a capture, void or refund is sent again under the same Idempotency-Key, which Stripe
        answers with the first result (for 24 hours), except a refund, which is looked up first."""
        if self.platform is None:
            raise Unreachable("Stripe is not configured on this cloud")
        detail = detail_of(op)
        if op.op in ("authorise", "charge"):
            if op.platform_ref:
                return sent_of(self.platform.intent(op.platform_ref))
            return self.platform.find(Mandate.of(detail["mandate"]), op.key)
        if op.op == "refund":
            return self.platform.find_refund(detail["payment"], op.key)
        return None

    def settled(self, conn: sa.Connection, op, sent: Sent, now: datetime) -> None:
        """An authorisation that succeeded after its order's void was sent (its answer had been lost, and
        the void found nothing to cancel) is released: no hold is left on the customer's card."""
        if op.op != "authorise" or sent.status != "succeeded":
            return
        voided = conn.execute(sa.select(payment_ops.c.id).where(
            payment_ops.c.provider == self.name, payment_ops.c.order_id == op.order_id, payment_ops.c.op == "void",
            payment_ops.c.status == "succeeded")).first()
        if voided is not None:
            log.warning("stripe: order %s was authorised after its void; releasing the hold", op.order_id)
            order = SimpleNamespace(id=op.order_id, customer_id=op.customer_id, amount=op.amount, currency=op.currency)
            self._queue(conn, "void", order, op.amount, f"{op.order_id}:late:after-void", now,
                        {"authorisation": sent.platform_ref or op.platform_ref})

    # -- the customer's return from Stripe's authentication page ------------------------------------

    def returned(self, engine: sa.Engine, order_id: str, now: datetime) -> str:
        """The customer came back from authenticating: ask Stripe what became of the payment, record it,
        and move the order on. Returns the authorisation's status."""
        with engine.connect() as conn:
            auth = self.authorisation(conn, order_id)
        if auth is None:
            return "unknown"
        if auth.status not in ("queued", "pending") or not auth.platform_ref or self.platform is None:
            return auth.status
        try:
            pi = self.platform.intent(auth.platform_ref)
        except Unreachable as e:
            log.warning("stripe: order %s: could not ask Stripe after the customer's return: %s", order_id, e)
            return auth.status
        sent = sent_of(pi)
        if sent.status == "pending":
            return "pending"
        with engine.begin() as conn:
            done = self.record(conn, order_id, "authorise", sent, now, pi["amount"], str(pi["currency"]).upper())
        if done:
            self.tell(order_id, sent.status == "succeeded", sent.reason)
        return sent.status

