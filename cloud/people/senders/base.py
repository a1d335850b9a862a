"""What every way of sending a sign-in code has: a name, whom it can reach, and ``send``."""

from __future__ import annotations

import os
import stat


class SendError(Exception):
    """The code could not be handed over (the message says why, never a secret)."""


class Sender:
    """Sends a short text to a customer: by text message to their phone, or by e-mail."""

    name = ""

    def reaches(self, customer) -> bool:
        """Whether this customer has an address this sender can use."""
        raise NotImplementedError

    def send(self, customer, subject: str, text: str) -> None:
        """Hand the text over for delivery, or raise SendError."""
        raise NotImplementedError


def read_secret(option: str, path: str) -> str:
    """A password or token from a file only its owner may read (mode 0600), as ssh does with a key; the
    error names the option and the file, never what is in it."""
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SystemExit(f"{option} {path}: others may read it (mode {stat.S_IMODE(mode):04o}); "
                             f"chmod 0600 it")
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as e:
        raise SystemExit(f"{option} {path}: cannot read it ({e.strerror})") from None
    if not secret:
        raise SystemExit(f"{option} {path}: the file is empty")
    return secret
