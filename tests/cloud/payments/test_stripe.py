"""Cards through Stripe (cloud/payments/stripe/): Stripe's own library against the local fake of its API
(tests/fakes/stripe.py) on a real socket. A card saved through Checkout in setup mode; a purchase held
(manual capture), captured or cancelled; authentication on the spot; timeouts and lost replies retried
under the same key after asking Stripe; refunds; an off-session charge for a late drop; the signed
webhook; the balance report imported and matched; a revoked card refused before anything is charged."""

import json
import os
import time

import httpx
import pytest
import sqlalchemy as sa

import cloud.core.db
import cloud.payments.stripe as stripe_provider
from cloud.accounts.journal import account, balance, txns
from cloud.payments import Payments, mandates
from cloud.payments.outbox import payment_ops
from cloud.payments.statement import FEES, StatementRefused, compare, import_statement
from cloud.payments.stripe import notices, report
from cloud.payments.stripe.platform import Mandate, StripePlatform
from cloud.sales import orders
from tests.cloud.payments.stripe_world import (API_KEY, AUTHENTICATE_CARD, DECLINED_CARD, PUBLIC, WEBHOOK_SECRET, Running, later, op_rows)
from tests.cloud_fixtures import MACHINE, NOW, add_customer, add_machine, db_url, slot_spec  # noqa: F401
from tests.fakes.stripe import signature_header


@pytest.fixture
def engine(db_url):
    eng = cloud.core.db.make_engine(db_url)
    cloud.core.db.migrate(eng)
    with eng.begin() as conn:
        add_machine(conn, specs=[slot_spec("A1", 350), slot_spec("A2", 200, "water", "Water")])
        add_customer(conn, phone="+8613800000001", topup=0, method="stripe")
    yield eng
    eng.dispose()


@pytest.fixture
def running():
    r = Running()
    yield r
    r.stop()


@pytest.fixture
def pay(running):
    return Payments(stripe=running.provider)


def place(engine, pay, slot="A1", key="key-1", customer_id=1):
    with engine.begin() as conn:
        return orders.place(conn, pay, customer_id, MACHINE, slot, key, NOW, 30.0)[0]


def status_of(engine, order_id):
    with engine.connect() as conn:
        return orders.get(conn, order_id).status


def confirm_told(engine, running):
    """What the cloud does when the provider's worker tells it an authorisation ended (service.py)."""
    with engine.begin() as conn:
        for order_id, ok, reason in running.told:
            orders.confirm(conn, order_id, ok, reason, NOW, 30.0)
    running.told.clear()


def posts(running, path_prefix):
    return [(p, k) for m, p, k in running.fake.requests if m == "POST" and p.startswith(path_prefix)]


# -- the package and the library --------------------------------------------------------------------

def test_import_stripe_is_stripes_library_inside_and_outside_our_package():
    import stripe

    assert os.sep + "site-packages" + os.sep in stripe.__file__
    assert stripe_provider.platform.stripe is stripe and notices.stripe is stripe
    assert hasattr(stripe, "StripeClient") and stripe_provider.__name__ == "cloud.payments.stripe"


# -- registration: a card saved through Checkout in setup mode ---------------------------------------

def test_registration_saves_the_card_at_stripe_and_the_mandate_is_its_customer_and_payment_method(engine, running):
    with engine.begin() as conn:
        url = running.provider.enrol(conn, 1, PUBLIC + "/m/m-1", NOW)
        assert mandates.get(conn, 1, "stripe").status == "pending"
    url = running.stripe_page(url)
    assert url.startswith(running.fake.base_url + "/c/pay/cs_test_")
    page = httpx.get(url)
    assert "Card number" in page.text  # typed on Stripe's page, never on ours
    r = httpx.post(url, data={"cardnumber": "4242 4242 4242 4242"})
    assert r.status_code == 303 and r.headers["location"].startswith(PUBLIC + "/pay/stripe/saved?session_id=cs_")
    owner, mandate = running.platform.session_mandate(r.headers["location"].split("=")[1])
    with engine.begin() as conn:
        assert running.provider.saved(conn, int(owner), mandate, NOW)
        found = mandates.active(conn, 1, "stripe")
        assert not running.provider.saved(conn, int(owner), mandate, NOW)  # the webhook again: nothing new
    assert found.reference == f"{mandate.customer}/{mandate.payment_method}"
    assert found.reference.startswith("cus_") and "/pm_" in found.reference and found.detail["next"] == "/m/m-1"
    session = [o for o in running.fake.objects.values() if o["object"] == "checkout.session"][0]
    assert (session["mode"], session["currency"], session["metadata"]) == ("setup", "cny", {"customer_id": "1"})
    # Every request carried a key: the customer's creation once per customer, the session per attempt.
    assert [k for _, k in posts(running, "/v1/")] == ["customer:1", f"setup:1:{NOW.timestamp():.6f}"]


