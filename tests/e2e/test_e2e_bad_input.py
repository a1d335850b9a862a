"""Bad input from the network is refused with a reason, counted, and writes nothing."""

import time
from datetime import datetime, timezone

from tests.e2e.harness import Customer, wait_until

from protocol import token as qrtoken
from protocol.messages import GENESIS_HASH, Event, EventBatch


def ingest_counts(cloud) -> dict:
    return cloud.api("GET", "/api/v1/ingest")


def event_rows(cloud) -> int:
    return cloud.db("SELECT COUNT(*) FROM events")[0][0]


def test_malformed_messages_on_every_topic_are_counted_and_dropped(broker, cloud, machines):
    m1, _ = machines
    wait_until(m1.synced, 20, "m1 to be in sync")
    before = ingest_counts(cloud)["counts"].get("rejected", 0)
    rows_before = event_rows(cloud)
    now = datetime.now(timezone.utc)
    head = cloud.machine("m1")["cloud_head"]
    forged = EventBatch((Event.make(head + 1, now, 1, True, "restock", {"slot": "A1", "count": 3}, "f" * 64),))
    ghost = EventBatch((Event.make(1, now, 1, True, "boot", {"firmware": "x"}, GENESIS_HASH),))
    bad = [
        ("vend/v1/m1/events", b"not json at all"),
        ("vend/v1/m1/events", b'{"v": 2, "events": []}'),
        ("vend/v1/m1/events", b'{"v": 1, "events": [{"seq": 1}]}'),
        ("vend/v1/m1/events", b"x" * 300_000),
        ("vend/v1/m1/events", forged.encode()),  # well formed, but does not follow the stored chain
        ("vend/v1/ghost/events", ghost.encode()),  # a machine the cloud does not know
        ("vend/v1/NOT_AN_ID/events", ghost.encode()),
        ("vend/v1/m1/status", b'{"v": 1, "online": "yes"}'),
        ("vend/v1/ghost/status", b'{"v": 1, "online": true}'),
        ("vend/v1/m1/cmd/result", b'{"v": 1, "id": "x", "status": "exploded"}'),
        ("vend/v1/m1/telemetry", b'{"v": 1, "temperature_c": 500}'),
    ]
    client = broker.client("e2e-garbage")
    for topic, payload in bad:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    wait_until(lambda: ingest_counts(cloud)["counts"].get("rejected", 0) - before >= len(bad), 20,
               "the cloud to refuse every bad message")
    client.loop_stop()
    client.disconnect()
    result = ingest_counts(cloud)
    assert result["counts"]["rejected"] - before == len(bad)
    reasons = " | ".join(reason for _topic, reason in result["last_rejections"])
    for expected in ("not valid JSON", "protocol version 2", "missing field", "over the", "hash chain broken",
                     "unknown machine 'ghost'", "machine id", "must be bool", "exploded", "temperature_c"):
        assert expected in reasons, f"{expected!r} not in {reasons}"
    assert event_rows(cloud) == rows_before
    assert cloud.db("SELECT COUNT(*) FROM machines WHERE id = 'ghost'")[0][0] == 0
    # The consumer is still running: the machine's next fact arrives.
    assert m1.request({"op": "restock", "counts": {"B1": 7}})["ok"]
    wait_until(m1.synced, 20, "a good event after the bad ones")


def test_garbage_to_a_machine_is_dropped_and_it_keeps_working(broker, cloud, machines):
    m1, _ = machines
    before = m1.request({"op": "status"})["rejected_messages"]
    client = broker.client("e2e-garbage-2")
    for topic, payload in [("vend/v1/m1/cmd", b"{"), ("vend/v1/m1/cmd", b'{"v":1,"id":"c1","kind":"selfdestruct"}'),
                           ("vend/v1/m1/ack", b'{"v":1,"seq":-4,"cloud_time":"now"}')]:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    wait_until(lambda: m1.request({"op": "status"})["rejected_messages"] - before == 3, 10,
               "the machine to drop three bad messages")
    client.loop_stop()
    client.disconnect()
    assert m1.proc.alive()
    assert m1.request({"op": "restock", "counts": {"B1": 8}})["ok"]
    wait_until(m1.synced, 20, "the machine to keep syncing")


