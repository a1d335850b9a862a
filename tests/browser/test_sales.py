"""A manager's sales, stock, pick-list and purchase-order pages in a real browser, against a real cloud
with a simulated machine that has sold something."""

import itertools
import re

import pytest
from tests.browser.browsing import add_staff, shot, sign_in
from tests.e2e.harness import Customer, wait_until

_phones = itertools.count(13900000001)


@pytest.fixture(scope="module")
def sold(cloud, machine):
    """Two colas and a water sold on m1, in the cloud's reports."""
    c = Customer(cloud, "Buyer", f"+86{next(_phones)}")
    c.scan(machine)
    assert c.register("/m/m1").status_code == 303
    assert c.topup("50").status_code == 303
    for slot in ("A2", "A2", "A1"):
        r = c.buy(machine, slot)
        assert r.status_code == 303, r.text
        c.wait_settled(r.headers["location"].rsplit("/", 1)[1])
    wait_until(lambda: sum(t["count"] for t in cloud.api("GET", "/api/v1/reports/sales?by=machine")["totals"]) == 3,
               30, "the three sales to reach the reports")
    add_staff(cloud, "maggie", "manager")
    return "maggie"


def test_the_sales_page_charts_what_was_sold_and_the_period_can_change(cloud, sold, desk):
    sign_in(desk, cloud, sold)
    desk.goto(cloud.url + "/staff/sales")
    assert desk.locator("h1").inner_text() == "Sales"
    assert desk.locator("#total-count-CNY").inner_text() == "3"
    assert desk.locator("#total-amount-CNY").inner_text() == "CN¥9.00"
    machine_bar = desk.locator("#chart-machine-CNY rect.bar")
    assert machine_bar.count() == 1
    assert machine_bar.locator("title").text_content() == "Machine m1: CN¥9.00"
    titles = desk.locator("#chart-product-CNY rect.bar title").all_text_contents()
    assert titles == ["cola Cola: CN¥7.00", "water Water: CN¥2.00"]
    assert desk.locator("#chart-day-CNY rect.bar").count() == 30
    assert desk.locator("#chart-hour-CNY rect.bar").count() == 24
    shot(desk, "sales-charts")
    desk.locator("#chart-product-CNY summary").click()
    assert desk.locator("#chart-product-CNY table").is_visible()
    shot(desk, "sales-product-table-open")

    desk.get_by_label("From").fill("2024-01-01")
    desk.get_by_label("To (inclusive)").fill("2024-01-31")
    desk.get_by_role("button", name="Show").click()
    desk.wait_for_load_state()
    assert "from=2024-01-01" in desk.url
    assert desk.locator("#no-sales").inner_text() == "No sales in this period."
    shot(desk, "sales-empty-period")

    desk.goto(cloud.url + "/staff/sales?from=last+week&tz=Asia/Shanghai")
    assert "From: “last week” is not a date" in desk.get_by_role("alert").inner_text()
    assert desk.get_by_label("From").get_attribute("aria-invalid") == "true"
    assert desk.get_by_label("Time zone").input_value() == "Asia/Shanghai"
    shot(desk, "sales-bad-date")


def test_a_chinese_manager_sees_yuan_in_the_chinese_way(cloud, sold, new_page):
    page = new_page(lang="zh-CN")
    sign_in(page, cloud, sold)
    page.goto(cloud.url + "/staff/sales?tz=Asia/Shanghai")
    assert page.locator("h1").inner_text() == "销售"
    assert page.locator("#total-amount-CNY").inner_text() == "¥9.00"
    assert page.locator("#chart-machine-CNY rect.bar title").text_content() == "Machine m1: ¥9.00"
    assert "每日销售" in page.locator("#h-day-CNY").inner_text()
    shot(page, "sales-zh-CN")