def test_a_card_declined_on_checkout_saves_nothing(engine, running):
    with engine.begin() as conn:
        url = running.stripe_page(running.provider.enrol(conn, 1, PUBLIC + "/", NOW))
    r = httpx.post(url, data={"cardnumber": "4000000000000002"})
    assert r.status_code == 402 and "Your card was declined." in r.text
    owner, mandate = running.platform.session_mandate(url.rsplit("/", 1)[1])
    assert (owner, mandate) == ("1", None)
    with engine.connect() as conn:
        assert mandates.active(conn, 1, "stripe") is None


def test_registration_with_stripe_unreachable_goes_on_and_the_card_is_asked_for_at_the_first_purchase(engine, running,
                                                                                                       pay):
    running.fake.down = 5
    with engine.begin() as conn:
        assert running.provider.enrol(conn, 1, PUBLIC + "/", NOW) is None
        assert mandates.get(conn, 1, "stripe").status == "pending"
    with pytest.raises(orders.OrderError) as info:
        place(engine, pay)
    assert info.value.code == "no_mandate"


# -- a purchase: held, then captured or cancelled -----------------------------------------------------

def test_a_purchase_is_held_on_the_saved_card_then_captured_when_it_drops(engine, running, pay):
    running.save_card(engine, 1)
    order = place(engine, pay)
    assert order.status == orders.WAITING
    running.deliver(engine)
    pi = running.intent_of(order.id)
    assert (pi["status"], pi["capture_method"], pi["off_session"], pi["amount"], pi["currency"]) == \
        ("requires_capture", "manual", False, 350, "cny")
    assert pi["metadata"]["order_id"] == order.id and pi["description"] == f"vend order {order.id}"
    assert running.told == [(order.id, True, "")]
    confirm_told(engine, running)
    with engine.begin() as conn:
        assert pay.capture(conn, orders.get(conn, order.id), order.id, NOW).pending
    running.deliver(engine)
    assert (pi["status"], pi["amount_received"]) == ("succeeded", 350)
    with engine.connect() as conn:
        assert balance(conn, account(conn, "revenue", 0, "CNY")) == 350
        assert balance(conn, account(conn, "stripe", 0, "CNY")) == -350
        assert conn.execute(sa.select(txns.c.key)).scalars().all() == [f"stripe:capture:{order.id}"]
    # Every call carried its op's key as Stripe's Idempotency-Key.
    assert posts(running, "/v1/payment_intents") == [
        ("/v1/payment_intents", f"authorise:{order.id}"), (f"/v1/payment_intents/{pi['id']}/capture",
                                                           f"capture:{order.id}")]


def test_a_jam_cancels_the_hold_and_nothing_is_taken(engine, running, pay):
    running.save_card(engine, 1)
    order = place(engine, pay)
    running.deliver(engine)
    confirm_told(engine, running)
    with engine.begin() as conn:
        pay.void(conn, orders.get(conn, order.id), order.id, NOW)
    running.deliver(engine)
    pi = running.intent_of(order.id)
    assert (pi["status"], pi["amount_received"]) == ("canceled", 0)
    assert [(r.op, r.status) for r in op_rows(engine, order.id)] == [("authorise", "succeeded"), ("void", "succeeded")]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(txns)).scalar() == 0


def test_a_declined_card_declines_the_order_with_the_banks_reason(engine, running, pay):
    running.save_card(engine, 1, DECLINED_CARD)
    order = place(engine, pay)
    running.deliver(engine)
    assert running.told == [(order.id, False, "Your card was declined.")]
    assert op_rows(engine, order.id)[0].status == "declined"


