"""The customer's pages on a phone (360 × 740, slow 3G): from a scan to "Take your product!", the wallet and
its receipts, each error page, and the same in Chinese. Every page visited is kept as a screenshot."""

import itertools
import os
import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import scan_url, shot
from tests.e2e.harness import Machine, wait_until
from protocol import token as qrtoken

LANDING_LIMIT = 100 * 1024
phones = itertools.count(1)


def register_from_scan(page, cloud, machine, name: str = "Ann") -> None:
    """Scan the machine's QR code and register on the page it leads to; ends on the menu."""
    page.goto(scan_url(cloud, machine))
    page.get_by_label(re.compile("Your name|您的姓名")).fill(name)
    page.get_by_label(re.compile("Phone number|手机号码")).fill(f"+86 139 {os.getpid() % 10000:04d} {next(phones):04d}")
    page.get_by_role("button", name=re.compile("Register|注册")).click()
    page.wait_for_url(re.compile(rf"/m/{machine.id}$"))


def top_up(page, amount: str) -> None:
    page.get_by_role("link", name=re.compile("^(Top up|充值)$")).click()
    page.get_by_label(re.compile("Top up|充值")).fill(amount)
    page.get_by_role("button", name=re.compile("^(Top up|充值)$")).click()
    page.wait_for_url(re.compile(r"/m/"))


def pictures_loaded(page) -> None:
    page.locator(".menu").scroll_into_view_if_needed()
    wait_until(lambda: page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)"), 20,
               "the product pictures to load")


def set_count(machine, slot: str, count: int) -> None:
    assert machine.service("restock", f"{slot}={count}")["ok"]
    wait_until(lambda: machine.synced(), 20, f"{machine.id}'s restock to reach the cloud")


def test_a_phone_scans_registers_tops_up_buys_and_sees_take_your_product(cloud, machine, phone):
    responses = []
    keep = lambda r: responses.append(r)  # noqa: E731  (Playwright wants a function it can mark)
    phone.on("response", keep)
    phone.goto(scan_url(cloud, machine))
    phone.wait_for_load_state("load")
    assert phone.get_by_role("heading", level=1).inner_text() == "Welcome"
    # What the landing path weighs: every response the scan and the registration page brought.
    weight = sum(len(r.body()) for r in responses if not 300 <= r.status < 400)
    print(f"\nlanding path (QR -> register page): {weight} bytes over {len(responses)} responses")
    assert weight < LANDING_LIMIT, f"the landing path weighs {weight} bytes"
    phone.remove_listener("response", keep)
    shot(phone, "customer-register")

    phone.get_by_role("button", name="Register").click()
    assert phone.locator("input:invalid").count() == 2, "the browser asks for the name and phone first"
    phone.get_by_label("Your name").fill("Ann")
    phone.get_by_label("Phone number").fill("12")
    phone.get_by_role("button", name="Register").click()
    assert "Please give a phone number" in phone.get_by_role("alert").inner_text()
    assert phone.get_by_label("Your name").input_value() == "Ann", "what was typed stays"
    shot(phone, "customer-register-error")
    register_from_scan(phone, cloud, machine)
    assert phone.get_by_role("heading", level=1).inner_text() == f"Machine {machine.id}"
    assert phone.locator("#balance").inner_text() == "CN¥0.00"
    pictures = phone.locator(".menu img")
    assert pictures.count() == 4 and pictures.first.get_attribute("alt") == "Water"
    assert pictures.first.get_attribute("loading") == "lazy"
    pictures_loaded(phone)
    shot(phone, "customer-menu")

    top_up(phone, "20")
    assert phone.locator("#balance").inner_text() == "CN¥20.00"
    phone.get_by_role("button", name="Buy Cola").click()
    phone.wait_for_url(re.compile(r"/orders/"))
    status = phone.locator("#status")
    assert status.get_attribute("aria-live") == "polite"
    shot(phone, "customer-order-live")
    expect(phone.locator("#status")).to_contain_text("Take your product!", timeout=30_000)
    assert phone.locator("#balance").inner_text() == "CN¥16.50"
    shot(phone, "customer-order-take-your-product")


