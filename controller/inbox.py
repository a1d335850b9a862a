"""What arrives in the controller's inbox: one small message type per kind of fact, from whichever thread saw it.

Every producer (paho's network thread, a driver's thread, the thermometer and credentials threads, the
service socket) only puts one of these in the inbox and returns; the main loop handles them in order, by
type (``Controller.handle``).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MqttMessage:
    """A message from the broker, not yet decoded: decoding is the main loop's work."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class Connected:
    """The link to the broker is up and subscribed."""


@dataclass(frozen=True)
class Disconnected:
    """The link to the broker went down; paho reconnects by itself."""

    reason: str


@dataclass(frozen=True)
class Drop:
    """The drop sensor saw a product fall at monotonic time ``t``."""

    t: float


@dataclass(frozen=True)
class NoDrop:
    """The machine said at monotonic time ``t`` that nothing fell for the vend in progress, and why; ``slot_ok``
    when that is no fault of the slot's."""

    reason: str
    slot_ok: bool
    t: float


@dataclass(frozen=True)
class DoorChanged:
    """The service door opened or closed at monotonic time ``t``."""

    is_open: bool
    t: float


@dataclass(frozen=True)
class ServiceButtonPressed:
    """The technician pressed the service button at monotonic time ``t``."""

    t: float


@dataclass(frozen=True)
class HardwareFault:
    """A driver reported a fault from its own thread."""

    code: str
    device: str
    what: str


@dataclass(frozen=True)
class Temperature:
    """A thermometer reading, or None with the reason it failed."""

    value: float | None
    error: str = ""


@dataclass(frozen=True)
class CredentialsFetched:
    """The machine's secrets as the cloud has them now: ``secret``, ``mqtt_username``, ``mqtt_password``."""

    fetched: dict


@dataclass(frozen=True)
class ServiceRequest:
    """A technician's request from the local socket; the answer goes into ``reply``."""

    request: dict
    reply: queue.Queue = field(compare=False)


@dataclass(frozen=True)
class Wake:
    """Nothing happened: wakes the main loop so it sees that it was asked to stop."""
