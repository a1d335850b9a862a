"""The fleet page's figures (cloud/fleet/pages.py ``overview``): takings today and this week in the fleet's
zone, sales per machine per day, machines online, open alerts, machines needing a visit by fill and by expiry,
and the street map's setting and content policy."""

import re
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.app
import cloud.core.settings
from cloud.alerts import occurrences
from cloud.catalog.products import products
from cloud.core.db import utcnow
from cloud.fleet import locations, machines
from cloud.payments import Wallet
from cloud.people import staff
from cloud.sales import orders, records, reports
from cloud.stock import book
from cloud.web import i18n
from tests.cloud_fixtures import (add_customer, add_machine, add_sale, db_url, fast_hashes,  # noqa: F401  (fixtures)
                                  idle_cloud)

BOOT = "bootstrap-token-for-tests"
PW = "violet-tractor-harbour-91"


def local_at(day: date, hour: int, minute: int, tz: str) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(tz)).astimezone(timezone.utc)


def make_cloud(tmp_path, db_url, tz: str, **options):
    obj = idle_cloud(tmp_path, db_url, time_zone=tz, **options)
    today = datetime.now(ZoneInfo(tz)).date()
    sold = []
    with obj.engine.begin() as conn:
        add_machine(conn, "m-1")
        add_machine(conn, "m-2", online=False, counts={"A1": 0, "A2": 2})
        ids = dict(conn.execute(sa.select(products.c.sku, products.c.id)).all())
        seq = 0
        # Two sales on each of the last nine local days on m-1: just after local midnight and just before the
        # next one, so a day cut at UTC midnight instead of the fleet's would count them on the wrong days.
        for back in range(9):
            for hour, minute, amount in ((0, 30, 350 + back), (23, 30, 200 + 10 * back)):
                seq += 1
                at = local_at(today - timedelta(days=back), hour, minute, tz)
                sold.append(dict(machine_id="m-1", seq=seq, ts=at.isoformat(), order_id=f"o-{seq}", slot="A1",
                                 product_id=ids["cola"], amount=amount, currency="CNY", incident=""))
        sold.append(dict(machine_id="m-2", seq=1, ts=local_at(today, 12, 0, tz).isoformat(), order_id="o-eur",
                         slot="A2", product_id=ids["water"], amount=275, currency="EUR", incident=""))
        conn.execute(records.sales.insert(), sold)
        # As ingest stores them: the sales, then the rollups in the same transaction.
        reports.project(conn, [(s["machine_id"], s["seq"], s["ts"], s["order_id"], s["slot"], s["product_id"],
                                s["amount"], s["currency"]) for s in sold])
        staff.add_staff(conn, "mia", "manager", utcnow(), staff.hash_password(PW), False)
    obj.test_today = today
    obj.test_ids = ids
    return obj


@pytest.fixture(params=["Asia/Shanghai", "UTC"])
def fleet(request, tmp_path, db_url):
    obj = make_cloud(tmp_path, db_url, request.param)
    yield obj
    obj.engine.dispose()


def page(obj, lang: str = "en", path: str = "/staff"):
    with TestClient(cloud.app.create_app(obj, BOOT, b"k" * 32), follow_redirects=False,
                    headers={"Accept-Language": lang}) as c:
        assert c.post("/staff/login", data={"username": "mia", "password": PW}).status_code == 303
        r = c.get(path)
        assert r.status_code == 200, r.text
        return r


def part(html: str, start: str, end: str) -> str:
    i = html.index(start)
    return html[i:html.index(end, i + len(start))]


