"""A customer pays through the sandbox provider, a separate HTTP service that confirms by signed webhook,
and buys from a simulated machine; a manager refunds through vendctl. All real processes: the broker,
`vend-cloud`, `python -m cloud.payments.sandbox` and a `vend-controller`."""

import itertools
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from tests.e2e.harness import Cloud, Customer, Machine, SandboxProvider, free_port, wait_until

SECRET = "e2e-sandbox-webhook-secret"
HOOK = "/api/v1/payments/webhook/sandbox"
PASSWORD = "violet-tractor-harbour-91"
_phones = itertools.count(13900000001)


@pytest.fixture(scope="module")
def sandbox_port():
    return free_port()


@pytest.fixture(scope="module")
def cloud(database, broker, tmp_path_factory, sandbox_port):
    """The cloud with the sandbox as a second provider (this module's own, in place of conftest's)."""
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")), db_url=database,
              extra=("--sandbox-url", f"http://127.0.0.1:{sandbox_port}", "--sandbox-confirm-timeout", "20"),
              env={"VEND_SANDBOX_SECRET": SECRET})
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def sandbox(cloud, sandbox_port, tmp_path_factory):
    s = SandboxProvider(str(tmp_path_factory.mktemp("sandbox")), cloud.url + HOOK, SECRET, delay=1.0,
                        port=sandbox_port)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def machine(cloud, broker, sandbox, tmp_path_factory):
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("machines")), "s1", drop_delay=0.2)
    # Chips at 6.13: the sandbox declines every amount ending in 13.
    cloud.api("PUT", "/api/v1/machines/s1/slots", [{"slot": "B1", "sku": "chips", "name": "Chips", "price": 613,
                                                    "currency": "CNY", "capacity": 10}])
    m.start()
    m.stock()
    yield m
    m.proc.stop()


def customer_of(cloud, machine, method: str) -> Customer:
    c = Customer(cloud, "Sandbox Customer", f"+86{next(_phones)}")
    assert c.scan(machine).status_code == 303
    r = c.register("/m/s1", method=method)
    assert r.status_code == 303 and r.headers["location"] == "/m/s1", r.text
    return c


