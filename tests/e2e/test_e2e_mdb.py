"""The whole controller on the MDB backend, as the cashless device of `python -m hw.mdb_sim` (a simulated
vending machine controller behind an MDB adapter, on a pty), against a real broker and the cloud: a customer
buys with the QR code and presses the selection at the machine; failures, a reset in the middle of the vend,
a cancelled session and a silent adapter are each voided, and nothing is charged twice."""

import subprocess
import sys

import pytest
from tests.e2e.harness import Customer, Machine, wait_until

# The machine's selections and its own prices, as the planogram has them (tests/e2e/harness.py PRODUCTS).
VMC = ["--items", "11=2.00,12=3.50,21=6.00,22=5.50", "--select-delay", "0.3", "--drop-delay", "0.2"]
MDB = """[mdb]
port = {port}
items = A1:11 A2:12 B1:21 B2:22
answer_timeout_s = 1
session_timeout_s = 3
vend_timeout_s = 3
"""


@pytest.fixture(scope="module")
def database():
    """Once, on SQLite: the cloud's database is not what this module tests."""
    yield ""


class Vmc:
    """The simulator's process, steered through its stdin as a person at a desk would."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "hw.mdb_sim", *VMC], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline()
        assert first.startswith("simulated vending machine controller (MDB) on /dev/"), first
        self.port = first.split(" on ", 1)[1].strip()

    def command(self, line: str) -> str:
        """Send one command and return what it printed before its "ok" (stats: the summary line)."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        printed = []
        while True:
            out = self.proc.stdout.readline()
            assert out, "the simulator exited"
            if out.strip() == f"ok {line}":
                return "\n".join(printed)
            printed.append(out.strip())

    def stop(self):
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def vmc():
    v = Vmc()
    yield v
    v.stop()


@pytest.fixture(scope="module")
def mdb_machine(cloud, broker, vmc, tmp_path_factory):
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("mdb")), "mdb1", backend="mdb",
                extra=MDB.format(port=vmc.port))
    m.start()
    m.stock()
    yield m
    m.proc.stop()


@pytest.fixture(scope="module")
def customer(cloud, mdb_machine):
    c = Customer(cloud, "MDB Customer", "+8613900000099")
    c.scan(mdb_machine)
    assert c.register("/m/mdb1").status_code == 303
    assert c.topup("20").status_code == 303
    return c


def buy(customer, machine, slot) -> tuple[str, dict]:
    """Scan, buy ``slot``, wait for the order to settle; (order id, its status)."""
    wait_until(lambda: machine.service("status").get("ok"), 10, "the controller to answer")
    customer.scan(machine)
    order_id = customer.buy(machine, slot).headers["location"].rsplit("/", 1)[1]
    return order_id, customer.wait_settled(order_id, timeout=40)


def failed_reason(machine, order_id) -> str:
    return next(e["reason"] for e in machine.events_of("vend.failed") if e["order_id"] == order_id)


def test_a_customer_buys_through_the_machines_own_controller(cloud, mdb_machine, customer, vmc):
    order_id, status = buy(customer, mdb_machine, "A2")
    assert status["status"] == "succeeded"
    assert customer.balance() == "CN¥16.50"
    assert [e["turns"] for e in mdb_machine.events_of("vend.succeeded") if e["order_id"] == order_id] == [1]
    assert "dispensed: 12: 1" in vmc.command("stats")


def test_a_machine_that_reports_failure_is_voided(mdb_machine, customer, vmc):
    vmc.command("fail")
    order_id, status = buy(customer, mdb_machine, "B2")
    assert status["status"] == "failed"
    assert failed_reason(mdb_machine, order_id) == "the machine reported that the vend failed (c,VEND,FAIL)"
    assert customer.balance() == "CN¥16.50"


def test_a_reset_in_the_middle_of_the_vend_is_voided(mdb_machine, customer, vmc):
    vmc.command("reset-in-vend")
    order_id, status = buy(customer, mdb_machine, "B1")
    assert status["status"] == "failed"
    assert "reset or disabled the cashless device in the middle of the vend" in failed_reason(mdb_machine, order_id)
    assert any(f["code"] == "mdb.vmc_reset" for f in mdb_machine.events_of("fault"))
    assert customer.balance() == "CN¥16.50"


def test_a_session_cancelled_at_the_machine_is_voided(cloud, mdb_machine, customer, vmc):
    vmc.command("cancel")
    order_id, status = buy(customer, mdb_machine, "A1")
    assert status["status"] == "failed"
    assert failed_reason(mdb_machine, order_id) == "the session was cancelled at the machine before a selection"
    assert customer.balance() == "CN¥16.50"
    # Nothing went wrong with A1's spiral: it stays on sale (B2 and B1, whose vends the machine began, do not).
    wait_until(mdb_machine.synced, 20, "the machine's ledger to reach the cloud")
    assert {s: bool(f) for s, f in cloud.db("SELECT slot, flagged FROM slots WHERE machine_id = 'mdb1'")} == \
        {"A1": False, "A2": False, "B1": True, "B2": True}


def test_an_adapter_that_answers_nothing_is_voided_and_nothing_is_charged_twice(cloud, mdb_machine, customer, vmc):
    vmc.command("silent on")
    order_id, status = buy(customer, mdb_machine, "A2")
    vmc.command("silent off")
    assert status["status"] == "failed"
    assert "the MDB adapter did not answer C,START within 1 s" in failed_reason(mdb_machine, order_id)
    assert customer.balance() == "CN¥16.50"
    # One product came out over the whole module, and one sale was charged, once.
    assert "dispensed: 12: 1;" in vmc.command("stats")
    assert len(mdb_machine.events_of("vend.succeeded")) == 1
    wait_until(mdb_machine.synced, 20, "the machine's ledger to reach the cloud")
    assert cloud.db("SELECT status, COUNT(*) FROM orders WHERE machine_id = 'mdb1' GROUP BY status ORDER BY status") \
        == [("failed", 4), ("succeeded", 1)]
    # The machine sells again once the adapter answers, from the slot whose session it never began.
    order_id, status = buy(customer, mdb_machine, "A2")
    assert status["status"] == "succeeded" and customer.balance() == "CN¥13.00"
