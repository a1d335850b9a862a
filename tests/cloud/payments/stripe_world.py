"""The card provider against the local Stripe fake (``tests/fakes/stripe.py``), served on a real socket and
reached through Stripe's own library: helpers for the provider's tests and its world for the contract
tests (``test_payments.py``)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import sqlalchemy as sa

from cloud.payments import mandates
from cloud.payments.outbox import payment_ops
from cloud.payments.stripe import Card, StripePlatform
from tests.cloud_fixtures import NOW
from tests.fakes.stripe import StripeFake, serve

API_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
WEBHOOK_SECRET = "whsec_test_secret_for_the_fake_0123"
PUBLIC = "http://cloud.test"
OK_CARD = "4242424242424242"
AUTHENTICATE_CARD = "4000002760003184"
DECLINED_CARD = "4000000000000341"


class Running:
    """The fake served on a socket, and a provider whose library is pointed at it."""

    def __init__(self):
        self.fake = StripeFake(API_KEY, WEBHOOK_SECRET)
        self.server = serve(self.fake)
        self.platform = StripePlatform(API_KEY, self.fake.base_url, 5.0)
        self.provider = Card(self.platform, PUBLIC, "CNY", 300.0, webhook_secret=WEBHOOK_SECRET)
        self.told: list[tuple[str, bool, str]] = []
        self.provider.on_authorisation = lambda order_id, ok, reason: self.told.append((order_id, ok, reason))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def save_card(self, engine, customer_id: int, number: str = OK_CARD) -> str:
        """Registration's card step, as the phone does it: the provider's Checkout URL, the card typed on
        Stripe's page, and the mandate recorded from the session (as the return page does). The reference."""
        with engine.begin() as conn:
            url = self.provider.enrol(conn, customer_id, "/account", NOW)
        r = httpx.post(self.stripe_page(url), data={"cardnumber": number})
        assert r.status_code == 303, r.text
        session_id = r.headers["location"].split("session_id=")[1]
        owner, mandate = self.platform.session_mandate(session_id)
        assert owner == str(customer_id) and mandate is not None
        with engine.begin() as conn:
            self.provider.saved(conn, customer_id, mandate, NOW)
        return mandate.reference

    def stripe_page(self, url: str) -> str:
        """Where our step before Checkout (``enrol``'s URL) takes the phone: Stripe's page."""
        assert url.startswith(PUBLIC + "/pay/stripe/checkout?session_id=cs_test_"), url
        status, page = self.platform.session_page(url.split("session_id=")[1])
        assert status == "open"
        return page

    def deliver(self, engine, at=NOW) -> None:
        while self.provider.deliver_due(engine, clock=lambda: at):
            pass

    def intents(self) -> list[dict]:
        return [o for o in self.fake.objects.values() if o["object"] == "payment_intent"]

    def intent_of(self, order_id: str) -> dict:
        found = [pi for pi in self.intents() if pi["metadata"].get("order_id") == order_id]
        assert len(found) == 1, found
        return found[0]


def op_rows(engine, order_id: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(payment_ops).where(payment_ops.c.order_id == order_id)
                            .order_by(payment_ops.c.id)).all()


class StripeWorld:
    """The card provider for the contract tests: customer 1 has saved a card at the fake; the worker's
    rounds are run by ``deliver``; Stripe answers holds at once, so ``confirm`` only delivers."""

    answers_at_once = True

    def __init__(self, engine):
        self.engine = engine
        self.running = Running()
        self.provider = self.running.provider
        self.running.save_card(engine, 1)

    def confirm(self, o, ok=True):
        self.deliver()

    def deliver(self):
        self.running.deliver(self.engine)

    def snapshot(self):
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(payment_ops)).scalar()
        return rows, sum(1 for m, _, _ in self.running.fake.requests if m == "POST")

    def refunded_at_provider(self, o):
        self.deliver()
        return sum(r["amount"] for r in self.running.fake.objects.values() if r["object"] == "refund"
                   and r["metadata"].get("order_id") == o.id)

    def close(self):
        self.running.stop()


def later(seconds: float):
    return NOW + timedelta(seconds=seconds)


def active_mandate(engine, customer_id: int):
    with engine.connect() as conn:
        return mandates.active(conn, customer_id, "stripe")
