"""WeChat Pay in the cloud (cloud/payments/wechat/), against the local fake of WeChat Pay API v3 and OAuth
(tests/fakes/wechat.py) with the wechatpayv3 library pointed at it: registration through OAuth, a JSAPI
purchase paid on the customer's page and confirmed by the signed notification, the drop, the jam (refunded
in full), a lost answer retried after a query, forged and replayed notifications, a refund, the trade
bill imported and matched, a withdrawn mandate, and the settings that stop a cloud at start."""

import html
import json
import logging
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

import cloud.app
import cloud.core.db
import cloud.core.settings
import cloud.service
from cloud.core.db import utcnow
from cloud.payments import mandates, txns, webhook_events
from cloud.payments.outbox import payment_ops
from cloud.payments.statement import StatementRefused, compare, import_statement
from cloud.payments.wechat import statement
from cloud.payments.wechat.provider import out_refund_no, out_trade_no
from cloud.sales import orders
from cloud.sync import ingest
from protocol import token as qrtoken
from tests.cloud.payments.wechat_fixtures import KEYS
from tests.cloud_fixtures import MACHINE, SECRET as QR_SECRET, Chain, add_machine, db_url, post_form  # noqa: F401
from tests.fakes.wechat import FakeWeChatPay

HOOK = "/api/v1/payments/webhook/wechat"
WECHAT_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
             "MicroMessenger/8.0.47.2560(0x28002F35) NetType/WIFI Language/zh_CN")


@pytest.fixture
def fake():
    f = FakeWeChatPay(KEYS, stall_s=1.5)
    f.start()
    yield f
    f.stop()


def wechat_settings(tmp_path, db_url, fake, **more):
    files = KEYS.write(tmp_path / "keys")
    return cloud.core.settings.Settings(**{
        "var": str(tmp_path), "db": db_url, "broker": "127.0.0.1:1", "public_url": "http://testserver",
        "wechat_mchid": KEYS.mchid, "wechat_appid": KEYS.appid, "wechat_cert_serial": KEYS.merchant_serial,
        "wechat_private_key_file": files["private_key"], "wechat_apiv3_key_file": files["apiv3_key"],
        "wechat_app_secret_file": files["app_secret"], "wechat_api_url": fake.url,
        "wechat_oauth_url": fake.url + "/connect/oauth2/authorize",
        "wechat_token_url": fake.url + "/sns/oauth2/access_token", "wechat_timeout_s": 0.5, **more}).resolve()


@pytest.fixture
def cloud_obj(tmp_path, db_url, fake):
    obj = cloud.service.Cloud(wechat_settings(tmp_path, db_url, fake))  # never started: no broker, no threads
    obj.sent = []
    obj.send_vend = lambda order: obj.sent.append(order.id)
    cloud.core.db.migrate(obj.engine)
    with obj.engine.begin() as conn:
        add_machine(conn)
    yield obj
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, "admintoken", b"k" * 32), follow_redirects=False) as c:
        yield c


def deliver(cloud_obj, at=None):
    """The WeChat Pay worker's rounds until nothing is due (``at``: the worker's clock)."""
    while cloud_obj.provider.wechat.deliver_due(cloud_obj.engine, clock=(lambda: at) if at else utcnow):
        pass


def register_in_wechat(client, fake, phone="+8613800000077") -> str:
    """A customer scans, registers inside WeChat, and passes WeChat's OAuth page: their openid."""
    client.get(f"/q/{qrtoken.make(MACHINE, QR_SECRET.encode(), time.time(), 5)}")
    r = post_form(client, "/register", dict(name="Wei", phone=phone, payment_method="wechat", next="/m/m-1"),
                  headers={"User-Agent": WECHAT_UA})
    # On through a page of the cloud's own (a form's redirect to another site breaks the content policy).
    assert (r.status_code, r.headers["location"]) == (303, "http://testserver/pay/wechat/enrol")
    onward = client.get("/pay/wechat/enrol")
    oauth = html.unescape(re.search(r'id="wechat-oauth" href="([^"]+)"', onward.text).group(1))
    assert f'content="0;url={oauth}"' in html.unescape(onward.text)
    assert oauth.startswith(fake.url + "/connect/oauth2/authorize?") and "scope=snsapi_base" in oauth
    at_wechat = requests.get(oauth, timeout=5)  # the phone at WeChat's page
    form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', at_wechat.text))
    back = requests.post(fake.url + "/connect/oauth2/authorize", data={k: html.unescape(v) for k, v in form.items()},
                         allow_redirects=False, timeout=5)
    assert back.status_code == 302 and back.headers["location"].startswith("http://testserver/pay/wechat/oauth?")
    r = client.get(back.headers["location"])
    assert r.status_code == 303 and r.headers["location"] == "/m/m-1"
    return form["openid"]


