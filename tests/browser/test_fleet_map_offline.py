"""The fleet page's map when the operator's browser cannot reach the tile server (here a closed local port,
as offline): every tile fails, static/fleetmap.js drops the street map and the plain plan stays, with its
markers linking to the machines."""

import socket

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import add_staff, shot, sign_in
from tests.e2e.harness import Cloud


def closed_port() -> int:
    """A local port nothing listens on: bound, then let go."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cloud(broker, tmp_path_factory):
    port = closed_port()
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")),
              extra=("--map-tiles", f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png"))
    c.tile_port = port
    c.start()
    yield c
    c.stop()


@pytest.mark.parametrize("lang, heading", [("en", "Map"), ("zh-CN", "地图")])
def test_without_the_tile_server_the_map_falls_back_to_the_plan(cloud, machine, new_page, lang, heading):
    if not cloud.api("GET", "/api/v1/locations"):
        lobby = cloud.api("POST", "/api/v1/locations", {"name": "Station lobby", "latitude": 31.2304,
                                                        "longitude": 121.4737})
        cloud.api("POST", "/api/v1/locations", {"name": "Depot", "latitude": 31.30, "longitude": 121.60})
        cloud.api("PUT", f"/api/v1/machines/{machine.id}/location", {"location_id": lobby["id"]})
        add_staff(cloud, "offline-mgr", "manager")
    page = new_page(lang=lang, phone=True)
    sign_in(page, cloud, "offline-mgr")
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(cloud.url + "/staff")
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    # The script built the street map, its tiles failed, and it took the map away again.
    page.wait_for_function("() => document.querySelector('figure.map') && !document.querySelector('.streets')"
                           " && document.querySelector('figure.map').dataset.shown === 'plan'")
    assert any(u.startswith(f"http://127.0.0.1:{cloud.tile_port}/") for u in failed), "the tiles were asked for"
    plan = page.locator(".plan svg")
    expect(plan).to_be_visible()
    expect(plan.locator("circle")).to_have_count(2)
    expect(plan.locator("a", has_text="Station lobby")).to_have_attribute("href", "/staff/machines/m1")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360, "no sideways scrolling on a phone"
    shot(page, f"fleet-map-offline-{lang}")
