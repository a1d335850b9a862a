"""The sandbox external provider (cloud/payments/sandbox/, webhook.py, routes.py):
the worker that sends queued requests over HTTP, the signed webhook as the cloud receives it, and an order
that waits in ``authorising`` until the provider's word."""

import json
import logging
import time
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.sales import orders
from cloud import people
from cloud.core.db import utcnow
from cloud.payments import Payments, Sandbox, txns, webhook_events
from cloud.payments.sandbox import Unreachable, ops
from cloud.payments.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookRefused, parse, sign, verify
from cloud.payments.sandbox.server import Books
from tests.cloud_fixtures import (MACHINE, NOW, FakeSandbox, add_customer, add_machine, db_url, idle_cloud, slot_spec, unbalanced_txns)

SECRET = "webhook-secret-for-tests"
HOOK = "/api/v1/payments/webhook/sandbox"


# -- the signature -----------------------------------------------------------------------------------

def test_a_signature_verifies_only_for_its_secret_body_and_timestamp():
    body, t = b'{"id":"evt_1"}', 1_700_000_000
    good = sign(SECRET.encode(), t, body)
    verify(SECRET.encode(), str(t), good, body, t + 5, 300)
    for secret, ts, sig, payload in ((b"other-secret-0000", str(t), good, body),
                                     (SECRET.encode(), str(t + 1), good, body),
                                     (SECRET.encode(), str(t), good, body + b" "),
                                     (SECRET.encode(), str(t), good[:-1] + "0", body),
                                     (SECRET.encode(), str(t), "", body), (SECRET.encode(), None, good, body),
                                     (SECRET.encode(), "12ab", good, body), (SECRET.encode(), str(t), "é" * 64, body)):
        with pytest.raises(WebhookRefused) as info:
            verify(secret, ts, sig, payload, t + 5, 300)
        assert info.value.why == "signature"


@pytest.mark.parametrize("age", [301, -301, 10_000])
def test_a_signature_outside_the_tolerance_is_stale(age):
    body, t = b"{}", 1_700_000_000
    with pytest.raises(WebhookRefused) as info:
        verify(SECRET.encode(), str(t), sign(SECRET.encode(), t, body), body, t + age, 300)
    assert info.value.why == "stale"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"id": "e1"}',
                                  b'{"id": "e 1", "type": "authorisation.succeeded", "data": {"reference": "o1", '
                                  b'"amount": 1, "currency": "CNY"}}',
                                  b'{"id": "e1", "type": "payment.stolen", "data": {"reference": "o1", "amount": 1, '
                                  b'"currency": "CNY"}}',
                                  b'{"id": "e1", "type": "authorisation.succeeded", "data": {"reference": "o1", '
                                  b'"amount": -1, "currency": "CNY"}}'])
def test_a_body_that_is_not_an_event_is_malformed(body):
    with pytest.raises(WebhookRefused) as info:
        parse(body)
    assert info.value.why == "malformed"


# -- the sandbox's own rules -------------------------------------------------------------------------

def test_the_sandbox_declines_amounts_ending_in_13_and_answers_each_key_once():
    books = Books(("13",), 2.0)
    declined = {"reference": "o1", "amount": 313, "currency": "CNY"}
    code, answer, events = books.handle("/v1/payments", "k1", declined, 100.0)
    assert (code, answer["status"]) == (202, "pending")
    assert events[0]["event"]["type"] == "authorisation.declined" and events[0]["due"] == 102.0
    assert books.handle("/v1/payments", "k1", declined, 101.0)[2] == []  # answered again, no second webhook
    assert books.handle("/v1/payments", "k1", {**declined, "amount": 314}, 101.0)[0] == 409
    assert books.handle("/v1/payments/o1/capture", "c1", {"amount": 313}, 103.0)[0] == 409
    code, answer, events = books.handle("/v1/payments", "k2", {"reference": "o2", "amount": 350, "currency": "CNY"},
                                        100.0)
    assert events[0]["event"]["type"] == "authorisation.succeeded"
    assert books.handle("/v1/payments", "k3", {"reference": "o2", "amount": 350, "currency": "CNY"}, 100.0)[0] == 409
    assert books.handle("/v1/payments", None, {"reference": "o3", "amount": 1, "currency": "CNY"}, 100.0)[0] == 400


