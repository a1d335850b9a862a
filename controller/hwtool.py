"""``vendctl hw``: a technician's bench tool for the machine's hardware, run on the machine itself.

It opens the hardware the controller's config describes (so it tests the wiring the daemon will use), which
means the daemon must be stopped first: two programs driving the same motors is how a machine drops two.
"""

from __future__ import annotations

import logging
import queue
import socket
import sys
import time

from hw import Hardware, HardwareError, open_hardware

from .config import DEFAULT_PATH, Config, ConfigError, load
from .words import said

TEST_URL = "https://example.com/vend-test-qr"


class ToolError(Exception):
    """Something the technician must fix; the text says what."""


def daemon_running(socket_path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(socket_path)
        except OSError:
            return False
    return True


def open_for_bench(cfg: Config) -> Hardware:
    """The machine's hardware for the bench tool, unless the daemon owns it."""
    if daemon_running(cfg.service.socket):
        raise ToolError("vend-controller is running and owns the hardware; stop it first: "
                        "sudo systemctl stop vend-controller (and start it again when done)")
    return open_hardware(cfg)


def show_pins(hardware: Hardware, cfg: Config, out) -> int:
    """The backend, its wiring and the live state of every input."""
    print(f"backend: {cfg.hardware.backend}{hardware.describe()}", file=out)
    if hardware.wiring:
        width = max(len(name) for name, _ in hardware.wiring)
        print("wiring:", file=out)
        for name, where in hardware.wiring:
            print(f"  {name.ljust(width)}  {where}", file=out)
    print("inputs now:", file=out)
    for name, state in hardware.inputs().items():
        print(f"  {name}: {state}", file=out)
    return 0


def run_slot(hardware: Hardware, slot: str, timeout: float, out) -> int:
    """Run one slot's motor once; report whether the drop sensor saw a product, and when."""
    if slot not in hardware.motors:
        raise ToolError(f"no slot {slot!r} in [hardware] slots; this machine has: {' '.join(hardware.motors)}")
    events: queue.Queue = queue.Queue()
    hardware.drop_sensor.when_drop = lambda t: events.put(("drop", t))
    hardware.faults.listener = lambda code, device, what, t: events.put(("fault", f"{device}: {what}"))
    motor = hardware.motors[slot]
    drops: list[float] = []
    faults: list[str] = []
    turn_ended: float | None = None
    started = time.monotonic()
    motor.run()
    try:
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                kind, value = events.get(timeout=0.01)
                if kind == "drop":
                    drops.append(value)
                    deadline = min(deadline, value + 0.3)  # a second product stuck to the first falls by then
                else:
                    faults.append(value)
            except queue.Empty:
                pass
            if turn_ended is None and not motor.is_running:
                turn_ended = time.monotonic()
            if drops and turn_ended is not None and time.monotonic() > drops[0] + 0.3:
                break
    finally:
        hardware.all_motors_off()
    for fault in faults:
        print(f"FAULT {fault}", file=out)
    turn = (f"the turn ended after {(turn_ended - started) * 1000:.0f} ms" if turn_ended is not None
            else f"the motor was still turning after {timeout:g} s and was stopped")
    if not drops:
        print(f"{slot}: NO DROP seen within {timeout:g} s; {turn}. Check: is the slot loaded, does the spiral "
              "turn, is the drop sensor wired and powered (vendctl hw watch shows it)?", file=out)
        return 1
    print(f"{slot}: drop seen after {(drops[0] - started) * 1000:.0f} ms"
          + (f", {len(drops)} drops (two products fell)" if len(drops) > 1 else "") + f"; {turn}", file=out)
    return 0


def watch(hardware: Hardware, seconds: float, out) -> int:
    """Print every input change for a while: drops and faults as they happen, the rest as seen."""
    events: queue.Queue = queue.Queue()
    hardware.drop_sensor.when_drop = lambda t: events.put((t, "drop sensor: DROP"))
    hardware.door.when_changed = lambda is_open, t: events.put((t, f"door: {'open' if is_open else 'shut'}"))
    hardware.faults.listener = lambda code, device, what, t: events.put((t, f"FAULT {device}: {what}"))
    if hardware.service_button is not None:
        hardware.service_button.when_pressed = lambda t: events.put((t, "service button: pressed"))
    started = time.monotonic()
    last = hardware.inputs()
    print(f"watching for {seconds:g} s (Ctrl-C to stop); now: "
          + ", ".join(f"{k}: {v}" for k, v in last.items()), file=out, flush=True)
    try:
        while time.monotonic() - started < seconds:
            try:
                t, line = events.get(timeout=0.05)
                print(f"{t - started:8.3f}  {line}", file=out, flush=True)
            except queue.Empty:
                pass
            now = hardware.inputs()
            for key, value in now.items():
                # The drop sensor's edges come from its listener; its level is shown only if it stays.
                if last.get(key) != value and key != "drop sensor":
                    print(f"{time.monotonic() - started:8.3f}  {key}: {value}", file=out, flush=True)
            last = now
    except KeyboardInterrupt:
        pass
    return 0


def test_pattern(size: tuple[int, int]):
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    image = Image.new("RGB", size, "black")
    draw = ImageDraw.Draw(image)
    bars = ["white", "yellow", "cyan", "lime", "magenta", "red", "blue", "black"]
    bar = width / len(bars)
    for i, colour in enumerate(bars):
        draw.rectangle([round(i * bar), 0, round((i + 1) * bar) - 1, height // 2], fill=colour)
    for x in range(0, width, 40):
        draw.line([x, height // 2, x, height - 1], fill="#888")
    for y in range(height // 2, height, 40):
        draw.line([0, y, width - 1, y], fill="#888")
    draw.rectangle([0, 0, width - 1, height - 1], outline="red")
    font = ImageFont.load_default(size=max(14, width // 20))
    draw.text((width // 2, height * 3 // 4), f"{width} x {height}", fill="white", font=font, anchor="mm")
    return image


def screen_test(hardware: Hardware, cfg: Config, seconds: float, out) -> int:
    from .screen import Screen

    display = hardware.display
    print(f"screen: {type(display).__name__} {display.size[0]}x{display.size[1]}; "
          f"test pattern for {seconds:g} s (colour bars, a grid, a red border at the very edge)", file=out,
          flush=True)
    display.show(test_pattern(display.size))
    time.sleep(seconds)
    screen = Screen(display, cfg.machine.id, cfg.machine.name, b"test-only-secret", "https://example.com",
                    cfg.screen.rotate_s, languages=cfg.screen.languages, font=cfg.screen.font)
    # In the machine's languages: a technician sees at once whether the Chinese font is there.
    image = screen.render(TEST_URL, said("Screen test"))
    display.show(image)
    print(f"test QR shown: a phone should read {TEST_URL}", file=out)
    return 0


def read_temperature(hardware: Hardware, out) -> int:
    if hardware.thermometer is None:
        raise ToolError("no thermometer configured: set [thermometer] w1_id (ls /sys/bus/w1/devices shows "
                        "the sensor's id, 28-...)")
    print(f"temperature: {hardware.thermometer.read_c():.2f} C", file=out)
    return 0


def add_parser(sub) -> None:
    """The ``hw`` subcommand, for vendctl's parser."""
    hwp = sub.add_parser("hw", help="on a machine: test its motors, sensors, screen and thermometer")
    hwp.add_argument("--config", default=DEFAULT_PATH, help=f"the controller's config (default {DEFAULT_PATH})")
    hwp.add_argument("-v", "--verbose", action="store_true", help="show the drivers' log too")
    hsub = hwp.add_subparsers(dest="hw_command", required=True)
    hsub.add_parser("pins", help="the pin map and the live state of every input")
    run = hsub.add_parser("run", help="run one slot once and say whether the drop sensor saw a product")
    run.add_argument("slot")
    run.add_argument("--timeout", type=float, default=None, help="seconds to wait for the drop "
                                                                  "(default [vend] drop_timeout_s)")
    w = hsub.add_parser("watch", help="print every input change for N seconds")
    w.add_argument("--seconds", type=float, default=30)
    s = hsub.add_parser("screen", help="show a test pattern, then a test QR code")
    s.add_argument("--seconds", type=float, default=5)
    hsub.add_parser("temp", help="read the thermometer")


def main(args, out=None) -> int:
    out = out or sys.stdout
    # Faults are printed by the tool itself; the drivers' log is for -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL, stream=sys.stderr,
                        format="log: %(name)s: %(message)s")
    try:
        cfg = load(args.config)
        hardware = open_for_bench(cfg)
    except (ConfigError, HardwareError, ToolError) as e:
        print(f"vendctl hw: {e}", file=sys.stderr)
        return 2
    try:
        if args.hw_command == "pins":
            return show_pins(hardware, cfg, out)
        if args.hw_command == "run":
            timeout = args.timeout if args.timeout is not None else cfg.vend.drop_timeout_s
            return run_slot(hardware, args.slot, timeout, out)
        if args.hw_command == "watch":
            return watch(hardware, args.seconds, out)
        if args.hw_command == "screen":
            return screen_test(hardware, cfg, args.seconds, out)
        if args.hw_command == "temp":
            return read_temperature(hardware, out)
        raise AssertionError(args.hw_command)
    except (HardwareError, ToolError) as e:
        print(f"vendctl hw: {e}", file=sys.stderr)
        return 1
    finally:
        hardware.close()
