"""The GPIO backend: slot motors, the spiral's cam switch, the drop sensor, the door and the service button
on a Raspberry Pi's header, through gpiozero.

The pin library is named in the config (``[gpio] pin_library``): RPi.GPIO on a Pi 1-4, lgpio on a Pi 5, where
RPi.GPIO cannot work. ``mock`` is gpiozero's MockFactory with the simulated machine of ``hw.gpio_sim`` wired
to its pins; it runs this very driver in tests and is never picked on its own.

Motors are wired one pin each, or as a row-by-column matrix (a 60-slot spiral machine needs 6 + 10 pins):
slot B3's motor turns while row B's and column 3's outputs are both on, so only one motor can run at a time,
and only one ever does. A spiral has a cam switch that closes once per turn; all motors share one cam
input, since only one turns at a time. A turn ends when the cam closes again, or at ``turn_limit_s``, which
is a fault: the motor is stopped and the fault reported.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass

import hw

from protocol.messages import SLOT_RE

from .base import BootSettings, Door, DropSensor, Faults, Hardware, HardwareError, Motor, ServiceButton
from .settings import ConfigError, Key, Settings, field_of, key

log = logging.getLogger(__name__)

# BCM numbers of the GPIO lines on the 40-pin header of every Raspberry Pi since the B+.
BCM_LO, BCM_HI = 2, 27
# Until a program claims them, GPIO 0-8 are pulled up and 9-27 pulled down (BCM2835 datasheet, table 6-31;
# the same on the Pi 5's RP1). A motor output must rest at "off" while the Pi boots.
PULLED_UP_AT_RESET = range(0, 9)
PIN = Key("int", 0, 0, BCM_HI, what=f"a BCM GPIO number {BCM_LO}-{BCM_HI}, or 0 for none")


@dataclass(kw_only=True, eq=False)
class GpioSettings(Settings, section="gpio"):
    """[gpio]: the pin library and the pin map of the machine on the Pi's header."""

    # rpigpio on a Pi 1-4, lgpio on a Pi 5. mock is gpiozero's MockFactory with a simulated machine
    # wired to its pins (physics from [sim]): for tests and benchmarks, never a default.
    pin_library: str = key("choice", "", choices=("", "rpigpio", "lgpio", "mock"))
    motor_wiring: str = key("choice", "matrix", choices=("matrix", "direct"))
    motor_rows: dict[str, int] = key("map", {}, BCM_LO, BCM_HI, pattern=re.compile(r"^[A-Z]\Z"),
                                     what="row letter:pin pairs like A:5 B:6")
    motor_columns: dict[str, int] = key("map", {}, BCM_LO, BCM_HI, pattern=re.compile(r"^[0-9]{1,2}\Z"),
                                        what="column number:pin pairs like 1:12 2:16")
    motor_pins: dict[str, int] = key("map", {}, BCM_LO, BCM_HI, pattern=SLOT_RE,
                                     what="slot:pin pairs like A1:17 A2:27")
    motor_active_high: bool = key("bool", True)
    cam_pin: int = field_of(PIN)  # the spiral's cam switch, closed once per turn; 0: turns end on turn_limit_s only
    turn_limit_s: float = key("float", 4.0, 0.2, 30.0)
    drop_pin: int = field_of(PIN)
    drop_active_low: bool = key("bool", True)
    drop_bounce_ms: float = key("float", 1.0, 0.0, 100.0)
    door_pin: int = field_of(PIN)
    service_pin: int = field_of(PIN)


SETTINGS = (GpioSettings,)


