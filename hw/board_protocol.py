"""The motor board's wire format (hw/SERIAL_PROTOCOL.md): frames, CRC, command numbers and payload layouts.

Shared by the driver (hw/serial_board.py) and the simulated board (hw/board_sim.py), so the two cannot drift
apart; neither owns a port or a thread here.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

PROTOCOL_VERSION = 1
SOF = 0xA5
MAX_PAYLOAD = 32
OVERHEAD = 6  # SOF, LEN, ID, CMD, CRC low, CRC high
# At 9600 baud a whole 38-byte frame takes 40 ms; a frame whose bytes stop coming for longer than this is
# a lost tail or a start byte that was really garbage.
STALL_S = 0.25

# Host -> board requests; each gets an ACK or a NAK with the same frame id.
STATUS = 0x01
RUN = 0x02
STOP = 0x03
RESET = 0x04
# Host -> board: "I have report <frame id>"; never answered.
REPORT_ACK = 0x20
# Board -> host replies.
ACK = 0x80
NAK = 0x81
# Board -> host reports; the frame id is the board's report sequence number.
BOOT = 0xC0
DROP = 0xC1
TURN = 0xC2
DOOR = 0xC3

NAMES = {STATUS: "STATUS", RUN: "RUN", STOP: "STOP", RESET: "RESET", REPORT_ACK: "REPORT_ACK", ACK: "ACK",
         NAK: "NAK", BOOT: "BOOT", DROP: "DROP", TURN: "TURN", DOOR: "DOOR"}
REQUESTS = (STATUS, RUN, STOP, RESET)
REPORTS = (BOOT, DROP, TURN, DOOR)

NO_MOTOR = 0xFF  # "none" in a motor field; in STOP, "all motors"

# NAK reasons
BAD_LENGTH = 1
UNKNOWN_COMMAND = 2
BAD_MOTOR = 3
BUSY = 4
BOOT_CHANGED = 5
REASONS = {BAD_LENGTH: "payload of the wrong length", UNKNOWN_COMMAND: "unknown command",
           BAD_MOTOR: "no such motor on the board", BUSY: "another motor is turning",
           BOOT_CHANGED: "the board restarted since the host last asked"}

# How a turn ended (TURN report)
END_CAM = 0
END_TIME_LIMIT = 1
END_STOPPED = 2
ENDS = {END_CAM: "cam", END_TIME_LIMIT: "time limit", END_STOPPED: "stopped"}

# Why the board started (BOOT report)
CAUSES = {0: "power-on", 1: "watchdog", 2: "brown-out", 3: "other"}
CAUSE_POWER_ON, CAUSE_WATCHDOG, CAUSE_BROWN_OUT, CAUSE_OTHER = 0, 1, 2, 3

# STATUS inputs bits
INPUT_DOOR_OPEN = 0x01
INPUT_BEAM_BLOCKED = 0x02

# Payload layouts, little-endian. An ACK's payload is the request's command byte, then ACK_BODY[command].
REQUEST_BODY = {STATUS: "", RUN: "<BH", STOP: "<B", RESET: ""}
ACK_BODY = {STATUS: "<BBHIBBHH", RUN: "<HH", STOP: "", RESET: ""}
NAK_BODY = "<BBH"  # request command, reason, the board's boot id
# Every report starts with age_ms: how long before this (re)send the event happened.
REPORT_BODY = {BOOT: "<HHBB", DROP: "<HB", TURN: "<HBBHH", DOOR: "<HB"}


class ProtocolError(ValueError):
    """A well-framed payload that does not have the layout its command says."""


@dataclass(frozen=True)
class Frame:
    """One frame: its id (request id, or report sequence number), its command and its payload."""

    id: int
    cmd: int
    payload: bytes = b""

    def __str__(self) -> str:
        return f"{NAMES.get(self.cmd, hex(self.cmd))}#{self.id} {self.payload.hex()}"


@dataclass(frozen=True)
class Status:
    """What the board says about itself in reply to STATUS."""

    version: int
    motors: int
    boot_id: int
    uptime_ms: int
    inputs: int
    running: int
    turn_limit_ms: int
    bad_frames: int


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor); b"123456789" -> 0x29B1."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode(frame_id: int, cmd: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame on the wire."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes; at most {MAX_PAYLOAD}")
    body = bytes((len(payload), frame_id & 0xFF, cmd)) + payload
    return bytes((SOF,)) + body + crc16(body).to_bytes(2, "little")


def pack(fmt: str, *fields) -> bytes:
    """A payload of ``fields`` laid out as ``fmt`` (an empty layout is an empty payload)."""
    return struct.pack(fmt, *fields) if fmt else b""


def unpack(fmt: str, payload: bytes) -> tuple:
    """The fields of a payload laid out as ``fmt``; ProtocolError when its length does not fit."""
    size = struct.calcsize(fmt) if fmt else 0
    if len(payload) != size:
        raise ProtocolError(f"payload of {len(payload)} bytes where {size} were expected")
    return struct.unpack(fmt, payload) if fmt else ()


def ack(cmd: int, *fields) -> bytes:
    """The payload of an ACK to request ``cmd``."""
    return bytes((cmd,)) + pack(ACK_BODY[cmd], *fields)


def nak(cmd: int, reason: int, boot_id: int) -> bytes:
    """The payload of a NAK to request ``cmd``."""
    return pack(NAK_BODY, cmd, reason, boot_id)


def age_ms(seconds: float) -> int:
    """An event's age for a report's first field: whole milliseconds, held at the field's 65535 ceiling."""
    return max(0, min(0xFFFF, int(seconds * 1000)))