def expected(obj, days: set) -> dict:
    """{currency: (count, amount)} of the stored sales whose local day (in the fleet's zone) is in ``days``,
    read from the sales themselves."""
    tz = ZoneInfo(obj.settings.time_zone)
    out: dict = {}
    with obj.engine.connect() as conn:
        for ts, amount, currency in conn.execute(sa.select(records.sales.c.ts, records.sales.c.amount,
                                                           records.sales.c.currency)):
            if datetime.fromisoformat(ts).astimezone(tz).date() in days:
                n, a = out.get(currency, (0, 0))
                out[currency] = (n + 1, a + amount)
    return out


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_takings_today_and_this_week_are_the_sales_of_the_fleet_s_days(fleet, lang):
    today = fleet.test_today
    monday = today - timedelta(days=today.weekday())
    html = page(fleet, lang).text
    for box, days in (("takings-today", {today}), ("takings-week", {monday + timedelta(days=i) for i in range(7)})):
        shown = part(html, f'<li id="{box}">', "</li>")
        want = expected(fleet, days)
        assert set(want) == {"CNY", "EUR"}, "the EUR sale is today's, so in this week too"
        for currency, (n, amount) in want.items():
            assert f"<strong>{i18n.money(amount, currency, lang)}</strong>" in shown, (box, currency, shown)
            assert i18n.Translator(lang)("{n} sold", n=i18n.number(n, lang)) in shown
    assert i18n.day_label(monday, lang) in part(html, '<li id="takings-week">', "</li>")
    today_cny = expected(fleet, {today})["CNY"]
    assert today_cny == (2, 350 + 200), "the two sales of today's local day, none of yesterday's or tomorrow's"


def test_each_machine_s_sales_on_each_of_the_last_seven_days(fleet):
    today = fleet.test_today
    days = [today - timedelta(days=i) for i in range(6, -1, -1)]
    table = part(page(fleet).text, '<table class="days">', "</table>")
    head = part(table, "<thead>", "</thead>")
    assert "Today" in head and i18n.day_label(days[0]) in head and i18n.day_label(today - timedelta(days=7)) not in head
    row = part(table, '<a href="/staff/machines/m-1">', "</tr>")
    counts = [int(n) for n in re.findall(r'<td class="n[^"]*">(\d+)</td>', row)]
    assert counts == [2] * 7, "two sales a day, each in its own local day"
    week = expected(fleet, set(days))["CNY"][1]
    assert i18n.money(week, "CNY", "en") in row
    other = part(table, '<a href="/staff/machines/m-2">', "</tr>")
    assert [int(n) for n in re.findall(r'<td class="n[^"]*">(\d+)</td>', other)] == [0] * 6 + [1]
    assert i18n.money(275, "EUR", "en") in other


def test_machines_online_and_open_alerts_link_to_the_alerts(fleet):
    html = page(fleet).text
    online = part(html, '<li id="machines-online">', "</li>")
    assert "1 of 2" in online and "1 offline" in online
    with fleet.engine.connect() as conn:
        open_now = len(occurrences.listing(conn, limit=100000))
    alerts = part(html, '<li id="open-alerts">', "</li>")
    assert f'<a href="/staff/alerts">{open_now}</a>' in alerts
    assert "Machines to visit: 1" in alerts, "m-2 has an empty slot; m-1 is half full"


def test_machines_needing_a_visit_by_fill_and_by_what_is_left_of_a_lot_about_to_expire(fleet):
    today = fleet.test_today
    cola = fleet.test_ids["cola"]
    now = utcnow()
    slot = book.Place("m-1", "A1")
    with fleet.engine.begin() as conn:
        for key, qty, expires in (("soon", 6, today + timedelta(days=2)), ("later", 4, today + timedelta(days=60))):
            assert book.claim(conn, f"receipt:{key}", "receipt", now)
            book.receive(conn, f"receipt:{key}", cola, qty, 120, expires, now)
            assert book.claim(conn, f"transfer:{key}", "transfer", now)
            book.transfer(conn, f"transfer:{key}", cola, qty, slot, now)
        assert book.claim(conn, "sale:1", "sale", now)
        book.sell(conn, "sale:1", cola, 3, slot, now)
    visits = part(page(fleet).text, '<h2 id="visits">', "<h2 ")
    assert visits.index("m-2") < visits.index("m-1"), "an empty slot first"
    m2 = part(visits, '<a href="/staff/machines/m-2">', "</li>")
    assert "1 empty slots" in m2 and "1 slots low" in m2, "A1 holds 0, A2 2 of 10 (below a quarter)"
    assert "18 units to bring every slot to its par level" in m2
    m1 = part(visits, '<a href="/staff/machines/m-1">', "</li>")
    # 10 put in, 3 sold: the slot holds 7, the last 4 in are the later lot's, so 3 of the first lot are left.
    assert f"3 × Cola expiring {i18n.day_label(today + timedelta(days=2))}" in m1
    assert "empty" not in m1 and "low" not in m1
    with fleet.engine.begin() as conn:
        assert book.claim(conn, "sale:2", "sale", now)
        book.sell(conn, "sale:2", cola, 3, slot, now)
    visits = part(page(fleet).text, '<h2 id="visits">', "<h2 ")
    assert "/staff/machines/m-1" not in visits, "the first lot is sold out: the slot holds only the later one"


