"""`make demo`, the README's first command: it comes up, prints where to go, and a manager and a customer
can use what it printed."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from types import SimpleNamespace

from tests.browser.browsing import shot
from tests.e2e.harness import Customer, free_port
from tests.tools import REPO

ROOT = str(REPO)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    var = str(tmp_path_factory.mktemp("demo"))
    http, broker, sandbox = free_port(), free_port(), free_port()
    env = {**os.environ, "VEND_DEMO_VAR": var, "VEND_DEMO_HTTP": f"127.0.0.1:{http}",
           "VEND_DEMO_BROKER_PORT": str(broker), "VEND_DEMO_SANDBOX_PORT": str(sandbox), "PYTHONUNBUFFERED": "1"}
    env.pop("VEND_ADMIN_TOKEN", None)
    log = open(os.path.join(var, "demo.out"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "cloud.demo"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in (out := open(log.name).read()):
            assert proc.poll() is None, f"the demo exited:\n{out}"
            assert time.monotonic() < deadline, f"the demo did not come up:\n{out}"
            time.sleep(0.3)
        yield {"out": out, "url": f"http://127.0.0.1:{http}", "var": var}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def test_the_demo_prints_the_dashboard_and_qr_urls_that_work(demo, new_page):
    out = demo["out"]
    user, password = re.search(r"Dashboard: \S+ +\(user (\S+), password (\S+);", out).groups()
    assert re.search(r"QR URL: +http://\S+/q/demo-1\.", out)

    desk = new_page()
    desk.goto(demo["url"] + "/staff")
    desk.get_by_label("Username").fill(user)
    desk.get_by_label("Password").fill(password)
    desk.get_by_role("button", name="Sign in").click()
    for name in ("Library, ground floor", "Station concourse", "Gym lobby", "Office canteen"):
        assert desk.get_by_text(name).first.is_visible()
    assert desk.locator("svg").first.is_visible(), "the three machines have coordinates: a map"
    shot(desk, "demo-fleet")

    phone = new_page(phone=True)
    with open(os.path.join(demo["var"], "machines", "demo-1", "screen.url")) as f:
        phone.goto(f.read().strip())  # the code on the screen now, as a phone would scan it
    assert phone.get_by_label(re.compile("name", re.I)).first.is_visible(), "a first scan asks to register"
    shot(phone, "demo-register")


def test_the_fourth_machine_is_an_existing_one_sold_over_mdb(demo):
    """demo-4 is a machine's own controller (python -m hw.mdb_sim) with this system as its cashless device: a
    customer pays with the QR code, the simulated customer presses the selection, the product is paid for."""
    assert re.search(r"demo-4  Office canteen  \(an existing machine over MDB", demo["out"])
    home = os.path.join(demo["var"], "machines", "demo-4")
    customer = Customer(SimpleNamespace(url=demo["url"]), "Demo MDB Customer", "+8613900000123")
    machine = SimpleNamespace(id="demo-4", url_file=os.path.join(home, "screen.url"))
    customer.scan(machine)
    assert customer.register("/m/demo-4").status_code == 303
    assert customer.topup("20").status_code == 303
    customer.scan(machine)
    order_id = customer.buy(machine, "A2").headers["location"].rsplit("/", 1)[1]
    assert customer.wait_settled(order_id, timeout=40)["status"] == "succeeded"
    assert customer.balance() == "CN¥16.50"
