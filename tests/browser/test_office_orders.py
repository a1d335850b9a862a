"""The office's orders and customers in a browser, on a phone (360 px) and a desk (1440 px): a manager finds a
customer's order, reads its money and refunds part of it (a wrong amount first, answered next to the field);
an administrator blocks a customer, whose phone is then refused at the machine, and unblocks them."""

import itertools
import os
import re

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import add_staff, scan_url, shot, sign_in
from tests.browser.conftest import PHONE, _close, _context

WIDTHS = {"phone": {**PHONE, "viewport": {"width": 360, "height": 740}}, "desk": {"viewport": {"width": 1440, "height": 900}}}
numbers = itertools.count(1)


@pytest.fixture(params=list(WIDTHS))
def office(request, browser):
    """A staff member's browser at 360 or 1440 px wide; yields (page, name of the width)."""
    context = _context(browser, "en", **WIDTHS[request.param])
    yield context.new_page(), request.param
    _close(context)


@pytest.fixture
def customer_phone(browser):
    context = _context(browser, "en", **PHONE)
    yield context.new_page()
    _close(context)


def fits(page) -> None:
    """Nothing sticks out sideways: the page is as wide as the screen (wide tables scroll in their box)."""
    # Against the screen, not innerWidth: a phone's layout viewport grows to fit a page that is too wide.
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"] + 1, page.url


def register_and_buy(page, cloud, machine, name: str) -> str:
    """A phone scans, registers, tops up 20 and buys a Cola; its phone number as the cloud writes it."""
    number = f"+861390{os.getpid() % 1000:03d}{next(numbers):04d}"
    page.goto(scan_url(cloud, machine))
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Phone number").fill(number)
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(rf"/m/{machine.id}$"))
    page.get_by_role("link", name=re.compile("^Top up$")).click()
    page.get_by_label("Top up").fill("20")
    page.get_by_role("button", name=re.compile("^Top up$")).click()
    page.wait_for_url(re.compile(r"/m/"))
    page.get_by_role("button", name="Buy Cola").click()
    page.wait_for_url(re.compile(r"/orders/"))
    expect(page.locator("#status")).to_contain_text("Take your product!", timeout=30_000)
    return number


def test_a_manager_searches_opens_an_order_and_refunds_part_of_it(cloud, machine, office, customer_phone):
    page, width = office
    number = register_and_buy(customer_phone, cloud, machine, f"Refund {width}")
    add_staff(cloud, f"orders-{width}", "manager")
    sign_in(page, cloud, f"orders-{width}")
    page.goto(cloud.url + "/staff/orders")
    page.get_by_label("Customer (id or phone with +)").fill("+86 nonsense")
    page.get_by_role("button", name="Search").click()
    assert "Customer:" in page.locator("#error-customer").inner_text()
    page.get_by_label("Customer (id or phone with +)").fill(number)
    page.get_by_label("State").select_option("succeeded")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#orders tbody tr")
    expect(rows).to_have_count(1)
    fits(page)
    shot(page, f"office-orders-{width}")
    rows.first.get_by_role("link").first.click()
    page.wait_for_url(re.compile(r"/staff/orders/o"))
    assert page.locator("#story").get_by_role("cell", name="capture").is_visible()
    fits(page)
    page.get_by_label("Amount (leave empty for all that is left)").fill("99.00")
    page.get_by_label("Reason").fill("the can was dented")
    page.get_by_role("button", name="Refund").click()
    assert "Amount:" in page.locator("#error-amount").inner_text()
    assert page.get_by_label("Reason").input_value() == "the can was dented", "what was typed stays"
    shot(page, f"office-order-refund-error-{width}")
    page.get_by_label("Amount (leave empty for all that is left)").fill("1.50")
    page.get_by_role("button", name="Refund").click()
    expect(page.get_by_role("status")).to_have_text("The refund is recorded.")
    assert page.locator("#order-refunded").inner_text() == "CN¥1.50"
    assert page.locator("#story").get_by_role("cell", name="refund").is_visible()
    fits(page)
    shot(page, f"office-order-refunded-{width}")
    customer_phone.goto(cloud.url + "/wallet")
    assert customer_phone.locator("#balance").inner_text() == "CN¥18.00"  # 20 - 3.50 + 1.50


def test_a_blocked_customer_is_refused_at_the_machine_until_unblocked(cloud, machine, office, customer_phone):
    page, width = office
    number = register_and_buy(customer_phone, cloud, machine, f"Block {width}")
    add_staff(cloud, f"blocker-{width}", "administrator")
    sign_in(page, cloud, f"blocker-{width}")
    page.goto(cloud.url + "/staff/customers")
    page.get_by_label("Name or phone").fill(f"Block {width}")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=f"Block {width}").click()
    assert number in page.content()
    page.get_by_role("button", name="Block", exact=True).click()
    assert "Reason:" in page.locator("#error-reason").inner_text()
    page.get_by_label("Reason").fill("card chargebacks")
    page.get_by_role("button", name="Block", exact=True).click()
    expect(page.locator("#blocked-state")).to_contain_text("card chargebacks")
    fits(page)
    shot(page, f"office-customer-blocked-{width}")

    customer_phone.goto(scan_url(cloud, machine))
    customer_phone.get_by_role("button", name="Buy Water").click()
    expect(customer_phone.get_by_role("heading", level=1)).to_have_text("You cannot buy here")
    shot(customer_phone, f"customer-blocked-{width}")
    customer_phone.goto(cloud.url + "/wallet")
    assert customer_phone.locator("#balance").inner_text() == "CN¥16.50", "nothing was charged"

    page.get_by_role("button", name="Unblock").click()
    expect(page.locator("#blocked-state")).to_have_text("May buy")
    customer_phone.goto(scan_url(cloud, machine))
    customer_phone.get_by_role("button", name="Buy Water").click()
    customer_phone.wait_for_url(re.compile(r"/orders/"))
