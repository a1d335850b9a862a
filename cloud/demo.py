"""``make demo``: the cloud with its embedded broker and SQLite, and four simulated machines.

Everything lives under ``./var``. The machines are created in the cloud through its API, as a manager
would, and restocked through each controller's service socket, as a technician would. The fourth is an
existing machine retrofitted as an MDB cashless device (``hw/mdb.py``): its vending machine controller is
``python -m hw.mdb_sim`` on a pty, whose simulated customer presses the paid selection a moment after paying.
Ctrl-C stops the controllers first, then the simulated VMC and the cloud.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta, timezone

from cloud.cli import Client, CliError
from cloud.core.settings import read_or_create
from cloud.demo_history import draw_picture, write_ledger

VAR = os.path.abspath(os.environ.get("VEND_DEMO_VAR", "var"))
HTTP = os.environ.get("VEND_DEMO_HTTP", "127.0.0.1:8000")
BROKER_PORT = int(os.environ.get("VEND_DEMO_BROKER_PORT", "1884"))
PUBLIC_URL = os.environ.get("VEND_DEMO_PUBLIC_URL", f"http://{HTTP}")
SANDBOX_PORT = int(os.environ.get("VEND_DEMO_SANDBOX_PORT", "8010"))  # the sandbox payment provider

# slot, SKU, name, price, cost (what the supplier charges), how it looks (demo_history.draw_picture), how
# often it sells against the others.
PRODUCTS = [
    ("A1", "water-500", "Mineral water 500 ml", 200, 80, ("bottle", "#2f80c8"), 5),
    ("A2", "cola-330", "Cola 330 ml", 350, 150, ("can", "#c0392b"), 4),
    ("A3", "tea-500", "Iced green tea 500 ml", 400, 170, ("bottle", "#3c9a4a"), 3),
    ("B1", "chips-70", "Potato chips 70 g", 600, 260, ("packet", "#e0a21b"), 3),
    ("B2", "choc-45", "Chocolate bar 45 g", 550, 240, ("packet", "#6b3d1f"), 2),
    ("B3", "nuts-50", "Salted peanuts 50 g", 500, 210, ("packet", "#b5651d"), 1),
]
CAPACITY = 20
SUPPLIER = "Huadong Drinks & Snacks Co."
ROUTE = "Central loop"
MACHINES = [
    ("demo-1", "Library, ground floor", ""),
    ("demo-2", "Station concourse", ""),
    # One machine with a jammed spiral, to show what a customer sees when nothing drops.
    ("demo-3", "Gym lobby", "B2"),
    # An existing machine sold through its own controller over MDB (see MDB_MACHINE).
    ("demo-4", "Office canteen", ""),
]
MDB_MACHINE = "demo-4"
# Each machine's name for a Chinese-speaking manager (zh-CN), set through the API as a manager renames one.
MACHINE_NAMES_ZH = {"demo-1": "图书馆一楼", "demo-2": "车站大厅", "demo-3": "健身房大堂",
                    "demo-4": "办公楼食堂"}
# Where the demo machines stand (name, address, latitude, longitude), for the dashboard's map.
LOCATIONS = {
    "demo-1": ("City library", "1 Library Road", 31.2304, 121.4737),
    "demo-2": ("Central station", "Station Square", 31.2495, 121.4555),
    "demo-3": ("Riverside gym", "88 Riverside Avenue", 31.2197, 121.4960),
    "demo-4": ("Office tower", "200 Century Avenue", 31.2354, 121.5055),
}
LOCATION_NAMES_ZH = {"demo-1": "市图书馆", "demo-2": "中央车站", "demo-3": "江畔健身房", "demo-4": "写字楼"}
MANAGER = "manager"


def vmc_argv(home: str) -> list[str]:
    """The MDB machine's simulated controller: its selections 1-6 are the slots in order, at the same prices,
    on a pty reached through a symlink that the config names (the pty's own name changes every run)."""
    items = ",".join(f"{i}={price // 100}.{price % 100:02d}" for i, (_, _, _, price, *_) in enumerate(PRODUCTS, 1))
    return [sys.executable, "-m", "hw.mdb_sim", "--items", items, "--select-delay", "2",
            "--link", os.path.join(home, "vmc.tty")]


def hardware_ini(machine_id: str, home: str, jam: str) -> str:
    slots = ", ".join(slot for slot, *_ in PRODUCTS)
    if machine_id == MDB_MACHINE:
        return f"""[hardware]
backend = mdb
slots = {slots}

[mdb]
port = {home}/vmc.tty

[sim]
display_path = {home}/screen.png
"""
    return f"""[hardware]
backend = sim
slots = {slots}

[sim]
drop_delay_s = 0.8
jam = {jam}
display_path = {home}/screen.png
"""


def controller_ini(machine_id: str, name: str, secret: str, jam: str) -> str:
    home = os.path.join(VAR, "machines", machine_id)
    return f"""# Written by make demo: a simulated machine on this computer.
[machine]
id = {machine_id}
name = {name}
secret = {secret}

[cloud]
url = {PUBLIC_URL}

[mqtt]
host = 127.0.0.1
port = {BROKER_PORT}
protocol = 3.1.1

[ledger]
path = {home}/ledger.db

{hardware_ini(machine_id, home, jam)}
[screen]
display = png
url_file = {home}/screen.url
selftest_show_s = 0

[service]
socket = {home}/control.sock
"""


def wait_for(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the cloud exited with code {proc.returncode}; see {VAR}/cloud.log")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if json.loads(r.read()).get("broker_connected"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the cloud did not come up at {url}; see {VAR}/cloud.log")


def service(config: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "controller", "--config", config, "service", *args],
                         capture_output=True, text=True, timeout=30)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {"ok": False, "error": out.stderr.strip()}


