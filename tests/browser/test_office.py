"""The office pages in a browser: an administrator adds a manager by keyboard alone and hands over the
one-time password; the manager chooses a password, then reads a location's settlement (a real sale, a real
rule), its printable statement, and the reconciliation, in Chinese."""

import re
from datetime import datetime, timedelta, timezone

from tests.browser.browsing import add_staff, shot, sign_in
from tests.e2e.harness import Customer, wait_until


def a_sale_at_a_location_with_a_rule(cloud, machine) -> int:
    """m1 at 'Station Café' with 10 % of gross, and one 3.50 sale (slot A2) there: the location's id."""
    location = cloud.api("POST", "/api/v1/locations", {"name": "Station Café", "address": "Platform 1"})
    cloud.api("PUT", "/api/v1/machines/m1/location", {"location_id": location["id"]})
    cloud.api("POST", f"/api/v1/locations/{location['id']}/settlement-rules",
              {"kind": "percent_gross", "percent": "10", "currency": "CNY", "valid_from": "2020-01-01"})
    c = Customer(cloud, "Office Customer", "+8613700000042")
    c.scan(machine)
    assert c.register("/m/m1").status_code == 303
    assert c.topup("20").status_code == 303
    r = c.buy(machine, "A2")
    assert r.status_code == 303, r.text
    order_id = r.headers["location"].rsplit("/", 1)[1]
    assert c.wait_settled(order_id)["status"] == "succeeded"
    wait_until(lambda: any(s["order_id"] == order_id for s in cloud.api("GET", "/api/v1/sales?machine=m1")["sales"]),
               30, "the sale to reach the cloud")
    return location["id"]


