"""A simulated vending machine controller (VMC) behind an MDB adapter, on a pty: the adapter's side of
``hw/mdb_protocol.py``, for tests, ``make demo`` and a person at a desk.

It models the machine, not the calls: ``C,1`` turns the cashless device on and the VMC enables it a moment
later; ``C,START`` opens a session with credit, and the simulated customer at the machine presses a selection
(the one whose price is the credit, unless told otherwise) ``select_delay_s`` later; ``C,VEND`` approves it,
and the machine turns that selection's spiral (``hw/physics.py``, shared with every simulator): a product
that falls is ``c,VEND,SUCCESS``, a jammed or empty spiral is ``c,ERR,VEND 3``. Faults come on demand: the
machine reports failure, resets in the middle of a vend, never answers, answers garbage, the customer
cancels, or presses a different selection. ``dispensed`` counts the products that really came out.

    python -m hw.mdb_sim --items 1=200,2=350,3=600 --jam 3

prints the pty's path for ``[mdb] port`` (with ``--link PATH``, also a stable symlink to it) and takes
commands (fail, reset-in-vend, silent, garbage, cancel, other, select N, ...) on stdin.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import os
import select
import signal
import sys
import threading
import time
import tty
from collections import Counter

from .mdb_protocol import from_minor, to_minor
from .physics import FAULTS, Slot

log = logging.getLogger(__name__)

IDLE_TICK_S = 0.1
GARBAGE = b"\x00\xffc,STA\x13TUS,V\xe9ND,??,\n"


class VmcSim:
    """A vending machine controller with ``items`` (selection -> price in minor units) behind a pty."""

    def __init__(self, items: dict[int, int], *, decimals: int = 2, enable_delay_s: float = 0.05,
                 select_delay_s: float = 0.2, drop_delay_s: float = 0.3, turn_s: float = 1.0,
                 modes: dict[int, str] | None = None):
        if not items:
            raise ValueError("a machine needs at least one selection")
        self._lock = threading.RLock()
        self.items = dict(items)
        self.decimals = decimals
        self.enable_delay_s = enable_delay_s
        self.select_delay_s = select_delay_s
        self.turn_s = turn_s
        self._slots = {item: Slot(None, drop_delay_s) for item in items}
        for item, mode in (modes or {}).items():
            self.set_mode(item, mode)
        self.state = "INACTIVE"
        self.funds: int | None = None
        self.selected: int | None = None  # the selection waiting for approval
        self.heard: list[str] = []  # every line from the driver, in order
        self.sent: list[str] = []  # every line sent, garbage included
        self.dispensed: Counter = Counter()  # selection -> products that came out
        self.sessions = 0
        self._fail_next = False
        self._reset_in_vend = False
        self._cancel_next = False
        self._other_next = False
        self._select_next: int | None = None
        self._silent = False
        self._garbage_answers = 0
        self._timers: list = []
        self._timer_n = itertools.count()
        self._session_timers: list = []
        self._inbuf = bytearray()
        self._closed = False
        self._link: str | None = None
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="vmc-sim", daemon=True)
        self._thread.start()

    def __enter__(self) -> VmcSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def link(self, path: str) -> None:
        """A symlink at ``path`` to the pty, so a config file can name a port that outlives one run."""
        tmp = f"{path}.tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self.port, tmp)
        os.replace(tmp, path)
        self._link = path

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(timeout=2.0)
        if self._link and os.path.islink(self._link) and os.readlink(self._link) == self.port:
            os.unlink(self._link)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    # Faults and events on demand.

    def set_mode(self, item: int, mode: str) -> None:
        """How selection ``item``'s spiral behaves from its next turn: ok, jam, empty or double."""
        if item not in self._slots:
            raise ValueError(f"selection {item}; the machine has {', '.join(map(str, self._slots))}")
        with self._lock:
            self._slots[item].fault = None if mode == "ok" else mode

    def fail_next_vend(self) -> None:
        """The next approved vend reports failure (c,VEND,FAIL), whatever the spiral does."""
        self._arm("_fail_next", True)

    def reset_in_next_vend(self) -> None:
        """The machine restarts just after approving the next vend, before it reports an outcome."""
        self._arm("_reset_in_vend", True)

    def cancel_next_session(self) -> None:
        """The customer at the machine presses cancel instead of a selection in the next session."""
        self._arm("_cancel_next", True)

    def other_item_next(self) -> None:
        """The customer presses a different selection from the one paid for, in the next session."""
        self._arm("_other_next", True)

    def select_next(self, item: int) -> None:
        """The customer presses ``item`` in the next session."""
        if item not in self.items:
            raise ValueError(f"selection {item}; the machine has {', '.join(map(str, self.items))}")
        self._arm("_select_next", item)

    def silent(self, on: bool = True) -> None:
        """Hear everything, answer nothing (a dead adapter, a cut cable)."""
        self._arm("_silent", on)

    def garbage_answers(self, n: int) -> None:
        """Send garbage in place of each of the next ``n`` lines."""
        self._arm("_garbage_answers", n)

    def garbage(self) -> None:
        """Write a line of garbage now."""
        with self._lock:
            self._write_raw(GARBAGE)

    def reset(self) -> None:
        """The machine restarts now: the cashless device is INACTIVE until the VMC enables it again."""
        with self._lock:
            self._reset(time.monotonic())
        self._wake()

    def _arm(self, name: str, value) -> None:
        with self._lock:
            setattr(self, name, value)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # The machine's loop: lines in, timers due.

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                timeout = self._tick(time.monotonic())
            ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 512)
            if self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:
                    time.sleep(IDLE_TICK_S)  # nobody has the other end open yet
                    data = b""
                with self._lock:
                    self._feed(data, time.monotonic())

    def _tick(self, now: float) -> float:
        while self._timers and self._timers[0][0] <= now:
            _, _, fn, alive = heapq.heappop(self._timers)
            if alive[0]:
                fn(now)
        wait = IDLE_TICK_S
        if self._timers:
            wait = min(wait, self._timers[0][0] - now)
        return max(0.0, wait)

    def _at(self, when: float, fn, session: bool = False) -> None:
        alive = [True]
        heapq.heappush(self._timers, (when, next(self._timer_n), fn, alive))
        if session:
            self._session_timers.append(alive)

    def _cancel_session_timers(self) -> None:
        for alive in self._session_timers:
            alive[0] = False
        self._session_timers.clear()

    def _feed(self, data: bytes, now: float) -> None:
        for byte in data:
            if byte in (0x0A, 0x0D):
                if self._inbuf:
                    line = self._inbuf.decode("ascii", "replace").strip()
                    self._inbuf.clear()
                    self.heard.append(line)
                    if not self._silent:
                        self._command(line, now)
            else:
                self._inbuf.append(byte)

    def _write_raw(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except (BlockingIOError, OSError):
            log.debug("vmc sim: pty full or closed, %d bytes lost", len(data))

    def _send(self, line: str) -> None:
        if self._garbage_answers:
            self._garbage_answers -= 1
            self.sent.append("<garbage>")
            self._write_raw(GARBAGE)
            return
        self.sent.append(line)
        self._write_raw(line.encode("ascii") + b"\r\n")

    def _status(self, state: str) -> None:
        self.state = state
        self._send(f"c,STATUS,{state}")

    def _money(self, amount: int) -> str:
        return from_minor(amount, self.decimals)

    # What the machine does with each command.

    def _command(self, line: str, now: float) -> None:
        parts = line.split(",")
        if parts == ["C", "1"]:
            self._end_session()
            self._status("INACTIVE")
            self._enable_later(now)
        elif parts == ["C", "0"]:
            self._end_session()
            self._status("INACTIVE")
        elif parts[:2] == ["C", "START"] and len(parts) == 3:
            self._start(parts[2], now)
        elif parts[:2] == ["C", "VEND"] and len(parts) == 3:
            self._approve(parts[2], now)
        elif parts == ["C", "STOP"]:
            if self.state in ("IDLE", "VEND"):
                self._end_session()
                self._status("ENABLED")
        else:
            self._send(f"c,ERR,UNKNOWN {line[:40]}")

    def _enable_later(self, now: float) -> None:
        self._at(now + self.enable_delay_s, lambda t: self._status("DISABLED"))
        self._at(now + 2 * self.enable_delay_s, lambda t: self._status("ENABLED"))

    def _start(self, funds_text: str, now: float) -> None:
        funds = to_minor(funds_text, self.decimals)
        if self.state != "ENABLED" or funds is None:
            self._send("c,ERR,START -1")
            return
        self.funds = funds
        self.sessions += 1
        self._status("IDLE")
        self._at(now + self.select_delay_s, self._customer_selects, session=True)

    def _customer_selects(self, now: float) -> None:
        if self.state != "IDLE":
            return
        if self._cancel_next:
            self._cancel_next = False
            self._end_session()
            self._status("ENABLED")  # the VMC ends the session: no vend in it
            return
        paid_for = next((i for i, p in self.items.items() if p == self.funds), None)
        if paid_for is None:
            paid_for = next((i for i, p in self.items.items() if p <= self.funds), next(iter(self.items)))
        item = paid_for
        if self._select_next is not None:
            item, self._select_next = self._select_next, None
        elif self._other_next:
            self._other_next = False
            item = next((i for i in self.items if i != paid_for), paid_for)
        self.selected = item
        self.state = "VEND"
        self._send(f"c,STATUS,VEND,{self._money(self.items[item])},{item}")

    def _approve(self, amount_text: str, now: float) -> None:
        amount = to_minor(amount_text, self.decimals)
        item = self.selected
        if self.state != "VEND" or item is None or amount is None or amount < self.items[item]:
            self._send("c,ERR,VEND -1")
            return
        self.state = "VENDING"
        if self._reset_in_vend:
            self._reset_in_vend = False
            self._at(now + 0.05, self._reset, session=True)
            return
        if self._fail_next:
            self._fail_next = False
            self._at(now + 0.1, lambda t: self._outcome(False, "c,VEND,FAIL"), session=True)
            return
        turn = self._slots[item].turn(now, self.turn_s)
        for drop in turn.drops:
            self._at(drop, lambda t, item=item: self.dispensed.update([item]))
        if turn.drops:
            self._at(turn.drops[0], lambda t: self._outcome(True, "c,VEND,SUCCESS"), session=True)
        else:
            # The VMC's own time limit on the spiral ends a jammed or empty turn.
            self._at(now + self.turn_s, lambda t: self._outcome(False, "c,ERR,VEND 3"), session=True)

    def _outcome(self, ok: bool, line: str) -> None:
        self._send(line)
        self._end_session()
        self._status("IDLE")
        self._status("ENABLED")

    def _end_session(self) -> None:
        self._cancel_session_timers()
        self.funds = None
        self.selected = None

    def _reset(self, now: float) -> None:
        self._end_session()
        self._status("INACTIVE")
        self._enable_later(now)

    def summary(self) -> str:
        with self._lock:
            out = ", ".join(f"{i}: {n}" for i, n in sorted(self.dispensed.items())) or "none"
            return (f"state {self.state}; sessions {self.sessions}; dispensed: {out}; lines heard "
                    f"{len(self.heard)}, sent {len(self.sent)}")


COMMANDS = """commands: fail | reset-in-vend | reset | cancel | other | select N | silent on|off | garbage [N] |
          ok|jam|empty|double N | stats | quit"""


def _command(vmc: VmcSim, line: str) -> bool:
    """Carry out one stdin command; False to quit."""
    words = line.split()
    if not words:
        return True
    verb, args = words[0], words[1:]
    try:
        if verb == "quit":
            return False
        if verb == "fail":
            vmc.fail_next_vend()
        elif verb == "reset-in-vend":
            vmc.reset_in_next_vend()
        elif verb == "reset":
            vmc.reset()
        elif verb == "cancel":
            vmc.cancel_next_session()
        elif verb == "other":
            vmc.other_item_next()
        elif verb == "select":
            vmc.select_next(int(args[0]))
        elif verb == "silent":
            vmc.silent(not args or args[0] == "on")
        elif verb == "garbage":
            if args:
                vmc.garbage_answers(int(args[0]))
            else:
                vmc.garbage()
        elif verb in ("ok", *FAULTS) and args:
            vmc.set_mode(int(args[0]), verb)
        elif verb == "stats":
            print(vmc.summary(), flush=True)
        else:
            print(COMMANDS, flush=True)
            return True
        print(f"ok {line.strip()}", flush=True)
    except (IndexError, ValueError) as e:
        print(f"{line.strip()}: {e}", flush=True)
    return True


def parse_items(text: str, decimals: int) -> dict[int, int]:
    """``1=2.00,2=3.50`` (prices as the machine shows them) -> {1: 200, 2: 350}."""
    items = {}
    for pair in (p for p in text.replace(" ", ",").split(",") if p):
        item, sep, price = pair.partition("=")
        amount = to_minor(price, decimals)
        if not sep or not item.isdigit() or amount is None:
            raise ValueError(f"{pair!r} is not selection=price like 12=3.50")
        items[int(item)] = amount
    return items


def main(argv: list[str] | None = None) -> int:
    """Run a simulated VMC until quit, EOF on a terminal, or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m hw.mdb_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="1=2.00,2=3.50,3=6.00,4=5.50",
                        help="the machine's selections and prices, like 1=2.00,2=3.50")
    parser.add_argument("--decimals", type=int, default=2)
    for mode in FAULTS:
        parser.add_argument(f"--{mode}", type=int, action="append", default=[], metavar="ITEM",
                            help=f"this selection's spiral is {mode} (repeatable)")
    parser.add_argument("--select-delay", type=float, default=1.0,
                        help="seconds from the session's start to the customer's selection")
    parser.add_argument("--drop-delay", type=float, default=0.3, help="seconds from approval to the drop")
    parser.add_argument("--link", default="", help="also make a symlink to the pty here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        items = parse_items(args.items, args.decimals)
        modes = {item: mode for mode in FAULTS for item in getattr(args, mode)}
        vmc = VmcSim(items, decimals=args.decimals, select_delay_s=args.select_delay,
                     drop_delay_s=args.drop_delay, modes=modes)
    except ValueError as e:
        parser.error(str(e))
    # Stopped by a signal (make demo's Ctrl-C, a test's terminate), it still closes and removes its link.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with vmc:
        if args.link:
            vmc.link(args.link)
        print(f"simulated vending machine controller (MDB) on {vmc.port}\n[mdb] port = {args.link or vmc.port}\n"
              f"{COMMANDS}", flush=True)
        try:
            for line in sys.stdin:
                if not _command(vmc, line):
                    break
            else:
                threading.Event().wait()  # stdin closed (run in the background): serve until killed
        except KeyboardInterrupt:
            pass
        print(vmc.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
