"""The office's orders and customers (cloud/sales/office.py): the API, the dashboard pages and vendctl, on
SQLite and PostgreSQL; searches a page at a time, an order's money story, a refund from the page, blocking a
customer and the shop refusing them; every bad input answered next to its field with nothing written."""

import json
import re
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.app
import cloud.cli
from cloud.core.db import utcnow
from cloud.payments import txns
from cloud.people import COOKIE, CookieSigner, audit, auth, staff
from cloud.sales import orders
from protocol import token as qrtoken
from tests.cloud_fixtures import (NOW, SECRET, ThroughTestClient, add_customer, add_machine, add_sale, db_url,  # noqa: F401
                                  fast_hashes, idle_cloud, post_form, unbalanced_txns)

BOOT = "bootstrap-token-for-tests"
PW = "violet-tractor-harbour-91"
ANN, BOB = "+8613800000001", "+8613800000002"


def add_order(conn, order_id, customer_id, at, status="failed", machine="m-1"):
    """An order with no money moved (a failed vend), at ``at``."""
    product = conn.execute(sa.select(orders.orders.c.product_id).limit(1)).scalar()
    conn.execute(orders.orders.insert().values(
        id=order_id, customer_id=customer_id, idem_key=f"k-{order_id}", machine_id=machine, slot="A1",
        product_id=product, amount=350, currency="CNY", provider="wallet", status=status, cmd_id=f"v-{order_id}",
        created_at=at, expires_at=at + timedelta(seconds=30), updated_at=at))


