"""A customer buys from a simulated machine over a real broker, and is charged exactly once.

Every test here runs the real programs: the broker, `vend-cloud` and two `vend-controller` processes.
"""

import itertools
import json
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from tests.e2e.harness import Customer, wait_until

from protocol import topics
from protocol.messages import Command, CommandResult, format_time

_phones = itertools.count(13800000001)


@pytest.fixture
def customer(cloud, machines):
    m1, _ = machines
    c = Customer(cloud, "Test Customer", f"+86{next(_phones)}")
    r = c.scan(m1)
    assert r.status_code == 303 and r.headers["location"].startswith("/register")
    r = c.register("/m/m1")
    assert r.status_code == 303 and r.headers["location"] == "/m/m1"
    assert c.topup("20").status_code == 303
    assert c.balance() == "CN¥20.00"
    return c


def order_id_of(response) -> str:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("/orders/"), location
    return location.rsplit("/", 1)[1]


def on_result(results: list):
    """A paho callback keeping the machines' command results. amqtt (the embedded broker) also delivers
    retained messages of topics the client never subscribed to, so the topic is checked here."""
    def callback(client, userdata, msg):
        if msg.topic.endswith("/cmd/result"):
            results.append(CommandResult.decode(msg.payload))
    return callback


def captures(cloud, order_id: str) -> int:
    return cloud.db("SELECT COUNT(*) FROM txns WHERE kind = 'capture' AND order_id = ?", (order_id,))[0][0]


def test_purchase_is_captured_once(cloud, machines, customer):
    m1, _ = machines
    count_before = next(s for s in cloud.api("GET", "/api/v1/machines/m1/slots") if s["slot"] == "A2")["count"]
    order_id = order_id_of(customer.buy(m1, "A2", key="same-key-twice"))
    status = customer.wait_settled(order_id)
    assert status["status"] == "succeeded"
    assert "Take your product" in customer.http.get(f"/orders/{order_id}").text
    assert customer.balance() == "CN¥16.50"
    # The same form sent again (a double tap, a retry on a bad connection) is the same order.
    assert order_id_of(customer.buy(m1, "A2", key="same-key-twice")) == order_id
    time.sleep(1.0)
    assert customer.balance() == "CN¥16.50"
    assert captures(cloud, order_id) == 1
    assert [e["order_id"] for e in m1.events_of("vend.started")].count(order_id) == 1
    sales = cloud.api("GET", "/api/v1/sales?machine=m1")["sales"]
    assert [s["amount"] for s in sales if s["order_id"] == order_id] == [350]
    slot = next(s for s in cloud.api("GET", "/api/v1/machines/m1/slots") if s["slot"] == "A2")
    assert slot["count"] == count_before - 1


def test_jammed_slot_is_voided_and_flagged(cloud, machines, customer):
    _, m2 = machines
    customer.scan(m2)
    order_id = order_id_of(customer.buy(m2, "B2"))
    status = customer.wait_settled(order_id, timeout=40)
    assert status["status"] == "failed"
    assert "not been charged" in status["text"]
    assert customer.balance() == "CN¥20.00"
    assert captures(cloud, order_id) == 0
    failed = [e for e in m2.events_of("vend.failed") if e["order_id"] == order_id]
    assert len(failed) == 1 and failed[0]["turns"] == 2
    slot = next(s for s in cloud.api("GET", "/api/v1/machines/m2/slots") if s["slot"] == "B2")
    assert slot["flagged"] is True
    assert "Out of service" in customer.http.get("/m/m2").text


def test_controller_killed_mid_vend_records_unknown_and_does_not_charge(cloud, machines, customer):
    _, m2 = machines
    customer.scan(m2)
    order_id = order_id_of(customer.buy(m2, "A1"))
    wait_until(lambda: customer.order_status(order_id)["status"] == "vending", 10, "the vend to start")
    m2.proc.kill()  # SIGKILL: no chance to clean up, as in a power cut
    m2.start()
    status = customer.wait_settled(order_id)
    assert status["status"] == "unknown"
    assert customer.balance() == "CN¥20.00"
    assert captures(cloud, order_id) == 0
    unknown = [e for e in m2.events_of("vend.unknown") if e["order_id"] == order_id]
    assert len(unknown) == 1


