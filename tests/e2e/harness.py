"""Real processes for end-to-end tests: a broker, the cloud, controllers on simulated hardware, a customer."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import paho.mqtt.client as mqtt

PRODUCTS = [
    ("A1", "water", "Water", 200),
    ("A2", "cola", "Cola", 350),
    ("B1", "chips", "Chips", 600),
    ("B2", "choc", "Chocolate", 550),
]


def broker_kind() -> str:
    """Mosquitto when it is installed (Debian puts it in /usr/sbin), else the embedded amqtt broker;
    VEND_E2E_BROKER=embedded picks the embedded one anyway."""
    if os.environ.get("VEND_E2E_BROKER") == "embedded":
        return "embedded"
    if not shutil.which("mosquitto") and os.path.exists("/usr/sbin/mosquitto"):
        os.environ["PATH"] += os.pathsep + "/usr/sbin"
    return "mosquitto" if shutil.which("mosquitto") else "embedded"


_handed_out: set[int] = set()

# Ports Chromium and Firefox refuse to open ("net::ERR_UNSAFE_PORT"), from Chromium's
# net/base/port_util.cc; 10080 is the one in free_port's range (a browser test failed on it in CI).
BROWSER_UNSAFE_PORTS = frozenset({
    1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104,
    109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515,
    526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049,
    3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
})


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port no one listens on, for a server a test starts. Chosen below the kernel's ephemeral range: a port
    from that range can be taken by any outgoing connection between this check and the server's bind (seen
    in CI as Mosquitto's "Address already in use"), and never one a browser refuses to open. Never the same
    port twice in one run."""
    floor = _ephemeral_floor()
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(10000, floor)
        if port in _handed_out or port in BROWSER_UNSAFE_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def tail(path: str, lines: int = 40) -> str:
    try:
        with open(path) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, argv: list[str], log_path: str, env: dict | None = None):
        self.argv, self.log_path, self.env = argv, log_path, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "a")
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Broker:
    """Mosquitto when it is installed, else the embedded amqtt broker as its own process."""

    def __init__(self, kind: str, workdir: str):
        self.kind = kind
        self.port = free_port()
        self.protocol = "5" if kind == "mosquitto" else "3.1.1"
        os.makedirs(workdir, exist_ok=True)
        if kind == "mosquitto":
            conf = os.path.join(workdir, "mosquitto.conf")
            with open(conf, "w") as f:
                # No persistence: a restart loses every queued message, the hardest case for sync. Nagle off,
                # as the broker the cloud writes for a deployment has it (cloud/provisioning/brokerfiles.py).
                f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 0\nset_tcp_nodelay true\n")
            argv = [shutil.which("mosquitto"), "-c", conf]
        else:
            argv = [sys.executable, "-m", "cloud.broker", "--port", str(self.port)]
        self.proc = Proc(argv, os.path.join(workdir, "broker.log"))

    def start(self) -> None:
        self.proc.start()

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_until(listening, 20, f"{self.kind} to listen on {self.port}")

    def stop(self) -> None:
        self.proc.stop()

    def client(self, client_id: str) -> mqtt.Client:
        version = mqtt.MQTTv5 if self.protocol == "5" else mqtt.MQTTv311
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        return c


def running_broker(workdir: str):
    """A started broker for a test module, stopped when the generator closes (a fixture's body). The kind is
    ``broker_kind()``; with VEND_REQUIRE_MOSQUITTO=1 (set by .ci/run) a missing Mosquitto is an error."""
    kind = broker_kind()
    if kind != "mosquitto" and os.environ.get("VEND_REQUIRE_MOSQUITTO") == "1":
        raise RuntimeError("VEND_REQUIRE_MOSQUITTO=1 but mosquitto is not installed")
    b = Broker(kind, workdir)
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Cloud:
    def __init__(self, broker: Broker, workdir: str, vend_timeout: float = 8, grace: float = 2,
                 var: str | None = None, db_url: str = "", extra: tuple[str, ...] = (), env: dict | None = None,
                 demo_topups: bool = True):
        """``demo_topups``: the harness's customers fill their wallets as the demo's do, with the free
        top-up form (``--demo-topups``)."""
        self.var = var or os.path.join(workdir, "cloud")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "e2e-admin-token"
        self.db_path = os.path.join(self.var, "cloud.db")
        self.db_url = db_url or f"sqlite:///{self.db_path}"
        self.proc = Proc([sys.executable, "-m", "cloud", "--var", self.var, "--http", f"127.0.0.1:{self.port}",
                          "--broker", f"127.0.0.1:{broker.port}", "--mqtt-protocol", broker.protocol,
                          "--vend-timeout", str(vend_timeout), "--expiry-grace", str(grace),
                          "--client-id", f"vend_cloud-{self.port}", "--db", self.db_url,
                          *(("--demo-topups",) if demo_topups else ()), *extra],
                         os.path.join(workdir, f"cloud-{self.port}.log"), env)
        os.environ["VEND_ADMIN_TOKEN"] = self.token

    def start(self) -> None:
        self.proc.start()

        def up():
            if not self.proc.alive():
                raise AssertionError(f"cloud exited:\n{tail(self.proc.log_path)}")
            try:
                return httpx.get(self.url + "/api/v1/health", timeout=2).json()["broker_connected"]
            except (httpx.HTTPError, ValueError):
                return False

        wait_until(up, 60, "the cloud to connect to the broker")

    def stop(self) -> None:
        self.proc.stop()

    def api(self, method: str, path: str, body=None):
        r = httpx.request(method, self.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"},
                          timeout=10)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def machine(self, machine_id: str) -> dict:
        return next(m for m in self.api("GET", "/api/v1/machines") if m["id"] == machine_id)

    def db(self, sql: str, params=()) -> list:
        if not self.db_url.startswith("sqlite"):
            import sqlalchemy as sa

            engine = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                return [tuple(r) for r in conn.exec_driver_sql(sql.replace("?", "%s"), params).all()]
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


