"""The technician's phone view in a real browser, against a real machine: the controller on the serial
backend talking to ``python -m hw.board_sim``, whose service door this test opens and shuts as a person
would (the board's own ``door open`` command), so the door's state reaches the cloud the real way (the
machine's ledger, MQTT, the cloud's ingest). On a 360-px phone on slow 3G, with JavaScript off: today's
route with what to load, "Loaded" tapped twice (Back) and recorded once, "Restocked" refused while the door
is shut and recorded once it is open, a jam's fault cleared; then every width (360, 768, 1440) in English
and Chinese, each showing the refusal with the door shut and the times in the machine's own zone (its
location's, Shanghai's, not UTC); and a technician kept off the money pages."""

import re
import subprocess
import sys
from datetime import date, datetime, timezone

import pytest
from playwright.sync_api import expect

from cloud.web import i18n
from tests.browser.browsing import add_staff, shot, sign_in
from tests.e2e.harness import Customer, Machine, wait_until

# Slots A1 A2 B1 B2 are the board's motors 0-3; B2 jams (the board ends its turn on its time limit).
BOARD = ["--motors", "4", "--jam", "3", "--drop-delay", "0.2", "--turn-limit", "0.6"]
WIDTHS = {"phone": {"width": 360, "height": 740}, "tablet": {"width": 768, "height": 1024},
          "desk": {"width": 1440, "height": 900}}
ZONE = "Asia/Shanghai"  # t1's location's; the cloud's own (--time-zone) is UTC
REFUSED = {"en": "The service door is shut. Open the service door first: the machine must see you restock.",
           "zh-CN": "维修门是关着的。请先打开维修门：售货机必须看到你补货。"}


@pytest.fixture(scope="module")
def board():
    proc = subprocess.Popen([sys.executable, "-m", "hw.board_sim", *BOARD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.startswith("motor board simulator on /dev/"), first
    proc.vend_port = first.split(" on ", 1)[1].strip()
    yield proc
    proc.stdin.close()
    proc.terminate()
    proc.wait(10)


def set_door(board, cloud, machine, state: str) -> None:
    """Open or shut the board's service door, and wait until the cloud has heard it from the machine."""
    board.stdin.write(f"door {'open' if state == 'open' else 'closed'}\n")
    board.stdin.flush()
    kind = "door.opened" if state == "open" else "door.closed"
    try:
        wait_until(lambda: cloud.api("GET", f"/api/v1/machines/{machine.id}/door")["door"] == state, 30,
                   f"the cloud to hear the door {state}")
    except AssertionError:
        raise AssertionError(f"the cloud says {cloud.api('GET', f'/api/v1/machines/{machine.id}/door')}; the "
                             f"machine's ledger has {len(machine.events_of(kind))} {kind}") from None


@pytest.fixture(scope="module")
def van(cloud, broker, board, tmp_path_factory):
    """Machine t1 on the route "Morning", nearly empty, with goods in the warehouse to load for it."""
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("tech")), "t1", backend="serial", drop_timeout=1.5,
                extra=f"[serial]\nport = {board.vend_port}\ntimeout_ms = 100\n")
    m.start()
    assert m.service("restock", "A1=2", "A2=1", "B1=3", "B2=2")["ok"]
    products = {p["sku"]: p for p in cloud.api("GET", "/api/v1/products")}
    for sku in ("water", "cola", "chips", "choc"):
        cloud.api("PATCH", f"/api/v1/products/{products[sku]['id']}", {"cost": 100, "price": 350, "currency": "CNY"})
    supplier = cloud.api("POST", "/api/v1/suppliers", {"name": "Van Supplies"})
    po = cloud.api("POST", "/api/v1/purchase-orders", {"supplier_id": supplier["id"], "currency": "CNY", "lines": [
        {"product_id": products[sku]["id"], "quantity": 20} for sku in ("water", "cola", "chips")]})
    cloud.api("POST", f"/api/v1/purchase-orders/{po['id']}/send")
    cloud.api("POST", f"/api/v1/purchase-orders/{po['id']}/receive", {"key": "tech-receipt-1", "lines": [
        {"line_id": line["line_id"], "quantity": 20} for line in po["lines"]]})
    depot = cloud.api("POST", "/api/v1/locations", {"name": "Depot North", "tz": ZONE})
    cloud.api("PUT", "/api/v1/machines/t1/location", {"location_id": depot["id"]})
    cloud.api("POST", "/api/v1/routes", {"name": "Morning", "machines": ["t1"]})
    wait_until(m.synced, 30, "t1's restock to reach the cloud")
    add_staff(cloud, "van-tech", "technician")
    yield m
    m.proc.stop()


