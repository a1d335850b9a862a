"""The daemon and what the cloud sends it: poison messages on every topic it reads, and the cloud's clock
learned from every message, with a fake clock and the simulated hardware (no sleeps)."""

import logging

import pytest

from controller.inbox import MqttMessage
from protocol import topics
from tests.controller.test_controller_planogram import Clock, Link, make

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
