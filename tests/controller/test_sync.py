"""Unit tests for controller/sync.py: the publish window, acks, resends and the cloud's clock, on a fake clock."""

import logging
from datetime import datetime, timezone

import pytest

from controller.ledger import Ledger
from controller.sync import Sync
from protocol.messages import EventBatch

BATCH, WINDOW, RESEND_S = 2, 3, 10.0
T0 = 1000.0  # monotonic seconds
WALL = 1_700_000_000.0


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.db"))
    yield ledger
    ledger.close()


def fill(ledger, n):
    for i in range(n):
        ledger.append("restock", {"slot": "A1", "count": i}, datetime.now(timezone.utc), True)


def make(ledger) -> Sync:
    return Sync(ledger, batch_size=BATCH, window=WINDOW, resend_after_s=RESEND_S)


def seqs(batches: list[EventBatch]) -> list[list[int]]:
    return [[e.seq for e in b.events] for b in batches]


def test_connecting_sends_at_most_a_window_of_batches_in_order(ledger):
    fill(ledger, 10)
    sync = make(ledger)
    assert seqs(sync.connected(T0)) == [[1, 2], [3, 4], [5, 6]]
    assert sync.sent_upto == 6
    assert sync.due(T0 + 1) == []  # the window is full until an ack comes


def test_an_ack_moves_the_mark_and_opens_the_window(ledger):
    fill(ledger, 10)
    sync = make(ledger)
    sync.connected(T0)
    assert seqs(sync.ack(4, WALL, T0 + 1, WALL)) == [[7, 8], [9, 10]]
    assert ledger.acked == 4
    assert sync.last_progress == T0 + 1


def test_an_ack_that_moves_nothing_sends_nothing(ledger):
    fill(ledger, 4)
    sync = make(ledger)
    sync.connected(T0)
    sync.ack(2, WALL, T0 + 1, WALL)
    assert sync.ack(2, WALL, T0 + 2, WALL) == []
    assert sync.last_progress == T0 + 1


def test_no_ack_within_the_timeout_resends_from_the_mark(ledger):
    fill(ledger, 4)
    sync = make(ledger)
    sync.connected(T0)
    sync.ack(2, WALL, T0, WALL)
    assert sync.tick(T0 + RESEND_S) == []  # not yet: the timeout must pass
    assert seqs(sync.tick(T0 + RESEND_S + 0.1)) == [[3, 4]]
    assert sync.tick(T0 + RESEND_S + 0.2) == []  # the timer starts again from the resend


def test_nothing_in_flight_means_no_resend(ledger):
    fill(ledger, 2)
    sync = make(ledger)
    sync.connected(T0)
    sync.ack(2, WALL, T0, WALL)
    assert sync.tick(T0 + 10 * RESEND_S) == []


def test_the_cloud_can_ask_to_resend_from_any_seq_even_acked_ones(ledger):
    fill(ledger, 6)
    sync = make(ledger)
    sync.connected(T0)
    sync.ack(6, WALL, T0, WALL)
    assert seqs(sync.resend_from(3, T0 + 1)) == [[3, 4], [5, 6]]
    assert ledger.acked == 6  # the mark never goes back


def test_an_ack_beyond_the_ledger_head_is_logged_and_stops_at_the_head(ledger, caplog):
    fill(ledger, 3)
    sync = make(ledger)
    sync.connected(T0)
    with caplog.at_level(logging.ERROR, logger="controller.sync"):
        sync.ack(99, WALL, T0 + 1, WALL)
    assert "cloud acks seq 99 but the ledger ends at 3" in caplog.text
    assert ledger.acked == 3


def test_a_batch_the_link_did_not_take_is_due_again(ledger):
    fill(ledger, 6)
    sync = make(ledger)
    batches = sync.connected(T0)
    sync.not_sent(batches[1])  # the link refused [3, 4], so [5, 6] was never offered either
    assert sync.sent_upto == 2
    assert seqs(sync.due(T0 + 1)) == [[3, 4], [5, 6]]


def test_each_ack_tells_the_cloud_clock(ledger):
    sync = make(ledger)
    assert not sync.clock_synced and sync.cloud_now(WALL, T0) == WALL
    sync.ack(0, WALL + 3600, T0, WALL)  # a Pi that booted an hour behind
    assert sync.clock_synced
    assert sync.cloud_now(WALL + 5, T0 + 5) == WALL + 3605


def test_a_wall_clock_step_with_no_ack_since_does_not_move_the_cloud_clock(ledger):
    # Booted an hour behind; an ack taught the offset; then NTP stepped the wall clock right on an idle
    # machine, so no ack came to correct the offset: the QR codes were an hour in the future.
    sync = make(ledger)
    sync.ack(0, WALL + 3600, T0, WALL)
    assert sync.cloud_now(WALL + 3600 + 10, T0 + 10) == WALL + 3610  # seen before the loop notices the step
    assert sync.check_clock(WALL + 3610, T0 + 10) == 3600
    assert sync.cloud_now(WALL + 3620, T0 + 20) == WALL + 3620
    assert sync.check_clock(WALL + 3620.2, T0 + 20) == 0  # slewing is not a step
    sync.ack(0, WALL + 3700, T0 + 100, WALL + 3700)  # the next ack agrees with the corrected clock
    assert sync.cloud_now(WALL + 3705, T0 + 105) == WALL + 3705


def test_a_step_before_any_ack_is_left_to_the_wall_clock(ledger):
    sync = make(ledger)
    assert sync.check_clock(WALL + 3600, T0) == 0
    assert sync.cloud_now(WALL + 3600, T0) == WALL + 3600


def test_every_batch_carries_the_ledgers_id_made_once_at_creation(tmp_path):
    first = Ledger(str(tmp_path / "a.db"))
    fill(first, 3)
    ident = first.ledger_id
    first.close()
    first = Ledger(str(tmp_path / "a.db"))  # reopened: the same ledger, the same id
    second = Ledger(str(tmp_path / "b.db"))  # a new card: a new ledger
    try:
        assert first.ledger_id == ident and second.ledger_id != ident and len(ident) == 32
        batches = make(first).connected(T0)
        assert {b.ledger for b in batches} == {ident}
        assert EventBatch.decode(batches[0].encode()).ledger == ident
    finally:
        first.close()
        second.close()
