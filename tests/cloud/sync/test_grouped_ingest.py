"""Many machines' batches stored together (``ingest.store_batches``, the cloud's ingest worker): the same
result as storing them one at a time, in a statement per table for the lot instead of a dozen per batch.

At 10,000 machines selling 2,000 a day each, every message carries a sale or two of one machine, and a batch
at a time the cloud stored about 400 of 450 events a second on this box's one core (bench/fleet.py, issue 16).
"""

import shutil
import threading

import pytest
import sqlalchemy as sa

import cloud.core.db
from cloud.fleet.alerts import vend_failures, vend_incidents
from cloud.fleet.ledger import events
from cloud.fleet.machines import machines, slots
from cloud.payments import Wallet, entries, txns
from cloud.sales import orders
from cloud.sales.records import sales
from cloud.sales.reports import sales_rollup
from protocol.messages import Ack, Status
from tests.cloud_fixtures import NOW, Chain, add_customer, add_machine, idle_cloud, unbalanced_txns

W = Wallet()
MACHINES = [f"m-{n}" for n in range(1, 8)]


def build_world(var, db_url):
    """Seven stocked machines; a customer; two authorised orders on each of m-1..m-5, and on m-4 one the
    customer's hold was given back for (voided) before it dropped."""
    obj = idle_cloud(var, db_url)
    placed = {}
    with obj.engine.begin() as conn:
        for m in MACHINES:
            add_machine(conn, m)
        customer = add_customer(conn, topup=10_000)
        for m in MACHINES[:5]:
            placed[m] = [orders.place(conn, W, customer, m, "A1", f"{m}-{k}", NOW, 30.0)[0] for k in (1, 2)]
        late = placed["m-4"][1]
        W.void(conn, late, f"void:{late.id}", NOW)
        conn.execute(orders.orders.update().where(orders.orders.c.id == late.id).values(status="expired"))
    return obj, customer, placed


def vend(chain, order, outcome="vend.succeeded"):
    chain.add("vend.started", order_id=order.id, cmd_id=order.cmd_id, slot="A1")
    extra = {"vend.succeeded": {"turns": 1}, "vend.failed": {"reason": "no drop"}}[outcome]
    chain.add(outcome, order_id=order.id, slot="A1", **extra)


def rounds(placed) -> list[list[tuple[str, bytes]]]:
    """Two drained groups of what the machines send: sales, a jam, a restock, a door, a drop for an order
    not open any more, one for an order the cloud never sent, a redelivery, a gap, an unknown machine."""
    c = {m: Chain() for m in MACHINES}
    vend(c["m-1"], placed["m-1"][0])
    vend(c["m-2"], placed["m-2"][0], "vend.failed")
    c["m-3"].add("restock", slot="A2", count=9)
    c["m-3"].add("door.opened")
    vend(c["m-4"], placed["m-4"][1])  # voided and expired: a late drop, charged afresh
    c["m-5"].add("vend.succeeded", order_id="nobody-sent-this", slot="A1", turns=1)
    vend(c["m-6"], placed["m-1"][1])  # m-1's order, dropped by m-6
    c["m-7"].add("restock", slot="A1", count=2)
    # Today's controllers name their ledger (m-1..m-3: the machines' first ledgers, taken by the cloud now);
    # the others are older controllers, without one.
    ledger = {m: f"ledger-{m}" if m in ("m-1", "m-2", "m-3") else "" for m in MACHINES}
    first = [(f"vend/v1/{m}/events", c[m].batch(1, ledger=ledger[m]).encode()) for m in MACHINES]
    sent = {m: len(c[m].events) for m in MACHINES}
    vend(c["m-1"], placed["m-1"][1])
    vend(c["m-3"], placed["m-3"][0])
    c["m-3"].add("door.closed")
    vend(c["m-5"], placed["m-5"][0])
    c["m-7"].add("restock", slot="A1", count=5)
    c["m-7"].add("restock", slot="A1", count=6)
    second = [
        ("vend/v1/m-1/events", c["m-1"].batch(1, ledger=ledger["m-1"]).encode()),  # a redelivery with new events
        ("vend/v1/m-2/events", c["m-2"].batch(1, ledger=ledger["m-2"]).encode()),  # a redelivery alone
        ("vend/v1/m-3/events", c["m-3"].batch(sent["m-3"] + 1, ledger=ledger["m-3"]).encode()),
        ("vend/v1/m-5/events", c["m-5"].batch(sent["m-5"] + 1).encode()),
        ("vend/v1/m-7/events", c["m-7"].batch(sent["m-7"] + 2).encode()),  # a gap: seq 2 is missing
        ("vend/v1/ghost/events", c["m-6"].batch(1).encode()),
    ]
    return [first, second]