def demo_manager(client: Client) -> str:
    """A manager account for the dashboard, made once; its password is kept beside the admin token."""
    path = os.path.join(VAR, "cloud", "demo-manager-password")
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    password = "-".join(secrets.token_hex(3) for _ in range(3))
    client.call("POST", "/api/v1/people", {"username": MANAGER, "role": "manager", "password": password})
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(password + "\n")
    return password


def seed_catalogue(client: Client) -> None:
    """The products with their costs, and a picture of each drawn here, as a manager would upload it."""
    for slot, sku, name, price, cost, (shape, colour), _ in PRODUCTS:
        if any(p["sku"] == sku for p in client.call("GET", f"/api/v1/products?search={sku}")):
            continue
        client.call("POST", "/api/v1/products", {"sku": sku, "name": name, "cost": cost, "price": price,
                                                 "currency": "CNY", "reorder_level": 2 * CAPACITY})
        client.send("PUT", f"/api/v1/products/{sku}/picture", draw_picture(name, shape, colour), "image/png")


def place_rule(client: Client, location_id: int, index: int) -> None:
    """Each place takes its share: a percentage of the gross for most, a flat monthly rent for one."""
    start = (date.today() - timedelta(days=120)).replace(day=1).isoformat()
    rule = ({"kind": "flat_monthly", "amount": 30000} if index % 2 else
            {"kind": "percent_gross", "percent": 10 + 2.5 * index})
    client.call("POST", f"/api/v1/locations/{location_id}/settlement-rules",
                {**rule, "currency": "CNY", "valid_from": start})


