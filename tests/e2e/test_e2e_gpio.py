"""The whole controller on the GPIO backend: gpiozero's mock pins with a simulated machine wired to them.

The real `vend-controller` process drives its motors through hw/gpio.py, the turn ends on the cam switch,
and the drop sensor's 4 ms pulse is caught by its edge; the customer is charged for a drop and not for a
jam, whose stuck spiral is a fault in the ledger that reaches the cloud.
"""

import json
import os
import subprocess
import sys
import time

import pytest
from tests.e2e.harness import Customer, Machine, wait_until


@pytest.fixture(scope="module")
def database():
    """Once, on SQLite: the cloud's database is not what this module tests."""
    yield ""


SENSOR = "28-0316a2794eff"


def write_reading(w1_dir, millidegrees: int, crc_ok: bool = True) -> None:
    """What the kernel's w1_therm driver shows for a DS18B20 (the raw bytes do not matter here)."""
    path = w1_dir / SENSOR / "w1_slave"
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = "4b 01 4b 46 7f ff 05 10 e1"
    path.write_text(f"{raw} : crc=e1 {'YES' if crc_ok else 'NO'}\n{raw} t={millidegrees}\n")


@pytest.fixture(scope="module")
def w1_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("w1")
    write_reading(path, 4125)
    return path


@pytest.fixture(scope="module")
def gpio_machine(cloud, broker, tmp_path_factory, w1_dir):
    m = Machine(cloud, broker, str(tmp_path_factory.mktemp("gpio")), "g1", backend="gpio", drop_delay=0.2,
                drop_timeout=1.5, jam="B2", turn_limit=0.6,
                extra=f"[thermometer]\nw1_id = {SENSOR}\nw1_dir = {w1_dir}\nread_every_s = 5\n")
    m.start()
    m.stock()
    yield m
    m.proc.stop()


@pytest.fixture
def customer(cloud, gpio_machine):
    c = Customer(cloud, "GPIO Customer", "+8613900000077")
    c.scan(gpio_machine)
    assert c.register("/m/g1").status_code == 303
    assert c.topup("20").status_code == 303
    return c


def order_of(response) -> str:
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def test_gpio_machine_sells_and_a_jam_is_a_fault_not_a_charge(cloud, gpio_machine, customer):
    m = gpio_machine
    order_id = order_of(customer.buy(m, "A1"))
    assert customer.wait_settled(order_id)["status"] == "succeeded"
    assert customer.balance() == "CN¥18.00"
    succeeded = [e for e in m.events_of("vend.succeeded") if e["order_id"] == order_id]
    assert len(succeeded) == 1 and succeeded[0]["turns"] == 1
    assert 150 <= succeeded[0]["ms"] < 1500  # the drop delay of the simulated spiral, seen on its edge

    customer.scan(m)
    jammed = order_of(customer.buy(m, "B2"))
    status = customer.wait_settled(jammed, timeout=30)
    assert status["status"] == "failed"
    assert customer.balance() == "CN¥18.00"
    # Each of the two turns stopped on the motor's time limit, and each stop is a fault in the ledger.
    faults = [e for e in m.events_of("fault") if e["code"] == "motor.time_limit"]
    assert [f["device"] for f in faults] == ["motor B2", "motor B2"]
    assert "cam switch" in faults[0]["detail"]
    wait_until(m.synced, 20, "the faults to reach the cloud")
    in_cloud = cloud.db("SELECT data FROM events WHERE machine_id = ? AND kind = 'fault'", ("g1",))
    assert [json.loads(d)["code"] for d, in in_cloud] == ["motor.time_limit", "motor.time_limit"]


def test_the_cabinet_temperature_is_sent_and_a_failing_sensor_is_a_fault(broker, gpio_machine, w1_dir):
    readings = []
    client = broker.client("temperature-watcher")
    client.on_message = lambda c, u, msg: msg.topic.endswith("/telemetry") and readings.append(json.loads(msg.payload))
    client.subscribe("vend/v1/g1/telemetry", qos=0)
    try:
        wait_until(lambda: readings, 20, "a temperature reading from g1")
        assert readings[0]["temperature_c"] == 4.125 and readings[0]["door_open"] is False
        write_reading(w1_dir, 4125, crc_ok=False)  # a glitch on the bus, on every read from now on
        wait_until(lambda: [e for e in gpio_machine.events_of("fault") if e["code"] == "thermometer.read"], 20,
                   "the failing thermometer to be recorded")
        failing = [e for e in gpio_machine.events_of("fault") if e["code"] == "thermometer.read"]
        assert len(failing) == 1 and "CRC" in failing[0]["detail"]
        count = len(readings)
        time.sleep(6)  # another read fails: no second fault for the same streak, and no made-up number
        assert len([e for e in gpio_machine.events_of("fault") if e["code"] == "thermometer.read"]) == 1
        assert len(readings) == count
    finally:
        write_reading(w1_dir, 4125)
        client.loop_stop()
        client.disconnect()


def test_after_a_kill_9_mid_turn_safe_pins_drives_exactly_the_motor_outputs_off(cloud, broker, tmp_path):
    """What the unit's ExecStopPost does after a SIGKILL. The mock pins live in the killed process, so the
    check is what ``safe-pins`` asks the system's pin tool to do: a pinctrl stand-in records it."""
    m = Machine(cloud, broker, str(tmp_path), "g-kill", backend="gpio", jam="B2", turn_limit=20)
    m.start()
    m.stock()
    customer = Customer(cloud, "Kill Customer", "+8613900000078")
    customer.scan(m)
    assert customer.register("/m/g-kill").status_code == 303
    assert customer.topup("20").status_code == 303
    order_of(customer.buy(m, "B2"))  # the jammed spiral: its motor turns until turn_limit_s (20 s)
    wait_until(lambda: m.events_of("vend.started"), 20, "the vend to start")
    time.sleep(0.3)  # vend.started is written before the motor starts (controller/vend.py)
    assert m.proc.alive()
    m.proc.kill()  # SIGKILL: no handler runs, the daemon's own safe state never happens
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "pinctrl").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/pinctrl.calls\n')
    (tools / "pinctrl").chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "controller", "--config", m.config, "safe-pins"],
                         capture_output=True, text=True, env=env, timeout=30)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    # harness.GPIO_MOCK: rows A:9 B:10, columns 1:11 2:12; rows first, inputs (cam, drop, door) untouched.
    assert (tmp_path / "pinctrl.calls").read_text().splitlines() == [
        "set 9 op dl", "set 10 op dl", "set 11 op dl", "set 12 op dl"]
    assert took < 5, f"safe-pins took {took:.2f} s"  # about 0.3 s here; a loose bound on a shared machine
