"""The dashboard's sales, stock, pick-list and purchase-order pages (cloud/sales/pages.py, stock.py):
who may see them, what they show, and a form with nonsense in it coming back with the field named."""

import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.sales import reports
from cloud.core.db import utcnow
from cloud.catalog.products import products
from cloud.people import audit, staff
from cloud.catalog import products as catalog
from tests.cloud_fixtures import add_machine, db_url, fast_hashes, idle_cloud  # noqa: F401  (fixtures)

BOOT = "bootstrap-token-for-tests"
PW = "violet-tractor-harbour-91"


@pytest.fixture
def app(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        add_machine(conn, "m-1")
        ids = dict(conn.execute(sa.select(products.c.sku, products.c.id)).all())
        now = datetime.now(timezone.utc)
        yesterday = (now - timedelta(days=1)).replace(hour=10, minute=0)
        rows = [("m-1", 1, yesterday.isoformat(), "o-1", "A1", ids["cola"], 350, "CNY"),
                ("m-1", 2, yesterday.isoformat(), "o-2", "A1", ids["cola"], 350, "CNY"),
                ("m-1", 3, now.isoformat(), "o-3", "A2", ids["water"], 200, "CNY")]
        reports.project(conn, rows)
        catalog.update_product(conn, ids["cola"], {"cost": 120, "price": 350, "currency": "CNY", "shelf_life_days": 90,
                                                   "reorder_level": 20}, utcnow())
        supplier = staff.add_supplier(conn, "Drinks Co", "", utcnow())
        other = staff.add_supplier(conn, "Snacks Ltd", "", utcnow())
        for username, role in (("mia", "manager"), ("tom", "technician"), ("sue", "supplier")):
            staff.add_staff(conn, username, role, utcnow(), staff.hash_password(PW), False,
                            supplier if role == "supplier" else None)
    a = cloud.app.create_app(obj, BOOT, b"k" * 32)
    a.state.test_ids = {**ids, "supplier": supplier, "other": other}
    yield a
    obj.engine.dispose()


def signed_in(app, username: str, lang: str = "en") -> TestClient:
    c = TestClient(app, follow_redirects=False, headers={"Accept-Language": lang})
    r = c.post("/staff/login", data={"username": username, "password": PW, "next": "/staff"})
    assert r.status_code == 303, r.text
    return c


@pytest.fixture
def manager(app):
    with signed_in(app, "mia") as c:
        yield c


def test_sales_need_a_session_and_a_sales_role(app):
    with TestClient(app, follow_redirects=False) as c:
        assert c.get("/staff/sales").headers["location"] == "/staff/login?next=/staff/sales"
    with signed_in(app, "tom") as c:
        r = c.get("/staff/sales")
        assert r.status_code == 403 and "Not for your role" in r.text


def test_the_sales_page_shows_the_totals_and_a_bar_for_each_machine_and_product(manager):
    r = manager.get("/staff/sales")
    assert r.status_code == 200, r.text
    assert re.search(r'id="total-count-CNY">3<', r.text)
    assert re.search(r'id="total-amount-CNY">CN¥9.00<', r.text)
    assert "<title>Machine m-1: CN¥9.00</title>" in r.text
    assert "<title>cola Cola: CN¥7.00</title>" in r.text
    assert r.text.count("<svg") == 4


def test_a_period_and_a_filter_narrow_the_report(manager, app):
    today = datetime.now(timezone.utc).date()
    r = manager.get("/staff/sales", params={"from": today.isoformat(), "to": today.isoformat()})
    assert re.search(r'id="total-amount-CNY">CN¥2.00<', r.text)
    r = manager.get("/staff/sales", params={"product": str(app.state.test_ids["cola"])})
    assert re.search(r'id="total-amount-CNY">CN¥7.00<', r.text)
    r = manager.get("/staff/sales", params={"from": "2020-01-01", "to": "2020-01-31"})
    assert "No sales in this period." in r.text


def test_chinese_readers_see_yuan_in_their_own_format(app):
    with signed_in(app, "mia", "zh-CN") as c:
        r = c.get("/staff/sales")
    assert re.search(r'id="total-amount-CNY">¥9.00<', r.text)
    assert "每日销售" in r.text


@pytest.mark.parametrize("params,field,text", [
    ({"from": "yesterday"}, "from", "“yesterday” is not a date"),
    ({"to": "2026-13-01"}, "to", "is not a date"),
    ({"from": "2026-05-02", "to": "2026-05-01"}, "to", "must not be before"),
    ({"tz": "Mars/Olympus"}, "tz", "Time zone"),
    ({"tz": "A" * 300}, "tz", "Time zone"),
    ({"machine": "nope"}, "machine", "Machine: there is no such one"),
])
def test_a_bad_period_comes_back_with_the_field_named_and_the_values_kept(manager, params, field, text):
    r = manager.get("/staff/sales", params=params)
    assert r.status_code == 422
    assert text in r.text
    assert re.search(rf'id="f-{field}" name="{field}" aria-invalid="true"', r.text)
    for value in params.values():
        assert value in r.text


def test_stock_pages_and_their_roles(app, manager):
    r = manager.get("/staff/stock")
    assert r.status_code == 200, r.text
    assert "cola Cola" in r.text and "Fill per machine" in r.text
    assert "Below the reorder level" in r.text and "0 in the warehouse, reorder at 20" in r.text
    with signed_in(app, "tom") as tech:
        assert tech.get("/staff/stock").status_code == 403
        r = tech.get("/staff/pick-lists", params={"machine": "m-1"})
        assert r.status_code == 200, r.text
        assert 'href="/api/v1/machines/m-1/pick-list?format=html"' in r.text
        r = tech.get("/staff/pick-lists", params={"machine": "nope"})
        assert r.status_code == 404 and "Machine: there is no such machine." in r.text
        assert tech.get("/staff/purchase-orders").status_code == 403


def po_form(app, **over):
    form = {"supplier": str(app.state.test_ids["supplier"]), "currency": "CNY", "expected_on": "", "note": "",
            "product_0": str(app.state.test_ids["cola"]), "quantity_0": "24", "unit_cost_0": "1.10"}
    return {**form, **over}


def audit_actions(app) -> list:
    with app.state.cloud.engine.begin() as conn:
        return [a["action"] for a in audit.query(conn, object_kind="purchase_order", limit=100)]


def test_a_purchase_order_from_the_form_to_the_warehouse(app, manager):
    r = manager.post("/staff/purchase-orders", data=po_form(app))
    assert r.status_code == 303, r.text
    page = r.headers["location"]
    po = int(re.search(r"/(\d+)\?", page).group(1))
    r = manager.get(page)
    assert "The draft is saved." in r.text and "CN¥26.40" in r.text
    assert manager.post(f"/staff/purchase-orders/{po}/send").status_code == 303
    assert manager.post(f"/staff/purchase-orders/{po}/send").status_code == 409
    line = re.search(r'name="quantity_(\d+)"', manager.get(f"/staff/purchase-orders/{po}").text).group(1)
    key = "receipt-1"
    r = manager.post(f"/staff/purchase-orders/{po}/receive", data={"key": key, f"quantity_{line}": "10"})
    assert r.headers["location"].endswith("done=received")
    r = manager.post(f"/staff/purchase-orders/{po}/receive", data={"key": key, f"quantity_{line}": "10"})
    assert r.headers["location"].endswith("done=already"), "the same key receives once"
    r = manager.get(f"/staff/purchase-orders/{po}")
    assert re.search(r'id="status">Partly received<', r.text)
    r = manager.post(f"/staff/purchase-orders/{po}/receive", data={"key": "k2", f"quantity_{line}": "99"})
    assert r.status_code == 409 and "Quantity on line 1" in r.text
    r = manager.post(f"/staff/purchase-orders/{po}/cancel", data={"reason": "rest never came"})
    assert r.status_code == 303
    assert "cancelled" in manager.get(f"/staff/purchase-orders/{po}").text
    assert audit_actions(app) == ["po.cancel", "po.receive", "po.send", "po.create"]
    assert "cola Cola" in manager.get("/staff/stock").text


@pytest.mark.parametrize("over,field,text", [
    ({"supplier": ""}, "supplier", "Supplier"),
    ({"quantity_0": "lots"}, "quantity_0", "Quantity on line 1"),
    ({"unit_cost_0": "1,10"}, "unit_cost_0", "Unit cost on line 1"),
    ({"quantity_0": "0"}, "quantity_0", "Quantity on line 1"),
    ({"product_0": "", "quantity_0": "", "unit_cost_0": ""}, "product_0", "Product on line 1"),
    ({"expected_on": "2001-01-01"}, "expected_on", "Expected on"),
])
def test_a_bad_order_form_comes_back_with_the_field_named_and_the_values_kept(app, manager, over, field, text):
    r = manager.post("/staff/purchase-orders", data=po_form(app, **over))
    assert r.status_code in (409, 422), r.text
    assert text in r.text
    assert re.search(rf'id="f-{field}" name="{field}"[^>]*aria-invalid="true"', r.text)
    for value in over.values():
        assert f'value="{value}"' in r.text or not value or field == "supplier"
    assert audit_actions(app) == []


def test_a_supplier_sees_and_confirms_only_its_own_orders(app, manager):
    ids = []
    for supplier in ("other", "supplier"):
        r = manager.post("/staff/purchase-orders", data=po_form(app, supplier=str(app.state.test_ids[supplier])))
        ids.append(int(re.search(r"/(\d+)\?", r.headers["location"]).group(1)))
        manager.post(f"/staff/purchase-orders/{ids[-1]}/send")
    po, own = ids
    with signed_in(app, "sue") as sue:
        assert f"/staff/purchase-orders/{own}" in sue.get("/staff/purchase-orders").text
        assert "New purchase order" not in sue.get("/staff/purchase-orders").text
        assert sue.post(f"/staff/purchase-orders/{own}/confirm", data={"expected_on": "2099-01-01"}).status_code == 303
        assert "confirmed by the supplier" in sue.get(f"/staff/purchase-orders/{own}").text
        assert f"/staff/purchase-orders/{po}" not in sue.get("/staff/purchase-orders").text
        assert sue.get(f"/staff/purchase-orders/{po}").status_code == 404
        assert sue.post(f"/staff/purchase-orders/{po}/confirm").status_code == 404
        assert sue.post(f"/staff/purchase-orders/{po}/send").status_code == 403
    r = manager.post(f"/staff/purchase-orders/{po}/confirm", data={"expected_on": "2099-01-01"})
    assert r.status_code == 303
    assert "confirmed by the supplier" in manager.get(f"/staff/purchase-orders/{po}").text
