"""The simulated machine's physics, written once and used by every simulator (``hw/sim.py``,
``hw/gpio_sim.py``, ``hw/board_sim.py``).

A slot is a spiral with products on it. Told "the motor started at t", it says when a product passes the
drop sensor and when the spiral is home again, given the slot's fault from ``[sim]``: ``jam`` (the spiral is
stuck: nothing falls and it never comes home), ``empty`` (a full turn, nothing falls) or ``double`` (two
products stuck together fall one just after the other). Cutting the motor's power stops the spiral where it
is: a product not yet over the edge stays on it, but one stuck to a product that already fell follows it.

It owns no thread and no clock; each simulator turns these times into its own events (a thread timer, a
mock pin's edge, a board's report), the way ``controller/vend.py`` is told the time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

FAULTS = ("jam", "empty", "double")
DOUBLE_DROP_GAP_S = 0.05  # how long after the first product the one stuck to it falls


@dataclass(frozen=True)
class Turn:
    """One turn of one spiral, in the caller's clock: when products fall, and when the spiral is home."""

    started: float
    drops: tuple[float, ...]
    home: float | None  # None: a jammed spiral never gets back home

    def drops_after_cut(self, t: float) -> tuple[float, ...]:
        """The drops that still happen when the power is cut at ``t``: only a product stuck to one that fell."""
        if not any(drop <= t for drop in self.drops):
            return ()
        return tuple(drop for drop in self.drops if drop > t)


class Slot:
    """One slot's spiral and what is on it; ``turns`` counts how many times its motor started."""

    def __init__(self, fault: str | None = None, drop_delay_s: float = 0.3):
        self.fault = fault
        self.drop_delay_s = drop_delay_s
        self.turns = 0

    @property
    def fault(self) -> str | None:
        return self._fault

    @fault.setter
    def fault(self, fault: str | None) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault {fault!r}; expected one of {', '.join(FAULTS)}")
        self._fault = fault

    def turn(self, t: float, turn_s: float) -> Turn:
        """The motor started at ``t`` for a turn that takes ``turn_s`` when nothing is stuck."""
        self.turns += 1
        drops: tuple[float, ...] = ()
        if self._fault not in ("jam", "empty"):
            drops = (t + self.drop_delay_s,)
            if self._fault == "double":
                drops += (t + self.drop_delay_s + DOUBLE_DROP_GAP_S,)
        return Turn(t, drops, None if self._fault == "jam" else t + turn_s)


def slots_from(settings, slots) -> dict[str, Slot]:
    """One ``Slot`` per slot code, with its fault and drop delay from a ``[sim]`` section."""
    faults = {slot: fault for fault in FAULTS for slot in settings[fault]}
    return {slot: Slot(faults.get(slot), settings.drop_delay_s) for slot in slots}


class Timers:
    """Thread timers for a simulator that lives in real time: each a callable due after a delay."""

    def __init__(self):
        self._timers: list[threading.Timer] = []

    def after(self, delay: float, fn) -> None:
        """Call ``fn`` on its own thread ``delay`` seconds from now, unless cancelled first."""
        timer = threading.Timer(max(0.0, delay), fn)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def cancel(self) -> None:
        """Cancel every timer not yet due."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
