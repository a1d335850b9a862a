"""Unit tests for hw/gpio.py: the real GPIO driver on gpiozero's mock pins, wired to hw/gpio_sim.py's machine."""

import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from controller.config import parse
from hw import HardwareError, open_hardware
from hw.gpio import GpioDoor, NoDoor
from hw.sim import PngDisplay

DELAY = 0.15  # [sim] drop_delay_s: the product falls this long after the motor starts; the cam is home at 1.5x
LIMIT = 1.0  # turn_limit_s where a turn should end on the cam, well before the limit
SHORT_LIMIT = 0.3  # turn_limit_s where a test waits for the limit
ROWS, COLUMNS = {"A": 9, "B": 10}, {"1": 11, "2": 12}
MATRIX_PINS = (9, 10, 11, 12)
CAM, DROP, DOOR, SERVICE = 22, 23, 24, 25
# Slot behaviour in the simulated machine unless a test says otherwise: A1 vends one, A2 drops two,
# B1 is empty, B2 is jammed.
FAULTS = {"double": "A2", "empty": "B1", "jam": "B2"}


class Recorder:
    """A listener that keeps every call's arguments and lets a test wait for the n-th call."""

    def __init__(self):
        self.calls: list[tuple] = []
        self._cond = threading.Condition()

    def __call__(self, *args) -> None:
        with self._cond:
            self.calls.append(args)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.calls) >= n, timeout)