# -- the worker ------------------------------------------------------------------------------------

@pytest.fixture
def engine(db_url):
    eng = cloud.core.db.make_engine(db_url)
    cloud.core.db.migrate(eng)
    with eng.begin() as conn:
        add_machine(conn, specs=[slot_spec("A1", 350), slot_spec("A2", 313, "gum", "Gum")])
        add_customer(conn, phone="+8613800000001", topup=0, method="sandbox")
    yield eng
    eng.dispose()


@pytest.fixture
def fake():
    return FakeSandbox()


@pytest.fixture
def pay(fake):
    return Payments(sandbox=Sandbox(fake.client(retries=2), confirm_timeout_s=60))


def place(engine, pay, slot="A1", key="key-1", now=NOW):
    with engine.begin() as conn:
        return orders.place(conn, pay, 1, MACHINE, slot, key, now, 30.0)[0]


def op_rows(engine, order_id):
    with engine.connect() as conn:
        return {r.key: r for r in conn.execute(sa.select(ops).where(ops.c.order_id == order_id))}


def deliver(pay, engine, at=NOW):
    sent = 0
    while n := pay.sandbox.deliver_due(engine, clock=lambda: at):
        sent += n
    return sent


def test_a_sandbox_order_waits_in_authorising_with_the_providers_deadline_and_no_money_moves(engine, pay):
    order = place(engine, pay)
    assert (order.status, order.provider) == ("authorising", "sandbox")
    assert order.expires_at == NOW + timedelta(seconds=60)
    assert [(r.op, r.status) for r in op_rows(engine, order.id).values()] == [("authorise", "queued")]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(txns)).scalar() == 0


def test_a_sandbox_order_in_a_cloud_without_the_sandbox_is_refused(engine):
    with pytest.raises(orders.OrderError) as info:
        place(engine, Payments())
    assert info.value.code == "payment_unavailable"


def test_a_cloud_restarted_without_the_sandbox_still_settles_its_orders_later(engine, pay, fake):
    from types import SimpleNamespace

    order = place(engine, pay)
    deliver(pay, engine)
    with engine.begin() as conn:
        row = SimpleNamespace(**orders.get(conn, order.id)._mapping)
        Payments().settle(conn, [(row, "void")], NOW)  # as the ingest would, with no --sandbox-url
    assert op_rows(engine, order.id)[f"void:{order.id}"].status == "queued"
    deliver(pay, engine)  # configured again: the void goes out
    assert fake.books.payments[order.id]["status"] == "voided"
    with pytest.raises(orders.OrderError):
        place(engine, Payments(), key="key-2")  # but no new order may pay by it


def test_the_worker_sends_the_authorisation_once_with_its_key(engine, pay, fake):
    order = place(engine, pay)
    assert deliver(pay, engine) == 1
    assert op_rows(engine, order.id)[f"authorise:{order.id}"].status == "pending"
    assert fake.requests == [("/v1/payments", f"authorise:{order.id}")]
    assert fake.books.payments[order.id]["status"] == "authorised"
    assert deliver(pay, engine) == 0


def test_an_unreachable_sandbox_is_retried_with_backoff_and_counted(engine, pay, fake):
    order = place(engine, pay)
    fake.down = True
    assert deliver(pay, engine) == 1
    row = op_rows(engine, order.id)[f"authorise:{order.id}"]
    assert (row.status, row.attempts) == ("queued", 1) and "did not answer" in row.reason
    assert row.next_try_at == NOW + timedelta(seconds=2)
    assert len(fake.requests) == 3  # the client's own retries: 1 + 2
    assert pay.sandbox.counts["sandbox_unreachable"] == 1
    assert deliver(pay, engine, NOW + timedelta(seconds=1)) == 0  # not due yet
    fake.down = False
    assert deliver(pay, engine, NOW + timedelta(seconds=2)) == 1
    assert op_rows(engine, order.id)[f"authorise:{order.id}"].status == "pending"