def snapshot(engine) -> dict:
    """What a person could see of the fleet: every table ingest writes, without the clock's times."""
    with engine.connect() as conn:
        def rows(stmt):
            return sorted(tuple(r) for r in conn.execute(stmt))
        o, t = orders.orders.c, txns.c
        return {
            "events": rows(sa.select(events.c.machine_id, events.c.seq, events.c.kind, events.c.hash)),
            "heads": rows(sa.select(machines.c.id, machines.c.cloud_head, machines.c.cloud_head_hash,
                                    machines.c.machine_head, machines.c.ledger_id)),
            "slots": rows(sa.select(slots.c.machine_id, slots.c.slot, slots.c.count, slots.c.flagged)),
            "orders": rows(sa.select(o.id, o.machine_id, o.status, o.reason)),
            "money": rows(sa.select(t.key, t.kind, t.order_id, entries.c.amount).join(entries, entries.c.txn_id == t.id)),
            "sales": rows(sa.select(sales.c.machine_id, sales.c.seq, sales.c.order_id, sales.c.amount,
                                    sales.c.currency, sales.c.incident)),
            "rollup": rows(sa.select(sales_rollup.c.machine_id, sales_rollup.c.span, sales_rollup.c.bucket,
                                     sales_rollup.c.count, sales_rollup.c.amount)),
            "failures": rows(sa.select(vend_failures.c.machine_id, vend_failures.c.seq, vend_failures.c.slot)),
            "incidents": rows(sa.select(vend_incidents.c.machine_id, vend_incidents.c.seq, vend_incidents.c.kind)),
            "unbalanced": unbalanced_txns(conn),
        }


def acks_of(obj, monkeypatch) -> list:
    sent = []
    monkeypatch.setattr(obj.bus, "publish", lambda m, kind, payload: sent.append((m, kind, payload)) or True)
    return sent


def test_a_group_stored_together_ends_as_the_same_messages_stored_one_at_a_time(tmp_path, monkeypatch):
    together, customer, placed = build_world(tmp_path / "a", f"sqlite:///{tmp_path}/a.db")
    together.engine.dispose()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")  # the same orders, ids and all
    alone = idle_cloud(tmp_path / "b", f"sqlite:///{tmp_path}/b.db")
    sent_together, sent_alone = acks_of(together, monkeypatch), acks_of(alone, monkeypatch)
    statements = []
    sa.event.listen(together.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    for group in rounds(placed):
        together.apply_all(group)
        for item in group:
            alone.apply_all([item])
    assert any("SAVEPOINT" in s for s in statements) and together.stats.counts["rejected"] == 1  # the ghost
    a, b = snapshot(together.engine), snapshot(alone.engine)
    for table in a:
        assert a[table] == b[table], table
    # and it is what the ledgers say:
    assert [r[:4] for r in a["sales"]] == [("m-1", 2, placed["m-1"][0].id, 350), ("m-1", 4, placed["m-1"][1].id, 350),
                                           ("m-3", 4, placed["m-3"][0].id, 350), ("m-4", 2, placed["m-4"][1].id, 350),
                                           ("m-5", 1, "nobody-sent-this", 0), ("m-5", 3, placed["m-5"][0].id, 350),
                                           ("m-6", 2, placed["m-1"][1].id, 0)]
    statuses = {r[0]: r[2] for r in a["orders"]}
    assert statuses[placed["m-2"][0].id] == "failed" and statuses[placed["m-4"][1].id] == orders.DROPPED_CHARGED
    assert ("m-7", "A1", 2) in [r[:3] for r in a["slots"]]  # the gap's restocks not stored
    assert a["unbalanced"] == []

    def acked(sent):  # (one at a time, the parked m-7 was retried and acked again with each message after it)
        return sorted({(m, Ack.decode(p).seq) for m, kind, p in sent if kind == "ack" and Ack.decode(p).seq})
    assert acked(sent_together) == acked(sent_alone)
    assert ("m-7", 1) in acked(sent_together) and not [m for m, _ in acked(sent_together) if m == "ghost"]


def a_sale_on_each_of_40_machines(obj, ledger=lambda m: ""):
    """Forty machines, an order placed on each, and the group of their batches selling it; (group, customer)."""
    many = [f"m-{n}" for n in range(1, 41)]
    with obj.engine.begin() as conn:
        for m in many:
            add_machine(conn, m)
        customer = add_customer(conn, topup=100_000)
        placed = {m: orders.place(conn, W, customer, m, "A1", m, NOW, 30.0)[0] for m in many}
    group = []
    for m in many:
        chain = Chain()
        vend(chain, placed[m])
        group.append((f"vend/v1/{m}/events", chain.batch(1, ledger=ledger(m)).encode()))
    return many, group, customer


def statements_of(obj) -> list:
    statements = []
    sa.event.listen(obj.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    return statements


def test_a_group_of_sales_from_many_machines_takes_a_statement_per_table_not_a_dozen_per_machine(db_url, tmp_path,
                                                                                                  monkeypatch):
    obj = idle_cloud(tmp_path, db_url)
    many, group, customer = a_sale_on_each_of_40_machines(obj)
    sent = acks_of(obj, monkeypatch)
    statements = statements_of(obj)
    obj.apply_all(group)
    # one at a time it took 16 statements a batch, 640 here
    assert len(statements) <= 40, "\n".join(statements)
    with obj.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sales)).scalar() == 40
        assert set(conn.execute(sa.select(orders.orders.c.status)).scalars()) == {"succeeded"}
        assert W.balance(conn, customer, "CNY") == 100_000 - 40 * 350
        assert unbalanced_txns(conn) == []
    assert sorted((m, Ack.decode(p).seq) for m, kind, p in sent if kind == "ack") == sorted((m, 2) for m in many)
    obj.engine.dispose()


