"""Cards through Stripe, through the cloud's own pages and routes (FastAPI's test client) with the cloud's
Stripe settings pointed at the local fake: registration through Checkout and back, the signed webhook
route (forged, stale, replayed, tampered and unknown deliveries change nothing), the return from the bank's
authentication page, and the balance report imported through the API."""

import html
import json
import os
import re
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.app
from cloud.payments import mandates, webhook_events
from cloud.payments.outbox import payment_ops
from cloud.payments.statement import statement_lines
from cloud.sales import orders
from protocol import token as qrtoken
from protocol.messages import utcnow
from tests.cloud.payments.stripe_world import API_KEY, AUTHENTICATE_CARD, OK_CARD, WEBHOOK_SECRET
from tests.cloud_fixtures import MACHINE, SECRET as QR_SECRET, add_customer, db_url, idle_cloud, post_form  # noqa: F401
from tests.fakes.stripe import StripeFake, serve, signature_header

HOOK = "/api/v1/payments/webhook/stripe"
ADMIN = {"Authorization": "Bearer admintoken"}


@pytest.fixture
def fake():
    f = StripeFake(API_KEY, WEBHOOK_SECRET)
    server = serve(f)
    yield f
    server.shutdown()
    server.server_close()


@pytest.fixture
def cloud_obj(tmp_path, db_url, fake):
    files = {}
    for name, text in (("stripe.key", API_KEY), ("stripe.whsec", WEBHOOK_SECRET)):
        path = tmp_path / name
        path.write_text(text + "\n")
        os.chmod(path, 0o600)
        files[name] = str(path)
    obj = idle_cloud(tmp_path, db_url, public_url="http://testserver", stripe_key_file=files["stripe.key"],
                     stripe_webhook_secret_file=files["stripe.whsec"], stripe_api_url=fake.base_url)
    obj.sent = []
    obj.send_vend = lambda order: obj.sent.append(order.id)
    from tests.cloud_fixtures import add_machine, slot_spec

    with obj.engine.begin() as conn:
        add_machine(conn, specs=[slot_spec("A1", 350), slot_spec("A2", 200, "water", "Water")])
        add_customer(conn, phone="+8613800000001", topup=0, method="stripe")
    yield obj
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, "admintoken", b"k" * 32), follow_redirects=False) as c:
        yield c


def card(cloud_obj):
    return cloud_obj.provider.configured("stripe")


def stripe_page(client, url):
    """Our step before Checkout (where registration sends the phone): the page takes it on to Stripe's."""
    assert url.startswith("http://testserver/pay/stripe/checkout?session_id=cs_test_"), url
    page = client.get(url.replace("http://testserver", ""))
    assert page.status_code == 200 and "never on ours" in page.text
    target = re.search(r'id="to-stripe" href="([^"]+)"', page.text).group(1)
    assert f'<meta http-equiv="refresh" content="0;url={target}">' in page.text
    return html.unescape(target)


def checkout(client, fake, url, number=OK_CARD):
    """The phone on our step, then on Stripe's Checkout page (the fake's, over its socket): where it is
    sent back to."""
    import httpx

    url = stripe_page(client, url)
    assert url.startswith(fake.base_url + "/c/pay/")
    r = httpx.post(url, data={"cardnumber": number})
    assert r.status_code == 303
    return r.headers["location"]


def save_card(cloud_obj, client, fake, customer_id=1, number=OK_CARD):
    with cloud_obj.engine.begin() as conn:
        url = card(cloud_obj).enrol(conn, customer_id, "http://testserver/", utcnow())
    back = checkout(client, fake, url, number)
    assert client.get(back.replace("http://testserver", "")).status_code == 303


def deliver(cloud_obj):
    while card(cloud_obj).deliver_due(cloud_obj.engine):
        pass


def hook(client, event: dict, secret=WEBHOOK_SECRET, timestamp=None, body=None):
    body = json.dumps(event, indent=2).encode() if body is None else body
    return client.post(HOOK, content=body, headers={"Stripe-Signature": signature_header(secret, body, timestamp),
                                                    "Content-Type": "application/json"})


def count(cloud_obj, table):
    with cloud_obj.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def status(cloud_obj, order_id):
    with cloud_obj.engine.connect() as conn:
        return orders.get(conn, order_id).status


