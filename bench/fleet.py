"""A fleet of simulated machines against one cloud through real Mosquitto: acks, resends, storms, pay to motor.

N machines, each its own MQTT connection and the controller's own link logic (``bench/_fleet_sim.py``), in at
most one worker process per core (their CPU is reported: the simulator must never be the bottleneck). Each
machine sells at ``--sales-per-day`` (seeded, authorised orders, so the cloud captures every sale), sends its
status and telemetry as a controller does, and resends what the cloud does not ack. A customer places real
orders through the cloud's HTTP forms at ``--orders-per-s``, and the time from the "pay" request to the
machine's motor start is the pay-to-motor latency. With ``--storm`` every machine loses its connection at once
(the broker sends their last wills), comes back within 5 s with an hour's backlog of sales, and the time to
store all of it is measured, with the acks 10 s after it.

The baseline, measured in the same run against a fresh broker and cloud: the same fleet with the machines'
link as it was before issue 16 (``--legacy-link``: a resend every 10 s without backoff or jitter, one batch per
event, a status after each sale). ``--baseline-cloud-src DIR`` also runs the baseline's cloud from another
checkout (e.g. the main branch), so the cloud's side is compared too; with ``--baseline same-link`` the baseline
machines run today's link, so the two clouds alone are compared. ``--web-cloud`` puts the buyer's HTTP on a
cloud process of its own that stores none of the machines' messages (``vend-cloud --no-ingest``), beside
``--clouds`` processes that do; its same-link baseline is those processes alone, doing everything.

The broker runs without authentication (``allow_anonymous``, as the end-to-end tests run it): per-machine
logins cost the broker a password check on connect only, nothing per message.

    python bench/fleet.py --machines 2000 --sales-per-day 2000 --minutes 2
    python bench/fleet.py --machines 2000 --sales-per-day 200 --minutes 2 --storm
    python bench/fleet.py --machines 10000 --sales-per-day 2000 --minutes 2 --web-cloud --baseline same-link
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import httpx
import sqlalchemy as sa
from _fleet import fleet
from _fleet_sim import run_ack_watcher, run_worker
from harness import PRODUCTS, Cloud, Customer
from ingest import drop_postgres, fresh_postgres

from protocol import token as qrtoken

# The link as it was before issue 16: a resend every 10 s without backoff or jitter, a message per event, a
# status every 30 s and within 2 s of every new head, and a busy cloud's notice not understood.
LEGACY_SYNC = {"resend_max_s": 10.0, "jitter": 0.0, "coalesce": False}
LEGACY_HEARTBEAT = {"every_s": 30.0, "min_gap_s": 2.0, "on_new_head": True}
# ... and as the controller now builds it from its config's defaults (controller/daemon.py, controller/config.py).
CURRENT_SYNC = {"resend_max_s": 120.0}
CURRENT_HEARTBEAT = {"every_s": 300.0, "on_new_head": False}


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


# -- the processes measured ----------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def box_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole box since boot, every core."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Sampler:
    """RSS of the cloud and the broker every second; CPU of each, and of the box, between mark and stop; the
    cloud's own queue and lag (``/api/v1/ingest``) every 5 s."""

    def __init__(self, pids: dict[str, int], cloud=None):
        self.pids = pids
        self.cloud = cloud
        self.ingest: list[dict] = []
        self.rss: dict[str, list[float]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.cpu0: dict[str, float] = {}
        self.box0 = (0.0, 0.0)
        self.t0 = 0.0

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(1.0):
            for name, pid in self.pids.items():
                try:
                    self.rss[name].append(rss_mb(pid))
                except OSError:
                    pass
            n += 1
            if self.cloud is not None and self.t0 and n % 2 == 0:
                try:
                    self.ingest.append(dict(httpx.get(self.cloud.url + "/api/v1/ingest", timeout=10, headers={
                        "Authorization": f"Bearer {self.cloud.token}"}).json(), at=time.time()))
                except (httpx.HTTPError, ValueError):
                    pass

    def start(self) -> None:
        self._thread.start()

    def mark(self) -> None:
        self.cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.box0 = box_busy()
        self.t0 = time.monotonic()

    def stop(self) -> dict:
        elapsed = time.monotonic() - self.t0
        busy, total = box_busy()
        figures = {f"{name}_cpu_percent": round(100 * (cpu_seconds(pid) - self.cpu0[name]) / elapsed, 1)
                   for name, pid in self.pids.items()}
        self._stop.set()
        for name, values in self.rss.items():
            figures[f"{name}_rss_mb_max"] = round(max(values), 1) if values else None
            # flat or growing: the last third's mean against the middle third's
            third = len(values) // 3
            if third:
                figures[f"{name}_rss_mb_growth_last_third"] = round(
                    sum(values[-third:]) / third - sum(values[third:2 * third]) / third, 1)
        clouds = [v for k, v in figures.items() if k.startswith("cloud") and k.endswith("_cpu_percent")]
        if len(clouds) > 1:
            figures["cloud_cpu_percent_all_processes"] = round(sum(clouds), 1)
        seen = [i for i in self.ingest if "queued" in i]
        if seen:
            figures["cloud_queue_max"] = max(i["queued"] for i in seen)
            figures["cloud_behind_s_max"] = max(i["behind_s"] for i in seen)
            figures["cloud_busy_notices"] = seen[-1]["busy_notices"]
        figures["ingest"] = self.ingest
        figures["box_cpu_percent_all_cores"] = round(100 * (busy - self.box0[0]) / max(1, total - self.box0[1]), 1)
        return figures


# -- the fleet in the cloud ----------------------------------------------------------------------------

def machine_ids(n: int) -> list[str]:
    return [f"fleet-{i:05d}" for i in range(n)]


def set_up(cloud, ids: list[str], orders_each: int) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The machines, their slots (stocked) and, for every sale a machine will make, an authorised order.

    One machine goes through the HTTP API (it makes the products); the rest are copied in bulk through the
    cloud's own functions and tables, as a fleet already in service would be."""
    from cloud import payments, people
    from cloud.fleet import machines as fleet_machines
    from cloud.fleet.machines import slots
    from cloud.sales.orders import orders

    cloud.api("POST", "/api/v1/machines", {"id": "template", "name": "template"})
    cloud.api("PUT", "/api/v1/machines/template/slots", [
        {"slot": slot, "sku": sku, "name": name, "price": price, "currency": "CNY", "capacity": 1000}
        for slot, sku, name, price in PRODUCTS])
    engine = sa.create_engine(cloud.db_url, poolclass=sa.pool.NullPool)
    now = datetime.now(timezone.utc)
    secrets, seeded = {}, {}
    with engine.begin() as conn:
        template = [dict(r._mapping) for r in conn.execute(sa.select(slots).where(slots.c.machine_id == "template"))]
        for machine_id in ids:
            secrets[machine_id] = fleet_machines.add_machine(conn, machine_id, machine_id, "", now)
        rows = [dict(r, machine_id=machine_id) for machine_id in ids for r in template]
        for r in rows:
            r.pop("id", None)
        conn.execute(slots.insert(), rows)
        conn.execute(slots.update().where(slots.c.machine_id != "template").values(count=1000))
        customer = people.register(conn, "Fleet bench", "+8613900000000", "wallet", now, methods=("wallet",))
        wallet = payments.account(conn, "wallet", customer, "CNY")
        hold = payments.account(conn, "hold", customer, "CNY")
        clearing = payments.account(conn, "topup_clearing", 0, "CNY")
        a1 = next(r for r in template if r["slot"] == "A1")
        total = orders_each * len(ids)
        payments.post(conn, "topup:fleet-bench", "topup", [(wallet, a1["price"] * total),
                                                            (clearing, -a1["price"] * total)], now)
        order_rows = []
        for n, machine_id in enumerate(ids):
            seeded[machine_id] = [f"f{n}x{k}" for k in range(orders_each)]
            order_rows += [dict(id=i, customer_id=customer, idem_key=i, machine_id=machine_id, slot="A1",
                                product_id=a1["product_id"], amount=a1["price"], currency="CNY", provider="wallet",
                                status="authorised", cmd_id=f"v-{i}", created_at=now,
                                expires_at=now + timedelta(days=365), updated_at=now) for i in seeded[machine_id]]
        for i in range(0, len(order_rows), 20000):
            chunk = order_rows[i:i + 20000]
            conn.execute(orders.insert(), chunk)
            txn_ids = conn.execute(payments.txns.insert().returning(payments.txns.c.id, sort_by_parameter_order=True),
                                   [dict(key=f"authorise:{o['id']}", kind="authorise", order_id=o["id"],
                                         created_at=now) for o in chunk]).scalars().all()
            conn.execute(payments.entries.insert(), [leg for t in txn_ids for leg in (
                dict(txn_id=t, account_id=wallet, amount=-a1["price"]),
                dict(txn_id=t, account_id=hold, amount=a1["price"]))])
    engine.dispose()
    return secrets, seeded


class Buyer:
    """A customer on a phone buying at random machines through the HTTP forms, one order after another."""

    def __init__(self, cloud, secrets: dict[str, str], rate: float):
        self.cloud, self.secrets, self.rate = cloud, secrets, rate
        self.customer = Customer(cloud, "Fleet buyer", "+8613900000001")
        self.customer.http.timeout = httpx.Timeout(60.0)  # a slow answer is a figure, not a failure
        self.placed: dict[str, float] = {}  # order id -> wall time of the "pay" request
        self.answered: dict[str, float] = {}  # order id -> wall time its answer (the redirect to the order) came
        self.failures: list[str] = []
        self.rng = random.Random(7)
        self._thread: threading.Thread | None = None

    def scan(self, machine_id: str) -> httpx.Response:
        tok = qrtoken.make(machine_id, self.secrets[machine_id].encode(), time.time(), 5.0)
        return self.customer.http.get(f"/q/{tok}")

    def prepare(self) -> None:
        first = next(iter(self.secrets))
        self.scan(first)
        r = self.customer.register(f"/m/{first}")
        assert r.status_code == 303, f"registration: {r.status_code} {r.text[:300]}"
        for _ in range(3):
            r = self.customer.topup("1000")
            assert r.status_code == 303, f"top-up: {r.status_code} {r.text[:300]}"

    def run(self, start: float, end: float) -> None:
        ids = list(self.secrets)
        time.sleep(max(0.0, start - time.time()))
        next_at = time.time()
        while next_at < end:
            machine_id = self.rng.choice(ids)
            try:
                self.scan(machine_id)
                t0 = time.time()
                r = self.customer.buy(type("M", (), {"id": machine_id}), "A1")
                if r.status_code == 303 and "/orders/" in r.headers.get("location", ""):
                    order_id = r.headers["location"].rsplit("/", 1)[1]
                    self.placed[order_id] = t0
                    self.answered[order_id] = time.time()
                else:
                    self.failures.append(f"{machine_id}: {r.status_code}")
            except httpx.HTTPError as e:
                self.failures.append(f"{machine_id}: {type(e).__name__}")
            next_at += 1.0 / self.rate
            time.sleep(max(0.0, next_at - time.time()))

    def start(self, start: float, end: float) -> None:
        self._thread = threading.Thread(target=self.run, args=(start, end), daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread:
            self._thread.join(timeout=60)


# -- one run -------------------------------------------------------------------------------------------

def run_fleet(args, legacy: bool, cloud_src: str = "", web_cloud: bool = False) -> dict:
    ids = machine_ids(args.machines)
    minutes = args.minutes
    duration = minutes * 60
    day_fraction = duration / 86400
    backlog_sales = round(args.sales_per_day * args.storm_backlog_s / 86400) if args.storm else 0
    expected = args.sales_per_day * day_fraction
    orders_each = int(expected + 4 * expected ** 0.5 + 3) + backlog_sales
    db_url = fresh_postgres(args.postgres) if args.postgres else ""
    try:
        first = {"extra": ("--no-ingest",)} if web_cloud else {}
        with cloud_from(cloud_src), fleet("mosquitto", db_url=db_url, **first) as (work, broker, cloud):
            t = time.monotonic()
            secrets, seeded = set_up(cloud, ids, orders_each)
            setup_s = time.monotonic() - t
            # More cloud processes share the ingest through an MQTT 5 shared subscription (the default); with
            # a web cloud (the first, which stores nothing) all --clouds are more.
            more = args.clouds if web_cloud else args.clouds - 1
            extra = [Cloud(broker, work, var=cloud.var, db_url=db_url) for _ in range(more)]
            try:
                for other in extra:
                    other.start()
                return measure(args, legacy, broker, [cloud, *extra], ids, secrets, seeded, backlog_sales, setup_s,
                               ingesting=extra[0] if web_cloud else cloud)
            finally:
                for other in extra:
                    other.stop()
    finally:
        if db_url:
            drop_postgres(args.postgres, db_url)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextmanager
def cloud_from(src: str):
    """Start the cloud from this checkout, or another one: ``python -m cloud`` finds its package in the working
    folder first. Without this, run from ``bench/`` it found the venv's installed copy (another checkout)."""
    here = os.getcwd()
    os.chdir(src or REPO)
    try:
        yield
    finally:
        os.chdir(here)


def measure(args, legacy, broker, clouds, ids, secrets, seeded, backlog_sales, setup_s, ingesting) -> dict:
    cloud = clouds[0]
    buyer = Buyer(cloud, secrets, args.orders_per_s) if args.orders_per_s else None
    if buyer:
        buyer.prepare()  # before the fleet connects: registration is not what is measured
    workers = max(1, min(args.workers, os.cpu_count() or 1))
    ctx = multiprocessing.get_context("spawn")
    opts = {
        "port": broker.port, "sales_per_day": args.sales_per_day, "batch_size": 200, "window": 8,
        "resend_after_s": 10.0, "telemetry_s": 60.0, "storm_backlog_sales": backlog_sales,
        "storm_back_within_s": 5.0, "connect_s": max(5.0, len(ids) / 1000),
        "sync_options": LEGACY_SYNC if legacy else CURRENT_SYNC,
        "heartbeat_options": LEGACY_HEARTBEAT if legacy else CURRENT_HEARTBEAT,
        "honours_busy": not legacy,
    }
    procs, pipes = [], []
    for w in range(workers):
        mine = [(m, seeded[m]) for m in ids[w::workers]]
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=run_worker, args=(dict(opts, seed=w), mine, child_end), daemon=True)
        p.start()
        procs.append(p)
        pipes.append(parent_end)
    for pipe in pipes:
        ready = json.loads(pipe.recv())
        if "error" in ready:
            raise SystemExit(f"a simulator worker failed: {ready['error']}")
    start = time.time() + 0.5
    load_at = start + opts["connect_s"] + 5.0
    end_at = load_at + args.minutes * 60
    storm_at = load_at + args.storm_after_s if args.storm else 0
    times = {"load_at": load_at, "end_at": end_at, "storm_at": storm_at}
    for pipe in pipes:
        pipe.send(json.dumps(times))
    watcher = None
    if args.watch_acks:
        watcher_end, child_end = ctx.Pipe()
        watcher = ctx.Process(target=run_ack_watcher, args=(broker.port, end_at, child_end), daemon=True)
        watcher.start()
    pids = {"cloud": cloud.proc.proc.pid, "broker": broker.proc.proc.pid}
    pids.update((f"cloud{n + 1}", c.proc.proc.pid) for n, c in enumerate(clouds[1:], 1))
    sampler = Sampler(pids, ingesting)
    sampler.start()
    time.sleep(max(0.0, load_at - time.time()))
    sampler.mark()
    if buyer:
        buyer.start(load_at + 5, end_at - 10)
    results = []
    for pipe in pipes:
        results.append(json.loads(pipe.recv()))
    figures = sampler.stop()
    if buyer:
        buyer.join()
    for p in procs:
        p.join(timeout=30)
    if watcher:
        figures["ack_watcher"] = json.loads(watcher_end.recv())
        watcher.join(timeout=30)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise SystemExit(f"simulator worker failed: {errors}")
    return summarise(args, legacy, results, figures, buyer, load_at, end_at, workers, setup_s, cloud)


def summarise(args, legacy, results, figures, buyer, load_at, end_at, workers, setup_s, cloud) -> dict:
    counts: dict[str, int] = {}
    for r in results:
        for k, v in r["counts"].items():
            counts[k] = counts.get(k, 0) + v
    warm = load_at + 10.0
    samples = [d for r in results for t, d in r["ack_samples"] if warm <= t]
    storm_at = min((r["storm_at"] for r in results if r["storm_at"]), default=None)
    ingest = figures.pop("ingest", [])
    watched = figures.pop("ack_watcher", None)
    ways = [d for r in results for t, d, events in r["ack_ways"] if warm <= t and events]
    out = {
        "link": "legacy" if legacy else "current",
        "ack_p50_ms": ms(percentile(samples, 50)),
        "ack_p99_ms": ms(percentile(samples, 99)),
        "acks_measured": len(samples),
        # The acks' way back alone: from the cloud's clock in the ack (written after its commit) to the machine.
        "ack_way_back_p50_ms": ms(percentile(ways, 50)),
        "ack_way_back_p99_ms": ms(percentile(ways, 99)),
        "stalled_machines": sum(r["stalled"] for r in results),
        "unacked_events_end": sum(r["unacked"] for r in results),
        "events_written": sum(r["heads"] for r in results),
        "events_sent_first": counts["events_sent_first"],
        "events_resent": counts["events_resent"],
        "duplicate_resend_fraction": round(counts["events_resent"] / max(1, counts["events_sent_first"]), 4),
        **figures,
    }
    duration = end_at - load_at
    out["messages_per_s"] = {
        "events_batches": round(counts["batches_sent"] / duration, 1),
        "status": round(counts["status_sent"] / duration, 1),
        "telemetry": round(counts["telemetry_sent"] / duration, 1),
    }
    if storm_at:
        drained = [r["storm_drained_at"] for r in results]
        out["storm_machines_drained"] = f"{sum(r['storm_drained'] for r in results)}/" \
                                        f"{sum(r['storm_machines'] for r in results)}"
        out["storm_drain_s"] = None if None in drained else round(max(drained) - storm_at, 1)
        out["storm_backlog_events"] = counts["backlog_sales"] * 2
        if out["storm_drain_s"] is not None:
            after = max(drained) + 10
            late = [d for r in results for t, d in r["ack_samples"] if t >= after]
            out["storm_ack_p99_ms_after_10s"] = ms(percentile(late, 99))
            out["storm_ack_p50_ms_after_10s"] = ms(percentile(late, 50))
            out["storm_acks_over_100ms_after_10s"] = sum(1 for d in late if d > 0.1)
            out["storm_acks_after_10s"] = len(late)
        else:
            out["storm_ack_p99_ms_after_10s"] = None
        # How the acks came back after the storm, 5 s at a time: how many, and their way back (p50, p99).
        # With --watch-acks, the same for a bystander subscribed to every ack: the broker's share of it.
        timeline = []
        for k in range(int((end_at - storm_at) // 5)):
            ways_k = [d for r in results for t, d, events in r["ack_ways"]
                      if storm_at + 5 * k <= t < storm_at + 5 * (k + 1) and events]
            row = [5 * k, len(ways_k), ms(percentile(ways_k, 50)), ms(percentile(ways_k, 99))]
            if watched is not None:
                seen = [d for t, d in watched if storm_at + 5 * k <= t < storm_at + 5 * (k + 1)]
                row += [len(seen), ms(percentile(seen, 50)), ms(percentile(seen, 99))]
            timeline.append(row)
        out["storm_acks_each_5s"] = timeline
        out["storm_cloud_queue_each_5s"] = [
            [round(i["at"] - storm_at), i["queued"], i["behind_s"], i["counts"].get("events", 0), i.get("acks_waiting")]
            for i in ingest if i["at"] >= storm_at - 5 and "queued" in i]
    latencies = []
    if buyer:
        motor = {}
        for r in results:
            motor.update(r["motor_started"])
        latencies = [motor[o] - t0 for o, t0 in buyer.placed.items() if o in motor]
        out["pay_to_motor_p50_ms"] = ms(percentile(latencies, 50))
        out["pay_to_motor_p99_ms"] = ms(percentile(latencies, 99))
        # ... split: the cloud's answer to "pay" (authorised, the vend published), then the command's way to the
        # motor (the cloud's MQTT client, the broker, the simulator's loop)
        answered = [buyer.answered[o] - t0 for o, t0 in buyer.placed.items() if o in motor]
        out["pay_answered_p50_ms"] = ms(percentile(answered, 50))
        out["pay_answered_p99_ms"] = ms(percentile(answered, 99))
        way = [motor[o] - buyer.answered[o] for o in buyer.placed if o in motor]
        out["vend_way_to_motor_p50_ms"] = ms(percentile(way, 50))
        out["vend_way_to_motor_p99_ms"] = ms(percentile(way, 99))
        out["orders_placed"] = len(buyer.placed)
        out["orders_reaching_motor"] = len(latencies)
        out["order_failures"] = len(buyer.failures)
    else:
        out["pay_to_motor_p99_ms"] = None
    out["simulator"] = {
        "workers": workers,
        "cpu_percent": round(100 * sum(r["cpu_s"] for r in results) / duration, 1),
        "rss_mb_max_per_worker": round(max(r["rss_mb"] for r in results), 1),
        "connects": counts["connects"], "disconnects": counts["disconnects"],
        "connect_failures": counts["connect_failures"], "refused": counts["refused"],
        "sales": counts["sales"], "sales_without_seeded_order": counts["sales_without_order"],
        "resend_commands": counts["resend_commands"], "busy_notices_heeded": counts["busy_notices"],
    }
    out["setup_s"] = round(setup_s, 1)
    # The cloud's batches stored with others of their group (ingest.store_batches), not one at a time.
    counted = ingest[-1]["counts"] if ingest else {}
    out["cloud_batches_stored_together"] = f"{counted.get('batches_together', 0)}/{counted.get('batches', 0)}"
    out["events_stored"] = cloud.db("SELECT COUNT(*) FROM events")[0][0]
    # Stored by the cloud but not yet acked as the machines see it: the acks' way back is the slow part.
    out["events_stored_not_acked_end"] = out["events_stored"] - (out["events_written"] - out["unacked_events_end"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--sales-per-day", type=float, default=2000, help="per machine")
    parser.add_argument("--minutes", type=float, default=2, help="of load, after the fleet has connected")
    parser.add_argument("--storm", action="store_true",
                        help="every machine loses its connection at once and comes back with a backlog")
    parser.add_argument("--storm-after-s", type=float, default=30.0, help="seconds into the load")
    parser.add_argument("--storm-backlog-s", type=float, default=3600.0,
                        help="how long the machines were offline: their backlog is the sales of that long")
    parser.add_argument("--postgres", metavar="URL", default="",
                        help="store in a fresh database on this PostgreSQL server instead of SQLite")
    parser.add_argument("--clouds", type=int, default=1,
                        help="cloud processes sharing the ingest (MQTT 5 shared subscription); the first one "
                             "also serves HTTP to the buyer")
    parser.add_argument("--web-cloud", action="store_true",
                        help="one more cloud process, the first: it serves HTTP to the buyer and stores none of "
                             "the machines' messages (vend-cloud --no-ingest); the baseline (--baseline "
                             "same-link) is then --clouds cloud processes doing everything")
    parser.add_argument("--workers", type=int, default=2, help="simulator processes (at most one per core)")
    parser.add_argument("--orders-per-s", type=float, default=1.0, help="real orders through HTTP (0: none)")
    parser.add_argument("--watch-acks", action="store_true",
                        help="a bystander process subscribed to every ack: the broker's share of the acks' way back")
    parser.add_argument("--legacy-link", action="store_true",
                        help="measure only the machines' link as it was before issue 16 (no baseline run)")
    parser.add_argument("--baseline", choices=("legacy-link", "same-link", "none"), default="legacy-link",
                        help="the run measured first, for comparison: the machines' link as before issue 16, or "
                             "today's link (with --baseline-cloud-src, to compare clouds alone)")
    parser.add_argument("--baseline-cloud-src", metavar="DIR", default="",
                        help="run the baseline's cloud from this checkout (e.g. the main branch)")
    args = parser.parse_args()
    if args.baseline == "same-link" and not args.baseline_cloud_src and not args.web_cloud:
        raise SystemExit("--baseline same-link compares clouds: give the other one with --baseline-cloud-src")
    if args.storm and args.minutes * 60 < args.storm_after_s + 60:
        raise SystemExit("--storm needs --minutes long enough for the storm and a minute after it")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # Mosquitto holds a socket per machine
    if hard < args.machines + 200:
        raise SystemExit(f"open files limit {hard} is below {args.machines + 200}: raise it (ulimit -n)")
    load0 = open("/proc/loadavg").read().split()[:3]
    report: dict = {"benchmark": "fleet"}
    baseline = None
    if args.baseline != "none" and not args.legacy_link:
        baseline = run_fleet(args, legacy=args.baseline == "legacy-link", cloud_src=args.baseline_cloud_src)
    report.update(run_fleet(args, legacy=args.legacy_link, web_cloud=args.web_cloud))
    if baseline is not None:
        baseline["cloud"] = (args.baseline_cloud_src or "this checkout") + (", no web cloud" if args.web_cloud else "")
        baseline["link"] = args.baseline
        report["baseline"] = baseline
    report["settings"] = {
        "machines": args.machines, "sales_per_day": args.sales_per_day, "minutes": args.minutes,
        "storm": args.storm, "storm_backlog_s": args.storm_backlog_s if args.storm else None,
        "store": "postgresql" if args.postgres else "sqlite (WAL, synchronous=FULL)", "broker": "mosquitto",
        "broker_auth": "none (allow_anonymous)", "orders_per_s": args.orders_per_s,
        "clouds": args.clouds, "web_cloud": args.web_cloud, "cpus": os.cpu_count(), "load_average_before": load0,
        "load_average_after": open("/proc/loadavg").read().split()[:3],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
