"""The manager's fleet pages in a real browser: the fleet with its map, one machine with its screen mirror
and slot grid, and the planogram editor taking a new price to the simulated machine."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import STAFF_PASSWORD, add_staff, shot, sign_in

from tests.e2e.harness import wait_until


@pytest.fixture(scope="module")
def placed(cloud, machine):
    """m1 standing at a location with coordinates, and a second location with machines elsewhere."""
    lobby = cloud.api("POST", "/api/v1/locations", {"name": "Station lobby", "address": "1 Station Rd",
                                                    "latitude": 31.2304, "longitude": 121.4737})
    cloud.api("POST", "/api/v1/locations", {"name": "Depot", "latitude": 31.30, "longitude": 121.60})
    cloud.api("PUT", f"/api/v1/machines/{machine.id}/location", {"location_id": lobby["id"]})
    return lobby


def test_a_manager_sees_the_fleet_on_a_map_and_opens_the_machine(cloud, machine, placed, desk):
    add_staff(cloud, "fleet-mgr", "manager")
    desk.goto(cloud.url + "/staff")
    assert "/staff/login" in desk.url, "no session: the sign-in page first"
    shot(desk, "fleet-sign-in-first")
    sign_in(desk, cloud, "fleet-mgr")
    expect(desk.get_by_role("heading", name="Fleet", exact=True)).to_be_visible()
    row = desk.locator("table.fleet").get_by_role("row").filter(has_text="Machine m1")
    expect(row).to_contain_text("Online")
    expect(row).to_contain_text("Station lobby")
    expect(row).to_contain_text("100% (40 of 40)")
    dot = desk.locator(".plan svg a", has_text="Station lobby")
    expect(dot).to_have_attribute("href", "/staff/machines/m1")
    expect(desk.locator(".plan svg title").first).to_contain_text("Map of the fleet")
    expect(desk.locator(".plan svg circle")).to_have_count(2)
    shot(desk, "fleet-overview")

    dot.click()
    expect(desk.get_by_role("heading", name="Machine m1")).to_be_visible()
    cell = desk.locator(".slot-grid li", has_text="A2")
    expect(cell).to_contain_text("Cola")
    expect(cell).to_contain_text("10 of 10")
    screen = desk.get_by_role("img", name=re.compile("The screen of Machine m1"))
    wait_until(lambda: screen.evaluate("i => i.complete && i.naturalWidth > 0"), 10, "the screen mirror to load")
    svg = desk.request.get(cloud.url + "/staff/machines/m1/screen.svg").text()
    assert "Scan to buy" in svg and "Ready" in svg and "<path" in svg, "a QR code and the state line"
    expect(desk.get_by_text("Version 1 applied")).to_be_visible()
    expect(desk.locator(".events tbody tr").first).not_to_contain_text("No events")
    shot(desk, "fleet-machine")


def test_a_manager_changes_a_price_and_the_machine_applies_it(cloud, machine, placed, desk):
    add_staff(cloud, "price-mgr", "manager")
    sign_in(desk, cloud, "price-mgr")
    desk.goto(cloud.url + "/staff/machines/m1")
    before = int(re.search(r"Version (\d+) applied", desk.locator(".config-state").inner_text()).group(1))

    desk.get_by_label("Price of A2").fill("three fifty")
    desk.get_by_role("button", name="Save a new version").click()
    expect(desk.locator("#err-price-1")).to_contain_text("Write the price like 3.50")
    expect(desk.get_by_label("Price of A2")).to_have_value("three fifty")
    shot(desk, "fleet-editor-error")

    desk.get_by_label("Price of A2").fill("3.80")
    desk.get_by_role("button", name="Save a new version").click()
    expect(desk.get_by_role("status")).to_contain_text(f"Version {before + 1} saved")
    # The simulated machine applies a config within moments when idle: pending if the page came first.
    expect(desk.locator(".config-state")).to_contain_text(re.compile(f"Version {before + 1} (pending|applied)"))
    shot(desk, "fleet-editor-saved")
    wait_until(lambda: cloud.machine("m1")["planogram"]["state"] == "applied", 20, "the machine to apply it")
    desk.reload()
    expect(desk.locator(".config-state")).to_have_text(f"Version {before + 1} applied")
    expect(desk.locator(".slot-grid li", has_text="A2")).to_contain_text("CN¥3.80")
    expect(desk.locator(".events")).to_contain_text("config.applied")
    shot(desk, "fleet-editor-applied")


def test_a_technician_sees_the_machine_but_not_the_editor_and_a_supplier_is_turned_away(cloud, machine, new_page):
    add_staff(cloud, "fleet-tech", "technician")
    page = new_page()
    sign_in(page, cloud, "fleet-tech")
    page.goto(cloud.url + "/staff/machines/m1")
    expect(page.get_by_text("Only a manager or an administrator can change the planogram")).to_be_visible()
    expect(page.get_by_role("button", name="Save a new version")).to_have_count(0)
    expect(page.locator(".slot-grid li")).to_have_count(4)
    shot(page, "fleet-machine-technician")

    supplier = cloud.api("POST", "/api/v1/suppliers", {"name": "Fleet test supplier"})
    cloud.api("POST", "/api/v1/people", {"username": "fleet-supplier", "role": "supplier",
                                         "password": STAFF_PASSWORD, "supplier_id": supplier["id"]})
    other = new_page()
    sign_in(other, cloud, "fleet-supplier")
    other.goto(cloud.url + "/staff")
    expect(other.get_by_role("heading", name="Not for your role")).to_be_visible()
    shot(other, "fleet-supplier-refused")


def test_the_fleet_pages_in_chinese(cloud, machine, placed, new_page):
    add_staff(cloud, "fleet-zh", "manager")
    page = new_page(lang="zh-CN")
    sign_in(page, cloud, "fleet-zh")
    page.goto(cloud.url + "/staff")
    expect(page.get_by_role("heading", name="机队", exact=True)).to_be_visible()
    expect(page.locator("table.fleet").get_by_role("row").filter(has_text="Machine m1")).to_contain_text("在线")
    shot(page, "fleet-overview-zh-CN")
    page.goto(cloud.url + "/staff/machines/m1")
    expect(page.get_by_role("heading", name="货道", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="保存为新版本")).to_be_visible()
    expect(page.locator(".slot-grid li", has_text="A1")).to_contain_text("¥")
    shot(page, "fleet-machine-zh-CN")
