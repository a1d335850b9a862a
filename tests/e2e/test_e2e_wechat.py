"""A customer inside WeChat registers through WeChat's OAuth, pays a JSAPI order on the cloud's page and
buys from a simulated machine; a jammed slot is refunded in full; a manager refunds through vendctl.
All real processes (the broker, `vend-cloud`, a `vend-controller`) but WeChat Pay, which is the local fake of its API (tests/fakes/wechat.py) on a real socket: the cloud's
wechatpayv3 client talks to it, and it sends its signed notifications to the cloud's webhook."""

import html
import itertools
import json
import re
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from cloud.payments.wechat.provider import out_refund_no, out_trade_no
from tests.e2e.harness import Cloud, Customer, Machine, wait_until
from tests.e2e.test_e2e_sandbox import order_id_of, vendctl
from tests.fakes.wechat import FakeWeChatPay, Keys

HOOK = "/api/v1/payments/webhook/wechat"
WECHAT_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 MicroMessenger/8.0.47 NetType/WIFI"
_phones = itertools.count(13700000001)


@pytest.fixture(scope="module")
def fake(database):
    """One WeChat Pay per cloud (per database): what it delivered is to that cloud alone."""
    f = FakeWeChatPay(Keys(), notify_retry_s=0.5)
    f.start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def cloud(database, broker, tmp_path_factory, fake):
    """The cloud with WeChat Pay (this module's own, in place of conftest's)."""
    files = fake.keys.write(tmp_path_factory.mktemp("keys"))
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")), db_url=database, demo_topups=False, extra=(
        "--wechat-mchid", fake.keys.mchid, "--wechat-appid", fake.keys.appid,
        "--wechat-cert-serial", fake.keys.merchant_serial, "--wechat-private-key-file", files["private_key"],
        "--wechat-apiv3-key-file", files["apiv3_key"], "--wechat-app-secret-file", files["app_secret"],
        "--wechat-api-url", fake.url, "--wechat-oauth-url", fake.url + "/connect/oauth2/authorize",
        "--wechat-token-url", fake.url + "/sns/oauth2/access_token", "--wechat-confirm-timeout", "60"))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def machine(cloud, broker, tmp_path_factory):
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("machines")), "w1", drop_delay=0.2, jam="B2")
    m.start()
    m.stock()
    yield m
    m.proc.stop()