# -- authentication on the spot ------------------------------------------------------------------------

@pytest.mark.parametrize("passes", [True, False])
def test_a_payment_that_needs_authentication_sends_the_phone_there_and_back(engine, running, pay, passes):
    running.save_card(engine, 1, AUTHENTICATE_CARD)
    order = place(engine, pay)
    running.deliver(engine)
    assert running.told == [] and status_of(engine, order.id) == orders.WAITING
    with engine.connect() as conn:
        action = pay.of(orders.get(conn, order.id)).action_url(conn, orders.get(conn, order.id))
    pi = running.intent_of(order.id)
    assert action == f"{running.fake.base_url}/3ds/{pi['id']}" and pi["status"] == "requires_action"
    assert "Complete authentication" in httpx.get(action).text
    r = httpx.post(action, data={"outcome": "complete" if passes else "fail"})
    back = r.headers["location"]
    assert back.startswith(f"{PUBLIC}/pay/stripe/return/{order.id}?payment_intent={pi['id']}")
    assert running.provider.returned(engine, order.id, NOW) == ("succeeded" if passes else "declined")
    assert running.told == [(order.id, passes, "" if passes else "The provided PaymentMethod has failed "
                                                                  "authentication.")]
    assert running.provider.returned(engine, order.id, NOW) == ("succeeded" if passes else "declined")
    assert len(running.told) == 1  # the return page again changes nothing
    assert pi["status"] == ("requires_capture" if passes else "requires_payment_method")


# -- failures: timeouts, lost replies ----------------------------------------------------------------

def test_stripe_down_is_retried_later_under_the_same_key_after_asking_stripe(engine, running, pay):
    running.save_card(engine, 1)
    order = place(engine, pay)
    running.fake.down = 1
    running.deliver(engine)
    row = op_rows(engine, order.id)[0]
    assert (row.status, row.attempts) == ("queued", 1) and "HTTP 503" in row.reason
    assert running.provider.counts["stripe_unreachable"] == 1
    running.deliver(engine, later(1))
    assert op_rows(engine, order.id)[0].attempts == 1  # not due yet: backoff
    running.deliver(engine, later(2))
    assert op_rows(engine, order.id)[0].status == "succeeded"
    requests = [(m, p, k) for m, p, k in running.fake.requests if p.startswith("/v1/payment_intents")]
    assert requests == [("POST", "/v1/payment_intents", f"authorise:{order.id}"),  # the 503
                        ("GET", "/v1/payment_intents", None),  # asked first: Stripe has nothing
                        ("POST", "/v1/payment_intents", f"authorise:{order.id}")]
    assert len(running.intents()) == 1


def test_a_lost_reply_is_found_at_stripe_not_sent_again(engine, running, pay):
    running.save_card(engine, 1)
    order = place(engine, pay)
    running.fake.lose_replies = 1
    running.deliver(engine)
    assert op_rows(engine, order.id)[0].status == "queued" and len(running.intents()) == 1
    running.deliver(engine, later(2))
    row = op_rows(engine, order.id)[0]
    assert (row.status, row.platform_ref) == ("succeeded", running.intent_of(order.id)["id"])
    assert len(posts(running, "/v1/payment_intents")) == 1  # found by its key, never created twice
    assert running.told == [(order.id, True, "")]


def test_a_capture_that_timed_out_is_asked_again_under_its_key_and_captures_once(engine, running, pay):
    running.save_card(engine, 1)
    running.platform = running.provider.platform = StripePlatform(API_KEY, running.fake.base_url, 0.5)
    order = place(engine, pay)
    running.deliver(engine)
    confirm_told(engine, running)
    with engine.begin() as conn:
        pay.capture(conn, orders.get(conn, order.id), order.id, NOW)
    running.fake.slow = 1  # Stripe captures, but answers after the client gave up (0.5 s)
    running.deliver(engine)
    row = [r for r in op_rows(engine, order.id) if r.op == "capture"][0]
    assert (row.status, row.attempts) == ("queued", 1) and "did not answer" in row.reason
    assert running.intent_of(order.id)["status"] == "succeeded"  # it did take effect at Stripe
    running.deliver(engine, later(2))
    row = [r for r in op_rows(engine, order.id) if r.op == "capture"][0]
    assert row.status == "succeeded"
    captures = posts(running, f"/v1/payment_intents/{running.intent_of(order.id)['id']}/capture")
    assert [k for _, k in captures] == [f"capture:{order.id}"] * 2  # the same key: Stripe replays its answer
    assert running.intent_of(order.id)["amount_received"] == 350
    with engine.connect() as conn:
        assert balance(conn, account(conn, "revenue", 0, "CNY")) == 350  # posted once


