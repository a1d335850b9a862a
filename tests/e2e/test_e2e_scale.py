"""Two cloud processes share the ingest through an MQTT 5 shared subscription, and count nothing twice; a
cloud that stores nothing (--no-ingest) sells beside one that does."""

import threading

import httpx
import pytest
from tests.e2e.harness import PRODUCTS, Cloud, Customer, wait_until


@pytest.fixture(scope="module")
def second_cloud(broker, cloud, tmp_path_factory):
    if broker.protocol != "5":
        pytest.skip("shared subscriptions need MQTT 5: the embedded broker speaks 3.1.1 only")
    other = Cloud(broker, str(tmp_path_factory.mktemp("cloud2")), var=cloud.var, db_url=cloud.db_url)
    other.start()
    yield other
    other.stop()


def test_two_cloud_processes_share_one_machines_stream_in_order(cloud, second_cloud, machines):
    m1, _ = machines
    start = m1.head()
    before = [c.api("GET", "/api/v1/ingest")["counts"].get("events", 0) for c in (cloud, second_cloud)]

    def technician():
        for i in range(100):
            assert m1.request({"op": "restock", "counts": {s: (i + n) % 9 for n, (s, *_) in enumerate(PRODUCTS)}})["ok"]

    worker = threading.Thread(target=technician)
    worker.start()
    worker.join(120)
    assert m1.head() - start == 400
    wait_until(m1.synced, 60, "both cloud processes together to catch up")
    on_machine = [(seq, h) for seq, _kind, _data, h in m1.ledger()]
    assert cloud.db("SELECT seq, hash FROM events WHERE machine_id = 'm1' ORDER BY seq") == on_machine
    after = [c.api("GET", "/api/v1/ingest")["counts"].get("events", 0) for c in (cloud, second_cloud)]
    shares = [a - b for a, b in zip(after, before)]
    assert sum(shares) == 400  # every event stored exactly once, by one process or the other
    assert all(share > 0 for share in shares), f"the broker gave one process everything: {shares}"


def test_a_cloud_with_no_ingest_sells_while_another_stores_the_machines_messages(broker, cloud, machines,
                                                                                 tmp_path_factory):
    # The process answering customers stores none of the machines' messages (--no-ingest), so the ingest's
    # work never waits in front of a purchase; on SQLite the two processes take turns at the one writer.
    m1, _ = machines
    web = Cloud(broker, str(tmp_path_factory.mktemp("web")), var=cloud.var, db_url=cloud.db_url,
                extra=("--no-ingest",))
    web.start()
    try:
        assert httpx.get(web.url + "/api/v1/health", timeout=5).json()["ingest"] is False
        phone = Customer(web, "Web Customer", "+8613811112222")
        with open(m1.url_file) as f:
            qr = f.read().strip()
        assert phone.http.get(qr.replace(cloud.url, "")).status_code == 303  # to /register, on this cloud
        assert phone.register("/m/m1").headers["location"] == "/m/m1"
        assert phone.topup("20").status_code == 303
        r = phone.buy(m1, "A2")
        assert r.status_code == 303, r.text
        order_id = r.headers["location"].rsplit("/", 1)[1]
        assert phone.wait_settled(order_id)["status"] == "succeeded"
        assert phone.balance() == "CN¥16.50"
        assert order_id in [e["order_id"] for e in m1.events_of("vend.started")]
        wait_until(m1.synced, 30, "the other cloud to store the sale")
        assert "events" not in web.api("GET", "/api/v1/ingest")["counts"]
        sales = web.api("GET", "/api/v1/sales?machine=m1")["sales"]
        assert [s["amount"] for s in sales if s["order_id"] == order_id] == [350]
    finally:
        web.stop()
