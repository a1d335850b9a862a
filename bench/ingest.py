"""Ingest throughput: ledger events stored by the cloud per second, through a real broker, into SQLite.

Simulated machines publish pre-built, hash-chained event batches the way a controller does (in order, a
bounded window of batches in flight, moving on only when the cloud's ack says the events are committed).
The baseline is measured in the same run against the same broker: how many messages per second a
subscriber that does nothing receives.

    python bench/ingest.py --machines 50 --events 200000
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import threading
import time
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
from _fleet import broker_kind, fleet
from harness import Broker, Cloud

from protocol import topics
from protocol.messages import GENESIS_HASH, Ack, Command, Event, EventBatch

def make_events(machine_id: str, count: int) -> list[Event]:
    """A plausible ledger: sales (vend.started then vend.succeeded), a restock and a door opening."""
    events, prev = [], GENESIS_HASH
    now = datetime.now(timezone.utc)
    sale = 0
    while len(events) < count:
        cycle = []
        for _ in range(4):
            sale += 1
            order = f"o{machine_id}x{sale}"
            cycle += [("vend.started", {"order_id": order, "cmd_id": f"v-{order}", "slot": "A1"}),
                      ("vend.succeeded", {"order_id": order, "cmd_id": f"v-{order}", "slot": "A1", "turns": 1,
                                          "ms": 812})]
        cycle += [("restock", {"slot": "A1", "count": 8}), ("door.opened", {})]
        for kind, data in cycle[:count - len(events)]:
            event = Event.make(len(events) + 1, now, 1, True, kind, data, prev)
            events.append(event)
            prev = event.hash
    return events


def sales_in(count: int) -> int:
    """How many sales make_events writes into ``count`` events (4 sales in every 10 events)."""
    full, rest = divmod(count, 10)
    return full * 4 + min(rest, 8) // 2 + (min(rest, 8) % 2)


class SimMachine:
    """Publishes one machine's batches with a window, advancing on the cloud's acks."""

    def __init__(self, broker: Broker, machine_id: str, batches: list[bytes], last_seqs: list[int], window: int):
        self.id, self.batches, self.last_seqs, self.window = machine_id, batches, last_seqs, window
        self.acked = 0
        self.next = 0
        self.resends = 0
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.client = broker.client(f"bench-{machine_id}")
        self.client.on_message = self.on_message
        self.client.subscribe([(topics.topic(machine_id, "ack"), 1), (topics.topic(machine_id, "cmd"), 1)])

    def pump(self) -> None:
        with self.lock:
            while self.next < len(self.batches) and self.next - self.acked_batches() < self.window:
                info = self.client.publish(topics.topic(self.id, "events"), self.batches[self.next], qos=1)
                assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
                self.next += 1

    def acked_batches(self) -> int:
        return bisect.bisect_right(self.last_seqs, self.acked)

    def on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/cmd"):
            # Like a controller: a resend request rewinds to the batch that holds the asked-for event.
            cmd = Command.decode(message.payload)
            if cmd.kind == "resend":
                with self.lock:
                    first = next(i for i, last in enumerate(self.last_seqs) if last >= cmd.args["from_seq"])
                    self.next = min(self.next, first)
                self.resends += 1
                self.pump()
            return
        ack = Ack.decode(message.payload)
        if ack.seq > self.acked:
            self.acked = ack.seq
        if self.acked >= self.last_seqs[-1]:
            self.done.set()
        else:
            self.pump()


def seed_orders(db_url: str, machine_ids: list[str], sales: int) -> None:
    """Give every sale in the generated ledgers a real, authorised order, so ingest does the capture too."""
    import sqlalchemy as sa

    from cloud.core import db
    from cloud.sales import orders
    from cloud import payments, people

    engine = db.make_engine(db_url)
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        for n, machine_id in enumerate(machine_ids):
            customer = people.register(conn, f"Bench {n}", f"+86139{n:08d}", "wallet", now, methods=("wallet",))
            wallet = payments.account(conn, "wallet", customer, "CNY")
            hold = payments.account(conn, "hold", customer, "CNY")
            clearing = payments.account(conn, "topup_clearing", 0, "CNY")
            payments.post(conn, f"topup:bench-{n}", "topup", [(wallet, 200 * sales), (clearing, -200 * sales)], now)
            product = conn.execute(sa.select(orders.orders.c.product_id).limit(1)).scalar() or 1
            ids = [f"o{machine_id}x{i}" for i in range(1, sales + 1)]
            conn.execute(orders.orders.insert(), [dict(
                id=i, customer_id=customer, idem_key=i, machine_id=machine_id, slot="A1", product_id=product,
                amount=200, currency="CNY", provider="wallet", status="authorised", cmd_id=f"v-{i}", created_at=now,
                expires_at=now.replace(year=now.year + 1), updated_at=now) for i in ids])
            txn_ids = conn.execute(payments.txns.insert().returning(payments.txns.c.id, sort_by_parameter_order=True),
                                   [dict(key=f"authorise:{i}", kind="authorise", order_id=i, created_at=now)
                                    for i in ids]).scalars().all()
            conn.execute(payments.entries.insert(), [leg for t in txn_ids for leg in (
                dict(txn_id=t, account_id=wallet, amount=-200), dict(txn_id=t, account_id=hold, amount=200))])
    engine.dispose()


def fresh_postgres(admin_url: str) -> str:
    """A new, empty database on the server at ``admin_url``; returns its URL."""
    import uuid

    import sqlalchemy as sa

    name = f"vend_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_postgres(admin_url: str, db_url: str) -> None:
    import sqlalchemy as sa

    name = db_url.rsplit("/", 1)[1]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    # After a big run PostgreSQL's autovacuum may be working in the database: FORCE cannot end a superuser's
    # process for an ordinary role, so wait for it. Never at the price of the figures measured.
    for attempt in range(30):
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except sa.exc.DBAPIError as e:
            last = e
            time.sleep(2)
    print(f"database {name} left behind: {str(last).splitlines()[0]}", file=sys.stderr)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_rate(broker: Broker, payload: bytes, count: int) -> float:
    """Messages per second that a do-nothing QoS 1 subscriber receives from this broker."""
    received = threading.Event()
    got = [0]
    sub = broker.client("bench-raw-sub")

    def on_message(c, u, m):
        got[0] += 1
        if got[0] == count:
            received.set()

    sub.on_message = on_message
    sub.subscribe("bench/raw", qos=1)
    time.sleep(0.5)
    pub = broker.client("bench-raw-pub")
    start = time.perf_counter()
    for _ in range(count):
        pub.publish("bench/raw", payload, qos=1)
    received.wait(300)
    elapsed = time.perf_counter() - start
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return got[0] / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--events", type=int, default=200_000, help="in all, spread over the machines")
    parser.add_argument("--batch", type=int, default=200, help="events per message, as a controller sends them")
    parser.add_argument("--window", type=int, default=8, help="batches in flight per machine")
    parser.add_argument("--broker", choices=("mosquitto", "embedded"), default=broker_kind())
    parser.add_argument("--postgres", metavar="URL", default="",
                        help="store in a fresh database on this PostgreSQL server instead of SQLite, e.g. "
                             "postgresql+psycopg://vend:vend@127.0.0.1:5432/vend")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for every ack")
    parser.add_argument("--clouds", type=int, default=1,
                        help="cloud processes sharing the ingest (MQTT 5 shared subscription)")
    args = parser.parse_args()
    if args.clouds > 1 and args.broker != "mosquitto":
        raise SystemExit("--clouds > 1 needs MQTT 5 shared subscriptions: use --broker mosquitto")
    db_url = fresh_postgres(args.postgres) if args.postgres else ""
    try:
        with fleet(args.broker, db_url=db_url) as (work, broker, cloud):
            extra = [Cloud(broker, work, var=cloud.var, db_url=db_url) for _ in range(1, args.clouds)]
            try:
                for other in extra:
                    other.start()
                run(args, broker, cloud, [cloud, *extra])
            finally:
                for other in extra:
                    other.stop()
    finally:
        if db_url:
            drop_postgres(args.postgres, db_url)
    return 0


def run(args, broker, cloud, clouds) -> None:
    per_machine = args.events // args.machines
    ids = [f"bench-{i:03d}" for i in range(args.machines)]
    for machine_id in ids:
        cloud.api("POST", "/api/v1/machines", {"id": machine_id, "name": machine_id})
        cloud.api("PUT", f"/api/v1/machines/{machine_id}/slots", [
            {"slot": "A1", "sku": "w", "name": "Water", "price": 200, "currency": "CNY", "capacity": 10},
            {"slot": "A2", "sku": "c", "name": "Cola", "price": 350, "currency": "CNY", "capacity": 10}])
    seed_orders(cloud.db_url, ids, sales_in(per_machine))
    sims = []
    sample_payload = b""
    for machine_id in ids:
        events = make_events(machine_id, per_machine)
        chunks = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]
        batches = [EventBatch(tuple(c)).encode() for c in chunks]
        sample_payload = sample_payload or batches[0]
        sims.append(SimMachine(broker, machine_id, batches, [c[-1].seq for c in chunks], args.window))
    total = per_machine * args.machines
    cloud_cpu = sum(cpu_seconds(c.proc.proc.pid) for c in clouds)
    broker_cpu = cpu_seconds(broker.proc.proc.pid)
    start = time.perf_counter()
    for sim in sims:
        sim.pump()
    for sim in sims:
        if not sim.done.wait(600):
            raise SystemExit(f"{sim.id} was not fully acked: {sim.acked}/{per_machine}")
    elapsed = time.perf_counter() - start
    cloud_cpu = sum(cpu_seconds(c.proc.proc.pid) for c in clouds) - cloud_cpu
    broker_cpu = cpu_seconds(broker.proc.proc.pid) - broker_cpu
    stored = cloud.db("SELECT COUNT(*) FROM events")[0][0]
    captured = cloud.db("SELECT COUNT(*) FROM txns WHERE kind = 'capture'")[0][0]
    for sim in sims:
        sim.client.loop_stop()
        sim.client.disconnect()
    # Restock counts are booked into the stock book by the cloud's sweeper, behind the acks: how far behind.
    pending_at_end = cloud.db("SELECT COUNT(*) FROM stock_counts_pending")[0][0]
    waited = time.perf_counter()
    while cloud.db("SELECT COUNT(*) FROM stock_counts_pending")[0][0] and time.perf_counter() - waited < args.timeout:
        time.sleep(0.5)
    stock_booked_after = time.perf_counter() - waited
    restocks = cloud.db("SELECT COUNT(*) FROM events WHERE kind = 'restock'")[0][0]
    raw = raw_rate(broker, sample_payload, 2000)
    print(json.dumps({
        "benchmark": "ingest",
        "events_per_s": round(total / elapsed),
        "raw_msgs_per_s": round(raw),
        "raw_events_per_s_equivalent": round(raw * args.batch),
        "events": total,
        "events_stored": stored,
        "sales_captured": captured,
        "resends_asked": sum(sim.resends for sim in sims),
        "seconds": round(elapsed, 2),
        "cloud_cpu_s": round(cloud_cpu, 2),
        "events_per_cloud_cpu_s": round(total / cloud_cpu),
        "broker_cpu_s": round(broker_cpu, 2),
        "restock_counts": restocks,
        "stock_counts_pending_when_acked": pending_at_end,
        "stock_book_caught_up_after_s": round(stock_booked_after, 1),
        "settings": {"machines": args.machines, "batch": args.batch, "window": args.window,
                     "broker": args.broker, "clouds": args.clouds, "store": "postgresql" if args.postgres else "sqlite (WAL, synchronous=FULL)",
                     "payload_bytes": len(sample_payload), "cpus": os.cpu_count()},
    }, indent=2))


if __name__ == "__main__":
    sys.exit(main())