@pytest.fixture
def cloud_obj(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        add_machine(conn)
        add_machine(conn, "m-2")
        ann = add_customer(conn, phone=ANN)
        add_sale(conn, ann)  # o-sold: 3.50 from Ann's wallet of 10.00, at NOW
        bob = add_customer(conn, phone=BOB, name="Bob")
        for i in range(5):  # Bob: five failed orders a minute apart on m-2, the newest first at NOW - 1 min
            add_order(conn, f"o-bob-{i}", bob, NOW - timedelta(minutes=1 + i), machine="m-2")
    yield obj
    obj.engine.dispose()


@pytest.fixture
def app(cloud_obj):
    return cloud.app.create_app(cloud_obj, BOOT, b"k" * 32)


def token(cloud_obj, username, role) -> dict:
    with cloud_obj.engine.begin() as conn:
        user_id = staff.add_staff(conn, username, role, utcnow(), staff.hash_password(PW), False, None)
        return {"Authorization": f"Bearer {auth.new_token(conn, user_id, 'test', utcnow())[1]}"}


def signed_in(app, cloud_obj, username, role, lang="en") -> TestClient:
    token(cloud_obj, username, role)
    c = TestClient(app, follow_redirects=False, headers={"Accept-Language": lang})
    assert c.post("/staff/login", data={"username": username, "password": PW}).status_code == 303
    return c


def written(cloud_obj):
    """What a refused form must not change: the journal, the audit trail, the customers' blocks."""
    with cloud_obj.engine.connect() as conn:
        return (conn.execute(sa.select(sa.func.count()).select_from(txns)).scalar(),
                len(audit.query(conn, limit=1000)),
                conn.execute(sa.text("select count(*) from customers where blocked_at is not null")).scalar())


def error_next_to(html: str, field: str) -> str:
    """The error text shown under the form field ``field`` (the input points at it by aria-describedby)."""
    assert f'aria-describedby="error-{field}"' in html, html
    found = re.search(rf'<p class="error" role="alert" id="error-{field}">([^<]*)</p>', html)
    assert found, html
    return found.group(1)


# -- the API ------------------------------------------------------------------------------------------------

def test_orders_a_page_at_a_time_newest_first_by_keyset(app, cloud_obj):
    h = token(cloud_obj, "mona", "manager")
    with TestClient(app) as c:
        first = c.get("/api/v1/orders?limit=2", headers=h).json()
        assert [o["id"] for o in first["orders"]] == ["o-sold", "o-bob-0"]
        second = c.get("/api/v1/orders", params={"limit": 2, "after": first["next"]}, headers=h).json()
        assert [o["id"] for o in second["orders"]] == ["o-bob-1", "o-bob-2"]
        last = c.get("/api/v1/orders", params={"limit": 2, "after": second["next"]}, headers=h).json()
        assert [o["id"] for o in last["orders"]] == ["o-bob-3", "o-bob-4"] and last["next"] is None
        by = lambda **q: [o["id"] for o in c.get("/api/v1/orders", params=q, headers=h).json()["orders"]]  # noqa: E731
        assert by(machine="m-1") == ["o-sold"]
        assert by(customer=BOB, status="failed", limit=1) == ["o-bob-0"]
        assert by(customer="1") == ["o-sold"]
        assert by(status="succeeded") == ["o-sold"]
        assert by(**{"from": "2024-05-01", "to": "2024-05-01"}) == ["o-sold"] + [f"o-bob-{i}" for i in range(5)]
        assert by(**{"from": "2024-05-02"}) == []
        # In Shanghai (UTC+8) 12:00 UTC on 1 May is 20:00 the same day: still the 1st.
        assert len(by(**{"from": "2024-05-01", "to": "2024-05-01", "tz": "Asia/Shanghai"})) == 6


@pytest.mark.parametrize("query, field", [
    ({"machine": "m-404"}, "machine"), ({"customer": "+8613999999999"}, "customer"), ({"customer": "ann"}, "customer"),
    ({"customer": "999"}, "customer"), ({"status": "paid-ish"}, "status"), ({"from": "yesterday"}, "from"),
    ({"to": "2024-13-01"}, "to"), ({"from": "2024-05-02", "to": "2024-05-01"}, "to"), ({"tz": "Mars/Olympus"}, "tz"),
    ({"after": "o-bob-1"}, "after"), ({"after": "2024-05-01T12:00:00+00:00~o'1"}, "after"), ({"limit": "0"}, "limit"),
    ({"limit": "x"}, "limit"), ({"limit": "201"}, "limit")])
def test_nonsense_filters_are_refused_naming_the_filter(app, cloud_obj, query, field):
    h = token(cloud_obj, "mona", "manager")
    with TestClient(app) as c:
        r = c.get("/api/v1/orders", params=query, headers=h)
    assert r.status_code in (404, 422) and r.json()["error"].startswith(f"{field}:"), r.text


def test_an_orders_money_story_and_who_may_read_it(app, cloud_obj):
    with TestClient(app) as c:
        h = token(cloud_obj, "mona", "manager")
        c.post("/api/v1/orders/o-sold/refund", json={"reason": "dented", "key": "refund-0001", "amount": "1.00"},
               headers=h)
        r = c.get("/api/v1/orders/o-sold/details", headers=h).json()
        assert (r["captured"], r["refunded"], r["refundable"], r["provider"]) == (350, 100, 250, "wallet")
        assert [(s["what"], s["amount"], s["status"]) for s in r["story"]] == [
            ("authorise", 350, "succeeded"), ("capture", 350, "succeeded"), ("refund", 100, "succeeded")]
        assert r["customer"]["phone"] == ANN and r["product"] == {"sku": "cola", "name": "Cola"}
        assert c.get("/api/v1/orders/o-nope/details", headers=h).status_code == 404
        assert c.get("/api/v1/orders", headers=token(cloud_obj, "tim", "technician")).status_code == 403
        assert c.get("/api/v1/orders").status_code == 401


def test_customers_listed_shown_blocked_and_unblocked_by_an_administrator(app, cloud_obj):
    admin, manager = token(cloud_obj, "ada", "administrator"), token(cloud_obj, "mona", "manager")
    with TestClient(app) as c:
        assert [x["name"] for x in c.get("/api/v1/customers?q=bo", headers=manager).json()["customers"]] == ["Bob"]
        assert [x["id"] for x in c.get("/api/v1/customers?q=0001", headers=manager).json()["customers"]] == [1]
        page = c.get("/api/v1/customers?limit=1", headers=manager).json()
        assert [x["id"] for x in page["customers"]] == [1] and page["next"] == "1"
        assert [x["id"] for x in c.get("/api/v1/customers?after=1", headers=manager).json()["customers"]] == [2]
        ann = c.get(f"/api/v1/customers/{ANN}", headers=manager).json()
        assert (ann["balance"], ann["blocked"], ann["mandate"], [o["id"] for o in ann["orders"]]) == \
            (650, False, None, ["o-sold"])
        before = written(cloud_obj)
        assert c.post("/api/v1/customers/1/block", json={"reason": "chargebacks"}, headers=manager).status_code == 403
        r = c.post("/api/v1/customers/1/block", json={"reason": "  "}, headers=admin)
        assert r.status_code == 422 and r.json()["error"].startswith("reason:")
        r = c.post("/api/v1/customers/99/block", json={"reason": "chargebacks"}, headers=admin)
        assert r.status_code == 404 and r.json()["error"].startswith("customer:")
        assert written(cloud_obj) == before
        r = c.post("/api/v1/customers/1/block", json={"reason": "chargebacks"}, headers=admin).json()
        assert (r["blocked"], r["blocked_reason"], r["changed"]) == (True, "chargebacks", True)
        assert c.post("/api/v1/customers/1/block", json={"reason": "again"}, headers=admin).json()["changed"] is False
        assert c.post("/api/v1/customers/1/unblock", json={}, headers=admin).json()["blocked"] is False
    with cloud_obj.engine.connect() as conn:
        assert [(a["action"], a["change"]) for a in audit.query(conn, object_kind="customer")] in (
            [("customer.unblock", {"reason": ""}), ("customer.block", {"reason": "chargebacks"})],
            [("customer.block", {"reason": "chargebacks"}), ("customer.unblock", {"reason": ""})])


def test_a_blocked_customer_cannot_buy_and_can_again_once_unblocked(app, cloud_obj):
    admin = token(cloud_obj, "ada", "administrator")
    with TestClient(app, follow_redirects=False) as c:
        c.post("/api/v1/customers/1/block", json={"reason": "chargebacks"}, headers=admin)
        phone = TestClient(app, follow_redirects=False)
        phone.cookies.set(COOKIE, CookieSigner(b"k" * 32).sign("1"))
        assert phone.get(f"/q/{qrtoken.make('m-1', SECRET.encode(), time.time(), 5)}").status_code in (200, 303)
        r = post_form(phone, "/m/m-1/buy", {"slot": "A1", "key": "buy-key-0001"})
        assert r.status_code == 409 and "Your account is blocked from buying" in r.text
        with cloud_obj.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(orders.orders)
                                .where(orders.orders.c.customer_id == 1)).scalar() == 1  # o-sold only
            assert cloud_obj.provider.balance(conn, 1, "CNY") == 650
        c.post("/api/v1/customers/1/unblock", json={}, headers=admin)
        r = post_form(phone, "/m/m-1/buy", {"slot": "A1", "key": "buy-key-0002"})
        assert r.status_code == 303 and r.headers["location"].startswith("/orders/o"), r.text


