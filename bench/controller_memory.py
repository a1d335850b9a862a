"""Resident memory of an idle controller daemon, connected and showing its rotating QR code.

    python bench/controller_memory.py --idle 20

Prints VmRSS and VmHWM (peak) from /proc; the baseline is a bare Python interpreter measured the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))

from harness import Broker, Cloud, Machine, wait_until  # noqa: E402


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
    os.environ["PATH"] += os.pathsep + "/usr/sbin"
    kind = "mosquitto" if shutil.which("mosquitto") else "embedded"
    work = tempfile.mkdtemp(prefix="vend-bench-")
    broker = Broker(kind, os.path.join(work, "broker"))
    broker.start()
    cloud = Cloud(broker, work)
    cloud.start()
    machine = Machine(cloud, broker, work, "mem-1")
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        machine.start()
        wait_until(lambda: machine.request({"op": "status"})["online"], 20, "the controller to connect")
        time.sleep(args.idle)
        controller = memory_kb(machine.proc.proc.pid)
        baseline = memory_kb(bare.pid)
        print(json.dumps({
            "benchmark": "controller_memory",
            "idle_rss_mb": round(controller["VmRSS"] / 1024, 1),
            "peak_rss_mb": round(controller["VmHWM"] / 1024, 1),
            "baseline_bare_python_rss_mb": round(baseline["VmRSS"] / 1024, 1),
            "settings": {"idle_s": args.idle, "backend": "sim", "broker": kind, "python": sys.version.split()[0]},
        }, indent=2))
    finally:
        bare.kill()
        machine.proc.stop()
        cloud.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