def test_stock_pick_list_and_a_purchase_order_from_draft_to_the_warehouse(cloud, sold, machine, desk):
    cola = next(p["id"] for p in cloud.api("GET", "/api/v1/products?search=cola") if p["sku"] == "cola")
    cloud.api("PATCH", f"/api/v1/products/{cola}", {"cost": 120, "price": 350, "currency": "CNY",
                                                     "shelf_life_days": 180, "reorder_level": 24})
    cloud.api("POST", "/api/v1/suppliers", {"name": "Drinks Co"})
    sign_in(desk, cloud, sold)

    desk.goto(cloud.url + "/staff/stock")
    assert "cola Cola: 0 in the warehouse, reorder at 24, 0 on order." in desk.locator("#alerts").inner_text()
    assert desk.locator("#fill rect.bar title").text_content().startswith("m1: ")
    shot(desk, "stock-before")

    desk.goto(cloud.url + "/staff/pick-lists")
    desk.get_by_label("Machine").select_option("m1")
    desk.get_by_role("button", name="Show the machine's list").click()
    desk.wait_for_load_state()
    assert "Machine m1" in desk.locator("h2").inner_text()
    assert desk.get_by_role("link", name="Print (A4)").get_attribute("href") == \
        "/api/v1/machines/m1/pick-list?format=html"
    shot(desk, "pick-list-m1")
    desk.goto(cloud.url + "/api/v1/machines/m1/pick-list?format=html")
    assert desk.locator("h1").inner_text() == "Pick list: Machine m1"
    shot(desk, "pick-list-m1-print")
    route = cloud.api("POST", "/api/v1/routes", {"name": "North loop", "machines": ["m1"]})["id"]
    desk.goto(cloud.url + "/staff/pick-lists")
    desk.get_by_label("Route").select_option(label="North loop")
    desk.get_by_role("button", name="Show the route's list").click()
    desk.wait_for_load_state()
    assert desk.locator("h2").inner_text() == "Route North loop"
    assert desk.get_by_role("link", name="Print (A4)").get_attribute("href") == \
        f"/api/v1/routes/{route}/pick-list?format=html"
    shot(desk, "pick-list-route")

    desk.goto(cloud.url + "/staff/purchase-orders")
    desk.get_by_label("Supplier").select_option(label="Drinks Co")
    desk.get_by_label("Product on line 1").select_option(str(cola))
    desk.get_by_label("Quantity on line 1").fill("many")
    desk.get_by_role("button", name="Create the draft").click()
    desk.wait_for_load_state()
    assert "Quantity on line 1" in desk.get_by_role("alert").inner_text()
    assert desk.get_by_label("Product on line 1").input_value() == str(cola), "what was typed stays"
    shot(desk, "po-form-error")
    desk.get_by_label("Quantity on line 1").fill("24")
    desk.get_by_label("Unit cost on line 1").fill("1.10")
    desk.get_by_role("button", name="Create the draft").click()
    desk.wait_for_load_state()
    assert desk.get_by_role("status").inner_text() == "The draft is saved."
    assert desk.locator("#status").inner_text() == "Draft"
    assert desk.locator("#total").inner_text() == "CN¥26.40"
    shot(desk, "po-draft")

    desk.get_by_role("button", name="Send to the supplier").click()
    desk.wait_for_load_state()
    assert desk.locator("#status").inner_text() == "Sent"
    shot(desk, "po-sent")
    desk.get_by_role("button", name="Confirm").click()
    desk.wait_for_load_state()
    assert "confirmed by the supplier" in desk.locator("dl").inner_text()
    desk.get_by_label(re.compile("Receive now")).fill("10")
    desk.get_by_role("button", name="Receive into the warehouse").click()
    desk.wait_for_load_state()
    assert desk.locator("#status").inner_text() == "Partly received"
    shot(desk, "po-partly-received")
    desk.go_back()
    desk.get_by_role("button", name="Receive into the warehouse").click()  # the same form, the same key
    desk.wait_for_load_state()
    assert desk.get_by_role("status").inner_text() == "These goods were received already: nothing changed."
    desk.get_by_label(re.compile("Receive now")).fill("14")
    desk.get_by_role("button", name="Receive into the warehouse").click()
    desk.wait_for_load_state()
    assert desk.locator("#status").inner_text() == "Received"
    assert "Nothing more to do on this order." in desk.locator(".actions").inner_text()
    shot(desk, "po-received")

    desk.goto(cloud.url + "/staff/purchase-orders")
    desk.get_by_label("Supplier").select_option(label="Drinks Co")
    desk.get_by_label("Product on line 1").select_option(str(cola))
    desk.get_by_label("Quantity on line 1").fill("6")
    desk.get_by_role("button", name="Create the draft").click()
    desk.wait_for_load_state()
    assert desk.locator("#total").inner_text() == "CN¥7.20", "the product's usual cost"
    desk.get_by_label("Reason for cancelling").fill("ordered twice")
    desk.get_by_role("button", name="Cancel the order").click()
    desk.wait_for_load_state()
    assert desk.locator("#status").inner_text() == "Cancelled"
    assert "ordered twice" in desk.locator("dl").inner_text()
    shot(desk, "po-cancelled")

    desk.goto(cloud.url + "/staff/purchase-orders")
    assert desk.locator("#orders tbody tr").all_inner_texts()[0].split("\t")[2] == "Cancelled"
    assert "Received" in desk.locator("#orders").inner_text()
    shot(desk, "po-list")
    desk.goto(cloud.url + "/staff/stock")
    row = desk.locator("tr", has_text="cola Cola").first.inner_text()
    assert "24" in row and "CN¥26.40" in row
    shot(desk, "stock-after-receipt")
