"""The MDB backend: this Pi is the cashless device of an existing vending machine, through an MDB adapter
(Qibixx MDB Pi HAT or MDB-USB) on a serial port that speaks the text protocol of ``hw/mdb_protocol.py``.

The machine's own controller (the VMC) owns its motors and sensors. A paid QR order for slot S at price P
opens a cashless session with credit P (``Motor.vend``); the customer presses S's selection on the machine;
the VMC asks for the amount, and the driver approves it only for that selection at no more than P. The
VMC's ``c,VEND,SUCCESS`` is the drop (``DropSensor.drop_seen``: captured); a failure, a cancelled or timed-out
session, a VMC reset and a silent adapter end the vend at once (``DropSensor.none_dropped``: voided). One
``MdbAdapter`` owns the port: a reader thread feeds lines and the clock to the session's policy
(``Cashless``), and a second thread hands its outcomes to the listeners.
"""

from __future__ import annotations

import argparse
import errno
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass

import serial

from protocol.messages import SLOT_RE

from .base import Device, Door, DropSensor, Faults, Hardware, HardwareError, Motor
from .mdb_protocol import Cashless, Fault, LineReader, NotVended, Send, State, Vended
from .settings import ConfigError, Settings, key

log = logging.getLogger(__name__)

DEVICE = "MDB adapter"
READ_TICK_S = 0.05  # the reader wakes this often with no bytes, for the session's deadlines and a close
WRITE_TIMEOUT_S = 1.0
LOCK_WAIT_S = 1.0  # how long a stop waits for the adapter's lock (a signal handler must not wait for ever)
OUTCOME_MARGIN_S = 5.0  # the controller's own deadline comes this long after every deadline of the session's


@dataclass(kw_only=True, eq=False)
class MdbSettings(Settings, section="mdb"):
    """[mdb]: the MDB adapter's port, the machine's selection numbers, and how long a session may take."""

    port: str = key("str", "/dev/ttyACM0")  # the MDB-USB's port; the Pi HAT's is /dev/serial0
    baud: int = key("int", 115200, 1200, 3000000)
    line_end: str = key("choice", "lf", choices=("lf", "crlf"))  # what ends each command sent (docs/mdb.md)
    items: dict[str, int] = key("map", {}, 0, 65535, pattern=SLOT_RE,
                                what="slot:selection pairs like A1:11 A2:12 (default: slots in order from 1)")
    decimals: int = key("int", 2, 0, 3)  # places after the point in the machine's prices (3.50)
    answer_timeout_s: float = key("float", 2.0, 0.1, 30.0)
    session_timeout_s: float = key("float", 60.0, 1.0, 600.0)  # to press the selection after paying
    vend_timeout_s: float = key("float", 30.0, 1.0, 300.0)  # for the machine to report the outcome


SETTINGS = (MdbSettings,)
HEADER_UARTS = ("/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0")


def reserved_pins(cfg) -> dict[int, str]:
    """The header's UART pins when the adapter is a HAT on the Pi's own UART."""
    port = cfg.section(MdbSettings).port
    if port not in HEADER_UARTS:
        return {}
    return {14: f"the UART's TXD ([mdb] port {port})", 15: f"the UART's RXD ([mdb] port {port})"}


def safe_commands(cfg) -> list[tuple[str, list[str]]]:
    """After the daemon died without closing the port (SIGKILL, OOM, watchdog): end any session it left open
    and turn the cashless device off, so that the machine cannot vend on credit nobody is watching."""
    s = cfg.section(MdbSettings)
    return [("end any cashless session and turn the cashless device off",
             [sys.executable, "-m", "hw.mdb", "--off", s.port, "--baud", str(s.baud), "--line-end", s.line_end])]


def check_config(cfg, path: str) -> None:
    """The selection map, when one is given: every slot once, no selection twice."""
    items = cfg.section(MdbSettings).items
    unmapped = set(items) ^ set(cfg.hardware.slots)
    if items and unmapped:
        raise ConfigError(f"{path}: [mdb] items must map exactly the slots in [hardware] slots; "
                          f"differs on {', '.join(sorted(unmapped))}")
    if len(set(items.values())) != len(items):
        raise ConfigError(f"{path}: [mdb] items: a selection number is used for two slots")