def test_new_machines_first_ledgers_are_stored_together(db_url, tmp_path, monkeypatch):
    # A storm of machines whose first sales came while they were cut off (bench/fleet.py --storm: most of
    # 10,000 machines): each batch starts its machine's first ledger, and was stored one at a time (a dozen
    # statements each, 480 here) until the group took first ledgers too.
    obj = idle_cloud(tmp_path, db_url)
    many, group, _ = a_sale_on_each_of_40_machines(obj, ledger=lambda m: f"card-{m}")
    sent = acks_of(obj, monkeypatch)
    statements = statements_of(obj)
    obj.apply_all(group)
    assert len(statements) <= 40, f"{len(statements)} statements"
    with obj.engine.connect() as conn:
        assert dict(conn.execute(sa.select(machines.c.id, machines.c.ledger_id)).all()) == {m: f"card-{m}" for m in many}
        assert conn.execute(sa.select(sa.func.count()).select_from(sales)).scalar() == 40
    # each ack names the machine's ledger, so the machine takes it as its own
    assert sorted((m, Ack.decode(p).seq, Ack.decode(p).ledger) for m, kind, p in sent if kind == "ack") == \
        sorted((m, 2, f"card-{m}") for m in many)
    obj.engine.dispose()


def test_a_group_that_conflicts_is_stored_one_batch_at_a_time_and_loses_nothing(tmp_path, monkeypatch):
    # Another cloud process (or the sweeper) settling one of the group's orders between the group's read and
    # its conditional update makes the update miss: the group is rolled back and each batch stored alone.
    # Here the change is made inside the group's savepoint, so the rollback takes it back too.
    obj, customer, placed = build_world(tmp_path, f"sqlite:///{tmp_path}/c.db")
    chains = {m: Chain() for m in ("m-1", "m-2")}
    vend(chains["m-1"], placed["m-1"][0])
    vend(chains["m-2"], placed["m-2"][0])
    real_follow, real_machine = orders.follow_many, orders._follow_machine
    calls, into = [], []

    def follow_many(conn, provider, events_of, now):
        calls.append(sorted(events_of))
        into[:] = [conn]
        return real_follow(conn, provider, events_of, now)

    def settled_after_the_read(machine_id, *args):
        if len(calls) == 1 and machine_id == "m-2":  # the group's orders were read; one changes under it
            into[0].execute(orders.orders.update().where(orders.orders.c.id == placed["m-2"][0].id)
                            .values(status="vending"))
        return real_machine(machine_id, *args)
    monkeypatch.setattr(orders, "follow_many", follow_many)
    monkeypatch.setattr(orders, "_follow_machine", settled_after_the_read)
    obj.apply_all([(f"vend/v1/{m}/events", chains[m].batch(1).encode()) for m in chains])
    assert calls == [["m-1", "m-2"], ["m-1"], ["m-2"]]
    with obj.engine.connect() as conn:
        got = {o.id: o.status for o in conn.execute(sa.select(orders.orders))}
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 4
        assert unbalanced_txns(conn) == []
        assert W.balance(conn, customer, "CNY") == 10_000 - 9 * 350  # two captured, seven held, one given back
    assert got[placed["m-1"][0].id] == got[placed["m-2"][0].id] == "succeeded"
    assert obj.stats.counts["rejected"] == 0