def test_deep_nesting_on_every_topic_and_a_retained_poison_config_do_not_stop_the_machine(broker, cloud, machines):
    # 5000 levels of "[" raised RecursionError in json.loads, which killed the controller; a retained config
    # of that shape killed it again on every restart until someone cleared the retained message.
    m1, _ = machines
    topic = "vend/v1/m1/config"
    retained: list[bytes] = []
    client = broker.client("e2e-poison")
    client.on_message = lambda c, u, msg: retained.append(msg.payload)
    client.subscribe(topic, qos=1)
    wait_until(lambda: retained, 10, "the cloud's retained planogram")
    client.unsubscribe(topic)
    before = m1.request({"op": "status"})["rejected_messages"]
    poison = b"[" * 5000
    for kind in ("cmd", "ack"):
        client.publish(f"vend/v1/m1/{kind}", poison, qos=1).wait_for_publish(5)
    client.publish(topic, poison, qos=1, retain=True).wait_for_publish(5)
    try:
        wait_until(lambda: m1.request({"op": "status"})["rejected_messages"] - before == 3, 10,
                   "the machine to drop three poison messages")
        m1.proc.stop()
        m1.start()  # the broker hands the poison config over again on connect
        wait_until(lambda: m1.request({"op": "status"})["rejected_messages"] >= 1, 10,
                   "the restarted machine to drop the retained poison")
        assert m1.proc.alive()
        assert m1.request({"op": "restock", "counts": {"B1": 9}})["ok"]
        wait_until(m1.synced, 20, "the machine to keep syncing")
    finally:
        client.publish(topic, retained[0], qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
    with open(m1.proc.log_path) as f:
        log = f.read()
    assert log.count("dropped message on vend/v1/m1/config") == 2  # once per run of the process, not per connect


def test_expired_and_forged_qr_tokens_are_refused(cloud, machines):
    m1, _ = machines
    phone = Customer(cloud, "Q", "+8613900000000")
    old = qrtoken.make("m1", m1.secret.encode(), time.time() - 3600, 5)
    r = phone.http.get(f"/q/{old}")
    assert r.status_code == 410 and "expired" in r.text
    forged = qrtoken.make("m1", b"not-the-machine-secret", time.time(), 5)
    r = phone.http.get(f"/q/{forged}")
    assert r.status_code == 400 and "not come from one of our machines" in r.text
    r = phone.http.get("/q/complete-nonsense")
    assert r.status_code == 400 and "not recognised" in r.text
    assert "vend_visit" not in phone.http.cookies


def test_nonsense_in_the_registration_form_writes_nothing(cloud, machines):
    m1, _ = machines
    phone = Customer(cloud, "", "")
    phone.scan(m1)
    customers = cloud.db("SELECT COUNT(*) FROM customers")[0][0]
    for name, number, field_error in [("", "+8613700000000", "name of 1 to 80"), ("Bob", "call me", "phone number"),
                                      ("x" * 200, "+8613700000000", "name of 1 to 80"),
                                      ("Bob", "1" * 40, "phone number")]:
        r = phone.post_form("/register", {"name": name, "phone": number, "payment_method": "wallet",
                                          "next": "/m/m1"})
        assert r.status_code == 422 and field_error in r.text
    r = phone.post_form("/register", {"name": "Bob", "phone": "+8613700000000", "payment_method": "cash",
                                      "next": "/m/m1"})
    assert r.status_code == 422 and "payment method" in r.text
    assert cloud.db("SELECT COUNT(*) FROM customers")[0][0] == customers
    assert "vend_customer" not in phone.http.cookies