# -- the pages ----------------------------------------------------------------------------------------------

def test_the_orders_page_searches_and_pages_on(app, cloud_obj):
    c = signed_in(app, cloud_obj, "mona", "manager")
    html = c.get("/staff/orders").text
    assert 'href="/staff/orders"' in html and 'href="/staff/customers"' in html  # in the navigation
    assert "o-sold" in html and "o-bob-4" in html
    html = c.get("/staff/orders", params={"customer": BOB, "status": "failed"}).text
    assert "o-bob-0" in html and "o-sold" not in html
    html = c.get("/staff/orders", params={"machine": "m-2", "from": "2024-05-01", "to": "2024-05-01"}).text
    assert all(f"o-bob-{i}" in html for i in range(5))
    assert "No orders match." in c.get("/staff/orders", params={"from": "2030-01-01"}).text
    for q, field, words in (({"customer": "+8613999999999"}, "customer", "no customer"),
                            ({"status": "nonsense"}, "status", "one of"), ({"from": "01/05/2024"}, "from", "not a date"),
                            ({"machine": "m-404"}, "machine", "no machine"), ({"tz": "Nowhere"}, "tz", "time zone")):
        r = c.get("/staff/orders", params=q)
        assert r.status_code == 422 and words in error_next_to(r.text, field), (q, r.text)
    assert signed_in(app, cloud_obj, "tim", "technician").get("/staff/orders").status_code == 403


