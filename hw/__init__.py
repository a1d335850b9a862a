"""Hardware of a vending machine behind a few small interfaces, with one backend per file.

A backend is chosen by name in the controller's config (``[hardware] backend``). Nothing falls back to the
simulator on its own: a machine whose real backend cannot load stops with an error that says why.
"""

from __future__ import annotations

import importlib

from .base import Display, Door, DropSensor, Hardware, HardwareError, Motor

__all__ = ["Display", "Door", "DropSensor", "Hardware", "HardwareError", "Motor", "BACKENDS", "open_hardware"]

# name -> module with ``open_backend(slots, settings) -> Hardware``. The GPIO and serial-board backends are
# not built yet; naming them is an error until they are.
BACKENDS = {
    "sim": "hw.sim",
}


def open_hardware(backend: str, slots: list[str], settings: dict) -> Hardware:
    """Open the named backend for these slot codes; raise HardwareError naming what is missing."""
    module_name = BACKENDS.get(backend)
    if module_name is None:
        raise HardwareError(
            f"hardware backend {backend!r} is not available; this build has: {', '.join(sorted(BACKENDS))}"
        )
    module = importlib.import_module(module_name)
    return module.open_backend(slots, settings)