def test_registering_to_pay_by_card_goes_through_stripe_checkout_and_back_to_the_machine(client, cloud_obj, fake):
    page = client.get("/register").text
    assert 'value="stripe"' in page and "Card, Apple Pay or Google Pay" in page
    client.get(f"/q/{qrtoken.make(MACHINE, QR_SECRET.encode(), time.time(), 5)}")
    r = post_form(client, "/register", dict(name="Bo", phone="+8613800000077", payment_method="stripe", next="/m/m-1"))
    assert r.status_code == 303
    back = checkout(client, fake, r.headers["location"])
    assert back.startswith("http://testserver/pay/stripe/saved?session_id=cs_test_")
    r = client.get(back.replace("http://testserver", ""))
    assert (r.status_code, r.headers["location"]) == (303, "/m/m-1")
    with cloud_obj.engine.connect() as conn:
        customer = conn.execute(sa.select(mandates.mandates).where(mandates.mandates.c.status == "active")).one()
    assert customer.reference.startswith("cus_") and "/pm_" in customer.reference
    # The buy button now holds the price on that card.
    r = post_form(client, "/m/m-1/buy", {"slot": "A1", "key": "buy-key-0001"})
    assert r.status_code == 303
    order_id = r.headers["location"].rsplit("/", 1)[1]
    deliver(cloud_obj)
    assert status(cloud_obj, order_id) == "authorised" and cloud_obj.sent == [order_id]


def test_a_link_naming_a_session_stripe_does_not_know_saves_nothing_and_sends_nowhere(client, cloud_obj):
    for path in ("/pay/stripe/saved", "/pay/stripe/checkout"):
        for session_id, code in (("cs_test_madeup", 404), ("<script>", 422), ("", 422)):
            r = client.get(path, params={"session_id": session_id})
            assert r.status_code == code and "card setup" in r.text and "refresh" not in r.text
    assert count(cloud_obj, mandates.mandates) == 0


def test_the_step_to_checkout_of_a_card_saved_already_goes_straight_back(client, cloud_obj, fake):
    with cloud_obj.engine.begin() as conn:
        url = card(cloud_obj).enrol(conn, 1, "http://testserver/m/m-1", utcnow())
    checkout(client, fake, url)
    r = client.get(url.replace("http://testserver", ""))  # the back button, after saving
    assert r.status_code == 303 and r.headers["location"].startswith("/pay/stripe/saved?session_id=cs_test_")
    assert client.get(r.headers["location"]).headers["location"] == "/m/m-1"


def test_an_abandoned_checkout_saves_nothing_and_the_purchase_asks_to_set_up_again(client, cloud_obj, fake):
    with cloud_obj.engine.begin() as conn:
        url = card(cloud_obj).enrol(conn, 1, "http://testserver/m/m-1", utcnow())
    session_id = url.split("session_id=")[1]
    r = client.get("/pay/stripe/saved", params={"session_id": session_id})  # back without a card
    assert r.status_code == 409 and "Nothing was charged" in r.text
    with cloud_obj.engine.begin() as conn:
        with pytest.raises(orders.OrderError) as info:
            orders.place(conn, cloud_obj.provider, 1, MACHINE, "A1", "k-0001", utcnow(), 30.0)
    assert info.value.code == "no_mandate" and count(cloud_obj, payment_ops) == 0


def test_the_card_saved_webhook_makes_the_mandate_once(client, cloud_obj, fake):
    with cloud_obj.engine.begin() as conn:
        url = card(cloud_obj).enrol(conn, 1, "http://testserver/m/m-1", utcnow())
    back = checkout(client, fake, url)  # the webhook comes before the phone does
    event = next(e for e in fake.events if e["type"] == "setup_intent.succeeded")
    r = hook(client, event)
    assert r.status_code == 200 and r.json()["did"] == "mandate activated"
    with cloud_obj.engine.connect() as conn:
        assert mandates.active(conn, 1, "stripe").reference.endswith("/" + event["data"]["object"]["payment_method"])
    assert hook(client, event).json()["duplicate"] is True
    r = client.get(back.replace("http://testserver", ""))  # the phone, late: still back to the machine
    assert (r.status_code, r.headers["location"]) == (303, "/m/m-1")
    # Another system on the same Stripe account saving a card with one of our customer ids: ignored.
    stray = json.loads(json.dumps(event))
    stray["id"] = "evt_stray_1"
    stray["data"]["object"].update(customer="cus_someone_else", payment_method="pm_someone_else")
    assert hook(client, stray).json()["did"] == "no card of that Stripe customer was being saved for them"
    with cloud_obj.engine.connect() as conn:
        assert "pm_someone_else" not in mandates.active(conn, 1, "stripe").reference
    for other in ("checkout.session.completed", "payment_method.attached"):
        ev = next(e for e in fake.events if e["type"] == other)
        assert hook(client, ev).json()["did"] == f"{other}: nothing to do"


