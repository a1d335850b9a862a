"""The Raspberry Pi's own settings on a machine's card: config.txt and cmdline.txt, edited from its hardware file.

What the backend and devices need (``hw.boot_settings``: the UART on and free of consoles and Bluetooth, the
1-wire overlay on its pin, every motor output low from power-on) goes into one marked block at the end of
config.txt, replaced each time the card is provisioned again. The screen is the QR's, not the console's:
``fbcon=map:9`` binds the text console to a framebuffer that does not exist, so nothing (kernel messages, a login
prompt) draws over the QR on fb0, and the cursor is off. The first boot masks the getty on tty1.
"""

from __future__ import annotations

import re

import hw

BEGIN = "# vend-fleet: begin. Written by vendctl provision from the machine's hardware file; replaced when the"
BEGIN_2 = "# card is provisioned again. https://www.raspberrypi.com/documentation/computers/config_txt.html"
END = "# vend-fleet: end"
# Console to no framebuffer (there is no fb9), no blinking cursor: the screen shows only what the controller draws.
SCREEN_CMDLINE = ("fbcon=map:9", "vt.global_cursor_default=0")
SCREEN_UNITS_OFF = ("getty@tty1.service",)
# What grows the root over the whole card at the first boot, before cloud-init runs: ``resize`` (Trixie's
# initramfs), the first-boot init of raspberrypi-sys-mods (Bookworm) and the older raspi-config one. A card with a
# read-only root keeps the card's space for the ledger's partition, so these go (cloud-init's growpart is off too).
ROOT_GROWERS = ("resize", "init=/usr/lib/raspberrypi-sys-mods/firstboot", "init=/usr/lib/raspi-config/init_resize.sh")
_BLOCK_RE = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)


class BootFileError(ValueError):
    """A config.txt or cmdline.txt that cannot be edited safely; the text says why."""


def config_txt(current: str, machine_id: str, cfg) -> str:
    """config.txt with the machine's block (replacing an earlier one) at its end, under ``[all]``."""
    settings = hw.boot_settings(cfg)
    kept = _BLOCK_RE.sub("", current)
    if BEGIN in kept or END in kept:
        raise BootFileError("config.txt has a vend-fleet block without its end (or its beginning): remove it by hand")
    if kept and not kept.endswith("\n"):
        kept += "\n"
    lines = [BEGIN, BEGIN_2, f"# Machine {machine_id}.", "[all]", *settings.config_txt]
    if lines[-1] != "[all]":
        lines.append("[all]")
    return kept + "\n".join(lines + [END]) + "\n"


def cmdline_txt(current: str, cfg, keep_root_size: bool = False) -> str:
    """cmdline.txt (one line) without a login console on the buses the machine uses, and the screen's console off;
    with ``keep_root_size``, without what would grow the root over the card (``ROOT_GROWERS``)."""
    if not current.strip():
        raise BootFileError("cmdline.txt is empty: this is not a Raspberry Pi OS boot partition as it was written")
    if len(current.strip().splitlines()) != 1:
        raise BootFileError("cmdline.txt has more than one line; the Pi reads only the first: fix it by hand")
    settings = hw.boot_settings(cfg)
    words = current.split()
    off = {f"console={name}" for name in settings.consoles_off}
    replaced = {word.split("=")[0] for word in SCREEN_CMDLINE}
    words = [w for w in words if w.split(",")[0] not in off and w.split("=")[0] not in replaced]
    if keep_root_size:
        words = [w for w in words if w not in ROOT_GROWERS]
    return " ".join(words + list(SCREEN_CMDLINE)) + "\n"


def units_off(cfg) -> tuple[str, ...]:
    """The systemd units the first boot masks: the screen's getty, and what would take a bus the machine uses."""
    return SCREEN_UNITS_OFF + hw.boot_settings(cfg).units_off
