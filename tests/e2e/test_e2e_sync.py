"""Sync between a machine's ledger and the cloud survives a broker restart: nothing lost, nothing twice."""

import threading
import time

from tests.e2e.harness import PRODUCTS, wait_until


def test_broker_restart_in_the_middle_of_500_events(broker, cloud, machines):
    m1, _ = machines
    start = m1.head()
    errors = []
    calls = 125  # each restock call writes one event per slot: 125 x 4 = 500 events

    def technician():
        for i in range(calls):
            answer = m1.request({"op": "restock", "counts": {s: (i + n) % 10 for n, (s, *_) in enumerate(PRODUCTS)}})
            if not answer.get("ok"):
                errors.append(answer)
            time.sleep(0.005)

    worker = threading.Thread(target=technician)
    worker.start()
    wait_until(lambda: m1.head() - start >= 150, 30, "the first events to be written")
    broker.stop()  # Mosquitto without persistence: whatever it held is gone
    wait_until(lambda: m1.head() - start >= 300, 30, "events written while the broker is down")
    broker.start()
    worker.join(60)
    assert not errors
    assert m1.head() - start == 4 * calls
    wait_until(m1.synced, 90, "the cloud to catch up with the machine's ledger")

    on_machine = [(seq, h) for seq, _kind, _data, h in m1.ledger()]
    in_cloud = cloud.db("SELECT seq, hash FROM events WHERE machine_id = 'm1' ORDER BY seq")
    assert in_cloud == on_machine  # row by row: same events, same order, no gap, no duplicate
    assert cloud.machine("m1")["online"] is True
    # The machine's acked mark caught up too: it will not send these again.
    wait_until(lambda: m1.request({"op": "status"})["acked"] == m1.head(), 20, "the machine to see the ack")