def authenticating_order(client, cloud_obj, fake, key="k-auth-0001"):
    with cloud_obj.engine.begin() as conn:
        order = orders.place(conn, cloud_obj.provider, 1, MACHINE, "A1", key, utcnow(), 30.0)[0]
    deliver(cloud_obj)
    with cloud_obj.engine.connect() as conn:
        action = card(cloud_obj).action_url(conn, order)
    assert action.startswith(fake.base_url + "/3ds/")
    return order, action


def test_a_hold_confirmed_by_webhook_after_authentication_sends_the_vend_and_bad_deliveries_change_nothing(
        client, cloud_obj, fake):
    import httpx

    save_card(cloud_obj, client, fake, number=AUTHENTICATE_CARD)
    order, action = authenticating_order(client, cloud_obj, fake)
    assert status(cloud_obj, order.id) == orders.WAITING and cloud_obj.sent == []
    httpx.post(action, data={"outcome": "complete"})
    event = fake.events[-1]
    assert event["type"] == "payment_intent.amount_capturable_updated"
    before = count(cloud_obj, webhook_events)
    # Forged (another secret), stale, unsigned, or a body changed after signing: refused, nothing written.
    body = json.dumps(event).encode()
    assert hook(client, event, secret="whsec_not_ours").status_code == 401
    assert hook(client, event, timestamp=int(time.time()) - 301).status_code == 401
    assert client.post(HOOK, content=body).status_code == 401
    tampered = body.replace(b'"amount": 350', b'"amount": 1')
    assert client.post(HOOK, content=tampered, headers={
        "Stripe-Signature": signature_header(WEBHOOK_SECRET, body)}).status_code == 401
    assert count(cloud_obj, webhook_events) == before and status(cloud_obj, order.id) == orders.WAITING
    # Signed with the secret but naming another amount or currency, or no order of ours: ignored.
    for i, change in enumerate(({"amount": 1}, {"currency": "usd"}, {"metadata": {"order_id": "o-nope",
                                                                                  "op_key": "authorise:o-nope"}})):
        odd = json.loads(body)
        odd["id"] = f"evt_odd_{i}"
        odd["data"]["object"].update(change)
        r = hook(client, odd)
        assert r.status_code == 200 and r.json()["ignored"] == "no such order"
    assert status(cloud_obj, order.id) == orders.WAITING and cloud_obj.sent == []
    # The genuine one: the order is authorised and the vend sent; again, nothing more.
    r = hook(client, event)
    assert r.json()["status"] == "authorised" and cloud_obj.sent == [order.id]
    assert hook(client, event).json()["duplicate"] is True and cloud_obj.sent == [order.id]
    # The phone comes back from the bank's page after the webhook: nothing changes either.
    r = client.get(f"/pay/stripe/return/{order.id}")
    assert (r.status_code, r.headers["location"]) == (303, f"/orders/{order.id}")
    assert cloud_obj.sent == [order.id]


def test_the_phone_coming_back_from_authentication_moves_the_order_before_any_webhook(client, cloud_obj, fake):
    import httpx

    save_card(cloud_obj, client, fake, number=AUTHENTICATE_CARD)
    order, action = authenticating_order(client, cloud_obj, fake)
    back = httpx.post(action, data={"outcome": "complete"}).headers["location"]
    assert back.startswith(f"http://testserver/pay/stripe/return/{order.id}?payment_intent=pi_")
    r = client.get(back.replace("http://testserver", ""))
    assert (r.status_code, r.headers["location"]) == (303, f"/orders/{order.id}")
    assert status(cloud_obj, order.id) == "authorised" and cloud_obj.sent == [order.id]
    # The webhook arriving afterwards changes nothing.
    assert hook(client, fake.events[-1]).json()["status"] == "authorised" and cloud_obj.sent == [order.id]
    assert client.get("/pay/stripe/return/no-such-order").status_code == 303


