"""The alerts page in a real browser, on a phone (360 px) and a desk (1440 px): a real machine's jam (the
simulator's B2 jams) raises an alert that the technician acknowledges and resolves with the page's
buttons; the manager's rules form keeps a wrong address with the error next to it."""

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import add_staff, shot, sign_in
from tests.e2e.harness import Customer, Machine, wait_until

WIDE = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def jammed(cloud, broker, tmp_path_factory):
    """A machine whose slot B2 jams, and a customer who bought from it: the slot is flagged out of service."""
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("jam")), "mj", drop_delay=0.2, drop_timeout=1.0,
                jam="B2", turn_limit=0.6)
    m.start()
    m.stock()
    ann = Customer(cloud, "Ann", "+8613800000777")
    assert ann.scan(m).status_code in (302, 303)
    ann.register(f"/m/{m.id}")
    ann.topup("20")
    r = ann.buy(m, "B2")
    order_id = r.headers["location"].rsplit("/", 1)[1]
    assert ann.wait_settled(order_id)["status"] == "failed"
    wait_until(lambda: any(a["kind"] == "out_of_service" and a["machine_id"] == "mj"
                           for a in cloud.api("GET", "/api/v1/alerts")), 20, "the jam's alert")
    yield m
    m.proc.stop()


def test_a_technician_acknowledges_and_resolves_the_jam_on_a_phone(cloud, jammed, new_page):
    add_staff(cloud, "alert-tech", "technician")
    phone = new_page(phone=True)
    sign_in(phone, cloud, "alert-tech")
    phone.goto(cloud.url + "/staff/alerts")
    card = phone.locator(".alert-card[data-kind=out_of_service]").filter(has_text="mj")
    expect(card).to_contain_text("Slot out of service")
    expect(card).to_contain_text("slot B2")
    expect(card.get_by_text("Open", exact=True)).to_be_visible()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide on a 360 px phone"
    shot(phone, "alerts-phone-open")

    card.get_by_role("button", name="Acknowledge").click()
    expect(phone.get_by_role("status")).to_have_text("The alert is acknowledged.")
    card = phone.locator(".alert-card[data-kind=out_of_service]").filter(has_text="mj")
    expect(card).to_contain_text("Acknowledged by alert-tech")
    expect(card.get_by_role("button", name="Acknowledge")).to_have_count(0)
    shot(phone, "alerts-phone-acknowledged")

    card.get_by_role("button", name="Resolve").click()
    expect(phone.get_by_role("status")).to_have_text("The alert is resolved.")
    resolved = phone.locator(".alert-card[data-state=resolved][data-kind=out_of_service]").filter(has_text="mj")
    expect(resolved).to_contain_text("Resolved by alert-tech")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
    shot(phone, "alerts-phone-resolved")


def test_a_manager_sees_the_alerts_and_the_rules_form_keeps_a_wrong_address_on_a_wide_desk(cloud, jammed, new_page):
    add_staff(cloud, "alert-mgr", "manager")
    desk = new_page()
    desk.set_viewport_size(WIDE)
    sign_in(desk, cloud, "alert-mgr")
    desk.goto(cloud.url + "/staff/alerts?show=resolved")
    expect(desk.locator(".alert-card[data-state=resolved][data-kind=out_of_service]")).to_contain_text("Resolved by alert-tech")
    desk.goto(cloud.url + "/staff/alerts")
    expect(desk.get_by_role("heading", name="Who is told")).to_be_visible()
    desk.get_by_label("Address: an e-mail address, or the webhook's URL").fill("ops-at-example")
    desk.get_by_role("button", name="Add the rule").click()
    expect(desk.locator("#err-target")).to_contain_text("This is not an e-mail address")
    expect(desk.get_by_label("Address: an e-mail address, or the webhook's URL")).to_have_value("ops-at-example")
    assert cloud.api("GET", "/api/v1/alert-rules") == []
    shot(desk, "alerts-desk-rule-error")
    # The alert is resolved by hand, but the slot stays out of service until someone clears it on the
    # machine: its tile says so.
    desk.goto(cloud.url + "/staff/machines/mj")
    expect(desk.locator(".slot-grid li[data-slot=B2]")).to_have_class("slot fault")
    expect(desk.locator(".slot-grid li[data-slot=B2]")).to_contain_text("out of service")
    shot(desk, "alerts-desk-machine-tile")
