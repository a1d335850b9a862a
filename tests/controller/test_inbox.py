"""Unit tests for the controller's inbox: typed messages, each handled by its own handler."""

import queue

import pytest

from controller.config import parse
from controller.daemon import Controller
from controller.inbox import DoorChanged, Drop, HardwareFault, ServiceButtonPressed, ServiceRequest, Wake
from hw import open_hardware

CONFIG = """
[machine]
id = ib-1
secret = 0123456789abcdef
[cloud]
url = http://cloud
[hardware]
backend = sim
slots = A1 A2
[sim]
display_path = {tmp}/screen.png
[ledger]
path = {tmp}/ledger.db
"""


@pytest.fixture
def controller(tmp_path):
    cfg = parse(CONFIG.format(tmp=tmp_path))
    c = Controller(cfg, open_hardware(cfg), monotonic=lambda: 100.0)
    yield c
    c.hardware.close()
    c.ledger.close()


def kinds(c):
    return [e.kind for e in c.ledger.read(1, 100)]


def test_each_message_type_reaches_its_handler(controller):
    controller.handle(DoorChanged(True, 1.0))
    controller.handle(Drop(2.0))  # no vend running: a product fell by itself
    controller.handle(HardwareFault("motor.time_limit", "motor A1", "stuck"))
    controller.handle(DoorChanged(False, 3.0))
    assert kinds(controller) == ["door.opened", "drop.unexpected", "fault", "door.closed"]
    assert controller.ledger.read(3, 1)[0].data == {"code": "motor.time_limit", "detail": "motor A1: stuck",
                                                    "device": "motor A1"}


def test_a_service_request_is_answered_on_its_own_queue(controller):
    reply = queue.Queue()
    controller.handle(ServiceRequest({"op": "restock", "counts": {"A1": 4}}, reply))
    assert reply.get_nowait() == {"ok": True, "head": 1}
    controller.handle(ServiceRequest({"op": "defrost"}, reply))
    assert reply.get_nowait() == {"ok": False, "error": "unknown operation 'defrost'; use status or restock"}


def test_the_service_button_toggles_the_service_screen(controller):
    controller.handle(ServiceButtonPressed(1.0))
    assert controller.service_mode.active(100.0)
    controller.handle(ServiceButtonPressed(2.0))
    assert not controller.service_mode.active(100.0)


def test_a_wake_changes_nothing(controller):
    controller.handle(Wake())
    assert kinds(controller) == []


def test_a_message_of_no_known_type_is_an_error_not_silence(controller):
    with pytest.raises(TypeError, match="no handler for tuple"):
        controller.handle(("drop", 1.0))


class Link:
    connected = True

    def __init__(self):
        self.sent = []

    def publish(self, kind, payload, retain=False):
        self.sent.append((kind, payload))
        return True


def test_a_door_event_is_sent_at_once(controller):
    """The cloud refuses a technician's restock while it last heard the door shut (cloud/stock/visits.py):
    the door's event goes out when it happens, not with whatever is published next."""
    from protocol.messages import EventBatch  # noqa: PLC0415 - only this test reads what was sent

    controller.link = Link()
    controller.handle(DoorChanged(True, 1.0))
    sent = [EventBatch.decode(payload) for kind, payload in controller.link.sent if kind == "events"]
    assert [e.kind for batch in sent for e in batch.events] == ["door.opened"]
