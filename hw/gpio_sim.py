"""A simulated machine wired to gpiozero's mock pins, so the real GPIO driver runs without a Pi.

It models the machine, not the calls: when a slot's motor outputs are energised, its spiral starts turning;
the cam switch opens as it leaves home and closes one turn later; the product falls past the drop sensor
(a pulse of a few ms) partway through the turn, unless ``[sim]`` says that slot jams (the spiral is stuck:
no drop, and the cam never comes home), is empty (a full turn, nothing falls) or drops two. Cutting the
motor's power stops the spiral where it is.
"""

from __future__ import annotations

import logging
import threading

from gpiozero.pins.mock import MockFactory, MockPin

log = logging.getLogger(__name__)

PULSE_S = 0.004  # a piezo's pulse: shorter than anything a polling loop would catch
CAM_LEAVES_S = 0.02
DOUBLE_GAP_S = 0.05


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
        self._active_high = True
        self._turning: str | None = None
        self._timers: list[threading.Timer] = []
        self.turns: dict[str, int] = {}
        self.drops = 0
        self.wired = False

    def gpio(self, number: int) -> MockPin:
        return self.pin(f"GPIO{number}")

    def wire(self, hardware, cfg: dict) -> None:
        """Connect the simulated machine to the pins the config maps, at rest: cam home, door shut."""
        gpio, sim = cfg["gpio"], cfg["sim"]
        self._active_high = gpio["motor_active_high"]
        for slot in cfg["hardware"]["slots"]:
            if gpio["motor_wiring"] == "matrix":
                pins = (gpio["motor_rows"][slot[0]], gpio["motor_columns"][slot[1:]])
            else:
                pins = (gpio["motor_pins"][slot],)
            self._motors[slot] = tuple(self.gpio(p) for p in pins)
            self.turns[slot] = 0
        self._faults = {slot: fault for fault in ("jam", "empty", "double") for slot in sim[fault]}
        self._drop_delay = sim["drop_delay_s"]
        self._turn_s = max(self._drop_delay * 1.5, CAM_LEAVES_S * 2)
        self._drop_pin = self.gpio(gpio["drop_pin"])
        self._drop_active_low = gpio["drop_active_low"]
        self._cam_pin = self.gpio(gpio["cam_pin"]) if gpio["cam_pin"] else None
        if self._cam_pin is not None:
            self._cam_pin.drive_low()
        if gpio["door_pin"]:
            self.gpio(gpio["door_pin"]).drive_low()
        self.wired = True

    def set_door(self, cfg: dict, is_open: bool) -> None:
        pin = self.gpio(cfg["gpio"]["door_pin"])
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
            self._cancel()
            self._turning = slot
            if slot is None:
                return
            self.turns[slot] += 1
            fault = self._faults.get(slot)
            if self._cam_pin is not None:
                self._after(CAM_LEAVES_S, self._cam_pin.drive_high)
                if fault != "jam":
                    self._after(self._turn_s, self._cam_pin.drive_low)
            if fault not in ("jam", "empty"):
                self._after(self._drop_delay, lambda: self._pulse(fault == "double"))

    def _after(self, delay: float, fn) -> None:
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _pulse(self, another: bool = False) -> None:
        if another:
            # Two products stuck together fall together, whatever the motor does next.
            timer = threading.Timer(DOUBLE_GAP_S, self._pulse)
            timer.daemon = True
            timer.start()
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
            self._cancel()
            self.wired = False
        super().close()