def stored(cloud, sql: str) -> datetime:
    """A time the cloud stored (SQLite keeps UTC without its zone)."""
    value = cloud.db(sql)[0][0]
    t = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def no_wider_than(page, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} is {scroll} px wide on a {width} px screen"


def test_a_technicians_morning_on_a_slow_phone_without_script(cloud, board, van, new_page):
    phone = new_page(phone=True, slow=True, script=False)
    sign_in(phone, cloud, "van-tech")
    phone.goto(cloud.url + "/tech")
    stop = phone.locator(".stop[data-machine=t1]")
    expect(stop).to_contain_text("1. Machine t1")
    # A1 water holds 2 of 10: load 8 (from the warehouse's 20); B2 chocolate: none in the warehouse.
    expect(stop.locator(".picks li").filter(has_text="A1")).to_contain_text("Water × 8")
    expect(stop.locator(".picks li").filter(has_text="B2")).to_contain_text("8 short")
    no_wider_than(phone, 360)
    shot(phone, "tech-phone-today")

    stop.get_by_role("button", name="Loaded").click()
    expect(phone.get_by_role("status")).to_have_text("Marked as loaded.")
    loaded_at = stored(cloud, "SELECT loaded_at FROM route_loads")
    expect(stop).to_contain_text(f"Loaded by van-tech, {i18n.when(loaded_at, 'en', ZONE)}")
    # Back to the page with the button, and tap it again: the same key, nothing new.
    phone.go_back()
    phone.locator(".stop[data-machine=t1]").get_by_role("button", name="Loaded").click()
    expect(phone.get_by_role("status")).to_have_text("Nothing changed: it was done already.")
    today = cloud.api("GET", "/api/v1/tech/today")
    assert today[0]["stops"][0]["loaded"]["loaded_by"] == "van-tech"
    assert cloud.db("SELECT count(*) FROM route_loads")[0][0] == 1
    shot(phone, "tech-phone-loaded")

    # At the machine, the door shut: the restock is refused, the counts kept as typed.
    phone.locator(".stop[data-machine=t1]").get_by_role("link", name="At the machine").click()
    expect(phone.locator(".door")).to_have_text("Service door shut")
    expect(phone.get_by_label("A1 Water")).to_have_value("8")
    phone.get_by_label("B1 Chips").fill("6")
    phone.get_by_role("button", name="Restocked").click()
    expect(phone.get_by_role("alert")).to_have_text(REFUSED["en"])
    expect(phone.get_by_label("B1 Chips")).to_have_value("6")
    assert cloud.db("SELECT count(*) FROM restock_reports")[0][0] == 0
    no_wider_than(phone, 360)
    shot(phone, "tech-phone-door-shut-refused")

    # The technician opens the door (the machine records it; the cloud hears it) and taps again.
    set_door(board, cloud, van, "open")
    phone.get_by_role("button", name="Restocked").click()
    expect(phone.get_by_role("status")).to_have_text("The restock is recorded.")
    expect(phone.locator(".door")).to_contain_text("Service door open")
    expect(phone.locator(".badge-done")).to_contain_text("Restock recorded by van-tech")
    expect(phone.locator(".badge-done")).to_contain_text("A1 8, A2 9, B1 6, B2 0")
    reported_at = stored(cloud, "SELECT reported_at FROM restock_reports")
    expect(phone.locator(".badge-done")).to_contain_text(f"van-tech, {i18n.when(reported_at, 'en', ZONE)}")
    since = stored(cloud, "SELECT door_open_since FROM restock_reports")
    expect(phone.locator(".door")).to_have_text(f"Service door open · since {i18n.when(since, 'en', ZONE)}")
    phone.go_back()
    phone.get_by_role("button", name="Restocked").click()  # Back to the refused form, same key: once
    assert cloud.db("SELECT count(*) FROM restock_reports")[0][0] == 1
    shot(phone, "tech-phone-restocked")
    set_door(board, cloud, van, "shut")


