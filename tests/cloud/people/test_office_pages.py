"""The office pages of the dashboard (cloud/people/pages.py and cloud/finance/pages.py): settlements, reconciliation, people,
suppliers and the audit trail; who may open them, the errors a form shows, and the audit rows they write."""

import re

import pytest
from fastapi.testclient import TestClient

import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.finance import reconcile
from cloud.fleet import locations
from cloud.core.db import utcnow
from cloud.people import audit, staff
from tests.cloud_fixtures import add_customer, add_machine, add_sale, db_url, fast_hashes, idle_cloud  # noqa: F401  (fixtures)

BOOT = "bootstrap-token-for-tests"
PW = "violet-tractor-harbour-91"


@pytest.fixture
def cloud_obj(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        add_machine(conn)
        location_id = locations.add(conn, "Lobby", now=utcnow())
        locations.place(conn, "m-1", location_id, utcnow())
        add_sale(conn, add_customer(conn))
    yield obj
    obj.engine.dispose()


@pytest.fixture
def app(cloud_obj):
    return cloud.app.create_app(cloud_obj, BOOT, b"k" * 32)


@pytest.fixture
def engine(cloud_obj):
    return cloud_obj.engine


def person(engine, username, role, supplier_id=None):
    with engine.begin() as conn:
        staff.add_staff(conn, username, role, utcnow(), staff.hash_password(PW), False, supplier_id)


def signed_in(app, engine, username, role, lang="en", supplier_id=None) -> TestClient:
    person(engine, username, role, supplier_id)
    c = TestClient(app, follow_redirects=False, headers={"Accept-Language": lang})
    r = c.post("/staff/login", data={"username": username, "password": PW})
    assert r.status_code == 303, r.text
    return c


def audit_rows(engine, action):
    with engine.begin() as conn:
        return audit.query(conn, action=action)


PAGES = ["/staff/settlements", "/staff/reconcile", "/staff/journal", "/staff/people", "/staff/suppliers", "/staff/audit"]


@pytest.mark.parametrize("path", PAGES)
def test_without_a_session_a_page_sends_to_the_sign_in_page(app, path):
    r = TestClient(app, follow_redirects=False).get(path + "?month=2024-05")
    assert r.status_code == 303
    assert r.headers["location"] == "/staff/login?next=" + path + "%3Fmonth%3D2024-05"


@pytest.mark.parametrize("path", PAGES)
def test_a_supplier_gets_the_page_that_says_not_for_your_role(app, engine, path):
    with engine.begin() as conn:
        supplier_id = staff.add_supplier(conn, "Acme", "", utcnow())
    c = signed_in(app, engine, "sam", "supplier", supplier_id=supplier_id)
    r = c.get(path)
    assert r.status_code == 403 and "Not for your role" in r.text and "<html" in r.text


def test_a_manager_sees_suppliers_but_cannot_add_staff(app, engine):
    c = signed_in(app, engine, "mia", "manager")
    assert c.get("/staff/people").status_code == 403
    r = c.post("/staff/people", data={"username": "eve", "role": "administrator"})
    assert r.status_code == 403
    with engine.begin() as conn:
        assert staff.get_by_name(conn, "eve") is None
    assert c.get("/staff/suppliers").status_code == 200
    r = c.post("/staff/suppliers", data={"name": "Fresh Drinks Ltd", "email": "orders@fresh.example"})
    assert r.status_code == 303
    assert "Fresh Drinks Ltd" in c.get("/staff/suppliers").text
    [row] = audit_rows(engine, "supplier.add")
    assert row["change"]["name"] == "Fresh Drinks Ltd"
    r = c.post("/staff/suppliers", data={"name": "Other", "lead_time_days": "soon"})
    assert r.status_code == 422 and "Lead time" in r.text and 'value="soon"' in r.text


def test_adding_a_person_shows_the_one_time_password_once_and_audits(app, engine):
    c = signed_in(app, engine, "ada", "administrator")
    r = c.post("/staff/people", data={"username": "Max", "role": "manager", "password": ""})
    assert r.status_code == 201
    password = re.search(r'id="one-time-password">([^<]+)<', r.text).group(1)
    assert len(password) >= 12
    [row] = audit_rows(engine, "people.add")
    assert row["change"] == {"username": "max", "role": "manager", "supplier_id": None}
    page = c.get("/staff/people").text
    assert "max" in page and password not in page, "the one-time password is shown once only"
    with engine.begin() as conn:
        assert staff.get_by_name(conn, "max").must_change_password


@pytest.mark.parametrize("form,field,says", [
    ({"username": "a b!", "role": "manager"}, "username", "2 to 40 lower-case letters"),
    ({"username": "bob", "role": "overlord"}, "role", "choose one of the roles"),
    ({"username": "bob", "role": "supplier"}, "supplier", "needs its supplier"),
    ({"username": "bob", "role": "manager", "password": "password1"}, "password", "Password:"),
])
def test_a_person_form_with_nonsense_comes_back_with_the_field_named_and_values_kept(app, engine, form, field, says):
    c = signed_in(app, engine, "ada", "administrator")
    r = c.post("/staff/people", data=form)
    assert r.status_code == 422, r.text
    assert says in r.text
    assert f'value="{form["username"]}"' in r.text.replace("&#34;", '"')
    assert 'aria-invalid="true"' in r.text
    assert not audit_rows(engine, "people.add")


def test_a_bad_username_in_chinese(app, engine):
    c = signed_in(app, engine, "ada", "administrator", lang="zh-CN")
    r = c.post("/staff/people", data={"username": "?", "role": "manager"})
    assert r.status_code == 422 and "用户名" in r.text


def test_changing_a_person_asks_first_then_audits(app, engine):
    c = signed_in(app, engine, "ada", "administrator")
    person(engine, "tom", "technician")
    with engine.begin() as conn:
        tom = staff.get_by_name(conn, "tom").id
    r = c.post(f"/staff/people/{tom}", data={"change": "disable"})
    assert r.status_code == 200 and "Disable tom?" in r.text
    with engine.begin() as conn:
        assert not staff.get(conn, tom).disabled
    r = c.post(f"/staff/people/{tom}", data={"change": "disable", "confirmed": "yes"})
    assert r.status_code == 303
    with engine.begin() as conn:
        assert staff.get(conn, tom).disabled
    r = c.post(f"/staff/people/{tom}", data={"change": "role", "role": "manager", "confirmed": "yes"})
    assert r.status_code == 303
    r = c.post(f"/staff/people/{tom}", data={"change": "reset", "confirmed": "yes"})
    assert r.status_code == 200 and 'id="one-time-password"' in r.text
    changes = [row["change"] for row in audit_rows(engine, "people.change")]
    assert {"disabled": [False, True]} in changes and {"role": ["technician", "manager"]} in changes
    assert any(ch.get("password_hash") == "changed" for ch in changes)
    page = c.get("/staff/audit?action=people.change").text
    assert page.count("<code>people.change</code>") == 3 and "<code>people.add</code>" not in page
    with engine.begin() as conn:
        ada = staff.get_by_name(conn, "ada").id
    page = c.get(f"/staff/audit?user={ada}").text
    assert "<code>session.login</code>" in page and "<code>people.bootstrap</code>" not in page


def test_the_settlements_page_shows_the_month_and_adds_a_rule(app, engine):
    c = signed_in(app, engine, "mia", "manager")
    r = c.get("/staff/settlements?month=2024-05")
    assert r.status_code == 200 and "Lobby" in r.text
    assert "/api/v1/locations/1/statements/2024-05?format=html" in r.text
    r = c.post("/staff/settlements/rules", data={"location_id": "1", "kind": "percent_gross", "percent": "10",
                                                 "currency": "CNY", "valid_from": "2024-01-01", "month": "2024-05"})
    assert r.status_code == 303, r.text
    page = c.get(r.headers["location"]).text
    assert "The rule is added." in page and "10.00 %" in page
    assert "Commission due" in page
    [row] = audit_rows(engine, "settlement.rule.add")
    assert row["change"]["percent"] == "10.00"
    assert c.get("/api/v1/locations/1/statements/2024-05?format=html").status_code == 200, "the session opens it"


@pytest.mark.parametrize("form,says", [
    ({"kind": "percent_gross", "percent": "150"}, "Percent: must be at most 100"),
    ({"kind": "percent_profit", "percent": "ten"}, "Percent: must be a number from 0 to 100"),
    ({"kind": "per_item", "amount": "0.555"}, "Amount: has more decimals"),
    ({"kind": "nonsense", "percent": "5"}, "Kind:"),
    ({"kind": "percent_gross", "percent": "5", "valid_from": "yesterday"}, "Valid from:"),
])
def test_a_rule_with_nonsense_comes_back_with_the_field_named(app, engine, form, says):
    c = signed_in(app, engine, "mia", "manager")
    data = {"location_id": "1", "currency": "CNY", "valid_from": "2024-01-01", "month": "2024-05", **form}
    r = c.post("/staff/settlements/rules", data=data)
    assert r.status_code == 422, r.text
    assert says in r.text
    for field, value in form.items():
        if field != "kind":  # a select: an unknown kind cannot be one of its options
            assert f'value="{value}"' in r.text
    assert not audit_rows(engine, "settlement.rule.add")


def test_posting_a_statement_twice_posts_once(app, engine):
    c = signed_in(app, engine, "mia", "manager")
    c.post("/staff/settlements/rules", data={"location_id": "1", "kind": "flat_monthly", "amount": "31.00",
                                             "currency": "CNY", "valid_from": "2024-01-01", "month": "2024-05"})
    form = {"location_id": "1", "month": "2024-05", "currency": "CNY", "key": "k1"}
    r = c.post("/staff/settlements/post", data=form)
    assert r.status_code == 303 and "done=posted" in r.headers["location"]
    r = c.post("/staff/settlements/post", data=form)
    assert "done=already" in r.headers["location"]
    assert "posted before" in c.get(r.headers["location"]).text
    [row] = audit_rows(engine, "statement.post")
    assert row["change"] == {"period": "2024-05", "currency": "CNY", "total": 3100}


def test_the_reconciliation_page_names_every_kind(app, engine):
    c = signed_in(app, engine, "mia", "manager", lang="zh-CN")
    r = c.get("/staff/reconcile?start=2024-05-01&end=2024-05-31")
    assert r.status_code == 200
    assert r.text.count("<h2") == len(reconcile.KINDS) == 13  # ten of its own, three of imported statements
    # The fixture's sale was paid for but no machine's ledger reported it: money taken, nothing sold.
    section = r.text.split('id="kind-captured_not_sold"', 1)[1].split("<h2", 1)[0]
    assert "已收款，但无任何售货记录" in section and "o-sold" in section and "¥3.50" in section
    assert r.text.count("无需对账处理。") == len(reconcile.KINDS) - 1 and "各方数据一致" not in r.text
    r = c.get("/staff/reconcile?start=2024-05-31&end=2024-05-01")
    assert r.status_code == 422 and 'value="2024-05-31"' in r.text