def test_a_reply_lost_after_the_sandbox_captured_is_retried_and_captures_once(engine, pay, fake):
    order = place(engine, pay)
    deliver(pay, engine)
    with engine.begin() as conn:
        pay.sandbox.confirm(conn, parse(json.dumps(fake.books.events.popitem()[1]["event"]).encode()), NOW)
        order = orders.get(conn, order.id)
        pay.capture(conn, order, order.id, NOW)
    handle, lost = fake.handle, []

    def lose_first_reply(request):
        response = handle(request)
        if not lost:
            lost.append(request.url.path)
            raise httpx.ReadTimeout("the reply was lost", request=request)
        return response

    pay.sandbox.client = fake.client(retries=2)
    pay.sandbox.client.http._transport = httpx.MockTransport(lose_first_reply)
    deliver(pay, engine)
    assert lost == [f"/v1/payments/{order.id}/capture"]
    assert [o["key"] for o in fake.operations(order.id, "capture")] == [f"capture:{order.id}"]
    assert op_rows(engine, order.id)[f"capture:{order.id}"].status == "succeeded"
    with engine.connect() as conn:
        kinds = conn.execute(sa.select(txns.c.kind).where(txns.c.order_id == order.id)).scalars().all()
        assert kinds == ["capture"] and unbalanced_txns(conn) == []


def test_a_refusal_is_recorded_as_failed_and_counted(engine, pay, fake, caplog):
    order = place(engine, pay)
    deliver(pay, engine)
    fake.books.payments[order.id]["status"] = "voided"  # changed at the provider's side
    with engine.begin() as conn:
        pay.sandbox.confirm(conn, parse(json.dumps(fake.books.events.popitem()[1]["event"]).encode()), NOW)
        pay.capture(conn, orders.get(conn, order.id), order.id, NOW)
    with caplog.at_level(logging.ERROR):
        deliver(pay, engine)
    row = op_rows(engine, order.id)[f"capture:{order.id}"]
    assert row.status == "failed" and "only an authorised one" in row.reason
    assert pay.sandbox.counts["sandbox_refused"] == 1 and "sandbox refused capture" in caplog.text
    with engine.connect() as conn:
        assert conn.execute(sa.select(txns).where(txns.c.order_id == order.id)).first() is None


def test_an_order_not_confirmed_in_time_is_declined_and_its_unsent_authorisation_never_sent(engine, pay, fake):
    fake.down = True
    order = place(engine, pay)
    deliver(pay, engine)  # tried, failed, queued again
    with engine.begin() as conn:
        assert orders.expire_due(conn, pay, NOW + timedelta(seconds=59), 10) == 0
        assert orders.expire_due(conn, pay, NOW + timedelta(seconds=61), 10) == 1
        row = orders.get(conn, order.id)
    assert (row.status, row.reason) == ("declined", "the payment provider did not confirm in time")
    rows = op_rows(engine, order.id)
    assert rows[f"authorise:{order.id}"].status == "cancelled" and rows[f"void:{order.id}"].status == "queued"
    fake.down, fake.requests[:] = False, []
    deliver(pay, engine, NOW + timedelta(hours=1))
    assert fake.requests == [(f"/v1/payments/{order.id}/void", f"void:{order.id}")]
    assert op_rows(engine, order.id)[f"void:{order.id}"].reason == "nothing was held"


# -- the webhook, through the cloud's HTTP API -------------------------------------------------------

