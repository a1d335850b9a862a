"""The cabinet's DS18B20 thermometer on the 1-wire bus, read through the kernel's w1_therm driver in sysfs.

``{w1_dir}/{w1_id}/w1_slave`` holds the sensor's scratchpad twice, the first line ending with the driver's
CRC verdict and the second with the temperature in thousandths of a degree::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125
"""

from __future__ import annotations

import logging
import os
import re

from dataclasses import dataclass

from .base import BootSettings, HardwareError, Thermometer
from .settings import Settings, key

log = logging.getLogger(__name__)

_SCRATCHPAD = r"((?:[0-9a-f]{2} ){9})"
_CRC_LINE_RE = re.compile(_SCRATCHPAD + r": crc=[0-9a-f]{2} (YES|NO)\Z")
_TEMP_LINE_RE = re.compile(_SCRATCHPAD + r"t=(-?[0-9]+)\Z")

# The DS18B20's temperature register holds +85.000 °C from power-on until its first conversion ends: a
# sensor that browned out or lost its supply mid-read answers with it, CRC and all.
POWER_ON_MILLIDEGREES = 85000
CHECK_BUS = ("check that config.txt has dtoverlay=w1-gpio (and the pin it names), the 4.7 kΩ pull-up "
             "between the data line and 3.3 V, and the sensor's wiring")


@dataclass(kw_only=True, eq=False)
class ThermometerSettings(Settings, section="thermometer"):
    """[thermometer]: the cabinet's DS18B20, by its 1-wire id; none when the id is empty."""

    w1_id: str = key("str", "", pattern=re.compile(r"^$|^[0-9a-f]{2}-[0-9a-f]{12}\Z"),
                     what="a 1-wire id like 28-0316a2794eff, or empty for none")
    # The data line of the bus: config.txt gets dtoverlay=w1-gpio,gpiopin=N from vendctl provision.
    w1_pin: int = key("int", 4, 2, 27, what="the BCM GPIO of the 1-wire data line (4 by default)")
    w1_dir: str = key("str", "/sys/bus/w1/devices")
    read_every_s: float = key("float", 60.0, 5.0, 3600.0)


SETTINGS = (ThermometerSettings,)


def reserved_pins(cfg) -> dict[int, str]:
    """The header pin the 1-wire bus takes while a thermometer is configured, and why."""
    therm = cfg.section(ThermometerSettings)
    if not therm.w1_id:
        return {}
    return {therm.w1_pin: f"the 1-wire bus of [thermometer] w1_id (w1_pin = {therm.w1_pin}, "
                          "dtoverlay=w1-gpio in config.txt)"}


def boot_settings(cfg) -> BootSettings:
    """The kernel's 1-wire bus on the thermometer's pin, while one is configured."""
    therm = cfg.section(ThermometerSettings)
    if not therm.w1_id:
        return BootSettings()
    return BootSettings(config_txt=(f"dtoverlay=w1-gpio,gpiopin={therm.w1_pin}",))


def open_thermometer(settings: ThermometerSettings) -> W1Thermometer | None:
    """The configured thermometer, or None when ``[thermometer] w1_id`` is empty."""
    return W1Thermometer(settings.w1_id, settings.w1_dir) if settings.w1_id else None


class W1Thermometer(Thermometer):
    """A DS18B20 by its 1-wire id (``28-...``).

    Each read makes the kernel start a conversion and wait for it, about 750 ms (twice that when a CRC
    failure is retried): read from a thread of its own, never from the vend path.
    """

    def __init__(self, w1_id: str, w1_dir: str = "/sys/bus/w1/devices", *, crc_retries: int = 1):
        self.w1_id = w1_id
        self.w1_dir = w1_dir
        self.path = os.path.join(w1_dir, w1_id, "w1_slave")
        # A long or noisy bus garbles the odd read; one more read tells a glitch from a broken sensor.
        self.crc_retries = crc_retries

    def read_c(self) -> float:
        """Degrees Celsius from a fresh conversion; HardwareError (never a guess) if the read is not sound."""
        for attempt in range(self.crc_retries + 1):
            crc_ok, scratchpad, millidegrees = self._parse(self._read())
            if crc_ok:
                break
            log.warning("thermometer %s: CRC error (read %d of %d)", self.w1_id, attempt + 1,
                        self.crc_retries + 1)
        else:
            reads = self.crc_retries + 1
            failed = "the read failed its" if reads == 1 else f"{reads} reads in a row failed their"
            raise HardwareError(f"thermometer {self.w1_id}: {failed} CRC check; a noisy or too long bus, or a "
                                f"loose wire: {CHECK_BUS}")
        if scratchpad == "00 " * 9:
            # A data line held low reads as all zeros, which happens to have a valid CRC: not a real 0 °C.
            raise HardwareError(f"thermometer {self.w1_id} read all zeros: the data line is held low; "
                                f"{CHECK_BUS}")
        if millidegrees == POWER_ON_MILLIDEGREES:
            raise HardwareError(
                f"thermometer {self.w1_id} reports 85.000 °C, its power-on value, not a measurement: the "
                "sensor reset during the read (check its power wire; in parasite power mode, the pull-up)"
            )
        return millidegrees / 1000

    def _read(self) -> str:
        try:
            with open(self.path) as f:
                return f.read()
        except FileNotFoundError:
            raise HardwareError(self._missing()) from None
        except OSError as e:
            raise HardwareError(f"cannot read thermometer {self.w1_id} at {self.path}: {e.strerror}") from None

    def _missing(self) -> str:
        if not os.path.isdir(self.w1_dir):
            return (f"thermometer {self.w1_id}: there is no 1-wire bus ({self.w1_dir} does not exist); "
                    f"{CHECK_BUS}")
        found = sorted(name for name in os.listdir(self.w1_dir) if name.startswith("28-"))
        seen = f"the bus has {', '.join(found)}" if found else "no DS18B20 answers on the bus"
        return (f"thermometer {self.w1_id} not found in {self.w1_dir} ({seen}); check [thermometer] w1_id, "
                f"and {CHECK_BUS.removeprefix('check ')}")

    def _parse(self, text: str) -> tuple[bool, str, int | None]:
        lines = text.splitlines()
        crc = _CRC_LINE_RE.fullmatch(lines[0].strip()) if lines else None
        if crc is not None and crc[2] == "NO":
            # What follows a failed CRC is whatever the bus garbled; only the verdict counts.
            return False, crc[1], None
        temp = _TEMP_LINE_RE.fullmatch(lines[1].strip()) if crc is not None and len(lines) == 2 else None
        if temp is None:
            raise HardwareError(
                f"thermometer {self.w1_id}: {self.path} does not read like a DS18B20 (expected a crc= line "
                f"and a t= line): {text[:120]!r}"
            )
        return True, crc[1], int(temp[2])
