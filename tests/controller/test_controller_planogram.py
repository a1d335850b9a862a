"""The machine's side of planograms: the ledger migration that adds the applied planogram, and the daemon
applying a config from its topic (newer only, never during a vend, refused if it names a slot the machine
lacks), with a fake clock and the simulated hardware."""

import json
import queue
import sqlite3
from datetime import datetime, timezone

import pytest
import sqlite_utils

from controller.config import parse
from controller.daemon import Controller
from controller.inbox import MqttMessage, ServiceRequest
from controller.ledger import Ledger, LedgerError, migrations
from hw import open_hardware
from protocol import topics
from protocol.messages import MAX_PAYLOAD_BYTES, Ack, Command, Config, ConfigSlot, Status, format_time

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc).timestamp()
CONFIG = """
[machine]
id = pm-1
secret = 0123456789abcdef
[cloud]
url = http://cloud.invalid
[hardware]
backend = sim
slots = A1 A2 B1
[sim]
drop_delay_s = 30
display_path = {tmp}/screen.png
[screen]
display = png
[ledger]
path = {tmp}/ledger.db
"""


class Clock:
    """Both of the daemon's clocks, moved only by the test."""

    def __init__(self):
        self.t = 1000.0

    def monotonic(self):
        return self.t

    def wallclock(self):
        return T0 + self.t


class Screen:
    """Remembers what the daemon drew instead of drawing it."""

    url = ""

    def __init__(self):
        self.lines = []

    def refresh(self, now, status):
        self.now = now
        self.lines.append(status)

    def next_nonce(self):
        pass


class Link:
    connected = True

    def __init__(self):
        self.sent = []

    def publish(self, kind, payload, retain=False):
        self.sent.append((kind, payload, retain))
        return True


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def controller(tmp_path, clock):
    c = make(tmp_path, clock)
    yield c
    c.hardware.close()
    c.ledger.close()


def make(tmp_path, clock) -> Controller:
    cfg = parse(CONFIG.format(tmp=tmp_path))
    # No NTP on this machine: the clock is known only once the cloud has said its time (``hear_cloud``).
    c = Controller(cfg, open_hardware(cfg), monotonic=clock.monotonic, wallclock=clock.wallclock,
                   ntp_flag=str(tmp_path / "no-ntp-flag"))
    c.screen = Screen()
    return c


def hear_cloud(c, clock, ahead_s: float = 0.0):
    """The cloud's ack of everything the ledger holds, the events this process wrote included (so it was
    sent after the start, and its clock can be trusted)."""
    c.on_ack(Ack(c.ledger.head, format_time(datetime.fromtimestamp(clock.wallclock() + ahead_s, timezone.utc)),
                 c.ledger.ledger_id))


def config(version, *codes, price=350) -> Config:
    codes = codes or ("A1", "A2")
    return Config(version, tuple(ConfigSlot(code, f"Cola {code}", price, "CNY", 10, 8) for code in codes))


def deliver(c, message, machine="pm-1"):
    payload = message.encode() if hasattr(message, "encode") else message
    c.handle(MqttMessage(topics.topic(machine, "config"), payload))


def kinds(c):
    return [e.kind for e in c.ledger.read(1, 1000)]


def events(c, kind):
    return [e.data for e in c.ledger.read(1, 1000) if e.kind == kind]


# -- the ledger ---------------------------------------------------------------------------------------

def test_the_migration_adds_the_planogram_to_a_ledger_made_before_it(tmp_path):
    path = str(tmp_path / "ledger.db")
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="0003_planogram")  # a ledger as the previous controller left it
    db.execute("INSERT INTO events VALUES (1, '2024-05-01T12:00:00.000000+00:00', 1, 1, 'boot', "
               "'{\"firmware\":\"0.9\"}', ?, ?)", ["0" * 64, "f" * 64])
    db.conn.commit()
    assert "planogram" not in db.table_names()
    db.close()
    ledger = Ledger(path)
    try:
        assert ledger.planogram_version == 0 and ledger.planogram() == {}
        assert ledger.head == 1  # the events are as they were
        event = ledger.apply_planogram(1, config(1).slots, datetime.now(timezone.utc), True)
        assert (event.seq, event.kind, event.data) == (2, "config.applied", {"version": 1, "slots": 2})
    finally:
        ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT slot, product, price, currency, capacity, par FROM planogram ORDER BY slot"
                            ).fetchall() == [("A1", "Cola A1", 350, "CNY", 10, 8), ("A2", "Cola A2", 350, "CNY", 10, 8)]


def test_the_ledger_refuses_a_version_that_is_not_newer_and_writes_nothing(tmp_path):
    ledger = Ledger(str(tmp_path / "l.db"))
    try:
        ledger.apply_planogram(2, config(2).slots, datetime.now(timezone.utc), True)
        with pytest.raises(LedgerError, match="not newer"):
            ledger.apply_planogram(2, config(2, "B1").slots, datetime.now(timezone.utc), True)
        assert ledger.head == 1 and set(ledger.planogram()) == {"A1", "A2"}
    finally:
        ledger.close()


# -- the daemon ---------------------------------------------------------------------------------------