@pytest.fixture
def cloud_obj(tmp_path, db_url, fake):
    settings = cloud.core.settings.Settings(var=str(tmp_path), db=db_url, broker="127.0.0.1:1",
                                       sandbox_url="http://sandbox.test", sandbox_secret=SECRET).resolve()
    obj = cloud.service.Cloud(settings)  # never started: no broker, no threads
    obj.provider.stop()
    obj.provider = Payments(sandbox=Sandbox(fake.client(), settings.sandbox_confirm_timeout_s))
    obj.sent = []
    obj.send_vend = lambda order: obj.sent.append(order.id)
    cloud.core.db.migrate(obj.engine)
    with obj.engine.begin() as conn:
        add_machine(conn, specs=[slot_spec("A1", 350), slot_spec("A2", 313, "gum", "Gum")])
        add_customer(conn, phone="+8613800000001", topup=0, method="sandbox")
    yield obj
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, "admintoken", b"k" * 32), follow_redirects=False) as c:
        yield c


def waiting_order(cloud_obj, fake, slot="A1"):
    """An order the sandbox has authorised (or declined), and the webhook it would send."""
    order = place(cloud_obj.engine, cloud_obj.provider, slot=slot, now=utcnow())
    deliver(cloud_obj.provider, cloud_obj.engine, utcnow())
    record = next(r for r in fake.books.events.values() if r["event"]["data"]["reference"] == order.id)
    return order, json.dumps(record["event"]).encode()


def post(client, body: bytes, timestamp=None, signature=None, secret=SECRET):
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {TIMESTAMP_HEADER: str(timestamp), "Content-Type": "application/json",
               SIGNATURE_HEADER: signature if signature is not None else sign(secret.encode(), timestamp, body)}
    return client.post(HOOK, content=body, headers=headers)


def state(cloud_obj, order_id):
    with cloud_obj.engine.connect() as conn:
        return (orders.get(conn, order_id).status,
                sorted((r.key, r.status) for r in conn.execute(sa.select(ops).where(ops.c.order_id == order_id))),
                conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar())


def test_a_customer_may_register_with_the_sandbox_and_buy_with_it(client, cloud_obj):
    from tests.cloud_fixtures import SECRET as QR_SECRET, post_form
    from protocol import token as qrtoken

    assert 'value="sandbox"' in client.get("/register").text
    client.get(f"/q/{qrtoken.make(MACHINE, QR_SECRET.encode(), time.time(), 5)}")
    r = post_form(client, "/register", dict(name="Bo", phone="+8613800000077", payment_method="sandbox", next="/m/m-1"))
    assert r.status_code == 303
    assert "Paying with the payment provider" in client.get("/m/m-1").text
    r = post_form(client, "/m/m-1/buy", {"slot": "A1", "key": "buy-key-0001"})
    assert r.status_code == 303
    order_id = r.headers["location"].rsplit("/", 1)[1]
    assert client.get(f"/api/v1/orders/{order_id}").json()["status"] == "authorising"
    assert "Waiting for your payment to be confirmed" in client.get(f"/orders/{order_id}").text
    assert cloud_obj.sent == []


def test_a_signed_webhook_confirms_the_order_and_the_vend_is_sent_once(client, cloud_obj, fake):
    order, body = waiting_order(cloud_obj, fake)
    r = post(client, body)
    assert r.status_code == 200 and r.json()["status"] == "authorised"
    assert cloud_obj.sent == [order.id]
    with cloud_obj.engine.connect() as conn:
        row = orders.get(conn, order.id)
    assert row.status == "authorised" and row.expires_at > utcnow() + timedelta(seconds=25)
    assert op_rows(cloud_obj.engine, order.id)[f"authorise:{order.id}"].status == "succeeded"
    assert cloud_obj.stats.counts["webhooks"] == 1


def test_a_webhook_delivered_twice_changes_nothing_the_second_time(client, cloud_obj, fake):
    order, body = waiting_order(cloud_obj, fake)
    timestamp = int(time.time())
    assert post(client, body, timestamp).status_code == 200
    before = state(cloud_obj, order.id)
    again = post(client, body, timestamp)  # the very same delivery, replayed inside the window
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert post(client, body).json()["duplicate"] is True  # re-sent by the provider, signed afresh
    assert state(cloud_obj, order.id) == before
    assert cloud_obj.sent == [order.id] and cloud_obj.stats.counts["webhook_duplicates"] == 2