def wechat_customer(cloud, machine, fake) -> Customer:
    """A phone inside WeChat: scans, registers choosing WeChat Pay, passes WeChat's OAuth page."""
    c = Customer(cloud, "Wei", f"+86{next(_phones)}")
    c.http.headers["User-Agent"] = WECHAT_UA
    assert c.scan(machine).status_code == 303
    page = c.http.get("/register").text
    assert page.index('value="wechat"') < page.index('value="wallet"')  # inside WeChat: WeChat Pay first
    r = c.register("/m/w1", method="wechat")
    assert r.status_code == 303 and r.headers["location"] == cloud.url + "/pay/wechat/enrol", r.text
    onward = c.http.get("/pay/wechat/enrol").text
    oauth = html.unescape(re.search(r'id="wechat-oauth" href="([^"]+)"', onward).group(1))
    assert oauth.startswith(fake.url + "/connect/oauth2/authorize?")
    at_wechat = httpx.get(oauth, timeout=10)
    form = {k: html.unescape(v) for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', at_wechat.text)}
    back = httpx.post(oauth.split("?")[0], data=form, timeout=10)
    assert back.status_code == 302
    r = c.http.get(back.headers["location"].replace(cloud.url, ""))
    assert r.status_code == 303 and r.headers["location"] == "/m/w1", r.text
    return c


def pay_in_wechat(customer, fake, order_id, choice="pay"):
    """WeChat's payment sheet: what the cloud's page hands WeixinJSBridge goes to WeChat Pay (the fake's
    stand-in checks paySign), and the customer taps Pay or Cancel."""
    wait_until(lambda: customer.order_status(order_id)["action"], 15, "the JSAPI order to be placed")
    page = customer.http.get(f"/pay/wechat/{order_id}")
    assert page.status_code == 200, page.text
    assert "If it does not drop, the full amount goes back to your WeChat Pay" in page.text
    params = json.loads(html.unescape(re.search(r'data-params="([^"]*)"', page.text).group(1)))
    r = httpx.post(fake.url + "/fake/jsapi", data={**params, "choice": choice, "return": "x"}, timeout=10)
    assert r.status_code == 302, r.text


def test_registration_purchase_drop_and_capture_through_wechat_pay(cloud, machine, fake):
    customer = wechat_customer(cloud, machine, fake)
    order_id = order_id_of(customer.buy(machine, "A2"))
    assert customer.order_status(order_id)["status"] == "authorising"
    pay_in_wechat(customer, fake, order_id)
    settled = customer.wait_settled(order_id)
    assert settled["status"] == "succeeded"
    assert "Take your product" in customer.http.get(f"/orders/{order_id}").text
    trade = fake.trades[out_trade_no(order_id)]
    assert (trade["trade_state"], trade["amount"]["total"], trade["refunded"]) == ("SUCCESS", 350, 0)
    assert [(d["url"], d["status"]) for d in fake.deliveries] == [(cloud.url + HOOK, 200)]  # answered at once
    wait_until(lambda: cloud.db("SELECT op, status FROM payment_ops WHERE order_id = ? ORDER BY id", (order_id,)) == [
        ("authorise", "succeeded"), ("capture", "succeeded")], 10, "the capture recorded")
    assert cloud.db("SELECT kind FROM txns WHERE order_id = ?", (order_id,)) == [("capture",)]
    assert [e["order_id"] for e in machine.events_of("vend.started")].count(order_id) == 1


def test_a_jammed_slot_is_refunded_in_full_at_wechat_pay(cloud, machine, fake):
    customer = wechat_customer(cloud, machine, fake)
    order_id = order_id_of(customer.buy(machine, "B2"))
    pay_in_wechat(customer, fake, order_id)
    assert customer.wait_settled(order_id)["status"] == "failed"
    wait_until(lambda: out_refund_no(f"void:{order_id}") in fake.refunds, 15, "the refund at WeChat Pay")
    assert fake.refunds[out_refund_no(f"void:{order_id}")]["amount"]["refund"] == 550
    wait_until(lambda: cloud.db("SELECT status FROM payment_ops WHERE order_id = ? AND op = 'void'",
                                (order_id,)) == [("succeeded",)], 10, "the void recorded")
    assert cloud.db("SELECT COUNT(*) FROM txns WHERE order_id = ?", (order_id,)) == [(0,)]


def test_a_replayed_or_forged_notification_changes_nothing(cloud, machine, fake):
    customer = wechat_customer(cloud, machine, fake)
    order_id = order_id_of(customer.buy(machine, "A1"))
    pay_in_wechat(customer, fake, order_id)
    assert customer.wait_settled(order_id)["status"] == "succeeded"
    first = fake.deliveries[-1]  # this payment's notification, as it was sent
    assert first["status"] == 200
    before = cloud.api("GET", "/api/v1/health")["counts"]
    r = httpx.post(cloud.url + HOOK, content=first["body"], headers=first["headers"], timeout=10)
    assert r.status_code == 200  # a replay inside the window: answered, and nothing changes
    headers, body = fake.notification(out_trade_no(order_id), sign_with=Keys().platform_key)
    r = httpx.post(cloud.url + HOOK, content=body, headers=headers, timeout=10)
    assert r.status_code == 401 and r.json()["code"] == "FAIL"
    counts = cloud.api("GET", "/api/v1/health")["counts"]
    assert counts["webhook_refused_signature"] == before.get("webhook_refused_signature", 0) + 1
    assert cloud.db("SELECT COUNT(*) FROM payment_ops WHERE order_id = ? AND op = 'capture'", (order_id,)) == [(1,)]


def test_a_manager_refunds_through_vendctl_and_the_refund_reaches_wechat_pay(cloud, machine, fake):
    customer = wechat_customer(cloud, machine, fake)
    order_id = order_id_of(customer.buy(machine, "A2"))
    pay_in_wechat(customer, fake, order_id)
    assert customer.wait_settled(order_id)["status"] == "succeeded"
    code, out, err = vendctl(cloud, "refund", order_id, "--reason", "warm can", "--amount", "1.00", "--key",
                             "wechat-refund-0001")
    assert code == 0, err
    wait_until(lambda: out_refund_no("refund:wechat-refund-0001") in fake.refunds, 15, "the refund at WeChat Pay")
    assert fake.refunds[out_refund_no("refund:wechat-refund-0001")]["amount"]["refund"] == 100
    wait_until(lambda: cloud.db("SELECT kind FROM txns WHERE order_id = ? ORDER BY id", (order_id,)) == [
        ("capture",), ("refund",)], 10, "the refund in the journal")
    assert "Refunded: CN¥1.00" in customer.http.get(f"/orders/{order_id}").text


def test_the_trade_bill_is_imported_with_vendctl_and_matches_the_journal(cloud, machine, fake, tmp_path):
    """Last in the module: every purchase above (paid, jammed and refunded, refunded in part) is in the bill."""
    days = sorted({t["success_time"][:10] for t in fake.trades.values()})
    assert len(days) == 1, "the bill of one day (Beijing) holds this module's trades"
    bill = tmp_path / f"wechat-{days[0]}.csv"
    bill.write_text(fake.bill(days[0]), encoding="utf-8")
    today = datetime.now(timezone.utc).date()
    span = ("--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1)))
    code, out, err = vendctl(cloud, "reconcile", "--statement", str(bill), "--provider", "wechat", *span)
    assert code == 0, out + err
    assert f"{bill}: {len(fake.trades) + len(fake.refunds)} lines" in out and "no mismatches" in out
    assert "fees posted: ¥" in out
    forged = tmp_path / "other-merchant.csv"
    forged.write_text(fake.bill(days[0]).replace(f"`{fake.keys.mchid}", "`1900000999"), encoding="utf-8")
    code, out, err = vendctl(cloud, "reconcile", "--statement", str(forged), "--provider", "wechat")
    assert code == 1 and "merchant 1900000999's" in err
