"""``vend-controller`` with a wall clock that ``bench/chaos.py`` can step: bench only, never on a machine.

The controller takes its wall clock as an argument (``Controller(cfg, wallclock=...)``; its unit tests give it
a fake one). This entry point runs the ordinary ``vend-controller`` main with a wall clock that reads
``time.time()`` plus an offset kept in the file named by ``VEND_CHAOS_CLOCK_FILE``, read again on SIGUSR1:
a step of that offset is what NTP does to a Pi that booted without a real-time clock. The monotonic clock
is left alone, as the kernel leaves it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

CLOCK_FILE = os.environ.get("VEND_CHAOS_CLOCK_FILE", "")
_offset = [0.0]


def read_offset(*_) -> None:
    """Take up the offset in the clock file (0 when there is none)."""
    try:
        with open(CLOCK_FILE) as f:
            _offset[0] = float(f.read().strip() or 0)
    except (OSError, ValueError):
        _offset[0] = 0.0


if __name__ == "__main__":
    # First of all: SIGUSR1's default action would end the process.
    read_offset()
    signal.signal(signal.SIGUSR1, read_offset)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import controller.daemon  # noqa: E402
from controller.__main__ import main  # noqa: E402


def stepped_wallclock() -> float:
    return time.time() + _offset[0]


class SteppedClockController(controller.daemon.Controller):
    """The daemon, unchanged, on the stepped wall clock."""

    def __init__(self, cfg, hardware=None, **clocks):
        # A clock the run steps is one NTP has not set: whatever this box's NTP says, the controller must
        # learn the time from the cloud before it judges a command.
        clocks.setdefault("ntp_flag", CLOCK_FILE + ".ntp-never")
        super().__init__(cfg, hardware, wallclock=stepped_wallclock, **clocks)


if __name__ == "__main__":
    controller.daemon.Controller = SteppedClockController  # main() imports it from there when it runs
    sys.exit(main())
