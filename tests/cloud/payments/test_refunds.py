"""Refunds by a manager and a customer's wallet for staff (cloud/payments/routes.py), through the HTTP API
and through vendctl."""

import json

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.cli
import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.sales import orders
from cloud.core.db import utcnow
from cloud.payments import Payments, Sandbox, txns
from cloud.people import audit, auth, staff
from tests.cloud_fixtures import (NOW, FakeSandbox, ThroughTestClient, add_customer, add_machine, add_sale, db_url, idle_cloud, unbalanced_txns)

BOOT = "admintoken"


@pytest.fixture
def cloud_obj(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        add_machine(conn)
        add_sale(conn, add_customer(conn, phone="+8613800000001"))  # o-sold: 3.50, from a wallet of 10.00
    yield obj
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, BOOT, b"k" * 32), follow_redirects=False) as c:
        yield c


@pytest.fixture
def manager(cloud_obj):
    """A manager's API token headers, and their user id."""
    with cloud_obj.engine.begin() as conn:
        user_id = staff.add_staff(conn, "mona", "manager", utcnow(), None, False, None)
        return {"Authorization": f"Bearer {auth.new_token(conn, user_id, 'test', utcnow())[1]}"}, user_id


def refund(client, headers, order_id="o-sold", **body):
    return client.post(f"/api/v1/orders/{order_id}/refund", json={"reason": "the can was dented", "key": "refund-0001",
                                                                 **body}, headers=headers)


def books(cloud_obj):
    """What a refund could change: the journal and the audit trail."""
    with cloud_obj.engine.connect() as conn:
        return (conn.execute(sa.select(sa.func.count()).select_from(txns)).scalar(),
                cloud_obj.provider.balance(conn, 1, "CNY"), len(audit.query(conn, limit=1000)))


def test_a_full_refund_by_default_goes_back_to_the_wallet_with_an_audit_row(client, cloud_obj, manager):
    headers, user_id = manager
    r = refund(client, headers)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("amount", "status", "created", "captured", "refunded", "provider")} == \
        {"amount": 350, "status": "succeeded", "created": True, "captured": 350, "refunded": 350, "provider": "wallet"}
    with cloud_obj.engine.connect() as conn:
        assert cloud_obj.provider.balance(conn, 1, "CNY") == 1000
        assert unbalanced_txns(conn) == []
        rows = audit.query(conn, action="order.refund")
    assert [(a["user_id"], a["object_id"], a["change"]) for a in rows] == [
        (user_id, "o-sold", {"amount": 350, "currency": "CNY", "reason": "the can was dented", "key": "refund-0001",
                             "provider": "wallet"})]


def test_a_partial_refund_in_the_currency_then_the_rest(client, cloud_obj, manager):
    headers, _ = manager
    assert refund(client, headers, amount="1.50").json()["amount"] == 150
    r = refund(client, headers, key="refund-0002")
    assert (r.json()["amount"], r.json()["refunded"]) == (200, 350)
    assert books(cloud_obj)[1] == 1000


def test_a_refund_asked_twice_changes_nothing_the_second_time(client, cloud_obj, manager):
    headers, _ = manager
    assert refund(client, headers, amount=100).json()["created"] is True
    before = books(cloud_obj)
    for again in (refund(client, headers, amount=100), refund(client, headers)):
        assert again.status_code == 200 and again.json()["created"] is False and again.json()["amount"] == 100
    assert books(cloud_obj) == before
    r = refund(client, headers, amount=101)
    assert r.status_code == 409 and "refund-0001" in r.json()["error"]
    assert books(cloud_obj) == before


def test_more_than_was_captured_is_refused_and_changes_nothing(client, cloud_obj, manager):
    headers, _ = manager
    before = books(cloud_obj)
    r = refund(client, headers, amount=351)
    assert r.status_code == 409 and r.json()["error"] == "amount: ¥3.51 is more than the ¥3.50 left to refund (¥0.00 of ¥3.50 refunded already)"
    assert refund(client, headers, amount=200, key="refund-0002").status_code == 200
    r = refund(client, headers, amount="1.51", key="refund-0003")
    assert r.status_code == 409 and "¥1.51 is more than the ¥1.50 left" in r.json()["error"]
    assert books(cloud_obj)[0] == before[0] + 1


@pytest.mark.parametrize("body,message", [
    ({"reason": ""}, "reason"), ({"reason": "   "}, "reason"), ({"reason": "x" * 201}, "reason"),
    ({"reason": "tab\there"}, "reason"), ({"key": "short"}, "key"), ({"key": "has space 123"}, "key"),
    ({"amount": 0}, "more than zero"), ({"amount": -5}, "more than zero"), ({"amount": "abc"}, "not an amount"),
    ({"amount": "0.00"}, "more than zero"), ({"amount": 1.5}, "amount"), ({"amount": True}, "amount"),
    ({"surprise": 1}, "surprise"),
])
def test_a_bad_refund_request_is_422_and_changes_nothing(client, cloud_obj, manager, body, message):
    headers, _ = manager
    before = books(cloud_obj)
    r = refund(client, headers, **body)
    assert r.status_code == 422 and message in r.json()["error"], r.text
    assert books(cloud_obj) == before