class SandboxProvider:
    """The sandbox payment provider (python -m cloud.payments.sandbox) as its own process."""

    def __init__(self, workdir: str, webhook_url: str, secret: str, delay: float = 1.0, decline: str = "13",
                 port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc([sys.executable, "-m", "cloud.payments.sandbox", "--port", str(self.port), "--webhook",
                          webhook_url, "--delay", str(delay), "--decline", decline],
                         os.path.join(workdir, f"sandbox-{self.port}.log"), {"VEND_SANDBOX_SECRET": secret})

    def start(self) -> None:
        self.proc.start()

        def up():
            if not self.proc.alive():
                raise AssertionError(f"sandbox exited:\n{tail(self.proc.log_path)}")
            try:
                return httpx.get(self.url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the sandbox provider to answer")

    def stop(self) -> None:
        self.proc.stop()

    def payment(self, reference: str) -> dict:
        r = httpx.get(f"{self.url}/v1/payments/{reference}", timeout=10)
        return r.json() if r.status_code == 200 else {}

    def operations(self, reference: str, op: str) -> list[dict]:
        return [o for o in self.payment(reference).get("operations", []) if o["op"] == op]

    def events(self, reference: str) -> list[dict]:
        return [e for e in httpx.get(f"{self.url}/v1/events", timeout=10).json()
                if e["event"]["data"]["reference"] == reference]


# The GPIO backend on gpiozero's mock pins, with hw.gpio_sim's machine wired to them: the real driver code.
GPIO_MOCK = """[hardware]
backend = gpio
slots = {slots}
[gpio]
pin_library = mock
motor_rows = A:9 B:10
motor_columns = 1:11 2:12
cam_pin = 22
drop_pin = 23
door_pin = 24
turn_limit_s = {turn_limit}
"""


class Machine:
    """A controller process on a simulated machine (the sim backend, the GPIO backend on mock pins, or the
    serial backend talking to a simulated board), registered in the cloud and stocked."""

    def __init__(self, cloud: Cloud, broker: Broker, workdir: str, machine_id: str, *, drop_delay: float = 0.2,
                 drop_timeout: float = 2.0, jam: str = "", batch_size: int = 50, trace: str = "",
                 backend: str = "sim", turn_limit: float = 4.0, extra: str = "", selftest_show: float = 0.0):
        self.id = machine_id
        self.cloud = cloud
        self.home = os.path.join(workdir, machine_id)
        os.makedirs(self.home, exist_ok=True)
        self.config = os.path.join(self.home, "controller.ini")
        self.ledger_path = os.path.join(self.home, "ledger.db")
        self.url_file = os.path.join(self.home, "screen.url")
        secret = cloud.api("POST", "/api/v1/machines", {"id": machine_id, "name": f"Machine {machine_id}"})["secret"]
        self.secret = secret
        cloud.api("PUT", f"/api/v1/machines/{machine_id}/slots", [
            {"slot": s, "sku": sku, "name": n, "price": p, "currency": "CNY", "capacity": 10}
            for s, sku, n, p in PRODUCTS])
        slots = " ".join(s for s, *_ in PRODUCTS)
        hardware = (GPIO_MOCK.format(slots=slots, turn_limit=turn_limit) if backend == "gpio"
                    else f"[hardware]\nbackend = {backend}\nslots = {slots}\n")
        with open(self.config, "w") as f:
            f.write(f"""[machine]
id = {machine_id}
secret = {secret}
[cloud]
url = {cloud.url}
[mqtt]
host = 127.0.0.1
port = {broker.port}
protocol = {broker.protocol}
batch_size = {batch_size}
window = 4
resend_after_s = 3
keepalive_s = 10
[ledger]
path = {self.ledger_path}
[vend]
drop_timeout_s = {drop_timeout}
{hardware}
[sim]
drop_delay_s = {drop_delay}
jam = {jam}
display_path = {self.home}/screen.png
trace_path = {trace}
[screen]
display = png
rotate_s = 2
url_file = {self.url_file}
selftest_wait_s = 10
selftest_show_s = {selftest_show}
[service]
socket = {self.home}/control.sock
{extra}""")
        self.proc = Proc([sys.executable, "-m", "controller", "--config", self.config],
                         os.path.join(self.home, "controller.log"))

    def start(self) -> None:
        self.proc.start()
        wait_until(lambda: os.path.exists(self.url_file) and self.service("status").get("ok"), 30,
                   f"controller {self.id} to start")
        if self.cloud.proc.alive():
            # A controller refuses vends until it has heard the cloud's clock (it answers the first status).
            wait_until(lambda: self.service("status").get("clock") != "unset", 30,
                       f"controller {self.id} to hear the cloud's clock")

    def service(self, *args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "controller", "--config", self.config, "service", *args],
                             capture_output=True, text=True, timeout=30)
        try:
            return json.loads(out.stdout)
        except ValueError:
            return {"ok": False, "error": out.stderr}

    def request(self, request: dict) -> dict:
        """One request straight to the controller's service socket (what `vend-controller service` sends)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(15)
            sock.connect(os.path.join(self.home, "control.sock"))
            sock.sendall(json.dumps(request).encode() + b"\n")
            return json.loads(sock.makefile("rb").readline())

    def stock(self) -> None:
        assert self.service("restock", *(f"{s}=10" for s, *_ in PRODUCTS))["ok"]
        wait_until(lambda: self.synced(), 20, f"{self.id}'s restock to reach the cloud")

    def ledger(self, sql: str = "SELECT seq, kind, data, hash FROM events ORDER BY seq", params=()) -> list:
        conn = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def head(self) -> int:
        return self.ledger("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0]

    def synced(self) -> bool:
        return self.cloud.machine(self.id)["cloud_head"] == self.head()

    def events_of(self, kind: str) -> list[dict]:
        return [json.loads(d) for d, in self.ledger("SELECT data FROM events WHERE kind = ? ORDER BY seq", (kind,))]


class Customer:
    """A phone: a cookie jar that scans, registers, tops up, buys and watches its order."""

    def __init__(self, cloud: Cloud, name: str, phone: str):
        self.cloud = cloud
        self.http = httpx.Client(base_url=cloud.url, follow_redirects=False, timeout=10)
        self.name, self.phone = name, phone

    def scan(self, machine: Machine) -> httpx.Response:
        with open(machine.url_file) as f:
            url = f.read().strip()
        return self.http.get(url.replace(self.cloud.url, ""))

    def post_form(self, path: str, data: dict) -> httpx.Response:
        """A form sent as the phone's browser sends it: with the anti-forgery token its pages carry."""
        token = ""
        own = [path.rsplit("/", 1)[0]] if path.endswith("/buy") else []
        for page in own + ["/register", "/wallet", "/signin"]:
            match = re.search(r'name="csrf" value="([^"]*)"', self.http.get(page).text)
            if match:
                token = match.group(1)
                break
        return self.http.post(path, data={**data, "csrf": token})

    def register(self, next_path: str, method: str = "wallet") -> httpx.Response:
        return self.post_form("/register", {"name": self.name, "phone": self.phone, "payment_method": method,
                                            "next": next_path})

    def topup(self, amount: str) -> httpx.Response:
        return self.post_form("/wallet/topup", {"amount": amount, "key": os.urandom(8).hex()})

    def balance(self) -> str:
        page = self.http.get("/wallet").text
        return re.search(r'id="balance">([^<]+)<', page).group(1)

    def buy(self, machine: Machine, slot: str, key: str | None = None) -> httpx.Response:
        return self.post_form(f"/m/{machine.id}/buy", {"slot": slot, "key": key or os.urandom(8).hex()})

    def order_status(self, order_id: str) -> dict:
        return self.http.get(f"/api/v1/orders/{order_id}").json()

    def wait_settled(self, order_id: str, timeout: float = 30) -> dict:
        return wait_until(lambda: (s := self.order_status(order_id))["settled"] and s, timeout,
                          f"order {order_id} to settle")
