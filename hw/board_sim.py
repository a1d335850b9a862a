"""A simulated motor board that speaks hw/SERIAL_PROTOCOL.md on a pty, for tests and for a person at a desk.

It models the board, not the calls: RUN starts a turn, the product falls ``drop_delay_s`` into it and the
cam closes ``turn_s`` into it (the slots' physics are ``hw/physics.py``, shared with the other simulators),
unless the motor jams (the spiral sticks, the cam never closes, the board ends
the turn on its time limit), is empty (the turn completes, nothing falls) or drops two. Line faults come on
demand: garbage bytes, a damaged CRC, requests left unanswered, report acknowledgements lost, a restart in
the middle of a turn. ``runs`` counts how many times each motor really started.

    python -m hw.board_sim --motors 6 --jam 2 --double 3

prints the pty's path for ``[serial] port`` and takes commands (garbage, corrupt, ignore N, reset, door
open, ...) on stdin.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import os
import random
import select
import sys
import threading
import time
import tty
from collections import Counter, OrderedDict, deque

from .board_protocol import (ACK, BAD_LENGTH, BAD_MOTOR, BOOT, BOOT_CHANGED, BUSY, CAUSE_POWER_ON, CAUSE_WATCHDOG,
                             DOOR, DROP, END_CAM, END_STOPPED, END_TIME_LIMIT, INPUT_DOOR_OPEN, NAK, NO_MOTOR,
                             PROTOCOL_VERSION, REPORT_ACK, REPORT_BODY, REQUEST_BODY, RESET, RUN, STATUS, STOP,
                             TURN, UNKNOWN_COMMAND, Frame, FrameReader, ProtocolError, ack, age_ms, encode, nak,
                             pack, unpack)
from .physics import DOUBLE_DROP_GAP_S, FAULTS, Slot, Turn

log = logging.getLogger(__name__)

MODES = ("ok", *FAULTS)
CACHE_SIZE = 16
REPORT_QUEUE_SIZE = 16
# A start byte, a plausible length, then noise: the driver must discard a would-be frame and resynchronise.
GARBAGE = b"\x00\xff\xa5\x02noise\x13\x37"
IDLE_TICK_S = 0.1


class BoardSim:
    """A motor board with ``motors`` motors behind a pty; point the driver at ``port``."""

    def __init__(self, motors: int = 6, *, drop_delay_s: float = 0.05, turn_s: float | None = None,
                 turn_limit_s: float = 1.0, report_resend_s: float = 0.1, modes: dict[int, str] | None = None,
                 door_open: bool = False):
        self._lock = threading.RLock()
        self.motors = motors
        self.drop_delay_s = drop_delay_s
        self.turn_s = turn_s if turn_s is not None else drop_delay_s + 2 * DOUBLE_DROP_GAP_S
        self.turn_limit_s = turn_limit_s
        self.report_resend_s = report_resend_s
        self._slots = {motor: Slot(None, drop_delay_s) for motor in range(motors)}
        self._physics: Turn | None = None  # the turn the spiral is making, while the motor has power
        for motor, mode in (modes or {}).items():
            self.set_mode(motor, mode)
        self.door_open = door_open
        self.runs: Counter = Counter()  # motor -> turns it really started
        self.sent: Counter = Counter()  # command -> frames sent
        self.report_sends: Counter = Counter()  # (command, boot id, report seq) -> times sent
        self.requests: list[tuple[int, int]] = []  # (frame id, command) of every request heard, resends too
        self.cache_hits = 0
        self.boots = 0
        self.frames = FrameReader()
        self.boot_id = 0
        self.running: int | None = None
        self._timers: list = []  # heap of [when, n, fn, alive]
        self._timer_n = itertools.count()
        self._turn_timers: list = []
        self._turn = 0
        self._turn_started = 0.0
        self._cache: OrderedDict = OrderedDict()  # frame id -> ((command, payload), (reply command, payload))
        self._reports: deque = deque()  # (seq, command, fields after age, event time)
        self._seq = 0
        self._report_sent_at: float | None = None
        self._corrupt = 0
        self._ignore = 0
        self._lose_acks = 0
        self._reset_in_turn = False
        self._garbage_every_s = 0.0
        self._closed = False
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing, before any driver opens the other end
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        with self._lock:
            self._boot(CAUSE_POWER_ON, NO_MOTOR, time.monotonic())
        self._thread = threading.Thread(target=self._loop, name="board-sim", daemon=True)
        self._thread.start()

    def __enter__(self) -> BoardSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the board and close the pty; a driver still on it then sees its port go away."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    # Faults and events on demand, from a test or from the command line.

    def set_mode(self, motor: int, mode: str) -> None:
        """How ``motor``'s slot behaves from its next turn: ok, jam, empty or double."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}; expected one of {', '.join(MODES)}")
        if not 0 <= motor < self.motors:
            raise ValueError(f"motor {motor}; the board has motors 0-{self.motors - 1}")
        with self._lock:
            self._slots[motor].fault = None if mode == "ok" else mode

    @property
    def modes(self) -> dict[int, str]:
        """Each motor's mode: ok, jam, empty or double."""
        with self._lock:
            return {motor: slot.fault or "ok" for motor, slot in self._slots.items()}

    def garbage(self, data: bytes = GARBAGE) -> None:
        """Write bytes that are no frame, between two frames."""
        with self._lock:
            self._write(data)

    def corrupt_next(self, n: int = 1) -> None:
        """Damage the CRC of the next ``n`` frames the board sends."""
        self._arm("_corrupt", n)

    def ignore_requests(self, n: int) -> None:
        """Leave the next ``n`` requests unanswered, resends included, as if each reply were lost on the wire.

        The board still carries each one out (a RUN does start its motor): the case in which a resend could
        run a motor twice.
        """
        self._arm("_ignore", n)

    def lose_report_acks(self, n: int) -> None:
        """Lose the next ``n`` REPORT_ACKs from the host, so the board resends reports the host already has."""
        self._arm("_lose_acks", n)

    def reset_in_next_turn(self) -> None:
        """Restart the board half way to the drop of its next turn."""
        self._arm("_reset_in_turn", True)

    def garbage_every(self, seconds: float) -> None:
        """Write garbage between frames every ``seconds`` (0: never)."""
        with self._lock:
            self._garbage_every_s = seconds
            if seconds:
                self._at(time.monotonic() + seconds, self._periodic_garbage)
        self._wake()

    def reset(self, cause: int = CAUSE_WATCHDOG) -> None:
        """Restart now: motors stop, the report queue and sequence start over, the duplicate cache stays."""
        with self._lock:
            self._reset(cause, time.monotonic())
        self._wake()

    def set_door(self, is_open: bool) -> None:
        """Open or close the service door."""
        with self._lock:
            self.door_open = is_open
            self._report(DOOR, (int(is_open),), time.monotonic())
        self._wake()

    def heard(self, cmd: int) -> list[int]:
        """The frame ids of every ``cmd`` request the board heard, resends included."""
        with self._lock:
            return [frame_id for frame_id, c in self.requests if c == cmd]

    def _arm(self, name: str, value) -> None:
        with self._lock:
            setattr(self, name, value)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # The board's own loop: bytes in, timers due, reports out.

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                timeout = self._tick(time.monotonic())
            ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 512)
            data = b""
            if self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    log.warning("board sim: cannot read the pty: %s", e)
                    time.sleep(IDLE_TICK_S)
            with self._lock:
                now = time.monotonic()
                for frame in self.frames.feed(data, now):
                    self._on_frame(frame, now)

    def _tick(self, now: float) -> float:
        """Run what is due; return how long the loop may sleep."""
        while self._timers and self._timers[0][0] <= now:
            _, _, fn, alive = heapq.heappop(self._timers)
            if alive:
                fn(now)
        self._send_report(now)
        self.frames.feed(b"", now)  # lets a stalled partial frame expire
        wait = IDLE_TICK_S
        if self._timers:
            wait = min(wait, self._timers[0][0] - now)
        if self._reports and self._report_sent_at is not None:
            wait = min(wait, self._report_sent_at + self.report_resend_s - now)
        return max(0.0, wait)

    def _at(self, when: float, fn) -> list:
        entry = [when, next(self._timer_n), fn, True]
        heapq.heappush(self._timers, entry)
        return entry

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except BlockingIOError:
            # Nobody reads the other end and its buffer is full: a real UART's bytes would be lost too.
            log.debug("board sim: pty full, %d bytes lost", len(data))

    def _send(self, frame_id: int, cmd: int, payload: bytes) -> None:
        data = bytearray(encode(frame_id, cmd, payload))
        if self._corrupt:
            self._corrupt -= 1
            data[-1] ^= 0xFF
        self.sent[cmd] += 1
        self._write(bytes(data))

    def _on_frame(self, frame: Frame, now: float) -> None:
        if frame.cmd == REPORT_ACK:
            if self._lose_acks:
                self._lose_acks -= 1
            elif self._reports and self._reports[0][0] == frame.id:
                self._reports.popleft()
                self._report_sent_at = None
                self._send_report(now)
            return
        self.requests.append((frame.id, frame.cmd))
        remembered = self._cache.get(frame.id)
        if remembered is not None and remembered[0] == (frame.cmd, frame.payload):
            self.cache_hits += 1
            reply = remembered[1]
        else:
            reply = self._execute(frame, now)
            if frame.cmd not in (STATUS, RESET):  # those two are safe to carry out again
                self._cache[frame.id] = ((frame.cmd, frame.payload), reply)
                self._cache.move_to_end(frame.id)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        if self._ignore:
            self._ignore -= 1
            return
        self._send(frame.id, *reply)

    def _execute(self, frame: Frame, now: float) -> tuple[int, bytes]:
        cmd = frame.cmd
        if cmd not in REQUEST_BODY:
            return NAK, nak(cmd, UNKNOWN_COMMAND, self.boot_id)
        try:
            fields = unpack(REQUEST_BODY[cmd], frame.payload)
        except ProtocolError:
            return NAK, nak(cmd, BAD_LENGTH, self.boot_id)
        if cmd == STATUS:
            inputs = INPUT_DOOR_OPEN if self.door_open else 0
            uptime = int((now - self._started) * 1000) & 0xFFFFFFFF
            running = NO_MOTOR if self.running is None else self.running
            return ACK, ack(STATUS, PROTOCOL_VERSION, self.motors, self.boot_id, uptime, inputs, running,
                            min(0xFFFF, int(self.turn_limit_s * 1000)), min(0xFFFF, self.frames.bad_frames))
        if cmd == RUN:
            motor, boot_id = fields
            if boot_id != self.boot_id:
                return NAK, nak(cmd, BOOT_CHANGED, self.boot_id)
            if motor >= self.motors:
                return NAK, nak(cmd, BAD_MOTOR, self.boot_id)
            if self.running is not None:
                return NAK, nak(cmd, BUSY, self.boot_id)
            self._start_turn(motor, now)
            return ACK, ack(RUN, self._turn, self.boot_id)
        if cmd == STOP:
            (motor,) = fields
            if motor != NO_MOTOR and motor >= self.motors:
                return NAK, nak(cmd, BAD_MOTOR, self.boot_id)
            if self.running is not None and motor in (NO_MOTOR, self.running):
                self._end_turn(END_STOPPED, now)
            return ACK, ack(STOP)
        # RESET: idle, without restarting; nothing of the host's previous session survives it.
        self._cut_turn(now)
        self._reports.clear()
        self._report_sent_at = None
        self._cache.clear()
        return ACK, ack(RESET)

    def _start_turn(self, motor: int, now: float) -> None:
        self.runs[motor] += 1
        self.running = motor
        self._turn = (self._turn + 1) & 0xFFFF
        self._turn_started = now
        self._physics = turn = self._slots[motor].turn(now, self.turn_s)
        for drop in turn.drops:
            self._turn_timers.append(self._at(drop, self._drop))
        # A jammed spiral never brings the cam round; a turn longer than the limit also ends on the limit.
        if turn.home is None or self.turn_s >= self.turn_limit_s:
            self._turn_timers.append(self._at(now + self.turn_limit_s, lambda t: self._end_turn(END_TIME_LIMIT, t)))
        else:
            self._turn_timers.append(self._at(turn.home, lambda t: self._end_turn(END_CAM, t)))
        if self._reset_in_turn:
            self._reset_in_turn = False
            self._turn_timers.append(self._at(now + self.drop_delay_s / 2,
                                              lambda t: self._reset(CAUSE_WATCHDOG, t)))

    def _drop(self, now: float) -> None:
        self._report(DROP, (NO_MOTOR if self.running is None else self.running,), now)

    def _end_turn(self, end: int, now: float) -> None:
        motor = self.running
        if motor is None:
            return
        self._cut_turn(now)
        duration = min(0xFFFF, int((now - self._turn_started) * 1000))
        self._report(TURN, (motor, end, self._turn, duration), now)

    def _cut_turn(self, now: float) -> None:
        """Motor off; a product not yet pushed over the edge stays on the spiral (``hw/physics.py``)."""
        self.running = None
        for entry in self._turn_timers:
            entry[3] = False
        self._turn_timers.clear()
        if self._physics is not None:
            for drop in self._physics.drops_after_cut(now):
                self._at(drop, self._drop)
            self._physics = None

    def _reset(self, cause: int, now: float) -> None:
        was = NO_MOTOR if self.running is None else self.running
        self._cut_turn(now)
        self.frames.clear()
        # The duplicate cache and the number of the motor that was turning live in RAM that start-up does
        # not clear (hw/SERIAL_PROTOCOL.md); everything else starts over.
        self._boot(cause, was, now)

    def _boot(self, cause: int, motor_at_reset: int, now: float) -> None:
        self.boots += 1
        previous = self.boot_id
        while self.boot_id in (0, previous):
            self.boot_id = random.randrange(1, 0x10000)
        self._started = now
        self._turn = 0
        self._reports.clear()
        self._report_sent_at = None
        self._seq = 0
        self._report(BOOT, (self.boot_id, cause, motor_at_reset), now)

    def _report(self, cmd: int, fields: tuple, now: float) -> None:
        if len(self._reports) >= REPORT_QUEUE_SIZE:
            log.warning("board sim: report queue full; the oldest report is lost")
            self._reports.popleft()
            self._report_sent_at = None
        self._reports.append((self._seq, cmd, fields, now))
        self._seq = (self._seq + 1) & 0xFF
        self._send_report(now)

    def _send_report(self, now: float) -> None:
        if not self._reports:
            return
        if self._report_sent_at is not None and now - self._report_sent_at < self.report_resend_s:
            return
        seq, cmd, fields, t = self._reports[0]
        self.report_sends[(cmd, self.boot_id, seq)] += 1
        self._send(seq, cmd, pack(REPORT_BODY[cmd], age_ms(now - t), *fields))
        self._report_sent_at = now

    def _periodic_garbage(self, now: float) -> None:
        if self._garbage_every_s:
            self._write(GARBAGE)
            self._at(now + self._garbage_every_s, self._periodic_garbage)

    def summary(self) -> str:
        """One line for a person: boot, what ran, what was resent or discarded."""
        with self._lock:
            runs = ", ".join(f"motor {m}: {n}" for m, n in sorted(self.runs.items())) or "none"
            return (f"boot id {self.boot_id} (boot {self.boots}); turns started: {runs}; requests heard "
                    f"{len(self.requests)}, answered from the cache {self.cache_hits}; bad frames "
                    f"{self.frames.bad_frames}")


