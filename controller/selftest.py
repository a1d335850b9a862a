"""The self-test a machine runs each time the controller starts: shown on its screen before the QR, and kept in
the ledger (a ``selftest`` event) so the cloud shows it in ``vendctl machines show``.

Pins, drop sensor, door and thermometer are checked at once from the opened hardware; the broker and the clock
are waited for, up to ``[screen] selftest_s``: the broker connected, the clock set by NTP or by the cloud's ack
(a Pi has no clock battery). Each check is a pass or a fail with the reason in words, so a technician in front
of the machine reads what is wrong without a laptop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hw import Hardware, HardwareError

# systemd-timesyncd touches this file once NTP has set the clock (systemd 239 and later).
NTP_SYNCED_FLAG = "/run/systemd/timesync/synchronized"
HARDWARE_CHECKS = ("pins", "drop sensor", "door", "thermometer")
CHECKS = (*HARDWARE_CHECKS, "broker", "clock")


@dataclass(frozen=True)
class Check:
    """One line of the self-test: what was checked, whether it passed, and why in words."""

    name: str
    ok: bool | None  # None: still being checked
    detail: str

    def to_obj(self) -> dict:
        return {"check": self.name, "ok": bool(self.ok), "detail": self.detail[:200]}


def hardware_checks(hardware: Hardware) -> list[Check]:
    """Pins, drop sensor, door and thermometer of hardware that opened (its motors were driven off)."""
    how = hardware.describe()
    checks = [Check("pins", True, f"{len(hardware.motors)} motor outputs claimed and off" + (f" ({how})" if how
                                                                                               else ""))]
    try:
        inputs = hardware.inputs()
    except HardwareError as e:
        checks += [Check("drop sensor", False, str(e)), Check("door", False, str(e))]
    else:
        beam = inputs.get("drop sensor")
        if beam is None:
            checks.append(Check("drop sensor", False, "this backend cannot read the sensor's state"))
        elif beam == "clear":
            checks.append(Check("drop sensor", True, "beam clear"))
        else:
            checks.append(Check("drop sensor", False, f"{beam}: something in front of the sensor, or its wiring"))
        door = inputs.get("door", "unknown")
        checks.append(Check("door", door in ("shut", "open"), f"door {door}"))
    if hardware.thermometer is None:
        checks.append(Check("thermometer", True, "none configured"))
    else:
        try:
            checks.append(Check("thermometer", True, f"{hardware.thermometer.read_c():.1f} C"))
        except HardwareError as e:
            checks.append(Check("thermometer", False, str(e)))
    return checks


def hardware_failed(error: Exception) -> list[Check]:
    """The self-test of a machine whose hardware did not open: the reason, and nothing else checked."""
    return [Check("pins", False, str(error)),
            *(Check(name, False, "not checked: the hardware did not open") for name in CHECKS[1:])]


class SelfTest:
    """The checks of one start; the broker and the clock are settled by ``update`` as they come or time out."""

    def __init__(self, started: float, wait_s: float, hardware: list[Check], broker: str,
                 ntp_flag: str = NTP_SYNCED_FLAG):
        self.started = started
        self.wait_s = wait_s
        self.broker = broker
        self.ntp_flag = ntp_flag
        self.checks = {c.name: c for c in hardware}
        self.checks["broker"] = Check("broker", None, f"connecting to {broker}...")
        self.checks["clock"] = Check("clock", None, "waiting for NTP or the cloud...")
        self.done = False

    def update(self, now: float, connected: bool, cloud_clock: bool, link_error: str) -> bool:
        """Settle the broker and the clock if they are known or time is up; True once every check is settled."""
        waited = now - self.started
        timed_out = waited >= self.wait_s
        if connected and self.checks["broker"].ok is not True:
            self.checks["broker"] = Check("broker", True, f"{self.broker} connected after {waited:.1f} s")
        elif timed_out and self.checks["broker"].ok is None:
            self.checks["broker"] = Check("broker", False, f"{self.broker}: no connection in {self.wait_s:.0f} s"
                                          + (f" ({link_error})" if link_error else "") + "; still trying")
        if self.checks["clock"].ok is None:
            if os.path.exists(self.ntp_flag):
                self.checks["clock"] = Check("clock", True, "set by NTP")
            elif cloud_clock:
                self.checks["clock"] = Check("clock", True, "set from the cloud's clock (no NTP answer yet)")
            elif timed_out:
                self.checks["clock"] = Check("clock", False, f"not set after {self.wait_s:.0f} s: no NTP answer and "
                                             "no word from the cloud (a Pi has no clock battery)")
        self.done = all(c.ok is not None for c in self.checks.values())
        return self.done

    def lines(self) -> list[Check]:
        """The checks in the order the screen shows them."""
        return [self.checks[name] for name in CHECKS if name in self.checks]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.lines())

    def event_data(self) -> dict:
        """The ``selftest`` ledger event's data."""
        return {"checks": [c.to_obj() for c in self.lines()], "passed": self.passed}
