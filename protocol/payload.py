"""The bounded JSON decode under every MQTT payload, on both sides: size and nesting are checked before the
parser runs, because json.loads recurses once per level and a few kilobytes of ``[`` raise RecursionError,
which is not a bad message to any consumer but a crash."""

from __future__ import annotations

import json
from itertools import accumulate

from . import PROTOCOL_VERSION, ProtocolError

MAX_PAYLOAD_BYTES = 256 * 1024
# The deepest real message is an event's data inside a batch (object, list, object, object, and a little
# room for a list in the data): 32 levels is far past any message and far below the parser's recursion limit.
MAX_DEPTH = 32

_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
# Openers become 1 and closers 255, which a signed-byte view reads as -1: the running sum is the depth.
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def depth(payload: bytes) -> int:
    """The deepest nesting of brackets outside strings; all in C, so it costs little on a full batch."""
    # Escaped backslashes first, then escaped quotes: what is left of each string is its two quotes, so the
    # even pieces between quotes are everything outside strings. Outside a string a backslash is not JSON,
    # and the parser stops there before it reaches any bracket this might miscount.
    unescaped = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKET)
    if len(brackets) <= MAX_DEPTH:
        return len(brackets)
    return max(accumulate(memoryview(brackets.translate(_STEP)).cast("b")), default=0)


def load_json(payload: bytes | str, where: str) -> dict:
    """Decode one payload into a dict, checking size, nesting, JSON and the protocol version."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogatepass")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"{where}: payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} limit")
    if depth(payload) > MAX_DEPTH:
        raise ProtocolError(f"{where}: nested too deep (more than {MAX_DEPTH} levels)")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        # Only if the scan above were ever wrong: still a bad message, never a crash.
        raise ProtocolError(f"{where}: nested too deep") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where}: payload must be a JSON object, got {type(obj).__name__}")
    v = obj.get("v")
    if v != PROTOCOL_VERSION:
        raise ProtocolError(f"{where}: protocol version {v!r} is not supported (this side speaks {PROTOCOL_VERSION})")
    return obj
