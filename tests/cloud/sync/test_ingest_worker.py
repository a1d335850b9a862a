"""The cloud's ingest worker: one drained group of messages, applied together, and what one bad one does."""

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

import cloud.core.db
import cloud.service
import cloud.core.settings
from cloud.fleet.ledger import events
from cloud.fleet.machines import machines
from cloud.fleet.planogram import machine_configs
from protocol.messages import Ack, EventBatch, Status, parse_time, utcnow
from tests.cloud_fixtures import Chain, add_machine


@pytest.fixture
def cloud_obj(tmp_path):
    settings = cloud.core.settings.Settings(var=str(tmp_path), db=f"sqlite:///{tmp_path}/c.db",
                                       broker="127.0.0.1:1").resolve()
    obj = cloud.service.Cloud(settings)  # never started: the bus refuses to publish, nothing else runs
    cloud.core.db.migrate(obj.engine)
    with obj.engine.begin() as conn:
        add_machine(conn, "m-1")
        add_machine(conn, "m-2")
    yield obj
    obj.engine.dispose()


def stored(cloud_obj, machine_id):
    with cloud_obj.engine.connect() as conn:
        return [seq for (seq,) in conn.execute(sa.select(events.c.seq).where(events.c.machine_id == machine_id)
                                                 .order_by(events.c.seq))]


def restocks(n):
    chain = Chain()
    for i in range(n):
        chain.add("restock", slot="A1", count=i)
    return chain


def test_consecutive_batches_of_a_machine_in_one_group_are_stored_in_order(cloud_obj):
    chain = restocks(6)
    items = [("vend/v1/m-1/events", chain.batch(1, 2).encode()), ("vend/v1/m-1/events", chain.batch(3, 4).encode()),
             ("vend/v1/m-1/events", chain.batch(5, 6).encode())]
    cloud_obj.apply_all(items)
    assert stored(cloud_obj, "m-1") == [1, 2, 3, 4, 5, 6]


def test_a_batch_that_skips_ahead_is_not_stored(cloud_obj):
    chain = restocks(4)
    cloud_obj.apply_all([("vend/v1/m-1/events", chain.batch(3, 4).encode())])
    assert stored(cloud_obj, "m-1") == []


def test_a_batch_that_overtook_its_predecessor_waits_for_it_and_is_stored_once(cloud_obj):
    # What a shared subscription does when two cloud processes take turns with one machine's batches.
    chain = restocks(6)
    cloud_obj.apply_all([("vend/v1/m-1/events", chain.batch(5, 6).encode()),
                         ("vend/v1/m-1/events", chain.batch(3, 4).encode())])
    assert stored(cloud_obj, "m-1") == []
    cloud_obj.apply_all([("vend/v1/m-1/events", chain.batch(1, 2).encode())])
    assert stored(cloud_obj, "m-1") == [1, 2, 3, 4, 5, 6]
    assert cloud_obj.stats.counts["gaps"] == 0


def test_a_gap_that_lasts_is_given_up_on_and_counted(cloud_obj):
    chain = restocks(4)
    cloud_obj.apply_all([("vend/v1/m-1/events", chain.batch(3, 4).encode())])
    time.sleep(cloud.service.PARK_S + 0.1)
    cloud_obj.apply_all([])
    assert cloud_obj.stats.counts["gaps"] == 1  # and the machine was asked to resend from seq 1
    assert not cloud_obj._parked
    assert stored(cloud_obj, "m-1") == []


def test_a_message_the_database_refuses_does_not_hold_up_the_others(cloud_obj):
    # Stand-in for a storage failure that only one machine's rows meet (a full tablespace, a bad row).
    with cloud_obj.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TRIGGER refuse_m2 BEFORE INSERT ON events WHEN NEW.machine_id = 'm-2' "
                             "BEGIN SELECT RAISE(ABORT, 'storage refused the row'); END")
    good, bad = restocks(2), restocks(2)
    cloud_obj.apply_all([("vend/v1/m-2/events", bad.batch(1).encode()),
                         ("vend/v1/m-1/events", good.batch(1).encode())])
    assert stored(cloud_obj, "m-1") == [1, 2]
    assert stored(cloud_obj, "m-2") == []
    assert cloud_obj.stats.counts["rejected"] == 1
    topic, reason = cloud_obj.stats.last_rejections[-1]
    assert topic == "vend/v1/m-2/events" and "storage refused the row" in reason


