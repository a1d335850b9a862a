"""The whole controller on the serial backend, talking to `python -m hw.board_sim` over a pty: a process
that speaks the motor board's protocol, with garbage on the line twice a second."""

import subprocess
import sys

import pytest
from tests.e2e.harness import Customer, Machine

# The slots A1 A2 B1 B2 are the board's motors 0-3, in order; motor 3 (B2) is jammed.
BOARD = ["--motors", "4", "--jam", "3", "--drop-delay", "0.2", "--turn-limit", "0.6", "--garbage-every", "0.5"]


@pytest.fixture(scope="module")
def database():
    """Once, on SQLite: the cloud's database is not what this module tests."""
    yield ""


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    proc = subprocess.Popen([sys.executable, "-m", "hw.board_sim", *BOARD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.startswith("motor board simulator on /dev/"), first
    yield first.split(" on ", 1)[1].strip()
    proc.stdin.close()
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def serial_machine(cloud, broker, board, tmp_path_factory):
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("serial")), "s1", backend="serial", drop_timeout=1.5,
                extra=f"[serial]\nport = {board}\ntimeout_ms = 100\n")
    m.start()
    m.stock()
    yield m
    m.proc.stop()


def test_serial_board_machine_sells_and_a_jam_is_not_charged(cloud, serial_machine):
    m = serial_machine
    customer = Customer(cloud, "Serial Customer", "+8613900000088")
    customer.scan(m)
    assert customer.register("/m/s1").status_code == 303
    assert customer.topup("20").status_code == 303
    response = customer.buy(m, "A2")
    order_id = response.headers["location"].rsplit("/", 1)[1]
    assert customer.wait_settled(order_id)["status"] == "succeeded"
    assert customer.balance() == "CN¥16.50"
    assert [e["turns"] for e in m.events_of("vend.succeeded") if e["order_id"] == order_id] == [1]

    customer.scan(m)
    jammed = customer.buy(m, "B2").headers["location"].rsplit("/", 1)[1]
    assert customer.wait_settled(jammed, timeout=30)["status"] == "failed"
    assert customer.balance() == "CN¥16.50"
    # The board ended each of the two turns on its own time limit and said so; the driver made it a fault.
    limits = [e for e in m.events_of("fault") if e["code"] == "motor.time_limit"]
    assert len(limits) == 2 and all("motor 3 (slot B2)" in e["detail"] for e in limits)
