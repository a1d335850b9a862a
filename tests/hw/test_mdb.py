"""The MDB backend against the simulated VMC (hw/mdb_sim.py) over a pty: the real driver, threads and port.

What the customer and the operator see: the product the customer paid for comes out and is a drop; every
failure, cancel, reset, silence or garbage ends the vend with a reason and no second product; the config's
mistakes are named.
"""

import subprocess
import sys
import threading
import time

import pytest

from controller.config import ConfigError, parse
import hw
from hw import HardwareError, open_hardware
from hw.mdb import open_backend
from hw.mdb_sim import VmcSim

WAIT = 5.0
SLOTS = "A1 A2 B1 B2"
PRICES = {11: 200, 12: 350, 21: 600, 22: 550}


def config(port: str, *, slots: str = SLOTS, items: str = "A1:11 A2:12 B1:21 B2:22", extra: str = ""):
    return parse("[machine]\nid = vm-1\nsecret = 0123456789abcdef\n[cloud]\nurl = http://cloud\n"
                 f"[hardware]\nbackend = mdb\nslots = {slots}\n"
                 f"[mdb]\nport = {port}\nitems = {items}\nanswer_timeout_s = 0.5\nsession_timeout_s = 1.5\n"
                 f"vend_timeout_s = 2\n{extra}")


class Outcomes:
    """Drops, 'nothing dropped' reports and faults, in order, with a way to wait for them."""

    def __init__(self, hardware):
        self.items: list[tuple] = []
        self.slot_ok: dict[str, bool] = {}  # reason -> whether the slot stays in service
        self._cond = threading.Condition()
        hardware.drop_sensor.when_drop = lambda t: self._add("drop", None)
        hardware.drop_sensor.when_no_drop = lambda reason, slot_ok, t: (self.slot_ok.update({reason: slot_ok}),
                                                                         self._add("none", reason))
        hardware.faults.listener = lambda code, device, what, t: self._add("fault", (code, what))

    def _add(self, *item):
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def of(self, kind: str) -> list:
        with self._cond:
            return [value for k, value in self.items if k == kind]

    def next_outcome(self, timeout: float = WAIT):
        """The first drop or 'none dropped' not yet taken."""
        with self._cond:
            assert self._cond.wait_for(lambda: any(k in ("drop", "none") for k, _ in self.items), timeout), \
                f"no outcome; seen {self.items}"
            i = next(i for i, (k, _) in enumerate(self.items) if k in ("drop", "none"))
            return self.items.pop(i)