@pytest.mark.parametrize("rounds, authorisation", [((1, 5), "declined"), ((5,), "succeeded")])
def test_a_void_after_a_lost_authorisation_cancels_the_hold_stripe_made(engine, running, pay, rounds, authorisation):
    """The void goes first (the authorisation waits out its backoff) and finds the hold by its key; or both
    go in one round, the authorisation first. Either way Stripe's hold is cancelled."""
    running.save_card(engine, 1)
    order = place(engine, pay)
    running.fake.lose_replies = 1
    running.deliver(engine)  # Stripe made the hold; the cloud never heard
    with engine.begin() as conn:
        pay.void(conn, orders.get(conn, order.id), "gave-up", NOW)  # the order timed out meanwhile
    for seconds in rounds:
        running.deliver(engine, later(seconds))
    assert running.intent_of(order.id)["status"] == "canceled"
    assert [(r.op, r.status) for r in op_rows(engine, order.id)] == [("authorise", authorisation),
                                                                     ("void", "succeeded")]


def test_a_hold_made_after_its_void_found_nothing_is_released(engine, running, pay):
    """Stripe was down for the authorisation; the order gave up and its void found nothing to cancel; then
    the authorisation went through. The hold is cancelled at once: nothing stays on the card."""
    running.save_card(engine, 1)
    order = place(engine, pay)
    running.fake.down = 1
    running.deliver(engine)
    with engine.begin() as conn:
        pay.void(conn, orders.get(conn, order.id), "gave-up", NOW)
    running.deliver(engine, later(1))  # only the void is due: Stripe has no payment for the order yet
    assert [(r.op, r.status, r.reason) for r in op_rows(engine, order.id)][1] == (
        "void", "succeeded", "nothing was held at Stripe")
    running.deliver(engine, later(2))
    assert running.intent_of(order.id)["status"] == "canceled"
    assert [(r.op, r.key.split(":", 1)[1], r.status) for r in op_rows(engine, order.id)] == [
        ("authorise", order.id, "succeeded"), ("void", "gave-up", "succeeded"),
        ("void", f"{order.id}:late:after-void", "succeeded")]


def test_a_refund_whose_reply_was_lost_refunds_once(engine, running, pay):
    running.save_card(engine, 1)
    order = place(engine, pay)
    running.deliver(engine)
    confirm_told(engine, running)
    with engine.begin() as conn:
        pay.capture(conn, orders.get(conn, order.id), order.id, NOW)
    running.deliver(engine)
    with engine.begin() as conn:
        assert pay.refund(conn, orders.get(conn, order.id), 100, "refund-1", NOW).pending
    running.fake.lose_replies = 1
    running.deliver(engine)
    running.deliver(engine, later(2))
    refunds = [o for o in running.fake.objects.values() if o["object"] == "refund"]
    assert [(r["amount"], r["metadata"]["op_key"]) for r in refunds] == [(100, "refund:refund-1")]
    assert len(posts(running, "/v1/refunds")) == 1
    with engine.connect() as conn:
        assert pay.refunded(conn, orders.get(conn, order.id)) == (350, 100)
        assert balance(conn, account(conn, "revenue", 0, "CNY")) == 250


# -- a late drop: charged off-session on the saved card -------------------------------------------------

