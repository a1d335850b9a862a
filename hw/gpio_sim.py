"""A simulated machine wired to gpiozero's mock pins, so the real GPIO driver runs without a Pi.

It models the machine, not the calls: when a slot's motor outputs are energised, its spiral starts turning;
the cam switch opens as it leaves home and closes one turn later; the product falls past the drop sensor
(a pulse of a few ms) partway through the turn, unless ``[sim]`` says that slot jams (the spiral is stuck:
no drop, and the cam never comes home), is empty (a full turn, nothing falls) or drops two. Cutting the
motor's power stops the spiral where it is. What falls and when is the slots' physics (``hw/physics.py``),
shared with the other simulators; this file only turns it into pin edges.
"""

from __future__ import annotations

import logging
import threading
import time

from gpiozero.pins.mock import MockFactory, MockPin

from .gpio import GpioSettings
from .physics import Slot, Timers, Turn, slots_from
from .sim import SimSettings

log = logging.getLogger(__name__)

PULSE_S = 0.004  # a piezo's pulse: shorter than anything a polling loop would catch
CAM_LEAVES_S = 0.02


class WatchedPin(MockPin):
    """A mock pin that tells its factory when the driver switches it as an output."""

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed and self._function == "output":
            self._factory.output_changed()
        return changed


class SimulatedFactory(MockFactory):
    """gpiozero's MockFactory whose pins are connected to a simulated machine (see ``wire``)."""

    def __init__(self):
        super().__init__(pin_class=WatchedPin)
        self._lock = threading.Lock()
        self._motors: dict[str, tuple] = {}  # slot -> the output pins that must all be on to power it
        self._slots: dict[str, Slot] = {}
        self._active_high = True
        self._turning: str | None = None
        self._turn: Turn | None = None
        self._timers = Timers()
        self.drops = 0
        self.wired = False

    @property
    def turns(self) -> dict[str, int]:
        """How many times each slot's motor started."""
        return {slot: physics.turns for slot, physics in self._slots.items()}

    def gpio(self, number: int) -> MockPin:
        return self.pin(f"GPIO{number}")

    def wire(self, hardware, cfg) -> None:
        """Connect the simulated machine to the pins the config maps, at rest: cam home, door shut."""
        gpio, sim = cfg.section(GpioSettings), cfg.section(SimSettings)
        self._active_high = gpio.motor_active_high
        for slot in cfg.hardware.slots:
            if gpio.motor_wiring == "matrix":
                pins = (gpio.motor_rows[slot[0]], gpio.motor_columns[slot[1:]])
            else:
                pins = (gpio.motor_pins[slot],)
            self._motors[slot] = tuple(self.gpio(p) for p in pins)
        self._slots = slots_from(sim, cfg.hardware.slots)
        self._turn_s = max(sim.drop_delay_s * 1.5, CAM_LEAVES_S * 2)
        self._drop_pin = self.gpio(gpio.drop_pin)
        self._drop_active_low = gpio.drop_active_low
        self._cam_pin = self.gpio(gpio.cam_pin) if gpio.cam_pin else None
        if self._cam_pin is not None:
            self._cam_pin.drive_low()
        if gpio.door_pin:
            self.gpio(gpio.door_pin).drive_low()
        self.wired = True

    def set_door(self, cfg, is_open: bool) -> None:
        pin = self.gpio(cfg.section(GpioSettings).door_pin)
        pin.drive_high() if is_open else pin.drive_low()

    def output_changed(self) -> None:
        if not self.wired:
            return
        with self._lock:
            powered = [slot for slot, pins in self._motors.items()
                       if all(bool(p.state) == self._active_high for p in pins)]
            slot = powered[0] if len(powered) == 1 else None
            if len(powered) > 1:
                log.error("simulated machine: motors %s powered at once", ", ".join(powered))
            if slot == self._turning:
                return
            now = time.monotonic()
            self._timers.cancel()
            if self._turn is not None:
                # Power cut: the spiral stops where it is; a product stuck to one that fell still falls.
                self._pulses(self._turn.drops_after_cut(now), now)
                self._turn = None
            self._turning = slot
            if slot is None:
                return
            self._turn = turn = self._slots[slot].turn(now, self._turn_s)
            if self._cam_pin is not None:
                self._timers.after(CAM_LEAVES_S, self._cam_pin.drive_high)
                if turn.home is not None:
                    self._timers.after(turn.home - now, self._cam_pin.drive_low)
            self._pulses(turn.drops, now)

    def _pulses(self, drops: tuple[float, ...], now: float) -> None:
        for drop in drops:
            self._timers.after(drop - now, self._pulse)

    def _pulse(self) -> None:
        self.drops += 1
        pin = self._drop_pin
        if self._drop_active_low:
            pin.drive_low()
            threading.Event().wait(PULSE_S)
            pin.drive_high()
        else:
            pin.drive_high()
            threading.Event().wait(PULSE_S)
            pin.drive_low()

    def close(self) -> None:
        with self._lock:
            self._timers.cancel()
            self._turn = None
            self.wired = False
        super().close()
