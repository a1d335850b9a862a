"""The WeChat story for a merchant with WeChat Pay Score: the customer confirms a service order on WeChat's
sheet (the fake's, opened by the stand-in ``WeixinJSBridge``'s ``openBusinessView``), nothing is taken, the
product drops, and only then does WeChat Pay take the amount."""

import re

import pytest

from tests.browser.browsing import scan_url, shot
from tests.browser.test_story_wechat import wechat_phone  # noqa: F401  (the phone inside WeChat)
from tests.e2e.harness import Cloud, wait_until
from tests.fakes.wechat import FakeWeChatPay, Keys


@pytest.fixture(scope="module")
def fake():
    f = FakeWeChatPay(Keys())
    f.auto_collect = True  # WeChat Pay takes a completed order's amount by itself, moments later
    f.start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def cloud(broker, tmp_path_factory, fake):
    files = fake.keys.write(tmp_path_factory.mktemp("keys"))
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")), demo_topups=False, extra=(
        "--wechat-mchid", fake.keys.mchid, "--wechat-appid", fake.keys.appid,
        "--wechat-cert-serial", fake.keys.merchant_serial, "--wechat-private-key-file", files["private_key"],
        "--wechat-apiv3-key-file", files["apiv3_key"], "--wechat-app-secret-file", files["app_secret"],
        "--wechat-api-url", fake.url, "--wechat-oauth-url", fake.url + "/connect/oauth2/authorize",
        "--wechat-token-url", fake.url + "/sns/oauth2/access_token",
        "--wechat-payscore-service-id", fake.service_id))
    c.start()
    yield c
    c.stop()


def test_with_pay_score_the_customer_confirms_and_pays_only_after_the_drop(cloud, machine, fake, wechat_phone):
    phone = wechat_phone
    phone.goto(scan_url(cloud, machine))
    phone.get_by_label("Your name").fill("Hui")
    phone.get_by_label("Phone number").fill("+8613800000053")
    phone.get_by_role("button", name="Register").click()
    phone.get_by_role("button", name="Continue").click()  # WeChat's OAuth page
    phone.get_by_role("button", name="Buy Cola").click()
    phone.wait_for_url(re.compile(r"/pay/wechat/o[0-9a-f]+$"), timeout=30_000)
    phone.get_by_text("Nothing is taken now.", exact=False).wait_for()
    shot(phone, "wechat-score-1-confirm")
    phone.get_by_role("button", name="Confirm").click()
    phone.wait_for_url(re.compile(re.escape(fake.url) + "/fake/payscore"))
    assert fake.trades == {}, "confirming takes nothing"
    shot(phone, "wechat-score-2-wechat-sheet")
    phone.get_by_role("button", name="Confirm").click()
    phone.get_by_role("status").get_by_text("Take your product!").wait_for(timeout=30_000)
    shot(phone, "wechat-score-3-take-your-product")
    [order] = fake.service_orders.values()
    wait_until(lambda: order["state"] == "DONE", 15, "WeChat Pay to take the amount after the drop")
    assert order["collection"]["paid_amount"] == 350
    [trade] = fake.trades.values()
    assert trade["amount"]["total"] == 350
    wait_until(lambda: cloud.db("SELECT op, status FROM payment_ops ORDER BY id") == [
        ("authorise", "succeeded"), ("capture", "succeeded")], 15, "the capture recorded from PAYSCORE.USER_PAID")
    assert cloud.db("SELECT t.kind, e.amount FROM txns t JOIN entries e ON e.txn_id = t.id JOIN accounts a "
                    "ON a.id = e.account_id WHERE a.kind = 'revenue'") == [("capture", 350)]