def test_a_product_that_dropped_after_the_void_is_charged_off_session(engine, running, pay):
    running.save_card(engine, 1)
    order = place(engine, pay)
    with engine.begin() as conn:
        outcome = pay.charge(conn, orders.get(conn, order.id), f"{order.id}:dropped", NOW)
    assert outcome.ok and outcome.pending
    running.deliver(engine)
    charged = [pi for pi in running.intents() if pi["metadata"]["op_key"] == f"charge:{order.id}:dropped"][0]
    assert (charged["status"], charged["off_session"], charged["capture_method"]) == ("succeeded", True, "automatic")
    with engine.connect() as conn:
        assert pay.refunded(conn, orders.get(conn, order.id)) == (350, 0)
        assert balance(conn, account(conn, "revenue", 0, "CNY")) == 350


def test_an_off_session_charge_the_bank_wants_authenticated_is_declined_not_retried(engine, running, pay):
    running.save_card(engine, 1, AUTHENTICATE_CARD)
    order = place(engine, pay)
    with engine.begin() as conn:
        pay.charge(conn, orders.get(conn, order.id), f"{order.id}:dropped", NOW)
    running.deliver(engine)
    row = [r for r in op_rows(engine, order.id) if r.op == "charge"][0]
    assert row.status == "declined" and "requires authentication" in row.reason


# -- a revoked card --------------------------------------------------------------------------------------

def test_a_card_removed_at_stripe_revokes_the_mandate_and_the_next_purchase_is_not_charged(engine, running, pay):
    reference = running.save_card(engine, 1)
    running.fake.detach(Mandate.of(reference).payment_method)
    body, headers = running.fake.signed(running.fake.events[-1])
    event = stripe_provider.event_of(notices.verify(WEBHOOK_SECRET, headers["Stripe-Signature"], body, 300))
    assert (event.type, event.data) == ("mandate.revoked", {"reference": reference})
    with engine.begin() as conn:
        assert running.provider.notified(conn, event, NOW) == "mandate of customer 1 revoked"
    with pytest.raises(orders.OrderError) as info:
        place(engine, pay)
    assert info.value.code == "no_mandate"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(payment_ops)).scalar() == 0
    running.deliver(engine)
    assert running.intents() == []


# -- webhooks: Stripe's signature, checked by Stripe's library -------------------------------------------

def signed_event(running, type_, obj, timestamp=None, secret=WEBHOOK_SECRET):
    ev = {"id": "evt_test_" + type_.replace(".", "_"), "object": "event", "type": type_, "data": {"object": obj},
          "created": int(time.time()), "api_version": "2026-10-28.endive"}
    body = json.dumps(ev).encode()
    return body, signature_header(secret, body, timestamp)


def test_a_signed_event_verifies_and_a_forged_stale_or_unsigned_one_is_refused(running):
    obj = {"id": "pi_1", "object": "payment_intent", "amount": 350, "currency": "cny", "status": "requires_capture",
           "metadata": {"order_id": "o1", "op_key": "authorise:o1"}}
    body, header = signed_event(running, "payment_intent.amount_capturable_updated", obj)
    event = stripe_provider.event_of(notices.verify(WEBHOOK_SECRET, header, body, 300))
    assert (event.type, event.order_id, event.amount, event.currency) == ("authorisation.succeeded", "o1", 350, "CNY")
    forged = body.replace(b"350", b"1")
    for why, args in (("signature", (WEBHOOK_SECRET, header, forged)),
                      ("signature", ("whsec_another_secret", header, body)),
                      ("signature", (WEBHOOK_SECRET, None, body)),
                      ("stale", (WEBHOOK_SECRET, signed_event(running, "x.y", obj, int(time.time()) - 301)[1],
                                 signed_event(running, "x.y", obj)[0]))):
        with pytest.raises(notices.NoticeRefused) as info:
            notices.verify(*args, 300)
        assert info.value.why == why
    old_body, old_header = signed_event(running, "payment_intent.payment_failed", obj, int(time.time()) - 301)
    with pytest.raises(notices.NoticeRefused, match="tolerance"):
        notices.verify(WEBHOOK_SECRET, old_header, old_body, 300)
    junk = b"not json"
    with pytest.raises(notices.NoticeRefused) as info:
        notices.verify(WEBHOOK_SECRET, signature_header(WEBHOOK_SECRET, junk), junk, 300)
    assert info.value.why == "malformed"


