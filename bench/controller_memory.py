"""Resident memory of an idle controller daemon, connected and showing its rotating QR code.

    python bench/controller_memory.py --idle 20

Prints VmRSS and VmHWM (peak) from /proc; the baseline is a bare Python interpreter measured the same way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _fleet import broker_kind, fleet
from harness import Machine, wait_until


def memory_kb(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=float, default=20, help="seconds to stay idle before reading")
    args = parser.parse_args()
    kind = broker_kind()
    with fleet(kind) as (work, broker, cloud):
        machine = Machine(cloud, broker, work, "mem-1")
        bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        try:
            measure(machine, bare, kind, args.idle)
        finally:
            bare.kill()
            machine.proc.stop()
    return 0


def measure(machine: Machine, bare: subprocess.Popen, kind: str, idle: float) -> None:
    machine.start()
    wait_until(lambda: machine.request({"op": "status"})["online"], 20, "the controller to connect")
    time.sleep(idle)
    controller = memory_kb(machine.proc.proc.pid)
    baseline = memory_kb(bare.pid)
    print(json.dumps({
        "benchmark": "controller_memory",
        "idle_rss_mb": round(controller["VmRSS"] / 1024, 1),
        "peak_rss_mb": round(controller["VmHWM"] / 1024, 1),
        "baseline_bare_python_rss_mb": round(baseline["VmRSS"] / 1024, 1),
        "settings": {"idle_s": idle, "backend": "sim", "broker": kind, "python": sys.version.split()[0]},
    }, indent=2))


if __name__ == "__main__":
    sys.exit(main())
