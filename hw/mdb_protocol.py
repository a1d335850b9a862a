"""The text protocol of an MDB adapter in cashless-device mode (Qibixx MDB Pi HAT / MDB-USB), and the policy of
one cashless session, apart from the port that carries it (docs/mdb.md says which published text each line
follows and what could not be checked without the device).

Lines from the adapter, one per line, start with a lower-case ``c``:

    c,STATUS,INACTIVE | DISABLED | ENABLED | IDLE    the cashless device's state as the VMC moved it
    c,STATUS,VEND,<amount>,<item>                   the VMC asks for <amount> to vend selection <item>
    c,VEND,SUCCESS | c,VEND,FAIL                    the vend's outcome
    c,ERR,<text>                                    an error (``c,ERR,VEND 3``: the product did not dispense)

Lines that belong to the adapter's other roles (``r,ACK`` when the VMC polled us; ``d,``/``x,``/``m,``/``v,``
...) are ignored. Commands to it start with a capital ``C``: ``C,0``/``C,1`` (cashless device off/on),
``C,START,<funds>`` (a session with credit), ``C,VEND,<amount>`` (approve), ``C,STOP`` (deny, or end the
session). Amounts are in the machine's major unit with ``decimals`` places (``3.50``).

``parse_line`` never raises: a line it cannot read is ``Garbled``, one it can read but does not know is
``Unknown``. ``Cashless`` is told each line and the time, and answers with actions; it approves a vend only
for the selection the customer paid for, at no more than the credit, and anything it does not understand
during a session ends the session unpaid.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

log = logging.getLogger(__name__)

MAX_LINE = 120  # the longest line the adapter sends is well under this; longer is noise
STATES = ("INACTIVE", "DISABLED", "ENABLED", "IDLE")
AMOUNT_RE = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,3})?\Z")
ITEM_RE = re.compile(r"^[0-9]{1,5}\Z")
OTHER_ROLES = ("r", "d", "x", "m", "v", "p", "n")  # the adapter's lines for its other roles (master, sniffer, ...)


# -- lines ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """The cashless device's state: INACTIVE, DISABLED, ENABLED, or IDLE (a session is open)."""

    name: str


@dataclass(frozen=True)
class VendRequest:
    """The VMC asks for ``amount`` (minor units) to vend selection ``item``."""

    amount: int
    item: int
    line: str


@dataclass(frozen=True)
class VendResult:
    """The VMC says the vend succeeded or failed."""

    ok: bool
    line: str


@dataclass(frozen=True)
class AdapterError:
    """``c,ERR,...``: the adapter or the VMC reports an error."""

    text: str
    line: str


@dataclass(frozen=True)
class Ignored:
    """A line of the adapter's other roles (``r,ACK``: the VMC polled us), or an empty line."""

    line: str


@dataclass(frozen=True)
class Unknown:
    """A cashless line that reads cleanly but that this driver does not know."""

    line: str


@dataclass(frozen=True)
class Garbled:
    """Bytes that are no line of the protocol, and why."""

    line: str
    why: str


def to_minor(text: str, decimals: int) -> int | None:
    """``3.50`` with 2 decimals is 350; None when ``text`` is no amount or has more places than the machine uses."""
    if not AMOUNT_RE.match(text):
        return None
    try:
        value = Decimal(text) * (10 ** decimals)
    except InvalidOperation:
        return None
    return int(value) if value == value.to_integral_value() else None


def from_minor(amount: int, decimals: int) -> str:
    """350 with 2 decimals is ``3.50``: what the adapter takes in C,START and C,VEND."""
    if decimals == 0:
        return str(amount)
    return f"{amount // 10 ** decimals}.{amount % 10 ** decimals:0{decimals}d}"


def parse_line(raw: bytes, decimals: int = 2):
    """One line from the adapter, without its line end, as a message; never raises."""
    try:
        line = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return Garbled(raw[:60].decode("ascii", "backslashreplace"), "not ASCII text")
    if not line:
        return Ignored(line)
    if not line.isprintable():
        return Garbled(line[:60].encode("unicode_escape").decode("ascii"), "control characters in the line")
    parts = line.split(",")
    if parts[0] in OTHER_ROLES or parts in (["c", "0"], ["c", "1"]):
        # c,0 and c,1: the adapter's word back on C,0 and C,1, as Qibixx's session examples show it.
        return Ignored(line)
    if parts[0] != "c" or len(parts) < 2:
        return Garbled(line[:60], "not a line of the cashless device (they start with 'c,')")
    if parts[1] == "STATUS" and len(parts) == 3 and parts[2] in STATES:
        return State(parts[2])
    if parts[1] == "STATUS" and len(parts) >= 3 and parts[2] == "VEND":
        if len(parts) != 5:
            return Garbled(line, "a vend request has an amount and a selection: c,STATUS,VEND,<amount>,<item>")
        amount = to_minor(parts[3], decimals)
        if amount is None:
            return Garbled(line, f"amount {parts[3]!r} is not a price with at most {decimals} decimals")
        if not ITEM_RE.match(parts[4]):
            return Garbled(line, f"selection {parts[4]!r} is not a number")
        return VendRequest(amount, int(parts[4]), line)
    if parts[1] == "VEND" and len(parts) == 3 and parts[2] in ("SUCCESS", "FAIL"):
        return VendResult(parts[2] == "SUCCESS", line)
    if parts[1] == "ERR":
        return AdapterError(",".join(parts[2:]), line)
    return Unknown(line)