def test_a_refund_from_the_order_page(app, cloud_obj):
    c = signed_in(app, cloud_obj, "mona", "manager")
    html = c.get("/staff/orders/o-sold").text
    assert 'id="refund-form"' in html and "authorise" in html and "capture" in html
    key = re.search(r'name="key" value="([0-9a-f]+)"', html).group(1)
    before = written(cloud_obj)
    for form, field, words in (({"amount": "lots", "reason": "dented"}, "amount", "not an amount"),
                               ({"amount": "9.00", "reason": "dented"}, "amount", "Amount: ¥9.00 is more than the ¥3.50 left to refund"),
                               ({"amount": "0", "reason": "dented"}, "amount", "more than zero"),
                               ({"amount": "1.00", "reason": ""}, "reason", "say why")):
        r = c.post("/staff/orders/o-sold/refund", data={**form, "key": key})
        assert r.status_code in (409, 422) and words in error_next_to(r.text, field), (form, r.text)
        assert f'value="{form["amount"]}"' in r.text  # what they typed is kept
    assert written(cloud_obj) == before
    r = c.post("/staff/orders/o-sold/refund", data={"amount": "1.00", "reason": "dented can", "key": key})
    assert r.status_code == 303 and r.headers["location"] == "/staff/orders/o-sold?refunded=1"
    again = c.post("/staff/orders/o-sold/refund", data={"amount": "1.00", "reason": "dented can", "key": key})
    assert again.status_code == 303  # the same form sent twice refunds once
    html = c.get("/staff/orders/o-sold?refunded=1").text
    assert "The refund is recorded." in html and "Up to CN¥2.50 can be refunded." in html, html[-3000:]
    with cloud_obj.engine.connect() as conn:
        assert cloud_obj.provider.balance(conn, 1, "CNY") == 750 and unbalanced_txns(conn) == []
        assert [a["change"]["reason"] for a in audit.query(conn, action="order.refund")] == ["dented can"]
    r = c.post("/staff/orders/o-nope/refund", data={"amount": "1", "reason": "x", "key": "k" * 16})
    assert r.status_code == 404
    # A failed order has nothing to refund: no form, and a forged post is refused next to the order.
    assert 'id="refund-form"' not in c.get("/staff/orders/o-bob-0").text
    r = c.post("/staff/orders/o-bob-0/refund", data={"amount": "1", "reason": "x", "key": "k" * 16})
    assert r.status_code == 409 and 'id="error-order"' in r.text
    assert c.get("/staff/orders/o-nope").status_code == 404


