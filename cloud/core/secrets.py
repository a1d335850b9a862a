"""Secrets read from files only their owner may read (mode 0600), as ssh does with a key.

Every key, certificate, password and token the cloud is given by name (a ``--...-file`` option) is read
here, once, at start: a file others may read, a missing, unreadable or empty file stops the cloud with an
error naming the option and the file, never what is in it.
"""

from __future__ import annotations

import os
import stat


def read_secret_bytes(option: str, path: str) -> bytes:
    """The whole file at ``path`` (a key or a certificate in PEM, a token), checked as above."""
    if not path:
        raise SystemExit(f"{option}: no file named")
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SystemExit(f"{option} {path}: others may read it (mode {stat.S_IMODE(mode):04o}); chmod 0600 it")
        with open(path, "rb") as f:
            secret = f.read()
    except OSError as e:
        raise SystemExit(f"{option} {path}: cannot read it ({e.strerror})") from None
    if not secret.strip():
        raise SystemExit(f"{option} {path}: the file is empty")
    return secret


def read_secret(option: str, path: str) -> str:
    """A password or token: the file's text, stripped of surrounding white space."""
    try:
        return read_secret_bytes(option, path).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SystemExit(f"{option} {path}: not UTF-8 text") from None