def check_config(cfg, path: str) -> None:
    """The GPIO pin map: a pin library named, every slot wired, no pin used twice, the drop sensor there."""
    gpio = cfg.section(GpioSettings)
    where = f"{path}: [gpio]"
    if not gpio.pin_library:
        raise ConfigError(f"{where} pin_library is required for backend gpio: rpigpio on a Raspberry Pi 1-4, "
                          "lgpio on a Pi 5")
    uses: dict[int, str] = {}
    reserved = hw.reserved_pins(cfg)

    def use(pin: int, what: str, motor: bool = False) -> None:
        if pin < BCM_LO:
            raise ConfigError(f"{where} {what}: GPIO {pin} is not usable; use BCM {BCM_LO}-{BCM_HI}")
        if pin in reserved:
            raise ConfigError(f"{where} {what}: GPIO {pin} is taken by {reserved[pin]}; use another pin")
        if pin in uses:
            raise ConfigError(f"{where}: GPIO {pin} is used twice: by {uses[pin]} and by {what}")
        uses[pin] = what
        if motor and (pin in PULLED_UP_AT_RESET) == gpio.motor_active_high:
            good = "9-27" if gpio.motor_active_high else f"{BCM_LO}-8"
            raise ConfigError(
                f"{where} {what}: GPIO {pin} is pulled {'up' if pin in PULLED_UP_AT_RESET else 'down'} at power-on, "
                f"so a motor wired active-{'high' if gpio.motor_active_high else 'low'} to it would turn while "
                f"the Pi boots; use GPIO {good} for motor outputs, or change motor_active_high")

    slots = cfg.hardware.slots
    if gpio.motor_wiring == "matrix":
        rows, columns = gpio.motor_rows, gpio.motor_columns
        for slot in slots:
            if slot[0] not in rows:
                raise ConfigError(f"{where} motor_rows: slot {slot} has no row {slot[0]}")
            if slot[1:] not in columns:
                raise ConfigError(f"{where} motor_columns: slot {slot} has no column {slot[1:]}")
        for name, pin in rows.items():
            use(pin, f"motor_rows {name}", motor=True)
        for name, pin in columns.items():
            use(pin, f"motor_columns {name}", motor=True)
    else:
        missing = [slot for slot in slots if slot not in gpio.motor_pins]
        if missing:
            raise ConfigError(f"{where} motor_pins: no pin for slot {', '.join(missing)}")
        extra = sorted(set(gpio.motor_pins) - set(slots))
        if extra:
            raise ConfigError(f"{where} motor_pins: {', '.join(extra)} not in [hardware] slots")
        for slot, pin in gpio.motor_pins.items():
            use(pin, f"motor_pins {slot}", motor=True)
    if not gpio.drop_pin:
        raise ConfigError(f"{where} drop_pin is required: the pin of the drop sensor")
    for name in ("cam_pin", "drop_pin", "door_pin", "service_pin"):
        if getattr(gpio, name):
            use(getattr(gpio, name), name)


def motor_outputs(gpio: GpioSettings) -> list[tuple[str, int]]:
    """(config key, pin) of every motor output: rows (the high side) before columns, as ``MotorBank`` cuts them."""
    if gpio.motor_wiring == "matrix":
        return ([(f"motor_rows {row}", pin) for row, pin in gpio.motor_rows.items()]
                + [(f"motor_columns {column}", pin) for column, pin in gpio.motor_columns.items()])
    return [(f"motor_pins {slot}", pin) for slot, pin in gpio.motor_pins.items()]


def boot_settings(cfg) -> BootSettings:
    """Every motor output driven to off by the firmware from power-on, before Linux or the controller runs:
    ``gpio=PINS=op,dl`` (``dh`` for active-low drivers) in config.txt."""
    gpio = cfg.section(GpioSettings)
    pins = [pin for _, pin in motor_outputs(gpio)]
    if not pins:
        return BootSettings()
    level = "dl" if gpio.motor_active_high else "dh"
    return BootSettings(config_txt=(f"gpio={','.join(map(str, pins))}=op,{level}",))


# The system's own pin tools, which write the GPIO registers directly, need no pin library and leave the pin an
# output at the level set: pinctrl (raspi-utils, Raspberry Pi OS Bookworm and later, every Pi including the
# 5), raspi-gpio on older releases (Pi 1-4). Both take "set <pin> op dl|dh".
PIN_TOOLS = ("pinctrl", "raspi-gpio")


def safe_commands(cfg) -> list[tuple[str, list[str]]]:
    """The commands that drive every motor output to off (low, or high for active-low drivers), for
    ``vend-controller safe-pins`` after the daemon died without switching them off (SIGKILL, OOM, watchdog)."""
    gpio = cfg.section(GpioSettings)
    tool = next((name for name in PIN_TOOLS if shutil.which(name)), None)
    if tool is None:
        raise HardwareError("neither pinctrl nor raspi-gpio is installed: sudo apt install raspi-utils "
                            "(pinctrl); the motor outputs could not be driven off")
    level = "dl" if gpio.motor_active_high else "dh"
    return [(f"GPIO {pin} ({what})", [tool, "set", str(pin), "op", level]) for what, pin in motor_outputs(gpio)]


