"""The whole story in real browsers: a customer on a phone (slow 3G) registers, tops up, buys from a
simulated machine and is told to take the product; a manager signs in and sees that sale on the
dashboard, the slot's count one lower, and the sales chart changed."""

import re

from tests.browser.browsing import add_staff, scan_url, shot, sign_in


def slot_count(desk, cloud, machine_id: str, slot: str) -> str:
    desk.goto(f"{cloud.url}/staff/machines/{machine_id}")
    return desk.locator(f".slot-grid [data-slot='{slot}']").get_attribute("data-count")


def test_a_customer_buys_on_a_phone_and_the_manager_sees_the_sale(cloud, machine, phone, new_page):
    add_staff(cloud, "mara", "manager")
    desk = new_page()
    sign_in(desk, cloud, "mara")
    desk.goto(cloud.url + "/staff/sales")
    products = desk.locator("#chart-product-CNY")
    chart_before = products.inner_html() if products.count() else ""
    count_before = slot_count(desk, cloud, machine.id, "A2")

    phone.goto(scan_url(cloud, machine))
    shot(phone, "story-1-register")
    phone.get_by_label("Your name").fill("Lin")
    phone.get_by_label("Phone number").fill("+8613800000042")
    phone.get_by_role("button", name="Register").click()
    phone.get_by_role("heading", name=f"Machine {machine.id}").wait_for()
    shot(phone, "story-2-menu")
    phone.get_by_role("link", name=re.compile("Top up")).click()
    phone.get_by_label(re.compile("Top up")).fill("20")
    phone.get_by_role("button", name="Top up").click()
    phone.wait_for_url(re.compile(rf"/m/{machine.id}$"))
    shot(phone, "story-3-topped-up")
    phone.get_by_role("button", name="Buy Cola").click()
    status = phone.get_by_role("status")
    status.get_by_text("Take your product!").wait_for(timeout=30_000)
    shot(phone, "story-4-take-your-product")

    desk.goto(cloud.url + "/staff")
    row = desk.locator("table.fleet").get_by_role("row").filter(has_text=f"Machine {machine.id}")
    assert "CN¥3.50" in row.inner_text(), "today's sales on the fleet page"
    shot(desk, "story-5-fleet")
    assert int(slot_count(desk, cloud, machine.id, "A2")) == int(count_before) - 1
    shot(desk, "story-6-machine")
    desk.goto(cloud.url + "/staff/sales")
    assert products.inner_html() != chart_before
    assert "Cola" in products.locator("svg").inner_html()
    assert desk.locator("#total-amount-CNY").inner_text() == "CN¥3.50"
    shot(desk, "story-7-sales")


def test_the_core_path_works_without_script(cloud, machine, new_page):
    """Plain forms and a page that refreshes itself: a phone with JavaScript off buys too."""
    phone = new_page(phone=True, script=False)
    phone.goto(scan_url(cloud, machine))
    phone.get_by_label("Your name").fill("Wen")
    phone.get_by_label("Phone number").fill("+8613800000043")
    phone.get_by_role("button", name="Register").click()
    phone.get_by_role("link", name=re.compile("Top up")).click()
    phone.get_by_label(re.compile("Top up")).fill("5")
    phone.get_by_role("button", name="Top up").click()
    phone.get_by_role("button", name="Buy Water").click()
    phone.get_by_text("Take your product!").wait_for(timeout=30_000)
    assert phone.locator("#balance").inner_text() == "CN¥3.00"
    shot(phone, "story-no-script-take-your-product")