# PostgreSQL only: SQLite lets one writer in at a time (BEGIN IMMEDIATE), so two transactions never each hold
# a machine row the other wants (and a skip would be counted as a pass).
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_cloud_processes_with_statuses_and_events_of_the_same_machines_never_deadlock(db_url, tmp_path,
                                                                                            monkeypatch, caplog):
    # Every cloud process applies every status, while a machine's events go to one of them: one process's
    # group held a status's row lock on m-b and waited for m-a's row to store its events, while the other
    # held m-a's (a status) and waited for m-b's. PostgreSQL broke the tie after a second by failing one
    # transaction, which the cloud then applied again a message at a time.
    one, two = idle_cloud(tmp_path / "1", db_url), idle_cloud(tmp_path / "2", db_url)
    assert one.engine.dialect.name == "postgresql"
    ids = [f"m-{n:02d}" for n in range(20)]
    with one.engine.begin() as conn:
        for m in ids:
            add_machine(conn, m, online=False)
    for obj in (one, two):
        acks_of(obj, monkeypatch)
    chains = {m: Chain() for m in ids}
    rounds_ = 15
    groups = {one: [], two: []}
    for r in range(rounds_):
        for n, m in enumerate(ids):
            chains[m].add("door.opened" if r % 2 == 0 else "door.closed")
            mine, other = (one, two) if (n + r) % 2 else (two, one)
            groups[mine].append(("events", m, len(chains[m].events)))
            groups[other].append(("status", m, len(chains[m].events)))
    def messages(obj, r):
        out = []
        for kind, m, seq in groups[obj][r * len(ids):(r + 1) * len(ids)]:
            if kind == "events":
                out.append((f"vend/v1/{m}/events", chains[m].batch(seq).encode()))
            else:
                out.append((f"vend/v1/{m}/status", Status(online=True, ledger_head=seq).encode()))
        # each process's statuses in the reverse order of the other's events
        return out[::-1] if obj is two else out

    barrier = threading.Barrier(2)
    failed = []

    def run(obj):
        for r in range(rounds_):
            barrier.wait()
            try:
                obj.apply(messages(obj, r))
            except Exception as e:  # noqa: BLE001 - what the test is looking for
                failed.append(e)
                obj.apply_all(messages(obj, r))
    threads = [threading.Thread(target=run, args=(obj,)) for obj in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [type(e).__name__ + str(e)[:80] for e in failed] == []
    with one.engine.connect() as conn:
        heads = dict(conn.execute(sa.select(machines.c.id, machines.c.cloud_head)).all())
    assert {m: heads[m] for m in ids} == {m: rounds_ for m in ids}
    for obj in (one, two):
        obj.engine.dispose()


def test_a_resend_after_a_reconnect_is_stored_with_the_group_and_its_repeated_events_once(tmp_path, monkeypatch):
    # After a reconnect storm a machine sends again from its acked mark: its first batch repeats events the
    # cloud stored just before the cut, and the batch after it, or a second copy of a batch, joined it in the
    # group. Such a machine went the slow way, a batch at a time, and a storm was mostly such machines.
    obj = idle_cloud(tmp_path, f"sqlite:///{tmp_path}/c.db")
    many = [f"m-{n}" for n in range(1, 21)]
    with obj.engine.begin() as conn:
        for m in many:
            add_machine(conn, m)
    chains = {m: Chain() for m in many}
    for m in many:
        for n in range(12):
            chains[m].add("fault", code=f"E{n}", detail="")
    obj.apply_all([(f"vend/v1/{m}/events", chains[m].batch(1, 4).encode()) for m in many])  # stored, ack lost
    sent = acks_of(obj, monkeypatch)
    group = []
    for m in many:
        group += [(f"vend/v1/{m}/events", chains[m].batch(3, 8).encode()),  # from the mark: 3-4 again
                  (f"vend/v1/{m}/events", chains[m].batch(9, 12).encode()),
                  (f"vend/v1/{m}/events", chains[m].batch(9, 12).encode())]  # and a second copy
    other = Chain()
    other.add("fault", code="E0", detail="")
    other.add("fault", code="X", detail="")
    group.append(("vend/v1/m-1/events", other.batch(2).encode()))  # seq 2 of another chain: differs
    statements = []
    sa.event.listen(obj.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    obj.apply_all(group)
    assert len(statements) <= 30, "\n".join(statements)  # a batch at a time: 21 machines x a dozen
    with obj.engine.connect() as conn:
        stored = conn.execute(sa.select(events.c.machine_id, events.c.seq, events.c.hash)).all()
        heads = dict(conn.execute(sa.select(machines.c.id, machines.c.cloud_head)).all())
    assert sorted((m, s) for m, s, _ in stored) == sorted((m, s) for m in many for s in range(1, 13))
    assert {(m, s, h) for m, s, h in stored} == {(m, e.seq, e.hash) for m in many for e in chains[m].events}
    assert all(heads[m] == 12 for m in many)
    assert sorted({(m, Ack.decode(p).seq) for m, kind, p in sent if kind == "ack"}) == sorted((m, 12) for m in many)
    topic, reason = obj.stats.last_rejections[-1]
    assert topic == "vend/v1/m-1/events" and "differs from the stored event" in reason
