"""The cloud's ingest worker: one drained group of messages, applied together, and what one bad one does."""

import time

import pytest
import sqlalchemy as sa

import cloud.core.db
import cloud.service
import cloud.core.settings
from cloud.fleet.ledger import events
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
