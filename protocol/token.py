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
# The nonce of the dashboard's copy of a machine's screen: signed like the machine's own, so a person who
# scans it learns it is a copy rather than "not recognised", but never a sale: buying needs standing at the
# machine. A machine's own nonce counts sales from 0 and never gets near it.
MIRROR_NONCE = 999_999_999
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


# -- a machine's own requests to the cloud ------------------------------------------------------------
# ``Authorization: VendMachine {machine_id}.{unix seconds}.{signature}``: the machine proves it holds its
# secret without sending it, and the time bounds a replay. A different purpose string keeps a request's
# signature from ever passing as a QR token's, and the other way round.

REQUEST_SKEW_S = 300


def _sign_request(secret: bytes, machine_id: str, at: int, purpose: str) -> str:
    mac = hmac.new(secret, f"v1-request|{purpose}|{machine_id}|{at}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign_request(machine_id: str, secret: bytes, now: float, purpose: str) -> str:
    """The value of the Authorization header for one request by this machine."""
    at = int(now)
    return f"VendMachine {machine_id}.{at}.{_sign_request(secret, machine_id, at, purpose)}"


def request_machine(header: str) -> str:
    """The machine a request says it comes from; ProtocolError if the header is not one of ours."""
    scheme, _, value = (header or "").partition(" ")
    parts = value.split(".")
    if scheme != "VendMachine" or len(parts) != 3 or not MACHINE_ID_RE.match(parts[0]) \
            or not _NUMBER_RE.match(parts[1]):
        raise ProtocolError("expected Authorization: VendMachine {machine_id}.{unix seconds}.{signature}")
    return parts[0]


def verify_request(header: str, secrets: Iterable[bytes], now: float, purpose: str) -> str:
    """The machine id of a well-signed, timely request; ProtocolError saying why not otherwise."""
    machine_id = request_machine(header)
    _, at, signature = header.partition(" ")[2].split(".")
    if abs(now - int(at)) > REQUEST_SKEW_S:
        raise ProtocolError(f"request signed at {at}, {now - int(at):+.0f} s from the cloud's clock")
    for secret in secrets:
        if hmac.compare_digest(signature.encode(), _sign_request(secret, machine_id, int(at), purpose).encode()):
            return machine_id
    raise ProtocolError("bad signature")
