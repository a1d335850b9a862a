"""The fleet page and the stock page at a fleet bigger than a page: fifty machines a page with links to the
next and the previous, a search by id or name that finds a machine on any page, the offline machines and
the machines to visit named up to a short list and counted past it, and a page whose size does not grow
with the fleet."""

import re

import pytest
from fastapi.testclient import TestClient

import cloud.app
from cloud.fleet import machines
from cloud.fleet import pages as fleet_pages
from cloud.people import staff
from cloud.core.db import utcnow
from cloud.sales import pages as sales_pages, records, reports
from cloud.stock import pages as stock_pages
from tests.cloud_fixtures import add_machine, db_url, fast_hashes, idle_cloud  # noqa: F401  (fixtures)

BOOT = "bootstrap-token-for-tests"
PW = "violet-tractor-harbour-91"


def make_fleet(tmp_path, db_url, n: int):
    """``n`` machines m-000 ... (every fifth offline, every fifth with an empty slot) and a manager."""
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        for i in range(n):
            add_machine(conn, f"m-{i:03d}", online=i % 5 != 3, counts={"A1": 0 if i % 5 == 0 else 5, "A2": 5})
        conn.execute(machines.machines.update().where(machines.machines.c.id == "m-117")
                     .values(name="Harbour gate"))
        staff.add_staff(conn, "mia", "manager", utcnow(), staff.hash_password(PW), False)
    return obj


@pytest.fixture
def big(tmp_path, db_url):
    obj = make_fleet(tmp_path, db_url, 120)
    yield obj
    obj.engine.dispose()


def get(obj, path: str, lang: str = "en") -> str:
    with TestClient(cloud.app.create_app(obj, BOOT, b"k" * 32), follow_redirects=False,
                    headers={"Accept-Language": lang}) as c:
        assert c.post("/staff/login", data={"username": "mia", "password": PW}).status_code == 303
        r = c.get(path)
        assert r.status_code == 200, r.text
        return r.text


