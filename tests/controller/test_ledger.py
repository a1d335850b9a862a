"""Unit tests for controller/ledger.py: the hash-chained SQLite ledger and its projections."""

import json
import sqlite3
from datetime import timedelta

import pytest

from controller.ledger import Ledger, LedgerError
from protocol import ProtocolError
from protocol.messages import GENESIS_HASH, utcnow

NOW = utcnow()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "sub" / "ledger.db")


@pytest.fixture
def ledger(path):
    led = Ledger(path)
    yield led
    led.close()


def add(led, kind, data, i=0):
    return led.append(kind, data, NOW + timedelta(seconds=i), True)


def started(cmd="c-1", order="o-1", slot="A1"):
    return {"order_id": order, "cmd_id": cmd, "slot": slot}


def outcome(kind, cmd="c-1", order="o-1", slot="A1"):
    data = started(cmd, order, slot)
    if kind == "vend.succeeded":
        data["turns"] = 1
    if kind == "vend.failed":
        data.update(reason="no drop seen after 2 turns", turns=2)
    return data


def test_empty_ledger_starts_at_genesis(ledger):
    assert ledger.head == 0
    assert ledger.head_hash == GENESIS_HASH
    assert ledger.acked == 0
    assert ledger.boot_number == 0
    assert ledger.verify() == 0
    assert ledger.interrupted_vend() is None


def test_append_builds_a_gapless_chain_that_verifies(ledger):
    events = [add(ledger, "boot", {"firmware": "1.0"}, 0)]
    events += [add(ledger, "restock", {"slot": "A1", "count": i}, i) for i in range(1, 5)]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS_HASH
    for a, b in zip(events, events[1:]):
        assert b.prev_hash == a.hash
    assert ledger.head == 5 and ledger.head_hash == events[-1].hash
    assert ledger.read(1, 100) == events
    assert ledger.read(2, 2) == events[1:3]
    assert ledger.read(6, 10) == []
    assert ledger.verify() == 5


def test_state_survives_reopening_the_file(path):
    led = Ledger(path)
    led.start_boot()
    for i in range(3):
        add(led, "door.opened", {}, i)
    led.set_acked(2)
    head_hash = led.head_hash
    led.close()

    again = Ledger(path)
    try:
        assert again.head == 3
        assert again.head_hash == head_hash
        assert again.acked == 2
        assert again.boot_number == 1
        assert again.verify() == 3
        assert add(again, "door.closed", {}).prev_hash == head_hash
    finally:
        again.close()


def test_set_acked_only_moves_forward_and_never_past_the_head(ledger):
    for i in range(5):
        add(ledger, "door.opened", {}, i)
    assert ledger.set_acked(3) is True
    assert ledger.acked == 3
    assert ledger.set_acked(2) is False
    assert ledger.acked == 3
    assert ledger.set_acked(3) is False
    assert ledger.set_acked(99) is True
    assert ledger.acked == 5
    assert ledger.set_acked(100) is False
    assert ledger.acked == 5


def test_start_boot_increments_the_boot_number_carried_by_events(ledger):
    assert add(ledger, "door.opened", {}).boot == 0
    assert ledger.start_boot() == 1
    assert add(ledger, "door.opened", {}).boot == 1
    assert ledger.start_boot() == 2
    assert ledger.boot_number == 2
    assert add(ledger, "door.opened", {}).boot == 2
    assert [e.boot for e in ledger.read(1, 10)] == [0, 1, 2]


def test_restock_sets_count_and_vends_change_the_slot(ledger):
    assert ledger.slot("A1") == (0, False)
    add(ledger, "restock", {"slot": "A1", "count": 5})
    assert ledger.slot("A1") == (5, False)
    add(ledger, "vend.started", started("c-1"))
    add(ledger, "vend.succeeded", outcome("vend.succeeded", "c-1"))
    assert ledger.slot("A1") == (4, False)
    add(ledger, "vend.started", started("c-2"))
    add(ledger, "vend.failed", outcome("vend.failed", "c-2"))
    assert ledger.slot("A1") == (4, True)
    add(ledger, "restock", {"slot": "A1", "count": 8})
    assert ledger.slot("A1") == (8, False)
    assert ledger.slot("A2") == (0, False)


