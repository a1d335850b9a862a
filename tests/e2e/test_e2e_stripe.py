"""A customer pays by card through Stripe: the fake of Stripe's API as its own process
(``python -m tests.fakes.stripe``, signing and sending its webhooks to the cloud), `vend-cloud` with its
Stripe keys in 0600 files, the broker and a `vend-controller` on a simulated machine. Registration through
Checkout, a purchase held and captured on the drop, a jam cancelled, a purchase the bank wants
authenticated, a refund through vendctl and Stripe's balance report reconciled through vendctl."""

import html
import itertools
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from tests.e2e.harness import Customer, Machine, wait_until
from tests.e2e.stripe_harness import stripe_cloud

_phones = itertools.count(13700000001)


@pytest.fixture(scope="module")
def cloud(database, broker, tmp_path_factory):
    """The cloud with Stripe configured (this module's own, in place of conftest's)."""
    c = stripe_cloud(broker, str(tmp_path_factory.mktemp("cloud")), database, demo_topups=False)
    c.start()
    yield c
    c.stop()
    c.stripe.stop()


@pytest.fixture(scope="module")
def machine(cloud, broker, tmp_path_factory):
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("machines")), "c1", drop_delay=0.2, jam="B2")
    m.start()
    m.stock()
    yield m
    m.proc.stop()


def card_customer(cloud, machine, number="4242424242424242") -> Customer:
    """A phone that scans, registers to pay by card, saves the card on Stripe's page and comes back."""
    c = Customer(cloud, "Card Customer", f"+86{next(_phones)}")
    assert c.scan(machine).status_code == 303
    r = c.register(f"/m/{machine.id}", method="stripe")
    assert r.status_code == 303 and r.headers["location"].startswith(cloud.url + "/pay/stripe/checkout?"), r.text
    step = c.http.get(r.headers["location"].replace(cloud.url, ""))
    stripe_page = html.unescape(re.search(r'id="to-stripe" href="([^"]+)"', step.text).group(1))
    assert stripe_page.startswith(cloud.stripe.url + "/c/pay/cs_test_")
    assert "Card number" in httpx.get(stripe_page, timeout=10).text
    back = httpx.post(stripe_page, data={"cardnumber": number}, timeout=10)
    assert back.status_code == 303 and back.headers["location"].startswith(cloud.url + "/pay/stripe/saved?")
    done = c.http.get(back.headers["location"].replace(cloud.url, ""))
    assert (done.status_code, done.headers["location"]) == (303, f"/m/{machine.id}")
    return c


def order_id_of(response) -> str:
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def vendctl(cloud, *argv):
    env = {**os.environ, "VEND_CLOUD_URL": cloud.url, "VEND_TOKEN": cloud.token}
    p = subprocess.run([sys.executable, "-m", "cloud.cli", *argv], capture_output=True, text=True, env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def sale(cloud, machine):
    customer = card_customer(cloud, machine)
    order_id = order_id_of(customer.buy(machine, "A2"))
    settled = customer.wait_settled(order_id)
    wait_until(lambda: cloud.stripe.intent_of(order_id)["status"] == "succeeded", 15, "the capture to reach Stripe")
    return customer, order_id, settled


def test_a_card_purchase_is_held_then_captured_when_the_product_drops(cloud, machine, sale):
    customer, order_id, settled = sale
    assert settled["status"] == "succeeded"
    assert "Take your product" in customer.http.get(f"/orders/{order_id}").text
    pi = cloud.stripe.intent_of(order_id)
    assert (pi["capture_method"], pi["amount"], pi["amount_received"], pi["currency"]) == ("manual", 350, 350, "cny")
    time.sleep(1.0)  # anything sent twice would have arrived by now
    posts = [(p, k) for m, p, k in httpx.get(cloud.stripe.url + "/fake/requests", timeout=10).json()
             if m == "POST" and k and k.endswith(f":{order_id}")]
    assert posts == [("/v1/payment_intents", f"authorise:{order_id}"),
                     (f"/v1/payment_intents/{pi['id']}/capture", f"capture:{order_id}")]
    assert cloud.db("SELECT op, status FROM payment_ops WHERE order_id = ? ORDER BY id", (order_id,)) == [
        ("authorise", "succeeded"), ("capture", "succeeded")]
    assert cloud.db("SELECT kind FROM txns WHERE order_id = ?", (order_id,)) == [("capture",)]


def test_a_jammed_slot_cancels_the_hold(cloud, machine):
    customer = card_customer(cloud, machine)
    order_id = order_id_of(customer.buy(machine, "B2"))
    assert customer.wait_settled(order_id)["status"] == "failed"
    wait_until(lambda: cloud.stripe.intent_of(order_id)["status"] == "canceled", 15, "the hold to be cancelled")
    assert cloud.stripe.intent_of(order_id)["amount_received"] == 0
    assert cloud.db("SELECT COUNT(*) FROM txns WHERE order_id = ?", (order_id,)) == [(0,)]


def test_a_purchase_the_bank_wants_authenticated_sends_the_phone_there_then_vends(cloud, machine):
    customer = card_customer(cloud, machine, "4000002760003184")
    order_id = order_id_of(customer.buy(machine, "A1"))
    action = wait_until(lambda: customer.order_status(order_id).get("action"), 15, "the order to ask for the bank")
    assert action.startswith(cloud.stripe.url + "/3ds/pi_")
    assert "Confirm the payment" in customer.http.get(f"/orders/{order_id}").text
    assert not [e for e in machine.events_of("vend.started") if e["order_id"] == order_id]
    back = httpx.post(action, data={"outcome": "complete"}, timeout=10)
    r = customer.http.get(back.headers["location"].replace(cloud.url, ""))
    assert (r.status_code, r.headers["location"]) == (303, f"/orders/{order_id}")
    assert customer.wait_settled(order_id)["status"] == "succeeded"
    wait_until(lambda: cloud.stripe.intent_of(order_id)["status"] == "succeeded", 15, "the capture")
    assert [e["order_id"] for e in machine.events_of("vend.started")].count(order_id) == 1


def test_a_refund_through_vendctl_goes_to_stripe_and_the_report_reconciles(cloud, sale, tmp_path):
    _, order_id, _ = sale
    code, out, err = vendctl(cloud, "refund", order_id, "--reason", "warm can", "--amount", "1.00", "--key",
                             "e2e-stripe-refund-1")
    assert code == 0 and "refunded ¥1.00" in out, err
    refunds = [r for r in cloud.stripe.objects("refund") if r["metadata"].get("order_id") == order_id]
    assert [(r["amount"], r["status"]) for r in refunds] == [(100, "succeeded")]
    report = tmp_path / "stripe-balance.csv"
    report.write_bytes(httpx.get(cloud.stripe.url + "/fake/report.csv", timeout=10).content)
    code, out, err = vendctl(cloud, "reconcile", "--statement", str(report), "--provider", "stripe")
    assert code == 0, err
    assert out.startswith(f"{report}: ") and "fees posted: ¥" in out
    code, out, err = vendctl(cloud, "reconcile", "--statement", str(report), "--provider", "stripe")
    assert code == 0 and " 0 new;" in out, err
    truncated = tmp_path / "cut.csv"
    truncated.write_bytes(report.read_bytes()[:-20])
    code, out, err = vendctl(cloud, "reconcile", "--statement", str(truncated), "--provider", "stripe")
    assert code == 1 and "cut short" in err