def test_a_batch_far_ahead_is_not_kept_forever_while_others_make_progress(cloud_obj, monkeypatch):
    monkeypatch.setattr(cloud.service, "PARK_MAX_S", 0.2)
    chain = restocks(8)
    cloud_obj.apply_all([("vend/v1/m-1/events", chain.batch(7, 8).encode())])
    cloud_obj.apply_all([("vend/v1/m-1/events", chain.batch(1, 2).encode())])  # progress, seq 3-6 still missing
    time.sleep(0.3)
    cloud_obj.apply_all([("vend/v1/m-1/events", chain.batch(3, 4).encode())])  # more progress
    assert cloud_obj.stats.counts["gaps"] == 1 and not cloud_obj._parked
    assert stored(cloud_obj, "m-1") == [1, 2, 3, 4]


def test_a_deeply_nested_message_is_rejected_once_and_the_rest_of_the_group_is_stored(cloud_obj):
    # json.loads raised RecursionError on 5000 levels: not a ProtocolError, so the whole group's transaction
    # was thrown away and the message came back through the one-by-one path.
    good = restocks(2)
    cloud_obj.apply_all([("vend/v1/m-2/events", b"[" * 5000),
                         ("vend/v1/m-2/status", b'{"v":1,"online":' + b"[" * 5000),
                         ("vend/v1/m-1/events", good.batch(1).encode())])
    assert stored(cloud_obj, "m-1") == [1, 2]
    assert cloud_obj.stats.counts["rejected"] == 2
    assert [topic for topic, _ in cloud_obj.stats.last_rejections] == ["vend/v1/m-2/events", "vend/v1/m-2/status"]
    assert all("deep" in reason for _, reason in cloud_obj.stats.last_rejections)


def test_an_online_status_is_answered_with_the_cloud_clock(cloud_obj, monkeypatch):
    # An idle machine writes no events, so it got no ack and never learned of a clock correction.
    sent = []
    monkeypatch.setattr(cloud_obj.bus, "publish", lambda m, kind, payload: sent.append((m, kind, payload)) or True)
    before = utcnow()
    cloud_obj.apply_all([("vend/v1/m-1/status", Status(online=True, ledger_head=4).encode()),
                         ("vend/v1/m-2/status", Status(online=False).encode())])
    acks = [(m, Ack.decode(p)) for m, kind, p in sent if kind == "ack"]
    assert [(m, a.seq) for m, a in acks] == [("m-1", 0)]  # seq 0: the clock alone, no claim about events
    assert before <= parse_time(acks[0][1].cloud_time, "cloud_time") <= utcnow()


def test_each_ack_names_the_ledger_its_seq_is_about(cloud_obj, monkeypatch):
    # Found by the fault run: a machine given a new card was sent "seq 5" for its old ledger in the same
    # group as its new ledger's first batch (the larger head won), and took it as an ack of its new events.
    sent = []
    monkeypatch.setattr(cloud_obj.bus, "publish", lambda m, kind, payload: sent.append((m, kind, payload)) or True)
    old, new = restocks(5), restocks(2)
    cloud_obj.apply_all([("vend/v1/m-1/events", EventBatch(old.batch(1).events, "card-1").encode())])
    cloud_obj.apply_all([("vend/v1/m-1/events", EventBatch(old.batch(1).events, "card-1").encode()),
                         ("vend/v1/m-1/events", EventBatch(new.batch(1).events, "card-2").encode())])
    acks = [(a.seq, a.ledger) for m, kind, p in sent if kind == "ack" for a in [Ack.decode(p)]]
    assert acks == [(5, "card-1"), (5, "card-1"), (2, "card-2")]  # the second group's two acks apart
    assert stored(cloud_obj, "m-1") == [1, 2, 3, 4, 5, 6, 7]


def machine_row(cloud_obj, machine_id):
    with cloud_obj.engine.connect() as conn:
        return conn.execute(sa.select(machines.c.online, machines.c.machine_head, machines.c.cloud_head)
                            .where(machines.c.id == machine_id)).first()


