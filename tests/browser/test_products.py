"""The product catalogue in a browser: the list and a product's form at 360, 768 and 1440 px in English and
Chinese (nothing sticks out sideways); a manager adds a product (a nonsense price first, answered next to
the field), gives the machine's Cola a Chinese name, and a customer whose phone reads Chinese sees that
name on the machine's menu."""

import os
import re

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import add_staff, scan_url, shot, sign_in
from tests.browser.conftest import PHONE, _close, _context

WIDTHS = {360: {**PHONE, "viewport": {"width": 360, "height": 740}},
          768: {"viewport": {"width": 768, "height": 1024}, "has_touch": True},
          1440: {"viewport": {"width": 1440, "height": 900}}}
CASES = [(w, lang) for w in WIDTHS for lang in ("en", "zh-CN")]


@pytest.fixture
def open_browser(browser):
    contexts = []

    def make(width: int, lang: str):
        context = _context(browser, lang, **WIDTHS[width])
        contexts.append(context)
        return context.new_page()

    yield make
    for c in contexts:
        _close(c)


def fits(page) -> None:
    """Nothing sticks out sideways: the page is as wide as the screen (a wide table scrolls in its box)."""
    # Against the screen, not innerWidth: a phone's layout viewport grows to fit a page that is too wide.
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"] + 1, page.url


@pytest.mark.parametrize("width,lang", CASES, ids=[f"{w}-{lang}" for w, lang in CASES])
def test_the_catalogue_pages_fit_every_width_in_both_languages(cloud, machine, open_browser, width, lang):
    page = open_browser(width, lang)
    add_staff(cloud, f"cat-{width}-{lang}", "manager")
    sign_in(page, cloud, f"cat-{width}-{lang}")
    page.goto(cloud.url + "/staff/products")
    heading = "Products" if lang == "en" else "商品"
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    expect(page.locator("#products tbody tr")).to_have_count(4)  # the machine's four products
    assert page.get_by_role("link", name="Products" if lang == "en" else "商品", exact=True).first.is_visible() \
        or width == 360  # the navigation may fold away on a phone
    fits(page)
    shot(page, f"products-{width}-{lang}")
    page.get_by_role("link", name="cola", exact=True).click()
    page.wait_for_url(re.compile(r"/staff/products/\d+$"))
    expect(page.get_by_label("Name in 中文" if lang == "en" else "中文名称")).to_be_visible()
    fits(page)
    shot(page, f"product-{width}-{lang}")


def test_a_manager_adds_a_product_and_names_cola_in_chinese_for_the_menu(cloud, machine, open_browser):
    page = open_browser(1440, "en")
    add_staff(cloud, "cat-adder", "manager")
    sign_in(page, cloud, "cat-adder")
    page.goto(cloud.url + "/staff/products")
    page.get_by_role("link", name="Add a product").click()
    page.get_by_label("SKU").fill("tea")
    page.get_by_label("Name (default)").fill("Green tea")
    page.get_by_label("Name in 中文").fill("绿茶")
    page.get_by_label("Cost").fill("1.20")
    page.get_by_label("Price").fill("three fifty")
    page.get_by_label("Barcode").fill("6901234567892")
    page.get_by_role("button", name="Add the product").click()
    expect(page.locator("#error-price")).to_contain_text("Price: “three fifty” is not an amount")
    assert page.get_by_label("Name in 中文").input_value() == "绿茶"  # the form kept what was typed
    shot(page, "product-add-error")
    page.get_by_label("Price").fill("4.00")
    page.get_by_role("button", name="Add the product").click()
    page.wait_for_url(re.compile(r"/staff/products/\d+\?saved=1$"))
    expect(page.locator("#notice")).to_have_text("Saved.")
    expect(page.locator("#price-now")).to_have_text("Now: CN¥4.00")  # babel writes the yuan so in English
    page.goto(cloud.url + "/staff/products?q=6901234567892")
    expect(page.locator("#products tbody tr")).to_have_count(1)
    expect(page.locator("#products tbody tr")).to_contain_text("CN¥1.20")

    page.goto(cloud.url + "/staff/products?q=cola")
    page.get_by_role("link", name="cola", exact=True).click()
    page.get_by_label("Name in 中文").fill("可口可乐")
    page.get_by_label("Cost").fill("1.50")
    page.get_by_role("button", name="Save").click()
    # The planogram made Cola with no cost or price: both are needed before anything is saved.
    expect(page.locator("#error-price")).to_contain_text("Price:")
    page.get_by_label("Price").fill("3.50")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#notice")).to_have_text("Saved.")
    shot(page, "product-cola-saved")

    customer = open_browser(360, "zh-CN")
    customer.goto(scan_url(cloud, machine))
    customer.get_by_label("您的姓名").fill("王芳")
    customer.get_by_label("手机号码").fill(f"+861391{os.getpid() % 1000:03d}0001")
    customer.get_by_role("button", name="注册").click()
    customer.wait_for_url(re.compile(rf"/m/{machine.id}$"))
    expect(customer.get_by_role("heading", name="可口可乐")).to_be_visible()
    expect(customer.get_by_role("heading", name="Water")).to_be_visible()  # no Chinese name: the default one
    fits(customer)
    shot(customer, "menu-zh-CN-named")