def open_port(port: str, baud: int) -> serial.SerialBase:
    """Open the adapter's port; HardwareError says what to check."""
    options = {} if "://" in port else {"exclusive": True}
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=READ_TICK_S, write_timeout=WRITE_TIMEOUT_S,
                                     **options)
    except serial.SerialException as e:
        if e.errno == errno.ENOENT:
            raise HardwareError(f"MDB adapter port {port} does not exist: check [mdb] port (an MDB-USB is "
                                "usually /dev/ttyACM0, a Pi HAT /dev/serial0 with the UART enabled)") from None
        if e.errno == errno.EACCES:
            raise HardwareError(f"no permission to open the MDB adapter's port {port}: add the user the "
                                "controller runs as to the dialout group") from None
        if e.errno in (errno.EAGAIN, errno.EBUSY):
            raise HardwareError(f"the MDB adapter's port {port} is in use by another process; is vend-controller "
                                "already running?") from None
        raise HardwareError(f"cannot open the MDB adapter's port {port}: {e}; check [mdb] port") from None
    except ValueError as e:
        raise HardwareError(f"cannot open the MDB adapter's port {port}: {e}; check [mdb] port and baud") from None


class MdbDropSensor(DropSensor):
    """The VMC's word on each vend: ``c,VEND,SUCCESS`` is a drop, a failure is ``none_dropped``."""


class MachineDoor(Door):
    """The machine's own controller watches its door; a cashless device is not told, so it reads as shut."""

    @property
    def is_open(self) -> bool:
        return False


class MdbMotor(Motor):
    """One slot: a selection number on the machine, sold through a cashless session."""

    def __init__(self, slot: str, adapter: MdbAdapter, item: int):
        super().__init__(slot)
        self.adapter = adapter
        self.item = item

    def run(self) -> None:
        raise HardwareError(f"slot {self.slot} is selection {self.item} of the machine's own controller: it vends "
                            "only for a paid order, through a cashless session; try it with a purchase")

    def vend(self, price: int | None) -> None:
        self.adapter.start_session(self.slot, self.item, price)

    def stop(self) -> None:
        self.adapter.stop_session(self.slot)

    @property
    def is_running(self) -> bool:
        return self.adapter.session_slot() == self.slot


