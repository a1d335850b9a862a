"""The one bounded decode for every MQTT payload (protocol/messages.py:decode): whatever arrives, the only
exception that comes out is ProtocolError, and deep nesting is refused before the JSON parser recurses."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from protocol import ProtocolError
from protocol.messages import DECODERS, MAX_DEPTH, MAX_PAYLOAD_BYTES, decode

KINDS = sorted(DECODERS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("opener", ["[", "{\"a\":"])
def test_deep_nesting_is_a_protocol_error_naming_the_topic(kind, opener):
    # 5000 levels made json.loads raise RecursionError, which no consumer caught as a bad message.
    with pytest.raises(ProtocolError) as info:
        decode(kind, (opener * 5000).encode())
    assert kind in str(info.value) and "deep" in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_nesting_inside_an_otherwise_valid_message_is_bounded(kind):
    nested = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(ProtocolError, match="deep"):
        decode(kind, f'{{"v":1,"x":{nested}}}'.encode())


def test_brackets_inside_strings_do_not_count_as_nesting():
    payload = json.dumps({"v": 1, "online": True, "firmware": "[" * 200 + '\\"{' * 50}).encode()
    assert decode("status", payload).online is True


def test_an_oversized_payload_is_refused_before_parsing():
    with pytest.raises(ProtocolError, match="limit"):
        decode("cmd", b"[" * (MAX_PAYLOAD_BYTES + 1))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30)


def _check(kind, payload):
    try:
        decode(kind, payload)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.binary(max_size=300))
def test_any_bytes_decode_or_raise_protocol_error(kind, payload):
    _check(kind, payload)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.text(max_size=200))
def test_any_text_with_lone_surrogates_decodes_or_raises_protocol_error(kind, text):
    _check(kind, text)  # str payloads are encoded with surrogatepass: lone surrogates reach the parser


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.dictionaries(st.sampled_from(
    ["v", "events", "seq", "cloud_time", "id", "kind", "issued_at", "expires_at", "args", "online", "firmware",
     "status", "version", "slots", "temperature_c", "ledger", "ledger_head"]), json_values, max_size=8))
def test_any_json_object_decodes_or_raises_protocol_error(kind, obj):
    obj.setdefault("v", 1)
    _check(kind, json.dumps(obj).encode())
    _check(kind, json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(KINDS), st.integers(0, 3000), st.sampled_from(["[", "{\"k\":", "[{\"a\":"]),
       st.booleans())
def test_any_depth_decodes_or_raises_protocol_error(kind, depth, opener, closed):
    closer = {"[": "]", "{\"k\":": "}", "[{\"a\":": "}]"}[opener]
    body = opener * depth + "1" + (closer * depth if closed else "")
    _check(kind, f'{{"v":1,"events":{body}}}'.encode())
    _check(kind, body.encode())


def test_an_events_batch_without_a_ledger_id_still_decodes_and_a_bad_id_is_refused():
    # Controllers from before ledger ids send none: the cloud treats such a batch as the ledger it follows.
    from tests.cloud_fixtures import Chain

    chain = Chain()
    chain.add("door.opened")
    obj = json.loads(chain.batch(1).encode())
    assert "ledger" not in obj and decode("events", json.dumps(obj).encode()).ledger == ""
    obj["ledger"] = "not an id!"
    with pytest.raises(ProtocolError, match="ledger"):
        decode("events", json.dumps(obj).encode())
