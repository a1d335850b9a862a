"""Two cloud processes share the ingest through an MQTT 5 shared subscription, and count nothing twice."""

import threading

import pytest
from tests.e2e.harness import PRODUCTS, Cloud, wait_until


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
