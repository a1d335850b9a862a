"""Hardware of a vending machine behind a few small interfaces, with one backend per file.

A backend is chosen by name in the controller's config (``[hardware] backend``). Nothing falls back to the
simulator on its own: a machine whose real backend cannot load stops with an error that says why.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from protocol.messages import SLOT_RE

from .base import (BootSettings, Display, Door, DropSensor, Faults, Hardware, HardwareError, Motor, ServiceButton,
                   Thermometer)
from .settings import ConfigError, Settings, key
from .w1 import ThermometerSettings, open_thermometer

__all__ = ["BootSettings", "Display", "Door", "DropSensor", "Faults", "Hardware", "HardwareError", "Motor", "ServiceButton",
           "Thermometer", "BACKENDS", "HardwareSettings", "check_backend_config", "config_sections",
           "open_display", "open_hardware", "reserved_pins", "safe_commands",
           "boot_settings"]

# The backend registry: name -> the module that implements it. Each such module has
#   SETTINGS            the Settings classes of the INI sections it reads (its own keys and defaults);
#   open_backend(cfg)   its Hardware, built from the controller's whole parsed config;
#   check_config(cfg, path), optionally: checks that apply only when it is the configured backend;
#   DEFAULT_DISPLAY, optionally: "png" for a simulator (the default is the framebuffer of a real screen);
#   reserved_pins(cfg), optionally: {header pin: why} for a bus the backend takes (the UART); devices too;
#   boot_settings(cfg), optionally: the BootSettings a Raspberry Pi needs for it (UART on, 1-wire overlay,
#                       outputs low from power-on), written onto the card by vendctl provision; devices too;
#   safe_commands(cfg), optionally: [(what, argv)] that put its outputs off from outside the controller's
#                       process, for `vend-controller safe-pins` after a crash.
# Nothing else in the code names a backend: this table is where a new one is added.
BACKENDS = {
    "sim": "hw.sim",
    "gpio": "hw.gpio",
    "serial": "hw.serial_board",
    "mdb": "hw.mdb",
}
# Devices any backend can have, each with its own section (``SETTINGS``): the 1-wire thermometer.
DEVICES = ("hw.w1",)


@dataclass(kw_only=True, eq=False)
class HardwareSettings(Settings, section="hardware"):
    """[hardware]: which backend drives the machine, and the machine's slots."""

    # Checked against the registry when the config is read, not when this class is made: a backend
    # registered later (a plug-in, a test's) is as good as the ones this file names.
    backend: str = key("str", what="a registered hardware backend")
    slots: tuple[str, ...] = key("list", pattern=SLOT_RE, what="slot codes like A1, B12")

    def check(self, cfg, path: str) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"{path}: [hardware] backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not self.slots:
            raise ConfigError(f"{path}: [hardware] slots is required: list the machine's slot codes")


def _module(name: str):
    return importlib.import_module(BACKENDS[name])


def config_sections() -> list[type[Settings]]:
    """Every INI section the hardware reads: [hardware], then each backend's and each device's own."""
    sections: list[type[Settings]] = [HardwareSettings]
    for module_name in (*BACKENDS.values(), *DEVICES):
        for cls in importlib.import_module(module_name).SETTINGS:
            if cls not in sections:
                sections.append(cls)
    return sections


def check_backend_config(cfg, path: str) -> None:
    """The configured backend's own checks (a GPIO pin map, a board's motor numbers)."""
    check = getattr(_module(cfg.hardware.backend), "check_config", None)
    if check is not None:
        check(cfg, path)


def reserved_pins(cfg) -> dict[int, str]:
    """Header pins that the configured backend and the devices take for a bus of their own (1-wire, the UART),
    each with why; a backend's pin map must keep off them."""
    taken: dict[int, str] = {}
    for module in (_module(cfg.hardware.backend), *map(importlib.import_module, DEVICES)):
        hook = getattr(module, "reserved_pins", None)
        if hook is not None:
            taken.update(hook(cfg))
    return taken


def boot_settings(cfg) -> BootSettings:
    """Everything the configured backend and the devices need of the Pi's boot, merged in registry order."""
    merged = BootSettings()
    for module in (_module(cfg.hardware.backend), *map(importlib.import_module, DEVICES)):
        hook = getattr(module, "boot_settings", None)
        if hook is not None:
            part = hook(cfg)
            merged = BootSettings(merged.config_txt + part.config_txt, merged.consoles_off + part.consoles_off,
                                  merged.units_off + part.units_off)
    return merged


def safe_commands(cfg) -> list[tuple[str, list[str]]]:
    """(what, argv) of the system commands that put the configured backend's outputs off from outside the
    controller's process; empty for a backend whose outputs stop by themselves (a board's own time limit)."""
    make = getattr(_module(cfg.hardware.backend), "safe_commands", None)
    return make(cfg) if make is not None else []


def open_hardware(cfg) -> Hardware:
    """Open the configured backend, screen and thermometer; raise HardwareError naming what is missing."""
    backend = cfg.hardware.backend
    if backend not in BACKENDS:
        raise HardwareError(
            f"hardware backend {backend!r} is not available; this build has: {', '.join(sorted(BACKENDS))}"
        )
    hardware = _module(backend).open_backend(cfg)
    try:
        if hardware.display is None:
            hardware.display = open_display(cfg)
        if hardware.thermometer is None:
            hardware.thermometer = open_thermometer(cfg.section(ThermometerSettings))
    except BaseException:
        hardware.close()
        raise
    return hardware


def open_display(cfg) -> Display:
    """The simulator's PNG file, or the Linux framebuffer of a real machine's screen."""
    kind = cfg.screen.display
    if kind == "auto":
        kind = getattr(_module(cfg.hardware.backend), "DEFAULT_DISPLAY", "framebuffer")
    if kind == "png":
        from .sim import PngDisplay, SimSettings

        return PngDisplay(cfg.section(SimSettings).display_path)
    from .fb import FramebufferDisplay

    return FramebufferDisplay(cfg.screen.framebuffer)
