"""Message types on the wire, their JSON form and their validation.

Every payload is a JSON object carrying ``"v": PROTOCOL_VERSION``. ``decode(kind, payload)`` returns the
typed message or raises ProtocolError with a reason a person can act on; nothing half-valid gets through.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import PROTOCOL_VERSION, ProtocolError
from .payload import MAX_DEPTH, MAX_PAYLOAD_BYTES, load_json  # noqa: F401 - part of this module's interface

MAX_BATCH_EVENTS = 1000
GENESIS_HASH = "0" * 64
MAX_SLOT_COUNT = 100_000  # more than any slot holds; keeps a count inside every database's integer
MAX_CONFIG_SLOTS = 500  # a planogram of more slots than any cabinet row has is a mistake, not a machine
MAX_CAPACITY = 1000
MAX_PRICE = 10**12  # in minor units: ten billion in the major unit, far past any product, inside every integer
# \Z, not $: "$" would let a trailing newline through.
ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
SLOT_RE = re.compile(r"^[A-Z][0-9]{1,2}\Z")
HASH_RE = re.compile(r"^[0-9a-f]{64}\Z")
CURRENCY_RE = re.compile(r"^[A-Z]{3}\Z")

# Required data fields of each ledger event kind, with their types. Extra fields are allowed: a newer
# machine may say more than an older cloud understands, but never less.
EVENT_KINDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "boot": {"firmware": str},
    "vend.started": {"order_id": str, "cmd_id": str, "slot": str},
    "vend.succeeded": {"order_id": str, "slot": str, "turns": int},
    "vend.failed": {"order_id": str, "slot": str, "reason": str},
    "vend.unknown": {"order_id": str, "slot": str},
    "drop.unexpected": {},
    "restock": {"slot": str, "count": int},
    "stock.adjusted": {"slot": str, "count": int, "reason": str},
    "door.opened": {},
    "door.closed": {},
    "fault": {"code": str, "detail": str},
    "config.applied": {"version": int},
    "command.rejected": {"cmd_id": str, "reason": str},
    # The checks a machine ran at start (controller/selftest.py): [{"check", "ok", "detail"}, ...].
    "selftest": {"checks": list},
}
MAX_SELFTEST_CHECKS = 16

COMMAND_KINDS = {
    "vend": {"order_id": str, "slot": str},
    "resend": {"from_seq": int},
    "credentials": {},  # the machine's secrets were rotated: fetch the new ones from the cloud now
}

RESULT_STATUSES = ("succeeded", "failed", "unknown", "rejected", "done")


def utcnow() -> datetime:
    """The current time, UTC, with its zone."""
    return datetime.now(timezone.utc)


def format_time(t: datetime) -> str:
    """ISO 8601 with an explicit UTC offset; refuses naive times."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: times on the wire are UTC with a zone")
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_time(value: Any, name: str) -> datetime:
    """Parse an ISO 8601 time that carries a zone, or raise ProtocolError naming the field."""
    if not isinstance(value, str) or len(value) > 40:
        raise ProtocolError(f"{name} must be an ISO 8601 time string of at most 40 characters")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ProtocolError(f"{name} {value!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise ProtocolError(f"{name} {value!r} has no time zone; send UTC with an offset")
    return t.astimezone(timezone.utc)


def _get(obj: dict, key: str, typ, where: str, *, optional: bool = False):
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise ProtocolError(f"{where}: missing field {key!r}")
    value = obj[key]
    # bool is an int in Python; a flag must not pass as a count or the reverse.
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ProtocolError(f"{where}: field {key!r} must be an integer, got {value!r}")
    if typ is not int and not isinstance(value, typ):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ProtocolError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ProtocolError(f"{where}: field {key!r} holds a lone surrogate, not text") from None
    return value


def _seq(obj: dict, key: str, where: str, minimum: int = 1, optional: bool = False) -> int | None:
    value = _get(obj, key, int, where, optional=optional)
    if value is not None and not (minimum <= value < 2**63):
        raise ProtocolError(f"{where}: field {key!r} must be between {minimum} and 2^63-1, got {value}")
    return value


def _ident(obj: dict, key: str, where: str) -> str:
    value = _get(obj, key, str, where)
    if not ID_RE.match(value):
        raise ProtocolError(f"{where}: field {key!r} {value!r} is not an id (1-64 of A-Z a-z 0-9 _ . : -)")
    return value


def dump_json(obj: dict) -> bytes:
    return compact_json({"v": PROTOCOL_VERSION, **obj}).encode()


# One encoder each, made once: json.dumps with options builds a new encoder on every call.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _digest(seq: int, ts: str, boot: int, clock_synced: bool, kind: str, data_json: str, prev_hash: str) -> str:
    # Fields joined by the unit separator: it cannot occur in a valid time, a kind, hex, or JSON (which
    # escapes control characters), so no two events share one text.
    text = f"{seq}\x1f{ts}\x1f{boot}\x1f{int(clock_synced)}\x1f{kind}\x1f{data_json}\x1f{prev_hash}"
    try:
        return hashlib.sha256(text.encode()).hexdigest()
    except UnicodeEncodeError:
        raise ProtocolError(f"event {seq}: data holds a lone surrogate, not text") from None


def event_hash(seq: int, ts: str, boot: int, clock_synced: bool, kind: str, data: dict, prev_hash: str) -> str:
    """The hash that chains one ledger event to the one before it: sha256 over its fields, data as
    canonical JSON (sorted keys, no spaces, UTF-8)."""
    return _digest(seq, ts, boot, clock_synced, kind, _canonical(data), prev_hash)


@dataclass(frozen=True, slots=True)
class Event:
    """One fact from a machine's ledger."""

    seq: int
    ts: str
    boot: int
    clock_synced: bool
    kind: str
    data: dict
    prev_hash: str
    hash: str
    # The canonical JSON of ``data``, kept from the hash check so storing the event does not encode it again.
    data_json: str = field(default="", compare=False, repr=False)

    @classmethod
    def make(cls, seq: int, ts: datetime, boot: int, clock_synced: bool, kind: str, data: dict,
             prev_hash: str) -> "Event":
        ts_s = format_time(ts)
        ev = cls(seq, ts_s, boot, clock_synced, kind, data, prev_hash,
                 event_hash(seq, ts_s, boot, clock_synced, kind, data, prev_hash))
        check_event_data(kind, data, f"event {seq}")
        return ev

    @classmethod
    def from_obj(cls, obj: Any, where: str | int) -> "Event":
        """Check and build one event; ``where`` (a text, or an index in a batch) starts any error."""
        if type(obj) is dict:
            # Fast path for the well-formed event (ingest decodes tens of thousands a second); anything
            # unusual falls through to the field-by-field checks below, which say what is wrong.
            seq, ts, boot, synced = obj.get("seq"), obj.get("ts"), obj.get("boot"), obj.get("clock_synced")
            kind, data, prev_hash, digest = obj.get("kind"), obj.get("data"), obj.get("prev_hash"), obj.get("hash")
            if (type(seq) is int and type(boot) is int and type(synced) is bool and type(ts) is str
                    and type(kind) is str and type(data) is dict and type(prev_hash) is str and type(digest) is str
                    and 0 < seq < 2**63 and 0 <= boot < 2**63 and HASH_RE.match(prev_hash) and HASH_RE.match(digest)):
                data_json = _canonical(data)
                if (_digest(seq, ts, boot, synced, kind, data_json, prev_hash) == digest
                        and _time_ok(ts) and _data_ok(kind, data)):
                    return cls(seq, ts, boot, synced, kind, data, prev_hash, digest, data_json)
        if isinstance(where, int):
            where = f"events[{where}]"
        if not isinstance(obj, dict):
            raise ProtocolError(f"{where}: an event must be an object")
        seq = _seq(obj, "seq", where)
        where = f"{where} (seq {seq})"
        ts = _get(obj, "ts", str, where)
        parse_time(ts, f"{where}: ts")
        boot = _seq(obj, "boot", where, minimum=0)
        synced = _get(obj, "clock_synced", bool, where)
        kind = _get(obj, "kind", str, where)
        data = _get(obj, "data", dict, where)
        check_event_data(kind, data, where)
        prev_hash = _get(obj, "prev_hash", str, where)
        digest = _get(obj, "hash", str, where)
        if not HASH_RE.match(prev_hash) or not HASH_RE.match(digest):
            raise ProtocolError(f"{where}: hashes must be 64 lowercase hex digits")
        if event_hash(seq, ts, boot, synced, kind, data, prev_hash) != digest:
            raise ProtocolError(f"{where}: hash does not match the event's content")
        return cls(seq, ts, boot, synced, kind, data, prev_hash, digest)

    def to_obj(self) -> dict:
        return {"seq": self.seq, "ts": self.ts, "boot": self.boot, "clock_synced": self.clock_synced,
                "kind": self.kind, "data": self.data, "prev_hash": self.prev_hash, "hash": self.hash}


def _time_ok(ts: str) -> bool:
    """parse_time's checks, without building an error message."""
    try:
        return len(ts) <= 40 and datetime.fromisoformat(ts).tzinfo is not None
    except ValueError:
        return False


def _data_ok(kind: str, data: dict) -> bool:
    """check_event_data's checks, without building error messages; False sends the caller the slow way."""
    required = EVENT_KINDS.get(kind)
    if required is None:
        return False
    for key, typ in required.items():
        value = data.get(key)
        if type(value) is not typ if typ in (int, str) else not isinstance(value, typ):
            return False
    if "slot" in required and not SLOT_RE.match(data["slot"]):
        return False
    if "count" in required and not 0 <= data["count"] <= MAX_SLOT_COUNT:
        return False
    for key in ("order_id", "cmd_id"):
        if key in data and not (type(data[key]) is str and ID_RE.match(data[key])):
            return False
    return "checks" not in required or _checks_error(data["checks"]) is None


def _checks_error(checks: list) -> str | None:
    """What is wrong with a self-test's checks, or None."""
    if not 1 <= len(checks) <= MAX_SELFTEST_CHECKS:
        return f"checks must hold 1-{MAX_SELFTEST_CHECKS} checks, not {len(checks)}"
    for item in checks:
        if not (isinstance(item, dict) and type(item.get("check")) is str and 0 < len(item["check"]) <= 32
                and type(item.get("ok")) is bool and type(item.get("detail")) is str and len(item["detail"]) <= 200):
            return ("each check must be {\"check\": 1-32 characters, \"ok\": true or false, "
                    "\"detail\": at most 200 characters}")
    return None


def check_event_data(kind: str, data: dict, where: str) -> None:
    """Check that an event's data holds the fields its kind requires."""
    required = EVENT_KINDS.get(kind)
    if required is None:
        raise ProtocolError(f"{where}: unknown event kind {kind!r}")
    for key, typ in required.items():
        _get(data, key, typ, f"{where} {kind}")
    if "slot" in required and not SLOT_RE.match(data["slot"]):
        raise ProtocolError(f"{where} {kind}: slot {data['slot']!r} is not a slot code like 'A1'")
    if "count" in required and not 0 <= data["count"] <= MAX_SLOT_COUNT:
        raise ProtocolError(f"{where} {kind}: count must be 0-{MAX_SLOT_COUNT}, got {data['count']}")
    for key in ("order_id", "cmd_id"):
        if key in data and not (isinstance(data[key], str) and ID_RE.match(data[key])):
            raise ProtocolError(f"{where} {kind}: {key} {str(data[key])[:80]!r} is not an id "
                                "(1-64 of A-Z a-z 0-9 _ . : -)")
    if "checks" in required and (problem := _checks_error(data["checks"])) is not None:
        raise ProtocolError(f"{where} {kind}: {problem}")


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Consecutive ledger events, in sequence order, each chained to the one before, and the id of the
    ledger they come from: a machine given a new card starts a new ledger at seq 1, and the cloud must
    not take its events for redeliveries of the old one's. A batch from a controller older than ledger ids
    has none ("")."""

    events: tuple[Event, ...]
    ledger: str = ""

    @classmethod
    def decode(cls, payload: bytes) -> "EventBatch":
        obj = load_json(payload, "events")
        ledger = _get(obj, "ledger", str, "events", optional=True) or ""
        if ledger and not ID_RE.match(ledger):
            raise ProtocolError(f"events: ledger {ledger[:80]!r} is not an id (1-64 of A-Z a-z 0-9 _ . : -)")
        raw = _get(obj, "events", list, "events")
        if not raw:
            raise ProtocolError("events: empty batch")
        if len(raw) > MAX_BATCH_EVENTS:
            raise ProtocolError(f"events: {len(raw)} events in one batch, limit {MAX_BATCH_EVENTS}")
        events = tuple(Event.from_obj(e, i) for i, e in enumerate(raw))
        for a, b in zip(events, events[1:]):
            if b.seq != a.seq + 1:
                raise ProtocolError(f"events: seq {b.seq} follows {a.seq}; a batch must be consecutive")
            if b.prev_hash != a.hash:
                raise ProtocolError(f"events: hash chain broken between seq {a.seq} and {b.seq}")
        return cls(events, ledger)

    def encode(self) -> bytes:
        ledger = {"ledger": self.ledger} if self.ledger else {}
        return dump_json({**ledger, "events": [e.to_obj() for e in self.events]})


@dataclass(frozen=True, slots=True)
class Status:
    """A machine's retained status; also its last will, with online false."""

    online: bool
    firmware: str = ""
    ledger_head: int = 0
    planogram_version: int = 0
    boot: int = 0

    @classmethod
    def decode(cls, payload: bytes) -> "Status":
        obj = load_json(payload, "status")
        return cls(
            online=_get(obj, "online", bool, "status"),
            firmware=_get(obj, "firmware", str, "status", optional=True) or "",
            ledger_head=_seq(obj, "ledger_head", "status", minimum=0, optional=True) or 0,
            planogram_version=_seq(obj, "planogram_version", "status", minimum=0, optional=True) or 0,
            boot=_seq(obj, "boot", "status", minimum=0, optional=True) or 0,
        )

    def encode(self) -> bytes:
        return dump_json(asdict(self))


MAX_WAIT_S = 600.0  # the longest queue wait an ack may announce: past it, the machine's own backoff is as good


@dataclass(frozen=True, slots=True)
class Ack:
    """The highest sequence the cloud has committed without a gap, and the cloud's clock; ``ledger`` names
    the ledger that seq is about (a machine given a new card may still be sent acks for its old ledger:
    queued in its broker session, or late). '' from a cloud older than ledger ids, and in a heartbeat.

    ``busy`` (seq 0 only): the machine's events reached a cloud whose queue is long; their ack will come, so
    the machine holds its resend. Sent only when true, so an older controller sees a plain clock ack (it
    ignores fields it does not know) and an older cloud's acks read as not busy. ``wait_s`` (with ``busy``
    only): how long the cloud expects those events to wait in its queue, so the machine holds its resend at
    least that long instead of guessing (a storm's queue is deeper than any fixed resend timer)."""

    seq: int
    cloud_time: str
    ledger: str = ""
    busy: bool = False
    wait_s: float = 0.0

    @classmethod
    def decode(cls, payload: bytes) -> "Ack":
        obj = load_json(payload, "ack")
        cloud_time = _get(obj, "cloud_time", str, "ack")
        parse_time(cloud_time, "ack: cloud_time")
        ledger = _get(obj, "ledger", str, "ack", optional=True) or ""
        if ledger and not ID_RE.match(ledger):
            raise ProtocolError(f"ack: ledger {ledger[:80]!r} is not an id (1-64 of A-Z a-z 0-9 _ . : -)")
        busy = _get(obj, "busy", bool, "ack", optional=True) or False
        seq = _seq(obj, "seq", "ack", minimum=0)
        if busy and seq:
            raise ProtocolError(f"ack: busy goes with seq 0, not {seq}")
        wait_s = obj.get("wait_s", 0)
        if not isinstance(wait_s, (int, float)) or isinstance(wait_s, bool) or not 0 <= wait_s <= MAX_WAIT_S:
            raise ProtocolError(f"ack: wait_s must be a number of seconds from 0 to {MAX_WAIT_S:g}")
        if wait_s and not busy:
            raise ProtocolError("ack: wait_s goes with busy")
        return cls(seq=seq, cloud_time=cloud_time, ledger=ledger, busy=busy, wait_s=float(wait_s))

    def encode(self) -> bytes:
        return dump_json({"seq": self.seq, "cloud_time": self.cloud_time,
                          **({"ledger": self.ledger} if self.ledger else {}),
                          **({"busy": True} if self.busy else {}),
                          **({"wait_s": round(self.wait_s, 1)} if self.busy and self.wait_s else {})})


@dataclass(frozen=True, slots=True)
class Command:
    """An order from the cloud to one machine; refused by the machine once expired or seen before."""

    id: str
    kind: str
    issued_at: str
    expires_at: str
    args: dict = field(default_factory=dict)

    @classmethod
    def decode(cls, payload: bytes) -> "Command":
        obj = load_json(payload, "cmd")
        cmd_id = _ident(obj, "id", "cmd")
        where = f"cmd {cmd_id}"
        kind = _get(obj, "kind", str, where)
        spec = COMMAND_KINDS.get(kind)
        if spec is None:
            raise ProtocolError(f"{where}: unknown command kind {kind!r}")
        issued = _get(obj, "issued_at", str, where)
        expires = _get(obj, "expires_at", str, where)
        if parse_time(expires, f"{where}: expires_at") < parse_time(issued, f"{where}: issued_at"):
            raise ProtocolError(f"{where}: expires_at is before issued_at")
        args = _get(obj, "args", dict, where)
        for key, typ in spec.items():
            _get(args, key, typ, f"{where} args")
        if kind == "vend":
            _ident(args, "order_id", f"{where} args")
            if not SLOT_RE.match(args["slot"]):
                raise ProtocolError(f"{where} args: slot {args['slot']!r} is not a slot code like 'A1'")
        if kind == "resend":
            _seq(args, "from_seq", f"{where} args")
        return cls(cmd_id, kind, issued, expires, args)

    def encode(self) -> bytes:
        return dump_json(asdict(self))

    def expired(self, now: datetime) -> bool:
        return now > parse_time(self.expires_at, "expires_at")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a machine did with a command; the ledger event with the same facts is what money follows."""

    id: str
    status: str
    reason: str = ""
    seq: int = 0

    @classmethod
    def decode(cls, payload: bytes) -> "CommandResult":
        obj = load_json(payload, "cmd/result")
        cmd_id = _ident(obj, "id", "cmd/result")
        status = _get(obj, "status", str, "cmd/result")
        if status not in RESULT_STATUSES:
            raise ProtocolError(f"cmd/result: status {status!r} is not one of {', '.join(RESULT_STATUSES)}")
        return cls(cmd_id, status, _get(obj, "reason", str, "cmd/result", optional=True) or "",
                   _seq(obj, "seq", "cmd/result", minimum=0, optional=True) or 0)

    def encode(self) -> bytes:
        return dump_json(asdict(self))


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Best-effort readings: temperature, door, radio signal."""

    temperature_c: float | None = None
    door_open: bool | None = None
    rssi_dbm: int | None = None

    @classmethod
    def decode(cls, payload: bytes) -> "Telemetry":
        obj = load_json(payload, "telemetry")
        temp = _get(obj, "temperature_c", (int, float), "telemetry", optional=True)
        if isinstance(temp, bool) or (temp is not None and not -60 <= temp <= 100):
            raise ProtocolError(f"telemetry: temperature_c {temp!r} is outside -60..100")
        return cls(temp, _get(obj, "door_open", bool, "telemetry", optional=True),
                   _get(obj, "rssi_dbm", int, "telemetry", optional=True))

    def encode(self) -> bytes:
        return dump_json(asdict(self))


@dataclass(frozen=True, slots=True)
class ConfigSlot:
    """One slot of a planogram: what it holds (the product's name, for the screen), its price and how
    many it takes; ``par`` is how full a technician fills it."""

    code: str
    product: str
    price: int
    currency: str
    capacity: int
    par: int

    @classmethod
    def from_obj(cls, obj: Any, where: str) -> "ConfigSlot":
        if not isinstance(obj, dict):
            raise ProtocolError(f"{where}: a slot must be an object")
        code = _get(obj, "code", str, where)
        if not SLOT_RE.match(code):
            raise ProtocolError(f"{where}: code {code[:10]!r} is not a slot code like 'A1'")
        where = f"{where} ({code})"
        product = _get(obj, "product", str, where)
        if not 1 <= len(product) <= 80 or not product.isprintable():
            raise ProtocolError(f"{where}: product must be 1-80 printable characters")
        price = _get(obj, "price", int, where)
        if not 0 <= price <= MAX_PRICE:
            raise ProtocolError(f"{where}: price must be 0-{MAX_PRICE} minor units, got {price}")
        currency = _get(obj, "currency", str, where)
        if not CURRENCY_RE.match(currency):
            raise ProtocolError(f"{where}: currency {currency[:10]!r} is not an ISO 4217 code like 'CNY'")
        capacity = _get(obj, "capacity", int, where)
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ProtocolError(f"{where}: capacity must be 1-{MAX_CAPACITY}, got {capacity}")
        par = _get(obj, "par", int, where)
        if not 0 <= par <= capacity:
            raise ProtocolError(f"{where}: par must be 0-{capacity} (the capacity), got {par}")
        return cls(code, product, price, currency, capacity, par)


@dataclass(frozen=True, slots=True)
class Config:
    """A machine's planogram, sent retained on its ``config`` topic. Versions rise by one with every edit
    in the cloud; a machine applies only a version newer than the one it has."""

    version: int
    slots: tuple[ConfigSlot, ...]

    @classmethod
    def decode(cls, payload: bytes) -> "Config":
        obj = load_json(payload, "config")
        version = _seq(obj, "version", "config")
        where = f"config version {version}"
        raw = _get(obj, "slots", list, where)
        if not 1 <= len(raw) <= MAX_CONFIG_SLOTS:
            raise ProtocolError(f"{where}: {len(raw)} slots; a planogram has 1-{MAX_CONFIG_SLOTS}")
        slots = tuple(ConfigSlot.from_obj(s, f"{where} slots[{i}]") for i, s in enumerate(raw))
        seen: set[str] = set()
        for s in slots:
            if s.code in seen:
                raise ProtocolError(f"{where}: slot {s.code} appears twice")
            seen.add(s.code)
        return cls(version, slots)

    def encode(self) -> bytes:
        return dump_json({"version": self.version, "slots": [asdict(s) for s in self.slots]})


DECODERS = {
    "status": Status.decode,
    "events": EventBatch.decode,
    "ack": Ack.decode,
    "cmd": Command.decode,
    "cmd/result": CommandResult.decode,
    "telemetry": Telemetry.decode,
    "config": Config.decode,
}


def decode(kind: str, payload: bytes):
    """Decode the payload of a topic kind into its message type."""
    try:
        decoder = DECODERS[kind]
    except KeyError:
        raise ProtocolError(f"no message type for topic kind {kind!r}") from None
    try:
        return decoder(payload)
    except RecursionError:
        # load_json bounds the nesting, so this is a guard for a checker that recurses: a bad message,
        # never a crash of the consumer.
        raise ProtocolError(f"{kind}: nested too deep") from None