def test_an_administrator_adds_a_manager_who_reads_settlements_and_reconciliation(cloud, machine, new_page):
    location_id = a_sale_at_a_location_with_a_rule(cloud, machine)
    add_staff(cloud, "office-admin", "administrator")
    admin = new_page()
    sign_in(admin, cloud, "office-admin")
    admin.goto(cloud.url + "/staff/people")
    shot(admin, "office-people")

    # Keyboard only: into the username field, then Tab, typing and Enter.
    admin.get_by_label("Username").focus()
    admin.keyboard.type("maria")
    admin.keyboard.press("Tab")  # the role
    admin.keyboard.type("manager")
    admin.keyboard.press("Tab")  # the supplier: none
    admin.keyboard.press("Tab")  # the password: empty, so a one-time one is made
    admin.keyboard.press("Enter")
    admin.wait_for_load_state()
    assert "maria is added." in admin.get_by_role("status").inner_text()
    one_time = admin.locator("#one-time-password").inner_text().strip()
    assert len(one_time) >= 12
    assert admin.get_by_role("row", name=re.compile("maria")).get_by_text("manager").is_visible()
    shot(admin, "office-people-one-time-password")
    admin.goto(cloud.url + "/staff/people")
    assert one_time not in admin.content(), "the one-time password is shown once only"
    assert admin.locator("#one-time-password").count() == 0

    # A form with nonsense comes back naming the field, with what was typed.
    admin.get_by_label("Username").fill("Not Valid!")
    admin.get_by_role("button", name="Add the person").click()
    assert "Username: 2 to 40" in admin.locator("#username-error").inner_text()
    assert admin.get_by_label("Username").input_value() == "Not Valid!"
    shot(admin, "office-people-error")

    admin.goto(cloud.url + "/staff/audit")
    assert admin.get_by_role("cell", name="people.add").first.is_visible()
    shot(admin, "office-audit")

    # The manager, in Chinese: first their own password, then the office pages.
    manager = new_page(lang="zh-CN")
    manager.goto(cloud.url + "/staff/settlements")
    assert "/staff/login" in manager.url
    manager.get_by_label("用户名").fill("maria")
    manager.get_by_label("密码").fill(one_time)
    manager.get_by_role("button", name="登录").click()
    manager.wait_for_load_state()
    assert manager.url.endswith("/staff/account")
    shot(manager, "office-zh-CN-change-password")
    manager.get_by_label("当前密码").fill(one_time)
    manager.locator("#new").fill("quiet lantern orchard 77")
    manager.get_by_role("button", name="修改密码").click()
    manager.wait_for_load_state()

    manager.goto(cloud.url + "/staff/settlements")
    section = manager.get_by_role("region", name="Station Café")
    assert section.get_by_role("row", name=re.compile("销售总额")).inner_text().endswith("¥3.50")
    assert section.get_by_role("row", name=re.compile("应付佣金")).inner_text().endswith("¥0.35")
    assert "按销售额比例" in section.inner_text() and "10.00 %" in section.inner_text()
    assert "人员" not in manager.get_by_role("navigation").inner_text(), "a manager does not see People"
    shot(manager, "office-zh-CN-settlements")

    month = datetime.now(timezone.utc).strftime("%Y-%m")
    section.get_by_role("link", name="可打印对账单（A4）").click()
    manager.wait_for_load_state()
    assert f"/api/v1/locations/{location_id}/statements/{month}" in manager.url
    assert "Station Café" in manager.content()
    shot(manager, "office-zh-CN-printable-statement")
    manager.go_back()

    # The month is still running: it cannot be posted yet, and the page says from when it can.
    assert manager.get_by_role("button", name=f"将 {month} 对账单入账").count() == 0
    assert f"{month} 结束后才能入账" in manager.get_by_role("region", name="Station Café").inner_text()
    # Last month has ended: it is posted (its statement is empty, and a statement of nothing owed is one too).
    last = (datetime.now(timezone.utc).replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    manager.goto(cloud.url + f"/staff/settlements?month={last}")
    manager.get_by_role("button", name=f"将 {last} 对账单入账").click()
    manager.wait_for_load_state()
    assert "对账单已入账" in manager.get_by_role("status").inner_text()
    assert "是" in manager.get_by_role("region", name="Station Café").get_by_role(
        "row", name=re.compile("已入账")).inner_text()
    shot(manager, "office-zh-CN-settlements-posted")

    manager.get_by_role("navigation").get_by_role("link", name="对账").click()
    manager.wait_for_load_state()
    assert manager.locator("h1").inner_text() == "对账"
    assert manager.get_by_role("heading", name=re.compile("已售出，但未收款")).is_visible()
    shot(manager, "office-zh-CN-reconcile")

    manager.get_by_role("navigation").get_by_role("link", name="供应商").click()
    manager.get_by_label("名称").fill("鲜饮供应有限公司")
    manager.get_by_label("交货周期（天）").fill("3")
    manager.get_by_role("button", name="添加该供应商").click()
    manager.wait_for_load_state()
    assert manager.get_by_role("row", name=re.compile("鲜饮供应有限公司")).is_visible()
    shot(manager, "office-zh-CN-suppliers")


def test_a_change_to_a_person_asks_first_and_a_bad_rule_names_its_field(cloud, new_page):
    add_staff(cloud, "office-boss", "administrator")
    add_staff(cloud, "tim", "technician")
    cloud.api("POST", "/api/v1/locations", {"name": "City Library"})
    page = new_page()
    sign_in(page, cloud, "office-boss")
    page.goto(cloud.url + "/staff/people")
    page.get_by_role("link", name="Change tim").click()
    assert page.locator("h1").inner_text() == "tim"
    shot(page, "office-person")
    page.get_by_role("button", name="Disable").click()
    assert "Disable tim? Their sessions and API tokens stop at once." in page.locator("main").inner_text()
    shot(page, "office-person-confirm")
    page.get_by_role("button", name="Yes, do it").click()
    assert "The change is saved." in page.get_by_role("status").inner_text()
    assert "Disabled" in page.get_by_role("row", name=re.compile("tim")).inner_text()
    shot(page, "office-people-disabled")

    page.goto(cloud.url + "/staff/settlements")
    form = page.locator("#add-rule")
    form.get_by_label("Location").select_option(label="City Library")
    form.get_by_label("Kind", exact=True).select_option(label="Per item sold")
    assert not form.get_by_label(re.compile("^Percent")).is_visible(), "the script shows only the amount"
    form.get_by_label("Kind", exact=True).select_option(label="Percent of gross")
    form.get_by_label(re.compile("^Percent")).fill("150")
    form.get_by_label("Valid from").fill("2026-01-01")
    form.get_by_role("button", name="Add the rule").click()
    page.wait_for_load_state()
    assert "Percent: must be at most 100" in page.get_by_role("alert").inner_text()
    form = page.locator("#add-rule")
    assert form.get_by_label(re.compile("^Percent")).input_value() == "150"
    assert form.get_by_label("Valid from").input_value() == "2026-01-01"
    assert form.get_by_label("Location").locator("option:checked").inner_text() == "City Library"
    shot(page, "office-settlements-rule-error")
