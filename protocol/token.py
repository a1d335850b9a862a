"""The QR token: which machine, which time window, signed with the machine's own secret.

A token reads ``{machine_id}.{start}.{nonce}.{signature}``. ``start`` is the second (on the machine's
cloud-corrected clock) at which the token's rotation window began; ``nonce`` changes after every sale so
the screen changes with it.
The cloud accepts a token for ``ttl`` seconds after its window begins, and tolerates ``skew`` seconds of
clock error either way: a Pi has no real-time clock, and corrects itself from the cloud time in every ack.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Iterable

from . import ProtocolError
from .topics import MACHINE_ID_RE

SIG_BYTES = 16
_NUMBER_RE = re.compile(r"^(0|[1-9][0-9]*)\Z")


class TokenExpired(ProtocolError):
    """A well-signed token whose time is past; the customer should scan the screen again."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    machine_id: str
    window: int
    nonce: int


def _sign(secret: bytes, machine_id: str, window: int, nonce: int) -> str:
    mac = hmac.new(secret, f"v1|{machine_id}|{window}|{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:SIG_BYTES]).rstrip(b"=").decode()


def make(machine_id: str, secret: bytes, now: float, period: float, nonce: int = 0) -> str:
    """A token for the rotation window that holds ``now`` (seconds since the epoch, cloud-corrected)."""
    window = int(now // period * period)
    return f"{machine_id}.{window}.{nonce}.{_sign(secret, machine_id, window, nonce)}"


def machine_of(token: str) -> str:
    """The machine a token claims to be from, before any check; raises ProtocolError if unreadable."""
    return parse(token)[0]


def parse(token: str) -> tuple[str, int, int, str]:
    parts = token.split(".") if isinstance(token, str) and len(token) <= 200 else []
    if len(parts) != 4:
        raise ProtocolError("QR code not recognised: the token must have 4 parts")
    machine_id, window_s, nonce_s, sig = parts
    if not MACHINE_ID_RE.match(machine_id):
        raise ProtocolError("QR code not recognised: bad machine id")
    # ASCII digits without leading zeros: one token has exactly one spelling.
    if not (_NUMBER_RE.match(window_s) and _NUMBER_RE.match(nonce_s) and len(window_s) < 12 and len(nonce_s) < 10):
        raise ProtocolError("QR code not recognised: window and nonce must be numbers")
    return machine_id, int(window_s), int(nonce_s), sig


def verify(token: str, secrets: Iterable[bytes], now: float, ttl: float, skew: float) -> TokenInfo:
    """Check signature and age against the cloud clock ``now``; raise ProtocolError or TokenExpired."""
    machine_id, window, nonce, sig = parse(token)
    if not any(hmac.compare_digest(_sign(s, machine_id, window, nonce), sig) for s in secrets):
        raise ProtocolError("QR code signature is not valid for this machine")
    if window > now + skew:
        raise TokenExpired("QR code is from the future: the machine's clock is wrong; scan the screen again")
    if now > window + ttl + skew:
        raise TokenExpired(f"QR code expired {int(now - window - ttl)} s ago; scan the screen again")
    return TokenInfo(machine_id, window, nonce)