def test_a_declined_authorisation_declines_the_order_and_the_customer_sees_it(client, cloud_obj, fake):
    order, body = waiting_order(cloud_obj, fake, slot="A2")  # 3.13: the sandbox declines amounts ending in 13
    assert post(client, body).json()["status"] == "declined"
    with cloud_obj.engine.connect() as conn:
        row = orders.get(conn, order.id)
    assert row.status == "declined" and "ends in 13" in row.reason
    assert cloud_obj.sent == [] and fake.operations(order.id, "capture") == []
    client.cookies.set(people.COOKIE, people.CookieSigner(b"k" * 32).sign("1"))
    assert "Payment declined." in client.get(f"/orders/{order.id}").text
    assert client.get(f"/api/v1/orders/{order.id}").json()["settled"] is True


def test_a_card_order_links_to_how_the_customer_pays_not_to_a_wallet_they_do_not_use(client, cloud_obj, fake):
    order, body = waiting_order(cloud_obj, fake, slot="A2")
    post(client, body)
    client.cookies.set(people.COOKIE, people.CookieSigner(b"k" * 32).sign("1"))
    for path in (f"/orders/{order.id}", f"/orders/{order.id}/receipt"):
        text = client.get(path).text
        assert "Wallet history" not in text and 'href="/wallet"' not in text, path
        assert '<a href="/account/payment">How you pay</a>' in text, path


@pytest.mark.parametrize("why,headers", [
    ("signature", lambda body, t: {TIMESTAMP_HEADER: str(t), SIGNATURE_HEADER: sign(b"not-the-secret-000", t, body)}),
    ("signature", lambda body, t: {TIMESTAMP_HEADER: str(t), SIGNATURE_HEADER: "0" * 64}),
    ("signature", lambda body, t: {TIMESTAMP_HEADER: str(t + 1), SIGNATURE_HEADER: sign(SECRET.encode(), t, body)}),
    ("signature", lambda body, t: {}),
    ("stale", lambda body, t: {TIMESTAMP_HEADER: str(t - 600), SIGNATURE_HEADER: sign(SECRET.encode(), t - 600, body)}),
    ("stale", lambda body, t: {TIMESTAMP_HEADER: str(t + 600), SIGNATURE_HEADER: sign(SECRET.encode(), t + 600, body)}),
])
def test_a_bad_or_stale_signature_is_refused_logged_counted_and_changes_nothing(client, cloud_obj, fake, caplog,
                                                                                why, headers):
    order, body = waiting_order(cloud_obj, fake)
    before = state(cloud_obj, order.id)
    with caplog.at_level(logging.WARNING):
        r = client.post(HOOK, content=body, headers=headers(body, int(time.time())))
    assert r.status_code == 401
    assert f"refused ({why})" in caplog.text
    assert cloud_obj.stats.counts[f"webhook_refused_{why}"] == 1
    assert state(cloud_obj, order.id) == before and cloud_obj.sent == []
    assert client.get("/api/v1/health").json()["counts"][f"webhook_refused_{why}"] == 1


def test_a_tampered_body_with_the_original_signature_is_refused(client, cloud_obj, fake):
    order, body = waiting_order(cloud_obj, fake, slot="A2")
    t = int(time.time())
    forged = body.replace(b"authorisation.declined", b"authorisation.succeeded")
    headers = {TIMESTAMP_HEADER: str(t), SIGNATURE_HEADER: sign(SECRET.encode(), t, body)}
    r = client.post(HOOK, content=forged, headers=headers)
    assert r.status_code == 401 and state(cloud_obj, order.id)[0] == "authorising"


def test_a_signed_body_that_is_not_an_event_is_400_and_an_unknown_order_is_acknowledged(client, cloud_obj, fake):
    assert post(client, b'{"hello": 1}').status_code == 400
    assert cloud_obj.stats.counts["webhook_refused_malformed"] == 1
    event = {"id": "evt_x", "type": "authorisation.succeeded", "data": {"reference": "o-nope", "amount": 350,
                                                                         "currency": "CNY"}}
    r = post(client, json.dumps(event).encode())
    assert r.status_code == 200 and r.json()["ignored"] == "no such order"
    order, body = waiting_order(cloud_obj, fake)
    wrong = json.loads(body)
    wrong["id"], wrong["data"]["amount"] = "evt_amount", 1
    assert post(client, json.dumps(wrong).encode()).json()["ignored"] == "no such order"
    assert state(cloud_obj, order.id)[0] == "authorising"
    assert client.post(HOOK, content=b"x" * (70 * 1024)).status_code == 413


