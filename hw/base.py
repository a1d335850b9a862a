"""The few things a vending machine has: slot motors, a drop sensor, a door switch and a screen."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

# Called with the monotonic time of the event; called from a driver's own thread, so a listener only
# hands the fact over to its owner and returns.
DropListener = Callable[[float], None]
DoorListener = Callable[[bool, float], None]
# (code, device, what happened, monotonic time): a motor that overran its time limit, a board that reset, a
# sensor that could not be read. The controller records each as a ``fault`` event in the ledger.
FaultListener = Callable[[str, str, str, float], None]


@dataclass(frozen=True)
class BootSettings:
    """What a backend or device needs of a Raspberry Pi's boot: lines for config.txt (``[pi5]``-style filters
    allowed, each block ending back in ``[all]``), kernel consoles to take off a bus it uses, units to turn off."""

    config_txt: tuple[str, ...] = ()
    consoles_off: tuple[str, ...] = ()  # console= devices removed from cmdline.txt (serial0, ttyAMA0...)
    units_off: tuple[str, ...] = ()  # systemd units that would take the bus (hciuart on the Pi 3/4 UART)


class HardwareError(RuntimeError):
    """A device that cannot be opened or driven; the text says what to check."""


class Device:
    """Every device closes, and is a context manager."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Motor(Device):
    """The motor that turns one slot's spiral."""

    def __init__(self, slot: str):
        self.slot = slot

    def run(self) -> None:
        """Start one turn; the drop sensor says whether a product fell."""
        raise NotImplementedError

    def vend(self, price: int | None) -> None:
        """Start one vend of this slot's product at ``price`` minor units (None: the slot has no price yet).

        A motor turns (``run``) and ignores the price; a cashless device to a machine's own controller
        (``hw/mdb.py``) offers the price as credit and lets the machine drop the product.
        """
        self.run()

    def stop(self) -> None:
        """Power off now. Safe to call at any time, from any thread, any number of times."""
        raise NotImplementedError

    @property
    def is_running(self) -> bool:
        raise NotImplementedError


class DropSensor(Device):
    """The light curtain or piezo under the slots that sees a product fall.

    The events are written here once for every backend (gpiozero's ``EventsMixin`` does the same for its
    input devices): a backend calls ``drop_seen(t)`` from its own thread, and this base hands the drop to
    ``when_drop`` and wakes ``wait_for_drop``. A subclass calls ``super().__init__()``.
    """

    when_drop: DropListener | None = None
    # (reason, slot_ok, monotonic time): the machine says for certain that nothing fell for the vend in progress
    # (a vending machine controller that reported the vend failed); the vend ends at once, without a retry.
    # ``slot_ok``: the failure says nothing against the slot (the customer cancelled, the session timed out).
    when_no_drop: Callable[[str, bool, float], None] | None = None

    def __init__(self):
        self._dropped = threading.Event()

    def drop_seen(self, t: float) -> None:
        """A product fell past the sensor at monotonic time ``t``; for the backend that watches the sensor."""
        self._dropped.set()
        listener = self.when_drop
        if listener is not None:
            listener(t)

    def none_dropped(self, reason: str, t: float, *, slot_ok: bool = False) -> None:
        """Nothing fell and nothing will, for ``reason``; for a backend whose machine reports its outcome.
        ``slot_ok`` when the reason is no fault of the slot's, which then stays in service."""
        listener = self.when_no_drop
        if listener is not None:
            listener(reason, slot_ok, t)

    def wait_for_drop(self, timeout: float) -> bool:
        """Block until a drop or the timeout; for a technician's test, never on the vend path."""
        self._dropped.clear()
        return self._dropped.wait(timeout)


class Door(Device):
    """The service door's switch; a backend calls ``changed`` and this base tells ``when_changed``."""

    when_changed: DoorListener | None = None

    def changed(self, is_open: bool, t: float) -> None:
        """The door opened or closed at monotonic time ``t``; for the backend that watches the switch."""
        listener = self.when_changed
        if listener is not None:
            listener(is_open, t)

    @property
    def is_open(self) -> bool:
        raise NotImplementedError