class FrameReader:
    """Finds whole, intact frames in a byte stream; skips garbage and counts what it threw away.

    Time is passed in, so the stall rule (a frame must arrive whole within STALL_S of its start byte) can be
    tested without waiting.
    """

    def __init__(self, stall_s: float = STALL_S):
        self.stall_s = stall_s
        self.skipped_bytes = 0  # bytes before a start byte
        self.bad_length = 0
        self.bad_crc = 0
        self.stalled = 0
        self._buf = bytearray()
        self._partial_since: float | None = None

    @property
    def bad_frames(self) -> int:
        """Frames discarded for a bad CRC, an impossible length or a tail that never came."""
        return self.bad_length + self.bad_crc + self.stalled

    def clear(self) -> None:
        """Forget a partial frame (after a reset, a half-received frame can never be finished)."""
        self._buf.clear()
        self._partial_since = None

    def feed(self, data: bytes, now: float) -> list[Frame]:
        """Take the bytes read at ``now``; return the frames they complete, oldest first."""
        self._buf += data
        frames = []
        buf = self._buf
        while True:
            start = buf.find(SOF)
            if start < 0:
                self.skipped_bytes += len(buf)
                buf.clear()
                self._partial_since = None
                break
            if start:
                self.skipped_bytes += start
                del buf[:start]
                self._partial_since = None
            if len(buf) >= 2 and buf[1] > MAX_PAYLOAD:
                # Never acted on; the start byte was noise, so look again from the byte after it.
                self.bad_length += 1
                del buf[:1]
                continue
            total = buf[1] + OVERHEAD if len(buf) >= 2 else OVERHEAD
            if len(buf) < total:
                if self._partial_since is None:
                    self._partial_since = now
                elif now - self._partial_since > self.stall_s:
                    self.stalled += 1
                    del buf[:1]
                    self._partial_since = None
                    continue
                break
            self._partial_since = None
            body = bytes(buf[1:total - 2])
            if crc16(body) != int.from_bytes(buf[total - 2:total], "little"):
                self.bad_crc += 1
                del buf[:1]
                continue
            frames.append(Frame(body[1], body[2], body[3:]))
            del buf[:total]
        return frames