PIN_LIBRARIES = {
    # name: (gpiozero factory module, class, what to install when it is missing)
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory",
                "RPi.GPIO (sudo apt install python3-rpi.gpio, or pip install RPi.GPIO); on a Pi 5 use "
                "pin_library = lgpio"),
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory",
              "lgpio (sudo apt install python3-lgpio, or pip install lgpio)"),
}


def _pin_factory(name: str):
    if name == "mock":
        from .gpio_sim import SimulatedFactory

        return SimulatedFactory()
    if importlib.util.find_spec("gpiozero") is None:
        raise HardwareError("[gpio] backend needs gpiozero: pip install 'vend-fleet[pi]' "
                            "(or sudo apt install python3-gpiozero)")
    if name not in PIN_LIBRARIES:
        raise HardwareError(f"[gpio] pin_library {name!r} is unknown; use one of: {', '.join(PIN_LIBRARIES)}")
    module_name, class_name, package = PIN_LIBRARIES[name]
    try:
        module = __import__(module_name, fromlist=[class_name])
        return getattr(module, class_name)()
    except ImportError as e:
        raise HardwareError(f"[gpio] pin_library = {name} needs {package} ({e})") from None
    except PermissionError as e:
        raise HardwareError(f"[gpio] pin_library = {name} cannot open the GPIO chip ({e}): add the service "
                            "user to the gpio group (sudo usermod -aG gpio vend) and restart") from None
    except Exception as e:  # RuntimeError "Not running on a RPi!", lgpio.error "can not open gpiochip"
        raise HardwareError(f"[gpio] pin_library = {name} could not start: {e}; is this a Raspberry Pi, is "
                            "/dev/gpiochip0 there and readable by the gpio group?") from None


def _device(factory, what: str, make):
    """Claim one pin, turning gpiozero's errors into ones that name the config key."""
    try:
        return make()
    except PermissionError as e:
        raise HardwareError(f"[gpio] {what}: permission denied ({e}); add the service user to the gpio "
                            "group") from None
    except Exception as e:
        raise HardwareError(f"[gpio] {what}: {type(e).__name__}: {e}; check the pin number and that no "
                            "other program (or a dtoverlay such as 1-wire or I2C) uses it") from None


