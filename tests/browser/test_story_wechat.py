"""The story once with WeChat Pay, in a real browser that plays WeChat's in-app browser: its User-Agent says
MicroMessenger, and it carries a stand-in for ``WeixinJSBridge`` (what WeChat injects into every page) that
takes the signed ``getBrandWCPayRequest`` parameters to the fake's payment sheet. The customer registers
(WeChat Pay offered first), passes WeChat's OAuth page, buys, confirms the payment on the cloud's JSAPI page,
pays on WeChat's sheet and is told to take the product."""

import re

import pytest

from tests.browser.browsing import scan_url, shot
from tests.browser.conftest import PHONE, _close, _context
from tests.e2e.harness import Cloud
from tests.fakes.wechat import FakeWeChatPay, Keys

WECHAT_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
             "MicroMessenger/8.0.47.2560(0x28002F35) NetType/WIFI Language/en")
# What WeChat's in-app browser provides every page: here its payment sheet is the fake's /fake/jsapi, which
# comes back to the page's own /done with the result the bridge's callback would have given.
BRIDGE = """
window.WeixinJSBridge = {invoke: function (name, params, callback) {
  var back = location.origin + location.pathname + "/done";
  if (name === "getBrandWCPayRequest") {
    var q = new URLSearchParams(params);
    q.set("return", back);
    location.assign("%(fake)s/fake/jsapi?" + q.toString());
  } else if (name === "openBusinessView" && params.businessType === "wxpayScoreUse") {
    location.assign("%(fake)s/fake/payscore?" + params.queryString + "&return=" + encodeURIComponent(back));
  }
}};
"""


@pytest.fixture(scope="module")
def fake():
    f = FakeWeChatPay(Keys())
    f.start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def cloud(broker, tmp_path_factory, fake):
    """The cloud with WeChat Pay pointed at the fake (this module's own, in place of conftest's)."""
    files = fake.keys.write(tmp_path_factory.mktemp("keys"))
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")), demo_topups=False, extra=(
        "--wechat-mchid", fake.keys.mchid, "--wechat-appid", fake.keys.appid,
        "--wechat-cert-serial", fake.keys.merchant_serial, "--wechat-private-key-file", files["private_key"],
        "--wechat-apiv3-key-file", files["apiv3_key"], "--wechat-app-secret-file", files["app_secret"],
        "--wechat-api-url", fake.url, "--wechat-oauth-url", fake.url + "/connect/oauth2/authorize",
        "--wechat-token-url", fake.url + "/sns/oauth2/access_token"))
    c.start()
    yield c
    c.stop()


@pytest.fixture
def wechat_phone(browser, fake):
    context = _context(browser, "en", user_agent=WECHAT_UA, **PHONE)
    context.add_init_script(BRIDGE % {"fake": fake.url})
    yield context.new_page()
    _close(context)


def test_a_customer_inside_wechat_registers_pays_and_takes_the_product(cloud, machine, fake, wechat_phone):
    phone = wechat_phone
    phone.goto(scan_url(cloud, machine))
    choice = phone.get_by_role("radio", name="WeChat Pay")
    assert choice.is_checked(), "inside WeChat, WeChat Pay is offered first"
    shot(phone, "wechat-1-register")
    phone.get_by_label("Your name").fill("Wei")
    phone.get_by_label("Phone number").fill("+8613800000052")
    phone.get_by_role("button", name="Register").click()
    phone.wait_for_url(re.compile(re.escape(fake.url) + "/connect/oauth2/authorize"))
    shot(phone, "wechat-2-oauth")
    phone.get_by_role("button", name="Continue").click()
    phone.get_by_role("heading", name=f"Machine {machine.id}").wait_for()
    phone.get_by_role("button", name="Buy Cola").click()
    phone.wait_for_url(re.compile(r"/pay/wechat/o[0-9a-f]+$"), timeout=30_000)  # the order page sends them on
    notice = phone.get_by_text("If it does not drop, the full amount goes back to your WeChat Pay.")
    notice.wait_for()
    assert "3.50" in phone.locator("#amount").inner_text()
    shot(phone, "wechat-3-confirm")
    phone.get_by_role("button", name="Pay").click()
    phone.wait_for_url(re.compile(re.escape(fake.url) + "/fake/jsapi"))
    shot(phone, "wechat-4-wechat-pay-sheet")
    phone.get_by_role("button", name="Pay").click()
    phone.get_by_role("status").get_by_text("Take your product!").wait_for(timeout=30_000)
    shot(phone, "wechat-5-take-your-product")
    [trade] = fake.trades.values()
    assert (trade["trade_state"], trade["amount"]["total"]) == ("SUCCESS", 350)