def test_a_refund_of_no_sale_or_a_sale_that_did_not_drop(client, cloud_obj, manager):
    headers, _ = manager
    assert refund(client, headers, order_id="o-nope").status_code == 404
    with cloud_obj.engine.begin() as conn:
        conn.execute(orders.orders.update().where(orders.orders.c.id == "o-sold").values(status="failed"))
    r = refund(client, headers)
    assert r.status_code == 409 and "only a sale whose product dropped" in r.json()["error"]


def test_a_technician_cannot_refund(client, cloud_obj):
    with cloud_obj.engine.begin() as conn:
        tech = staff.add_staff(conn, "tim", "technician", utcnow(), None, False, None)
        token = auth.new_token(conn, tech, "t", utcnow())[1]
    before = books(cloud_obj)
    r = refund(client, {"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and books(cloud_obj) == before


def test_a_sandbox_sale_is_refunded_at_the_sandbox(cloud_obj, manager):
    fake = FakeSandbox()
    sandbox = Sandbox(fake.client())
    cloud_obj.provider = Payments(sandbox=sandbox)
    with cloud_obj.engine.begin() as conn:
        conn.execute(orders.orders.update().where(orders.orders.c.id == "o-sold").values(provider="sandbox"))
        order = orders.get(conn, "o-sold")
        sandbox.authorise(conn, order, order.id, NOW)
    sandbox.deliver_due(cloud_obj.engine, clock=lambda: NOW)
    with cloud_obj.engine.begin() as conn:
        from cloud.payments.webhook import Event

        sandbox.confirm(conn, Event("evt-1", "authorisation.succeeded", order.id, 350, "CNY", ""), NOW)
        sandbox.capture(conn, order, order.id, NOW)
    sandbox.deliver_due(cloud_obj.engine, clock=lambda: NOW)
    sandbox.start(cloud_obj.engine)
    try:
        with TestClient(cloud.app.create_app(cloud_obj, BOOT, b"k" * 32)) as client:
            r = refund(client, manager[0], amount=120)
    finally:
        sandbox.stop()
    assert r.status_code == 200 and (r.json()["status"], r.json()["provider"]) == ("succeeded", "sandbox")
    assert fake.books.payments["o-sold"]["refunded"] == 120
    assert [o["amount"] for o in fake.operations("o-sold", "refund")] == [120]


def test_a_customers_wallet_by_id_or_phone(client, cloud_obj, manager):
    headers, _ = manager
    refund(client, headers, amount=100)
    r = client.get("/api/v1/customers/1/wallet", headers=headers)
    assert r.status_code == 200
    w = r.json()
    assert (w["customer"]["phone"], w["balance"], w["currency"]) == ("+8613800000001", 750, "CNY")
    assert [(h["kind"], h["amount"], h["order_id"]) for h in w["history"]] == [
        ("refund", 100, "o-sold"), ("authorise", -350, "o-sold"), ("topup", 1000, None)]
    assert client.get("/api/v1/customers/+8613800000001/wallet", headers=headers).json() == w
    assert client.get("/api/v1/customers/+86 138-0000-0001/wallet", headers=headers).json() == w
    assert client.get("/api/v1/customers/2/wallet", headers=headers).status_code == 404
    assert client.get("/api/v1/customers/+8613800000009/wallet", headers=headers).status_code == 404
    assert client.get("/api/v1/customers/ann/wallet", headers=headers).status_code == 422
    assert client.get("/api/v1/customers/1/wallet?currency=cny", headers=headers).status_code == 422


def test_the_customer_sees_the_refund_in_the_wallet_history_and_on_the_order(client, cloud_obj, manager):
    refund(client, manager[0], amount=100)
    from cloud.people import CookieSigner, COOKIE

    client.cookies.set(COOKIE, CookieSigner(b"k" * 32).sign("1"))
    page = client.get("/wallet").text
    assert "refund" in page and "CN¥1.00" in page and "CN¥7.50" in page
    assert "Refunded: CN¥1.00" in client.get("/orders/o-sold").text


# -- vendctl -----------------------------------------------------------------------------------------

@pytest.fixture
def vendctl(client, manager, monkeypatch, capsys):
    def run(*argv):
        through = ThroughTestClient(client, manager[0])
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: through))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_vendctl_refund_and_wallet(vendctl, cloud_obj):
    code, out, err = vendctl("refund", "o-sold", "--reason", "dented can", "--amount", "1.00", "--key", "cli-key-0001")
    assert code == 0, err
    assert out.strip() == "order o-sold: refunded ¥1.00; refunded ¥1.00 of ¥3.50 captured (key cli-key-0001)"
    code, out, _ = vendctl("refund", "o-sold", "--reason", "dented can", "--amount", "1.00", "--key", "cli-key-0001")
    assert code == 0 and "was asked before (key cli-key-0001)" in out and "nothing more moved" in out
    code, _, err = vendctl("refund", "o-sold", "--reason", "again", "--amount", "9.00")
    assert code == 1 and "409" in err and "¥9.00 is more than the ¥2.50 left" in err
    code, out, _ = vendctl("refund", "o-sold", "--reason", "the rest", "--json")
    assert code == 0 and json.loads(out)["amount"] == 250
    code, out, _ = vendctl("wallet", "+8613800000001")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "customer 1 Ann (+8613800000001, pays by wallet): balance ¥10.00"
    assert lines[1].split() == ["AT", "(UTC)", "WHAT", "ORDER", "AMOUNT"] and "refund" in lines[2]
    code, out, _ = vendctl("wallet", "1", "--json")
    assert [h["kind"] for h in json.loads(out)["history"]] == ["refund", "refund", "authorise", "topup"]
    code, _, err = vendctl("wallet", "77")
    assert code == 1 and "404" in err