def test_a_jams_fault_is_cleared_at_the_machine(cloud, van, new_page):
    ann = Customer(cloud, "Tech Ann", "+8613900000451")
    ann.scan(van)
    ann.register("/m/t1")
    ann.topup("20")
    order_id = ann.buy(van, "B2").headers["location"].rsplit("/", 1)[1]
    assert ann.wait_settled(order_id, timeout=30)["status"] == "failed"
    wait_until(lambda: any(a["kind"] == "out_of_service" and a["machine_id"] == "t1"
                           for a in cloud.api("GET", "/api/v1/alerts")), 20, "the jam's alert")
    phone = new_page(phone=True)
    sign_in(phone, cloud, "van-tech")
    phone.goto(cloud.url + "/tech/t1")
    fault = phone.locator(".fault[data-kind=out_of_service]")
    expect(fault).to_contain_text("Slot out of service · slot B2")
    no_wider_than(phone, 360)
    shot(phone, "tech-phone-fault")
    fault.get_by_role("button", name="Cleared").click()
    expect(phone.get_by_role("status")).to_have_text("The alert is cleared.")
    expect(phone.locator(".fault[data-kind=out_of_service]")).to_have_count(0)
    (alert,) = [a for a in cloud.api("GET", "/api/v1/alerts?state=resolved")
                if a["machine_id"] == "t1" and a["kind"] == "out_of_service"]
    assert alert["resolved_by"] == "van-tech"


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize("size", list(WIDTHS))
def test_every_width_and_language_shows_the_route_and_refuses_a_restock_with_the_door_shut(cloud, van, new_page,
                                                                                          size, lang):
    page = new_page(lang=lang, phone=size == "phone")
    page.set_viewport_size(WIDTHS[size])
    sign_in(page, cloud, "van-tech")
    page.goto(cloud.url + "/tech")
    expect(page.get_by_role("heading", level=1)).to_have_text("Today's route" if lang == "en" else "今日路线")
    expect(page.locator(".stop[data-machine=t1]")).to_contain_text("Machine t1")
    loaded_at = stored(cloud, "SELECT loaded_at FROM route_loads")  # loaded on the morning's phone
    expect(page.locator(".stop[data-machine=t1] .badge-done")).to_contain_text(i18n.when(loaded_at, lang, ZONE))
    day = date.fromisoformat(str(cloud.db("SELECT day FROM route_loads")[0][0]))  # the route's day
    expect(page.locator("h1 + p time")).to_have_text(i18n.day_label(day, lang, "yMMMEd"))
    no_wider_than(page, WIDTHS[size]["width"])
    shot(page, f"tech-{size}-{lang}-today")
    page.goto(cloud.url + "/tech/t1")
    expect(page.locator(".door")).to_have_text("Service door shut" if lang == "en" else "维修门已关闭")
    page.get_by_role("button", name=re.compile("Restocked|已补货")).click()
    expect(page.get_by_role("alert")).to_have_text(REFUSED[lang])
    no_wider_than(page, WIDTHS[size]["width"])
    shot(page, f"tech-{size}-{lang}-door-shut")


def test_a_technician_cannot_open_the_money_pages(cloud, van, new_page):
    page = new_page(phone=True)
    sign_in(page, cloud, "van-tech")
    for path in ("/staff/settlements", "/staff/sales", "/staff/journal"):
        r = page.goto(cloud.url + path)
        assert r.status == 403, path
    page.goto(cloud.url + "/tech")
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Today's route")).to_be_visible()
    expect(nav.get_by_role("link", name="Settlements")).to_have_count(0)
    shot(page, "tech-phone-nav")