@pytest.fixture
def registered(cloud, machine, new_page):
    page = new_page(phone=True, slow=True)
    register_from_scan(page, cloud, machine)
    return page


def test_an_expired_qr_code_says_scan_the_one_showing_now(cloud, machine, new_page):
    old = qrtoken.make(machine.id, machine.secret.encode(), time.time() - 3600, 5)
    for lang, title, hint in (("en", "This QR code has expired", "Scan the code showing now"),
                              ("zh-CN", "二维码已过期", "请扫描屏幕上当前显示的二维码")):
        page = new_page(lang=lang, phone=True)
        response = page.goto(f"{cloud.url}/q/{old}")
        assert response.status == 410
        assert page.get_by_role("heading", level=1).inner_text() == title
        assert hint in page.locator(".message").inner_text()
        shot(page, f"customer-error-expired-qr-{lang}")


def test_a_menu_opened_without_a_scan_and_an_unknown_machine(cloud, machine, registered):
    page = registered
    page.context.clear_cookies(name="vend_visit")
    assert page.goto(f"{cloud.url}/m/{machine.id}").status == 403
    assert page.get_by_role("heading", level=1).inner_text() == "Scan the machine first"
    assert "scan the QR code on the machine's screen" in page.locator(".message").inner_text()
    shot(page, "customer-error-not-scanned")
    assert page.goto(f"{cloud.url}/m/ghost").status == 404
    assert page.get_by_role("heading", level=1).inner_text() == "Unknown machine"
    shot(page, "customer-error-unknown-machine")


def test_a_slot_that_sells_out_while_the_menu_is_open(cloud, machine, registered):
    page = registered
    top_up(page, "20")
    set_count(machine, "B2", 0)
    try:
        page.reload()
        chocolate = page.locator(".item", has_text="Chocolate")
        assert "Sold out" in chocolate.inner_text()
        assert page.get_by_role("button", name="Buy Chocolate").count() == 0
        pictures_loaded(page)
        shot(page, "customer-menu-sold-out")
        set_count(machine, "B2", 10)
        page.reload()
        set_count(machine, "B2", 0)  # the menu on the phone still offers it
        page.get_by_role("button", name="Buy Chocolate").click()
        assert page.get_by_role("heading", level=1).inner_text() == "Sold out"
        assert "Choose something else" in page.locator(".message").inner_text()
        assert "not been charged" in page.locator(".message").inner_text()
        shot(page, "customer-error-sold-out")
        page.get_by_role("link", name="Back to the menu").click()
        assert page.locator("#balance").inner_text() == "CN¥20.00"
    finally:
        set_count(machine, "B2", 10)


def test_payment_declined_says_top_up(cloud, machine, registered):
    page = registered
    page.get_by_role("button", name="Buy Chips").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Payment declined"
    message = page.locator(".message").inner_text()
    assert "CN¥0.00" in message and "CN¥6.00" in message and "Top up your wallet" in message
    shot(page, "customer-error-declined")
    page.get_by_role("link", name="Top up").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Wallet"


