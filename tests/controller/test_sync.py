"""Unit tests for controller/sync.py: the publish window, acks, resends and the cloud's clock, on a fake clock."""

import logging
from datetime import datetime, timezone

import pytest

from controller.ledger import Ledger
from controller.sync import Heartbeat, Sync
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


class FixedRandom:
    """A random source that answers what it is told: the jitter, chosen by the test."""

    def __init__(self, *values: float):
        self.values = list(values) or [0.0]

    def random(self) -> float:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def make(ledger, rng=None, **options) -> Sync:
    return Sync(ledger, batch_size=BATCH, window=WINDOW, resend_after_s=RESEND_S, rng=rng or FixedRandom(0.0),
                **options)


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


def test_each_resend_without_an_ack_waits_twice_as_long_up_to_the_cap(ledger):
    fill(ledger, 2)
    sync = make(ledger, resend_max_s=35.0)
    sync.connected(T0)
    resent_at, t = [], T0
    while t < T0 + 200:
        t += 0.5
        if sync.tick(t):
            resent_at.append(t - T0)
    # 10 s, then 20 s later, then 35 s (the cap, not 40), and 35 s again
    assert resent_at[:5] == [10.5, 31.0, 66.5, 102.0, 137.5]


def test_an_ack_resets_the_backoff(ledger):
    fill(ledger, 4)
    sync = make(ledger)
    sync.connected(T0)
    assert sync.tick(T0 + 10.5)  # resend 1; the next would wait 20 s
    sync.ack(2, WALL, T0 + 12, WALL)
    assert sync.tick(T0 + 21.9) == []
    assert seqs(sync.tick(T0 + 22.1)) == [[3, 4]]  # 10 s after the ack again, not 20


def test_the_jitter_spreads_machines_cut_off_together(ledger, tmp_path):
    # Two machines, the same backlog, the same moment of reconnection: their resends do not coincide.
    other = Ledger(str(tmp_path / "other.db"))
    try:
        fill(ledger, 2)
        fill(other, 2)
        first, second = make(ledger, FixedRandom(0.1)), make(other, FixedRandom(0.9))
        first.connected(T0)
        second.connected(T0)
        when = {}
        for name, sync in (("first", first), ("second", second)):
            t = T0
            while not sync.tick(t):
                t += 0.1
            when[name] = t - T0
        # resend_after_s * (1 + jitter * r), jitter 0.5: 10.5 s and 14.5 s
        assert when["first"] == pytest.approx(10.5, abs=0.11) and when["second"] == pytest.approx(14.5, abs=0.11)
    finally:
        other.close()


def test_a_resend_sends_one_batch_until_an_ack_opens_the_window_again(ledger):
    fill(ledger, 10)
    sync = make(ledger)
    assert len(sync.connected(T0)) == WINDOW
    assert seqs(sync.tick(T0 + RESEND_S + 0.1)) == [[1, 2]]  # not the whole window again
    assert sync.due(T0 + 11) == []
    assert seqs(sync.ack(2, WALL, T0 + 12, WALL)) == [[3, 4], [5, 6], [7, 8]]


def test_never_more_than_a_window_in_flight_whatever_happens(ledger):
    # Acks, resends, resend requests and refused publishes in any order: what is handed out beyond the acked
    # mark never exceeds the window.
    import random

    rng = random.Random(16)
    fill(ledger, 60)
    sync = make(ledger, rng=rng)
    t = T0
    out = sync.connected(t)
    for _ in range(2000):
        t += rng.uniform(0, 3)
        step = rng.random()
        if step < 0.3:
            out = sync.ack(rng.randint(ledger.acked, max(ledger.acked, sync.sent_upto)), WALL, t, WALL)
        elif step < 0.4:
            out = sync.resend_from(rng.randint(1, ledger.head), t)
        elif step < 0.5 and out:
            sync.not_sent(out[rng.randrange(len(out))])
            out = []
        elif step < 0.6:
            fill(ledger, 1)
            out = sync.due(t)
        else:
            out = sync.tick(t)
        assert sync.sent_upto - ledger.acked <= WINDOW * BATCH
        assert all(len(b.events) <= BATCH for b in out)


def test_events_written_while_a_batch_is_in_flight_wait_for_its_ack_and_go_together(ledger):
    sync = Sync(ledger, batch_size=5, window=WINDOW, resend_after_s=RESEND_S, rng=FixedRandom(0.0))
    sync.connected(T0)
    fill(ledger, 1)
    assert seqs(sync.due(T0 + 1)) == [[1]]  # nothing in flight: the event goes at once
    fill(ledger, 1)
    assert sync.due(T0 + 1.2) == []  # one event in flight: a batch of one more waits for its ack
    fill(ledger, 1)
    assert sync.due(T0 + 1.4) == []
    assert seqs(sync.ack(1, WALL, T0 + 2, WALL)) == [[2, 3]]  # ... and then they go as one batch


