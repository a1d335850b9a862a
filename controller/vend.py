"""The vend state machine: a plain class that is told what happened and when, and answers with actions.

It owns no thread, no clock and no device. The daemon tells it "start at t", "drop seen at t", "timer fired
at t", and carries out the actions it returns, in order: a ``Record`` is written to the ledger before the
``RunMotor`` that follows it, so a crash between the two leaves ``vend.started`` on disk and never a motor
that turned without a trace.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """Append this fact to the ledger."""

    kind: str
    data: dict


@dataclass(frozen=True)
class RunMotor:
    slot: str


@dataclass(frozen=True)
class StopMotor:
    slot: str


@dataclass(frozen=True)
class Finished:
    """The vend is over with this outcome; the screen rotates its QR and the cloud hears of it."""

    cmd_id: str
    order_id: str
    outcome: str  # succeeded, failed


class Busy(RuntimeError):
    """A vend is already in progress."""


@dataclass
class _Vend:
    cmd_id: str
    order_id: str
    slot: str
    started_at: float
    turn: int
    deadline: float


class VendStateMachine:
    """One vend at a time: a turn, a wait for the drop, one retry turn, then an outcome."""

    def __init__(self, drop_timeout_s: float, turns: int = 2):
        self.drop_timeout_s = drop_timeout_s
        self.turns = turns
        self._vend: _Vend | None = None

    @property
    def busy(self) -> bool:
        return self._vend is not None

    @property
    def deadline(self) -> float | None:
        """When ``timer_fired`` must be called next, or None when idle."""
        return self._vend.deadline if self._vend else None

    def start(self, cmd_id: str, order_id: str, slot: str, now: float) -> list:
        if self._vend is not None:
            raise Busy(f"vend of order {self._vend.order_id} in progress")
        self._vend = _Vend(cmd_id, order_id, slot, now, 1, now + self.drop_timeout_s)
        return [Record("vend.started", {"order_id": order_id, "cmd_id": cmd_id, "slot": slot}), RunMotor(slot)]

    def drop_seen(self, now: float) -> list:
        v = self._vend
        if v is None:
            # A second product falling, or a hand in the chute: a fact worth keeping, not a sale.
            return [Record("drop.unexpected", {})]
        self._vend = None
        data = {"order_id": v.order_id, "cmd_id": v.cmd_id, "slot": v.slot, "turns": v.turn,
                "ms": round((now - v.started_at) * 1000)}
        return [StopMotor(v.slot), Record("vend.succeeded", data), Finished(v.cmd_id, v.order_id, "succeeded")]

    def not_dropped(self, now: float, reason: str, *, slot_ok: bool = False) -> list:
        """The machine says nothing fell (a VMC that reported failure, a cancelled session): fail now, no retry.

        ``slot_ok`` (the customer cancelled, the session timed out) goes into ``vend.failed`` so that the ledger
        and the cloud leave the slot in service: nothing went wrong with its spiral.
        """
        v = self._vend
        if v is None:
            return []
        self._vend = None
        data = {"order_id": v.order_id, "cmd_id": v.cmd_id, "slot": v.slot, "reason": reason, "turns": v.turn}
        if slot_ok:
            data["slot_ok"] = True
        return [StopMotor(v.slot), Record("vend.failed", data), Finished(v.cmd_id, v.order_id, "failed")]

    def timer_fired(self, now: float) -> list:
        v = self._vend
        if v is None or now < v.deadline:
            return []
        if v.turn < self.turns:
            v.turn += 1
            v.deadline = now + self.drop_timeout_s
            return [StopMotor(v.slot), RunMotor(v.slot)]
        self._vend = None
        reason = f"no drop seen after {v.turn} turn{'s' if v.turn > 1 else ''}"
        data = {"order_id": v.order_id, "cmd_id": v.cmd_id, "slot": v.slot, "reason": reason, "turns": v.turn}
        return [StopMotor(v.slot), Record("vend.failed", data), Finished(v.cmd_id, v.order_id, "failed")]

    @staticmethod
    def recover(started) -> list:
        """Actions for a ``vend.started`` event that a reboot left without an outcome."""
        d = started.data
        return [Record("vend.unknown", {"order_id": d["order_id"], "cmd_id": d["cmd_id"], "slot": d["slot"],
                                        "started_seq": started.seq})]