def test_the_events_that_matter_read_as_the_routes_events():
    def ev(type_, obj, previous=None):
        data = {"object": obj, **({"previous_attributes": previous} if previous else {})}
        return stripe_provider.event_of(notices.parse(json.dumps({"id": "evt_1", "type": type_, "data": data}).encode()))

    seti = {"id": "seti_1", "customer": "cus_1", "payment_method": "pm_1", "metadata": {"customer_id": "7"}}
    e = ev("setup_intent.succeeded", seti)
    assert (e.type, e.data["customer_id"], e.data["reference"]) == ("mandate.activated", 7, "cus_1/pm_1")
    failed = {"id": "pi_1", "amount": 350, "currency": "cny", "metadata": {"order_id": "o1", "op_key": "authorise:o1"},
              "last_payment_error": {"message": "Your card was declined."}}
    e = ev("payment_intent.payment_failed", failed)
    assert (e.type, e.order_id, e.reason) == ("authorisation.declined", "o1", "Your card was declined.")
    charge = {**failed, "metadata": {"order_id": "o1", "op_key": "charge:o1:dropped"}}
    assert ev("payment_intent.payment_failed", charge).type == "payment_intent.payment_failed"  # not the order's hold
    e = ev("payment_method.detached", {"id": "pm_1", "customer": None}, {"customer": "cus_1"})
    assert (e.type, e.data) == ("mandate.revoked", {"reference": "cus_1/pm_1"})
    assert ev("charge.refunded", {"id": "ch_1"}).type == "charge.refunded"  # acknowledged, changes nothing


# -- the statement: the itemized balance change report ------------------------------------------------------

def sold_and_refunded(engine, running, pay):
    running.save_card(engine, 1)
    order = place(engine, pay)
    running.deliver(engine)
    confirm_told(engine, running)
    with engine.begin() as conn:
        pay.capture(conn, orders.get(conn, order.id), order.id, NOW)
    running.deliver(engine)
    with engine.begin() as conn:
        pay.refund(conn, orders.get(conn, order.id), 150, "refund-1", NOW)
    running.deliver(engine)
    return order


def test_stripes_report_is_imported_matched_to_the_orders_and_its_fees_posted(engine, running, pay):
    order = sold_and_refunded(engine, running, pay)
    data = running.fake.report()
    lines = stripe_provider.statement(None, data)
    assert [(line.kind, line.order_id, line.amount, line.fee, line.currency) for line in lines] == [
        ("capture", order.id, 350, 40, "CNY"), ("refund", order.id, 150, 0, "CNY")]
    with engine.begin() as conn:
        # The journal posted when Stripe answered (NOW); the report says when Stripe settled: today.
        conn.execute(txns.update().values(created_at=lines[0].at))
        done = import_statement(conn, "stripe", "stripe", lines, data, NOW)
        assert done["fees"] == {"CNY": 40} and done["new"] == 2
        assert import_statement(conn, "stripe", "stripe", lines, data, NOW)["new"] == 0  # once
        # Stripe kept 40: an expense, which runs negative in this journal (a DEBIT_KIND), against Stripe's account.
        assert balance(conn, account(conn, FEES, 0, "CNY")) == -40
        assert balance(conn, account(conn, "stripe", 0, "CNY")) == -350 + 150 + 40
        assert compare(conn, "stripe", lines[0].at, later(10 ** 9)) == []


def test_a_refund_made_in_stripes_dashboard_is_listed_as_not_in_the_journal(engine, running, pay):
    running.save_card(engine, 1)
    order = place(engine, pay)
    running.deliver(engine)
    confirm_told(engine, running)
    with engine.begin() as conn:
        pay.capture(conn, orders.get(conn, order.id), order.id, NOW)
    running.deliver(engine)
    # Someone refunds at Stripe itself, not through the cloud: the report names the order in its description.
    running.platform.client.v1.refunds.create({"payment_intent": running.intent_of(order.id)["id"], "amount": 150})
    data = running.fake.report()
    lines = stripe_provider.statement(None, data)
    assert [(line.kind, line.order_id) for line in lines] == [("capture", order.id), ("refund", order.id)]
    with engine.begin() as conn:
        conn.execute(txns.update().values(created_at=lines[0].at))
        import_statement(conn, "stripe", "stripe", lines, data, NOW)
        found = compare(conn, "stripe", lines[0].at, later(10 ** 9))
    assert [(m["kind"], m["order_id"], m["statement"], m["journal"]) for m in found] == [
        ("statement_not_in_journal", order.id, 150, 0)]