def table(html: str, cls: str) -> list[str]:
    """The machine ids linked from the rows of the table of this class."""
    body = html[html.index(f'<table class="{cls}">'):]
    body = body[:body.index("</table>")]
    return re.findall(r'<a href="/staff/machines/([^"]+)">', body)


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_the_fleet_page_lists_a_page_of_machines_and_links_the_next(big, lang):
    first = get(big, "/staff", lang)
    assert table(first, "fleet") == [f"m-{i:03d}" for i in range(fleet_pages.FLEET_PAGE)]
    assert table(first, "days") == table(first, "fleet"), "the week's table follows the same page"
    assert ("第 1 页，共 3 页" if lang == "zh-CN" else "Page 1 of 3") in first
    online = sum(1 for i in range(120) if i % 5 != 3)
    assert (f"{online} / 120" if lang == "zh-CN" else f"{online} of 120") in first, "the figures count the whole fleet"
    nxt = re.search(r'id="next-page" rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert 'id="prev-page"' not in first

    second = get(big, nxt, lang)
    assert table(second, "fleet") == [f"m-{i:03d}" for i in range(50, 100)]
    assert 'id="prev-page"' in second and 'id="next-page"' in second
    last = get(big, "/staff?page=3", lang)
    assert table(last, "fleet") == [f"m-{i:03d}" for i in range(100, 120)]
    assert 'id="next-page"' not in last
    assert table(get(big, "/staff?page=99", lang), "fleet") == table(last, "fleet"), "past the end: the last page"
    assert table(get(big, "/staff?page=-1%27", lang), "fleet") == table(first, "fleet"), "nonsense: the first"


def test_a_search_finds_a_machine_that_is_not_on_the_first_page(big):
    assert "m-117" not in table(get(big, "/staff"), "fleet")
    found = get(big, "/staff?q=harbour")
    assert table(found, "fleet") == ["m-117"]
    assert "Harbour gate" in found and "1 of 120 machines match." in found
    assert table(get(big, "/staff?q=M-11"), "fleet") == [f"m-{i}" for i in range(110, 120)], "any case"
    nothing = get(big, "/staff?q=%3Cscript%3E")
    assert table(nothing, "fleet") == [] and "No machine matches." in nothing and "<script>" not in nothing


def test_the_offline_machines_and_the_visits_are_named_up_to_a_short_list(big):
    html = get(big, "/staff")
    offline = [f"m-{i:03d}" for i in range(120) if i % 5 == 3]
    listed = re.findall(r'<li><a href="/staff/machines/([^"]+)">', html[html.index('class="offline-list"'):
                                                                           html.index('id="machines"')])
    assert listed == offline[:fleet_pages.SHORT_LIST]
    assert f"All {len(offline)} offline machines" in html
    assert table(get(big, "/staff?offline=1"), "fleet") == offline
    to_visit = [i for i in range(120) if i % 5 == 0]
    visits = html[html.index('<ul class="visits">'):html.index("</ul>", html.index('<ul class="visits">'))]
    assert visits.count("<li>") == fleet_pages.SHORT_LIST
    assert f"And {len(to_visit) - fleet_pages.SHORT_LIST} more machines to visit" in html


def test_the_fleet_page_does_not_grow_with_the_fleet(tmp_path, db_url):
    obj = make_fleet(tmp_path, db_url, 60)
    try:
        small = len(get(obj, "/staff").encode())
        with obj.engine.begin() as conn:
            for i in range(60, 300):
                add_machine(conn, f"m-{i:03d}", online=i % 5 != 3, counts={"A1": 0 if i % 5 == 0 else 5, "A2": 5})
        large = len(get(obj, "/staff").encode())
    finally:
        obj.engine.dispose()
    assert large < small * 1.1, f"60 machines: {small} bytes, 300: {large}"
    sales = get(obj, "/staff/sales")
    assert '<input id="f-machine" name="machine"' in sales, "300 machines: the machine is typed, not chosen"
    assert 'value="m-299"' not in sales
    for path in ("/staff/orders", "/staff/pick-lists", "/staff/routes"):
        assert re.search(r'<input id="f-machine" name="machine"', get(obj, path)), path
    picked = get(obj, "/staff/pick-lists?machine=m-299")
    assert 'href="/api/v1/machines/m-299/pick-list?format=html"' in picked, "a typed id gives its list"


def test_the_sales_page_names_the_twenty_best_machines_and_sums_the_others(big):
    now = utcnow()
    rows = [(f"m-{i:03d}", 1, now.isoformat(), f"o-{i}", "A1", None, 100 + i, "CNY") for i in range(25)]
    with big.engine.begin() as conn:
        conn.execute(records.sales.insert(), [dict(zip(records.SALE_COLUMNS, r)) for r in rows])
        reports.project(conn, rows)
    html = get(big, "/staff/sales")
    chart = html[html.index('id="chart-machine-CNY"'):html.index('id="chart-product-CNY"')]
    named = re.findall(r'<th scope="row">Machine (m-\d+)</th>', chart)
    assert named == [f"m-{i:03d}" for i in range(24, 4, -1)], "the best first"
    others = sum(100 + i for i in range(5))
    assert re.search(r'<th scope="row">The other 5 machines</th><td class="n">5</td><td class="n">CN¥'
                     + f"{others / 100:.2f}", chart)
    assert chart.count('class="bar"') == sales_pages.MACHINES_SHOWN
    assert re.search(r'id="total-count-CNY">25<', html)
    assert '<select id="f-machine" name="machine"' in html, "120 machines: still a list"


def test_the_stock_page_shows_a_page_of_machines_and_counts_the_low_slots(big):
    first = get(big, "/staff/stock")
    fill = first[first.index('id="fill"'):]
    assert "120 machines; page 1 of 3" in fill
    assert len(re.findall(r"<tr><th scope=\"row\">m-\d+</th><td class=\"n\">", fill)) == stock_pages.MACHINES_PAGE
    second = get(big, "/staff/stock?page=2")
    rows = re.findall(r"<tr><th scope=\"row\">(m-\d+)</th><td class=\"n\">", second[second.index('id="fill"'):])
    assert rows == [f"m-{i:03d}" for i in range(50, 100)]
    low = [i for i in range(120) if i % 5 == 0]
    assert f"And {len(low) - stock_pages.SHORT_LIST} more slots: see the pick lists." in first


def test_the_paged_fleet_and_sales_pages_name_machines_in_the_page_s_language_and_leave_retired_out(big):
    # The merge of the pages of machines with the names per language and the retired machines.
    now = utcnow()
    with big.engine.begin() as conn:
        conn.execute(machines.machine_names.insert().values(machine_id="m-117", lang="zh-CN", name="港口大门",
                                                            updated_at=now))
        conn.execute(machines.machines.update().where(machines.machines.c.id == "m-003").values(retired_at=now))
        rows = [("m-117", 1, now.isoformat(), "o-1", "A1", None, 900, "CNY")]
        conn.execute(records.sales.insert(), [dict(zip(records.SALE_COLUMNS, r)) for r in rows])
        reports.project(conn, rows)
    # Found on page 3 by either name, each page naming it in its own language.
    assert table(get(big, "/staff?q=港口", "en"), "fleet") == ["m-117"]
    zh = get(big, "/staff?q=harbour", "zh-CN")
    assert table(zh, "fleet") == ["m-117"] and "港口大门" in zh
    chart = get(big, "/staff/sales", "zh-CN")
    chart = chart[chart.index('id="chart-machine-CNY"'):chart.index('id="chart-product-CNY"')]
    assert '<th scope="row">港口大门</th>' in chart
    # m-003 was offline: retired, it is neither in the offline list nor in the offline machines' pages.
    html = get(big, "/staff")
    assert "m-003" not in html[html.index('<h2 id="offline">'):html.index('<h2 id="machines">')]
    assert "m-003" not in table(get(big, "/staff?offline=1"), "fleet")
    assert "m-008" in table(get(big, "/staff?offline=1"), "fleet")
