"""The story once with cards through Stripe, in a real browser: a customer on a phone registers to pay by
card, types it on Stripe's Checkout page (the fake's, its own process), comes back to the machine, buys,
is sent on the spot to the bank's authentication page, confirms, and is told to take the product; the
card was held, then captured when the product dropped."""

import re

import pytest

from tests.browser.browsing import scan_url, shot
from tests.e2e.harness import Machine, wait_until
from tests.e2e.stripe_harness import stripe_cloud


@pytest.fixture(scope="module")
def cloud(broker, tmp_path_factory):
    """This module's cloud: Stripe configured, against the fake as a process."""
    c = stripe_cloud(broker, str(tmp_path_factory.mktemp("cloud")), demo_topups=False)
    c.start()
    yield c
    c.stop()
    c.stripe.stop()


@pytest.fixture(scope="module")
def machine(cloud, broker, tmp_path_factory):
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("machines")), "s1", drop_delay=0.3)
    m.start()
    m.stock()
    yield m
    m.proc.stop()


def test_a_customer_saves_a_card_at_stripe_authenticates_the_purchase_and_takes_the_product(cloud, machine, new_page):
    phone = new_page(phone=True)
    phone.goto(scan_url(cloud, machine))
    phone.get_by_label("Your name").fill("Mei")
    phone.get_by_label("Phone number").fill("+8613800000051")
    phone.get_by_label("Card, Apple Pay or Google Pay").check()
    shot(phone, "stripe-1-register")
    phone.get_by_role("button", name="Register").click()

    phone.wait_for_url(re.compile(re.escape(cloud.stripe.url) + "/c/pay/cs_test_"))
    shot(phone, "stripe-2-checkout")
    phone.get_by_label("Card number").fill("4000 0027 6000 3184")  # Stripe's "always authenticate" test card
    phone.get_by_role("button", name="Save card").click()
    phone.get_by_role("heading", name=f"Machine {machine.id}").wait_for()
    shot(phone, "stripe-3-menu")

    phone.get_by_role("button", name="Buy Cola").click()
    # The bank wants the customer to authenticate: the order page takes the phone there on the spot.
    phone.wait_for_url(re.compile(re.escape(cloud.stripe.url) + "/3ds/pi_"), timeout=30_000)
    shot(phone, "stripe-5-bank")
    phone.get_by_role("button", name="Complete authentication").click()
    phone.wait_for_url(re.compile(rf"{re.escape(cloud.url)}/orders/"))
    phone.get_by_role("status").get_by_text("Take your product!").wait_for(timeout=30_000)
    shot(phone, "stripe-6-take-your-product")

    order_id = phone.url.rsplit("/", 1)[1]
    wait_until(lambda: cloud.stripe.intent_of(order_id)["status"] == "succeeded", 15, "the capture to reach Stripe")
    pi = cloud.stripe.intent_of(order_id)
    assert (pi["capture_method"], pi["amount_received"]) == ("manual", 350)
