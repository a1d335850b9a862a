"""The GPIO motor outputs from outside the controller: ``vend-controller safe-pins`` (what the unit's
ExecStopPost runs after any end of the daemon, a SIGKILL or a watchdog abort included) and the header pins
that 1-wire and the UART take from the pin map."""

import os
import subprocess
import sys

import pytest

import hw
from controller.config import ConfigError, parse
from tests.tools import REPO

HEAD = ("[machine]\nid = vm-1\nsecret = 0123456789abcdef\n[cloud]\nurl = http://cloud\n"
        "[hardware]\nbackend = gpio\nslots = A1 A2 B1 B2\n")
MATRIX = "[gpio]\npin_library = lgpio\nmotor_rows = A:20 B:21\nmotor_columns = 1:12 2:16\ndrop_pin = 17\n"
THERMOMETER = "[thermometer]\nw1_id = 28-0316a2794eff\n"


def pinctrl_stand_in(folder) -> str:
    """A ``pinctrl`` on PATH that records its arguments, one call a line."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "pinctrl"
    tool.write_text(f'#!/bin/sh\necho "$*" >> {folder}/pinctrl.calls\n')
    tool.chmod(0o755)
    return str(bin_dir)


def safe_pins(config_path, path_dirs: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path_dirs, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "controller", "--config", str(config_path), "safe-pins"],
                          capture_output=True, text=True, env=env, timeout=60)


def calls(folder) -> list[str]:
    return (folder / "pinctrl.calls").read_text().splitlines()


def test_safe_pins_drives_every_motor_output_off_rows_first(tmp_path):
    config = tmp_path / "controller.ini"
    config.write_text(HEAD + MATRIX)
    out = safe_pins(config, pinctrl_stand_in(tmp_path) + ":/usr/bin:/bin")
    assert out.returncode == 0, out.stderr
    # Rows (the high side) before columns, as MotorBank._off does; inputs (drop_pin 17) are left alone.
    assert calls(tmp_path) == ["set 20 op dl", "set 21 op dl", "set 12 op dl", "set 16 op dl"]
    assert "GPIO 20" in out.stdout


def test_active_low_motors_are_driven_high(tmp_path):
    config = tmp_path / "controller.ini"
    config.write_text(HEAD.replace("A1 A2 B1 B2", "A1 A2") + "[gpio]\npin_library = lgpio\nmotor_wiring = direct\n"
                      "motor_pins = A1:5 A2:6\nmotor_active_high = no\ndrop_pin = 17\n")
    assert safe_pins(config, pinctrl_stand_in(tmp_path) + ":/usr/bin:/bin").returncode == 0
    assert calls(tmp_path) == ["set 5 op dh", "set 6 op dh"]


def test_safe_pins_without_pinctrl_fails_naming_what_to_install(tmp_path):
    config = tmp_path / "controller.ini"
    config.write_text(HEAD + MATRIX)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = safe_pins(config, str(empty))
    assert out.returncode == 1
    assert "pinctrl" in out.stderr and "raspi-utils" in out.stderr


def test_a_backend_without_gpio_outputs_has_nothing_to_do(tmp_path):
    config = tmp_path / "controller.ini"
    config.write_text(HEAD.replace("backend = gpio", "backend = serial"))
    out = safe_pins(config, "/usr/bin:/bin")
    assert out.returncode == 0 and "nothing to drive" in out.stdout


@pytest.mark.parametrize("gpio, what", [
    ("motor_active_high = no\nmotor_rows = A:4 B:2\nmotor_columns = 1:5 2:6\ndrop_pin = 17\n", "motor_rows A"),
    ("motor_rows = A:20 B:21\nmotor_columns = 1:12 2:16\ndrop_pin = 17\ncam_pin = 4\n", "cam_pin"),
])
def test_a_pin_the_1wire_thermometer_takes_is_refused(gpio, what):
    with pytest.raises(ConfigError) as info:
        parse(HEAD + "[gpio]\npin_library = lgpio\n" + gpio + THERMOMETER, "lobby.ini")
    assert str(info.value) == (f"lobby.ini: [gpio] {what}: GPIO 4 is taken by the 1-wire bus of [thermometer] w1_id "
                               "(w1_pin = 4, dtoverlay=w1-gpio in config.txt); use another pin")


def test_the_1wire_bus_on_another_pin_takes_that_pin_and_frees_gpio_4():
    text = (HEAD + "[gpio]\npin_library = lgpio\nmotor_active_high = no\nmotor_rows = A:4 B:2\n"
            "motor_columns = 1:5 2:6\ndrop_pin = 17\n" + THERMOMETER + "w1_pin = 22\n")
    assert parse(text, "x.ini")["gpio"]["motor_rows"] == {"A": 4, "B": 2}
    with pytest.raises(ConfigError, match="drop_pin: GPIO 22 is taken by the 1-wire bus"):
        parse(text.replace("drop_pin = 17", "drop_pin = 22"), "x.ini")


def test_gpio_4_is_free_without_a_thermometer():
    text = (HEAD + "[gpio]\npin_library = lgpio\nmotor_active_high = no\nmotor_rows = A:4 B:2\n"
            "motor_columns = 1:5 2:6\ndrop_pin = 17\n")
    assert parse(text, "x.ini")["gpio"]["motor_rows"] == {"A": 4, "B": 2}


def test_the_serial_board_on_the_headers_uart_takes_gpio_14_and_15():
    cfg = parse(HEAD.replace("backend = gpio", "backend = serial") + "[serial]\nport = /dev/serial0\n", "x.ini")
    reserved = hw.reserved_pins(cfg)
    assert sorted(reserved) == [14, 15] and "UART" in reserved[14]
    usb = parse(HEAD.replace("backend = gpio", "backend = serial") + "[serial]\nport = /dev/ttyUSB0\n", "x.ini")
    assert hw.reserved_pins(usb) == {}


def test_a_gpio_pin_on_a_pin_another_part_reserves_is_refused(monkeypatch):
    # A part of the machine that uses the UART alongside the GPIO backend (none ships today) reserves
    # 14/15 through the same registry; the pin map refuses them, naming the pin and the part.
    monkeypatch.setattr(hw, "reserved_pins", lambda cfg: {14: "the UART's TXD (a card reader)",
                                                          15: "the UART's RXD (a card reader)"})
    with pytest.raises(ConfigError, match=r"motor_columns 2: GPIO 14 is taken by the UART's TXD \(a card reader\)"):
        parse(HEAD + MATRIX.replace("2:16", "2:14"), "x.ini")