COMMANDS = """commands: garbage | corrupt [N] | ignore N | lose-acks N | reset | reset-in-turn |
          door open|closed | ok|jam|empty|double MOTOR | stats | quit"""


def _command(board: BoardSim, line: str) -> bool:
    """Carry out one stdin command; False to quit."""
    words = line.split()
    if not words:
        return True
    verb, args = words[0], words[1:]
    try:
        if verb == "quit":
            return False
        if verb == "garbage":
            board.garbage()
        elif verb == "corrupt":
            board.corrupt_next(int(args[0]) if args else 1)
        elif verb == "ignore":
            board.ignore_requests(int(args[0]))
        elif verb == "lose-acks":
            board.lose_report_acks(int(args[0]))
        elif verb == "reset":
            board.reset()
        elif verb == "reset-in-turn":
            board.reset_in_next_turn()
        elif verb == "door" and args and args[0] in ("open", "closed"):
            board.set_door(args[0] == "open")
        elif verb in MODES and args:
            board.set_mode(int(args[0]), verb)
        elif verb == "stats":
            print(board.summary(), flush=True)
        else:
            print(COMMANDS, flush=True)
    except (IndexError, ValueError) as e:
        print(f"{line.strip()}: {e}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run a simulated board until quit, EOF with --stdin-commands, or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m hw.board_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--motors", type=int, default=6)
    for mode in ("jam", "empty", "double"):
        parser.add_argument(f"--{mode}", type=int, action="append", default=[], metavar="MOTOR",
                            help=f"this motor's slot is {mode} (repeatable)")
    parser.add_argument("--drop-delay", type=float, default=0.3, help="seconds from RUN to the drop")
    parser.add_argument("--turn-limit", type=float, default=4.0, help="the board's turn time limit, seconds")
    parser.add_argument("--ignore", type=int, default=0, help="leave the first N requests unanswered")
    parser.add_argument("--corrupt", type=int, default=0, help="damage the CRC of the first N frames sent")
    parser.add_argument("--garbage-every", type=float, default=0.0, help="write garbage every S seconds")
    parser.add_argument("--reset-in-turn", action="store_true", help="restart in the middle of the first turn")
    parser.add_argument("--door-open", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    modes = {motor: mode for mode in ("jam", "empty", "double") for motor in getattr(args, mode)}
    try:
        board = BoardSim(args.motors, drop_delay_s=args.drop_delay, turn_limit_s=args.turn_limit, modes=modes,
                         door_open=args.door_open)
    except ValueError as e:
        parser.error(str(e))
    with board:
        board.ignore_requests(args.ignore)
        board.corrupt_next(args.corrupt)
        board.garbage_every(args.garbage_every)
        if args.reset_in_turn:
            board.reset_in_next_turn()
        print(f"motor board simulator on {board.port}\n[serial] port = {board.port}\n{COMMANDS}", flush=True)
        try:
            for line in sys.stdin:
                if not _command(board, line):
                    break
            else:
                threading.Event().wait()  # stdin closed (run in the background): serve until killed
        except KeyboardInterrupt:
            pass
        print(board.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