def test_redelivered_vend_command_does_not_vend_twice(broker, cloud, machines, customer):
    m1, _ = machines
    order_id = order_id_of(customer.buy(m1, "A1"))
    assert customer.wait_settled(order_id)["status"] == "succeeded"
    results = []
    client = broker.client("e2e-redeliver")
    client.on_message = on_result(results)
    client.subscribe(topics.topic("m1", "cmd/result"), qos=1)
    time.sleep(0.5)
    now = datetime.now(timezone.utc)
    again = Command(f"v-{order_id}", "vend", format_time(now), format_time(now + timedelta(seconds=30)),
                    {"order_id": order_id, "slot": "A1"})
    client.publish(topics.topic("m1", "cmd"), again.encode(), qos=1).wait_for_publish(5)
    answer = wait_until(lambda: [r for r in results if r.id == again.id], 10, "the machine to answer")[0]
    client.loop_stop()
    client.disconnect()
    assert answer.status == "succeeded"  # what it did the first time; the motor did not run again
    assert [e["order_id"] for e in m1.events_of("vend.started")].count(order_id) == 1
    assert customer.balance() == "CN¥18.00"
    assert captures(cloud, order_id) == 1


def test_expired_vend_command_is_refused_and_recorded(broker, machines):
    m1, _ = machines
    results = []
    client = broker.client("e2e-expired")
    client.on_message = on_result(results)
    client.subscribe(topics.topic("m1", "cmd/result"), qos=1)
    time.sleep(0.5)
    then = datetime.now(timezone.utc) - timedelta(minutes=5)
    stale = Command("v-stale-order", "vend", format_time(then), format_time(then + timedelta(seconds=30)),
                    {"order_id": "ostale", "slot": "A1"})
    client.publish(topics.topic("m1", "cmd"), stale.encode(), qos=1).wait_for_publish(5)
    answer = wait_until(lambda: [r for r in results if r.id == stale.id], 10, "the machine to answer")[0]
    client.loop_stop()
    client.disconnect()
    assert (answer.status, answer.reason) == ("rejected", "expired")
    assert [e for e in m1.events_of("command.rejected") if e["cmd_id"] == stale.id][0]["reason"] == "expired"
    assert not [e for e in m1.events_of("vend.started") if e["order_id"] == "ostale"]


def test_machine_that_never_answers_is_voided_and_refuses_the_late_command(cloud, machines, customer):
    m1, _ = machines
    m1.proc.signal(signal.SIGSTOP)  # alive to the broker, deaf to everything
    try:
        order_id = order_id_of(customer.buy(m1, "B1"))
        status = customer.wait_settled(order_id, timeout=30)
    finally:
        m1.proc.signal(signal.SIGCONT)
    assert status["status"] == "expired"
    assert customer.balance() == "CN¥20.00"
    # The command reaches the machine late, and the machine refuses it.
    rejected = wait_until(lambda: [e for e in m1.events_of("command.rejected") if e.get("order_id") == order_id],
                          15, "the late command to be refused")
    assert rejected[0]["reason"] == "expired"
    assert not [e for e in m1.events_of("vend.started") if e["order_id"] == order_id]
    time.sleep(1.0)
    assert customer.order_status(order_id)["status"] == "expired"
    assert captures(cloud, order_id) == 0


def test_sold_out_and_offline_pages(cloud, machines, customer):
    m1, _ = machines
    assert m1.service("restock", "A1=0")["ok"]
    wait_until(lambda: next(s for s in cloud.api("GET", "/api/v1/machines/m1/slots") if s["slot"] == "A1")["count"] == 0,
               10, "the empty slot to reach the cloud")
    page = customer.http.get("/m/m1").text
    assert "Sold out" in page
    r = customer.buy(m1, "A1")
    assert r.status_code == 409 and "sold out" in r.text
    assert customer.balance() == "CN¥20.00"
    assert json.loads(json.dumps(m1.service("restock", "A1=10")))["ok"]