def seed_stock(client: Client) -> None:
    """A supplier, two purchase orders delivered into the warehouse and one on its way, and the route the
    technician drives; made once (found by name the next time)."""
    if not any(s["name"] == SUPPLIER for s in client.call("GET", "/api/v1/suppliers")):
        supplier = client.call("POST", "/api/v1/suppliers", {
            "name": SUPPLIER, "contact": "Ms Chen", "phone": "+86 21 5555 0188", "email": "orders@huadong.example",
            "address": "18 Jinqiao Road, Pudong", "lead_time_days": 3})
        skus = {p["sku"]: p for p in client.call("GET", "/api/v1/products")}
        # Enough for what the history loads into the machines, by how well each product sells.
        for n, (per_weight, received) in enumerate(((150, True), (150, True), (150, True), (40, False))):
            lines = [{"product_id": skus[sku]["id"], "quantity": per_weight * weight}
                     for _, sku, *_, weight in PRODUCTS]
            po = client.call("POST", "/api/v1/purchase-orders", {
                "supplier_id": supplier["id"], "currency": "CNY", "note": "weekly order", "lines": lines,
                "expected_on": None if received else (date.today() + timedelta(days=3)).isoformat()})
            client.call("POST", f"/api/v1/purchase-orders/{po['id']}/send")
            if received:
                client.call("POST", f"/api/v1/purchase-orders/{po['id']}/receive",
                            {"key": f"demo-po-{n}", "lines": lines})
    if not any(r["name"] == ROUTE for r in client.call("GET", "/api/v1/routes")):
        client.call("POST", "/api/v1/routes", {"name": ROUTE, "machines": [m for m, *_ in MACHINES]})


class Browser:
    """A phone's or a desk's browser for the demo's own first customers: cookies kept, redirects not followed,
    each form sent with the anti-forgery token its page carries."""

    def __init__(self, url: str):
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                                  NoRedirects)

    def open(self, path: str, form: dict | None = None, body: dict | None = None, token_page: str = "") -> tuple:
        data, headers = None, {}
        if form is not None:
            page = self.open(token_page)[1] if token_page else ""
            found = re.search(r'name="csrf" value="([^"]*)"', page)
            data = urllib.parse.urlencode({**form, "csrf": found.group(1) if found else ""}).encode()
        elif body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        request = urllib.request.Request(path if path.startswith("http") else self.url + path, data=data,
                                         headers=headers)
        try:
            with self.opener.open(request, timeout=30) as r:
                return r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def first_customers(client: Client, manager_password: str) -> None:
    """Today's first live sales, bought with the wallet by a customer of the demo as a phone would, and two
    of them refunded by the manager through the API (one in full, one in part); made once."""
    marker = os.path.join(VAR, "cloud", "demo-refunds-done")
    if os.path.exists(marker):
        return
    phone = Browser(client.url)
    with open(os.path.join(VAR, "machines", "demo-1", "screen.url")) as f:
        phone.open(f.read().strip())  # the scan
    phone.open("/register", {"name": "Lin Demo", "phone": "+8613900000001", "payment_method": "wallet",
                             "next": "/m/demo-1"}, token_page="/register")
    phone.open("/wallet/topup", {"amount": "50", "key": secrets.token_hex(8)}, token_page="/wallet")
    bought = []
    for slot in ("A1", "B1", "A2"):
        status, _, headers = phone.open("/m/demo-1/buy", {"slot": slot, "key": secrets.token_hex(8)},
                                        token_page="/m/demo-1")
        if status != 303 or "/orders/" not in headers.get("location", ""):
            print(f"demo: the first customer could not buy {slot} (HTTP {status})", file=sys.stderr)
            return
        order_id = headers["location"].rsplit("/", 1)[1]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            order = json.loads(phone.open(f"/api/v1/orders/{order_id}")[1])
            if order.get("settled"):
                break
            time.sleep(0.5)
        bought.append((order_id, order.get("status")))
    desk = Browser(client.url)
    desk.open("/api/v1/login", body={"username": MANAGER, "password": manager_password})
    status, text, _ = desk.open("/api/v1/tokens", body={"name": "demo refunds"})
    if status != 201:
        print(f"demo: the manager could not get an API token (HTTP {status}: {text[:200]})", file=sys.stderr)
        return
    manager = Client(client.url, json.loads(text)["token"])
    refunds = [({"reason": "the customer pressed the wrong button"}, 0),
               ({"reason": "the chips were crushed", "amount": 300}, 1)]
    for body, i in refunds:
        order_id, status = bought[i]
        if status == "succeeded":
            manager.call("POST", f"/api/v1/orders/{order_id}/refund", {**body, "key": f"demo-refund-{i}"})
    with open(marker, "w") as f:
        f.write(" ".join(order_id for order_id, _ in bought) + "\n")