class MdbAdapter(Device):
    """One MDB adapter on one port in cashless-device mode: enabled at open, one session at a time."""

    def __init__(self, port: str, *, baud: int = 115200, decimals: int = 2, answer_timeout_s: float = 2.0,
                 session_timeout_s: float = 60.0, vend_timeout_s: float = 30.0, faults: Faults | None = None,
                 line_end: str = "lf"):
        self.port = port
        self.baud = baud
        self.eol = b"\r\n" if line_end == "crlf" else b"\n"
        self.faults = faults or Faults()
        self.drop_sensor = MdbDropSensor()
        self.door = MachineDoor()
        self.policy = Cashless(decimals=decimals, answer_timeout_s=answer_timeout_s,
                               session_timeout_s=session_timeout_s, vend_timeout_s=vend_timeout_s)
        self.lines = LineReader(decimals)
        self._lock = threading.Lock()  # the policy, shared by the reader and the callers
        self._heard = threading.Condition(self._lock)
        self._write_lock = threading.Lock()
        self._closed = False
        self._closing = threading.Event()
        self._events: queue.Queue = queue.Queue()
        self._serial = open_port(port, baud)
        self._reader = threading.Thread(target=self._read_loop, name=f"mdb-reader {port}", daemon=True)
        self._delivery = threading.Thread(target=self._deliver_loop, name=f"mdb-events {port}", daemon=True)
        self._reader.start()
        self._delivery.start()
        try:
            self._enable(answer_timeout_s)
        except BaseException:
            self.close()
            raise

    def _enable(self, timeout_s: float) -> None:
        # Off first, as the adapter's maker advises: it also ends a session a crashed controller left open.
        self._write("C,0")
        with self._lock:
            self.policy.state = "UNKNOWN"
        self._write("C,1")
        with self._lock:
            if not self._heard.wait_for(lambda: self.policy.state != "UNKNOWN", timeout_s):
                raise HardwareError(
                    f"{self.port}: the MDB adapter did not answer C,1 within {timeout_s:g} s; check [mdb] port and "
                    f"baud ({self.baud}), the adapter's power, and that it runs firmware with the cashless-device "
                    "commands")
            state = self.policy.state
        log.info("MDB adapter on %s: cashless device on, %s", self.port, state)

    @property
    def state(self) -> str:
        """The cashless device's state as the adapter last said: INACTIVE, DISABLED, ENABLED, IDLE."""
        with self._lock:
            return self.policy.state

    def session_slot(self) -> str | None:
        with self._lock:
            return self.policy.session.slot if self.policy.session else None

    def start_session(self, slot: str, item: int, price: int | None) -> None:
        """Offer ``price`` as credit for selection ``item``; the outcome comes to the drop sensor."""
        if price is None:
            # No planogram price: nothing to offer. The vend ends now rather than on the controller's timer.
            self._carry_out([NotVended(f"slot {slot} has no price in the planogram; an MDB machine sells "
                                       "only at a price the cloud set")])
            return
        with self._lock:
            actions = self.policy.start(slot, item, price, time.monotonic())
        self._carry_out(actions)

    def stop_session(self, slot: str | None = None) -> None:
        """End the open session (of ``slot``, or any) unpaid. Never raises, and never waits long: it may run in
        a signal handler that interrupted this very thread inside the lock (the daemon's exit ends it then)."""
        # A look without the lock first, so that stopping every slot waits at most once, for the one whose
        # session it is (an attribute read is atomic; close() ends a session this misses).
        session = self.policy.session
        if session is None or (slot is not None and session.slot != slot):
            return
        if not self._lock.acquire(timeout=LOCK_WAIT_S):
            log.error("could not end the cashless session now: the adapter is busy; it ends when the port closes")
            return
        try:
            if self.policy.session is None or (slot is not None and self.policy.session.slot != slot):
                return
            actions = self.policy.stop(time.monotonic())
        finally:
            self._lock.release()
        try:
            self._carry_out(actions)
        except Exception:
            log.exception("could not end the cashless session")

    def close(self) -> None:
        """End any session, turn the cashless device off (the machine cannot sell through it), close the port."""
        with self._lock:
            if self._closed:
                return
            actions = self.policy.stop(time.monotonic())
        try:
            self._carry_out(actions)
            self._write("C,0")
        except HardwareError as e:
            log.warning("%s", e)
        with self._lock:
            self._closed = True
            self._heard.notify_all()
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
            log.exception("could not close the MDB adapter's port %s", self.port)

    def _write(self, line: str) -> None:
        if not self._write_lock.acquire(timeout=WRITE_TIMEOUT_S + LOCK_WAIT_S):
            raise HardwareError(f"{self.port}: could not send {line} to the MDB adapter: another write is stuck")
        try:
            self._serial.write(line.encode("ascii") + self.eol)
        except (serial.SerialException, OSError) as e:
            raise HardwareError(f"{self.port}: cannot write to the MDB adapter: {e}; is it still connected?") from None
        finally:
            self._write_lock.release()
        log.debug("MDB > %s", line)

    def _carry_out(self, actions: list) -> None:
        """Send the policy's lines in order, and queue its outcomes for the listeners."""
        for action in actions:
            if isinstance(action, Send):
                try:
                    self._write(action.line)
                except HardwareError as e:
                    self._deliver_fault(str(e), "mdb.port_lost")
                    if action.line.startswith("C,START"):
                        with self._lock:
                            self.policy.session = None
                        self._deliver(lambda e=e: self.drop_sensor.none_dropped(str(e), time.monotonic(),
                                                                                slot_ok=True))
            elif isinstance(action, Vended):
                t = time.monotonic()
                self._deliver(lambda: self.drop_sensor.drop_seen(t))
            elif isinstance(action, NotVended):
                t, reason, ok = time.monotonic(), action.reason, action.slot_ok
                self._deliver(lambda: self.drop_sensor.none_dropped(reason, t, slot_ok=ok))
            elif isinstance(action, Fault):
                self._deliver_fault(action.what, action.code)

    def _read_loop(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._serial.read(max(1, self._serial.in_waiting))
            except Exception as e:
                if not self._closing.is_set():
                    self._port_lost(e)
                return
            now = time.monotonic()
            actions: list = []
            with self._lock:
                for message in self.lines.feed(data, now):
                    log.debug("MDB < %s", getattr(message, "line", message))
                    actions += self.policy.line(message, now)
                    if isinstance(message, State):
                        self._heard.notify_all()
                actions += self.policy.tick(now)
            try:
                self._carry_out(actions)
            except Exception:
                log.exception("could not carry out %r", actions)

    def _port_lost(self, e: Exception) -> None:
        what = f"lost the MDB adapter's port {self.port}: {e}; is it still connected?"
        with self._lock:
            session, self.policy.session = self.policy.session, None
            self.policy.state = "INACTIVE"
        self._deliver_fault(what, "mdb.port_lost")
        if session is not None:
            self._carry_out([NotVended(what, slot_ok=session.phase != "approved")])

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
                log.exception("an MDB listener failed")


class MdbHardware(Hardware):
    """A machine sold through its own controller: vends wait for a person, are never retried, and need the
    VMC to have enabled the cashless device."""

    adapter: MdbAdapter
    turns = 1

    def describe(self) -> str:
        return f" (MDB adapter on {self.adapter.port})"

    def inputs(self) -> dict[str, str]:
        with self.adapter._lock:
            policy = self.adapter.policy
            prices = ", ".join(f"{item}: {policy.money(price)}" for item, price in sorted(policy.prices.items()))
            session = policy.session
        return {"cashless device": self.adapter.state,
                "session": f"slot {session.slot}, {session.phase}" if session else "none",
                "prices the machine asked": prices or "none yet",
                "adapter": f"{self.adapter.lines.lines} lines read, {self.adapter.lines.bad_lines} not understood"}

    def refusal(self) -> str:
        state = self.adapter.state
        if state != "ENABLED":
            return f"the machine's controller has not enabled the cashless device (it is {state})"
        return ""

    def vend_prompt_parts(self, slot: str, product: str) -> tuple[str, dict]:
        return "Paid: press {item} on the machine for {product}", {"item": self.motors[slot].item, "product": product}


def open_backend(cfg) -> Hardware:
    """The selections of ``[hardware] slots`` on the machine behind the MDB adapter at ``[mdb] port``."""
    settings, slots = cfg.section(MdbSettings), cfg.hardware.slots
    items = settings.items or {slot: i + 1 for i, slot in enumerate(slots)}
    faults = Faults()
    adapter = MdbAdapter(settings.port, baud=settings.baud, decimals=settings.decimals,
                         answer_timeout_s=settings.answer_timeout_s, session_timeout_s=settings.session_timeout_s,
                         vend_timeout_s=settings.vend_timeout_s, faults=faults, line_end=settings.line_end)
    motors = {slot: MdbMotor(slot, adapter, items[slot]) for slot in slots}
    hardware = MdbHardware(motors, adapter.drop_sensor, adapter.door, None, faults=faults, closers=(adapter,))
    hardware.adapter = adapter
    hardware.turn_timeout_s = (settings.answer_timeout_s + settings.session_timeout_s + settings.vend_timeout_s
                               + OUTCOME_MARGIN_S)
    hardware.wiring = [(f"slot {slot}", f"selection {items[slot]}") for slot in slots] + [
        ("MDB adapter", f"{adapter.port} at {adapter.baud} baud, cashless device {adapter.state}")]
    return hardware


def main(argv: list[str] | None = None) -> int:
    """``python -m hw.mdb --off PORT``: send C,STOP and C,0 to the adapter (``vend-controller safe-pins``)."""
    parser = argparse.ArgumentParser(prog="python -m hw.mdb", description=main.__doc__)
    parser.add_argument("--off", required=True, metavar="PORT", help="the MDB adapter's port")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--line-end", choices=("lf", "crlf"), default="lf")
    args = parser.parse_args(argv)
    eol = b"\r\n" if args.line_end == "crlf" else b"\n"
    try:
        port = open_port(args.off, args.baud)
        with port:
            port.write(b"C,STOP" + eol + b"C,0" + eol)
            port.flush()
    except (HardwareError, serial.SerialException, OSError) as e:
        print(f"python -m hw.mdb: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
