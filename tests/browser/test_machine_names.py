"""A machine named in English and Chinese (issue 15, item 6), in a browser at 360, 768 and 1440 px in both
languages: a manager names it on the machine's page (a wrong name refused in the page's language, what was
typed kept), the fleet page and the machine's page show the name in the page's language; a customer whose
phone reads Chinese sees the Chinese name over the menu. Nothing sticks out sideways at any width."""

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import add_staff, shot, sign_in
from tests.browser.conftest import PHONE, _close, _context
from tests.browser.test_customer import register_from_scan

WIDTHS = {"360": {**PHONE, "viewport": {"width": 360, "height": 740}},
          "768": {"viewport": {"width": 768, "height": 1024}, "has_touch": True},
          "1440": {"viewport": {"width": 1440, "height": 900}}}


@pytest.fixture(params=[(w, lang) for w in WIDTHS for lang in ("en", "zh-CN")], ids=lambda p: f"{p[0]}-{p[1]}")
def office(request, browser):
    width, lang = request.param
    context = _context(browser, lang, **WIDTHS[width])
    yield context.new_page(), f"{width}-{lang}", lang
    _close(context)


def fits(page) -> None:
    """The page is no wider than the screen (wide tables scroll inside their own box). Against the screen's
    width, not ``innerWidth``: a phone's layout viewport grows to a page that is too wide, so that one always
    fits (the machine page was 769 px wide on a 360-px phone: a table's visually hidden labels, positioned
    against the page instead of the table's scrolling box)."""
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"] + 1, page.url


def submit(page, form: str) -> None:
    with page.expect_navigation():
        page.locator(f"{form} button[type=submit]").last.click()


def enter(page, field: str) -> None:
    """Submit a form with the Enter key in one of its fields, as a person on a phone's keyboard does."""
    with page.expect_navigation():
        page.locator(field).press("Enter")


def test_a_manager_names_a_machine_in_both_languages(cloud, machine, office):
    page, tag, lang = office
    zh = lang == "zh-CN"
    suffix = tag.replace("zh-CN", "zh")
    add_staff(cloud, f"namer-{suffix}", "manager")
    sign_in(page, cloud, f"namer-{suffix}")

    page.goto(cloud.url + f"/staff/machines/{machine.id}")
    page.locator("#f-name").fill("Lobby B")
    page.locator("#f-name_zh-CN").fill("B座大堂")
    fits(page)  # the planogram editor and the ledger events scroll inside their own box on a phone
    enter(page, "#f-name_zh-CN")
    expect(page.locator("#names-form [role=status]")).to_have_text("已保存。" if zh else "Saved.")
    expect(page.locator("#machine-name")).to_have_text("B座大堂" if zh else "Lobby B")

    # No English name: refused in the page's language, next to the field; the Chinese name typed is kept.
    page.locator("#f-name").fill("")
    page.locator("#f-name_zh-CN").fill("B座大堂二号")
    enter(page, "#f-name_zh-CN")
    expect(page.locator("#error-name")).to_have_text("名称须为 1-80 个可打印字符" if zh
                                                     else "name must be 1-80 printable characters")
    assert page.locator("#f-name_zh-CN").input_value() == "B座大堂二号"
    page.locator("#names-form").scroll_into_view_if_needed()
    fits(page)
    shot(page, f"names-machine-error-{tag}")

    page.goto(cloud.url + "/staff")
    link = page.locator(f"table.fleet a[href='/staff/machines/{machine.id}']")
    expect(link).to_have_text("B座大堂" if zh else "Lobby B")
    fits(page)
    shot(page, f"names-fleet-{tag}")


def test_a_customer_reading_chinese_sees_the_chinese_name_over_the_menu(cloud, machine, new_page):
    cloud.api("PATCH", f"/api/v1/machines/{machine.id}", {"name": "Lobby B", "names": {"zh-CN": "B座大堂"}})
    page = new_page(lang="zh-CN", phone=True)
    register_from_scan(page, cloud, machine, "安")
    expect(page.get_by_role("heading", level=1)).to_have_text("B座大堂")
    assert page.title().startswith("B座大堂")
    shot(page, "names-menu-zh-CN")
    english = new_page(lang="en", phone=True)
    register_from_scan(english, cloud, machine, "Ann")
    expect(english.get_by_role("heading", level=1)).to_have_text("Lobby B")
    shot(english, "names-menu-en")


def test_a_location_form_error_is_in_chinese_on_a_chinese_page(cloud, new_page):
    add_staff(cloud, "placer-zh", "manager")
    page = new_page(lang="zh-CN", phone=True)
    sign_in(page, cloud, "placer-zh")
    page.goto(cloud.url + "/staff/locations")
    page.locator("#f-name").fill("Station")
    page.locator("#f-latitude").fill("95")
    page.locator("#f-longitude").fill("116.4")
    submit(page, "#add-location")
    expect(page.locator("#error-latitude")).to_have_text("纬度 95.0 超出范围：须在 -90 到 90 度之间")
    fits(page)
    shot(page, "names-location-error-zh-CN")