class MotorBank:
    """Every motor output and the shared cam switch; owns the rule that at most one motor turns."""

    def __init__(self, factory, cfg, faults: Faults):
        from gpiozero import DigitalInputDevice, DigitalOutputDevice

        gpio = cfg.section(GpioSettings)
        self.faults = faults
        self.turn_limit_s = gpio.turn_limit_s
        self._lock = threading.RLock()
        self._running: str | None = None
        self._leaving_home = False  # the cam has opened since the motor started: its next close ends the turn
        self._timer: threading.Timer | None = None
        self._turn_started = 0.0
        self.turns_done = 0
        self.wiring: list[tuple[str, str]] = []
        self.outputs: dict[str, object] = {}  # name -> DigitalOutputDevice
        self._slot_outputs: dict[str, tuple] = {}

        def output(name: str, pin: int):
            self.outputs[name] = _device(factory, f"{name} (GPIO{pin})", lambda: DigitalOutputDevice(
                pin, active_high=gpio.motor_active_high, initial_value=False, pin_factory=factory))
            return self.outputs[name]

        slots = cfg.hardware.slots
        if gpio.motor_wiring == "matrix":
            for row, pin in gpio.motor_rows.items():
                output(f"row {row}", pin)
            for column, pin in gpio.motor_columns.items():
                output(f"column {column}", pin)
            for slot in slots:
                row, column = slot[0], slot[1:]
                # Column (the low side) first, row last: the motor gets power on the last switch.
                self._slot_outputs[slot] = (self.outputs[f"column {column}"], self.outputs[f"row {row}"])
                self.wiring.append((f"motor {slot}", f"row {row} GPIO{gpio.motor_rows[row]} + column "
                                                     f"{column} GPIO{gpio.motor_columns[column]}"))
        else:
            for slot in slots:
                pin = gpio.motor_pins[slot]
                self._slot_outputs[slot] = (output(f"motor {slot}", pin),)
                self.wiring.append((f"motor {slot}", f"GPIO{pin}"))
        self.cam = None
        if gpio.cam_pin:
            # The cam switch closes to ground; a few ms of debounce, as a lever switch chatters.
            self.cam = _device(factory, f"cam_pin (GPIO{gpio.cam_pin})", lambda: DigitalInputDevice(
                gpio.cam_pin, pull_up=True, bounce_time=0.005, pin_factory=factory))
            self.cam.when_deactivated = self._cam_opened
            self.cam.when_activated = self._cam_closed
            self.wiring.append(("cam switch", f"GPIO{gpio.cam_pin} (closes to ground once per turn)"))

    @property
    def running(self) -> str | None:
        return self._running

    def run(self, slot: str) -> None:
        with self._lock:
            if self._running is not None and self._running != slot:
                log.error("motor %s asked to run while %s turns; stopping %s first", slot, self._running,
                          self._running)
                self._off()
            if self._timer is not None:
                self._timer.cancel()  # run again while turning: this turn gets its own full time limit
            self._running = slot
            self._turn_started = time.monotonic()
            # A cam already open means the last turn was cut short: its next close is the end of this one.
            self._leaving_home = self.cam is not None and not self.cam.is_active
            self._timer = threading.Timer(self.turn_limit_s, self._time_limit, args=(slot,))
            self._timer.daemon = True
            self._timer.start()
            try:
                for device in self._slot_outputs[slot]:
                    device.on()
            except BaseException:
                self._off()
                raise

    def stop(self, slot: str | None = None) -> None:
        """Every motor off; with ``slot``, only if that slot is the one turning."""
        with self._lock:
            if slot is None or self._running == slot:
                self._off()

    def _off(self) -> None:
        """Every motor output off (rows first, so no motor keeps power through a column); never raises."""
        rows_first = sorted(self.outputs.items(), key=lambda item: not item[0].startswith("row "))
        for _, device in rows_first:
            try:
                device.off()
            except Exception:
                log.exception("could not switch off %r", device)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._running = None

    def _cam_opened(self) -> None:
        with self._lock:
            if self._running is not None:
                self._leaving_home = True

    def _cam_closed(self) -> None:
        with self._lock:
            if self._running is not None and self._leaving_home:
                slot, took = self._running, time.monotonic() - self._turn_started
                self._off()
                self.turns_done += 1
                log.debug("motor %s: turn ended on the cam after %.3f s", slot, took)

    def _time_limit(self, slot: str) -> None:
        with self._lock:
            if self._running != slot:
                return
            self._off()
        if self.cam is None:
            self.turns_done += 1  # no cam switch: a turn is this long by design
            return
        self.faults.report(f"motor {slot}", f"turn did not end on the cam switch within {self.turn_limit_s} s; "
                                            "motor stopped (a stuck spiral, or check the cam switch wiring)",
                           code="motor.time_limit")

    def close(self) -> None:
        with self._lock:
            self._off()
        # Closed only once off: gpiozero turns a closed output into an input, and the driver's pull-down
        # (or the Pi's default pull on that pin, which check_pin_map matches to motor_active_high) holds it off.
        for device in (*self.outputs.values(), self.cam):
            if device is not None:
                device.close()


class GpioMotor(Motor):
    def __init__(self, slot: str, bank: MotorBank):
        super().__init__(slot)
        self.bank = bank

    def run(self) -> None:
        self.bank.run(self.slot)

    def stop(self) -> None:
        self.bank.stop(self.slot)

    @property
    def is_running(self) -> bool:
        return self.bank.running == self.slot


class GpioDropSensor(DropSensor):
    """Edge-triggered: a piezo's pulse lasts a few ms, so the pin is never polled."""

    def __init__(self, factory, pin: int, active_low: bool, bounce_ms: float):
        from gpiozero import DigitalInputDevice

        # An IR curtain's open-collector output pulls low while the beam is broken: pull-up, active low.
        self.device = _device(factory, f"drop_pin (GPIO{pin})", lambda: DigitalInputDevice(
            pin, pull_up=active_low, bounce_time=bounce_ms / 1000 or None, pin_factory=factory))
        super().__init__()
        self.device.when_activated = lambda: self.drop_seen(time.monotonic())

    @property
    def is_active(self) -> bool:
        return bool(self.device.is_active)

    def close(self) -> None:
        self.device.close()