def wait_until(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def vmc():
    with VmcSim(PRICES, select_delay_s=0.05, drop_delay_s=0.05, turn_s=0.3, enable_delay_s=0.02) as sim:
        yield sim


@pytest.fixture
def machine(vmc):
    hardware = open_backend(config(vmc.port))
    outcomes = Outcomes(hardware)
    assert wait_until(lambda: hardware.refusal() == ""), hardware.refusal()
    yield hardware, outcomes
    hardware.close()


def test_the_paid_selection_comes_out_once(vmc, machine):
    hardware, outcomes = machine
    hardware.motors["A2"].vend(350)
    assert outcomes.next_outcome() == ("drop", None)
    assert vmc.dispensed == {12: 1}
    assert vmc.heard[-2:] == ["C,START,3.50", "C,VEND,3.50"]
    assert hardware.adapter.policy.prices == {12: 350}
    assert "12: 3.50" in hardware.inputs()["prices the machine asked"]


def test_a_jammed_spiral_reported_by_the_machine_is_no_drop(vmc, machine):
    hardware, outcomes = machine
    vmc.set_mode(21, "jam")
    hardware.motors["B1"].vend(600)
    kind, reason = outcomes.next_outcome()
    assert kind == "none" and reason == "the machine reported that the vend failed (c,ERR,VEND 3)"
    assert outcomes.slot_ok[reason] is False  # the slot goes out of service, as after a jam on our own motors
    assert vmc.dispensed == {}


def test_a_machine_that_reports_failure(vmc, machine):
    hardware, outcomes = machine
    vmc.fail_next_vend()
    hardware.motors["A1"].vend(200)
    assert outcomes.next_outcome() == ("none", "the machine reported that the vend failed (c,VEND,FAIL)")
    # The next customer is served as usual, once the machine has closed the session and enabled us again.
    assert wait_until(lambda: hardware.refusal() == "")
    hardware.motors["A1"].vend(200)
    assert outcomes.next_outcome() == ("drop", None)


def test_a_reset_in_the_middle_of_the_vend(vmc, machine):
    hardware, outcomes = machine
    vmc.reset_in_next_vend()
    hardware.motors["A2"].vend(350)
    kind, reason = outcomes.next_outcome()
    assert kind == "none" and "reset or disabled the cashless device in the middle of the vend" in reason
    assert wait_until(lambda: [c for c, _ in outcomes.of("fault")] == ["mdb.vmc_reset"])
    assert vmc.dispensed == {}
    # Enabled again after its restart, the machine sells again.
    assert wait_until(lambda: hardware.refusal() == "")
    hardware.motors["A2"].vend(350)
    assert outcomes.next_outcome() == ("drop", None)


def test_the_customer_cancels_at_the_machine(vmc, machine):
    hardware, outcomes = machine
    vmc.cancel_next_session()
    hardware.motors["A2"].vend(350)
    assert outcomes.next_outcome() == ("none", "the session was cancelled at the machine before a selection")
    assert outcomes.slot_ok["the session was cancelled at the machine before a selection"] is True
    assert "C,VEND,3.50" not in vmc.heard


def test_the_customer_presses_another_selection(vmc, machine):
    hardware, outcomes = machine
    vmc.other_item_next()
    hardware.motors["A2"].vend(350)
    kind, reason = outcomes.next_outcome()
    assert kind == "none" and reason.startswith("denied: the customer selected 11 at the machine, not 12 (slot A2)")
    assert wait_until(lambda: vmc.heard[-1] == "C,STOP")
    assert not any(line.startswith("C,VEND") for line in vmc.heard) and vmc.dispensed == {}


def test_a_higher_price_on_the_machine_is_denied(vmc, machine):
    hardware, outcomes = machine
    vmc.select_next(21)  # the customer presses B1, which the machine prices at 6.00
    hardware.motors["B1"].vend(500)  # the planogram says 5.00
    kind, reason = outcomes.next_outcome()
    assert kind == "none" and "more than the 5.00 paid" in reason
    assert vmc.dispensed == {}


def test_no_selection_in_time_ends_the_session(vmc, machine):
    hardware, outcomes = machine
    vmc.select_delay_s = 10
    hardware.motors["A1"].vend(200)
    assert outcomes.next_outcome() == ("none", "no selection at the machine within 1.5 s of the payment "
                                               "(session timed out)")
    assert wait_until(lambda: vmc.heard[-1] == "C,STOP" and vmc.state == "ENABLED")


def test_an_adapter_that_never_answers(vmc, machine):
    hardware, outcomes = machine
    vmc.silent()
    hardware.motors["A1"].vend(200)
    kind, reason = outcomes.next_outcome()
    assert kind == "none" and "did not answer C,START within 0.5 s" in reason
    assert ("mdb.no_answer", reason) in outcomes.of("fault")
    assert vmc.dispensed == {}


def test_an_adapter_that_answers_garbage(vmc, machine):
    hardware, outcomes = machine
    vmc.garbage_answers(1)  # in place of c,STATUS,IDLE
    hardware.motors["A1"].vend(200)
    kind, reason = outcomes.next_outcome()
    assert kind == "none" and "makes no sense during the vend" in reason
    assert not any(line.startswith("C,VEND") for line in vmc.heard) and vmc.dispensed == {}
    assert hardware.adapter.lines.bad_lines == 1


def test_garbage_between_sessions_harms_nothing(vmc, machine):
    hardware, outcomes = machine
    vmc.garbage()
    vmc.garbage()
    assert wait_until(lambda: hardware.adapter.lines.bad_lines == 2)
    hardware.motors["A1"].vend(200)
    assert outcomes.next_outcome() == ("drop", None)


def test_no_price_no_session(vmc, machine):
    hardware, outcomes = machine
    hardware.motors["A1"].vend(None)
    kind, reason = outcomes.next_outcome()
    assert kind == "none" and "has no price in the planogram" in reason
    assert not any(line.startswith("C,START") for line in vmc.heard)


def test_stopping_the_vend_ends_the_session_and_the_machine_sells_nothing(vmc, machine):
    hardware, outcomes = machine
    vmc.select_delay_s = 0.5
    hardware.motors["A2"].vend(350)
    assert wait_until(lambda: vmc.state == "IDLE")
    hardware.all_motors_off()
    assert wait_until(lambda: vmc.state == "ENABLED") and vmc.heard[-1] == "C,STOP"
    time.sleep(0.7)  # the customer presses the button after all: denied, the session is over
    assert vmc.dispensed == {} and not any(line.startswith("C,VEND") for line in vmc.heard)


def test_a_stop_from_a_signal_handler_that_interrupted_the_driver_does_not_hang(vmc, machine):
    """SIGTERM's handler stops every motor in the main thread, which may be inside the adapter's lock."""
    hardware, outcomes = machine
    vmc.select_delay_s = 5
    hardware.motors["A1"].vend(200)
    assert wait_until(lambda: vmc.state == "IDLE")
    started = time.monotonic()
    with hardware.adapter._lock:  # as if the handler ran while this thread held it
        hardware.all_motors_off()
    assert time.monotonic() - started < 3
    hardware.all_motors_off()  # the daemon's exit, once the handler returned: the session ends
    assert wait_until(lambda: vmc.heard[-1] == "C,STOP")


def test_a_refusal_until_the_machine_enables_the_cashless_device(vmc):
    vmc.enable_delay_s = 0.5
    hardware = open_backend(config(vmc.port))
    try:
        assert "has not enabled the cashless device (it is INACTIVE)" in hardware.refusal()
        assert wait_until(lambda: hardware.refusal() == "")
    finally:
        hardware.close()
    assert wait_until(lambda: vmc.heard[-1] == "C,0")  # closed: the machine cannot sell through it


def test_the_bench_tool_cannot_turn_a_selection(machine):
    hardware, _ = machine
    with pytest.raises(HardwareError, match="vends only for a paid order"):
        hardware.motors["A1"].run()


def test_an_adapter_that_never_answers_at_open(vmc):
    vmc.silent()
    with pytest.raises(HardwareError, match=r"did not answer C,1 within 0.5 s; check \[mdb\] port"):
        open_backend(config(vmc.port))


def test_a_port_that_does_not_exist():
    with pytest.raises(HardwareError, match=r"MDB adapter port /dev/nonexistent-mdb does not exist: check \[mdb\]"):
        open_hardware(config("/dev/nonexistent-mdb", extra="[screen]\ndisplay = png\n"))


def test_the_config_is_checked():
    with pytest.raises(ConfigError, match=r"\[mdb\] items must map exactly the slots .* differs on B2"):
        config("/dev/null", items="A1:1 A2:2 B1:3")
    with pytest.raises(ConfigError, match="a selection number is used for two slots"):
        config("/dev/null", items="A1:1 A2:2 B1:3 B2:3")
    with pytest.raises(ConfigError, match=r"\[mdb\] decimals: 4 is out of bounds"):
        config("/dev/null", extra="decimals = 4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'timeout' in \[mdb\]"):
        config("/dev/null", extra="timeout = 3\n")
    cfg = config("/dev/null", items="")
    assert cfg["mdb"]["items"] == {}


def test_commands_end_in_crlf_when_the_adapter_wants_it(vmc):
    hardware = open_backend(config(vmc.port, extra="line_end = crlf\n"))
    outcomes = Outcomes(hardware)
    try:
        assert hardware.adapter.eol == b"\r\n"
        assert wait_until(lambda: hardware.refusal() == "")
        hardware.motors["A1"].vend(200)
        assert outcomes.next_outcome() == ("drop", None)
    finally:
        hardware.close()


def test_selections_default_to_slots_in_order(vmc):
    hardware = open_backend(config(vmc.port, items=""))
    try:
        assert [(s, m.item) for s, m in hardware.motors.items()] == [("A1", 1), ("A2", 2), ("B1", 3), ("B2", 4)]
        assert hardware.turns == 1 and hardware.turn_timeout_s == 0.5 + 1.5 + 2 + 5
        assert hardware.vend_prompt("A2", "Cola") == "Paid: press 2 on the machine for Cola"
    finally:
        hardware.close()


def test_after_a_crash_safe_pins_ends_the_session_and_turns_the_cashless_device_off(vmc):
    cfg = config(vmc.port)
    ((what, argv),) = hw.safe_commands(cfg)
    assert what == "end any cashless session and turn the cashless device off"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: vmc.heard[-2:] == ["C,STOP", "C,0"]) and vmc.state == "INACTIVE"
    cfg = config("/dev/nonexistent-mdb")
    done = subprocess.run(hw.safe_commands(cfg)[0][1], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "MDB adapter port /dev/nonexistent-mdb does not exist" in done.stderr


def test_the_simulator_as_a_program():
    proc = subprocess.Popen([sys.executable, "-m", "hw.mdb_sim", "--items", "1=2.00,2=3.50"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("simulated vending machine controller (MDB) on /dev/"), first
        port = first.split(" on ", 1)[1].strip()
        hardware = open_backend(config(port, slots="A1 A2", items="A1:1 A2:2"))
        outcomes = Outcomes(hardware)
        try:
            assert wait_until(lambda: hardware.refusal() == "")
            proc.stdin.write("fail\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "[mdb] port = " + port
            while proc.stdout.readline().strip() != "ok fail":
                pass
            hardware.motors["A2"].vend(350)
            assert outcomes.next_outcome() == ("none", "the machine reported that the vend failed (c,VEND,FAIL)")
        finally:
            hardware.close()
    finally:
        proc.stdin.close()
        proc.terminate()
        proc.wait(10)
