"""Machines, locations and routes in a browser at 360, 768 and 1440 px, in English and Chinese: a manager adds
a location with its Chinese name, a machine (its secrets shown once), moves it there, makes a route of two
machines and puts them in order with the up and down buttons (no dragging), opens the day's routes and the
pick list's Route menu, and retires a machine. Nothing sticks out sideways at any width."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import add_staff, shot, sign_in
from tests.browser.conftest import PHONE, _close, _context

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
    """The page is no wider than the screen (wide tables scroll inside their own box)."""
    # Against the screen, not innerWidth: a phone's layout viewport grows to fit a page that is too wide.
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"] + 1, page.url


def submit(page, form: str) -> None:
    with page.expect_navigation():
        page.locator(f"{form} button[type=submit]").last.click()


def test_a_manager_places_machines_and_orders_a_route(cloud, office):
    page, tag, lang = office
    suffix = tag.replace("zh-CN", "zh")
    add_staff(cloud, f"places-{suffix}", "manager")
    sign_in(page, cloud, f"places-{suffix}")
    zh = lang == "zh-CN"

    # A location, wrong coordinates first: the error next to the field, what was typed kept.
    page.goto(cloud.url + "/staff/locations")
    page.locator("#f-name").fill(f"Station {suffix}")
    page.locator("#f-name_zh-CN").fill(f"车站 {suffix}")
    page.locator("#f-latitude").fill("95")
    page.locator("#f-longitude").fill("116.4")
    page.locator("#f-tz").select_option("Asia/Shanghai")
    submit(page, "#add-location")
    expect(page.locator("#error-latitude")).to_contain_text("超出范围" if zh else "out of range")
    assert page.locator("#f-name_zh-CN").input_value() == f"车站 {suffix}"
    fits(page)
    shot(page, f"places-location-error-{tag}")
    page.locator("#f-latitude").fill("39.9")
    submit(page, "#add-location")
    page.wait_for_url(re.compile(r"/staff/locations/\d+"))
    expect(page.locator("h1")).to_have_text(f"车站 {suffix}" if zh else f"Station {suffix}")
    fits(page)
    shot(page, f"places-location-{tag}")
    page.goto(cloud.url + "/staff/locations")
    expect(page.locator("#locations")).to_contain_text(f"车站 {suffix}" if zh else f"Station {suffix}")
    fits(page)
    shot(page, f"places-locations-{tag}")

    # Two machines; the secrets of the first shown once.
    page.goto(cloud.url + "/staff/machines")
    for n in (1, 2):
        page.locator("#f-id").fill(f"p{n}-{suffix}")
        page.locator("#f-name").fill(f"Hall {n}")
        page.locator("#f-location").select_option(label=f"车站 {suffix}" if zh else f"Station {suffix}")
        submit(page, "#add-machine")
        expect(page.locator("#new-machine")).to_be_visible()
        secret = page.locator("#new-secret").inner_text()
        assert len(secret) >= 32
        if n == 1:
            fits(page)
            shot(page, f"places-machine-added-{tag}")
    page.goto(cloud.url + f"/staff/machines?q={suffix}")
    expect(page.locator("#machines tbody tr")).to_have_count(2)
    assert secret not in page.content()
    fits(page)
    shot(page, f"places-machines-{tag}")

    # Move the second to the warehouse and back: its stays listed.
    page.goto(cloud.url + f"/staff/machines/p2-{suffix}/place")
    page.locator("#f-location").select_option("none")
    submit(page, "#move-form")
    expect(page.locator("#stays tbody tr")).to_have_count(1)
    page.locator("#f-location").select_option(label=f"车站 {suffix}" if zh else f"Station {suffix}")
    submit(page, "#move-form")
    expect(page.locator("#stays tbody tr")).to_have_count(2)
    # The menu shows where it stands now (a third location would be listed before it).
    assert page.locator("#f-location option:checked").inner_text() == (f"车站 {suffix}" if zh else f"Station {suffix}")
    fits(page)
    shot(page, f"places-machine-place-{tag}")

    # A route: first machine p1, then p2 added, then p2 moved up with its button.
    page.goto(cloud.url + "/staff/routes")
    page.locator("#add-route #f-name").fill(f"Route {suffix}")
    page.locator("#add-route #f-machine").select_option(f"p1-{suffix}")
    fits(page)
    shot(page, f"places-routes-{tag}")
    submit(page, "#add-route")
    page.wait_for_url(re.compile(r"/staff/routes/\d+"))
    page.locator("#stops-form #f-machine").select_option(f"p2-{suffix}")
    with page.expect_navigation():
        page.locator("#stops-form button[value=add]").click()
    stops = page.locator("ol.stops li strong")
    expect(stops).to_have_text([f"p1-{suffix}", f"p2-{suffix}"])
    with page.expect_navigation():
        page.locator("#stops-form button[value='up:1']").click()
    expect(stops).to_have_text([f"p2-{suffix}", f"p1-{suffix}"])
    fits(page)
    shot(page, f"places-route-{tag}")

    # The day's routes, and the pick list's Route menu offering it under today.
    page.goto(cloud.url + "/staff/routes/today")
    section = page.locator("section.day-route", has_text=f"Route {suffix}")
    expect(section.locator("li strong")).to_have_text([f"p2-{suffix}", f"p1-{suffix}"])
    fits(page)
    shot(page, f"places-day-route-{tag}")
    page.goto(cloud.url + "/staff/pick-lists")
    today = page.locator("#f-route optgroup").first
    assert today.get_attribute("label") == ("今天" if zh else "Today")
    expect(today.locator("option", has_text=f"Route {suffix}")).to_have_count(1)
    fits(page)

    # Retire the first machine: the box must be ticked; then it says retired.
    page.goto(cloud.url + f"/staff/machines/p1-{suffix}/place")
    submit(page, "#retire-form")
    expect(page.locator("#error-sure")).to_be_visible()
    page.locator("#f-sure").check()
    submit(page, "#retire-form")
    expect(page.locator("#machine-state")).to_contain_text("已退役" if zh else "Retired")
    expect(page.locator("#retire-form")).to_have_count(0)
    fits(page)
    shot(page, f"places-machine-retired-{tag}")