def buy(client, key="buy-key-0001", slot="A1") -> str:
    r = post_form(client, "/m/m-1/buy", {"slot": slot, "key": key})
    assert r.status_code == 303, r.text
    return r.headers["location"].rsplit("/", 1)[1]


def pay_and_notify(client, fake, order_id):
    """The customer pays in WeChat and WeChat Pay's signed notification reaches the cloud."""
    fake.pay(out_trade_no(order_id), notify=False)
    headers, body = fake.notification(out_trade_no(order_id))
    return client.post(HOOK, content=body, headers=headers)


def paid_order(client, cloud_obj, fake, key="buy-key-0001") -> str:
    order_id = buy(client, key)
    deliver(cloud_obj)
    assert pay_and_notify(client, fake, order_id).status_code == 200
    return order_id


def order_status(cloud_obj, order_id):
    with cloud_obj.engine.connect() as conn:
        return orders.get(conn, order_id).status


def ops_of(cloud_obj, order_id):
    with cloud_obj.engine.connect() as conn:
        return {r.key: r for r in conn.execute(sa.select(payment_ops).where(payment_ops.c.order_id == order_id))}


def journal(cloud_obj, order_id):
    with cloud_obj.engine.connect() as conn:
        return sorted((r.kind, r.key) for r in conn.execute(sa.select(txns).where(txns.c.order_id == order_id)))


def machine_says(cloud_obj, order_id, outcome):
    with cloud_obj.engine.connect() as conn:
        order = orders.get(conn, order_id)
    chain = cloud_obj.__dict__.setdefault("chain", Chain())  # the machine's one ledger
    first = len(chain.events) + 1
    chain.add("vend.started", order_id=order_id, cmd_id=order.cmd_id, slot="A1")
    if outcome == "dropped":
        chain.add("vend.succeeded", order_id=order_id, slot="A1", turns=1)
    else:
        chain.add("vend.failed", order_id=order_id, slot="A1", reason="no drop")
    with cloud_obj.engine.begin() as conn:
        ingest.store_batch(conn, cloud_obj.provider, MACHINE, chain.batch(first), utcnow())
    deliver(cloud_obj)


# -- registration --------------------------------------------------------------------------------

def test_inside_wechat_wechat_pay_is_offered_first_and_its_oauth_gives_the_mandate(client, cloud_obj, fake):
    inside = client.get("/register", headers={"User-Agent": WECHAT_UA}).text
    assert inside.index('value="wechat"') < inside.index('value="wallet"')
    assert "WeChat Pay" in inside
    elsewhere = client.get("/register", headers={"User-Agent": "Mozilla/5.0 (iPhone) Safari/604.1"}).text
    assert elsewhere.index('value="wallet"') < elsewhere.index('value="wechat"')
    openid = register_in_wechat(client, fake)
    with cloud_obj.engine.connect() as conn:
        customer_id = conn.execute(sa.select(mandates.mandates.c.customer_id)).scalar_one()
        mandate = mandates.active(conn, customer_id, "wechat")
    assert mandate.reference == openid


