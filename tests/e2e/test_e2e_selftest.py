"""The self-test at start (issue 17 item 5), with the real controller, broker and cloud: on the machine's screen
before the QR, each check passed or failed with its reason, and the same lines in `vendctl machines show`."""

import os
import subprocess
import sys

from PIL import Image

from tests.e2e.harness import Machine, wait_until
from tests.e2e.test_e2e_people import vendctl
from tests.tools import need

BROKEN_THERMOMETER = "[thermometer]\nw1_id = 28-0316a2794eff\nw1_dir = {home}/no-w1-bus\n"


def red_pixels(path) -> int:
    """Pixels of the red a failed check is drawn in (its cross and its line)."""
    data = Image.open(path).convert("RGB").tobytes()
    return sum(1 for i in range(0, len(data), 3) if data[i] > 150 and data[i + 1] < 60 and data[i + 2] < 60)


def qr_on(path) -> str:
    out = subprocess.run([need("zbarimg"), "--quiet", "--raw", str(path)], capture_output=True, text=True)
    return out.stdout.strip()


def test_the_self_test_is_on_the_screen_before_the_qr_and_in_vendctl(broker, cloud, tmp_path):
    machine = Machine(cloud, broker, str(tmp_path), "m-selftest", selftest_show=4,
                      extra=BROKEN_THERMOMETER.format(home=tmp_path))
    screen = os.path.join(machine.home, "screen.png")
    machine.proc.start()
    try:
        wait_until(lambda: os.path.exists(screen), 30, "the first frame on the screen")
        first = tmp_path / "first-frame.png"
        first.write_bytes(open(screen, "rb").read())
        assert qr_on(first) == "", "the QR came before the self-test"
        assert red_pixels(first) > 50, "the failing thermometer is not drawn in red"
        wait_until(lambda: os.path.exists(machine.url_file), 30, "the QR after the self-test")
        url = open(machine.url_file).read().strip()
        wait_until(lambda: qr_on(screen) == url, 10, "the QR on the screen")

        code, out, err = vendctl(cloud, "machines", "show", "m-selftest")
        wait_until(lambda: "self-test FAILED" in vendctl(cloud, "machines", "show", "m-selftest")[1], 20,
                   "the self-test to reach the cloud")
        code, out, err = vendctl(cloud, "machines", "show", "m-selftest")
        assert code == 0, err
        lines = [line.strip() for line in out.splitlines()]
        assert "✓ pins: 4 motor outputs claimed and off (simulated)" in lines
        assert "✓ drop sensor: beam clear" in lines and "✓ door: door shut" in lines
        assert any(line.startswith("✗ thermometer: ") and "no-w1-bus" in line for line in lines), out
        assert any(line.startswith(f"✓ broker: 127.0.0.1:{broker.port} connected after") for line in lines), out
        assert any(line.startswith("✓ clock: set") for line in lines), out
        shown = cloud.api("GET", "/api/v1/machines/m-selftest")["selftest"]
        assert shown["passed"] is False and [c["check"] for c in shown["checks"]] == [
            "pins", "drop sensor", "door", "thermometer", "broker", "clock"]
    finally:
        machine.proc.stop()


def test_hardware_that_does_not_open_is_said_on_the_screen_and_the_controller_stops(tmp_path):
    """RPi.GPIO is not on this computer: the pins line names it, in red, and nothing sells."""
    config = tmp_path / "controller.ini"
    config.write_text(f"""[machine]
id = m-nopins
secret = 0123456789abcdef
[cloud]
url = http://cloud.invalid
[ledger]
path = {tmp_path}/ledger.db
[hardware]
backend = gpio
slots = A1
[gpio]
pin_library = rpigpio
motor_wiring = direct
motor_pins = A1:20
drop_pin = 17
[screen]
display = png
[sim]
display_path = {tmp_path}/screen.png
""")
    out = subprocess.run([sys.executable, "-m", "controller", "--config", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "self-test: pins FAILED: [gpio] pin_library = rpigpio needs RPi.GPIO" in out.stdout + out.stderr, out.stdout
    assert red_pixels(tmp_path / "screen.png") > 200  # six failed lines
    assert qr_on(tmp_path / "screen.png") == ""