def test_a_card_removed_at_stripe_is_refused_at_the_next_purchase_and_the_buyer_asked_to_choose_again(
        client, cloud_obj, fake):
    save_card(cloud_obj, client, fake)
    with cloud_obj.engine.connect() as conn:
        pm = mandates.active(conn, 1, "stripe").reference.split("/")[1]
    fake.detach(pm)
    assert hook(client, fake.events[-1]).json()["did"] == "mandate of customer 1 revoked"
    with cloud_obj.engine.begin() as conn:
        with pytest.raises(orders.OrderError) as info:
            orders.place(conn, cloud_obj.provider, 1, MACHINE, "A1", "k-0002", utcnow(), 30.0)
    assert info.value.code == "no_mandate"
    assert count(cloud_obj, payment_ops) == 0 and not [o for o in fake.objects.values()
                                                      if o["object"] == "payment_intent"]


def test_stripes_report_imports_through_the_api_and_a_foreign_one_is_refused(client, cloud_obj, fake):
    save_card(cloud_obj, client, fake)
    with cloud_obj.engine.begin() as conn:
        order = orders.place(conn, cloud_obj.provider, 1, MACHINE, "A1", "k-0003", utcnow(), 30.0)[0]
    deliver(cloud_obj)
    with cloud_obj.engine.begin() as conn:
        cloud_obj.provider.capture(conn, orders.get(conn, order.id), order.id, utcnow())
    deliver(cloud_obj)
    r = client.post("/api/v1/finance/statements", params={"provider": "stripe"}, content=fake.report(), headers=ADMIN)
    assert r.status_code == 200, r.text
    assert count(cloud_obj, statement_lines) == 1
    r = client.post("/api/v1/finance/statements", params={"provider": "stripe"}, content=b"id,amount\n1,2\n",
                    headers=ADMIN)
    assert r.status_code == 422 and "itemized balance change report" in r.text
    assert count(cloud_obj, statement_lines) == 1


def test_a_customer_whose_card_was_removed_is_asked_to_choose_again_saves_a_new_one_and_buys(client, cloud_obj,
                                                                                              fake):
    client.get(f"/q/{qrtoken.make(MACHINE, QR_SECRET.encode(), time.time(), 5)}")
    r = post_form(client, "/register", dict(name="Di", phone="+8613800000088", payment_method="stripe", next="/m/m-1"))
    client.get(checkout(client, fake, r.headers["location"]).replace("http://testserver", ""))
    first_pm = next(o for o in fake.objects.values() if o["object"] == "payment_method")["id"]
    fake.detach(first_pm)  # the customer removed the card at their bank or at Stripe
    assert hook(client, fake.events[-1]).json()["did"].endswith("revoked")
    r = post_form(client, "/m/m-1/buy", {"slot": "A1", "key": "buy-key-0002"})
    assert (r.status_code, r.headers["location"]) == (303, "/account/payment?why=again&next=/m/m-1")
    page = client.get(r.headers["location"]).text
    assert "You withdrew your permission for Card, Apple Pay or Google Pay to be charged" in page
    assert count(cloud_obj, payment_ops) == 0  # nothing was charged
    token = re.search(r'name="csrf" value="([^"]*)"', page).group(1)
    r = client.post("/account/payment", data={"payment_method": "stripe", "next": "/m/m-1", "csrf": token})
    assert r.status_code == 303, r.text
    back = checkout(client, fake, r.headers["location"], OK_CARD)
    assert client.get(back.replace("http://testserver", "")).headers["location"] == "/m/m-1"
    r = post_form(client, "/m/m-1/buy", {"slot": "A1", "key": "buy-key-0003"})
    order_id = r.headers["location"].rsplit("/", 1)[1]
    deliver(cloud_obj)
    assert status(cloud_obj, order_id) == "authorised"
    [pi] = [o for o in fake.objects.values() if o["object"] == "payment_intent"]
    assert pi["payment_method"] != first_pm
    sessions = [o for o in fake.objects.values() if o["object"] == "checkout.session"]
    assert len(sessions) == 2 and {s["customer"] for s in sessions} == {pi["customer"]}  # one Stripe customer


def test_a_webhook_secret_file_gone_after_start_refuses_deliveries_and_crashes_nothing(client, cloud_obj):
    event = {"id": "evt_x", "type": "setup_intent.succeeded", "data": {"object": {}}}
    os.remove(cloud_obj.settings.stripe_webhook_secret_file)
    r = hook(client, event)
    assert r.status_code == 401 and "cannot check the signature" in r.text and "whsec_" not in r.text
    assert count(cloud_obj, webhook_events) == 0
    assert client.get("/api/v1/health").status_code == 200  # still serving
