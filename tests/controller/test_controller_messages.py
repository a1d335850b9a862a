"""The daemon and what the cloud sends it: poison messages on every topic it reads, and the cloud's clock
learned from every message, with a fake clock and the simulated hardware (no sleeps)."""

import logging
from datetime import datetime, timezone

import pytest

from controller.inbox import MqttMessage
from protocol import topics
from protocol.messages import Ack, format_time
from tests.controller.test_controller_planogram import T0, Clock, Link, make

POISON = b"[" * 5000


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def controller(tmp_path, clock):
    c = make(tmp_path, clock)
    c.link = Link()
    yield c
    c.hardware.close()
    c.ledger.close()


@pytest.mark.parametrize("kind", ["cmd", "ack", "config"])
def test_deep_nesting_on_any_topic_is_counted_and_dropped(controller, kind):
    head = controller.ledger.head
    controller.handle(MqttMessage(topics.topic("pm-1", kind), POISON))
    assert controller.rejected_messages == 1
    assert controller.ledger.head == head  # nothing recorded, nothing acted on


def test_a_retained_bad_config_arriving_on_every_reconnect_is_logged_once(controller, caplog):
    caplog.set_level(logging.INFO, logger="controller.daemon")
    for _ in range(3):  # the broker hands the retained copy over on each connect
        controller.handle(MqttMessage(topics.topic("pm-1", "config"), POISON))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "deep" in warnings[0].getMessage()
    assert controller.rejected_messages == 3


class SteppedClock(Clock):
    """The daemon's clocks, with a wall clock that the test can step as NTP does."""

    def __init__(self):
        super().__init__()
        self.step = 0.0

    def wallclock(self):
        return super().wallclock() + self.step


def ack(c, seq, cloud_time):
    c.handle(MqttMessage(topics.topic("pm-1", "ack"), Ack(seq, format_time(
        datetime.fromtimestamp(cloud_time, timezone.utc))).encode()))


def test_an_idle_machine_keeps_the_cloud_clock_across_a_wall_clock_step(tmp_path):
    # Booted an hour behind; a heartbeat ack (seq 0: it says nothing of events) tells the cloud's clock;
    # then NTP steps the wall clock right and no event is written, so no other ack comes.
    clock = SteppedClock()
    clock.step = -3600
    c = make(tmp_path, clock)
    c.link = Link()
    try:
        cloud = T0 + clock.t
        ack(c, 0, cloud)
        assert c.ledger.acked == 0 and c.sync.clock_synced
        assert c.cloud_now() == pytest.approx(cloud)
        clock.step, clock.t = 0.0, clock.t + 5
        c.tick(clock.t)
        assert c.cloud_now() == pytest.approx(cloud + 5)
        assert c.screen.now == pytest.approx(cloud + 5)  # the QR code is signed with the cloud's time
    finally:
        c.hardware.close()
        c.ledger.close()


def test_an_ack_for_another_ledger_never_marks_this_ledgers_events_acked(controller, clock):
    # Found by the fault run: a new card starts a new ledger at seq 1 while acks for the old one (queued in
    # the machine's broker session, or replayed) still arrive. Taken as ours, "seq 123" marked every new
    # event acked before the cloud had one of them, and an idle machine never sent them.
    for n in range(3):
        controller.record("restock", {"slot": "A1", "count": n})
    old = Ack(123, format_time(datetime.fromtimestamp(T0 + clock.t, timezone.utc)), ledger="an-old-ledger")
    controller.handle(MqttMessage(topics.topic("pm-1", "ack"), old.encode()))
    # Nor its clock: it may have waited in the broker since long before this ledger began.
    assert controller.ledger.acked == 0 and not controller.sync.clock_synced
    ours = Ack(2, format_time(datetime.fromtimestamp(T0 + clock.t, timezone.utc)),
               ledger=controller.ledger.ledger_id)
    controller.handle(MqttMessage(topics.topic("pm-1", "ack"), ours.encode()))
    assert controller.ledger.acked == 2