def test_the_customer_pages_and_blocking(app, cloud_obj):
    admin = signed_in(app, cloud_obj, "ada", "administrator")
    manager = signed_in(app, cloud_obj, "mona", "manager")
    html = manager.get("/staff/customers", params={"q": "Bob"}).text
    assert "Bob" in html and BOB in html and ANN not in html
    assert manager.get("/staff/customers", params={"after": "x"}).status_code == 422
    html = manager.get("/staff/customers/1").text
    assert "CN¥6.50" in html and "o-sold" in html and "May buy" in html and 'id="block-form"' not in html
    assert manager.post("/staff/customers/1/block", data={"change": "block", "reason": "x"}).status_code == 403
    assert admin.get("/staff/customers/999").status_code == 404
    assert admin.get(f"/staff/customers/{ANN}").status_code == 200
    before = written(cloud_obj)
    r = admin.post("/staff/customers/1/block", data={"change": "block", "reason": ""})
    assert r.status_code == 422 and "say why" in error_next_to(r.text, "reason")
    assert admin.post("/staff/customers/999/block", data={"change": "block", "reason": "x"}).status_code == 404
    assert admin.post("/staff/customers/1/block", data={"change": "explode"}).status_code == 422
    assert written(cloud_obj) == before
    assert admin.post("/staff/customers/1/block", data={"change": "block", "reason": "chargebacks"}).status_code == 303
    html = admin.get("/staff/customers/1").text
    assert "Blocked from buying since" in html and "chargebacks" in html and "Unblock" in html
    assert "Blocked" in admin.get("/staff/customers").text
    assert admin.post("/staff/customers/1/block", data={"change": "unblock"}).status_code == 303
    assert "May buy" in admin.get("/staff/customers/1").text


def test_the_pages_in_chinese(app, cloud_obj):
    c = signed_in(app, cloud_obj, "ada", "administrator", lang="zh-CN")
    assert "订单" in c.get("/staff/orders").text
    assert "退款" in c.get("/staff/orders/o-sold").text
    html = c.get("/staff/customers/1").text
    assert "钱包余额" in html and "禁止购买" in html


# -- vendctl ------------------------------------------------------------------------------------------------

@pytest.fixture
def vendctl(app, cloud_obj, monkeypatch, capsys):
    headers = {"manager": token(cloud_obj, "mona", "manager"), "administrator": token(cloud_obj, "ada", "administrator")}
    client = TestClient(app)

    def run(*argv, role="manager"):
        through = ThroughTestClient(client, headers[role])
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: through))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_vendctl_orders_and_customers(vendctl, cloud_obj):
    code, out, err = vendctl("orders", "--customer", BOB, "--limit", "2")
    assert code == 0, err
    assert "o-bob-0" in out and "o-bob-1" in out and "o-bob-2" not in out and "more: --after " in out
    after = out.rsplit("--after ", 1)[1].strip()
    code, out, _ = vendctl("orders", "--customer", BOB, "--limit", "2", "--after", after, "--json")
    assert [o["id"] for o in json.loads(out)["orders"]] == ["o-bob-2", "o-bob-3"]
    code, _, err = vendctl("orders", "--status", "bogus")
    assert code == 1 and "status:" in err
    code, out, _ = vendctl("orders", "refund", "o-sold", "--amount", "1.00", "--reason", "dented", "--key", "cli-k-0001")
    assert code == 0 and out.startswith("order o-sold: refunded ¥1.00")
    code, out, _ = vendctl("orders", "show", "o-sold")
    assert code == 0 and "captured ¥3.50, refunded ¥1.00, ¥2.50 left to refund" in out and "refund" in out
    code, _, err = vendctl("orders", "refund", "o-sold")
    assert code == 1 and "--reason" in err
    code, _, err = vendctl("customers", "block", "1", "--reason", "fraud")
    assert code == 1 and "403" in err
    code, out, _ = vendctl("customers", "block", "1", "--reason", "fraud", role="administrator")
    assert code == 0 and out.strip() == "customer 1 Ann: blocked (fraud)"
    code, out, _ = vendctl("customers", "--search", "Ann")
    assert code == 0 and "BLOCKED" in out
    code, out, _ = vendctl("customers", "show", ANN)
    assert code == 0 and "BLOCKED since" in out and "wallet ¥7.50" in out
    code, out, _ = vendctl("customers", "unblock", "1", role="administrator")
    assert code == 0 and out.strip() == "customer 1 Ann: may buy"
    code, _, err = vendctl("customers", "show", "999")
    assert code == 1 and "404" in err