class LineReader:
    """Bytes in, complete lines out. A line longer than MAX_LINE, or one cut short (no end for ``stall_s``),
    comes out as ``Garbled`` so the session sees it; CR, LF and CRLF all end a line."""

    def __init__(self, decimals: int = 2, stall_s: float = 1.0):
        self.decimals = decimals
        self.stall_s = stall_s
        self._buf = bytearray()
        self._since: float | None = None
        self._skipping = False  # the rest of an overlong line, up to its end, already reported
        self.lines = 0
        self.bad_lines = 0

    def feed(self, data: bytes, now: float) -> list:
        """The messages completed by ``data`` (empty ``data`` only checks for a stalled partial line)."""
        out = []
        if self._buf and self._since is not None and now - self._since > self.stall_s:
            out.append(self._bad(Garbled(bytes(self._buf[:60]).decode("ascii", "backslashreplace"),
                                         f"cut short: no end of line within {self.stall_s:.1f} s")))
            self._buf.clear()
        for byte in data:
            if byte in (0x0A, 0x0D):
                self._skipping = False
                if self._buf:
                    message = parse_line(bytes(self._buf), self.decimals)
                    self.lines += 1
                    out.append(self._bad(message) if isinstance(message, (Garbled, Unknown)) else message)
                    self._buf.clear()
                continue
            if self._skipping:
                continue
            if not self._buf:
                self._since = now
            self._buf.append(byte)
            if len(self._buf) > MAX_LINE:
                out.append(self._bad(Garbled(bytes(self._buf[:60]).decode("ascii", "backslashreplace"),
                                             f"longer than {MAX_LINE} characters")))
                self._buf.clear()
                self._skipping = True
        return out

    def _bad(self, message):
        self.bad_lines += 1
        return message


# -- the session's policy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Write this command line to the adapter."""

    line: str


@dataclass(frozen=True)
class Vended:
    """The VMC reported the vend succeeded: the product is out."""


@dataclass(frozen=True)
class NotVended:
    """The vend in progress ended without a product, for ``reason``; ``slot_ok`` when it ended before the machine
    was asked to vend, so nothing speaks against the slot's spiral."""

    reason: str
    slot_ok: bool = True


@dataclass(frozen=True)
class Fault:
    """A fault for the ledger: ``code`` stable, ``what`` for people."""

    code: str
    what: str


@dataclass
class _Session:
    slot: str
    item: int
    credit: int
    phase: str  # starting (C,START sent), waiting (for a selection), approved (C,VEND sent)
    deadline: float