def test_a_lot_already_expired_in_a_machine_says_expired_in_chinese_too(fleet):
    today = fleet.test_today
    water = fleet.test_ids["water"]
    now = utcnow()
    with fleet.engine.begin() as conn:
        assert book.claim(conn, "receipt:old", "receipt", now)
        lot = book.receive(conn, "receipt:old", water, 2, 90, today + timedelta(days=5), now)
        conn.execute(book.lots.update().where(book.lots.c.id == lot).values(expires_on=today - timedelta(days=1)))
        assert book.claim(conn, "transfer:old", "transfer", now)
        book.transfer(conn, "transfer:old", water, 2, book.Place("m-1", "A2"), now)
    visits = part(page(fleet, "zh-CN").text, '<h2 id="visits">', "<h2 ")
    assert f"2 × Water，已于 {i18n.day_label(today - timedelta(days=1), 'zh-CN')} 过期" in visits


def test_the_page_allows_pictures_from_the_tile_server_only(fleet):
    r = page(fleet)
    csp = r.headers["content-security-policy"]
    assert "img-src 'self' data: https://tile.openstreetmap.org;" in csp and "script-src 'self';" in csp
    # No location has coordinates here: no map, so no map script either.
    assert "fleetmap.js" not in r.text


def test_with_the_setting_empty_the_page_has_the_plan_only(tmp_path, db_url):
    obj = make_cloud(tmp_path, db_url, "UTC", map_tiles="")
    try:
        from cloud.fleet import locations  # noqa: the test's own setup, after the cloud is made
        with obj.engine.begin() as conn:
            where = locations.add(conn, "Lobby", "1 Main St", 31.23, 121.47, now=utcnow())
            locations.place(conn, "m-1", where, utcnow())
        r = page(obj)
        assert "<svg" in r.text and 'data-lat="31.23"' in r.text
        assert "data-tiles" not in r.text and "fleetmap.js" not in r.text
        assert "img-src 'self' data:;" in r.headers["content-security-policy"]
    finally:
        obj.engine.dispose()


@pytest.mark.parametrize("value, complaint", [
    ("ftp://tiles.example/{z}/{x}/{y}.png", "http(s) URL template"),
    ("https://{s}.tile.example/{z}/{x}/{y}.png", "http(s) URL template"),
    ("https://tiles.example/{z}/{x}.png", "{z}, {x} and {y}"),
    ("https://tiles.example/{z}/{x}/{y}/{r}.png", "{z}, {x} and {y}"),
])
def test_a_wrong_tile_template_stops_the_cloud_saying_what_is_wrong(tmp_path, value, complaint):
    with pytest.raises(SystemExit) as e:
        cloud.core.settings.Settings(var=str(tmp_path), map_tiles=value).resolve()
    assert "--map-tiles" in str(e.value) and complaint in str(e.value)


