"""A behavioural simulator of a whole machine: motors that make products fall, a door, a PNG screen.

Running a slot's motor makes the drop sensor fire ``drop_delay_s`` later, the way a spiral pushes a product
over the edge, unless the config says that slot jams, is empty or drops two: the slot's physics
(``hw/physics.py``, shared with the other simulators) say what falls and when. This backend's motors have no
cam switch, so a turn simply lasts 1.5 times the drop delay, jammed or not.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from .base import Display, Door, DropSensor, Hardware, Motor
from .physics import Slot, Timers, slots_from
from .settings import SLOT_LIST, ConfigError, Settings, field_of, key

log = logging.getLogger(__name__)

DEFAULT_DISPLAY = "png"  # [screen] display = auto on this backend: the PNG file at [sim] display_path


@dataclass(kw_only=True, eq=False)
class SimSettings(Settings, section="sim"):
    """[sim]: how the simulated machine behaves; also the physics behind the gpio backend's mock pins."""

    drop_delay_s: float = key("float", 0.3, 0.0, 30.0)
    jam: tuple[str, ...] = field_of(SLOT_LIST)
    empty: tuple[str, ...] = field_of(SLOT_LIST)
    double: tuple[str, ...] = field_of(SLOT_LIST)
    display_path: str = key("str", "/run/vend/screen.png")
    trace_path: str = key("str", "")  # append the time of every motor start here (benchmarks)

    def check(self, cfg, path: str) -> None:
        for fault in ("jam", "empty", "double"):
            unknown = set(self[fault]) - set(cfg.hardware.slots)
            if unknown:
                raise ConfigError(f"{path}: [sim] {fault} names slots not in [hardware] slots: "
                                  f"{', '.join(sorted(unknown))}")


SETTINGS = (SimSettings,)


class SimDropSensor(DropSensor):
    """The simulated drop sensor: the motors' physics call ``drop_seen`` when a product falls."""

    def fire(self) -> None:
        """A product falls now."""
        self.drop_seen(time.monotonic())


class SimMotor(Motor):
    """A timed motor with no cam switch: a turn lasts ``turn_s``; its slot's physics say what falls when."""

    def __init__(self, slot: str, sensor: SimDropSensor, physics: Slot, trace_path: str = ""):
        super().__init__(slot)
        self._trace_path = trace_path
        self._sensor = sensor
        self.physics = physics
        self._turn_s = physics.drop_delay_s * 1.5
        self._timers = Timers()
        self._lock = threading.Lock()
        self._running = False
        self._turn = None

    @property
    def fault(self) -> str | None:
        return self.physics.fault

    @property
    def turns(self) -> int:
        return self.physics.turns

    def run(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._timers.cancel()
            self._running = True
            self._turn = self.physics.turn(now, self._turn_s)
            self._schedule_drops(self._turn.drops, now)
            self._timers.after(self._turn_s, self._turn_done)
        if self._trace_path:
            # Wall-clock time of every motor start, for benchmarks that time "pay" to "motor runs".
            with open(self._trace_path, "a") as f:
                f.write(f"{time.time():.6f} {self.slot}\n")
        log.debug("sim motor %s turning (fault=%s)", self.slot, self.fault)

    def _schedule_drops(self, drops: tuple[float, ...], now: float) -> None:
        for drop in drops:
            self._timers.after(drop - now, self._sensor.fire)

    def _turn_done(self) -> None:
        self._running = False

    def stop(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._running = False
            self._timers.cancel()
            if self._turn is not None:
                self._schedule_drops(self._turn.drops_after_cut(now), now)
                self._turn = None

    @property
    def is_running(self) -> bool:
        return self._running

    def close(self) -> None:
        with self._lock:
            self._running = False
            self._turn = None
            self._timers.cancel()


class SimDoor(Door):
    """A door that a test or a person opens with ``set_open``."""

    def __init__(self, is_open: bool = False):
        self._open = is_open

    def set_open(self, is_open: bool) -> None:
        self._open = is_open
        self.changed(is_open, time.monotonic())

    @property
    def is_open(self) -> bool:
        return self._open


class PngDisplay(Display):
    """Writes each frame to a PNG file, atomically, so a viewer never reads half an image."""

    def __init__(self, path: str, size: tuple[int, int] = (480, 800)):
        self.path = path
        self.size = size
        self.frames = 0
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)

    def show(self, image) -> None:
        tmp = f"{self.path}.tmp"
        image.save(tmp, format="PNG")
        os.replace(tmp, self.path)
        self.frames += 1


class SimHardware(Hardware):
    """The simulated machine's devices; its drop sensor's beam is broken only in the instant a product falls."""

    def describe(self) -> str:
        return "simulated"

    def inputs(self) -> dict[str, str]:
        return {"drop sensor": "clear", **super().inputs()}


def open_backend(cfg) -> Hardware:
    """The simulated machine of the config's ``[hardware] slots``, behaving as its ``[sim]`` section says."""
    settings = cfg.section(SimSettings)
    sensor = SimDropSensor()
    physics = slots_from(settings, cfg.hardware.slots)
    motors = {slot: SimMotor(slot, sensor, physics[slot], settings.trace_path) for slot in cfg.hardware.slots}
    return SimHardware(motors, sensor, SimDoor(), None)