class GpioDoor(Door):
    """The door switch is closed (to ground) while the door is shut, so a cut wire reads as open: a machine
    with a broken door switch stops vending rather than vending with its door open."""

    def __init__(self, factory, pin: int):
        from gpiozero import DigitalInputDevice

        # Inputs are DigitalInputDevice, not Button: a Button's hold thread makes close() wait up to 1 s.
        self.device = _device(factory, f"door_pin (GPIO{pin})", lambda: DigitalInputDevice(
            pin, pull_up=True, bounce_time=0.05, pin_factory=factory))
        self.device.when_deactivated = lambda: self.changed(True, time.monotonic())
        self.device.when_activated = lambda: self.changed(False, time.monotonic())

    @property
    def is_open(self) -> bool:
        return not self.device.is_active

    def close(self) -> None:
        self.device.close()


class NoDoor(Door):
    """A machine without a door switch: always shut."""

    @property
    def is_open(self) -> bool:
        return False


class GpioServiceButton(ServiceButton):
    def __init__(self, factory, pin: int):
        from gpiozero import DigitalInputDevice

        self.device = _device(factory, f"service_pin (GPIO{pin})", lambda: DigitalInputDevice(
            pin, pull_up=True, bounce_time=0.05, pin_factory=factory))
        self.device.when_activated = lambda: self.pressed(time.monotonic())

    @property
    def is_pressed(self) -> bool:
        return bool(self.device.is_active)

    def close(self) -> None:
        self.device.close()


class GpioHardware(Hardware):
    """The devices on the header, plus the pin map and live inputs for the technician's tool."""

    bank: MotorBank
    factory: object
    pin_library: str = ""

    def describe(self) -> str:
        return f" (pin library {self.pin_library})"

    def inputs(self) -> dict[str, str]:
        live = {"drop sensor": "beam broken" if self.drop_sensor.is_active else "clear"}
        if self.bank.cam is not None:
            live["cam switch"] = "closed (home)" if self.bank.cam.is_active else "open"
        if isinstance(self.door, GpioDoor):
            live["door"] = "open" if self.door.is_open else "shut"
        if self.service_button is not None:
            live["service button"] = "pressed" if self.service_button.is_pressed else "up"
        live["motor running"] = self.bank.running or "none"
        return live


def open_backend(cfg) -> Hardware:
    """The machine on the Pi's header as ``[gpio]`` maps it (the map was checked when the config loaded)."""
    gpio = cfg.section(GpioSettings)
    factory = _pin_factory(gpio.pin_library)
    faults = Faults()
    opened: list = []
    try:
        bank = MotorBank(factory, cfg, faults)
        opened.append(bank)
        motors = {slot: GpioMotor(slot, bank) for slot in cfg.hardware.slots}
        drop = GpioDropSensor(factory, gpio.drop_pin, gpio.drop_active_low, gpio.drop_bounce_ms)
        opened.append(drop)
        door = GpioDoor(factory, gpio.door_pin) if gpio.door_pin else NoDoor()
        opened.append(door)
        button = GpioServiceButton(factory, gpio.service_pin) if gpio.service_pin else None
    except BaseException:
        for device in reversed(opened):
            device.close()
        if hasattr(factory, "close"):
            factory.close()
        raise
    hardware = GpioHardware(motors, drop, door, None, service_button=button, faults=faults,
                            closers=(bank, factory))
    hardware.bank = bank
    hardware.factory = factory
    hardware.pin_library = gpio.pin_library
    hardware.wiring = [*bank.wiring, ("drop sensor", f"GPIO{gpio.drop_pin} "
                                                     f"(active {'low' if gpio.drop_active_low else 'high'})")]
    if gpio.door_pin:
        hardware.wiring.append(("door switch", f"GPIO{gpio.door_pin} (closed to ground = door shut)"))
    if gpio.service_pin:
        hardware.wiring.append(("service button", f"GPIO{gpio.service_pin} (closes to ground)"))
    if gpio.pin_library == "mock":
        factory.wire(hardware, cfg)
    return hardware