def test_a_newer_config_is_applied_and_recorded_and_the_same_or_older_changes_nothing(controller, clock):
    deliver(controller, config(3))
    assert controller.ledger.planogram_version == 3
    assert events(controller, "config.applied") == [{"version": 3, "slots": 2}]
    (applied,) = [e for e in controller.ledger.read(1, 100) if e.kind == "config.applied"]
    assert applied.ts == format_time(datetime.fromtimestamp(clock.wallclock(), timezone.utc))
    assert controller.planogram["A1"].product == "Cola A1"
    head = controller.ledger.head
    for again in (config(3, price=1), config(2, "B1"), config(1)):  # the retained copy, a stale one, older
        deliver(controller, again)
    assert controller.ledger.head == head
    assert controller.ledger.planogram()["A1"].price == 350
    assert controller.ignored_configs == 3


def test_a_config_waits_until_the_vend_in_progress_is_over(controller, clock):
    deliver(controller, config(1, "A1", "A2", "B1"))
    controller.ledger.append("restock", {"slot": "A1", "count": 5}, datetime.now(timezone.utc), True)
    controller.execute(controller.vend.start("c-1", "o-1", "A1", clock.t))
    deliver(controller, config(2, "A1", price=400))
    clock.t += 1
    controller.tick(clock.t)
    assert controller.ledger.planogram_version == 1 and controller.pending_config.version == 2
    assert kinds(controller)[-1] == "vend.started"
    clock.t += 0.5
    controller.execute(controller.vend.drop_seen(clock.t))
    controller.tick(clock.t)
    assert controller.ledger.planogram_version == 2 and controller.pending_config is None
    assert kinds(controller)[-2:] == ["vend.succeeded", "config.applied"]
    assert set(controller.planogram) == {"A1"}


def test_a_config_naming_a_slot_the_machine_lacks_is_refused_once_and_changes_nothing(controller):
    deliver(controller, config(1))
    deliver(controller, config(2, "A1", "C9", "D7"))
    assert controller.ledger.planogram_version == 1
    assert events(controller, "command.rejected") == [
        {"cmd_id": "config-2", "reason": "no slot C9 D7 on this machine", "version": 2}]
    deliver(controller, config(2, "A1", "C9", "D7"))  # the broker's retained copy, on the next reconnect
    assert len(events(controller, "command.rejected")) == 1
    deliver(controller, config(3, "B1"))  # the next good version is applied
    assert controller.ledger.planogram_version == 3


@pytest.mark.parametrize("payload", [
    b"{not json",
    b'{"v": 1, "version": 0, "slots": []}',
    b'{"v": 1, "version": 4, "slots": [{"code": "A1", "product": "x", "price": -1, "currency": "CNY", '
    b'"capacity": 1, "par": 0}]}',
    b'{"v": 1, "version": 4, "slots": [], "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}',
])
def test_a_malformed_or_oversized_config_is_counted_and_dropped(controller, payload):
    deliver(controller, config(1))
    head = controller.ledger.head
    deliver(controller, payload)
    assert controller.rejected_messages == 1
    assert controller.ledger.head == head and controller.ledger.planogram_version == 1


def test_a_config_on_another_machines_topic_is_dropped(controller):
    deliver(controller, config(1), machine="pm-2")
    assert controller.rejected_messages == 1 and controller.ledger.planogram_version == 0


def test_a_vend_for_a_slot_outside_the_planogram_is_refused(controller, clock):
    controller.ledger.append("restock", {"slot": "B1", "count": 5}, datetime.now(timezone.utc), True)
    hear_cloud(controller, clock)
    now = datetime.fromtimestamp(clock.wallclock(), timezone.utc)
    cmd = Command("c-9", "vend", format_time(now), format_time(now.replace(year=2030)),
                  {"order_id": "o-9", "slot": "B1"})
    assert controller.refusal(cmd) == ""  # no planogram yet: every slot the hardware has may sell
    deliver(controller, config(1, "A1"))
    assert controller.refusal(cmd) == "slot B1 is not in planogram version 1"


def test_status_carries_the_applied_version_and_the_screen_names_the_product(controller, clock):
    controller.link = Link()
    deliver(controller, config(5, "A1"))
    controller.publish_status()
    kind, payload, retain = controller.link.sent[-1]
    assert kind == "status" and retain and Status.decode(payload).planogram_version == 5
    controller.ledger.append("restock", {"slot": "A1", "count": 5}, datetime.now(timezone.utc), True)
    hear_cloud(controller, clock)
    now = datetime.fromtimestamp(clock.wallclock(), timezone.utc)
    controller.on_command(Command("c-1", "vend", format_time(now), format_time(now.replace(year=2030)),
                                  {"order_id": "o-1", "slot": "A1"}))
    # Handed to the screen as a text it says in the machine's languages (controller/words.py).
    assert controller.screen.lines[-1].in_language("en") == "Dropping Cola A1 from A1..."
    controller.safe_state()


def test_the_applied_planogram_survives_a_restart(tmp_path, clock):
    c = make(tmp_path, clock)
    deliver(c, config(7, "B1"))
    c.hardware.close()
    c.ledger.close()
    c = make(tmp_path, clock)
    try:
        assert c.ledger.planogram_version == 7 and set(c.planogram) == {"B1"}
        deliver(c, config(7, "B1"))
        assert events(c, "config.applied") == [{"version": 7, "slots": 1}]
    finally:
        c.hardware.close()
        c.ledger.close()


def test_the_service_status_shows_the_planogram(controller):
    deliver(controller, config(2, "A1"))
    deliver(controller, config(1))
    reply = queue.Queue()
    controller.handle(ServiceRequest({"op": "status"}, reply))
    answer = reply.get_nowait()
    assert answer["planogram"] == {"version": 2, "waiting": None, "ignored": 1,
                                   "slots": {"A1": ["Cola A1", 350, "CNY", 10, 8]}}
    json.dumps(answer)
