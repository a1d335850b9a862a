"""Unit tests for hw/ (the simulated machine) and controller/screen.py drawing onto its PNG display."""

import subprocess
import threading
import time

import pytest
from tests.tools import need
from PIL import Image

import hw
from controller.config import parse
from controller.screen import Screen
from hw import HardwareError, open_hardware

DELAY = 0.05
CLOUD = "https://vend.example.com"


class Drops:
    """A when_drop listener that counts drops and lets a test wait for the n-th one."""

    def __init__(self):
        self.times: list[float] = []
        self._cond = threading.Condition()

    def __call__(self, t: float) -> None:
        with self._cond:
            self.times.append(t)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.times) >= n, timeout)


def machine_config(text: str) -> dict:
    return parse("[machine]\nid = vm-1\nsecret = 0123456789abcdef\n[cloud]\nurl = http://cloud\n" + text)


@pytest.fixture
def machine(tmp_path):
    hardware = open_hardware(machine_config(
        "[hardware]\nbackend = sim\nslots = A1 A2 A3\n"
        f"[sim]\ndrop_delay_s = {DELAY}\njam = A2\ndouble = A3\ndisplay_path = {tmp_path / 'screen.png'}\n"))
    drops = Drops()
    hardware.drop_sensor.when_drop = drops
    yield hardware, drops
    hardware.close()


def test_sim_opens_one_motor_per_slot(machine):
    hardware, _ = machine
    assert sorted(hardware.motors) == ["A1", "A2", "A3"]
    assert not any(m.is_running for m in hardware.motors.values())
    assert not hardware.door.is_open


def test_running_a_good_slot_drops_once(machine):
    hardware, drops = machine
    before = time.monotonic()
    hardware.motors["A1"].run()
    assert hardware.motors["A1"].is_running
    assert drops.wait_for(1, timeout=1.0)
    assert drops.times[0] >= before
    # A second drop would come DOUBLE_DROP_GAP_S later; give it ample time not to come.
    assert not drops.wait_for(2, timeout=0.3)
    assert len(drops.times) == 1


def test_a_jammed_slot_never_drops(machine):
    hardware, drops = machine
    hardware.motors["A2"].run()
    assert hardware.motors["A2"].turns == 1
    assert not drops.wait_for(1, timeout=0.3)
    assert drops.times == []


def test_a_double_slot_drops_twice(machine):
    hardware, drops = machine
    hardware.motors["A3"].run()
    assert drops.wait_for(2, timeout=1.0)
    assert not drops.wait_for(3, timeout=0.2)
    assert len(drops.times) == 2
    assert drops.times[1] > drops.times[0]


def test_wait_for_drop_sees_a_drop_and_times_out_without_one(machine):
    hardware, _ = machine
    assert not hardware.drop_sensor.wait_for_drop(0.1)
    hardware.motors["A1"].run()
    assert hardware.drop_sensor.wait_for_drop(1.0)


def test_a_turn_ends_on_its_own(machine):
    hardware, _ = machine
    motor = hardware.motors["A2"]
    motor.run()
    deadline = time.monotonic() + 1.0
    while motor.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not motor.is_running


def test_all_motors_off_leaves_no_motor_running(machine):
    hardware, _ = machine
    for motor in hardware.motors.values():
        motor.run()
    assert all(m.is_running for m in hardware.motors.values())
    hardware.all_motors_off()
    assert not any(m.is_running for m in hardware.motors.values())
    hardware.all_motors_off()  # safe to repeat
    assert not any(m.is_running for m in hardware.motors.values())


def test_door_listener_hears_open_and_close(machine):
    hardware, _ = machine
    seen = []
    hardware.door.when_changed = lambda is_open, t: seen.append(is_open)
    hardware.door.set_open(True)
    assert hardware.door.is_open
    hardware.door.set_open(False)
    assert seen == [True, False]


def test_unknown_backend_names_the_available_ones(monkeypatch):
    cfg = machine_config("[hardware]\nbackend = sim\nslots = A1\n")
    monkeypatch.setitem(cfg["hardware"], "backend", "floppy")
    with pytest.raises(HardwareError) as info:
        open_hardware(cfg)
    message = str(info.value)
    assert "floppy" in message
    for name in hw.BACKENDS:
        assert name in message


def test_png_display_writes_a_readable_png_of_its_size(machine):
    hardware, _ = machine
    display = hardware.display
    display.show(Image.new("RGB", display.size, "white"))
    with Image.open(display.path) as image:
        assert image.format == "PNG"
        assert image.size == tuple(display.size)
    assert display.frames == 1


def make_screen(hardware, tmp_path):
    return Screen(hardware.display, "vm-001", "Lobby", b"0123456789abcdef", CLOUD, rotate_s=5.0,
                  url_file=str(tmp_path / "url.txt"))


def test_screen_draws_a_png_and_writes_the_url_file(machine, tmp_path):
    hardware, _ = machine
    screen = make_screen(hardware, tmp_path)
    assert screen.refresh(1_000_000.0, "Ready")
    with Image.open(hardware.display.path) as image:
        assert image.size == tuple(hardware.display.size)
    url = (tmp_path / "url.txt").read_text().strip()
    assert url.startswith(CLOUD + "/q/")
    assert url == screen.url
    assert url[len(CLOUD + "/q/"):].startswith("vm-001.")


def test_screen_does_not_redraw_when_nothing_changed(machine, tmp_path):
    hardware, _ = machine
    screen = make_screen(hardware, tmp_path)
    assert screen.refresh(1_000_000.0, "Ready")
    assert not screen.refresh(1_000_001.0, "Ready")  # same rotation window, same status
    assert hardware.display.frames == 1
    assert screen.refresh(1_000_001.0, "Offline - reconnecting")
    assert hardware.display.frames == 2


def test_next_nonce_gives_a_new_url_at_the_same_time(machine, tmp_path):
    hardware, _ = machine
    screen = make_screen(hardware, tmp_path)
    screen.refresh(1_000_000.0, "Ready")
    first = (tmp_path / "url.txt").read_text().strip()
    screen.next_nonce()
    assert screen.refresh(1_000_000.0, "Ready")
    second = (tmp_path / "url.txt").read_text().strip()
    assert second.startswith(CLOUD + "/q/")
    assert second != first
    assert hardware.display.frames == 2


def test_screen_rotates_the_url_in_the_next_window(machine, tmp_path):
    hardware, _ = machine
    screen = make_screen(hardware, tmp_path)
    screen.refresh(1_000_000.0, "Ready")
    first = screen.url
    assert screen.refresh(1_000_005.0, "Ready")
    assert screen.url != first


def test_the_qr_on_the_screen_decodes_to_the_url_a_phone_opens(machine, tmp_path):
    hardware, _ = machine
    screen = make_screen(hardware, tmp_path)
    screen.refresh(1_000_000.0, "Ready")
    out = subprocess.run([need("zbarimg"), "--raw", "-q", hardware.display.path], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == screen.url