def test_an_oauth_return_with_another_state_or_a_used_code_saves_nothing(client, cloud_obj, fake):
    client.get(f"/q/{qrtoken.make(MACHINE, QR_SECRET.encode(), time.time(), 5)}")
    post_form(client, "/register", dict(name="Wei", phone="+8613800000078", payment_method="wechat", next="/m/m-1"))
    state = re.search(r"state=([^&#]+)", client.get("/pay/wechat/enrol").text).group(1)
    code = fake.issue_code(fake.new_user())
    forged = client.get(f"/pay/wechat/oauth?code={code}&state=not-the-state")
    assert forged.status_code == 400 and "not the one WeChat was given" in forged.text
    fake.access_token({"appid": KEYS.appid, "secret": KEYS.app_secret, "code": code,
                       "grant_type": "authorization_code"})  # someone used the code first
    used = client.get(f"/pay/wechat/oauth?code={code}&state={state}")
    assert used.status_code == 502 and "WeChat did not confirm who you are" in used.text
    with cloud_obj.engine.connect() as conn:
        assert [r.status for r in conn.execute(sa.select(mandates.mandates))] == ["pending"]


# -- a purchase: JSAPI before the vend ---------------------------------------------------------------

def test_a_purchase_waits_for_the_customer_to_pay_on_the_jsapi_page_then_vends(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    order_id = buy(client)
    assert order_status(cloud_obj, order_id) == "authorising" and cloud_obj.sent == []
    deliver(cloud_obj)
    trade = fake.trades[out_trade_no(order_id)]
    assert (trade["amount"], trade["trade_state"]) == ({"total": 350, "currency": "CNY"}, "NOTPAY")
    action = client.get(f"/api/v1/orders/{order_id}").json()["action"]
    assert action == f"http://testserver/pay/wechat/{order_id}"
    assert "Confirm the payment" in client.get(f"/orders/{order_id}").text
    page = client.get(f"/pay/wechat/{order_id}")
    assert page.status_code == 200
    assert "If it does not drop, the full amount goes back to your WeChat Pay" in page.text
    assert "3.50" in page.text
    params = json.loads(html.unescape(re.search(r'data-params="([^"]*)"', page.text).group(1)))
    assert fake.check_pay_sign(params)["out_trade_no"] == out_trade_no(order_id)  # signed by the merchant key
    r = pay_and_notify(client, fake, order_id)
    assert (r.status_code, r.text) == (200, "")  # WeChat Pay's "received": 200, no body
    assert order_status(cloud_obj, order_id) == "authorised" and cloud_obj.sent == [order_id]
    auth = ops_of(cloud_obj, order_id)[f"authorise:{order_id}"]
    assert auth.status == "succeeded" and auth.platform_ref == fake.trades[out_trade_no(order_id)]["transaction_id"]
    assert client.get(f"/pay/wechat/{order_id}").status_code == 303  # paid: the page sends them to the order


def test_back_from_paying_the_cloud_asks_wechat_pay_and_does_not_wait_for_the_notification(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    order_id = buy(client)
    deliver(cloud_obj)
    assert client.get(f"/pay/wechat/{order_id}/done?result=ok").status_code == 303
    assert order_status(cloud_obj, order_id) == "authorising"  # the page's word is no proof: still unpaid
    fake.pay(out_trade_no(order_id), notify=False)  # paid; the notification is late
    assert client.get(f"/pay/wechat/{order_id}/done?result=ok").headers["location"] == f"/orders/{order_id}"
    assert order_status(cloud_obj, order_id) == "authorised" and cloud_obj.sent == [order_id]
    assert pay_and_notify_late(client, fake, order_id).status_code == 200
    assert cloud_obj.sent == [order_id]  # the notification after changes nothing


def pay_and_notify_late(client, fake, order_id):
    headers, body = fake.notification(out_trade_no(order_id))
    return client.post(HOOK, content=body, headers=headers)


def test_the_drop_captures_without_a_call_and_the_journal_has_it(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    order_id = paid_order(client, cloud_obj, fake)
    before = len(fake.requests)
    machine_says(cloud_obj, order_id, "dropped")
    assert order_status(cloud_obj, order_id) == "succeeded"
    assert ops_of(cloud_obj, order_id)[f"capture:{order_id}"].status == "succeeded"
    assert len(fake.requests) == before  # the money moved when they paid: nothing to ask of WeChat Pay
    assert journal(cloud_obj, order_id) == [("capture", f"wechat:capture:{order_id}")]
    assert fake.trades[out_trade_no(order_id)]["refunded"] == 0


def test_a_jam_refunds_the_payment_in_full_and_the_journal_holds_no_sale(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    order_id = paid_order(client, cloud_obj, fake)
    machine_says(cloud_obj, order_id, "jammed")
    assert order_status(cloud_obj, order_id) == "failed"
    void = ops_of(cloud_obj, order_id)[f"void:{order_id}"]
    assert (void.status, void.reason) == ("succeeded", "refunded in full: not dropped")
    refund = fake.refunds[out_refund_no(f"void:{order_id}")]
    assert (refund["amount"]["refund"], refund["status"]) == (350, "SUCCESS")
    assert journal(cloud_obj, order_id) == []


def test_an_order_never_paid_is_closed_at_wechat_pay_when_it_expires(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    order_id = buy(client)
    deliver(cloud_obj)
    later = utcnow() + timedelta(hours=1)
    with cloud_obj.engine.begin() as conn:
        assert orders.expire_due(conn, cloud_obj.provider, later, 10) == 1
    deliver(cloud_obj, at=later)
    assert fake.trades[out_trade_no(order_id)]["trade_state"] == "CLOSED"
    assert ops_of(cloud_obj, order_id)[f"void:{order_id}"].reason == "closed unpaid"
    with pytest.raises(Exception, match="CLOSED"):
        fake.pay(out_trade_no(order_id), notify=False)  # too late to pay: nothing can be taken now


def test_a_payment_after_the_order_gave_up_is_refunded_once(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    order_id = buy(client)
    deliver(cloud_obj)
    fake.pay(out_trade_no(order_id), notify=False)  # paid at the last moment...
    later = utcnow() + timedelta(hours=1)
    with cloud_obj.engine.begin() as conn:  # ...as the order gave up waiting
        assert orders.expire_due(conn, cloud_obj.provider, later, 10) == 1
    headers, body = fake.notification(out_trade_no(order_id))
    assert client.post(HOOK, content=body, headers=headers).status_code == 200  # then the notification
    deliver(cloud_obj, at=later)
    assert order_status(cloud_obj, order_id) == "declined" and cloud_obj.sent == []
    voids = [r for r in ops_of(cloud_obj, order_id).values() if r.op == "void"]
    assert len(voids) == 2 and {r.status for r in voids} == {"succeeded"}  # the order's, and the late one's
    assert list(fake.refunds) == [out_refund_no(f"void:{order_id}")]  # one refund, in full
    assert fake.trades[out_trade_no(order_id)]["refunded"] == 350
    assert cloud_obj.stats.counts["wechat_refused"] == 0


def test_a_lost_answer_is_queried_then_sent_again_under_the_same_out_trade_no(client, cloud_obj, fake, caplog):
    register_in_wechat(client, fake)
    fake.fail("/v3/pay/transactions/jsapi", "lost")  # WeChat Pay places the order; its answer never comes
    order_id = buy(client)
    with caplog.at_level(logging.WARNING):
        deliver(cloud_obj)
    assert "not delivered" in caplog.text
    auth = ops_of(cloud_obj, order_id)[f"authorise:{order_id}"]
    assert (auth.status, auth.attempts) == ("queued", 1)
    deliver(cloud_obj, at=utcnow() + timedelta(minutes=1))
    number = out_trade_no(order_id)
    asked = [r for r in fake.requests if number in r[1] or r[0] == "POST" and "jsapi" in r[1]]
    assert [m for m, _ in asked] == ["POST", "GET", "POST"]  # sent, asked about, sent again
    assert list(fake.trades) == [number]
    auth = ops_of(cloud_obj, order_id)[f"authorise:{order_id}"]
    assert auth.status == "pending" and auth.platform_ref == fake.trades[number]["prepay_id"]
    assert cloud_obj.stats.counts["wechat_unreachable"] == 1


# -- notifications ---------------------------------------------------------------------------------

def waiting(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    order_id = buy(client)
    deliver(cloud_obj)
    fake.pay(out_trade_no(order_id), notify=False)
    return order_id


def nothing_recorded(cloud_obj, order_id):
    with cloud_obj.engine.connect() as conn:
        events = conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar()
    return (order_status(cloud_obj, order_id), ops_of(cloud_obj, order_id)[f"authorise:{order_id}"].status, events,
            cloud_obj.sent) == ("authorising", "pending", 0, [])


def test_a_notification_delivered_twice_changes_nothing_the_second_time(client, cloud_obj, fake):
    order_id = waiting(client, cloud_obj, fake)
    headers, body = fake.notification(out_trade_no(order_id))
    assert client.post(HOOK, content=body, headers=headers).status_code == 200
    again = client.post(HOOK, content=body, headers=headers)
    assert (again.status_code, again.text) == (200, "")
    assert cloud_obj.sent == [order_id] and cloud_obj.stats.counts["webhook_duplicates"] == 1


@pytest.mark.parametrize("forge, why", [
    ("other key", "signature"), ("stale", "stale"), ("ciphertext", "signature"), ("no signature", "signature"),
])
def test_a_forged_stale_or_altered_notification_is_refused_logged_and_writes_nothing(client, cloud_obj, fake, caplog,
                                                                                        forge, why):
    order_id = waiting(client, cloud_obj, fake)
    number = out_trade_no(order_id)
    if forge == "other key":
        headers, body = fake.notification(number, sign_with=rsa.generate_private_key(public_exponent=65537,
                                                                                     key_size=2048))
    elif forge == "stale":
        headers, body = fake.notification(number, timestamp=int(time.time()) - 3600)
    elif forge == "ciphertext":
        headers, body = fake.notification(number)
        obj = json.loads(body)
        obj["resource"]["ciphertext"] = "A" + obj["resource"]["ciphertext"][1:]
        body = json.dumps(obj, ensure_ascii=False).encode()
    else:
        headers, body = fake.notification(number)
        headers = {k: v for k, v in headers.items() if k != "Wechatpay-Signature"}
    with caplog.at_level(logging.WARNING):
        r = client.post(HOOK, content=body, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "FAIL"
    assert f"wechat webhook from testclient refused ({why})" in caplog.text
    assert nothing_recorded(cloud_obj, order_id)
    assert cloud_obj.stats.counts[f"webhook_refused_{why}"] == 1


def test_a_signed_notification_with_another_amount_or_merchant_or_order_moves_nothing(client, cloud_obj, fake):
    order_id = waiting(client, cloud_obj, fake)
    number = out_trade_no(order_id)
    trade = fake.public_trade(fake.trades[number])
    cheaper = {**trade, "amount": {**trade["amount"], "total": 1, "payer_total": 1}}
    headers, body = fake.notification(number, resource=cheaper)
    r = client.post(HOOK, content=body, headers=headers)
    assert r.status_code == 200 and order_status(cloud_obj, order_id) == "authorising"
    assert cloud_obj.stats.counts["webhook_unmatched"] == 1
    other = {**trade, "mchid": "1900000999"}
    headers, body = fake.notification(number, resource=other)
    assert client.post(HOOK, content=body, headers=headers).status_code == 400
    stranger = {**trade, "out_trade_no": "vendoNOSUCHORDER", "attach": "oNOSUCHORDER"}
    headers, body = fake.notification(number, resource=stranger)
    assert client.post(HOOK, content=body, headers=headers).status_code == 200
    assert cloud_obj.stats.counts["webhook_unmatched"] == 2
    assert ops_of(cloud_obj, order_id)[f"authorise:{order_id}"].status == "pending" and cloud_obj.sent == []


# -- refunds and the trade bill ------------------------------------------------------------------------

def test_a_refund_goes_to_wechat_pay_and_the_trade_bill_matches_the_journal(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    sold = paid_order(client, cloud_obj, fake, "buy-key-0001")
    machine_says(cloud_obj, sold, "dropped")
    jammed = paid_order(client, cloud_obj, fake, "buy-key-0002")
    machine_says(cloud_obj, jammed, "jammed")
    with cloud_obj.engine.begin() as conn:
        outcome = cloud_obj.provider.refund(conn, orders.get(conn, sold), 100, "manager-refund-1", utcnow())
    assert outcome.ok and outcome.pending
    deliver(cloud_obj)
    assert fake.refunds[out_refund_no("refund:manager-refund-1")]["amount"]["refund"] == 100
    assert ("refund", "wechat:refund:manager-refund-1") in journal(cloud_obj, sold)
    day = fake.trades[out_trade_no(sold)]["success_time"][:10]
    data = fake.bill(day).encode()
    lines = statement(cloud_obj.settings, data)
    assert sorted((ln.kind, ln.order_id, ln.amount, ln.fee) for ln in lines) == sorted([
        ("capture", sold, 350, 2), ("refund", sold, 100, 0), ("other", jammed, 350, 0), ("other", jammed, 350, 0)])
    now = utcnow()
    with cloud_obj.engine.begin() as conn:
        done = import_statement(conn, "wechat", "wechat", lines, data, now)
        assert done["fees"] == {"CNY": 2}
        assert compare(conn, "wechat", now - timedelta(days=2), now + timedelta(days=2)) == []
        assert import_statement(conn, "wechat", "wechat", lines, data, now)["new"] == 0  # once


def test_a_refund_still_processing_is_settled_by_its_signed_notification(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    sold = paid_order(client, cloud_obj, fake)
    machine_says(cloud_obj, sold, "dropped")
    fake.refund_status = "PROCESSING"
    with cloud_obj.engine.begin() as conn:
        cloud_obj.provider.refund(conn, orders.get(conn, sold), None, "manager-refund-2", utcnow())
    deliver(cloud_obj)
    assert ops_of(cloud_obj, sold)["refund:manager-refund-2"].status == "pending"
    assert ("refund", "wechat:refund:manager-refund-2") not in journal(cloud_obj, sold)  # not yet given back
    headers, body = fake.finish_refund(out_refund_no("refund:manager-refund-2"))
    r = client.post(HOOK, content=body, headers=headers)
    assert (r.status_code, r.text) == (200, "")
    refund = ops_of(cloud_obj, sold)["refund:manager-refund-2"]
    assert (refund.status, refund.platform_ref) == ("succeeded",
                                                    fake.refunds[out_refund_no("refund:manager-refund-2")]["refund_id"])
    assert ("refund", "wechat:refund:manager-refund-2") in journal(cloud_obj, sold)
    assert client.post(HOOK, content=body, headers=headers).status_code == 200  # again: nothing more
    assert journal(cloud_obj, sold).count(("refund", "wechat:refund:manager-refund-2")) == 1


def test_a_bill_of_another_merchant_or_cut_short_is_refused(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    sold = paid_order(client, cloud_obj, fake)
    text = fake.bill(fake.trades[out_trade_no(sold)]["success_time"][:10])
    with pytest.raises(StatementRefused, match="merchant 1900000999's"):
        statement(cloud_obj.settings, text.replace(f"`{KEYS.mchid}", "`1900000999").encode())
    with pytest.raises(StatementRefused, match="truncated"):
        statement(cloud_obj.settings, text[:text.index("总交易单数")].encode())


# -- WeChat Pay Score: a service order per purchase, paid after the drop -----------------------------------

@pytest.fixture
def score_cloud(tmp_path, db_url, fake):
    obj = cloud.service.Cloud(wechat_settings(tmp_path, db_url, fake, wechat_payscore_service_id=fake.service_id))
    obj.sent = []
    obj.send_vend = lambda order: obj.sent.append(order.id)
    cloud.core.db.migrate(obj.engine)
    with obj.engine.begin() as conn:
        add_machine(conn)
    yield obj
    obj.engine.dispose()


@pytest.fixture
def score_client(score_cloud):
    with TestClient(cloud.app.create_app(score_cloud, "admintoken", b"k" * 32), follow_redirects=False) as c:
        yield c


def confirmed_service_order(client, cloud_obj, fake, key="buy-key-0001") -> tuple[str, str]:
    openid = register_in_wechat(client, fake)
    order_id = buy(client, key)
    deliver(cloud_obj)
    number = out_trade_no(order_id)
    assert fake.service_orders[number]["state"] == "CREATED"
    assert fake.service_orders[number]["risk_fund"] == {"name": "ESTIMATE_ORDER_COST", "amount": 350}
    page = client.get(f"/pay/wechat/{order_id}")
    assert "Nothing is taken now" in page.text and 'data-kind="payscore"' in page.text
    params = json.loads(html.unescape(re.search(r'data-params="([^"]*)"', page.text).group(1)))
    assert fake.check_business_view(params)["out_order_no"] == number  # signed with the API v3 key
    headers, body = fake.payscore_confirm(number, openid)
    assert client.post(HOOK, content=body, headers=headers).status_code == 200
    assert order_status(cloud_obj, order_id) == "authorised" and cloud_obj.sent == [order_id]
    return order_id, number


def test_with_pay_score_nothing_is_taken_until_the_drop_completes_the_order(score_client, score_cloud, fake):
    order_id, number = confirmed_service_order(score_client, score_cloud, fake)
    assert fake.trades == {}  # confirmed, and no money moved
    machine_says(score_cloud, order_id, "dropped")
    order = fake.service_orders[number]
    assert (order["state_description"], order["total_amount"]) == ("MCH_COMPLETE", 350)
    assert ops_of(score_cloud, order_id)[f"capture:{order_id}"].status == "pending"
    assert journal(score_cloud, order_id) == []  # not in the journal until WeChat Pay has taken it
    headers, body = fake.payscore_collect(number)
    assert score_client.post(HOOK, content=body, headers=headers).status_code == 200
    capture = ops_of(score_cloud, order_id)[f"capture:{order_id}"]
    assert (capture.status, capture.platform_ref) == ("succeeded", fake.trades[number]["transaction_id"])
    assert journal(score_cloud, order_id) == [("capture", f"wechat:capture:{order_id}")]
    with score_cloud.engine.begin() as conn:  # a refund names the Pay Score payment by its transaction_id
        score_cloud.provider.refund(conn, orders.get(conn, order_id), 100, "score-refund-1", utcnow())
    deliver(score_cloud)
    assert fake.trades[number]["refunded"] == 100


def test_with_pay_score_back_from_wechat_before_confirming_leaves_the_order_waiting(score_client, score_cloud, fake):
    register_in_wechat(score_client, fake)
    order_id = buy(score_client)
    deliver(score_cloud)
    assert score_client.get(f"/pay/wechat/{order_id}/done?result=ok").status_code == 303
    assert order_status(score_cloud, order_id) == "authorising"  # not confirmed at WeChat Pay: still waiting
    fake.payscore_confirm(out_trade_no(order_id))  # confirmed; the notification is late
    score_client.get(f"/pay/wechat/{order_id}/done?result=ok")
    assert order_status(score_cloud, order_id) == "authorised" and score_cloud.sent == [order_id]


def test_with_pay_score_a_jam_cancels_the_order_and_nothing_is_ever_taken(score_client, score_cloud, fake):
    order_id, number = confirmed_service_order(score_client, score_cloud, fake)
    machine_says(score_cloud, order_id, "jammed")
    assert fake.service_orders[number]["state"] == "REVOKED"
    void = ops_of(score_cloud, order_id)[f"void:{order_id}"]
    assert (void.status, void.reason) == ("succeeded", "cancelled: nothing was taken")
    assert fake.trades == {} and fake.refunds == {} and journal(score_cloud, order_id) == []


def test_with_pay_score_a_lost_answer_is_queried_and_the_order_opened_once(score_client, score_cloud, fake):
    register_in_wechat(score_client, fake)
    fake.fail("/v3/payscore/serviceorder", "lost")
    order_id = buy(score_client)
    deliver(score_cloud)
    assert ops_of(score_cloud, order_id)[f"authorise:{order_id}"].status == "queued"
    deliver(score_cloud, at=utcnow() + timedelta(minutes=1))
    auth = ops_of(score_cloud, order_id)[f"authorise:{order_id}"]
    assert auth.status == "pending" and json.loads(auth.detail)["package"]  # found by the query, not re-opened
    assert [m for m, p in fake.requests if "payscore" in p] == ["POST", "GET"]
    assert score_client.get(f"/api/v1/orders/{order_id}").json()["action"].endswith(f"/pay/wechat/{order_id}")


# -- a mandate gone, and the settings ----------------------------------------------------------------

def test_a_withdrawn_mandate_asks_the_customer_to_choose_again_and_nothing_is_charged(client, cloud_obj, fake):
    openid = register_in_wechat(client, fake)
    with cloud_obj.engine.begin() as conn:
        assert mandates.revoke(conn, "wechat", openid, utcnow()) is not None
    r = post_form(client, "/m/m-1/buy", {"slot": "A1", "key": "buy-key-0009"})
    assert r.status_code == 303 and r.headers["location"].startswith("/account/payment?why=again")
    deliver(cloud_obj)
    assert fake.trades == {}
    with cloud_obj.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(payment_ops)).scalar() == 0


def test_a_cloud_whose_wechat_pay_is_down_still_starts_and_sends_when_it_is_back(client, cloud_obj, fake):
    fake.fail("/v3/certificates", "500")  # down when the cloud first needs the platform certificates
    register_in_wechat(client, fake)
    order_id = buy(client)
    deliver(cloud_obj)
    assert ops_of(cloud_obj, order_id)[f"authorise:{order_id}"].status == "queued"
    assert fake.trades == {}
    deliver(cloud_obj, at=utcnow() + timedelta(minutes=1))  # back
    assert ops_of(cloud_obj, order_id)[f"authorise:{order_id}"].status == "pending"
    assert list(fake.trades) == [out_trade_no(order_id)]


@pytest.mark.parametrize("spoil, message", [
    (lambda files: files["private_key"].unlink(), "--wechat-private-key-file .*cannot read it"),
    (lambda files: files["private_key"].chmod(0o644), "--wechat-private-key-file .*others may read it"),
    (lambda files: files["private_key"].write_text("not a key"), "not a PEM private key"),
    (lambda files: files["apiv3_key"].write_text("short"), "--wechat-apiv3-key-file .*32 characters"),
    (lambda files: files["app_secret"].write_text(""), "--wechat-app-secret-file .*empty"),
])
def test_a_missing_unreadable_or_wrong_key_file_stops_the_cloud_naming_the_file(tmp_path, db_url, fake, spoil,
                                                                                 message):
    from pathlib import Path

    settings = wechat_settings(tmp_path, db_url, fake)
    files = {k: Path(getattr(settings, f"wechat_{k}_file")) for k in ("private_key", "apiv3_key", "app_secret")}
    spoil(files)
    with pytest.raises(SystemExit, match=message) as stopped:
        cloud.service.Cloud(settings)
    assert KEYS.apiv3_key not in str(stopped.value)


@pytest.mark.parametrize("argv, message", [
    (["--wechat-mchid", "1900000109"], "--wechat-appid is needed"),
    (["--wechat-mchid", "1", "--wechat-appid", "wx1", "--wechat-cert-serial", "AB", "--wechat-private-key-file", "k",
      "--wechat-apiv3-key-file", "a", "--wechat-app-secret-file", "s", "--wechat-public-key-file", "p"],
     "go together"),
    (["--wechat-timeout", "0"], "--wechat-timeout 0.0: must be between"),
])
def test_wrong_wechat_settings_are_refused_naming_the_option(argv, message):
    with pytest.raises(SystemExit, match=message):
        cloud.core.settings.parse(argv)


def test_times_in_the_bill_are_beijing_time_read_as_utc(client, cloud_obj, fake):
    register_in_wechat(client, fake)
    order_id = buy(client)
    deliver(cloud_obj)
    fake.pay(out_trade_no(order_id), when=datetime(2026, 12, 6, 0, 30, tzinfo=timezone.utc), notify=False)
    lines = statement(cloud_obj.settings, fake.bill("2026-12-06").encode())
    assert [ln.at for ln in lines] == [datetime(2026, 12, 6, 0, 30, tzinfo=timezone.utc)]
