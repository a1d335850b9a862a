"""The fleet page of a fleet bigger than a page, in a real browser at a phone's, a tablet's and a desk's width,
in English and Chinese: the first page lists fifty machines, the next-page link shows the second fifty, and
the search finds a machine that is not on the first page."""

import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cloud.fleet import machines
from tests.browser.browsing import add_staff, shot, sign_in
from tests.browser.conftest import _close, _context

WIDTHS = {"phone": 360, "tablet": 768, "desk": 1440}
FLEET = 70  # more than a page (50)


@pytest.fixture(scope="module")
def fleet(cloud):
    """Seventy machines v-000 ... v-069, added as ``vendctl machines add`` adds them (one transaction here for
    speed); v-064, on the second page, is called "Harbour gate"; and a manager."""
    engine = sa.create_engine(cloud.db_url, poolclass=sa.pool.NullPool)
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        for i in range(FLEET):
            machines.add_machine(conn, f"v-{i:03d}", "Harbour gate" if i == 64 else f"Vendor {i:03d}", "", now)
    engine.dispose()
    add_staff(cloud, "pages-mgr", "manager")


def names_in(page, table: str) -> list[str]:
    return [t.split("\n")[0].strip() for t in page.locator(f"table.{table} tbody th[scope=row]").all_inner_texts()]


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize("width", list(WIDTHS))
def test_a_manager_pages_through_the_fleet_and_finds_a_machine_by_name(cloud, fleet, browser, width, lang):
    context = _context(browser, lang, viewport={"width": WIDTHS[width], "height": 900},
                       **({"device_scale_factor": 2, "is_mobile": True, "has_touch": True} if width == "phone" else {}))
    zh = lang == "zh-CN"
    try:
        page = context.new_page()
        sign_in(page, cloud, "pages-mgr")
        page.goto(cloud.url + "/staff")
        expect(page.locator("#machines-shown")).to_contain_text("第 1 页，共 2 页" if zh else "Page 1 of 2")
        first = names_in(page, "fleet")
        assert first == [f"Vendor {i:03d}" for i in range(50)]
        assert names_in(page, "days") == first, "the week's table shows the same page"
        assert "Harbour gate" not in first

        page.get_by_role("link", name="下一页" if zh else "Next page").first.click()
        expect(page.locator("#machines-shown")).to_contain_text("第 2 页，共 2 页" if zh else "Page 2 of 2")
        second = names_in(page, "fleet")
        assert second == [f"Vendor {i:03d}" if i != 64 else "Harbour gate" for i in range(50, FLEET)]
        expect(page.get_by_role("link", name="上一页" if zh else "Previous page").first).to_be_visible()
        wide = page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= WIDTHS[width], f"the page is {wide} px wide on a {WIDTHS[width]} px screen"
        shot(page, f"fleet-page-2-{width}-{lang}")

        page.goto(cloud.url + "/staff")
        page.get_by_label("编号或名称" if zh else "Id or name").fill("harbour")
        page.get_by_role("button", name="搜索" if zh else "Search", exact=True).click()
        expect(page.locator("#machines-shown")).to_contain_text(
            f"{FLEET} 台中有 1 台符合" if zh else f"1 of {FLEET} machines match.")
        assert names_in(page, "fleet") == ["Harbour gate"]
        page.locator("table.fleet").get_by_role("link", name="Harbour gate").click()
        expect(page.get_by_role("heading", name=re.compile("Harbour gate"))).to_be_visible()
    finally:
        _close(context)
