"""A behavioural simulator of a whole machine: motors that make products fall, a door, a PNG screen.

Running a slot's motor makes the drop sensor fire ``drop_delay_s`` later, the way a spiral pushes a product
over the edge, unless the config says that slot jams (the spiral turns, nothing falls), is empty (same, for
another reason) or drops two (the sensor fires twice).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from .base import Display, Door, DropSensor, Hardware, Motor

log = logging.getLogger(__name__)

DOUBLE_DROP_GAP_S = 0.05


class SimDropSensor(DropSensor):
    def __init__(self):
        self._event = threading.Event()

    def fire(self) -> None:
        t = time.monotonic()
        self._event.set()
        listener = self.when_drop
        if listener is not None:
            listener(t)

    def wait_for_drop(self, timeout: float) -> bool:
        self._event.clear()
        return self._event.wait(timeout)


class SimMotor(Motor):
    """One turn takes ``turn_s``; a product (if any, and not jammed) falls ``drop_delay_s`` into it."""

    def __init__(self, slot: str, sensor: SimDropSensor, drop_delay_s: float, fault: str | None,
                 trace_path: str = ""):
        super().__init__(slot)
        self._trace_path = trace_path
        self._sensor = sensor
        self._drop_delay_s = drop_delay_s
        self._turn_s = drop_delay_s * 1.5
        self.fault = fault
        self.turns = 0
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()
        self._running = False

    def run(self) -> None:
        with self._lock:
            self.turns += 1
            self._running = True
            self._cancel_timers()
            if self.fault not in ("jam", "empty"):
                self._after(self._drop_delay_s, self._sensor.fire)
                if self.fault == "double":
                    self._after(self._drop_delay_s + DOUBLE_DROP_GAP_S, self._sensor.fire)
            self._after(self._turn_s, self._turn_done)
        if self._trace_path:
            # Wall-clock time of every motor start, for benchmarks that time "pay" to "motor runs".
            with open(self._trace_path, "a") as f:
                f.write(f"{time.time():.6f} {self.slot}\n")
        log.debug("sim motor %s turning (fault=%s)", self.slot, self.fault)

    def _after(self, delay: float, fn) -> None:
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _turn_done(self) -> None:
        self._running = False

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def stop(self) -> None:
        # A product already past the edge still falls: only the end of the turn is cut short.
        self._running = False

    @property
    def is_running(self) -> bool:
        return self._running

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._cancel_timers()


class SimDoor(Door):
    def __init__(self, is_open: bool = False):
        self._open = is_open

    def set_open(self, is_open: bool) -> None:
        self._open = is_open
        listener = self.when_changed
        if listener is not None:
            listener(is_open, time.monotonic())

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


def open_backend(cfg: dict) -> Hardware:
    """The simulated machine of the config's ``[hardware] slots``, behaving as its ``[sim]`` section says."""
    slots, settings = cfg["hardware"]["slots"], cfg["sim"]
    faults: dict[str, str] = {}
    for fault in ("jam", "empty", "double"):
        for slot in settings.get(fault, []):
            faults[slot] = fault
    sensor = SimDropSensor()
    delay = settings.get("drop_delay_s", 0.3)
    trace = settings.get("trace_path", "")
    motors = {slot: SimMotor(slot, sensor, delay, faults.get(slot), trace) for slot in slots}
    return Hardware(motors, sensor, SimDoor(), None)
