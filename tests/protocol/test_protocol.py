"""Unit tests for the wire contract in protocol/: topics, messages and the QR token."""

import dataclasses
import json
from datetime import timedelta

import pytest
from hypothesis import given, settings, strategies as st

from protocol import ProtocolError, token, topics
from protocol.messages import (
    GENESIS_HASH, MAX_BATCH_EVENTS, MAX_PAYLOAD_BYTES, Ack, Command, CommandResult, Event, EventBatch,
    Status, Telemetry, decode, format_time, utcnow,
)


def chain(specs, start_seq=1, boot=0):
    """Events made with Event.make from (kind, data) pairs, each chained to the one before."""
    events, prev, now = [], GENESIS_HASH, utcnow()
    for i, (kind, data) in enumerate(specs):
        ev = Event.make(start_seq + i, now + timedelta(seconds=i), boot, True, kind, data, prev)
        events.append(ev)
        prev = ev.hash
    return events


def payload(events):
    """A raw events payload, from Event objects or plain dicts, without any validation."""
    objs = [e.to_obj() if isinstance(e, Event) else e for e in events]
    return json.dumps({"v": 1, "events": objs}).encode()


def rejects(decoder, data, *fragments, exc=ProtocolError):
    with pytest.raises(exc) as info:
        decoder(data)
    for fragment in fragments:
        assert fragment in str(info.value)


SPECS = [("boot", {"firmware": "1.2.3"}),
         ("vend.started", {"order_id": "o1", "cmd_id": "c1", "slot": "A1"}),
         ("vend.succeeded", {"order_id": "o1", "slot": "A1", "turns": 1}),
         ("restock", {"slot": "B12", "count": 5})]


@pytest.mark.parametrize("kind", sorted(topics.KINDS))
def test_topic_and_parse_round_trip(kind):
    name = topics.topic("machine-01", kind)
    assert name == f"vend/v1/machine-01/{kind}"
    assert topics.parse(name) == ("machine-01", kind)


@pytest.mark.parametrize("name, fragment", [
    ("vend/v2/m1/status", "not under vend/v1/"),
    ("other/v1/m1/status", "not under vend/v1/"),
    ("vend/v1/M1/status", "machine id"),
    ("vend/v1/" + "a" * 33 + "/status", "machine id"),
    ("vend/v1//status", "machine id"),
    ("vend/v1/-m1/status", "machine id"),
    ("vend/v1/m1/bogus", "unknown kind"),
    ("vend/v1/m1", "unknown kind"),
    ("vend/v1/m1/cmd/extra", "unknown kind"),
])
def test_parse_rejects_foreign_topics(name, fragment):
    rejects(topics.parse, name, fragment)


def test_topic_rejects_bad_machine_id_and_kind():
    rejects(lambda k: topics.topic("m1", k), "nope", "unknown topic kind")
    rejects(lambda m: topics.topic(m, "status"), "Bad", "machine id")
    assert topics.check_machine_id("a" * 32) == "a" * 32


def test_subscription_with_and_without_shared_group():
    assert topics.subscription("events") == "vend/v1/+/events"
    assert topics.subscription("cmd/result", "cloud") == "$share/cloud/vend/v1/+/cmd/result"
    rejects(topics.subscription, "nope", "unknown topic kind")


def test_event_make_builds_a_hash_chain():
    events = chain(SPECS)
    assert events[0].prev_hash == GENESIS_HASH
    for a, b in zip(events, events[1:]):
        assert b.prev_hash == a.hash and b.seq == a.seq + 1


def test_event_make_rejects_unknown_kind():
    with pytest.raises(ProtocolError, match="unknown event kind"):
        Event.make(1, utcnow(), 0, True, "nope", {}, GENESIS_HASH)


def test_event_batch_round_trip():
    batch = EventBatch(tuple(chain(SPECS, start_seq=41)))
    again = EventBatch.decode(batch.encode())
    assert again == batch
    assert decode("events", batch.encode()) == batch