def wait_until(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def gpio_config(tmp_path, slots="A1 A2 B1 B2", sim=None, **gpio) -> dict:
    """A parsed config for backend gpio on the mock pins; a gpio key given as None is left out."""
    keys = {"pin_library": "mock", "motor_rows": "A:9 B:10", "motor_columns": "1:11 2:12", "cam_pin": CAM,
            "drop_pin": DROP, "door_pin": DOOR, "service_pin": SERVICE, "turn_limit_s": LIMIT}
    keys.update(gpio)
    sim_keys = {"drop_delay_s": DELAY, "display_path": tmp_path / "screen.png", **FAULTS}
    sim_keys.update(sim or {})
    return parse("[machine]\nid = vm-1\nsecret = 0123456789abcdef\n[cloud]\nurl = http://cloud\n"
                 f"[hardware]\nbackend = gpio\nslots = {slots}\n[screen]\ndisplay = png\n"
                 "[sim]\n" + "".join(f"{k} = {v}\n" for k, v in sim_keys.items()) +
                 "[gpio]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None))


@pytest.fixture
def open_machine(tmp_path):
    """Opens a machine through open_hardware with listeners recording drops and faults; closes it after."""
    opened = []

    def open_(**kwargs):
        cfg = gpio_config(tmp_path, **kwargs)
        hardware = open_hardware(cfg)
        opened.append(hardware)
        hardware.cam_pin, hardware.door_pin = cfg["gpio"]["cam_pin"], cfg["gpio"]["door_pin"]
        hardware.drops = Recorder()
        hardware.drop_sensor.when_drop = hardware.drops
        hardware.fault_calls = Recorder()
        hardware.faults.listener = hardware.fault_calls
        return hardware

    yield open_
    for hardware in opened:
        hardware.close()


def pins(hardware, numbers):
    """The mock pins, with their state history started afresh."""
    result = {n: hardware.factory.gpio(n) for n in numbers}
    for pin in result.values():
        pin.clear_states()
    return result


def spells(pin, level: bool = True) -> list[float]:
    """How long each stretch at ``level`` lasted, from a MockPin's history; the pin must have left it since."""
    states = pin.states
    assert states[-1].state != level, f"{pin} is still at {level}"
    return [states[i + 1].timestamp for i in range(len(states) - 1) if states[i].state == level]


def turn_ended(hardware, slot, timeout: float = 3.0) -> bool:
    return wait_until(lambda: not hardware.motors[slot].is_running, timeout)


# -- opening, at rest ----------------------------------------------------------------------------------------


def test_open_hardware_gives_a_gpio_machine_at_rest(open_machine):
    hardware = open_machine()
    assert sorted(hardware.motors) == ["A1", "A2", "B1", "B2"]
    assert not any(m.is_running for m in hardware.motors.values())
    assert not hardware.door.is_open
    assert isinstance(hardware.display, PngDisplay)
    assert hardware.service_button is not None
    assert all(hardware.factory.gpio(n).state is False for n in MATRIX_PINS)
    assert hardware.inputs() == {"drop sensor": "clear", "cam switch": "closed (home)", "door": "shut",
                                 "service button": "up", "motor running": "none"}


def test_wiring_names_every_pin(open_machine):
    hardware = open_machine()
    wiring = dict(hardware.wiring)
    assert set(wiring) == {"motor A1", "motor A2", "motor B1", "motor B2", "cam switch", "drop sensor",
                           "door switch", "service button"}
    for slot in ("A1", "A2", "B1", "B2"):
        where = wiring[f"motor {slot}"]
        assert f"row {slot[0]} GPIO{ROWS[slot[0]]}" in where
        assert f"column {slot[1]} GPIO{COLUMNS[slot[1]]}" in where
    assert wiring["cam switch"].startswith(f"GPIO{CAM} ")
    assert wiring["drop sensor"] == f"GPIO{DROP} (active low)"
    assert wiring["door switch"].startswith(f"GPIO{DOOR} ")
    assert wiring["service button"].startswith(f"GPIO{SERVICE} ")


def test_a_machine_without_door_and_service_pins_has_neither(open_machine):
    hardware = open_machine(door_pin=0, service_pin=0)
    assert isinstance(hardware.door, NoDoor)
    assert not hardware.door.is_open
    assert hardware.service_button is None
    assert "door" not in hardware.inputs() and "service button" not in hardware.inputs()
    assert {"door switch", "service button"}.isdisjoint(dict(hardware.wiring))


# -- motors in a matrix ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("slot", ["A1", "A2", "B1", "B2"])
def test_a_matrix_slot_energises_only_its_own_row_and_column(open_machine, slot):
    hardware = open_machine(sim={"double": "", "empty": "", "jam": ""})
    motor_pins = pins(hardware, MATRIX_PINS)
    mine = {ROWS[slot[0]], COLUMNS[slot[1]]}
    hardware.motors[slot].run()
    assert hardware.motors[slot].is_running
    assert hardware.inputs()["motor running"] == slot
    assert turn_ended(hardware, slot)
    for number, pin in motor_pins.items():
        if number in mine:
            [high] = spells(pin)
            assert DELAY <= high < LIMIT + 1.0, (number, high)
        else:
            assert spells(pin) == [], f"GPIO{number} went high while {slot} ran"
    assert hardware.factory.turns == {s: int(s == slot) for s in ("A1", "A2", "B1", "B2")}
    assert hardware.fault_calls.calls == []


def test_a_turn_ends_on_the_cam_switch_after_one_drop(open_machine):
    hardware = open_machine()
    started = time.monotonic()
    hardware.motors["A1"].run()
    assert hardware.drops.wait_for(1, timeout=3.0)
    assert turn_ended(hardware, "A1")
    assert hardware.drops.calls[0][0] >= started
    assert hardware.inputs()["cam switch"] == "closed (home)"
    assert hardware.inputs()["motor running"] == "none"
    assert all(hardware.factory.gpio(n).state is False for n in MATRIX_PINS)
    assert not hardware.drops.wait_for(2, timeout=0.2)
    assert len(hardware.drops.calls) == 1
    assert hardware.fault_calls.calls == []


def test_a_double_slot_drops_twice(open_machine):
    hardware = open_machine()
    hardware.motors["A2"].run()
    assert hardware.drops.wait_for(2, timeout=3.0)
    assert not hardware.drops.wait_for(3, timeout=0.2)
    first, second = (call[0] for call in hardware.drops.calls)
    assert second > first
    assert turn_ended(hardware, "A2")
    assert hardware.fault_calls.calls == []


def test_an_empty_slot_turns_once_and_drops_nothing(open_machine):
    hardware = open_machine()
    hardware.motors["B1"].run()
    assert turn_ended(hardware, "B1")
    assert hardware.factory.turns["B1"] == 1
    assert not hardware.drops.wait_for(1, timeout=0.2)
    assert hardware.fault_calls.calls == []


def test_a_jammed_slot_is_stopped_at_the_time_limit_and_reported(open_machine):
    hardware = open_machine(turn_limit_s=SHORT_LIMIT)
    motor_pins = pins(hardware, MATRIX_PINS)
    started = time.monotonic()
    hardware.motors["B2"].run()
    assert hardware.fault_calls.wait_for(1, timeout=3.0)
    code, device, what, t = hardware.fault_calls.calls[0]
    assert code == "motor.time_limit"
    assert device == "motor B2"
    assert f"{SHORT_LIMIT} s" in what and "cam switch" in what
    assert t - started >= SHORT_LIMIT - 0.01
    assert not hardware.motors["B2"].is_running
    assert hardware.inputs()["cam switch"] == "open"  # the spiral left home and never came back
    for number in (ROWS["B"], COLUMNS["2"]):
        [high] = spells(motor_pins[number])
        assert SHORT_LIMIT - 0.01 <= high < SHORT_LIMIT + 1.0
    assert spells(motor_pins[ROWS["A"]]) == [] and spells(motor_pins[COLUMNS["1"]]) == []
    assert hardware.drops.calls == []
    assert not hardware.fault_calls.wait_for(2, timeout=0.2)


def test_running_a_second_slot_stops_the_first(open_machine):
    hardware = open_machine(turn_limit_s=SHORT_LIMIT, sim={"jam": "A1 B2"})  # both would turn until the limit
    motor_pins = pins(hardware, MATRIX_PINS)
    hardware.motors["B2"].run()
    hardware.motors["A1"].run()
    assert not hardware.motors["B2"].is_running
    assert hardware.motors["A1"].is_running
    assert [motor_pins[n].state for n in MATRIX_PINS] == [True, False, True, False]  # row A, column 1 only
    assert hardware.fault_calls.wait_for(1, timeout=3.0)
    assert not hardware.fault_calls.wait_for(2, timeout=SHORT_LIMIT)
    # Only A1 overran: stopping B2 cancelled the time limit it had when it started.
    assert [call[:2] for call in hardware.fault_calls.calls] == [("motor.time_limit", "motor A1")]
    assert hardware.factory.turns == {"A1": 1, "A2": 0, "B1": 0, "B2": 1}
    for number in MATRIX_PINS:
        assert len(spells(motor_pins[number])) == 1


def test_stopping_a_matrix_motor_cuts_the_row_before_the_column(open_machine, monkeypatch):
    hardware = open_machine()
    factory = hardware.factory
    seen = []  # the motor outputs after each change, as the machine sees them
    output_changed = factory.output_changed

    def record():
        seen.append({n: factory.gpio(n).state for n in MATRIX_PINS})
        output_changed()

    monkeypatch.setattr(factory, "output_changed", record)
    hardware.motors["A1"].run()
    hardware.motors["A1"].stop()
    row, column = ROWS["A"], COLUMNS["1"]
    on = [(s[row], s[column]) for s in seen]
    # Column (the low side) on first, row last; off in reverse: the row cuts the power, as MotorBank says.
    assert on == [(False, True), (True, True), (False, True), (False, False)]


# -- other wiring ---------------------------------------------------------------------------------------------


def test_direct_wiring_drives_one_pin_per_slot(open_machine):
    hardware = open_machine(slots="A1 A2", sim={"double": "", "empty": "", "jam": ""}, motor_wiring="direct",
                            motor_pins="A1:17 A2:27", motor_rows=None, motor_columns=None)
    motor_pins = pins(hardware, (17, 27))
    assert dict(hardware.wiring)["motor A2"] == "GPIO27"
    hardware.motors["A2"].run()
    assert hardware.drops.wait_for(1, timeout=3.0)
    assert turn_ended(hardware, "A2")
    [high] = spells(motor_pins[27])
    assert DELAY <= high < LIMIT + 1.0
    assert spells(motor_pins[17]) == []
    assert hardware.factory.turns == {"A1": 0, "A2": 1}
    assert hardware.fault_calls.calls == []


def test_active_low_motors_rest_high_and_go_low_to_turn(open_machine):
    hardware = open_machine(motor_active_high="no", motor_rows="A:4 B:5", motor_columns="1:6 2:7",
                            sim={"double": "", "empty": "", "jam": ""})
    motor_pins = pins(hardware, (4, 5, 6, 7))
    assert all(pin.state is True for pin in motor_pins.values())  # off, for an active-low driver
    hardware.motors["B2"].run()
    assert hardware.drops.wait_for(1, timeout=3.0)
    assert turn_ended(hardware, "B2")
    for number in (5, 7):  # row B, column 2
        [low] = spells(motor_pins[number], level=False)
        assert DELAY <= low < LIMIT + 1.0
    for number in (4, 6):
        assert motor_pins[number].states == [motor_pins[number].states[0]]
        assert motor_pins[number].state is True
    assert hardware.factory.turns == {"A1": 0, "A2": 0, "B1": 0, "B2": 1}


def test_without_a_cam_switch_a_turn_lasts_the_time_limit_and_is_no_fault(open_machine):
    hardware = open_machine(cam_pin=0, turn_limit_s=SHORT_LIMIT, sim={"drop_delay_s": 0.05})
    motor_pins = pins(hardware, MATRIX_PINS)
    assert "cam switch" not in hardware.inputs()
    assert "cam switch" not in dict(hardware.wiring)
    started = time.monotonic()
    hardware.motors["A1"].run()
    assert hardware.drops.wait_for(1, timeout=3.0)
    assert turn_ended(hardware, "A1")
    assert time.monotonic() - started >= SHORT_LIMIT - 0.01
    [high] = spells(motor_pins[ROWS["A"]])
    assert SHORT_LIMIT - 0.01 <= high < SHORT_LIMIT + 1.0
    assert not hardware.fault_calls.wait_for(1, timeout=0.3)


def test_a_retry_after_a_stop_gets_its_own_full_time_limit(open_machine):
    limit = 1.0
    hardware = open_machine(turn_limit_s=limit)
    motor = hardware.motors["B2"]  # jammed: only the time limit ends its turns
    motor.run()
    motor.stop()  # the controller's retry: StopMotor, then RunMotor
    time.sleep(limit / 2)
    retried = time.monotonic()
    motor.run()
    assert hardware.fault_calls.wait_for(1, timeout=limit + 2.0)
    took = hardware.fault_calls.calls[0][3] - retried
    assert limit - 0.01 <= took < limit + 1.0
    assert not hardware.fault_calls.wait_for(2, timeout=0.2)


def test_a_repeated_run_leaves_no_time_limit_behind_for_the_next_turn(open_machine):
    limit = 1.0
    hardware = open_machine(turn_limit_s=limit)
    motor = hardware.motors["B2"]  # jammed: only the time limit ends its turns
    motor.run()
    motor.run()  # asked twice while turning
    motor.stop()
    time.sleep(limit / 2)  # the retry comes later, as the controller's does after its drop timeout
    retried = time.monotonic()
    motor.run()
    assert hardware.fault_calls.wait_for(1, timeout=limit + 2.0)
    took = hardware.fault_calls.calls[0][3] - retried
    # The retry is a new turn with its own limit; the first run's limit was due half-way through it.
    assert took >= limit - 0.01, f"the retry was stopped as overrunning after {took:.2f} s"


# -- inputs ----------------------------------------------------------------------------------------------------


def test_the_drop_sensor_is_edge_triggered(open_machine):
    hardware = open_machine()
    pin = hardware.factory.gpio(DROP)
    pin.drive_low()  # a pulse far shorter than any polling interval: the beam is broken and clear again
    pin.drive_high()
    assert len(hardware.drops.calls) == 1
    assert not hardware.drop_sensor.is_active
    assert hardware.inputs()["drop sensor"] == "clear"


def test_the_simulated_drop_pulse_is_seen_though_it_is_gone_at_once(open_machine):
    hardware = open_machine()
    [pin] = pins(hardware, (DROP,)).values()
    hardware.motors["A1"].run()
    assert hardware.drops.wait_for(1, timeout=3.0)
    assert turn_ended(hardware, "A1")
    [broken] = spells(pin, level=False)
    assert broken < 0.1  # a few ms: a loop polling every 0.1 s would miss most of them
    assert not hardware.drop_sensor.is_active


def test_a_drop_sensor_wired_active_high(open_machine):
    hardware = open_machine(drop_active_low="no")
    assert dict(hardware.wiring)["drop sensor"] == f"GPIO{DROP} (active high)"
    assert hardware.inputs()["drop sensor"] == "clear"
    hardware.motors["A1"].run()
    assert hardware.drops.wait_for(1, timeout=3.0)
    assert turn_ended(hardware, "A1")
    assert not hardware.drops.wait_for(2, timeout=0.2)
    hardware.factory.gpio(DROP).drive_high()
    assert hardware.inputs()["drop sensor"] == "beam broken"


def test_wait_for_drop_times_out_without_one_and_returns_on_one(open_machine):
    hardware = open_machine()
    assert not hardware.drop_sensor.wait_for_drop(0.05)
    result = []
    waiter = threading.Thread(target=lambda: result.append(hardware.drop_sensor.wait_for_drop(5.0)))
    waiter.start()
    pin = hardware.factory.gpio(DROP)
    # Pulse until the waiter returns: a pulse before it starts waiting is (rightly) not counted.
    while waiter.is_alive() and len(hardware.drops.calls) < 100:
        pin.drive_low()
        pin.drive_high()
        waiter.join(0.02)
    waiter.join(5.0)
    assert result == [True]


def test_the_door_switch_reports_open_and_shut(open_machine):
    hardware = open_machine()
    changes = Recorder()
    hardware.door.when_changed = changes
    pin = hardware.factory.gpio(DOOR)
    pin.drive_high()  # the switch opens: the door is open
    assert hardware.door.is_open
    assert hardware.inputs()["door"] == "open"
    pin.drive_low()
    assert not hardware.door.is_open
    assert hardware.inputs()["door"] == "shut"
    assert [call[0] for call in changes.calls] == [True, False]
    assert changes.calls[0][1] <= changes.calls[1][1]


def test_a_door_switch_with_a_cut_wire_reads_open():
    factory = MockFactory()  # nothing drives the pin: only the pull-up the driver asks for
    try:
        with GpioDoor(factory, DOOR) as door:
            assert factory.pin(f"GPIO{DOOR}").pull == "up"
            assert door.is_open
    finally:
        factory.close()


def test_the_service_button(open_machine):
    hardware = open_machine()
    presses = Recorder()
    hardware.service_button.when_pressed = presses
    pin = hardware.factory.gpio(SERVICE)
    before = time.monotonic()
    pin.drive_low()  # closes to ground
    assert hardware.inputs()["service button"] == "pressed"
    pin.drive_high()
    assert hardware.inputs()["service button"] == "up"
    assert len(presses.calls) == 1
    assert presses.calls[0][0] >= before


def test_inputs_while_a_motor_turns(open_machine):
    hardware = open_machine(turn_limit_s=SHORT_LIMIT)
    hardware.motors["B2"].run()
    assert wait_until(lambda: hardware.inputs()["cam switch"] == "open")
    hardware.factory.gpio(DROP).drive_low()
    assert hardware.inputs() == {"drop sensor": "beam broken", "cam switch": "open", "door": "shut",
                                 "service button": "up", "motor running": "B2"}


# -- safe state ------------------------------------------------------------------------------------------------


def test_all_motors_off_from_another_thread_stops_a_turning_motor(open_machine):
    hardware = open_machine(turn_limit_s=SHORT_LIMIT)
    motor_pins = pins(hardware, MATRIX_PINS)
    hardware.motors["B2"].run()
    assert motor_pins[ROWS["B"]].state and motor_pins[COLUMNS["2"]].state
    stopper = threading.Thread(target=hardware.all_motors_off)
    stopper.start()
    stopper.join(5.0)
    assert not stopper.is_alive()
    assert not hardware.motors["B2"].is_running
    assert all(pin.state is False for pin in motor_pins.values())
    assert not hardware.fault_calls.wait_for(1, timeout=SHORT_LIMIT + 0.3)


def test_close_leaves_every_motor_pin_low_and_later_calls_are_safe(open_machine):
    hardware = open_machine(turn_limit_s=SHORT_LIMIT)
    motor_pins = pins(hardware, MATRIX_PINS)  # held here: the closed factory forgets its pins
    hardware.motors["B2"].run()
    hardware.close()
    assert all(pin.state is False for pin in motor_pins.values())
    assert not hardware.motors["B2"].is_running
    hardware.all_motors_off()
    hardware.close()
    assert not hardware.fault_calls.wait_for(1, timeout=SHORT_LIMIT + 0.3)


# -- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("library, package", [("rpigpio", "RPi.GPIO"), ("lgpio", "lgpio")])
def test_a_pin_library_that_cannot_load_says_what_to_install_or_check(tmp_path, library, package):
    with pytest.raises(HardwareError) as info:
        open_hardware(gpio_config(tmp_path, pin_library=library))
    message = str(info.value)
    assert message.startswith(f"[gpio] pin_library = {library} ")
    assert f"pip install {package}" in message or "/dev/gpiochip0" in message, message
    assert "\n" not in message and "Traceback" not in message
    assert info.value.__suppress_context__


def test_a_pin_gpiozero_refuses_is_reported_naming_the_config_key(tmp_path):
    # GPIO2 has a fixed pull-up on the board: an active-high sensor needs a pull-down there.
    with pytest.raises(HardwareError) as info:
        open_hardware(gpio_config(tmp_path, drop_pin=2, drop_active_low="no"))
    message = str(info.value)
    assert message.startswith("[gpio] drop_pin (GPIO2): ")
    assert "pull" in message


def test_a_pin_not_on_the_header_is_reported_naming_the_config_key(tmp_path):
    cfg = gpio_config(tmp_path)
    cfg["gpio"]["cam_pin"] = 28  # past what the config allows: as gpiozero sees a pin that is not there
    with pytest.raises(HardwareError) as info:
        open_hardware(cfg)
    assert str(info.value).startswith("[gpio] cam_pin (GPIO28): ")
