"""The safe state: whatever goes wrong in the vend path, and whenever the daemon is told to stop, every motor
output goes off first. Checked on the GPIO driver's own pins (gpiozero's mock pins)."""

import pytest

from controller.config import parse
from controller.daemon import Controller
from controller.vend import Record, RunMotor
from hw import open_hardware

CONFIG = """
[machine]
id = safe-1
secret = 0123456789abcdef
[cloud]
url = http://cloud.invalid
[hardware]
backend = gpio
slots = A1 B2
[gpio]
pin_library = mock
motor_rows = A:9 B:10
motor_columns = 1:11 2:12
cam_pin = 22
drop_pin = 23
turn_limit_s = 10
[sim]
jam = B2
display_path = {tmp}/screen.png
[screen]
display = png
[ledger]
path = {tmp}/ledger.db
"""
MOTOR_PINS = (9, 10, 11, 12)


@pytest.fixture
def controller(tmp_path):
    cfg = parse(CONFIG.format(tmp=tmp_path))
    c = Controller(cfg, open_hardware(cfg))
    yield c
    c.hardware.close()
    c.ledger.close()


def powered(controller) -> list[int]:
    return [n for n in MOTOR_PINS if controller.hardware.factory.gpio(n).state]


def test_a_failure_in_the_vend_path_leaves_every_motor_off(controller):
    controller.execute([RunMotor("B2")])
    assert powered(controller) == [10, 12]  # row B and column 2: the jammed spiral is turning
    controller.ledger.close()  # the next write fails, as a full or broken SD card would make it
    with pytest.raises(Exception):
        controller.execute([RunMotor("B2"), Record("vend.started", {"order_id": "o", "cmd_id": "c", "slot": "B2"})])
    assert powered(controller) == []
    assert not controller.hardware.motors["B2"].is_running


def test_safe_state_stops_a_turning_motor_and_is_safe_to_repeat(controller):
    controller.execute([RunMotor("B2")])
    assert controller.hardware.motors["B2"].is_running
    controller.safe_state()  # what the SIGTERM handler and the exit hook call
    assert powered(controller) == []
    controller.hardware.close()
    controller.safe_state()  # at exit, after the hardware was closed: no error
