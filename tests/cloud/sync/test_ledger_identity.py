"""A machine's ledger has an identity: a replaced ledger (a new card) starts over in the cloud without
losing the old one's events, and a redelivery whose hashes differ from the stored events is refused."""

import dataclasses

import pytest
import sqlalchemy as sa

from cloud.fleet.ledger import changes, events
from cloud.sales.records import sales
from cloud.sync.ingest import Rejected
from protocol.messages import EventBatch
from tests.cloud.sync.test_ingest import W, head, order_of, store, wallet, world  # noqa: F401 - the fixture
from tests.cloud_fixtures import MACHINE, Chain

OLD, NEW = "a" * 32, "b" * 32


def restocks(n, start=0):
    chain = Chain()
    for i in range(n):
        chain.add("restock", slot="A1", count=start + i)
    return chain


def of(batch: EventBatch, ledger: str) -> EventBatch:
    return dataclasses.replace(batch, ledger=ledger)


def stored(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(events.c.seq, events.c.hash).where(events.c.machine_id == MACHINE)
                            .order_by(events.c.seq)).all()


def test_a_new_ledger_starts_over_and_its_first_sale_is_stored(world):
    engine, _, order = world
    old = restocks(5)
    assert store(engine, of(old.batch(1), OLD)).head == 5
    # The machine gets a new card: a new ledger at seq 1, with a real sale in it.
    new = Chain()
    new.add("restock", slot="A1", count=5)
    new.add("vend.started", order_id=order.id, cmd_id=order.cmd_id, slot="A1")
    new.add("vend.succeeded", order_id=order.id, cmd_id=order.cmd_id, slot="A1", turns=1)
    result = store(engine, of(new.batch(1), NEW))
    assert (result.head, result.stored, result.resend_from) == (3, 3, None)  # acked in the new ledger's numbers
    assert order_of(engine, order.id).status == "succeeded"  # captured: the sale is not lost
    rows = stored(engine)
    assert [h for _, h in rows] == [e.hash for e in old.events + new.events]  # the old ledger's events kept
    assert [s for s, _ in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sales.c.seq, sales.c.order_id, sales.c.amount)).all() == [(8, order.id, 350)]
        change, = changes(conn, MACHINE)
    assert (change.old_ledger, change.new_ledger, change.old_head, change.base) == (OLD, NEW, 5, 5)
    assert head(engine) == (3, new.events[-1].hash)
    assert store(engine, of(new.batch(2, 3), NEW)).stored == 0  # a redelivery in the new ledger is one


def test_a_vend_the_old_card_started_is_closed_and_its_hold_released_when_a_new_card_starts(world):
    # The card was replaced during a vend (a technician, a card that died): the old ledger's vend.started
    # reached the cloud, its end never will. Before, the order stayed "vending" and the wallet's hold for ever.
    engine, customer, order = world
    held = wallet(engine, customer)
    old = restocks(2)
    old.add("vend.started", order_id=order.id, cmd_id=order.cmd_id, slot="A1")
    store(engine, of(old.batch(1), OLD))
    assert order_of(engine, order.id).status == "vending"
    store(engine, of(restocks(1, start=9).batch(1), NEW))
    closed = order_of(engine, order.id)
    assert (closed.status, closed.reason) == ("unknown", "the machine's ledger was replaced during the vend: "
                                                         "its end is not known")
    assert wallet(engine, customer) == held + order.amount  # the hold is back: no drop proven, no charge
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sales)).scalar() == 0


def test_a_new_ledger_whose_first_batch_was_lost_asks_for_it(world):
    engine, _, _ = world
    store(engine, of(restocks(4).batch(1), OLD))
    new = restocks(3, start=10)
    result = store(engine, of(new.batch(2), NEW))
    assert (result.head, result.resend_from) == (0, 1)
    assert store(engine, of(new.batch(1), NEW)).head == 3


def test_a_late_batch_from_the_replaced_ledger_is_refused(world):
    engine, _, _ = world
    old = restocks(4)
    store(engine, of(old.batch(1, 2), OLD))
    store(engine, of(restocks(2, start=10).batch(1), NEW))
    with pytest.raises(Rejected, match="replaced"):
        store(engine, of(old.batch(3), OLD))
    assert head(engine)[0] == 2


def test_a_redelivery_whose_hashes_differ_is_refused_not_acked(world):
    engine, _, _ = world
    store(engine, of(restocks(5).batch(1), OLD))
    other = restocks(3, start=50)  # same seqs, other events: not what the cloud stored
    with pytest.raises(Rejected, match="differs"):
        store(engine, of(other.batch(1), OLD))
    with pytest.raises(Rejected, match="differs"):
        store(engine, other.batch(1))  # a machine too old to send its ledger's id is checked the same way


def test_the_first_id_for_a_ledger_stored_without_one_is_taken_when_the_chain_continues(world):
    engine, _, _ = world
    chain = restocks(6)
    store(engine, chain.batch(1, 3))  # stored before ledgers had ids
    assert store(engine, of(chain.batch(2, 6), OLD)).head == 6
    with engine.connect() as conn:
        assert changes(conn, MACHINE) == []