def first_sales(client: Client, manager_password: str) -> None:
    try:
        first_customers(client, manager_password)
    except (CliError, OSError, ValueError) as e:  # the demo goes on without them; say why
        print(f"demo: today's first sales were not made: {e}", file=sys.stderr)


def main() -> int:
    os.makedirs(VAR, exist_ok=True)
    procs: list[subprocess.Popen] = []
    helpers: list[subprocess.Popen] = []  # the simulated VMC: stopped after the controllers, before the cloud
    cloud_log = open(os.path.join(VAR, "cloud.log"), "a")
    # The sandbox payment provider first, so customers may choose it; the wallet stays the default.
    os.makedirs(os.path.join(VAR, "cloud"), exist_ok=True)
    env = {**os.environ, "VEND_SANDBOX_SECRET": read_or_create(os.path.join(VAR, "cloud", "sandbox-secret"),
                                                               lambda: secrets.token_urlsafe(24))}
    sandbox = subprocess.Popen([sys.executable, "-m", "cloud.payments.sandbox", "--port", str(SANDBOX_PORT),
                                "--webhook", f"http://{HTTP}/api/v1/payments/webhook/sandbox"], env=env,
                               stdout=open(os.path.join(VAR, "sandbox.log"), "a"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    cloud = subprocess.Popen([sys.executable, "-m", "cloud", "--var", os.path.join(VAR, "cloud"), "--http", HTTP,
                              "--broker", "embedded", "--broker-port", str(BROKER_PORT), "--public-url", PUBLIC_URL,
                              "--time-zone", "Asia/Shanghai",
                              "--sandbox-url", f"http://127.0.0.1:{SANDBOX_PORT}",
                              # The demo's customers fill their wallets with play money; no other cloud may.
                              "--demo-topups"], env=env,
                             stdout=cloud_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://{HTTP}/api/v1/health", 60, cloud)
        os.environ.setdefault("VEND_CLOUD_URL", f"http://{HTTP}")
        os.environ.setdefault("VEND_TOKEN_FILE", os.path.join(VAR, "cloud", "admin-token"))
        client = Client.from_env()
        named = {m["id"]: m["names"] for m in client.call("GET", "/api/v1/machines")}
        known = set(named)
        configs = {}
        seed_catalogue(client)
        for index, (machine_id, name, jam) in enumerate(MACHINES):
            config = os.path.join(VAR, "machines", machine_id, "controller.ini")
            if machine_id not in known or not os.path.exists(config):
                if machine_id in known:
                    raise SystemExit(f"{config} is missing but the cloud knows {machine_id}: remove {VAR} to start over")
                secret = client.call("POST", "/api/v1/machines", {"id": machine_id, "name": name})["secret"]
                client.call("PUT", f"/api/v1/machines/{machine_id}/slots", [
                    {"slot": slot, "sku": sku, "name": pname, "price": price, "currency": "CNY",
                     "capacity": CAPACITY} for slot, sku, pname, price, *_ in PRODUCTS])
                os.makedirs(os.path.dirname(config), exist_ok=True)
                ledger = os.path.join(os.path.dirname(config), "ledger.db")
                if not os.path.exists(ledger):
                    # Its 90 days, in its own ledger: the controller syncs them to the cloud when it starts.
                    write_ledger(ledger, index, [(slot, weight) for slot, *_, weight in PRODUCTS], CAPACITY,
                                 datetime.now(timezone.utc))
                with open(config, "w") as f:
                    f.write(controller_ini(machine_id, name, secret, jam))
                os.chmod(config, 0o600)
                place, address, lat, lon = LOCATIONS[machine_id]
                location = client.call("POST", "/api/v1/locations", {
                    "name": place, "names": {"zh-CN": LOCATION_NAMES_ZH[machine_id]}, "address": address,
                    "latitude": lat, "longitude": lon, "tz": "Asia/Shanghai"})
                client.call("PUT", f"/api/v1/machines/{machine_id}/location", {"location_id": location["id"]})
                place_rule(client, location["id"], index)
            if "zh-CN" not in named.get(machine_id, {}):  # a demo made before the names got them too
                client.call("PATCH", f"/api/v1/machines/{machine_id}",
                            {"names": {"zh-CN": MACHINE_NAMES_ZH[machine_id]}})
            configs[machine_id] = config
        manager_password = demo_manager(client)
        seed_stock(client)
        vmc_home = os.path.join(VAR, "machines", MDB_MACHINE)
        if os.path.lexists(os.path.join(vmc_home, "vmc.tty")):
            os.unlink(os.path.join(vmc_home, "vmc.tty"))  # a killed run's link to a pty that is gone
        vmc = subprocess.Popen(vmc_argv(vmc_home), stdin=subprocess.DEVNULL,
                               stdout=open(os.path.join(vmc_home, "vmc.log"), "a"), stderr=subprocess.STDOUT,
                               start_new_session=True)
        helpers.append(vmc)
        deadline = time.monotonic() + 15
        while not os.path.exists(os.path.join(vmc_home, "vmc.tty")):
            if vmc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the simulated VMC did not start; see {vmc_home}/vmc.log")
            time.sleep(0.1)
        for machine_id, config in configs.items():
            log = open(os.path.join(VAR, "machines", machine_id, "controller.log"), "a")
            # Own sessions: Ctrl-C reaches only the demo, which stops the machines first, then the cloud.
            procs.append(subprocess.Popen([sys.executable, "-m", "controller", "--config", config],
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        time.sleep(1.5)
        for machine_id, config in configs.items():
            status = service(config, "status")
            if status.get("ok") and not any(s["count"] for s in status["slots"].values()):
                # A technician's first fill: every slot to capacity.
                service(config, "restock", *(f"{slot}={CAPACITY}" for slot, *_ in PRODUCTS))
        print(f"\nThe cloud is at http://{HTTP}  (log: {VAR}/cloud.log, admin token: {VAR}/cloud/admin-token)")
        print(f"Dashboard: http://{HTTP}/staff  (user {MANAGER}, password {manager_password}; "
              f"kept in {VAR}/cloud/demo-manager-password)")
        print(f"MQTT broker (embedded): 127.0.0.1:{BROKER_PORT}")
        print(f"Sandbox payment provider: http://127.0.0.1:{SANDBOX_PORT}  (log: {VAR}/sandbox.log; it confirms "
              "after 1 s and declines amounts ending in 13)\n")
        for machine_id, name, jam in MACHINES:
            home = os.path.join(VAR, "machines", machine_id)
            url = open(os.path.join(home, "screen.url")).read().strip() if os.path.exists(
                os.path.join(home, "screen.url")) else "(not drawn yet)"
            mdb = "  (an existing machine over MDB: after paying, the simulated customer presses the selection)"
            print(f"{machine_id}  {name}{'  (slot ' + jam + ' is jammed)' if jam else ''}"
                  f"{mdb if machine_id == MDB_MACHINE else ''}")
            print(f"  screen:  {home}/screen.png")
            print(f"  QR URL:  {url}")
            print(f"           (it rotates every 5 s; the current one is always in {home}/screen.url)")
        print("\nOpen a QR URL in a browser: register, top up, buy. `.venv/bin/vendctl machines` and "
              "`.venv/bin/vendctl sales` show the fleet. Ctrl-C stops everything.\n")
        threading.Thread(target=first_sales, args=(client, manager_password), daemon=True).start()
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        # Even when started with SIGINT ignored (a background job of a script), Ctrl-C must stop the demo.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        while cloud.poll() is None and sandbox.poll() is None and all(p.poll() is None for p in procs + helpers):
            time.sleep(0.5)
        print("a process exited; stopping the demo", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    except CliError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    finally:
        for proc in procs + helpers + [cloud, sandbox]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
