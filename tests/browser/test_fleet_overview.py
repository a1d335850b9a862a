"""The fleet page's overview in a real browser, at a phone's, a tablet's and a desk's width, in English and
Chinese: the figures, the machines needing a visit, the week's sales, and the street map drawn by
static/fleetmap.js from tiles of a local tile server (pytest-httpserver standing in for OpenStreetMap's), within
the page's content policy (the fixtures fail a test on anything the policy blocks). The fallback to the plan when
the tile server cannot be reached is in test_fleet_map_offline.py."""

import re
import struct
import zlib
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect
from pytest_httpserver import HTTPServer

from cloud.payments import Wallet
from cloud.sales import orders, reports
from cloud.web import i18n
from tests.browser.browsing import add_staff, shot, sign_in
from tests.cloud_fixtures import add_customer, add_sale
from tests.browser.conftest import _close, _context
from tests.e2e.harness import Cloud, wait_until

WIDTHS = {"phone": 360, "tablet": 768, "desk": 1440}
ZONE = "Asia/Shanghai"


def png(rgb=(225, 232, 214)) -> bytes:
    """A plain 256 × 256 PNG, as a tile server sends."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes(rgb) * 256 for _ in range(256))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 256, 256, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tiles():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request(re.compile(r"^/tiles/\d+/\d+/\d+\.png$")).respond_with_data(png(), content_type="image/png")
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture(scope="module")
def cloud(broker, tiles, tmp_path_factory):
    """The cloud of this module: its street map from the local tile server, its days in Shanghai's zone."""
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")),
              extra=("--map-tiles", f"http://127.0.0.1:{tiles.port}/tiles/{{z}}/{{x}}/{{y}}.png",
                     "--time-zone", ZONE))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def placed(cloud, machine):
    """m1 at a station with coordinates, a depot nearby, a manager, three days of m1's sales (stored and
    rolled up as ingest stores them) and a refund of 1.50 booked now; m0, retired."""
    lobby = cloud.api("POST", "/api/v1/locations", {"name": "Station lobby", "address": "1 Station Rd",
                                                    "latitude": 31.2304, "longitude": 121.4737})
    cloud.api("POST", "/api/v1/locations", {"name": "Depot", "latitude": 31.2420, "longitude": 121.4950})
    cloud.api("PUT", f"/api/v1/machines/{machine.id}/location", {"location_id": lobby["id"]})
    add_staff(cloud, "overview-mgr", "manager")
    now = datetime.now(timezone.utc)
    rows = [(machine.id, 10_000_000 + i, (now - timedelta(days=i // 3, hours=i % 3)).isoformat(), f"seed-{i}", "A1",
             None, 350, "CNY") for i in range(9)]
    engine = sa.create_engine(cloud.db_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO sales (machine_id, seq, ts, order_id, slot, product_id, amount, currency) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        reports.project(conn, rows)
        ann = add_customer(conn, phone="+8613900000777")
        add_sale(conn, ann, "o-refunded", machine_id=machine.id)
        assert Wallet().refund(conn, orders.get(conn, "o-refunded"), 150, "overview-refund", now).ok
    engine.dispose()
    cloud.api("POST", "/api/v1/machines", {"id": "m0", "name": "Machine m0"})
    cloud.api("POST", "/api/v1/machines/m0/retire")
    local = ZoneInfo(ZONE)
    today = now.astimezone(local).date()
    lobby["gross_today"] = sum(r[6] for r in rows if datetime.fromisoformat(r[2]).astimezone(local).date() == today)
    return lobby


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize("width", list(WIDTHS))
def test_the_fleet_page_at_each_width_and_language_with_its_street_map(cloud, placed, tiles, browser, width, lang):
    context = _context(browser, lang, viewport={"width": WIDTHS[width], "height": 900},
                       **({"device_scale_factor": 2, "is_mobile": True, "has_touch": True} if width == "phone" else {}))
    try:
        page = context.new_page()
        sign_in(page, cloud, "overview-mgr")
        page.goto(cloud.url + "/staff")
        zh = lang == "zh-CN"
        expect(page.get_by_role("heading", name="机队" if zh else "Fleet", exact=True)).to_be_visible()
        today = page.locator("#takings-today")
        expect(today).to_contain_text("今日营业额" if zh else "Takings today")
        # Takings net of the refund booked today; m0, retired, is neither online nor offline.
        expect(today).to_contain_text(i18n.money(placed["gross_today"] - 150, "CNY", lang))
        expect(page.locator("#machines-online")).to_contain_text("1 / 1" if zh else "1 of 1")
        expect(page.locator("#machines-online")).to_contain_text("1 台已退役" if zh else "1 retired")
        expect(page.locator("#machines-online")).to_contain_text("0 台离线" if zh else "0 offline")
        retired = page.locator("table.fleet tbody tr").filter(has_text="Machine m0").locator(".badge.retired")
        expect(retired).to_have_text("已退役" if zh else "Retired")
        expect(retired).to_be_visible()
        expect(page.get_by_text("营业额已扣除退款" if zh else "Takings are net of refunds")).to_be_visible()
        expect(page.locator("#open-alerts a")).to_have_attribute("href", "/staff/alerts")
        week = "最近七天的销售" if zh else "Sales in the last seven days"
        expect(page.get_by_role("heading", name=week)).to_be_visible()
        row = page.locator("table.days tbody tr").filter(has_text="Machine m1")
        expect(row.locator("td").last).to_contain_text("¥")
        assert sum(int(t) for t in row.locator("td.n").all_inner_texts()[:-1]) == 9, "nine sales in the week"

        figure = page.locator("figure.map")
        expect(figure).to_have_attribute("data-shown", "streets")
        expect(page.locator(".streets")).to_be_visible()
        expect(page.locator(".plan")).to_be_hidden()
        assert page.locator(".streets img.tile").count() >= 2
        wait_until(lambda: page.evaluate("() => [...document.querySelectorAll('.streets img.tile')]"
                                         ".every(i => i.complete && i.naturalWidth === 256)"), 10, "every tile")
        expect(page.locator(".streets .attribution")).to_have_text("© OpenStreetMap contributors")
        pin = page.locator(".streets a.pin", has_text="Station lobby")
        expect(pin).to_have_attribute("href", "/staff/machines/m1")
        expect(page.locator(".streets a.pin")).to_have_count(2)
        box, streets = pin.locator(".pin-dot").bounding_box(), page.locator(".streets").bounding_box()
        assert streets["x"] <= box["x"] and box["x"] + box["width"] <= streets["x"] + streets["width"], \
            "the marker on the map"
        asked = [r.path for r, _ in tiles.log]
        assert asked and all(re.fullmatch(r"/tiles/\d+/\d+/\d+\.png", p) for p in asked)

        wide = page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= WIDTHS[width], f"the page is {wide} px wide on a {WIDTHS[width]} px screen"
        shot(page, f"fleet-overview-{width}-{lang}")

        pin.click()
        expect(page.get_by_role("heading", name=re.compile("Machine m1"))).to_be_visible()
    finally:
        _close(context)