def order_id_of(response) -> str:
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def vendctl(cloud, *argv, token=None, stdin=""):
    env = {**os.environ, "VEND_CLOUD_URL": cloud.url, "VEND_TOKEN": token or cloud.token}
    p = subprocess.run([sys.executable, "-m", "cloud.cli", *argv], input=stdin, capture_output=True, text=True,
                       env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def sale(cloud, machine, sandbox):
    """A sandbox customer's purchase of cola (3.50), followed from the first page to the capture."""
    customer = customer_of(cloud, machine, "sandbox")
    assert "Paying with the payment provider" in customer.http.get("/m/s1").text
    order_id = order_id_of(customer.buy(machine, "A2"))
    first = customer.order_status(order_id)
    started = [e for e in machine.events_of("vend.started") if e["order_id"] == order_id]
    settled = customer.wait_settled(order_id)
    wait_until(lambda: sandbox.operations(order_id, "capture"), 10, "the capture to reach the sandbox")
    return customer, order_id, first, started, settled


def test_the_sandbox_confirms_by_webhook_then_the_machine_drops_and_the_capture_arrives_once(cloud, machine,
                                                                                             sandbox, sale):
    customer, order_id, first, started, settled = sale
    # Until the webhook (1 s after the authorisation), the order waits and the machine is not asked.
    assert (first["status"], first["settled"]) == ("authorising", False)
    assert "confirmed" in first["text"] and started == []
    assert settled["status"] == "succeeded"
    assert "Take your product" in customer.http.get(f"/orders/{order_id}").text
    time.sleep(1.0)  # anything sent twice would have arrived by now
    payment = sandbox.payment(order_id)
    assert (payment["status"], payment["captured"]) == ("captured", 350)
    assert [o["key"] for o in payment["operations"]] == [f"authorise:{order_id}", f"capture:{order_id}"]
    assert [e["delivered"] for e in sandbox.events(order_id)] == [True]
    assert [e["order_id"] for e in machine.events_of("vend.started")].count(order_id) == 1
    assert cloud.db("SELECT op, status FROM sandbox_ops WHERE order_id = ? ORDER BY id", (order_id,)) == [
        ("authorise", "succeeded"), ("capture", "succeeded")]
    assert cloud.db("SELECT kind FROM txns WHERE order_id = ?", (order_id,)) == [("capture",)]
    sales = cloud.api("GET", "/api/v1/sales?machine=s1")["sales"]
    assert [s["amount"] for s in sales if s["order_id"] == order_id] == [350]


def test_a_declined_amount_leaves_the_order_declined_and_nothing_captured(cloud, machine, sandbox):
    customer = customer_of(cloud, machine, "sandbox")
    order_id = order_id_of(customer.buy(machine, "B1"))
    status = customer.wait_settled(order_id)
    assert status["status"] == "declined" and status["text"] == "Payment declined. You have not been charged."
    assert "Payment declined. You have not been charged." in customer.http.get(f"/orders/{order_id}").text
    time.sleep(0.5)
    payment = sandbox.payment(order_id)
    assert payment["status"] == "declined" and [o["op"] for o in payment["operations"]] == ["authorise"]
    assert not [e for e in machine.events_of("vend.started") if e["order_id"] == order_id]
    assert cloud.db("SELECT COUNT(*) FROM txns WHERE order_id = ?", (order_id,)) == [(0,)]


def test_a_replayed_or_forged_webhook_changes_nothing(cloud, sandbox, sale):
    _, order_id, *_ = sale
    event = sandbox.events(order_id)[0]
    headers, body = event["last"]["headers"], event["last"]["body"].encode()
    before = cloud.api("GET", "/api/v1/health")["counts"]
    r = httpx.post(cloud.url + HOOK, content=body, headers=headers, timeout=10)  # the same bytes again
    assert r.status_code == 200 and r.json()["duplicate"] is True
    forged = body.replace(b'"amount":350', b'"amount":1')
    r = httpx.post(cloud.url + HOOK, content=forged, headers=headers, timeout=10)
    assert r.status_code == 401
    assert httpx.post(f"{sandbox.url}/v1/events/{event['event']['id']}/resend", json={}, timeout=10).status_code == 202
    counts = wait_until(lambda: (c := cloud.api("GET", "/api/v1/health")["counts"]).get("webhook_duplicates", 0)
                        >= before.get("webhook_duplicates", 0) + 2 and c, 10, "the resent webhook")
    assert counts["webhook_refused_signature"] == before.get("webhook_refused_signature", 0) + 1
    assert cloud.db("SELECT status FROM orders WHERE id = ?", (order_id,)) == [("succeeded",)]
    assert len(sandbox.operations(order_id, "capture")) == 1


def test_a_manager_refunds_through_vendctl_once_and_the_audit_trail_has_it(cloud, machine, sandbox, sale):
    customer, order_id, *_ = sale
    code, out, err = vendctl(cloud, "people", "add", "mia", "--role", "manager", "--password-stdin",
                             stdin=PASSWORD + "\n")
    assert code == 0, err
    r = httpx.post(cloud.url + "/api/v1/login", json={"username": "mia", "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    token = httpx.post(cloud.url + "/api/v1/tokens", json={"name": "refunds"}, cookies=r.cookies,
                       timeout=10).json()["token"]
    argv = ("refund", order_id, "--reason", "customer says the can was warm", "--amount", "1.00", "--key",
            "e2e-refund-0001")
    code, out, err = vendctl(cloud, *argv, token=token)
    assert code == 0, err
    assert out.startswith(f"order {order_id}: refunded ¥1.00; refunded ¥1.00 of ¥3.50 captured")
    code, out, err = vendctl(cloud, *argv, token=token)
    assert code == 0 and "asked before" in out, err
    code, _, err = vendctl(cloud, "refund", order_id, "--reason", "too much", "--amount", "3.00", token=token)
    assert code == 1 and "409" in err and "more than the ¥2.50 left" in err  # money written as money
    assert [o["amount"] for o in sandbox.operations(order_id, "refund")] == [100]
    assert sandbox.payment(order_id)["refunded"] == 100
    assert "Refunded: CN¥1.00" in customer.http.get(f"/orders/{order_id}").text
    code, out, _ = vendctl(cloud, "audit", "--json", "--action", "order.refund", "--object", order_id)
    [entry] = json.loads(out)
    assert entry["via"] == "token" and entry["user_id"] is not None
    assert entry["change"] == {"amount": 100, "currency": "CNY", "key": "e2e-refund-0001", "provider": "sandbox",
                               "reason": "customer says the can was warm"}


def test_a_wallet_sale_refunded_through_vendctl_shows_in_the_customers_history(cloud, machine):
    customer = customer_of(cloud, machine, "wallet")
    assert customer.topup("10").status_code == 303
    order_id = order_id_of(customer.buy(machine, "A1"))
    assert customer.wait_settled(order_id)["status"] == "succeeded"
    assert customer.balance() == "CN¥8.00"
    code, out, err = vendctl(cloud, "refund", order_id, "--reason", "wrong product")
    assert code == 0 and "refunded ¥2.00" in out, err
    assert customer.balance() == "CN¥10.00"
    code, out, _ = vendctl(cloud, "wallet", customer.phone, "--json")
    wallet = json.loads(out)
    assert wallet["balance"] == 1000
    assert [(h["kind"], h["amount"]) for h in wallet["history"]][:2] == [("refund", 200), ("authorise", -200)]
    assert "refund" in customer.http.get("/wallet").text
