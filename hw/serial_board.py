"""The serial backend: slot motors, drop sensor and door on a motor board that speaks hw/SERIAL_PROTOCOL.md.

One ``SerialBoard`` owns the port. A reader thread parses frames, matches replies to the one request in
flight, acknowledges reports and drops their duplicates; a second thread hands reports to the listeners, so
a slow listener never delays an acknowledgement. Callers (the controller's main loop, a signal handler)
send requests one at a time.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

import serial

from protocol.messages import SLOT_RE

from .base import BootSettings, Device, Door, DropSensor, Faults, Hardware, HardwareError, Motor
from .board_protocol import (ACK, ACK_BODY, BOOT, BOOT_CHANGED, CAUSES, DOOR, DROP, END_STOPPED, END_TIME_LIMIT,
                             ENDS, INPUT_BEAM_BLOCKED, INPUT_DOOR_OPEN, NAK, NAK_BODY, NAMES, NO_MOTOR, PROTOCOL_VERSION, REASONS,
                             REPORT_ACK, REPORT_BODY, REPORTS, REQUEST_BODY, RESET, RUN, STATUS, STOP, TURN,
                             Frame, FrameReader, ProtocolError, Status, encode, pack, unpack)
from .settings import ConfigError, Settings, key

log = logging.getLogger(__name__)

DEVICE = "motor board"
READ_TICK_S = 0.02  # the reader wakes this often with no bytes, to notice a stalled frame and a close
BAD_FRAME_FAULT_EVERY_S = 60.0  # a noisy cable would otherwise fill the ledger with one fault per frame
WRITE_TIMEOUT_S = 1.0


@dataclass(kw_only=True, eq=False)
class SerialSettings(Settings, section="serial"):
    """[serial]: the motor board's port and line, and which board motor turns which slot."""

    port: str = key("str", "/dev/ttyAMA0")  # or a pyserial URL (loop://, rfc2217://)
    baud: int = key("int", 115200, 1200, 3000000)
    timeout_ms: int = key("int", 200, 10, 5000)
    retries: int = key("int", 3, 0, 10)
    motors: dict[str, int] = key("map", {}, 0, 255, pattern=SLOT_RE,
                                 what="slot:board motor number pairs like A1:0 A2:1 (default: slots in order)")


SETTINGS = (SerialSettings,)
# The Pi's header UART (TXD GPIO 14, RXD GPIO 15) under its names; a USB adapter takes no header pin.
HEADER_UARTS = ("/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0")


def reserved_pins(cfg) -> dict[int, str]:
    """The header pins the motor board's line takes when it is on the Pi's own UART, and why."""
    port = cfg.section(SerialSettings).port
    if port not in HEADER_UARTS:
        return {}
    return {14: f"the UART's TXD ([serial] port {port})", 15: f"the UART's RXD ([serial] port {port})"}


# The header UART (GPIO 14/15) is the Bluetooth chip's on a Pi Zero W, Zero 2 W, 3 and 4 until disable-bt gives it
# back; on a Pi 5 it is uart0, off until dtparam=uart0=on (its serial0 is the separate debug connector).
UART_CONFIG = ("enable_uart=1", "[pi0w]", "dtoverlay=disable-bt", "[pi02]", "dtoverlay=disable-bt",
               "[pi3]", "dtoverlay=disable-bt", "[pi4]", "dtoverlay=disable-bt", "[pi5]", "dtparam=uart0=on",
               "[all]")


def boot_settings(cfg) -> BootSettings:
    """The header UART on and free: no login console on it, Bluetooth off it, when the board is wired there."""
    if cfg.section(SerialSettings).port not in HEADER_UARTS:
        return BootSettings()
    return BootSettings(config_txt=UART_CONFIG, consoles_off=("serial0", "ttyAMA0", "ttyS0", "ttyAMA10"),
                        units_off=("hciuart.service",))


