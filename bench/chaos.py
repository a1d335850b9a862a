"""The fault run: Mosquitto, the cloud and N controllers as real processes, customers buying while faults are
injected at random, then plain SQL over every ledger and the cloud's database.

    python bench/chaos.py --minutes 20 --machines 4 --seed 1 [--postgres URL] [--clouds 2 [--web-cloud]]

Faults (``--kinds`` to choose): SIGKILL of a controller mid-vend, SIGKILL of a cloud process (restarted),
broker restarts, a broker outage of a few seconds around a purchase, replays of captured MQTT messages,
garbage and deeply nested messages (retained too) on topics the machines and the cloud read, wall-clock
steps of a controller, a machine's ledger replaced by a fresh one (a new card), and power cuts (every
ledger write not yet synced is lost: ``bench/powercut.c``). ``--every-kind-first`` starts with one fault of
each kind, so a short run covers them all. The checks are in ``bench/_chaos_checks.py``; the JSON summary
goes to stdout, the exit status is 1 when there is any anomaly.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import sqlalchemy as sa

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _fleet  # noqa: E402,F401  (puts the repository and tests/e2e on the path)
import _chaos_checks as checks  # noqa: E402
import _powercut as powercut  # noqa: E402
from harness import PRODUCTS, Broker, Cloud, Customer, Machine, Proc, SandboxProvider, free_port, wait_until  # noqa: E402

KINDS = ("controller_kill", "cloud_kill", "broker_restart", "broker_outage", "replay", "garbage", "clock_jump",
         "ledger_replace", "power_cut")
DISRUPTIVE = ("controller_kill", "cloud_kill", "broker_restart", "broker_outage", "ledger_replace", "power_cut")
SANDBOX_SECRET = "chaos-sandbox-webhook-secret"
VEND_TIMEOUT_S, GRACE_S = 8, 2
# Every customer shares 127.0.0.1, as phones share a carrier's address: the per-address limits would refuse
# the run's own traffic, so they are off; the per-phone ones stay.
RATE_LIMITS = "landing_address=off,register_address=off,topup_address=off,login_address=off"
LEDGER_LINE = re.compile(r"^INFO controller\.daemon: ledger (\d+) ([\w.]+)[ :]")


def garbage_payloads(rng: random.Random) -> list[bytes]:
    """What a broken or hostile client might publish: bytes, bad JSON, wrong shapes, deep nesting, huge."""
    return [
        bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))),
        b"\xff\xfe\xfa not utf-8",
        b"[" * 5000, b"{\"a\":" * 3000 + b"1" + b"}" * 3000, b"[" * 100000,
        b"{}", b"null", b"[]", b"\"\"", b"1e999", b"{\"seq\": -1, \"cloud_time\": \"yesterday\"}",
        json.dumps({"events": [{"seq": 1, "kind": "vend.succeeded", "hash": "0" * 64}], "ledger": "x"}).encode(),
        json.dumps({"id": "v-forged", "kind": "vend", "issued_at": "2020-01-01T00:00:00Z",
                    "expires_at": "2999-01-01T00:00:00Z", "args": {"order_id": 5, "slot": ["A1"]}}).encode(),
        b"{\"x\": \"" + b"\\ud800" * 50 + b"\"}",
        b"x" * 300_000,
    ]


class Capture:
    """A client on every machine topic: keeps the last minute of messages to replay, and publishes faults."""

    def __init__(self, broker: Broker):
        self.messages: collections.deque = collections.deque(maxlen=4000)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"chaos-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe("vend/v1/#", qos=1)
        self.client.on_message = lambda c, u, m: self.messages.append((time.monotonic(), m.topic, m.payload,
                                                                       m.retain))
        self.client.reconnect_delay_set(0.2, 2)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def recent(self, seconds: float) -> list:
        cut = time.monotonic() - seconds
        return [m for m in list(self.messages) if m[0] >= cut and not m[3]]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        return self.client.publish(topic, payload, qos=1, retain=retain).rc == mqtt.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class ChaosMachine:
    """One controller under faults: its process (on the stepped clock, under the power-cut library), its
    ledger generations and what it logged it had written."""

    def __init__(self, run: "Chaos", machine_id: str, drop_delay: float):
        self.run = run
        self.home = os.path.join(run.work, "machines")
        self.trace = os.path.join(self.home, machine_id, "motor.trace")
        self.m = Machine(run.clouds[0], run.broker, self.home, machine_id, drop_delay=drop_delay, drop_timeout=2.0,
                         jam="B2", trace=self.trace)
        self.id = machine_id
        self.clock_file = os.path.join(self.m.home, "clock.offset")
        self.shadow = os.path.join(self.m.home, "powercut")
        self.generations: list[str] = []  # ledger files of earlier cards, oldest first
        self.lock = threading.Lock()  # held by a fault that takes the machine down
        self.paused = False  # no new purchases (a card being replaced)
        self.buying = 0
        self.started_at = 0.0
        self.clock_stepped_at = 0.0
        self.log_offset = 0
        env = {"VEND_CHAOS_CLOCK_FILE": self.clock_file}
        if run.powercut_lib:
            env.update(powercut.env(run.powercut_lib, self.m.ledger_path, self.shadow))
        self.m.proc = Proc([sys.executable, os.path.join(HERE, "chaos_controller.py"), "--config", self.m.config],
                           os.path.join(self.m.home, "controller.log"), env)

    def start(self) -> None:
        if self.run.powercut_lib:
            powercut.forget(self.shadow)  # what is on disk now is what a new boot finds
        try:
            self.log_offset = os.path.getsize(self.m.proc.log_path)
        except OSError:
            self.log_offset = 0
        self.m.proc.start()
        wait_until(self.answers, 60, f"controller {self.id} to start", interval=0.2)
        self.started_at = time.monotonic()

    def answers(self) -> bool:
        if not self.m.proc.alive():
            raise AssertionError(f"controller {self.id} exited with status {self.m.proc.proc.returncode}:\n"
                                 f"{checks.tail(self.m.proc.log_path, 8)}")
        try:
            return bool(self.m.request({"op": "status"}).get("ok"))
        except (OSError, ValueError):
            return False

    def logged_events(self) -> list[tuple[int, str]]:
        """(seq, kind) of every event this process logged as written: the append had returned."""
        with open(self.m.proc.log_path, errors="replace") as f:
            f.seek(self.log_offset)
            return [(int(m.group(1)), m.group(2)) for m in map(LEDGER_LINE.match, f) if m]

    def restock(self) -> bool:
        try:
            return bool(self.m.request({"op": "restock", "counts": {s: 10 for s, *_ in PRODUCTS}}).get("ok"))
        except (OSError, ValueError):
            return False

    def vend_in_progress(self, before: int) -> bool:
        try:
            return os.path.getsize(self.trace) > before
        except OSError:
            return False

    def trace_size(self) -> int:
        try:
            return os.path.getsize(self.trace)
        except OSError:
            return 0


class Shopper:
    """A customer with a phone (one cookie jar), paying by wallet or through the sandbox provider."""

    def __init__(self, run: "Chaos", n: int, method: str):
        self.run = run
        self.cloud = run.clouds[n % len(run.clouds)]
        self.c = Customer(self.cloud, f"Chaos Customer {n}", f"+8613{700000000 + n}")
        self.method = method
        self.registered = False
        self.buys = 0

    def scan(self, machine: ChaosMachine) -> httpx.Response:
        with open(machine.m.url_file) as f:
            url = urlsplit(f.read().strip())
        return self.c.http.get(url.path + (f"?{url.query}" if url.query else ""))

    def post_buy(self, machine: ChaosMachine, slot: str, key: str) -> str | None:
        """One tap on "buy": the order's id, or None when the cloud refused (sold out, offline, declined...)."""
        r = self.c.buy(machine.m, slot, key)
        if r.status_code == 303 and r.headers.get("location", "").startswith("/orders/"):
            return r.headers["location"].rsplit("/", 1)[1]
        title = re.search(r"<h1[^>]*>([^<]*)<", r.text)
        if r.status_code >= 500:
            self.run.anomaly("purchase_answered_5xx", machine=machine.id, status=r.status_code, key=key,
                             body=r.text[:300])
        self.run.count("purchase_refused", f"{r.status_code} {title.group(1).strip() if title else ''}".strip())
        return None


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = tempfile.mkdtemp(prefix="vend-chaos-")
        self.faults: collections.Counter = collections.Counter()
        self.skipped: collections.Counter = collections.Counter()
        self.purchases: collections.Counter = collections.Counter()
        self.anomalies: list[dict] = []
        self.figures: dict = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.db_url, self.pg_name = "", ""
        self.powercut_lib = ""
        self.clouds: list[Cloud] = []
        self.machines: list[ChaosMachine] = []

    # -- bookkeeping ----------------------------------------------------------------------------------

    def count(self, what: str, detail: str = "") -> None:
        with self.lock:
            self.purchases[what + (f":{detail}" if detail else "")] += 1

    def anomaly(self, kind: str, **evidence) -> None:
        with self.lock:
            self.anomalies.append({"kind": kind, **evidence})

    # -- setup and teardown ---------------------------------------------------------------------------

    def setup(self) -> None:
        a = self.args
        if "power_cut" in a.kinds:
            self.powercut_lib = powercut.build(self.work)
        if a.postgres:
            self.pg_name = f"vend_chaos_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(a.postgres, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {self.pg_name}")
            admin.dispose()
            self.db_url = a.postgres.rsplit("/", 1)[0] + "/" + self.pg_name
        self.broker = Broker("mosquitto", os.path.join(self.work, "broker"))
        self.broker.start()
        self.sandbox_port = free_port()
        extra = ("--rate-limits", RATE_LIMITS, "--sandbox-url", f"http://127.0.0.1:{self.sandbox_port}",
                 "--sandbox-confirm-timeout", "20")
        env = {"VEND_SANDBOX_SECRET": SANDBOX_SECRET}
        first = Cloud(self.broker, self.work, vend_timeout=VEND_TIMEOUT_S, grace=GRACE_S, db_url=self.db_url,
                      extra=extra + (("--no-ingest",) if a.web_cloud else ()), env=env)
        self.clouds = [first]
        for _ in range(a.clouds - 1):
            self.clouds.append(Cloud(self.broker, self.work, vend_timeout=VEND_TIMEOUT_S, grace=GRACE_S,
                                     var=first.var, db_url=first.db_url, extra=extra, env=env))
        for c in self.clouds:
            c.start()
        self.sandbox = SandboxProvider(self.work, first.url + "/api/v1/payments/webhook/sandbox", SANDBOX_SECRET,
                                       delay=0.5, port=self.sandbox_port)
        self.sandbox.start()
        for i in range(a.machines):
            m = ChaosMachine(self, f"c{i + 1}", drop_delay=0.3 if i % 2 == 0 else 1.2)
            m.start()
            assert m.restock(), f"restock of {m.id}"
            self.machines.append(m)
        wait_until(lambda: all(self.synced(m) for m in self.machines), 60, "the machines' restocks to sync")
        self.capture = Capture(self.broker)
        self.shoppers = [Shopper(self, n, "sandbox" if n % 3 == 2 else "wallet")
                         for n in range(max(3, 2 * a.machines))]

    def teardown(self) -> None:
        for m in self.machines:
            m.m.proc.stop()
        for c in self.clouds:
            c.stop()
        for part in ("capture", "sandbox", "broker"):
            thing = getattr(self, part, None)
            if thing is not None:
                (thing.close if part == "capture" else thing.stop)()
        if self.pg_name:
            admin = sa.create_engine(self.args.postgres, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)")
            admin.dispose()
        if self.args.keep:
            print(f"work folder kept: {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- the cloud's view -----------------------------------------------------------------------------

    def engine(self) -> sa.Engine:
        if not hasattr(self, "_engine"):
            self._engine = sa.create_engine(self.clouds[0].db_url, poolclass=sa.pool.NullPool)
        return self._engine

    def sql(self, query: str, params: dict | None = None) -> list:
        for attempt in range(20):
            try:
                with self.engine().connect() as conn:
                    return [tuple(r) for r in conn.execute(sa.text(query), params or {})]
            except sa.exc.OperationalError:  # SQLite busy under load: ask again
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"the cloud's database did not answer: {query}")

    def ledger_id(self, m: ChaosMachine) -> tuple[str, int]:
        conn = sqlite3.connect(f"file:{m.m.ledger_path}?mode=ro", uri=True, timeout=10)
        try:
            return (conn.execute("SELECT ledger_id FROM identity").fetchone()[0],
                    conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
        finally:
            conn.close()

    def synced(self, m: ChaosMachine) -> bool:
        try:
            ledger, head = self.ledger_id(m)
        except sqlite3.Error:
            return False
        row = self.sql("SELECT ledger_id, cloud_head FROM machines WHERE id = :m", {"m": m.id})
        return bool(row) and row[0] == (ledger, head)

    # -- customers ------------------------------------------------------------------------------------

    def shop(self, shopper: Shopper, machine: ChaosMachine, style: str = "") -> list[str]:
        """One visit: scan, register the first time, top up now and then, buy (a double tap sometimes), and
        follow the orders until they settle. The order ids placed."""
        c = shopper.c
        try:
            scan = shopper.scan(machine)
            if scan.status_code != 303:
                self.count("scan_refused", str(scan.status_code))
                quiet = time.monotonic() - max(machine.started_at, machine.clock_stepped_at)
                if scan.status_code == 410 and quiet > 20:
                    self.anomaly("qr_refused", machine=machine.id, status=scan.status_code,
                                 seconds_since_start_or_clock_step=round(quiet, 1), body=scan.text[:300])
                return []
            if not shopper.registered:
                r = c.register(f"/m/{machine.id}", method=shopper.method)
                if r.status_code != 303:
                    self.count("register_refused", str(r.status_code))
                    return []
                shopper.registered = True
            if shopper.method == "wallet" and shopper.buys % 8 == 0:
                r = c.topup("50.00")
                self.count("topup" if r.status_code in (200, 303) else "topup_refused", "" if r.status_code in
                           (200, 303) else str(r.status_code))
            shopper.buys += 1
            style = style or self.rng.choices(("single", "same_key", "two_keys"), (70, 15, 15))[0]
            slot = self.rng.choice(PRODUCTS)[0]
            if style == "single":
                ids = [shopper.post_buy(machine, slot, os.urandom(8).hex())]
            else:
                keys = [os.urandom(8).hex()] * 2 if style == "same_key" else [os.urandom(8).hex() for _ in "ab"]
                ids = [None, None]

                def tap(i):
                    try:
                        ids[i] = shopper.post_buy(machine, slot, keys[i])
                    except httpx.HTTPError:
                        self.count("cloud_unreachable")

                taps = [threading.Thread(target=tap, args=(i,)) for i in range(2)]
                for t in taps:
                    t.start()
                for t in taps:
                    t.join()
                if style == "same_key" and ids[0] and ids[1] and ids[0] != ids[1]:
                    self.anomaly("same_key_two_orders", customer=c.phone, orders=ids)
            self.count("visit", style)
            ids = [i for i in dict.fromkeys(ids) if i]
            for order_id in ids:
                self.follow(c, order_id)
            return ids
        except httpx.HTTPError:
            self.count("cloud_unreachable")
            return []

    def follow(self, c: Customer, order_id: str) -> None:
        deadline = time.monotonic() + VEND_TIMEOUT_S + GRACE_S + 25
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                status = c.order_status(order_id)
                if status.get("settled"):
                    self.count("order_seen", status["status"])
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        self.count("order_not_followed_to_the_end")

    def customer_loop(self, shopper: Shopper) -> None:
        rng = random.Random(self.rng.random())
        while not self.stop.is_set():
            machines = [m for m in self.machines if not m.paused]
            if machines:
                machine = rng.choice(machines)
                machine.buying += 1
                try:
                    self.shop(shopper, machine)
                finally:
                    machine.buying -= 1
            self.stop.wait(rng.uniform(0.3, 1.5))

    def technician_loop(self) -> None:
        """Every machine restocked now and then (slots run out; a jam leaves its slot out of service)."""
        while not self.stop.wait(15):
            for m in self.machines:
                if not m.paused and m.m.proc.alive():
                    m.restock()

    # -- faults ---------------------------------------------------------------------------------------

    def fault(self, kind: str) -> None:
        ok = getattr(self, "f_" + kind)()
        (self.faults if ok is not False else self.skipped)[kind] += 1

    def pick_machine(self) -> ChaosMachine:
        return self.rng.choice(self.machines)

    def restart_controller(self, m: ChaosMachine) -> None:
        try:
            m.start()
        except AssertionError as e:
            self.anomaly("controller_did_not_restart", machine=m.id, error=str(e)[:300],
                         log=checks.tail(m.m.proc.log_path))
            raise

    def kill_mid_vend(self, m: ChaosMachine) -> bool:
        """Start a purchase on ``m`` and SIGKILL its controller as soon as its motor turns (or after 10 s)."""
        before = m.trace_size()
        shopper = self.rng.choice([s for s in self.shoppers if s.registered] or self.shoppers)
        buyer = threading.Thread(target=self.shop, args=(shopper, m, "single"), daemon=True)
        buyer.start()
        mid_vend = False
        try:
            wait_until(lambda: m.vend_in_progress(before), 10, "a vend", interval=0.02)
            mid_vend = True
        except AssertionError:
            pass
        m.m.proc.signal(signal.SIGKILL)
        m.m.proc.proc.wait()
        return mid_vend

    def f_controller_kill(self):
        m = self.pick_machine()
        with m.lock:
            if self.kill_mid_vend(m):
                self.faults["controller_kill_mid_vend"] += 1
            self.restart_controller(m)

    def f_power_cut(self):
        m = self.pick_machine()
        with m.lock:
            if self.rng.random() < 0.6 and self.kill_mid_vend(m):
                self.faults["power_cut_mid_vend"] += 1
            else:
                m.m.proc.signal(signal.SIGKILL)
                m.m.proc.proc.wait()
            put_back = powercut.restore(m.m.ledger_path, m.shadow)
            self.figures["power_cut_files_restored"] = self.figures.get("power_cut_files_restored", 0) + len(put_back)
            checks.after_power_cut(self, m)
            self.restart_controller(m)

    def f_cloud_kill(self):
        c = self.rng.choice(self.clouds)
        c.proc.signal(signal.SIGKILL)
        c.proc.proc.wait()
        time.sleep(self.rng.uniform(0, 2))
        t0 = time.monotonic()
        try:
            c.start()
        except AssertionError:
            # The harness waits 60 s; on a box shared with other work a start can take longer. Slow is
            # counted; a cloud that does not come back in four minutes is an anomaly.
            if not c.proc.alive():
                raise
            wait_until(lambda: self.cloud_connected(c), 180, "the restarted cloud to connect to the broker")
        took = round(time.monotonic() - t0, 1)
        self.figures["cloud_restart_max_s"] = max(self.figures.get("cloud_restart_max_s", 0), took)

    @staticmethod
    def cloud_connected(c: Cloud) -> bool:
        try:
            return httpx.get(c.url + "/api/v1/health", timeout=2).json()["broker_connected"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def f_broker_restart(self):
        self.broker.stop()
        self.broker.start()

    def f_broker_outage(self):
        """The broker goes away for a few seconds while a customer buys (finding 1: a vend command queued by
        paho while the broker was away is delivered when it returns)."""
        m = self.pick_machine()
        self.broker.proc.signal(signal.SIGKILL)
        self.broker.proc.proc.wait()
        shopper = self.rng.choice([s for s in self.shoppers if s.registered] or self.shoppers)
        buyer = threading.Thread(target=self.shop, args=(shopper, m, "single"), daemon=True)
        buyer.start()
        time.sleep(self.rng.uniform(2, 6))
        self.broker.start()

    def f_replay(self):
        recent = self.capture.recent(60)
        if not recent:
            return False
        for _, topic, payload, _retain in self.rng.sample(recent, min(len(recent), self.rng.randint(1, 5))):
            self.capture.publish(topic, payload)
        self.figures["messages_replayed"] = self.figures.get("messages_replayed", 0) + 1

    def f_garbage(self):
        m = self.pick_machine()
        topic = f"vend/v1/{m.id}/" + self.rng.choice(("cmd", "ack", "config", "events", "status", "cmd/result",
                                                      "telemetry"))
        payload = self.rng.choice(garbage_payloads(self.rng))
        retain = self.rng.random() < 0.2
        self.capture.publish(topic, payload, retain=retain)
        self.figures["garbage_messages"] = self.figures.get("garbage_messages", 0) + 1
        if retain:
            self.figures["garbage_retained"] = self.figures.get("garbage_retained", 0) + 1

    def f_clock_jump(self):
        m = self.pick_machine()
        offset = self.rng.choice((0, 0, -30, 45, -600, 900, -3600, 3600, 86400, -86400 * 365 * 5))
        with open(m.clock_file, "w") as f:
            f.write(str(offset))
        m.clock_stepped_at = time.monotonic()
        # Not while another fault restarts it: a process that has not yet set its handler dies of SIGUSR1
        # (it reads the file when it starts anyway).
        if m.lock.acquire(blocking=False):
            try:
                if m.m.proc.alive():
                    m.m.proc.signal(signal.SIGUSR1)
            finally:
                m.lock.release()

    def f_ledger_replace(self):
        """A new card: the machine is stopped when it has nothing unsynced, its ledger put aside, and it
        starts again on a fresh one (finding 2)."""
        m = self.pick_machine()
        with m.lock:
            m.paused = True
            try:
                try:
                    wait_until(lambda: m.buying == 0 and self.synced(m), 40, f"{m.id} to be idle and synced")
                except AssertionError:
                    self.figures.setdefault("ledger_replace_skipped", []).append(
                        {"machine": m.id, "buying": m.buying, "ledger": self.ledger_id(m),
                         "cloud": self.sql("SELECT ledger_id, cloud_head FROM machines WHERE id = :m", {"m": m.id})})
                    return False
                m.m.proc.stop()
                if not self.synced(m):
                    self.restart_controller(m)
                    return False
                n = len(m.generations) + 1
                old = os.path.join(m.m.home, f"ledger-card{n}.db")
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(m.m.ledger_path + suffix):
                        os.rename(m.m.ledger_path + suffix, old + suffix)
                m.generations.append(old)
                self.restart_controller(m)
                m.restock()
            finally:
                m.paused = False

    def fault_loop(self, kinds: tuple[str, ...], pace: tuple[float, float], first: list[str]) -> None:
        queue = list(first)
        while not self.stop.is_set():
            kind = queue.pop(0) if queue else self.rng.choice(kinds)
            try:
                self.fault(kind)
            except Exception as e:  # noqa: BLE001 - a fault that breaks the harness is itself reported
                self.anomaly("fault_failed", fault=kind, error=f"{type(e).__name__}: {e}"[:500])
            self.stop.wait(self.rng.uniform(*pace))

    # -- the run --------------------------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        t0 = time.monotonic()
        self.setup()
        self.figures["setup_s"] = round(time.monotonic() - t0, 1)
        disruptive = tuple(k for k in a.kinds if k in DISRUPTIVE)
        noise = tuple(k for k in a.kinds if k not in DISRUPTIVE)
        first = list(a.kinds) if a.every_kind_first else []
        self.rng.shuffle(first)
        threads = [threading.Thread(target=self.customer_loop, args=(s,), daemon=True) for s in self.shoppers]
        threads.append(threading.Thread(target=self.technician_loop, daemon=True))
        if disruptive:
            threads.append(threading.Thread(target=self.fault_loop, daemon=True, args=(
                disruptive, (a.pace, 2 * a.pace), [k for k in first if k in disruptive])))
        if noise:
            threads.append(threading.Thread(target=self.fault_loop, daemon=True, args=(
                noise, (a.pace / 10, a.pace / 5), [k for k in first if k in noise])))
        for t in threads:
            t.start()
        self.stop.wait(a.minutes * 60)
        self.stop.set()
        for t in threads:
            t.join(120)
        self.figures["faults_s"] = round(time.monotonic() - t0 - self.figures["setup_s"], 1)
        checks.settle(self)
        for m in self.machines:
            m.m.proc.stop()
        for c in self.clouds:
            c.stop()
        checks.final(self)
        summary = self.summary()
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 1 if self.anomalies else 0

    def summary(self) -> dict:
        a = self.args
        return {
            "seed": a.seed, "minutes": a.minutes, "machines": a.machines, "clouds": a.clouds,
            "web_cloud": a.web_cloud,
            "database": "postgresql" if a.postgres else "sqlite", "power_cut_mode": bool(self.powercut_lib),
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(n for k, n in self.faults.items() if k in KINDS),
            "faults_skipped": dict(self.skipped), "customers": dict(sorted(self.purchases.items())),
            **self.figures, "anomaly_count": len(self.anomalies), "anomalies": self.anomalies,
        }


def parse(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="how long faults are injected (default 20)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--machines", type=int, default=4)
    p.add_argument("--clouds", type=int, default=1, choices=(1, 2),
                   help="cloud processes sharing the ingest through an MQTT 5 shared subscription")
    p.add_argument("--web-cloud", action="store_true",
                   help="with --clouds 2: the first answers people only (vend-cloud --no-ingest), the second stores "
                        "the machines' messages")
    p.add_argument("--postgres", default="", metavar="URL",
                   help="run the cloud on a throwaway database made on this PostgreSQL server (dropped after)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"faults to inject, comma-separated (default all: "
                                                             f"{','.join(KINDS)})")
    p.add_argument("--pace", type=float, default=4.0,
                   help="seconds between disruptive faults (1 to 2 times this); noise comes 10 times as often")
    p.add_argument("--every-kind-first", action="store_true", help="start with one fault of every kind")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, ledgers, databases)")
    args = p.parse_args(argv)
    args.kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        p.error(f"--kinds: no fault {', '.join(unknown)}; the kinds are {', '.join(KINDS)}")
    if args.web_cloud and args.clouds != 2:
        p.error("--web-cloud: give --clouds 2 (one answers people, the other stores the machines' messages)")
    if not 1 <= args.machines <= 32:
        p.error("--machines: from 1 to 32")
    return args


def main(argv: list[str] | None = None) -> int:
    run = Chaos(parse(argv))
    try:
        return run.run()
    finally:
        run.stop.set()
        run.teardown()


if __name__ == "__main__":
    sys.exit(main())