def test_days_by_machine_reads_whole_buckets_of_each_local_day(fleet):
    today = fleet.test_today
    with fleet.engine.connect() as conn:
        got = reports.days_by_machine(conn, fleet.settings.time_zone, today, 9)
    assert set(got) == {"m-1", "m-2"}
    for back in range(9):
        day = today - timedelta(days=back)
        assert got["m-1"][(day, "CNY")] == [2, 350 + back + 200 + 10 * back]


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_takings_and_the_week_s_sales_are_net_of_the_refunds_booked_on_each_day(fleet, lang):
    # Issue 15: the page said "as sold: refunds are not taken off" while the reports were already net.
    today = fleet.test_today
    days = [today - timedelta(days=i) for i in range(6, -1, -1)]
    gross_today, gross_week = expected(fleet, {today})["CNY"][1], expected(fleet, set(days))["CNY"][1]
    with fleet.engine.begin() as conn:
        ann = add_customer(conn)
        add_sale(conn, ann, "o-refunded", machine_id="m-1")  # an order of m-1's, paid from the wallet
        # Booked now, today in the fleet's zone; not yet counted by the sweeper: the page must count it.
        assert Wallet().refund(conn, orders.get(conn, "o-refunded"), 150, "r-today", utcnow()).ok
    _ = i18n.Translator(lang)
    html = page(fleet, lang).text
    today_box = part(html, '<li id="takings-today">', "</li>")
    assert f"<strong>{i18n.money(gross_today - 150, 'CNY', lang)}</strong>" in today_box, today_box
    assert _("{n} sold", n=i18n.number(2, lang)) in today_box, "items sold are what dropped"
    week_box = part(html, '<li id="takings-week">', "</li>")
    monday = today - timedelta(days=today.weekday())
    week = expected(fleet, {monday + timedelta(days=i) for i in range(7)})["CNY"][1]
    assert f"<strong>{i18n.money(week - 150, 'CNY', lang)}</strong>" in week_box
    row = part(part(html, '<table class="days">', "</table>"), '<a href="/staff/machines/m-1">', "</tr>")
    assert [int(n) for n in re.findall(r'<td class="n[^"]*">(\d+)</td>', row)] == [2] * 7
    assert i18n.money(gross_week - 150, "CNY", lang) in row and i18n.money(gross_week, "CNY", lang) not in row
    fleet_row = part(part(html, '<table class="fleet">', "</table>"), '<a href="/staff/machines/m-1">', "</tr>")
    assert i18n.money(gross_today - 150, "CNY", lang) in fleet_row
    chart = part(html, '<h2 id="week">', '<table class="days">')
    assert i18n.money(gross_today - 150, "CNY", lang) in chart
    assert _("Days run from midnight to midnight in {zone}. Takings are net of refunds: a refund is taken off "
             "on the day it was made.", zone=fleet.settings.time_zone) in html
    assert "refunds are not taken off" not in html and "未扣除退款" not in html


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_a_retired_machine_is_marked_retired_and_is_neither_offline_nor_to_visit(fleet, lang):
    # m-2 is offline with an empty slot: before it is retired it counts as offline and to visit.
    _ = i18n.Translator(lang)
    with fleet.engine.begin() as conn:
        locations.retire(conn, "m-2", utcnow())
    html = page(fleet, lang).text
    online = part(html, '<li id="machines-online">', "</li>")
    assert _("{n} of {total}", n="1", total="1") in online and _("{n} offline", n="0") in online
    assert _("{n} retired", n="1") in online
    assert _("Machines to visit: {n}", n="0") in part(html, '<li id="open-alerts">', "</li>")
    assert "/staff/machines/m-2" not in part(html, '<h2 id="visits">', "<h2 ")
    # Nor in the offline list, nor in the page of offline machines (the fleet page's pages: ?offline=1).
    assert "/staff/machines/m-2" not in part(html, '<h2 id="offline">', "<h2 ")
    assert _("Every machine is online.") in part(html, '<h2 id="offline">', "<h2 ")
    offline_only = part(page(fleet, lang, "/staff?offline=1").text, '<table class="fleet">', "</table>")
    assert "/staff/machines/m-2" not in offline_only and _("No machine matches.") in offline_only
    row = part(part(html, '<table class="fleet">', "</table>"), '<a href="/staff/machines/m-2">', "</tr>")
    assert f'<span class="badge retired">{_("Retired")}</span>' in row
    assert _("Offline") not in row and _("Online") not in row
    # Its sales of the week stay in the takings: they were made.
    assert i18n.money(275, "EUR", lang) in part(html, '<li id="takings-today">', "</li>")
