"""`vendctl hw`, the technician's bench tool, on the GPIO backend with a simulated machine on mock pins."""

import socket
import subprocess
import sys
import threading

import pytest
from tests.tools import need

from cloud import cli
from controller import hwtool

CONFIG = """
[machine]
id = bench-1
secret = 0123456789abcdef
[cloud]
url = http://cloud.invalid
[hardware]
backend = gpio
slots = A1 A2 B1 B2
[gpio]
pin_library = mock
motor_rows = A:9 B:10
motor_columns = 1:11 2:12
cam_pin = 22
drop_pin = 23
door_pin = 24
service_pin = 25
turn_limit_s = 0.5
[sim]
drop_delay_s = 0.05
jam = B2
double = A2
empty = B1
display_path = {tmp}/screen.png
[screen]
display = png
[service]
socket = {tmp}/control.sock
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "controller.ini"
    path.write_text(CONFIG.format(tmp=tmp_path))
    return path


def vendctl(config, *args, capsys):
    code = cli.main(["hw", "--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_pins_shows_the_wiring_and_every_input(config, capsys):
    code, out, _ = vendctl(config, "pins", capsys=capsys)
    assert code == 0
    assert "backend: gpio (pin library mock)" in out
    assert "motor B2" in out and "row B GPIO10 + column 2 GPIO12" in out
    for line in ("cam switch: closed (home)", "drop sensor: clear", "door: shut", "service button: up",
                 "motor running: none"):
        assert line in out


def test_run_reports_the_drop_and_the_end_of_the_turn(config, capsys):
    code, out, _ = vendctl(config, "run", "A1", capsys=capsys)
    assert code == 0
    assert out.startswith("A1: drop seen after ") and "the turn ended after" in out
    ms = int(out.split("drop seen after ")[1].split(" ms")[0])
    assert 40 <= ms < 1000


def test_run_counts_two_products_falling(config, capsys):
    code, out, _ = vendctl(config, "run", "A2", capsys=capsys)
    assert code == 0
    assert "2 drops (two products fell)" in out


def test_run_on_an_empty_slot_says_what_to_check(config, capsys):
    code, out, _ = vendctl(config, "run", "B1", "--timeout", "0.5", capsys=capsys)
    assert code == 1
    assert "B1: NO DROP seen within 0.5 s; the turn ended after" in out
    assert "is the slot loaded" in out


def test_run_on_a_jammed_slot_reports_the_time_limit_fault(config, capsys):
    code, out, _ = vendctl(config, "run", "B2", "--timeout", "1", capsys=capsys)
    assert code == 1
    assert "FAULT motor B2: turn did not end on the cam switch within 0.5 s" in out
    assert "NO DROP" in out


def test_run_of_an_unknown_slot_lists_the_machines_slots(config, capsys):
    code, _, err = vendctl(config, "run", "Z9", capsys=capsys)
    assert code == 1
    assert "no slot 'Z9'" in err and "A1 A2 B1 B2" in err


def test_watch_prints_the_door_as_it_changes(config, capsys, monkeypatch):
    opened = []
    real_open = hwtool.open_for_bench

    def open_and_open_the_door(cfg):
        hardware = real_open(cfg)
        opened.append(hardware)
        door = hardware.factory.gpio(24)
        threading.Timer(0.2, door.drive_high).start()  # the technician opens the door
        return hardware

    monkeypatch.setattr(hwtool, "open_for_bench", open_and_open_the_door)
    code, out, _ = vendctl(config, "watch", "--seconds", "1", capsys=capsys)
    assert code == 0
    assert "door: shut" in out.splitlines()[0]
    assert any(line.strip().endswith("door: open") for line in out.splitlines()[1:])


def test_screen_shows_a_test_qr_a_phone_can_read(config, tmp_path, capsys):
    code, out, _ = vendctl(config, "screen", "--seconds", "0", capsys=capsys)
    assert code == 0
    assert "PngDisplay 480x800" in out
    decoded = subprocess.run([need("zbarimg"), "--quiet", "--raw", str(tmp_path / "screen.png")],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert decoded == hwtool.TEST_URL


def test_temp_without_a_thermometer_says_which_key_to_set(config, capsys):
    code, _, err = vendctl(config, "temp", capsys=capsys)
    assert code == 1
    assert "[thermometer] w1_id" in err


def test_refuses_while_the_controller_owns_the_hardware(config, tmp_path, capsys):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as daemon:
        daemon.bind(str(tmp_path / "control.sock"))
        daemon.listen(1)
        code, out, err = vendctl(config, "run", "A1", capsys=capsys)
    assert code == 2
    assert "vend-controller is running" in err and "systemctl stop vend-controller" in err
    assert out == ""


def test_a_config_mistake_names_the_key(config, capsys):
    config.write_text(config.read_text().replace("drop_pin = 23", "drop_pin = 11"))
    code, _, err = vendctl(config, "pins", capsys=capsys)
    assert code == 2
    assert "GPIO 11 is used twice" in err and "drop_pin" in err


def test_vendctl_hw_runs_as_a_program(config):
    out = subprocess.run([sys.executable, "-m", "cloud.cli", "hw", "--config", str(config), "run", "A1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "A1: drop seen after" in out.stdout


def test_temp_reads_the_ds18b20_or_says_why_not(config, tmp_path, capsys):
    sensor = tmp_path / "w1" / "28-0316a2794eff"
    sensor.mkdir(parents=True)
    reading = sensor / "w1_slave"
    reading.write_text("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n")
    config.write_text(config.read_text() + f"[thermometer]\nw1_id = 28-0316a2794eff\nw1_dir = {tmp_path / 'w1'}\n")
    code, out, _ = vendctl(config, "temp", capsys=capsys)
    assert (code, out) == (0, "temperature: 23.12 C\n")
    reading.write_text("72 01 4b 46 7f ff 0e 10 57 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n")
    code, out, err = vendctl(config, "temp", capsys=capsys)
    assert code == 1 and out == ""
    assert "CRC" in err