def test_event_batch_accepts_extra_data_fields():
    events = chain([("door.opened", {"extra": [1, 2]})])
    assert EventBatch.decode(payload(events)).events[0].data == {"extra": [1, 2]}


def _tamper(index, **changes):
    """A valid chain's objects with fields of one event changed after hashing."""
    objs = [e.to_obj() for e in chain(SPECS)]
    objs[index].update(changes)
    return payload(objs)


@pytest.mark.parametrize("data, fragments", [
    (b"{not json", ["not valid JSON"]),
    (b"\xff\xfe", ["not valid JSON"]),
    (b"[1, 2]", ["must be a JSON object", "list"]),
    (b'{"v": 2, "events": []}', ["protocol version 2"]),
    (b'{"events": []}', ["protocol version None"]),
    (b'{"v": 1, "events": []}', ["empty batch"]),
    (b'{"v": 1}', ["missing field 'events'"]),
    (b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", ["over the", str(MAX_PAYLOAD_BYTES)]),
    (b'{"v": 1, "events": [' + b"0," * MAX_BATCH_EVENTS + b"0]}", ["limit 1000"]),
    (b'{"v": 1, "events": [5]}', ["must be an object"]),
])
def test_event_batch_rejects_malformed_payloads(data, fragments):
    rejects(EventBatch.decode, data, *fragments)


def test_event_batch_rejects_non_consecutive_seqs():
    a = chain(SPECS[:1], start_seq=1)[0]
    b = Event.make(3, utcnow(), 0, True, "door.opened", {}, a.hash)
    rejects(EventBatch.decode, payload([a, b]), "seq 3 follows 1")


def test_event_batch_rejects_broken_chain():
    a = chain(SPECS[:1])[0]
    b = Event.make(2, utcnow(), 0, True, "door.opened", {}, "f" * 64)
    rejects(EventBatch.decode, payload([a, b]), "hash chain broken between seq 1 and 2")


@pytest.mark.parametrize("index, changes, fragments", [
    (2, {"data": {"order_id": "o1", "slot": "A1", "turns": 2}}, ["seq 3", "hash does not match"]),
    (0, {"boot": 1}, ["hash does not match"]),
    (1, {"clock_synced": False}, ["hash does not match"]),
    (0, {"kind": "fw.flashed"}, ["unknown event kind 'fw.flashed'"]),
    (0, {"data": {}}, ["missing field 'firmware'"]),
    (0, {"seq": True}, ["'seq' must be an integer", "True"]),
    (0, {"seq": 0}, ["'seq' must be between 1"]),
    (0, {"boot": -1}, ["'boot' must be between 0"]),
    (2, {"data": {"order_id": "o1", "slot": "A1", "turns": True}}, ["'turns' must be an integer"]),
    (3, {"data": {"slot": "B12", "count": -1}}, ["count must be 0-100000"]),
    (3, {"data": {"slot": "a1", "count": 1}}, ["slot 'a1' is not a slot code"]),
    (3, {"data": {"slot": "A123", "count": 1}}, ["is not a slot code"]),
    (0, {"ts": "2024-01-01T12:00:00"}, ["has no time zone"]),
    (0, {"ts": "yesterday"}, ["is not an ISO 8601 time"]),
    (0, {"hash": "A" * 64}, ["64 lowercase hex"]),
    (0, {"clock_synced": 1}, ["'clock_synced' must be bool"]),
])
def test_event_batch_rejects_bad_events(index, changes, fragments):
    rejects(EventBatch.decode, _tamper(index, **changes), *fragments)


def test_event_batch_rejects_data_altered_after_hashing_in_place():
    events = chain(SPECS)
    events[3].data["count"] = 500  # the frozen event still carries the old hash
    rejects(EventBatch.decode, EventBatch(tuple(events)).encode(), "seq 4", "hash does not match")


def test_status_round_trip_and_defaults():
    s = Status(True, "1.0.0", ledger_head=12, planogram_version=3, boot=2)
    assert Status.decode(s.encode()) == s
    assert decode("status", b'{"v":1,"online":false}') == Status(False)
    rejects(Status.decode, b'{"v":1}', "missing field 'online'")
    rejects(Status.decode, b'{"v":1,"online":1}', "'online' must be bool")
    rejects(Status.decode, b'{"v":1,"online":true,"ledger_head":-1}', "'ledger_head' must be between 0")


def test_ack_round_trip_and_rejections():
    a = Ack(7, format_time(utcnow()))
    assert Ack.decode(a.encode()) == a
    rejects(Ack.decode, b'{"v":1,"seq":1,"cloud_time":"2024-01-01T00:00:00"}', "no time zone")
    rejects(Ack.decode, b'{"v":1,"seq":false,"cloud_time":"2024-01-01T00:00:00+00:00"}', "must be an integer")


def test_a_busy_ack_reads_as_a_plain_clock_ack_to_an_older_controller():
    now = format_time(utcnow())
    plain = Ack(7, now).encode()
    assert json.loads(plain) == {"v": 1, "seq": 7, "cloud_time": now}  # the ack's bytes as before issue 16
    busy = Ack(0, now, busy=True)
    assert Ack.decode(busy.encode()) == busy
    # What an older controller reads of it (seq and cloud_time; it ignores fields it does not know): an ack of
    # the clock alone, which never moves its acked mark.
    old = json.loads(busy.encode())
    assert (old["seq"], old["cloud_time"]) == (0, now)
    assert Ack.decode(b'{"v":1,"seq":3,"cloud_time":"' + now.encode() + b'"}').busy is False  # an older cloud's
    rejects(Ack.decode, b'{"v":1,"seq":3,"busy":true,"cloud_time":"' + now.encode() + b'"}', "busy goes with seq 0")
    rejects(Ack.decode, b'{"v":1,"seq":0,"busy":1,"cloud_time":"' + now.encode() + b'"}', "'busy' must be bool")


def test_a_busy_ack_may_say_how_long_the_queue_is_and_nonsense_there_is_refused():
    now = format_time(utcnow())
    told = Ack(0, now, busy=True, wait_s=42.25)
    assert json.loads(told.encode())["wait_s"] == 42.2
    assert Ack.decode(told.encode()).wait_s == 42.2
    assert "wait_s" not in json.loads(Ack(0, now, busy=True).encode())
    head = b'{"v":1,"seq":0,"cloud_time":"' + now.encode() + b'",'
    for bad in (b'"busy":true,"wait_s":-1}', b'"busy":true,"wait_s":"5"}', b'"busy":true,"wait_s":true}',
                b'"busy":true,"wait_s":NaN}', b'"busy":true,"wait_s":1e9}'):
        rejects(Ack.decode, head + bad, "wait_s must be a number of seconds from 0 to 600")
    rejects(Ack.decode, head + b'"wait_s":5}', "wait_s goes with busy")


def _cmd(kind="vend", args=None, expires_in=60, cmd_id="c-1"):
    now = utcnow()
    args = {"order_id": "o-1", "slot": "A1"} if args is None else args
    return Command(cmd_id, kind, format_time(now), format_time(now + timedelta(seconds=expires_in)), args)


def test_command_round_trip():
    for c in (_cmd(), _cmd("resend", {"from_seq": 10})):
        assert Command.decode(c.encode()) == c
        assert decode("cmd", c.encode()) == c


@pytest.mark.parametrize("cmd, fragments", [
    (_cmd(kind="reboot", args={}), ["unknown command kind 'reboot'"]),
    (_cmd(expires_in=-1), ["expires_at is before issued_at"]),
    (_cmd(args={"order_id": "o-1", "slot": "Z"}), ["slot 'Z' is not a slot code"]),
    (_cmd(args={"order_id": "o 1", "slot": "A1"}), ["'order_id'", "is not an id"]),
    (_cmd(args={"order_id": "o-1"}), ["missing field 'slot'"]),
    (_cmd("resend", {}), ["missing field 'from_seq'"]),
    (_cmd("resend", {"from_seq": 0}), ["'from_seq' must be between 1"]),
    (_cmd(cmd_id="bad id!"), ["'id'", "is not an id"]),
])
def test_command_rejections(cmd, fragments):
    rejects(Command.decode, cmd.encode(), *fragments)


def test_command_expired():
    c = _cmd(expires_in=60)
    now = utcnow()
    assert not c.expired(now)
    assert c.expired(now + timedelta(seconds=120))


def test_command_result_round_trip_and_rejections():
    r = CommandResult("c-1", "succeeded", "", 42)
    assert CommandResult.decode(r.encode()) == r
    assert decode("cmd/result", b'{"v":1,"id":"c-1","status":"done"}') == CommandResult("c-1", "done")
    rejects(CommandResult.decode, b'{"v":1,"id":"c-1","status":"maybe"}', "status 'maybe' is not one of")
    rejects(CommandResult.decode, b'{"v":1,"status":"done"}', "missing field 'id'")


def test_telemetry_round_trip_and_rejections():
    t = Telemetry(4.5, False, -70)
    assert Telemetry.decode(t.encode()) == t
    assert decode("telemetry", b'{"v":1}') == Telemetry()
    rejects(Telemetry.decode, b'{"v":1,"temperature_c":150}', "outside -60..100")
    rejects(Telemetry.decode, b'{"v":1,"temperature_c":true}', "temperature_c")
    rejects(Telemetry.decode, b'{"v":1,"rssi_dbm":-70.5}', "'rssi_dbm' must be an integer")


def test_decode_rejects_unknown_topic_kind():
    rejects(lambda p: decode("bogus", p), b'{"v":1}', "no message type for topic kind 'bogus'")


SECRET, OTHER = b"s" * 32, b"o" * 32
T0, TTL, SKEW, PERIOD = 1_700_000_000.0, 60.0, 5.0, 30.0


def test_token_round_trip():
    tok = token.make("m-1", SECRET, T0 + 7, PERIOD, nonce=3)
    window = int((T0 + 7) // PERIOD * PERIOD)
    assert token.machine_of(tok) == "m-1"
    assert token.verify(tok, [SECRET], T0 + 10, TTL, SKEW) == token.TokenInfo("m-1", window, 3)


def test_token_wrong_secret_refused():
    tok = token.make("m-1", SECRET, T0, PERIOD)
    rejects(lambda t: token.verify(t, [OTHER], T0, TTL, SKEW), tok, "signature is not valid")
    rejects(lambda t: token.verify(t, [], T0, TTL, SKEW), tok, "signature is not valid")


def test_token_any_secret_in_rotation_accepted():
    for s in (SECRET, OTHER):
        tok = token.make("m-1", s, T0, PERIOD)
        assert token.verify(tok, [OTHER, SECRET], T0, TTL, SKEW).machine_id == "m-1"


@pytest.mark.parametrize("part, value", [(0, "m-2"), (1, None), (2, "4")])
def test_token_tampered_fields_refused(part, value):
    parts = token.make("m-1", SECRET, T0, PERIOD, nonce=3).split(".")
    parts[part] = value if value is not None else str(int(parts[1]) - int(PERIOD))
    tampered = ".".join(parts)
    rejects(lambda t: token.verify(t, [SECRET], T0, TTL, SKEW), tampered, "signature is not valid")


def test_token_expiry_and_skew():
    tok = token.make("m-1", SECRET, T0, PERIOD)
    window = token.parse(tok)[1]
    verify = lambda now: token.verify(tok, [SECRET], now, TTL, SKEW)  # noqa: E731
    assert verify(window + TTL + SKEW).window == window  # the last accepted instant
    rejects(verify, window + TTL + SKEW + 0.001, "expired", exc=token.TokenExpired)
    rejects(verify, window + TTL + 100, "expired 100 s ago", exc=token.TokenExpired)
    assert verify(window - SKEW).window == window  # machine clock slightly ahead
    rejects(verify, window - SKEW - 0.001, "from the future", exc=token.TokenExpired)
    assert issubclass(token.TokenExpired, ProtocolError)


@pytest.mark.parametrize("garbage", ["", "a.b", "x" * 500, "A.1.0.sig", "m-1.x.0.sig", "m-1.1.-2.sig",
                                     "m-1.1.0.sig.extra", "m-1." + "9" * 12 + ".0.sig", None, 12345])
def test_token_garbage_raises_protocol_error(garbage):
    with pytest.raises(ProtocolError, match="QR code not recognised"):
        token.verify(garbage, [SECRET], T0, TTL, SKEW)
    with pytest.raises(ProtocolError):
        token.machine_of(garbage)


_slot = st.from_regex(r"\A[A-Z][0-9]{1,2}\Z")
_text = st.text(max_size=12)
_ident = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,16}\Z")
_count = st.integers(min_value=0, max_value=10_000)
_event_spec = st.one_of(
    st.tuples(st.just("boot"), st.fixed_dictionaries({"firmware": _text})),
    st.tuples(st.just("vend.started"), st.fixed_dictionaries({"order_id": _ident, "cmd_id": _ident, "slot": _slot})),
    st.tuples(st.just("vend.succeeded"), st.fixed_dictionaries({"order_id": _ident, "slot": _slot, "turns": _count})),
    st.tuples(st.just("vend.failed"), st.fixed_dictionaries({"order_id": _ident, "slot": _slot, "reason": _text})),
    st.tuples(st.just("restock"), st.fixed_dictionaries({"slot": _slot, "count": _count})),
    st.tuples(st.just("stock.adjusted"), st.fixed_dictionaries({"slot": _slot, "count": _count, "reason": _text})),
    st.tuples(st.sampled_from(["door.opened", "door.closed", "drop.unexpected"]),
              st.fixed_dictionaries({}, optional={"note": _text, "n": st.integers()})),
    st.tuples(st.just("config.applied"), st.fixed_dictionaries({"version": _count})),
)


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(_event_spec, min_size=1, max_size=20), start=st.integers(1, 2**62),
       boot=st.integers(0, 1000))