def test_without_coalescing_every_event_goes_at_once(ledger):
    # The link as it was before issue 16 (kept for the fleet benchmark's baseline): one message per event.
    sync = make(ledger, coalesce=False)
    sync.connected(T0)
    fill(ledger, 1)
    assert seqs(sync.due(T0 + 1)) == [[1]]
    fill(ledger, 1)
    assert seqs(sync.due(T0 + 1.2)) == [[2]]


def test_a_full_batch_goes_even_while_others_are_in_flight(ledger):
    sync = make(ledger)
    sync.connected(T0)
    fill(ledger, 1)
    sync.due(T0)
    fill(ledger, BATCH + 1)
    assert seqs(sync.due(T0 + 1)) == [[2, 3]]  # full; the one after it waits


def test_a_busy_cloud_holds_the_resend_but_not_forever(ledger):
    fill(ledger, 2)
    sync = make(ledger)
    sync.connected(T0)
    sync.cloud_busy(T0 + 8)  # "your events are in my queue"
    assert sync.tick(T0 + 12) == []  # 10 s from the notice, not from the send
    assert seqs(sync.tick(T0 + 18.1)) == [[1, 2]]  # no ack and no further word: resent all the same


def test_a_busy_cloud_that_says_how_long_its_queue_is_gets_no_resend_before_then(ledger):
    # A storm: the cloud's queue is a minute deep, far past the resend timer. A machine resending at its timer
    # would add a duplicate behind the same queue, every machine of the fleet at once.
    fill(ledger, 2)
    sync = make(ledger)
    sync.connected(T0)
    sync.cloud_busy(T0 + 1, wait_s=20.0)
    assert sync.tick(T0 + 1 + RESEND_S + 1) == []
    assert sync.tick(T0 + 1 + 20 * 1.5 + 5) == []  # the estimate, and a margin: it is a guess from recent work
    assert seqs(sync.tick(T0 + 1 + 20 * 1.5 + 5.1)) == [[1, 2]]
    sync.cloud_busy(T0 + 100, wait_s=600.0)  # a deep queue, or a wrong guess: a minute at most
    assert seqs(sync.tick(T0 + 100 + 60.1)) == [[1, 2]]


def test_an_ack_ends_the_hold_a_busy_cloud_asked_for(ledger):
    fill(ledger, 2)
    sync = make(ledger)
    sync.connected(T0)
    sync.cloud_busy(T0 + 1, wait_s=60.0)
    sync.ack(2, T0, T0 + 2, T0 + 2)
    fill(ledger, 1)  # the next event goes, then is lost: the timer alone rules again
    assert seqs(sync.due(T0 + 3)) == [[3]]
    assert seqs(sync.tick(T0 + 3 + RESEND_S + 0.1)) == [[3]]


def test_a_busy_notice_with_nothing_in_flight_changes_nothing(ledger):
    sync = make(ledger)
    sync.connected(T0)
    sync.cloud_busy(T0 + 5)
    fill(ledger, 1)
    assert seqs(sync.due(T0 + 6)) == [[1]]


def test_the_status_goes_on_connect_and_every_period_not_per_event():
    beat = Heartbeat(every_s=300.0, on_new_head=False)
    assert beat.due(0, T0)  # first: on connect
    beat.sent(0, T0)
    assert not beat.due(5, T0 + 10)  # a new head: the events say it
    assert beat.due(5, T0 + 300)


def test_the_legacy_heartbeat_told_each_new_head_within_its_gap():
    beat = Heartbeat(every_s=30.0, min_gap_s=2.0)
    beat.sent(0, T0)
    assert not beat.due(1, T0 + 1)
    assert beat.due(1, T0 + 2)


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


def test_a_late_ack_or_one_for_another_ledger_does_not_set_the_clock_back(ledger):
    # The fault run: a new card's first clock came from an ack queued for the card it replaced, a minute old;
    # a command issued then looked fresh and the new card ran the old card's last vend again.
    sync = make(ledger)
    sync.ack(3, WALL - 60, T0, WALL, ledger="f" * 32)  # the old card's ack, delivered now
    assert not sync.clock_synced and sync.cloud_now(WALL, T0) == WALL
    sync.ack(0, WALL, T0, WALL)
    sync.ack(0, WALL - 60, T0 + 1, WALL + 1)  # queued in the broker while we were away
    assert sync.cloud_now(WALL + 1, T0 + 1) == WALL + 1
    sync.ack(0, WALL + 1.5, T0 + 2, WALL + 2)  # half a second behind: a correction, taken
    assert sync.cloud_now(WALL + 2, T0 + 2) == WALL + 1.5
    sync.ack(0, WALL + 600, T0 + 3, WALL + 3)  # ahead: the cloud's clock as it is, taken
    assert sync.cloud_now(WALL + 3, T0 + 3) == WALL + 600


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