# -- 12 #5: an administrator's credit, the only free money outside the demo ----------------------------------

@pytest.fixture
def admin_of(cloud_obj):
    """API token headers of a staff member of ``role``, and their user id."""
    def make(role, name=None):
        with cloud_obj.engine.begin() as conn:
            user_id = staff.add_staff(conn, name or f"{role[:4]}-x", role, utcnow(), None, False, None)
            return {"Authorization": f"Bearer {auth.new_token(conn, user_id, 'test', utcnow())[1]}"}, user_id
    return make


def credit(client, headers, customer="1", **body):
    return client.post(f"/api/v1/customers/{customer}/wallet/credit",
                       json={"amount": "20.00", "reason": "machine kept the coin", "key": "credit-0001", **body},
                       headers=headers)


def test_an_administrator_credits_a_wallet_once_per_key_with_an_audit_row(client, cloud_obj, admin_of):
    headers, user_id = admin_of("administrator")
    r = credit(client, headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"customer_id": 1, "amount": 2000, "currency": "CNY", "key": "credit-0001", "created": True,
                        "balance": 650 + 2000}
    again = credit(client, headers)
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["balance"] == 2650
    assert credit(client, headers, customer="+8613800000001", amount=500).status_code == 409, \
        "the same key for another amount is refused"
    with cloud_obj.engine.connect() as conn:
        assert unbalanced_txns(conn) == []
        assert [h.kind for h in cloud_obj.provider.history(conn, 1, "CNY")][:1] == ["credit"]
        rows = audit.query(conn, action="wallet.credit")
    assert [(a["user_id"], a["object_kind"], a["object_id"], a["change"]) for a in rows] == [
        (user_id, "customer", "1", {"amount": 2000, "currency": "CNY", "reason": "machine kept the coin",
                                    "key": "credit-0001"})]


@pytest.mark.parametrize("role", ["manager", "technician"])
def test_only_an_administrator_may_credit(client, cloud_obj, admin_of, role):
    headers, _ = admin_of(role)
    before = books(cloud_obj)
    assert credit(client, headers).status_code == 403
    assert credit(client, {}).status_code == 401
    assert books(cloud_obj) == before


@pytest.mark.parametrize("body,field", [
    ({"amount": -500}, "amount"), ({"amount": "-5"}, "amount"), ({"amount": 0}, "amount"), ({"amount": 12.5}, "amount"),
    ({"amount": "12.345"}, "amount"), ({"amount": "lots"}, "amount"), ({"amount": True}, "amount"),
    ({"amount": 10_000_000}, "amount"), ({"reason": ""}, "reason"), ({"reason": "   "}, "reason"),
    ({"reason": None}, "reason"), ({"key": "short"}, "key"), ({"currency": "yuan"}, "currency")])
def test_a_bad_credit_is_422_naming_the_field_and_moves_nothing(client, cloud_obj, admin_of, body, field):
    headers, _ = admin_of("administrator")
    before = books(cloud_obj)
    r = credit(client, headers, **body)
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith(f"{field}"), r.json()
    assert books(cloud_obj) == before


def test_a_credit_without_a_reason_or_for_no_customer_is_refused(client, cloud_obj, admin_of):
    headers, _ = admin_of("administrator")
    r = client.post("/api/v1/customers/1/wallet/credit", json={"amount": 100, "key": "credit-0002"}, headers=headers)
    assert r.status_code == 422 and r.json()["error"].startswith("reason")
    assert credit(client, headers, customer="77").status_code == 404
    assert credit(client, headers, customer="ann").status_code == 422


def test_vendctl_wallet_credit(client, cloud_obj, admin_of, monkeypatch, capsys):
    headers, _ = admin_of("administrator")

    def run(*argv):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, headers)))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("wallet", "credit", "+8613800000001", "5.00", "--reason", "goodwill", "--key", "cli-credit-1")
    assert code == 0, err
    assert out.strip() == "customer 1: credited ¥5.00; balance ¥11.50 (key cli-credit-1)"
    code, out, _ = run("wallet", "credit", "1", "5.00", "--reason", "goodwill", "--key", "cli-credit-1")
    assert code == 0 and "made before (key cli-credit-1)" in out and "balance ¥11.50" in out
    code, _, err = run("wallet", "credit", "1", "5.00")
    assert code == 1 and "--reason" in err
    code, out, _ = run("wallet", "1", "--json")
    assert json.loads(out)["history"][0]["kind"] == "credit"