def test_property_event_batch_round_trip(specs, start, boot):
    batch = EventBatch(tuple(chain(specs, start_seq=start, boot=boot)))
    assert EventBatch.decode(batch.encode()) == batch


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(_event_spec, min_size=1, max_size=20), data=st.data())
def test_property_altered_event_data_fails_decode(specs, data):
    events = chain(specs)
    i = data.draw(st.integers(0, len(events) - 1), label="index")
    altered = {**events[i].data, "tampered": data.draw(st.integers() | _text, label="value")}
    events[i] = dataclasses.replace(events[i], data=altered)  # keeps the old hash
    rejects(EventBatch.decode, EventBatch(tuple(events)).encode(), f"seq {events[i].seq}", "hash does not match")


def test_a_selftest_event_holds_its_checks_each_with_a_reason():
    from protocol.messages import _data_ok, check_event_data  # test-only: the two checks must agree

    good = {"checks": [{"check": "pins", "ok": True, "detail": "4 motor outputs claimed and off"}], "passed": True}
    check_event_data("selftest", good, "events")
    assert _data_ok("selftest", good)
    for bad in ({"checks": []}, {"checks": [{"check": "pins", "ok": "yes", "detail": ""}]},
                {"checks": [{"check": "pins", "ok": True, "detail": "x" * 201}]}, {"checks": "all fine"},
                {"checks": [{"check": "", "ok": True, "detail": ""}] * 17}):
        assert not _data_ok("selftest", bad)
        with pytest.raises(ProtocolError, match="selftest"):
            check_event_data("selftest", bad, "events")