def test_the_order_page_follows_a_slow_drop_live_then_the_machine_goes_offline(cloud, broker, tmp_path, new_page):
    m = Machine(cloud, broker, str(tmp_path), "m-slow", drop_delay=2.5, drop_timeout=6)
    m.start()
    try:
        m.stock()
        page = new_page(phone=True, slow=True)
        register_from_scan(page, cloud, m)
        top_up(page, "20")
        streams = []
        page.on("request", lambda r: streams.append(r.url) if r.url.endswith("/events") else None)
        page.get_by_role("button", name="Buy Water").click()
        page.wait_for_url(re.compile(r"/orders/"))
        status = page.locator("#status")
        assert "Take your product" not in status.inner_text()
        assert page.locator("#after").is_hidden()
        shot(page, "customer-order-dropping")
        expect(page.locator("#status")).to_contain_text("Take your product!", timeout=30_000)
        assert streams, "the page followed the order's event stream"
        assert page.locator("#balance").inner_text() == "CN¥18.00", "the balance came with the last event"
        shot(page, "customer-order-live-done")

        page.get_by_role("link", name="Back to the menu").click()
        m.proc.stop()
        wait_until(lambda: not cloud.machine(m.id)["online"], 30, "the cloud to see the machine offline")
        page.get_by_role("button", name="Buy Water").click()
        assert page.get_by_role("heading", level=1).inner_text() == "Machine offline"
        assert "Try again in a few minutes" in page.locator(".message").inner_text()
        shot(page, "customer-error-offline-buy")
        page.get_by_role("link", name="Back to the menu").click()
        assert page.get_by_role("alert").get_by_role("heading").inner_text() == "This machine is offline"
        assert page.get_by_role("button", name=re.compile("^Buy")).count() == 0
        assert "Machine offline" in page.locator(".item").first.inner_text()
        shot(page, "customer-menu-offline")
    finally:
        m.proc.stop()


def test_the_customer_pages_in_chinese(cloud, machine, new_page):
    page = new_page(lang="zh-CN", phone=True, slow=True)
    page.goto(scan_url(cloud, machine))
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.get_by_role("heading", level=1).inner_text() == "欢迎"
    shot(page, "customer-register-zh-CN")
    register_from_scan(page, cloud, machine, name="王芳")
    assert "钱包" in page.locator(".wallet").inner_text() and "剩余" in page.locator(".menu").inner_text()
    assert page.locator("#balance").inner_text() == "¥0.00"
    pictures_loaded(page)
    shot(page, "customer-menu-zh-CN")
    page.get_by_role("button", name="购买Chips").click()
    assert page.get_by_role("heading", level=1).inner_text() == "付款被拒绝"
    shot(page, "customer-error-declined-zh-CN")
    page.get_by_role("link", name="充值").click()
    page.get_by_label(re.compile("充值")).fill("abc")
    page.get_by_role("button", name="充值").click()
    assert "不是大于零的金额" in page.get_by_role("alert").inner_text()
    shot(page, "customer-wallet-error-zh-CN")
    page.get_by_role("link", name="English").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Wallet"


def test_the_receipt_and_wallet_history_after_a_refund(cloud, machine, registered):
    page = registered
    top_up(page, "10")
    page.get_by_role("button", name="Buy Water").click()
    page.wait_for_url(re.compile(r"/orders/"))
    expect(page.locator("#status")).to_contain_text("Take your product!", timeout=30_000)
    order_id = page.url.rsplit("/", 1)[1]
    cloud.api("POST", f"/api/v1/orders/{order_id}/refund", {"amount": 50, "reason": "warm water",
                                                             "key": f"refund-{order_id}"[:64]})
    page.get_by_role("link", name="Receipt").click()
    receipt = page.locator(".receipt").inner_text()
    for shown in (order_id, f"Machine {machine.id}", "Water", "CN¥2.00", "Wallet", "Partly refunded",
                  "CN¥0.50", "CN¥1.50"):
        assert shown in receipt, shown
    shot(page, "customer-receipt")
    assert page.get_by_role("button", name="Print").is_visible(), "the page's own script runs under its policy"
    page.emulate_media(media="print")
    assert not page.get_by_role("button", name="Print").is_visible()
    shot(page, "customer-receipt-print")
    page.emulate_media(media="screen")
    page.get_by_role("link", name="Wallet history").click()
    page.wait_for_url(re.compile(r"/wallet"))
    rows = [r.inner_text() for r in page.locator(".history tbody tr").all()]
    assert rows[0].startswith(rows[0].split("\t")[0]) and "Refund: Water" in rows[0] and "CN¥0.50" in rows[0]
    assert any("Paid: Water" in r and "-CN¥2.00" in r for r in rows)
    assert any("Top-up" in r and "CN¥10.00" in r for r in rows)
    assert page.locator("#balance").inner_text() == "CN¥8.50"
    shot(page, "customer-wallet-history")
