"""Vend latency: from the customer's "pay" request to the simulated machine's motor start, on loopback.

Real processes: the broker, the cloud and one controller on the simulated backend. Each purchase goes
through the customer's own HTTP form; the simulator appends the wall-clock time of every motor start to a
trace file. Purchases run one after the other, each waited for until it is settled.

    python bench/vend_latency.py --purchases 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from _fleet import broker_kind, fleet
from harness import PRODUCTS, Customer, Machine, wait_until


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--purchases", type=int, default=200)
    parser.add_argument("--broker", choices=("mosquitto", "embedded"), default=broker_kind())
    args = parser.parse_args()
    with fleet(args.broker, vend_timeout=10) as (work, broker, cloud):
        trace = os.path.join(work, "motor.trace")
        machine = Machine(cloud, broker, work, "lat-1", drop_delay=0.02, drop_timeout=1.0, trace=trace)
        try:
            measure(args, cloud, machine, trace)
        finally:
            machine.proc.stop()
    return 0


def measure(args, cloud, machine: Machine, trace: str) -> None:
    machine.start()
    assert machine.service("restock", *(f"{s}=1000" for s, *_ in PRODUCTS))["ok"]
    wait_until(machine.synced, 20, "the restock to reach the cloud")
    customer = Customer(cloud, "Bench", "+8613600000000")
    customer.scan(machine)
    customer.register("/m/lat-1")
    for _ in range(1 + args.purchases // 150):
        assert customer.topup("1000").status_code == 303
    latencies = []
    for i in range(args.purchases):
        slot = PRODUCTS[i % len(PRODUCTS)][0]
        runs_before = len(open(trace).read().splitlines()) if os.path.exists(trace) else 0
        if i % 20 == 0:
            customer.scan(machine)  # the visit cookie lasts 15 minutes; a real customer rescans anyway
        t0 = time.time()
        response = customer.buy(machine, slot)
        assert response.status_code == 303, f"purchase {i}: {response.status_code} {response.text[:300]}"
        order_id = response.headers["location"].rsplit("/", 1)[1]
        try:
            status = customer.wait_settled(order_id, timeout=20)
        except AssertionError:
            print(f"purchase {i} ({order_id}) stuck at {customer.order_status(order_id)}", file=sys.stderr)
            print(open(machine.proc.log_path).read()[-3000:], file=sys.stderr)
            print(open(cloud.proc.log_path).read()[-3000:], file=sys.stderr)
            raise
        assert status["status"] == "succeeded", status
        runs = open(trace).read().splitlines()[runs_before:]
        assert len(runs) == 1, runs
        latencies.append((float(runs[0].split()[0]) - t0) * 1000)
    print(json.dumps({
        "benchmark": "vend_latency",
        "purchases": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "mean_ms": round(statistics.mean(latencies), 1),
        "max_ms": round(max(latencies), 1),
        "baseline": "none: the path is HTTP form -> authorise (SQLite, synchronous=FULL) -> MQTT QoS 1 -> "
                    "controller -> ledger append (fsync) -> motor",
        "settings": {"broker": args.broker, "store": "sqlite", "cpus": os.cpu_count()},
    }, indent=2))


if __name__ == "__main__":
    sys.exit(main())