def check_config(cfg, path: str) -> None:
    """The motor map, when one is given: every slot once, no board motor twice."""
    motors = cfg.section(SerialSettings).motors
    unmapped = set(motors) ^ set(cfg.hardware.slots)
    if motors and unmapped:
        raise ConfigError(f"{path}: [serial] motors must map exactly the slots in [hardware] slots; "
                          f"differs on {', '.join(sorted(unmapped))}")
    if len(set(motors.values())) != len(motors):
        raise ConfigError(f"{path}: [serial] motors: a board motor number is used for two slots")


class NoAnswer(HardwareError):
    """A request that got no reply after every retry."""


def open_port(port: str, baud: int) -> serial.SerialBase:
    """Open a device path exclusively, or a pyserial URL (loop://, rfc2217://); HardwareError says what to check."""
    # flock-based exclusivity only means something for a device node; URL handlers have no node to lock.
    options = {} if "://" in port else {"exclusive": True}
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=READ_TICK_S, write_timeout=WRITE_TIMEOUT_S,
                                     **options)
    except serial.SerialException as e:
        if e.errno == errno.ENOENT:
            raise HardwareError(f"serial port {port} does not exist: check [serial] port; is the UART enabled? "
                                "(on a Raspberry Pi: raspi-config, serial port on, serial console off)") from None
        if e.errno == errno.EACCES:
            raise HardwareError(f"no permission to open serial port {port}: add the user the controller runs "
                                "as to the dialout group") from None
        if e.errno in (errno.EAGAIN, errno.EBUSY):
            raise HardwareError(f"serial port {port} is in use by another process; is vend-controller already "
                                "running?") from None
        raise HardwareError(f"cannot open serial port {port}: {e}; check [serial] port") from None
    except ValueError as e:  # an unknown URL scheme or a baud the port refuses
        raise HardwareError(f"cannot open serial port {port}: {e}; check [serial] port and baud") from None


class BoardDropSensor(DropSensor):
    """The drop sensor the board watches: each DROP report is a ``drop_seen``, on the board's delivery thread."""


class BoardDoor(Door):
    """The door switch the board watches; its state comes from STATUS, then from DOOR reports."""

    def __init__(self):
        self._open = False

    def seen(self, is_open: bool) -> None:
        """The state read with STATUS at open: not a change, so no listener hears of it."""
        self._open = is_open

    def changed(self, is_open: bool, t: float) -> None:
        """The door opened or closed at monotonic time ``t``; called on the board's delivery thread."""
        self._open = is_open
        super().changed(is_open, t)

    @property
    def is_open(self) -> bool:
        return self._open


class BoardMotor(Motor):
    """One slot's motor: a board motor number behind the board's RUN and STOP."""

    def __init__(self, slot: str, board: SerialBoard, number: int):
        super().__init__(slot)
        self.board = board
        self.number = number

    def run(self) -> None:
        self.board.run_motor(self.number)

    def stop(self) -> None:
        self.board.stop_motor(self.number)

    @property
    def is_running(self) -> bool:
        return self.board.is_running(self.number)

    def close(self) -> None:
        if self.is_running:
            self.stop()


