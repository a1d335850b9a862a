"""Hardware of a vending machine behind a few small interfaces, with one backend per file.

A backend is chosen by name in the controller's config (``[hardware] backend``). Nothing falls back to the
simulator on its own: a machine whose real backend cannot load stops with an error that says why.
"""

from __future__ import annotations

import importlib

from .base import Display, Door, DropSensor, Faults, Hardware, HardwareError, Motor, ServiceButton, Thermometer

__all__ = ["Display", "Door", "DropSensor", "Faults", "Hardware", "HardwareError", "Motor", "ServiceButton",
           "Thermometer", "BACKENDS", "open_hardware"]

# name -> module with ``open_backend(cfg) -> Hardware``, given the controller's whole parsed config: a
# backend reads its own section ([sim], [gpio], [serial]); the screen and the thermometer are added here.
BACKENDS = {
    "sim": "hw.sim",
    "gpio": "hw.gpio",
    "serial": "hw.serial_board",
}


def open_hardware(cfg: dict) -> Hardware:
    """Open the configured backend, screen and thermometer; raise HardwareError naming what is missing."""
    backend = cfg["hardware"]["backend"]
    module_name = BACKENDS.get(backend)
    if module_name is None:
        raise HardwareError(
            f"hardware backend {backend!r} is not available; this build has: {', '.join(sorted(BACKENDS))}"
        )
    hardware = importlib.import_module(module_name).open_backend(cfg)
    try:
        if hardware.display is None:
            hardware.display = open_display(cfg)
        if hardware.thermometer is None and cfg["thermometer"]["w1_id"]:
            from .w1 import W1Thermometer

            hardware.thermometer = W1Thermometer(cfg["thermometer"]["w1_id"], cfg["thermometer"]["w1_dir"])
    except BaseException:
        hardware.close()
        raise
    return hardware


def open_display(cfg: dict) -> Display:
    """The simulator's PNG file, or the Linux framebuffer of a real machine's screen."""
    kind = cfg["screen"]["display"]
    if kind == "auto":
        kind = "png" if cfg["hardware"]["backend"] == "sim" else "framebuffer"
    if kind == "png":
        from .sim import PngDisplay

        return PngDisplay(cfg["sim"]["display_path"])
    from .fb import FramebufferDisplay

    return FramebufferDisplay(cfg["screen"]["framebuffer"])