@pytest.mark.parametrize("damage, reason", [
    (lambda d: d[:-30], "cut short"),
    (lambda d: d.rsplit(b"\n", 2)[0] + b"\n", None),  # a whole last line dropped is still a report: it parses
    (lambda d: b"id,Type,Amount\ntxn_1,charge,3.50\n", "no column"),
    (lambda d: b"", "empty"),
    (lambda d: d.replace(b",3.10,", b",3.11,"), "is not net"),
    (lambda d: b"\xff\xfe" + d, "not UTF-8"),
])
def test_a_damaged_wrong_or_foreign_report_is_refused_with_the_reason(engine, running, pay, damage, reason):
    sold_and_refunded(engine, running, pay)
    data = damage(running.fake.report())
    if reason is None:
        assert len(report.parse(data)) == 1
        return
    with pytest.raises(StatementRefused, match=reason):
        report.parse(data)


# -- its settings: keys from files of mode 0600 --------------------------------------------------------------

def settings_with(tmp_path, key="sk_test_4eC39HqLyjWDarjtT1zdp7dc", secret="whsec_abc", key_mode=0o600, **more):
    from cloud.core.settings import Settings

    key_file, secret_file = tmp_path / "stripe.key", tmp_path / "stripe.whsec"
    key_file.write_text(key + "\n")
    secret_file.write_text(secret + "\n")
    os.chmod(key_file, key_mode)
    os.chmod(secret_file, 0o600)
    return Settings(var=str(tmp_path), stripe_key_file=str(key_file), stripe_webhook_secret_file=str(secret_file),
                    **more).resolve()


def test_the_keys_are_read_from_0600_files_and_a_bad_one_stops_the_cloud_naming_the_file(tmp_path):
    card = stripe_provider.build(settings_with(tmp_path, public_url="https://vend.example"))
    assert card.live and card.public_url == "https://vend.example" and card.webhook_secret == "whsec_abc"
    for kwargs, message in (({"key_mode": 0o644}, "stripe.key: others may read it"),
                            ({"key": "pk_test_publishable"}, "not a Stripe secret key"),
                            ({"secret": "not-a-whsec"}, "not a webhook signing secret"),
                            ({"stripe_timeout_s": 0.0}, "--stripe-timeout"),
                            ({"stripe_currency": "cny"}, "--stripe-currency")):
        with pytest.raises(SystemExit, match=message):
            stripe_provider.build(settings_with(tmp_path, **kwargs))
    missing = settings_with(tmp_path)
    missing.stripe_key_file = str(tmp_path / "nowhere.key")
    with pytest.raises(SystemExit, match="nowhere.key: cannot read it"):
        stripe_provider.build(missing)
    assert not stripe_provider.offered(None) and stripe_provider.build(None).live is False


def test_the_secret_key_never_reaches_the_log(tmp_path, caplog, running):
    caplog.set_level("DEBUG")
    running.fake.down = 1
    with pytest.raises(Exception):
        running.platform.create_customer("customer:9", 9)
    assert "sk_test_" not in caplog.text and "whsec_" not in caplog.text


def test_another_accounts_report_is_refused(running):
    """Another merchant's payments carry none of our order ids (in their metadata or description)."""
    customer = running.platform.client.v1.customers.create({}).id
    pm = {"id": "pm_other", "object": "payment_method", "customer": customer, "card": {"_behaviour": "ok"}}
    running.fake.objects["pm_other"] = pm
    running.platform.client.v1.payment_intents.create({"amount": 1000, "currency": "cny", "customer": customer,
                                                       "payment_method": "pm_other", "confirm": True,
                                                       "description": "Subscription"})
    data = running.fake.report()
    assert b"Subscription" in data
    with pytest.raises(StatementRefused, match="another Stripe account"):
        report.parse(data)