def test_statuses_in_a_group_are_coalesced_per_machine_and_written_in_a_few_statements(cloud_obj, monkeypatch):
    # Status was 80 % of a fleet's messages, each a transaction's savepoint, an update and two reads.
    with cloud_obj.engine.begin() as conn:
        for n in range(3, 100):
            add_machine(conn, f"m-{n}")
    sent = []
    monkeypatch.setattr(cloud_obj.bus, "publish", lambda m, kind, payload: sent.append((m, kind, payload)) or True)
    with cloud_obj.engine.connect() as conn:  # the machines run the planogram the cloud wants
        version = conn.execute(sa.select(sa.func.max(machine_configs.c.desired))).scalar()
    items = [(f"vend/v1/m-{n}/status", Status(online=True, ledger_head=head, planogram_version=version).encode())
             for head in (1, 2, 3) for n in range(1, 100)]
    items.append(("vend/v1/m-2/status", Status(online=False).encode()))  # its last will, after its online ones
    statements = []
    sa.event.listen(cloud_obj.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    cloud_obj.apply_all(items)
    assert len(statements) <= 12, statements  # for 298 messages of 99 machines
    assert tuple(machine_row(cloud_obj, "m-1")) == (True, 3, 0)
    assert machine_row(cloud_obj, "m-2").online is False
    acks = sorted(m for m, kind, _ in sent if kind == "ack")
    assert acks == sorted(f"m-{n}" for n in range(1, 100) if n != 2)  # one clock ack per online machine


def test_a_status_of_an_unknown_machine_is_counted_and_the_others_are_stored(cloud_obj):
    cloud_obj.apply_all([("vend/v1/nobody/status", Status(online=True, ledger_head=1).encode()),
                         ("vend/v1/m-1/status", Status(online=True, ledger_head=7).encode())])
    assert machine_row(cloud_obj, "m-1").machine_head == 7
    assert cloud_obj.stats.last_rejections == [("vend/v1/nobody/status", "unknown machine 'nobody'")]


def test_stored_events_tell_the_machines_head_without_a_status(cloud_obj):
    chain = restocks(5)
    cloud_obj.apply_all([("vend/v1/m-1/events", chain.batch(1, 5).encode())])
    assert tuple(machine_row(cloud_obj, "m-1")[1:]) == (5, 5)
    cloud_obj.apply_all([("vend/v1/m-1/status", Status(online=True, ledger_head=9).encode())])
    cloud_obj.apply_all([("vend/v1/m-1/events", chain.batch(1, 5).encode())])  # a redelivery: the head stays 9
    assert machine_row(cloud_obj, "m-1").machine_head == 9


class Message:
    def __init__(self, topic, payload=b"{}"):
        self.topic, self.payload = topic, payload


def test_a_busy_cloud_tells_a_machine_at_once_that_its_events_wait_in_the_queue(cloud_obj, monkeypatch):
    sent = []
    bus = cloud_obj.bus
    monkeypatch.setattr(bus, "publish", lambda m, kind, payload: sent.append((m, kind, payload)) or True)
    bus._on_message(None, None, Message("vend/v1/m-1/events"))
    assert sent == []  # an idle cloud: the ack itself comes soon
    bus.seconds_per_message = 0.01
    for _ in range(300):  # 3 s of work waiting
        cloud_obj.inbox.put(("vend/v1/m-2/status", b"{}"))
    bus._on_message(None, None, Message("vend/v1/m-1/events"))
    bus._on_message(None, None, Message("vend/v1/m-1/events"))  # told already, a moment ago
    bus._on_message(None, None, Message("vend/v1/m-2/status"))  # only events are waited for
    assert [(m, kind) for m, kind, _ in sent] == [("m-1", "ack")]
    ack = Ack.decode(sent[0][2])
    assert ack.seq == 0 and ack.busy
    assert 3.0 <= ack.wait_s <= 3.1  # the queue's own estimate of the wait: 301 messages at 10 ms
    time.sleep(1.05)  # a second later, the machine's next batch is told too (a batch untold was resent)
    bus._on_message(None, None, Message("vend/v1/m-1/events"))
    assert len(sent) == 2 and Ack.decode(sent[1][2]).busy


def test_a_cloud_whose_queue_is_in_the_broker_knows_it_is_behind_by_the_age_of_what_it_stores(cloud_obj, monkeypatch):
    # Starved of CPU, the cloud reads its socket late: its own queue stays short while the broker's grows.
    sent = []
    bus = cloud_obj.bus
    monkeypatch.setattr(bus, "publish", lambda m, kind, payload: sent.append((m, kind, payload)) or True)
    fresh, other = restocks(2).batch(1, 2), restocks(2).batch(1, 2)
    written = parse_time(fresh.events[-1].ts, "ts")
    bus.note_lag(written + timedelta(seconds=1), [fresh])
    bus._on_message(None, None, Message("vend/v1/m-1/events"))
    assert sent == []
    bus.note_lag(written + timedelta(seconds=6), [fresh, other])
    bus._on_message(None, None, Message("vend/v1/m-1/events"))
    assert [(m, Ack.decode(p).busy) for m, kind, p in sent] == [("m-1", True)]