class SerialBoard(Device):
    """One motor board on one port: handshake at open, one request at a time, every report delivered once."""

    def __init__(self, port: str, *, baud: int = 115200, timeout_s: float = 0.2, retries: int = 3,
                 faults: Faults | None = None, names: dict[int, str] | None = None):
        self.port = port
        self.baud = baud
        self.timeout_s = timeout_s
        self.retries = retries
        self.faults = faults or Faults()
        self.names = names or {}
        self.drop_sensor = BoardDropSensor()
        self.door = BoardDoor()
        self.status: Status | None = None
        self.boot_id: int | None = None
        self.stats: Counter = Counter()  # resends, duplicate reports, ...
        self.frames = FrameReader()
        self._lock = threading.Lock()  # the state below, shared by the reader and the callers
        self._replied = threading.Condition(self._lock)
        self._request_lock = threading.Lock()  # the protocol allows one request in flight
        self._write_lock = threading.Lock()
        self._next_id = 0
        self._pending: tuple[int, int, bytes] | None = None  # frame id, command, payload
        self._reply: Frame | None = None
        self._running: dict[int, int] = {}  # motor -> turn number the board is turning it for
        self._done: dict[int, int] = {}  # motor -> its last finished turn number, this boot
        self._session = False  # set when the board answers RESET; earlier reports are a past session's
        self._last_report: int | None = None
        self._unanswered = False
        self._closed = False
        self._closing = threading.Event()
        self._bad_reported = 0
        self._bad_reported_at: float | None = None
        self._events: queue.Queue = queue.Queue()
        self._serial = open_port(port, baud)
        self._reader = threading.Thread(target=self._read_loop, name=f"board-reader {port}", daemon=True)
        self._delivery = threading.Thread(target=self._deliver_loop, name=f"board-events {port}", daemon=True)
        self._reader.start()
        self._delivery.start()
        try:
            self._handshake(max(self.names, default=-1) + 1)
        except BaseException:
            self.close()
            raise

    def name(self, motor: int) -> str:
        """A motor as a person looks for it: its number on the board and its slot."""
        slot = self.names.get(motor)
        return f"motor {motor} (slot {slot})" if slot else f"motor {motor}"

    def _handshake(self, motors_needed: int) -> None:
        status = self._read_status()
        if status.version != PROTOCOL_VERSION:
            raise HardwareError(f"{self.port}: the motor board speaks protocol version {status.version}, this "
                                f"driver speaks {PROTOCOL_VERSION}; update one of them")
        if motors_needed > status.motors:
            raise HardwareError(f"{self.port}: the motor board has {status.motors} motors, but the slots need "
                                f"board motor numbers up to {motors_needed - 1}; check [serial] motors")
        with self._lock:
            self.boot_id = status.boot_id
        reply = self.request(RESET)
        if reply.cmd != ACK:
            raise HardwareError(f"{self.port}: the motor board refused RESET ({self._nak_text(reply)})")
        # Read the inputs again inside the session: a door that moved before RESET was answered was
        # reported to the session that RESET ended; from here on every change arrives as a DOOR report.
        self.status = status = self._read_status()
        self.door.seen(bool(status.inputs & INPUT_DOOR_OPEN))
        log.info("motor board on %s: %d motors, boot id %d, up %d s, turn limit %d ms", self.port, status.motors,
                 status.boot_id, status.uptime_ms // 1000, status.turn_limit_ms)

    def read_status(self) -> Status:
        """Ask the board how it is: inputs, running motor, uptime, damaged frames seen."""
        return self._read_status()

    def _read_status(self) -> Status:
        try:
            reply = self.request(STATUS)
        except NoAnswer:
            raise HardwareError(
                f"{self.port}: the motor board did not answer STATUS ({self.retries + 1} tries, "
                f"{self.timeout_s * 1000:.0f} ms each); check TX/RX wiring (the Pi's TX to the board's RX), the "
                f"baud ([serial] baud = {self.baud}) and the board's power") from None
        if reply.cmd != ACK:
            raise HardwareError(f"{self.port}: the motor board refused STATUS ({self._nak_text(reply)}); "
                                "is this a motor board that speaks hw/SERIAL_PROTOCOL.md?")
        try:
            return Status(*unpack(ACK_BODY[STATUS], reply.payload[1:]))
        except ProtocolError as e:
            raise HardwareError(f"{self.port}: the motor board's STATUS makes no sense ({e}); "
                                f"this driver speaks protocol version {PROTOCOL_VERSION}") from None

    def request(self, cmd: int, fields: tuple = (), *, retries: int | None = None,
                wait_s: float | None = None) -> Frame:
        """Send a request and return its ACK or NAK, resending it unchanged (same frame id) while none comes.

        Raises NoAnswer after ``retries`` resends, HardwareError when the port fails or is closed, or when
        another request holds the line for longer than ``wait_s``.
        """
        payload = pack(REQUEST_BODY[cmd], *fields)
        tries = 1 + (self.retries if retries is None else retries)
        if not self._request_lock.acquire(timeout=-1 if wait_s is None else wait_s):
            raise HardwareError(f"{self.port}: another request to the motor board is still waiting for its reply")
        try:
            with self._lock:
                if self._closed:
                    raise HardwareError(f"{self.port}: the motor board's port is closed")
                frame_id = self._next_id
                self._next_id = (frame_id + 1) & 0xFF
                self._pending = (frame_id, cmd, payload)
                self._reply = None
            data = encode(frame_id, cmd, payload)
            for attempt in range(tries):
                if attempt:
                    self.stats["resends"] += 1
                    log.warning("no reply to %s#%d from the motor board in %.0f ms; sending it again (%d of %d)",
                                NAMES[cmd], frame_id, self.timeout_s * 1000, attempt, tries - 1)
                self._write(data)
                with self._lock:
                    if self._replied.wait_for(lambda: self._reply is not None or self._closed, self.timeout_s):
                        if self._reply is None:
                            raise HardwareError(f"{self.port}: the motor board's port was closed")
                        self._unanswered = False
                        return self._reply
            self._unanswered = True
            raise NoAnswer(f"{self.port}: no reply to {NAMES[cmd]} from the motor board after {tries} tries")
        finally:
            with self._lock:
                self._pending = None
            self._request_lock.release()

    def run_motor(self, motor: int) -> None:
        """Start one turn; returns once the board says it started, or raises HardwareError saying why not."""
        with self._lock:
            boot_id = self.boot_id
        try:
            reply = self.request(RUN, (motor, boot_id))
        except NoAnswer:
            what = (f"no answer to RUN {self.name(motor)} after {self.retries + 1} tries; check the cable and "
                    "the board's power")
            self.faults.report(DEVICE, what, code="board.no_answer")
            raise HardwareError(f"{self.port}: {what}") from None
        if reply.cmd == NAK:
            reason = self._nak_reason(reply)
            if reason == BOOT_CHANGED:
                raise HardwareError(f"{self.port}: the motor board restarted; {self.name(motor)} was not run")
            raise HardwareError(f"{self.port}: the motor board refused to run {self.name(motor)}: "
                                f"{self._nak_text(reply)}")
        log.debug("board %s turning", self.name(motor))

    def stop_motor(self, motor: int) -> None:
        """Power off one motor (NO_MOTOR: all). Never raises: safe in any ``finally``, from any thread."""
        retries = None
        try:
            if self._closed:
                log.debug("board closed; %s is off with it", self.name(motor))
                return
            # A board that just failed to answer gets one try, so stopping every motor of a dead board
            # takes one timeout per motor instead of (retries + 1).
            retries = 0 if self._unanswered else None
            # Bounded, so a stop from a signal handler that interrupted a request cannot wait forever.
            wait_s = 2 * (self.retries + 1) * self.timeout_s + 1.0
            reply = self.request(STOP, (motor,), retries=retries, wait_s=wait_s)
            if reply.cmd != ACK:
                log.error("the motor board refused to stop %s: %s", self.name(motor), self._nak_text(reply))
                return
            with self._lock:
                if motor == NO_MOTOR:
                    self._running.clear()
                else:
                    self._running.pop(motor, None)
        except NoAnswer:
            what = f"no answer to STOP {self.name(motor)}; the board ends any turn on its own time limit"
            # One fault when the board falls silent, not one per motor that all_motors_off then tries.
            if retries is None:
                try:
                    self.faults.report(DEVICE, what, code="board.no_answer")
                except Exception:
                    log.exception("fault listener failed on: %s", what)
            else:
                log.error("%s", what)
        except Exception:
            log.exception("could not stop %s", self.name(motor))

    def is_running(self, motor: int) -> bool:
        """Whether the board said it started a turn of ``motor`` that it has not yet said ended."""
        with self._lock:
            return motor in self._running

    def close(self) -> None:
        """Stop the threads and close the port; the board ends any turn on its own."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._replied.notify_all()
        self._closing.set()
        try:
            self._serial.cancel_read()
        except Exception:
            log.debug("cancel_read not supported by %s", self.port)
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=2.0)
        self._events.put(None)
        if threading.current_thread() is not self._delivery:
            self._delivery.join(timeout=2.0)
        try:
            self._serial.close()
        except Exception:
            log.exception("could not close serial port %s", self.port)

    def _write(self, data: bytes) -> None:
        try:
            with self._write_lock:
                self._serial.write(data)
        except (serial.SerialException, OSError) as e:
            raise HardwareError(f"{self.port}: cannot write to the motor board: {e}; is it still connected?") from None

    def _nak_reason(self, reply: Frame) -> int | None:
        try:
            return unpack(NAK_BODY, reply.payload)[1]
        except ProtocolError:
            return None

    def _nak_text(self, reply: Frame) -> str:
        reason = self._nak_reason(reply)
        return REASONS.get(reason, f"reason {reason}")

    def _read_loop(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._serial.read(max(1, self._serial.in_waiting))
            except Exception as e:
                if not self._closing.is_set():
                    self._deliver_fault(f"lost the serial port {self.port}: {e}; is the board still connected?",
                                        "board.port_lost")
                return
            now = time.monotonic()
            for frame in self.frames.feed(data, now):
                try:
                    self._on_frame(frame, now)
                except Exception:
                    log.exception("could not handle %s from the motor board", frame)
            self._check_bad_frames(now)

    def _on_frame(self, frame: Frame, now: float) -> None:
        if frame.cmd in (ACK, NAK):
            self._on_reply(frame)
        elif frame.cmd in REPORTS:
            self._on_report(frame, now)
        else:
            log.warning("ignored %s from the motor board: neither a reply nor a report", frame)

    def _on_reply(self, frame: Frame) -> None:
        with self._lock:
            pending = self._pending
            if pending is None or frame.id != pending[0] or frame.payload[:1] != bytes((pending[1],)):
                # The cached answer to a resend whose first answer already arrived, or a reply for a
                # request this host gave up on.
                log.debug("late or stray reply %s", frame)
                return
            _, cmd, payload = pending
            if frame.cmd == ACK and cmd == RUN:
                try:
                    turn, boot_id = unpack(ACK_BODY[RUN], frame.payload[1:])
                except ProtocolError as e:
                    log.warning("ignored %s from the motor board: %s", frame, e)
                    return
                motor = payload[0]
                # A resend's cached answer can come after the turn's TURN report, or after a restart.
                if boot_id == self.boot_id and self._done.get(motor) != turn:
                    self._running[motor] = turn
            elif frame.cmd == ACK and cmd == RESET:
                self._session = True
                self._last_report = None
                self._running.clear()
                self._done.clear()
            self._reply = frame
            self._replied.notify_all()

    def _on_report(self, frame: Frame, now: float) -> None:
        # Every copy is acknowledged: the board resends until one acknowledgement gets through.
        try:
            self._write(encode(frame.id, REPORT_ACK))
        except HardwareError as e:
            log.warning("%s", e)
        try:
            fields = unpack(REPORT_BODY[frame.cmd], frame.payload)
        except ProtocolError as e:
            log.warning("ignored %s from the motor board: %s", frame, e)
            return
        t = now - fields[0] / 1000.0
        if frame.cmd == BOOT:
            self._on_boot(frame.id, *fields[1:])
            return
        with self._lock:
            if not self._session:
                log.info("ignored %s from before this session", frame)
                return
            if frame.id == self._last_report:
                self.stats["duplicate reports"] += 1
                return
            self._last_report = frame.id
        if frame.cmd == DROP:
            self._deliver(lambda: self.drop_sensor.drop_seen(t))
        elif frame.cmd == TURN:
            self._on_turn(*fields[1:])
        elif frame.cmd == DOOR:
            is_open = bool(fields[1])
            self._deliver(lambda: self.door.changed(is_open, t))

    def _on_boot(self, seq: int, boot_id: int, cause: int, motor_at_reset: int) -> None:
        with self._lock:
            if boot_id == self.boot_id:
                self.stats["duplicate reports"] += 1
                return
            self.boot_id = boot_id
            self._last_report = seq
            cut = set(self._running)
            self._running.clear()
            self._done.clear()
            session = self._session
        if not session:
            log.info("motor board started (boot id %d) before this session", boot_id)
            return
        if motor_at_reset != NO_MOTOR:
            cut.add(motor_at_reset)
        what = f"the board restarted ({CAUSES.get(cause, 'unknown cause')}, boot id {boot_id})"
        if cut:
            what += (f" in the middle of a turn of {', '.join(self.name(m) for m in sorted(cut))}; the motor is "
                     "stopped and the product may or may not have fallen")
        self._deliver_fault(what, "board.reset")

    def _on_turn(self, motor: int, end: int, turn: int, duration_ms: int) -> None:
        with self._lock:
            self._running.pop(motor, None)
            self._done[motor] = turn
        if end == END_TIME_LIMIT:
            self._deliver_fault(f"{self.name(motor)} did not finish its turn: the board stopped it on its time "
                                f"limit after {duration_ms} ms; the spiral may be jammed", "motor.time_limit")
        elif end != END_STOPPED:
            log.debug("board %s turned in %d ms (ended on the %s)", self.name(motor), duration_ms,
                      ENDS.get(end, end))

    def _check_bad_frames(self, now: float) -> None:
        bad = self.frames.bad_frames
        if bad <= self._bad_reported:
            return
        if self._bad_reported_at is not None and now - self._bad_reported_at < BAD_FRAME_FAULT_EVERY_S:
            return
        self._bad_reported, self._bad_reported_at = bad, now
        f = self.frames
        self._deliver_fault(f"discarded {bad} damaged frames from the board so far ({f.bad_crc} bad CRC, "
                            f"{f.bad_length} impossible length, {f.stalled} cut short); check the cable, its "
                            "ground and [serial] baud", "board.bad_frames")

    def _deliver(self, fn) -> None:
        self._events.put(fn)

    def _deliver_fault(self, what: str, code: str) -> None:
        self._events.put(lambda: self.faults.report(DEVICE, what, code=code))

    def _deliver_loop(self) -> None:
        while True:
            fn = self._events.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:
                log.exception("a motor board listener failed")


def open_backend(cfg) -> Hardware:
    """The motors of ``[hardware] slots`` on the board at ``[serial] port``, with its drop sensor and door."""
    settings, slots = cfg.section(SerialSettings), cfg.hardware.slots
    numbers = settings.motors or {slot: i for i, slot in enumerate(slots)}
    faults = Faults()
    board = SerialBoard(settings.port, baud=settings.baud, timeout_s=settings.timeout_ms / 1000,
                        retries=settings.retries, faults=faults,
                        names={number: slot for slot, number in numbers.items()})
    motors = {slot: BoardMotor(slot, board, numbers[slot]) for slot in slots}
    hardware = BoardHardware(motors, board.drop_sensor, board.door, None, faults=faults, closers=(board,))
    hardware.board = board
    status = board.status
    hardware.wiring = [(f"motor {slot}", f"board motor {numbers[slot]}") for slot in slots] + [
        ("motor board", f"{board.port} at {board.baud} baud; protocol v{status.version}, {status.motors} motors, "
                        f"turn limit {status.turn_limit_ms} ms, boot id {status.boot_id}")]
    return hardware


class BoardHardware(Hardware):
    """The board's devices, with its live inputs (a STATUS request) for the technician's tool."""

    board: SerialBoard

    def describe(self) -> str:
        return f" (port {self.board.port})"

    def inputs(self) -> dict[str, str]:
        status = self.board.read_status()
        return {"door": "open" if status.inputs & INPUT_DOOR_OPEN else "shut",
                "drop sensor": "beam broken" if status.inputs & INPUT_BEAM_BLOCKED else "clear",
                "motor running": self.board.names.get(status.running, "none") if status.running != NO_MOTOR
                else "none",
                "board": f"up {status.uptime_ms // 1000} s, {status.bad_frames} damaged frames seen"}