class ServiceButton(Device):
    """The technician's button inside the door; pressing it enters or leaves service mode."""

    when_pressed: Callable[[float], None] | None = None

    def pressed(self, t: float) -> None:
        """The button went down at monotonic time ``t``; for the backend that watches it."""
        listener = self.when_pressed
        if listener is not None:
            listener(t)


class Thermometer(Device):
    """The cabinet's temperature sensor."""

    def read_c(self) -> float:
        """Degrees Celsius; raise HardwareError (never return a made-up number) when the read fails."""
        raise NotImplementedError


class Faults:
    """Where drivers report faults from their own threads; the controller sets ``listener``."""

    listener: FaultListener | None = None

    def report(self, device: str, what: str, *, code: str = "hardware") -> None:
        """``code`` is a stable name for the kind of fault (``motor.time_limit``); ``what`` is for people."""
        t = time.monotonic()
        log.error("fault %s: %s: %s", code, device, what)
        listener = self.listener
        if listener is not None:
            listener(code, device, what, t)


class Display(Device):
    """The machine's screen; shows a pillow image scaled to ``size``."""

    size: tuple[int, int] = (480, 800)

    def show(self, image) -> None:
        raise NotImplementedError


class Hardware:
    """The devices of one machine, owned by the controller's main loop.

    ``turn_timeout_s`` and ``turns``, when a backend sets them, take the place of ``[vend] drop_timeout_s`` and
    ``turns``: a vend through a machine's own controller waits for a person to press a selection, and is
    never turned twice.
    """

    turn_timeout_s: float | None = None
    turns: int | None = None

    def __init__(self, motors: dict[str, Motor], drop_sensor: DropSensor, door: Door, display: Display | None,
                 *, service_button: ServiceButton | None = None, thermometer: Thermometer | None = None,
                 faults: Faults | None = None, closers: tuple = ()):
        self.motors = motors
        self.drop_sensor = drop_sensor
        self.door = door
        self.display = display
        self.service_button = service_button
        self.thermometer = thermometer
        self.faults = faults or Faults()
        self._closers = closers  # backend-wide things closed last: a serial port, a pin factory
        self.wiring: list[tuple[str, str]] = []  # (device, where it is connected), for the technician
        self.closed = False

    def describe(self) -> str:
        """What the technician's tool prints after the backend's name: the pin library, the port."""
        return ""

    def inputs(self) -> dict[str, str]:
        """The live state of every input, in words, for the technician's tool."""
        return {"door": "open" if self.door.is_open else "shut"}

    def refusal(self) -> str:
        """Why no vend can start now ('' when one can): asked before a vend command is taken."""
        return ""

    def vend_prompt(self, slot: str, product: str) -> str:
        """What the screen says while the vend of ``product`` from ``slot`` runs."""
        template, fields = self.vend_prompt_parts(slot, product)
        return template.format(**fields)

    def vend_prompt_parts(self, slot: str, product: str) -> tuple[str, dict]:
        """``vend_prompt`` as its English template and fields, for a screen that says it in other languages
        (the template is the key of its translations in ``controller/words.py``)."""
        return "Dropping {product} from {slot}...", {"product": product, "slot": slot}

    def all_motors_off(self) -> None:
        """The safe state: every motor output off. Never raises, so it can run in any ``finally``."""
        if self.closed:
            return
        for motor in self.motors.values():
            try:
                motor.stop()
            except Exception:
                log.exception("could not stop motor %s", motor.slot)

    def close(self) -> None:
        if self.closed:
            return
        self.all_motors_off()
        self.closed = True
        devices = (*self.motors.values(), self.drop_sensor, self.door, self.display, self.service_button,
                   self.thermometer, *self._closers)
        for device in devices:
            if device is None:
                continue
            try:
                device.close()
            except Exception:
                log.exception("could not close %r", device)