def test_a_confirmation_after_the_order_gave_up_releases_the_hold(client, cloud_obj, fake):
    order, body = waiting_order(cloud_obj, fake)
    with cloud_obj.engine.begin() as conn:
        assert orders.expire_due(conn, cloud_obj.provider, utcnow() + timedelta(seconds=61), 10) == 1
    assert post(client, body).json()["status"] == "declined"
    voids = [k for k, _ in state(cloud_obj, order.id)[1] if k.startswith("void:")]
    assert voids == [f"void:{order.id}", f"void:{order.id}:late:{json.loads(body)['id']}"]
    deliver(cloud_obj.provider, cloud_obj.engine, utcnow())
    assert fake.books.payments[order.id]["status"] == "voided" and cloud_obj.sent == []


def test_without_a_sandbox_the_webhook_is_404(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with TestClient(cloud.app.create_app(obj, "admintoken", b"k" * 32)) as c:
        assert c.post(HOOK, content=b"{}").status_code == 404
    obj.engine.dispose()


# -- settings ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["--sandbox-url", "sandbox:9000"], "--sandbox-url 'sandbox:9000': use http(s)://HOST:PORT"),
    (["--sandbox-url", "http://127.0.0.1:9000"], "VEND_SANDBOX_SECRET"),
    (["--sandbox-url", "http://127.0.0.1:9000", "--sandbox-secret", "short"], "at least 16 characters"),
    (["--sandbox-timeout", "0"], "--sandbox-timeout 0.0: must be from 0.1 to 60"),
    (["--sandbox-timeout", "nan"], "--sandbox-timeout nan"),
    (["--sandbox-retries", "11"], "--sandbox-retries 11: must be from 0 to 10"),
    (["--sandbox-tolerance", "0"], "--sandbox-tolerance"),
    (["--sandbox-confirm-timeout", "99999"], "--sandbox-confirm-timeout"),
])
def test_wrong_sandbox_settings_are_refused_naming_the_option(argv, message):
    with pytest.raises(SystemExit) as info:
        cloud.core.settings.parse(argv)
    assert message in str(info.value)


def test_a_bad_number_in_the_environment_gets_argparse_s_error_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("VEND_SANDBOX_RETRIES", "many")
    with pytest.raises(SystemExit):
        cloud.core.settings.parse([])
    assert "--sandbox-retries: invalid int value: 'many'" in capsys.readouterr().err


def test_good_sandbox_settings_make_a_cloud_with_both_providers(monkeypatch):
    monkeypatch.setenv("VEND_SANDBOX_SECRET", SECRET)
    s = cloud.core.settings.parse(["--sandbox-url", "http://127.0.0.1:9000/", "--sandbox-timeout", "2.5"])
    pay = Payments.from_settings(s)
    assert pay.methods == ("wallet", "sandbox") and pay.sandbox.client.http.timeout.read == 2.5
    pay.stop()
    assert Payments.from_settings(cloud.core.settings.parse([])).methods == ("wallet",)


def test_the_client_gives_up_after_its_retries_and_says_why():
    calls = []

    def always_503(request):
        calls.append(request)
        return httpx.Response(503)

    from cloud.payments import SandboxClient

    client = SandboxClient("http://sandbox.test", 1.0, 3, transport=httpx.MockTransport(always_503),
                           sleep=lambda s: None)
    with pytest.raises(Unreachable, match="4 tries; last: HTTP 503"):
        client.send("/v1/payments", "k", {})
    assert len(calls) == 4 and all(c.headers["Idempotency-Key"] == "k" for c in calls)