class Cashless:
    """One cashless session at a time, told what the adapter said and when; owns no thread, port or clock."""

    def __init__(self, *, decimals: int = 2, answer_timeout_s: float = 2.0, session_timeout_s: float = 60.0,
                 vend_timeout_s: float = 30.0):
        self.decimals = decimals
        self.answer_timeout_s = answer_timeout_s
        self.session_timeout_s = session_timeout_s
        self.vend_timeout_s = vend_timeout_s
        self.state = "UNKNOWN"  # what the adapter last said; UNKNOWN until it says anything
        self.session: _Session | None = None
        self.prices: dict[int, int] = {}  # selection -> the amount the VMC last asked for it
        self.denied = 0
        self.approved = 0

    @property
    def deadline(self) -> float | None:
        return self.session.deadline if self.session else None

    def money(self, amount: int) -> str:
        return from_minor(amount, self.decimals)

    def start(self, slot: str, item: int, credit: int, now: float) -> list:
        """Open a session offering ``credit`` for selection ``item`` (slot ``slot``)."""
        if self.session is not None:
            return [NotVended(f"a cashless session for slot {self.session.slot} is still open")]
        if self.state != "ENABLED":
            return [NotVended(f"the machine's controller has not enabled the cashless device (it is {self.state})")]
        self.session = _Session(slot, item, credit, "starting", now + self.answer_timeout_s)
        return [Send(f"C,START,{self.money(credit)}")]

    def stop(self, now: float) -> list:
        """End any open session without a vend (the vend was given up, or the controller stops)."""
        if self.session is None:
            return []
        log.info("cashless session for slot %s ended by the controller", self.session.slot)
        self.session = None
        return [Send("C,STOP")]

    def tick(self, now: float) -> list:
        """Time passes: a session past its deadline ends unpaid."""
        s = self.session
        if s is None or now < s.deadline:
            return []
        if s.phase == "starting":
            what = (f"the MDB adapter did not answer C,START within {self.answer_timeout_s:g} s; check the cable, "
                    "[mdb] port and that the adapter is in cashless-device mode")
            return self._end(what, Fault("mdb.no_answer", what))
        if s.phase == "waiting":
            return self._end(f"no selection at the machine within {self.session_timeout_s:g} s of the payment "
                             "(session timed out)")
        what = f"the machine did not report the vend's outcome within {self.vend_timeout_s:g} s of the approval"
        return self._end(what, Fault("mdb.no_answer", what))

    def line(self, message, now: float) -> list:
        """One message from ``parse_line``."""
        s = self.session
        if isinstance(message, State):
            previous, self.state = self.state, message.name
            if previous != message.name:
                log.info("cashless device: %s -> %s", previous, message.name)
            if s is None:
                return []
            if message.name in ("INACTIVE", "DISABLED"):
                what = (f"the machine's controller reset or disabled the cashless device in the middle of the "
                        f"vend (c,STATUS,{message.name})")
                return self._end(what, Fault("mdb.vmc_reset", what), send_stop=False)
            if message.name == "IDLE" and s.phase == "starting":
                s.phase, s.deadline = "waiting", now + self.session_timeout_s
                log.info("cashless session open: %s credit for selection %d (slot %s)", self.money(s.credit),
                         s.item, s.slot)
                return []
            if message.name == "ENABLED":
                if s.phase == "approved":
                    return self._end("the machine ended the session without saying whether the product came out",
                                     send_stop=False)
                return self._end("the session was cancelled at the machine before a selection", send_stop=False)
            return []
        if isinstance(message, VendRequest):
            self.prices[message.item] = message.amount
            if s is None or s.phase != "waiting":
                self.denied += 1
                log.warning("denied %s: no paid session is waiting for a selection", message.line)
                return [Send("C,STOP")]
            if message.item != s.item:
                return self._deny(f"the customer selected {message.item} at the machine, not {s.item} (slot "
                                  f"{s.slot}) that they paid for")
            if message.amount > s.credit:
                return self._deny(f"the machine asks {self.money(message.amount)} for selection {message.item}, "
                                  f"more than the {self.money(s.credit)} paid")
            s.phase, s.deadline = "approved", now + self.vend_timeout_s
            self.approved += 1
            actions: list = [Send(f"C,VEND,{self.money(message.amount)}")]
            if message.amount != s.credit:
                actions.append(Fault("mdb.price_differs",
                                     f"the machine's controller prices selection {message.item} (slot {s.slot}) at "
                                     f"{self.money(message.amount)}, the planogram at {self.money(s.credit)}; "
                                     "set one of them to match"))
            return actions
        if isinstance(message, VendResult):
            if s is None or s.phase != "approved":
                log.error("%s with no approved vend in progress", message.line)
                # A product that came out is a fact for the ledger (drop.unexpected), never a sale.
                return [Vended()] if message.ok else []
            self.session = None
            if message.ok:
                return [Vended()]
            return [NotVended(f"the machine reported that the vend failed ({message.line})", slot_ok=False)]
        if isinstance(message, AdapterError):
            if s is None:
                log.warning("the MDB adapter reported an error: %s", message.line)
                return []
            if s.phase == "approved" and message.text.startswith("VEND"):
                # c,ERR,VEND 3: the maker's word for "the product did not dispense".
                return self._end(f"the machine reported that the vend failed ({message.line})", send_stop=False)
            return self._end(f"the MDB adapter reported an error during the vend ({message.line})")
        if isinstance(message, Ignored):
            return []
        # Garbled or Unknown: nothing is approved on a line this driver cannot read.
        why = message.why if isinstance(message, Garbled) else "a line this driver does not know"
        log.warning("MDB adapter sent %r: %s", message.line, why)
        if s is None:
            return []
        return self._end(f"the MDB adapter sent a line that makes no sense during the vend ({message.line!r}: "
                         f"{why})")

    def _deny(self, reason: str) -> list:
        self.denied += 1
        return self._end(f"denied: {reason}")

    def _end(self, reason: str, *extra, send_stop: bool = True) -> list:
        """End the session unpaid; the slot stays in service unless the machine had been asked to vend."""
        s, self.session = self.session, None
        log.warning("cashless session for slot %s ended unpaid: %s", s.slot if s else "?", reason)
        slot_ok = s is None or s.phase != "approved"
        return [*((Send("C,STOP"),) if send_stop else ()), *extra, NotVended(reason, slot_ok)]