def test_a_failed_vend_that_says_the_slot_is_fine_keeps_it_selling(ledger):
    """A cashless session cancelled at the machine (hw/mdb.py) failed before the machine was asked to vend."""
    add(ledger, "restock", {"slot": "A1", "count": 5})
    add(ledger, "vend.started", started("c-1"))
    add(ledger, "vend.failed", {**outcome("vend.failed", "c-1"), "slot_ok": True})
    assert ledger.slot("A1") == (5, False)
    add(ledger, "vend.started", started("c-2"))
    add(ledger, "vend.failed", {**outcome("vend.failed", "c-2"), "slot_ok": 1})  # only JSON true counts
    assert ledger.slot("A1") == (5, True)


def test_vend_succeeded_never_takes_a_count_below_zero(ledger):
    add(ledger, "restock", {"slot": "A1", "count": 0})
    add(ledger, "vend.succeeded", outcome("vend.succeeded"))
    assert ledger.slot("A1") == (0, False)


def test_vend_started_registers_the_command_and_its_outcome_updates_it(ledger):
    assert ledger.command("c-1") is None
    ev = add(ledger, "vend.started", started("c-1"))
    assert ledger.command("c-1") == ("started", "", ev.seq)
    add(ledger, "vend.succeeded", outcome("vend.succeeded", "c-1"))
    assert ledger.command("c-1") == ("succeeded", "", ev.seq)


def test_vend_failed_records_the_reason_on_the_command(ledger):
    add(ledger, "vend.started", started("c-1"))
    add(ledger, "vend.failed", outcome("vend.failed", "c-1"))
    status, reason, _ = ledger.command("c-1")
    assert status == "failed" and "no drop" in reason


def test_interrupted_vend_is_the_last_start_without_an_outcome(ledger):
    add(ledger, "vend.started", started("c-1"))
    add(ledger, "vend.succeeded", outcome("vend.succeeded", "c-1"))
    assert ledger.interrupted_vend() is None
    ev = add(ledger, "vend.started", started("c-2", "o-2"))
    add(ledger, "door.opened", {})
    found = ledger.interrupted_vend()
    assert found is not None and found.seq == ev.seq and found.data["cmd_id"] == "c-2"
    add(ledger, "vend.unknown", {**started("c-2", "o-2"), "started_seq": ev.seq})
    assert ledger.interrupted_vend() is None
    assert ledger.command("c-2")[0] == "unknown"


def test_tampering_with_a_row_breaks_verify_naming_the_seq(path):
    led = Ledger(path)
    for i in range(4):
        add(led, "restock", {"slot": "A1", "count": i}, i)
    led.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET data = ? WHERE seq = 3", [json.dumps({"slot": "A1", "count": 99})])
    conn.close()
    led = Ledger(path)
    try:
        with pytest.raises((LedgerError, ProtocolError)) as info:
            led.verify()
        assert "seq 3" in str(info.value)
    finally:
        led.close()


def test_a_missing_row_breaks_verify_naming_the_seq(path):
    led = Ledger(path)
    for i in range(4):
        add(led, "door.opened", {}, i)
    led.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM events WHERE seq = 2")
    conn.close()
    led = Ledger(path)
    try:
        with pytest.raises(LedgerError, match="seq 2"):
            led.verify()
    finally:
        led.close()


def test_database_is_wal_with_synchronous_full(ledger):
    assert ledger.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_append_is_committed_before_it_returns(ledger, path):
    add(ledger, "door.opened", {})
    ledger.start_boot()
    other = sqlite3.connect(path)
    try:
        assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
        assert dict(other.execute("SELECT key, value FROM meta").fetchall())["boot_count"] == 1
    finally:
        other.close()


def test_a_failing_projection_rolls_back_the_event(ledger):
    add(ledger, "vend.started", started("c-1"))
    head, head_hash = ledger.head, ledger.head_hash
    with pytest.raises(sqlite3.IntegrityError):
        add(ledger, "vend.started", started("c-1", "o-2"))
    assert (ledger.head, ledger.head_hash) == (head, head_hash)
    assert ledger.verify() == head
    assert add(ledger, "door.opened", {}).seq == head + 1
