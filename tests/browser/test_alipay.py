"""The story once for Alipay, in a real browser inside Alipay's own (its User-Agent): the phone registers with
Alipay offered first, signs the withholding agreement on the Alipay fake's page, comes back to the menu, buys
and is told to take the product; the money is taken once, on the drop."""

import os
import re

import httpx
import pytest

from tests.browser.browsing import scan_url, shot
from tests.browser.conftest import PHONE, _close, _context, slow_3g
from tests.e2e.harness import Cloud, Machine, wait_until
from tests.e2e.test_e2e_alipay import APP_ID, PID, AlipayFakeProc
from tests.fakes.alipay import Keys

ALIPAY_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
             "Mobile Safari/537.36 AlipayClient/10.5.96.8000 Language/zh-Hans")


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alipay-keys")
    Keys.generate().write(folder)
    return str(folder)


@pytest.fixture(scope="module")
def alipay(tmp_path_factory, keys_dir):
    fake = AlipayFakeProc(str(tmp_path_factory.mktemp("alipay")), keys_dir)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def cloud(broker, tmp_path_factory, alipay, keys_dir):
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")), demo_topups=False, extra=(
        "--alipay-app-id", APP_ID, "--alipay-pid", PID, "--alipay-gateway", alipay.url + "/gateway.do",
        "--alipay-private-key-file", os.path.join(keys_dir, "app_private.pem"),
        "--alipay-public-key-file", os.path.join(keys_dir, "alipay_public.pem")))
    c.start()
    yield c
    c.stop()


@pytest.fixture
def alipay_phone(browser):
    """A phone inside Alipay's app (its User-Agent), asking for English, on a slow 3G connection."""
    context = _context(browser, "en", user_agent=ALIPAY_UA, **PHONE)
    page = context.new_page()
    slow_3g(page)
    yield page
    _close(context)


def test_inside_alipay_a_customer_signs_the_agreement_buys_and_pays_on_the_drop(cloud, machine, alipay,
                                                                               alipay_phone):
    phone = alipay_phone
    phone.goto(scan_url(cloud, machine))
    assert phone.get_by_label("Alipay").is_checked(), "inside Alipay, Alipay is offered first"
    phone.get_by_label("Your name").fill("Zhou")
    phone.get_by_label("Phone number").fill("+8613800000052")
    shot(phone, "alipay-1-register")
    phone.get_by_role("button", name="Register").click()
    phone.get_by_role("button", name="Agree and sign").wait_for()
    assert phone.url.startswith(alipay.url + "/gateway.do?")
    shot(phone, "alipay-2-agreement-page")
    phone.get_by_role("button", name="Agree and sign").click()
    phone.get_by_role("heading", name=f"Machine {machine.id}").wait_for()
    shot(phone, "alipay-3-menu")
    phone.get_by_role("button", name="Buy Cola").click()
    phone.get_by_role("status").get_by_text("Take your product!").wait_for(timeout=30_000)
    shot(phone, "alipay-4-take-your-product")
    order_id = re.search(r"/orders/([A-Za-z0-9]+)", phone.url).group(1)

    def paid():  # the payment follows the drop: the outbox's worker sends it a moment after the ledger says so
        return [t["amount"] for no, t in httpx.get(alipay.url + "/_fake/state", timeout=10).json()["trades"].items()
                if no.startswith(order_id + "_")]

    wait_until(lambda: paid() == [350], 20, "the drop's payment at Alipay")
    assert paid() == [350]


def test_a_customer_who_declines_the_agreement_is_told_and_offered_the_choice_again(cloud, machine, alipay,
                                                                                   alipay_phone):
    phone = alipay_phone
    phone.goto(scan_url(cloud, machine))
    phone.get_by_label("Your name").fill("Qian")
    phone.get_by_label("Phone number").fill("+8613800000053")
    phone.get_by_role("button", name="Register").click()
    phone.get_by_role("button", name="Decline").click()
    phone.get_by_text("The Alipay agreement was not signed").wait_for()
    assert phone.get_by_role("link", name="Choose how to pay").is_visible()
    shot(phone, "alipay-5-not-signed")
