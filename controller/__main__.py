"""``vend-controller``: run the daemon, check a config, or ask the running daemon as a technician."""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import signal
import socket
import subprocess
import sys

import hw
from hw import HardwareError

from .config import DEFAULT_PATH, ConfigError, load


def service_request(path: str, request: dict) -> dict:
    """Send one request to the running daemon's service socket and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        try:
            sock.connect(path)
        except OSError as e:
            raise SystemExit(f"cannot reach the controller at {path}: {e.strerror}; is vend-controller running?")
        sock.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(sock.makefile("rb").readline())


def parse_counts(items: list[str]) -> dict[str, int]:
    """``A1=8 A2=6`` as {slot: count}."""
    counts = {}
    for item in items:
        slot, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise SystemExit(f"restock: {item!r} should look like A1=8 (slot=count)")
        counts[slot.strip()] = int(count)
    return counts


def safe_pins(cfg) -> int:
    """Drive every motor output off with the system's own pin tool; 0 if every command worked.

    The daemon switches its motors off on SIGTERM and on the way out, but a SIGKILL, the OOM killer or a
    watchdog abort leaves the outputs where they were: the unit runs this as ExecStopPost, after any end."""
    try:
        commands = hw.safe_commands(cfg)
    except HardwareError as e:
        print(f"vend-controller safe-pins: {e}", file=sys.stderr)
        return 1
    if not commands:
        print(f"backend {cfg.hardware.backend}: no GPIO outputs, nothing to drive")
        return 0
    failed = 0
    for what, argv in commands:  # every pin is tried, whatever happened to the one before
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            error = done.stderr.strip() or f"exit status {done.returncode}" if done.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as e:
            error = str(e)
        if error:
            failed += 1
            print(f"vend-controller safe-pins: {what}: {' '.join(argv)} failed: {error}", file=sys.stderr)
        else:
            print(f"{what}: {' '.join(argv)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the daemon, check a config, or talk to the running daemon; the exit status says how it went."""
    parser = argparse.ArgumentParser(prog="vend-controller", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_PATH, help=f"config file (default {DEFAULT_PATH})")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the daemon (the default)")
    sub.add_parser("check", help="check the config and exit")
    sub.add_parser("safe-pins", help="drive every motor output off with the system's pin tool (pinctrl), from "
                                     "outside the daemon: the unit's ExecStopPost, after a crash")
    service = sub.add_parser("service", help="talk to the running daemon, as a technician")
    service.add_argument("op", choices=("status", "restock"))
    service.add_argument("counts", nargs="*", help="for restock: slot=count, e.g. A1=8 A2=6")
    args = parser.parse_args(argv)

    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"vend-controller: {e}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{args.config}: ok (machine {cfg.machine.id}, {len(cfg.hardware.slots)} slots)")
        return 0
    if args.command == "safe-pins":
        return safe_pins(cfg)
    if args.command == "service":
        request = {"op": args.op}
        if args.op == "restock":
            request["counts"] = parse_counts(args.counts)
        answer = service_request(cfg.service.socket, request)
        print(json.dumps(answer, indent=2))
        return 0 if answer.get("ok") else 1

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(levelname)s %(name)s: %(message)s")
    from .daemon import Controller

    controller = Controller(cfg)

    def on_signal(*_) -> None:
        # Motors off in the handler itself, before the main loop gets round to stopping.
        controller.safe_state()
        controller.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(controller.safe_state)
    try:
        controller.run()
    except HardwareError as e:
        logging.getLogger("controller").error("hardware: %s", e)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
