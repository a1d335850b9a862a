"""The dashboard's sales, stock, pick-list and purchase-order pages (cloud/dashboard/sales.py, stock.py):
who may see them, what they show, and a form with nonsense in it coming back with the field named."""

import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.db
import cloud.service
import cloud.settings
import cloud.web
from cloud import reports
from cloud.db import utcnow
from cloud.machines import products
from cloud.people import audit, staff
from cloud.stock import catalog
from cloud_fixtures import add_machine, db_url  # noqa: F401  (fixture)
from argon2 import PasswordHasher

BOOT = "bootstrap-token-for-tests"
PW = "violet-tractor-harbour-91"


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch):
    monkeypatch.setattr(staff, "hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def app(tmp_path, db_url):
    settings_ = cloud.settings.Settings(var=str(tmp_path), db=db_url, broker="127.0.0.1:1").resolve()
    obj = cloud.service.Cloud(settings_)
    cloud.db.migrate(obj.engine)
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
        for username, role in (("mia", "manager"), ("tom", "technician"), ("sue", "supplier")):
            staff.add_staff(conn, username, role, utcnow(), staff.hash_password(PW), False,
                            supplier if role == "supplier" else None)
    a = cloud.web.create_app(obj, BOOT, b"k" * 32)
    a.state.test_ids = {**ids, "supplier": supplier}
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
    ({"machine": "nope"}, "machine", "Machine: there is no such one"),
])
def test_a_bad_period_comes_back_with_the_field_named_and_the_values_kept(manager, params, field, text):
    r = manager.get("/staff/sales", params=params)
    assert r.status_code == 422
    assert text in r.text
    assert re.search(rf'id="f-{field}" name="{field}" aria-invalid="true"', r.text)
    for value in params.values():
        assert value in r.text
