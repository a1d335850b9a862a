"""Stock (cloud/stock/): products, purchase orders and receipts, the movement book at moving average cost,
restocks from the machines' ledgers, pick lists, stock takes and alerts; through the API, vendctl and the
service functions, on SQLite and PostgreSQL."""

import io
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cloud.cli
import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.fleet import machines, planogram
from cloud.sync.ingest import store_batch
from cloud.payments import Wallet
from cloud.people import audit, auth, staff
from cloud.stock import book, picking, purchasing, takes
from cloud.catalog import products as catalog
from cloud.stock.book import WAREHOUSE, Place
from cloud.catalog.common import StockError
from tests.cloud_fixtures import NOW, Chain, ThroughTestClient, add_machine, db_url, fast_hashes, idle_cloud, slot_spec

BOOT = "bootstrap-token-for-stock-tests"
TODAY = NOW.date()
ADMIN = {"Authorization": f"Bearer {BOOT}"}


@pytest.fixture
def cloud_obj(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    yield obj
    obj.engine.dispose()


@pytest.fixture
def engine(cloud_obj):
    return cloud_obj.engine


@pytest.fixture
def app(cloud_obj):
    application = cloud.app.create_app(cloud_obj, BOOT, b"k" * 32)
    application.state.people.clock = lambda: NOW  # the API's clock: the day the fixtures are dated
    return application


@pytest.fixture
def client(app):
    with TestClient(app, follow_redirects=False) as c:
        yield c


def product(conn, sku="cola", cost=100, shelf_life=None, reorder=0, currency="CNY") -> int:
    """A described product; a machine's planogram may have made its row already."""
    row = conn.execute(sa.select(machines.products.c.id).where(machines.products.c.sku == sku)).first()
    if row is None:
        return catalog.add_product(conn, sku, sku.title(), cost, cost * 2, currency, NOW, shelf_life_days=shelf_life,
                                   reorder_level=reorder)
    catalog.update_product(conn, row.id, {"cost": cost, "price": cost * 2, "currency": currency,
                                          "shelf_life_days": shelf_life, "reorder_level": reorder}, NOW)
    return row.id


def supplier(conn, name="Fresh Drinks") -> int:
    return staff.add_supplier(conn, name, "", NOW)


def received_po(conn, sup, product_id, qty, cost, key, expires_on=None, now=NOW) -> int:
    """A purchase order sent and received in full: a lot of ``qty`` at ``cost``."""
    po = purchasing.create(conn, sup, "CNY", [{"product_id": product_id, "quantity": qty, "unit_cost": cost}], now)
    purchasing.send(conn, po, now)
    purchasing.receive(conn, po, key, [{"product_id": product_id, "quantity": qty, "expires_on": expires_on}], now)
    return po


def counts(engine) -> dict:
    """Rows per stock table and in the audit trail: what "nothing written" compares."""
    tables = [catalog.product_details, machines.products, purchasing.purchase_orders,
              purchasing.purchase_order_lines, purchasing.receipts, book.lots, book.movements, book.stock_ops,
              takes.stock_takes, takes.stock_take_lines, picking.routes, picking.route_stops, staff.suppliers,
              audit.audit_log]
    with engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in tables}


def sums(engine, product_id, place=WAREHOUSE):
    with engine.connect() as conn:
        return book.balance(conn, product_id, place)


# -- purchase orders ---------------------------------------------------------------------------------

def test_a_purchase_order_from_draft_to_received_in_two_deliveries(client, engine):
    cola = client.post("/api/v1/products", headers=ADMIN, json={
        "sku": "cola", "name": "Cola 330ml", "cost": 120, "price": 350, "currency": "CNY",
        "barcode": "6901234567892", "shelf_life_days": 180}).json()
    water = client.post("/api/v1/products", headers=ADMIN, json={
        "sku": "water", "name": "Water", "cost": 50, "price": 200, "currency": "CNY"}).json()
    sup = client.post("/api/v1/suppliers", headers=ADMIN, json={
        "name": "Fresh Drinks", "email": "orders@fresh.example", "lead_time_days": 3}).json()
    assert sup["email"] == "orders@fresh.example" and sup["lead_time_days"] == 3
    r = client.post("/api/v1/purchase-orders", headers=ADMIN, json={
        "supplier_id": sup["id"], "currency": "CNY", "expected_on": "2024-05-04",
        "lines": [{"product_id": cola["id"], "quantity": 24},
                  {"product_id": water["id"], "quantity": 12, "unit_cost": 45}]})
    assert r.status_code == 201, r.text
    po = r.json()
    assert po["status"] == "draft" and po["total"] == 24 * 120 + 12 * 45
    assert [(l["sku"], l["quantity"], l["unit_cost"], l["due"]) for l in po["lines"]] == \
        [("cola", 24, 120, 24), ("water", 12, 45, 12)]
    pid = po["id"]

    assert client.post(f"/api/v1/purchase-orders/{pid}/send", headers=ADMIN).json()["status"] == "sent"
    # The supplier's own account confirms it, with the date it promises.
    with engine.begin() as conn:
        user = staff.add_staff(conn, "fresh", "supplier", NOW, staff.hash_password("violet-tractor-harbour-91"),
                               False, sup["id"])
        token = auth.new_token(conn, user, "t", NOW)[1]
    r = client.post(f"/api/v1/purchase-orders/{pid}/confirm", headers={"Authorization": f"Bearer {token}"},
                    json={"expected_on": "2024-05-03"})
    assert r.status_code == 200 and r.json()["changed"] and r.json()["expected_on"] == "2024-05-03"
    again = client.post(f"/api/v1/purchase-orders/{pid}/confirm", headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 200 and not again.json()["changed"]

    r = client.post(f"/api/v1/purchase-orders/{pid}/receive", headers=ADMIN, json={
        "key": "grn-1", "lines": [{"product_id": cola["id"], "quantity": 10}]})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["applied"] and first["purchase_order"]["status"] == "partly_received"
    assert first["lots"] == [{"lot_id": first["lots"][0]["lot_id"], "line_id": po["lines"][0]["line_id"],
                              "product_id": cola["id"], "quantity": 10, "unit_cost": 120,
                              "expires_on": (TODAY + timedelta(days=180)).isoformat()}]
    assert [l["due"] for l in first["purchase_order"]["lines"]] == [14, 12]

    r = client.post(f"/api/v1/purchase-orders/{pid}/receive", headers=ADMIN, json={
        "key": "grn-2", "lines": [{"line_id": po["lines"][0]["line_id"], "quantity": 14},
                                  {"product_id": water["id"], "quantity": 12, "expires_on": "2025-01-31"}]})
    done = r.json()["purchase_order"]
    assert done["status"] == "received" and done["closed_at"] and [l["due"] for l in done["lines"]] == [0, 0]
    assert sums(engine, cola["id"]) == (24, 24 * 120) and sums(engine, water["id"]) == (12, 12 * 45)
    actions = [a["action"] for a in client.get("/api/v1/audit?kind=purchase_order", headers=ADMIN).json()]
    assert actions == ["po.receive", "po.receive", "po.confirm", "po.send", "po.create"]
    # Nothing more happens to a received order; a confirmation repeated is still no change.
    for action, body in (("send", None), ("cancel", {"reason": "late"})):
        r = client.post(f"/api/v1/purchase-orders/{pid}/{action}", headers=ADMIN, json=body)
        assert r.status_code == 409 and r.json()["error"].startswith("status:"), (action, r.text)
    assert not client.post(f"/api/v1/purchase-orders/{pid}/confirm", headers=ADMIN).json()["changed"]


def test_a_receipt_sent_twice_changes_nothing_the_second_time(client, engine):
    with engine.begin() as conn:
        cola, sup = product(conn), supplier(conn)
        po = purchasing.create(conn, sup, "CNY", [{"product_id": cola, "quantity": 10}], NOW)
        purchasing.send(conn, po, NOW)
    body = {"key": "grn-7", "lines": [{"product_id": cola, "quantity": 4}]}
    first = client.post(f"/api/v1/purchase-orders/{po}/receive", headers=ADMIN, json=body).json()
    before = counts(engine)
    second = client.post(f"/api/v1/purchase-orders/{po}/receive", headers=ADMIN, json=body)
    assert second.status_code == 200 and not second.json()["applied"]
    assert second.json()["receipt_id"] == first["receipt_id"] and second.json()["lots"] == first["lots"]
    assert counts(engine) == before and sums(engine, cola) == (4, 400)
    # The same key for other goods is a mistake, not a new receipt.
    r = client.post(f"/api/v1/purchase-orders/{po}/receive", headers=ADMIN,
                    json={"key": "grn-7", "lines": [{"product_id": cola, "quantity": 5}]})
    assert r.status_code == 409 and r.json()["error"].startswith("key:")
    assert counts(engine) == before
    # Straight through the service too.
    with engine.begin() as conn:
        assert purchasing.receive(conn, po, "grn-7", [{"product_id": cola, "quantity": 4}], NOW) == \
            (first["receipt_id"], False)
    assert counts(engine) == before


def test_receiving_more_than_ordered_is_refused_unless_allowed(client, engine):
    with engine.begin() as conn:
        cola, sup = product(conn), supplier(conn)
        po = purchasing.create(conn, sup, "CNY", [{"product_id": cola, "quantity": 10}], NOW)
        purchasing.send(conn, po, NOW)
    before = counts(engine)
    r = client.post(f"/api/v1/purchase-orders/{po}/receive", headers=ADMIN,
                    json={"key": "k1", "lines": [{"product_id": cola, "quantity": 11}]})
    assert r.status_code == 409 and r.json()["error"].startswith("lines.0.quantity: 11 is more than the 10 still due")
    assert counts(engine) == before
    r = client.post(f"/api/v1/purchase-orders/{po}/receive", headers=ADMIN,
                    json={"key": "k1", "allow_over": True, "lines": [{"product_id": cola, "quantity": 11}]})
    assert r.status_code == 200 and r.json()["purchase_order"]["status"] == "received"
    assert sums(engine, cola) == (11, 1100)


def test_only_legal_transitions(engine):
    with engine.begin() as conn:
        cola, sup = product(conn), supplier(conn)
        draft = purchasing.create(conn, sup, "CNY", [{"product_id": cola, "quantity": 10}], NOW)
    steps = [("receive", 409, "is a draft"), ("confirm", 409, "only a sent order"), ("send", None, None),
             ("send", 409, "cannot become sent"), ("receive", None, None), ("cancel", None, None),
             ("cancel", 409, "cannot become cancelled"), ("receive", 409, "is cancelled")]
    for i, (step, status, text) in enumerate(steps):
        with engine.begin() as conn:
            try:
                if step == "receive":
                    purchasing.receive(conn, draft, f"r{i}", [{"product_id": cola, "quantity": 3}], NOW)
                elif step == "confirm":
                    purchasing.confirm(conn, draft, NOW, None)
                elif step == "send":
                    purchasing.send(conn, draft, NOW)
                else:
                    purchasing.cancel(conn, draft, "closed short", NOW)
            except StockError as e:
                assert (e.status, e.field) == (status, "status") and text in str(e), (step, str(e))
            else:
                assert status is None, step
    with engine.connect() as conn:
        po = purchasing.get(conn, draft)
    assert po["status"] == "cancelled" and po["cancel_reason"] == "closed short"
    assert po["lines"][0]["received"] == 3 and sums(engine, cola) == (3, 300)  # what came stays


def test_a_supplier_sees_and_confirms_only_its_own_orders(client, engine):
    with engine.begin() as conn:
        cola, mine, theirs = product(conn), supplier(conn, "Mine"), supplier(conn, "Theirs")
        ours = purchasing.create(conn, mine, "CNY", [{"product_id": cola, "quantity": 1}], NOW)
        other = purchasing.create(conn, theirs, "CNY", [{"product_id": cola, "quantity": 1}], NOW)
        for po in (ours, other):
            purchasing.send(conn, po, NOW)
        user = staff.add_staff(conn, "mine", "supplier", NOW, None, False, mine)
        headers = {"Authorization": f"Bearer {auth.new_token(conn, user, 't', NOW)[1]}"}
    assert [p["id"] for p in client.get("/api/v1/purchase-orders", headers=headers).json()] == [ours]
    assert client.get(f"/api/v1/purchase-orders/{ours}", headers=headers).status_code == 200
    assert client.get(f"/api/v1/purchase-orders/{other}", headers=headers).status_code == 404
    assert client.get(f"/api/v1/suppliers/{mine}", headers=headers).status_code == 200
    assert client.get(f"/api/v1/suppliers/{theirs}", headers=headers).status_code == 404
    before = counts(engine)
    assert client.post(f"/api/v1/purchase-orders/{other}/confirm", headers=headers).status_code == 404
    assert counts(engine) == before
    assert client.post(f"/api/v1/purchase-orders/{ours}/confirm", headers=headers).json()["confirmed_at"]
    assert client.post(f"/api/v1/purchase-orders/{ours}/receive", headers=headers,
                       json={"key": "x", "lines": []}).status_code == 403


# -- valuation ---------------------------------------------------------------------------------------

def test_moving_average_cost_in_exact_integers(engine):
    slot = Place("m-1", "A1")
    with engine.begin() as conn:
        add_machine(conn, counts={})
        cola, sup = product(conn), supplier(conn)
        received_po(conn, sup, cola, 10, 100, "a")
        received_po(conn, sup, cola, 5, 130, "b")
    assert sums(engine, cola) == (15, 1650)  # average 110
    with engine.begin() as conn:
        assert book.claim(conn, "t1", "test", NOW)
        assert book.transfer(conn, "t1", cola, 4, slot, NOW) == 440
        received_po(conn, sup, cola, 3, 97, "c")
    assert sums(engine, cola) == (14, 1210 + 291)
    with engine.begin() as conn:
        book.claim(conn, "t2", "test", NOW)
        # 1501 * 7 / 14 = 750.5: the half stays with the units left behind...
        assert book.transfer(conn, "t2", cola, 7, slot, NOW) == 750
        book.claim(conn, "t3", "test", NOW)
        # ...and the last unit out carries it: the warehouse is worth 0 when it is empty.
        assert book.transfer(conn, "t3", cola, 7, slot, NOW) == 751
    assert sums(engine, cola) == (0, 0)
    assert sums(engine, cola, slot) == (18, 440 + 750 + 751)
    with engine.begin() as conn:
        book.claim(conn, "s1", "test", NOW)
        assert book.sell(conn, "s1", cola, 5, slot, NOW) == 1941 * 5 // 18
        assert book.lots_on_hand(conn, [cola]) == []


def test_two_processes_taking_the_same_stock_at_once_never_take_more_than_there_is(engine, monkeypatch):
    import threading
    import time

    read = book.lots_on_hand

    def slow_read(*args):  # widen the window between reading the stock and writing what is taken
        result = read(*args)
        time.sleep(0.2)
        return result

    with engine.begin() as conn:
        add_machine(conn, counts={})
        cola, sup = product(conn), supplier(conn)
        received_po(conn, sup, cola, 10, 100, "ten")
    gate, outcomes = threading.Barrier(2), []
    monkeypatch.setattr(book, "lots_on_hand", slow_read)

    def take(key, slot):
        gate.wait()
        try:
            with engine.begin() as conn:
                book.claim(conn, key, "test", NOW)
                book.transfer(conn, key, cola, 6, Place("m-1", slot), NOW)
            outcomes.append("moved")
        except StockError as e:
            outcomes.append(e.status)

    threads = [threading.Thread(target=take, args=(f"k{i}", slot)) for i, slot in enumerate(("A1", "A2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes, key=str) == [409, "moved"]
    assert sums(engine, cola) == (4, 400)


@st.composite
def operations(draw):
    ops = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["receive", "transfer", "sell", "adjust_warehouse", "adjust_slot"]))
        qty = draw(st.integers(-6, 12) if kind.startswith("adjust") else st.integers(1, 12))
        ops.append((kind, qty, draw(st.integers(0, 999)), draw(st.sampled_from(["A1", "A2"]))))
    return ops


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations())
def test_quantities_and_values_are_the_sums_of_the_movements(engine, ops):
    with engine.begin() as conn:
        if not conn.execute(sa.select(machines.machines.c.id)).first():
            add_machine(conn, counts={})
            supplier(conn)
        n = conn.execute(sa.select(sa.func.count()).select_from(catalog.product_details)).scalar()
        pid = product(conn, sku=f"p{n}", cost=77)  # a product of its own: every example starts at zero
        sup = conn.execute(sa.select(staff.suppliers.c.id)).scalar()
    model = {WAREHOUSE: 0, Place("m-1", "A1"): 0, Place("m-1", "A2"): 0}
    for i, (kind, qty, cost, slot) in enumerate(ops):
        place = Place("m-1", slot)
        key = f"{pid}-{i}"
        try:
            with engine.begin() as conn:
                if kind == "receive":
                    received_po(conn, sup, pid, qty, cost, key, TODAY + timedelta(days=cost % 20))
                    model[WAREHOUSE] += qty
                    continue
                book.claim(conn, key, "test", NOW)
                if kind == "transfer":
                    book.transfer(conn, key, pid, qty, place, NOW)
                    model[WAREHOUSE] -= qty
                    model[place] += qty
                elif kind == "sell":
                    book.sell(conn, key, pid, qty, place, NOW)
                    model[place] -= qty
                elif qty:
                    where = WAREHOUSE if kind == "adjust_warehouse" else place
                    book.adjust(conn, key, pid, qty, NOW, "test", where)
                    model[where] += qty
        except StockError as e:
            assert e.status == 409 and e.field == "quantity"  # more than there is: refused, nothing written
        with engine.connect() as conn:
            m = book.movements
            for where, expected in model.items():
                q, v = book.balance(conn, pid, where)
                assert q == expected and q >= 0 and v >= 0 and (q > 0 or v == 0), (where, q, v, expected)
            lots = book.lots_on_hand(conn, [pid])
            assert sum(lot.quantity for lot in lots) == model[WAREHOUSE]
            row = next(r for r in book.warehouse(conn, TODAY) if r["product_id"] == pid)
            total = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(m.c.value), 0)).where(
                m.c.product_id == pid, m.c.machine_id.is_(None))).scalar()
            assert (row["quantity"], row["value"]) == (model[WAREHOUSE], total)
            # The running balances are exactly the sums of the movements, place by place.
            sums_by_place = {(r[0], r[1] or "", r[2] or ""): (int(r[3]), int(r[4])) for r in conn.execute(
                sa.select(m.c.product_id, m.c.machine_id, m.c.slot, sa.func.sum(m.c.quantity), sa.func.sum(m.c.value))
                .group_by(m.c.product_id, m.c.machine_id, m.c.slot))}
            b = book.balances
            kept = {(r.product_id, r.machine_id, r.slot): (r.quantity, r.value) for r in conn.execute(sa.select(b))}
            assert kept == sums_by_place
            # Each lot's quantity left is never negative, and the book never holds a movement of 0.
            assert conn.execute(sa.select(sa.func.count()).select_from(m).where(m.c.quantity == 0)).scalar() == 0


# -- restock from the ledger -------------------------------------------------------------------------

def store(engine, batch, now=NOW):
    """Ingest a batch, then let the sweeper book its counts, as a running cloud does a second later."""
    with engine.begin() as conn:
        result = store_batch(conn, Wallet(), "m-1", batch, now)
    with engine.begin() as conn:
        book.book_pending(conn, now)
    return result


def test_restock_events_move_stock_from_the_warehouse_once_even_when_redelivered(engine):
    with engine.begin() as conn:
        add_machine(conn, counts={"A1": 5, "A2": 0})
        cola, sup = product(conn, "cola", cost=100), supplier(conn)
        received_po(conn, sup, cola, 6, 100, "old", TODAY + timedelta(days=30))
        received_po(conn, sup, cola, 14, 110, "new", TODAY + timedelta(days=9))
    a1 = Place("m-1", "A1")
    chain = Chain()
    chain.add("restock", slot="A1", count=10)  # 5 were there before the cloud kept a book: found, then +5
    chain.add("vend.succeeded", order_id="o-1", slot="A1", turns=1)
    chain.add("vend.succeeded", order_id="o-2", slot="A1", turns=1)
    chain.add("restock", slot="A1", count=10)  # 2 sold since: booked as sales, then +2 from the warehouse
    assert store(engine, chain.batch(1)).stored == 4
    moved = counts(engine)
    # 6 at 100 and 14 at 110 (2140): 5 then 2 leave from the lot expiring first, each at its moving
    # average share of what is left; the 5 found in the slot and the 2 sold there are the slot's business.
    assert sums(engine, cola) == (13, 2140 - 2140 * 5 // 20 - (2140 - 535) * 2 // 15)
    assert sums(engine, cola, a1)[0] == 10
    with engine.connect() as conn:
        kinds = [(r["kind"], r["quantity"], r["lot_id"], r["machine_id"])
                 for r in reversed(book.list_movements(conn, product_id=cola, limit=1000))
                 if r["op"].startswith("ledger")]
        first_expiring = conn.execute(sa.select(book.lots.c.id).where(book.lots.c.quantity == 14)).scalar()
    assert [k[:2] for k in kinds] == [("adjustment", 5), ("transfer", -5), ("transfer", 5),
                                      ("sale", -2), ("transfer", -2), ("transfer", 2)]
    assert {k[2] for k in kinds if k[0] == "transfer"} == {first_expiring}  # FEFO: the lot expiring first
    # The same batch again, and a batch overlapping it: nothing moves twice.
    assert store(engine, chain.batch(1)).stored == 0
    chain.add("restock", slot="A2", count=3)
    assert store(engine, chain.batch(3)).stored == 1
    after = counts(engine)
    assert after["stock_movements"] == moved["stock_movements"] + 1  # A2's product has no warehouse book: found
    # The service is idempotent by (machine, seq) on its own too.
    with engine.begin() as conn:
        book.ledger_counts(conn, "m-1", [book.Count(4, "restock", "A1", cola, 8, 10)], NOW)
    assert counts(engine) == after


def test_a_restock_beyond_the_warehouse_is_booked_as_found_and_the_warehouse_stays_at_zero(engine):
    with engine.begin() as conn:
        add_machine(conn, counts={"A1": 0, "A2": 0})
        cola, sup = product(conn, "cola", cost=100), supplier(conn)
        received_po(conn, sup, cola, 3, 90, "only-three")
    chain = Chain()
    chain.add("restock", slot="A1", count=8)
    chain.add("stock.adjusted", slot="A1", count=6, reason="two crushed cans")
    store(engine, chain.batch(1))
    assert sums(engine, cola) == (0, 0)
    # 3 from the warehouse (270), 5 more valued like them (450); then 2 of the 8 written off (180).
    assert sums(engine, cola, Place("m-1", "A1")) == (6, 540)
    with engine.connect() as conn:
        reasons = [r["reason"] for r in book.list_movements(conn, kind="adjustment")]
    assert reasons == ["two crushed cans", "loaded without warehouse stock on the book"]


def test_a_slot_given_another_product_writes_the_old_one_off_at_the_next_count(engine):
    with engine.begin() as conn:
        add_machine(conn, counts={"A1": 0, "A2": 0})
        cola, sup = product(conn, "cola"), supplier(conn)
        received_po(conn, sup, cola, 10, 100, "c")
    chain = Chain()
    chain.add("restock", slot="A1", count=4)
    store(engine, chain.batch(1))
    with engine.begin() as conn:
        planogram.set_slots(conn, "m-1", [slot_spec("A1", sku="tea", name="Tea")])
    chain.add("restock", slot="A1", count=6)
    store(engine, chain.batch(2))
    assert sums(engine, cola, Place("m-1", "A1")) == (0, 0) and sums(engine, cola) == (6, 600)


# -- pick lists --------------------------------------------------------------------------------------

def test_a_route_pick_list_takes_first_expiring_lots_and_runs_short_at_the_end(client, engine):
    with engine.begin() as conn:
        add_machine(conn, "m-1", counts={"A1": 5, "A2": 10})
        add_machine(conn, "m-2", counts={"A1": 5, "A2": 8})
        cola, water, sup = product(conn, "cola", shelf_life=90), product(conn, "water"), supplier(conn)
        received_po(conn, sup, cola, 3, 100, "late", TODAY + timedelta(days=10))
        received_po(conn, sup, cola, 4, 100, "soon", TODAY + timedelta(days=5))
        received_po(conn, sup, cola, 9, 100, "stale", TODAY + timedelta(days=2))
        received_po(conn, sup, water, 50, 40, "water")
        lots = dict(conn.execute(sa.select(book.lots.c.quantity, book.lots.c.id)).all())
    route = client.post("/api/v1/routes", headers=ADMIN, json={"name": "North", "machines": ["m-2", "m-1"]}).json()
    # The lot expiring in 2 days is past its date by the time of the visit.
    later = NOW + timedelta(days=3)
    client.app.state.people.clock = lambda: later
    r = client.get(f"/api/v1/routes/{route['id']}/pick-list", headers=ADMIN)
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["route"]["machines"] == ["m-2", "m-1"] and p["date"] == later.date().isoformat()
    first = p["machines"][0]
    a1 = {s["machine_id"]: next(line for line in s["lines"] if line["slot"] == "A1") for s in p["machines"]}
    assert (a1["m-2"]["need"], a1["m-2"]["pick"], a1["m-2"]["short"]) == (5, 5, 0)
    day = lambda n: (TODAY + timedelta(days=n)).isoformat()  # noqa: E731
    assert a1["m-2"]["lots"] == [{"lot_id": lots[4], "expires_on": day(5), "quantity": 4},
                                 {"lot_id": lots[3], "expires_on": day(10), "quantity": 1}]
    assert (a1["m-1"]["need"], a1["m-1"]["pick"], a1["m-1"]["short"]) == (5, 2, 3)
    assert [lot["lot_id"] for lot in a1["m-1"]["lots"]] == [lots[3]]
    water_m2 = next(line for line in first["lines"] if line["slot"] == "A2")
    assert (water_m2["par"], water_m2["count"], water_m2["pick"]) == (10, 8, 2)
    totals = {t["sku"]: t for t in p["products"]}
    assert (totals["cola"]["pick"], totals["cola"]["short"], totals["water"]["pick"]) == (7, 3, 2)
    assert p["pick"] == 9 and p["short"] == 3
    assert lots[9] not in {lot["lot_id"] for t in p["products"] for lot in t["lots"]}
    assert totals["cola"]["expired"] == 9
    # The same as a page to print, and for one machine.
    page = client.get(f"/api/v1/routes/{route['id']}/pick-list?format=html", headers=ADMIN)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "size: A4" in page.text and "1. Machine m-2" in page.text and "3 short in the warehouse" in page.text
    assert "9 past their date: not to be loaded" in page.text
    one = client.get("/api/v1/machines/m-1/pick-list", headers=ADMIN).json()
    assert [line["pick"] for line in one["machines"][0]["lines"]] == [5, 0]
    assert client.get("/api/v1/machines/nope/pick-list", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/routes/99/pick-list", headers=ADMIN).status_code == 404


def test_par_levels_are_the_capacity_until_the_planogram_has_them(engine):
    with engine.begin() as conn:
        add_machine(conn, specs=[slot_spec("A1", capacity=12), slot_spec("B2", sku="tea", name="Tea", capacity=7)])
        assert picking.par_levels(conn, "m-1") == {"A1": 12, "B2": 7}


# -- stock takes -------------------------------------------------------------------------------------

def test_a_stock_take_books_the_variance_against_the_book_with_its_reason(client, engine):
    with engine.begin() as conn:
        cola, water, sup = product(conn, "cola"), product(conn, "water", cost=40), supplier(conn)
        received_po(conn, sup, cola, 10, 100, "a", TODAY + timedelta(days=20))
        received_po(conn, sup, cola, 5, 130, "b", TODAY + timedelta(days=10))
        received_po(conn, sup, water, 8, 40, "w")
        cola_lots = conn.execute(sa.select(book.lots.c.id).where(book.lots.c.product_id == cola)
                                 .order_by(book.lots.c.id)).scalars().all()
    body = {"key": "count-may", "reason": "monthly count", "lines": [
        {"product_id": cola, "lot_id": cola_lots[0], "counted": 7},
        {"product_id": cola, "lot_id": cola_lots[1], "counted": 6},
        {"product_id": water, "counted": 8}]}
    r = client.post("/api/v1/stock/takes", headers=ADMIN, json=body)
    assert r.status_code == 201, r.text
    take = r.json()
    assert [(l["book"], l["counted"], l["variance"]) for l in take["lines"]] == [(10, 7, -3), (5, 6, 1), (8, 8, 0)]
    # 15 worth 1650 (110 each): 3 lost are 330; then 12 worth 1320, and one found is worth 110.
    assert [l["value"] for l in take["lines"]] == [-330, 110, 0] and take["variance_value"] == -220
    assert sums(engine, cola) == (13, 1430)
    with engine.connect() as conn:
        adj = book.list_movements(conn, kind="adjustment")
        left = {lot.lot_id: lot.quantity for lot in book.lots_on_hand(conn, [cola])}
    assert {m["reason"] for m in adj} == {"stock take: monthly count"} and left == {cola_lots[0]: 7, cola_lots[1]: 6}
    before = counts(engine)
    again = client.post("/api/v1/stock/takes", headers=ADMIN, json=body)
    assert again.status_code == 201 and not again.json()["applied"] and counts(engine) == before
    # A count of the product as a whole takes a loss first-expiring first, and books a find as a new lot.
    with engine.begin() as conn:
        takes.record(conn, "count-june", [{"product_id": cola, "counted": 10}], "june", NOW)
        left = {lot.lot_id: lot.quantity for lot in book.lots_on_hand(conn, [cola])}
        assert left == {cola_lots[0]: 7, cola_lots[1]: 3}
        takes.record(conn, "count-july", [{"product_id": cola, "counted": 12}], "july", NOW)
        found = book.lots_on_hand(conn, [cola])[-1]
        assert (found.quantity, found.expires_on) == (2, None)
    assert [t["key"] for t in client.get("/api/v1/stock/takes", headers=ADMIN).json()] == \
        ["count-july", "count-june", "count-may"]


# -- alerts ------------------------------------------------------------------------------------------

def test_alerts_for_low_slots_low_warehouse_and_expiring_lots(client, engine):
    with engine.begin() as conn:
        add_machine(conn, counts={"A1": 2, "A2": 9})
        cola, water, sup = product(conn, "cola", reorder=20), product(conn, "water", reorder=5), supplier(conn)
        received_po(conn, sup, cola, 6, 100, "a", TODAY + timedelta(days=3))
        received_po(conn, sup, cola, 4, 100, "b", TODAY - timedelta(days=0))
        received_po(conn, sup, water, 10, 40, "w", TODAY + timedelta(days=60))
        po = purchasing.create(conn, sup, "CNY", [{"product_id": cola, "quantity": 24}], NOW)
        purchasing.send(conn, po, NOW)
    r = client.get("/api/v1/stock/alerts?slot_fraction=0.3&expiry_days=5", headers=ADMIN)
    assert r.status_code == 200, r.text
    a = r.json()
    assert [(s["slot"], s["count"], s["par"]) for s in a["low_slots"]] == [("A1", 2, 10)]
    assert [(w["sku"], w["quantity"], w["reorder_level"], w["on_order"]) for w in a["low_warehouse"]] == \
        [("cola", 10, 20, 24)]
    assert [(e["sku"], e["quantity"], e["days_left"]) for e in a["expiring"]] == [("cola", 4, 0), ("cola", 6, 3)]
    with engine.connect() as conn:
        later = picking.alerts(conn, TODAY + timedelta(days=4), 0.3, 0)
    assert [(e["quantity"], e["days_left"]) for e in later["expiring"]] == [(4, -4), (6, -1)]
    assert client.get("/api/v1/stock/alerts?slot_fraction=0", headers=ADMIN).status_code == 422


def test_a_retired_machine_s_slots_are_not_low_and_it_has_no_pick_list_to_choose(client, engine):
    # Issue 15: a retired machine is visited for nothing; its empty slots called for a visit.
    with engine.begin() as conn:
        add_machine(conn, counts={"A1": 2, "A2": 9})
        add_machine(conn, "m-old", counts={"A1": 0, "A2": 0})
        machines.retire(conn, "m-old", NOW)
    a = client.get("/api/v1/stock/alerts?slot_fraction=0.3", headers=ADMIN).json()
    assert [(s["machine_id"], s["slot"]) for s in a["low_slots"]] == [("m-1", "A1")]


# -- bad input ---------------------------------------------------------------------------------------

@pytest.fixture
def world(engine):
    """A described product (id in ``world['cola']``), a supplier, a sent order for 10."""
    with engine.begin() as conn:
        add_machine(conn)
        cola, sup = product(conn, "cola", shelf_life=30), supplier(conn)
        usd = product(conn, "gum", currency="USD")
        po = purchasing.create(conn, sup, "CNY", [{"product_id": cola, "quantity": 10}], NOW)
        purchasing.send(conn, po, NOW)
        draft = purchasing.create(conn, sup, "CNY", [{"product_id": cola, "quantity": 1}], NOW)
    return {"cola": cola, "usd": usd, "sup": sup, "po": po, "draft": draft}


NEW = {"sku": "tea", "name": "Tea", "cost": 100, "price": 300, "currency": "CNY"}


def line(**fields) -> dict:
    return {"product_id": "{cola}", "quantity": 1, **fields}


def order(*lines, **fields) -> dict:
    return {"supplier_id": "{sup}", "currency": "CNY", "lines": list(lines) or [line()], **fields}


def receipt(*lines, **fields) -> dict:
    return {"key": "k", "lines": list(lines) or [line()], **fields}


def count(*lines) -> dict:
    return {"key": "t", "reason": "count", "lines": list(lines)}


PO, DRAFT = "/api/v1/purchase-orders/{po}", "/api/v1/purchase-orders/{draft}"
BAD = [
    ("POST", "/api/v1/products", {**NEW, "price": -1}, 422, "price: must not be negative"),
    ("POST", "/api/v1/products", {**NEW, "cost": -5}, 422, "cost: must not be negative"),
    ("POST", "/api/v1/products", {**NEW, "cost": "5"}, 422, "cost:"),
    ("POST", "/api/v1/products", {**NEW, "barcode": "6901234567891"}, 422, "barcode: 1 is not the check digit"),
    ("POST", "/api/v1/products", {**NEW, "barcode": "12345"}, 422, "barcode: must be an EAN-13"),
    ("POST", "/api/v1/products", {**NEW, "currency": "yuan"}, 422, "currency:"),
    ("POST", "/api/v1/products", {**NEW, "shelf_life_days": 0}, 422, "shelf_life_days: must be at least 1"),
    ("POST", "/api/v1/products", {**NEW, "sku": "cola"}, 409, "sku: 'cola' exists already"),
    ("PATCH", "/api/v1/products/999", {"cost": 1}, 404, "product_id: no product 999"),
    ("PATCH", "/api/v1/products/{cola}", {"reorder_level": -1}, 422, "reorder_level: must not be negative"),
    ("PATCH", "/api/v1/products/{cola}", {"currency": "USD"}, 409, "currency: cannot change while"),
    ("POST", "/api/v1/purchase-orders", order(supplier_id=999), 404, "supplier_id: no supplier 999"),
    ("POST", "/api/v1/purchase-orders", order(line(quantity=-2)), 422, "lines.0.quantity: must be at least 1"),
    ("POST", "/api/v1/purchase-orders", order(line(unit_cost=-1)), 422, "lines.0.unit_cost: must not be negative"),
    ("POST", "/api/v1/purchase-orders", order(line(product_id=999)), 404, "lines.0.product_id: no product 999"),
    ("POST", "/api/v1/purchase-orders", order(line(product_id="{usd}")), 422,
     "lines.0.product_id: product {usd} is costed in USD"),
    ("POST", "/api/v1/purchase-orders", {**order(), "lines": []}, 422, "lines: give 1"),
    ("POST", "/api/v1/purchase-orders", order(expected_on="2024-04-30"), 422,
     "expected_on: 2024-04-30 is before the order date"),
    ("POST", "/api/v1/purchase-orders/999/send", None, 404, "id: no purchase order 999"),
    ("POST", PO + "/send", None, 409, "status: purchase order {po} is sent"),
    ("POST", DRAFT + "/receive", receipt(), 409, "status: purchase order {draft} is a draft"),
    ("POST", PO + "/receive", receipt(line(quantity=0)), 422, "lines.0.quantity: must be at least 1"),
    ("POST", PO + "/receive", receipt({"line_id": 999, "quantity": 1}), 404,
     "lines.0.line_id: purchase order {po} has no line 999"),
    ("POST", PO + "/receive", receipt(line(expires_on="2024-04-01")), 422,
     "lines.0.expires_on: 2024-04-01 is before the day the goods are received"),
    ("POST", PO + "/receive", receipt(line(unit_cost=-3)), 422, "lines.0.unit_cost: must not be negative"),
    ("POST", PO + "/receive", receipt(key=""), 422, "key: must be 1 to 100"),
    ("POST", PO + "/cancel", {"reason": " "}, 422, "reason: must be 1 to 200"),
    ("POST", PO + "/confirm", {"expected_on": "2024-04-01"}, 422,
     "expected_on: 2024-04-01 is before the order was sent"),
    ("POST", "/api/v1/stock/takes", count({"product_id": "{cola}", "counted": -1}), 422,
     "lines.0.counted: must not be negative"),
    ("POST", "/api/v1/stock/takes", count({"product_id": "{cola}", "lot_id": 999, "counted": 1}), 404,
     "lines.0.lot_id: no lot 999"),
    ("POST", "/api/v1/stock/takes", count({"product_id": "{cola}", "counted": 1},
                                          {"product_id": "{cola}", "counted": 2}), 422,
     "lines.1.product_id: product {cola} is counted on another line"),
    ("POST", "/api/v1/routes", {"name": "R", "machines": ["m-1", "nope"]}, 404, "machines.1: no machine 'nope'"),
    ("POST", "/api/v1/routes", {"name": "R", "machines": ["m-1", "m-1"]}, 422,
     "machines.1: m-1 is on the route already"),
    ("PUT", "/api/v1/routes/999", {"name": "R"}, 404, "id: no route 999"),
    ("PATCH", "/api/v1/suppliers/{sup}", {"email": "not-an-address"}, 422, "supplier email"),
    ("PATCH", "/api/v1/suppliers/{sup}", {"lead_time_days": -1}, 422, "supplier lead_time_days"),
]


def fill(value, ids):
    if isinstance(value, str):
        text = value.format(**ids)
        return int(text) if value.startswith("{") and text.isdigit() else text
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


@pytest.mark.parametrize("method,path,body,status,message", BAD, ids=[f"{m} {p} {s}" for m, p, _, s, _ in BAD])
def test_bad_input_names_the_field_and_writes_nothing(client, engine, world, method, path, body, status, message):
    with engine.begin() as conn:  # stock on the book, so that a currency change has something to refuse
        received_po(conn, world["sup"], world["cola"], 2, 100, "seed")
    before = counts(engine)
    r = client.request(method, fill(path, world), json=fill(body, world), headers=ADMIN)
    assert r.status_code == status, r.text
    assert r.json()["error"].startswith(fill(message, world)), r.json()["error"]
    assert counts(engine) == before


def test_a_transfer_or_sale_of_more_than_there_is_is_refused_and_writes_nothing(engine, world):
    before = counts(engine)
    for call in (lambda conn: book.transfer(conn, "x", world["cola"], 1, Place("m-1", "A1"), NOW),
                 lambda conn: book.sell(conn, "x", world["cola"], 1, Place("m-1", "A1"), NOW)):
        with pytest.raises(StockError) as e:
            with engine.begin() as conn:
                book.claim(conn, "x", "test", NOW)
                call(conn)
        assert e.value.field == "quantity" and e.value.status == 409
    assert counts(engine) == before


# -- the API document and vendctl -------------------------------------------------------------------

def test_the_openapi_document_lists_the_stock_routes(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for path in ("/api/v1/products", "/api/v1/products/{product_id}", "/api/v1/suppliers/{supplier_id}",
                 "/api/v1/purchase-orders", "/api/v1/purchase-orders/{po_id}", "/api/v1/purchase-orders/{po_id}/send",
                 "/api/v1/purchase-orders/{po_id}/receive", "/api/v1/purchase-orders/{po_id}/cancel",
                 "/api/v1/purchase-orders/{po_id}/confirm", "/api/v1/stock", "/api/v1/stock/movements",
                 "/api/v1/stock/takes", "/api/v1/stock/alerts", "/api/v1/routes", "/api/v1/routes/{route_id}",
                 "/api/v1/routes/{route_id}/pick-list", "/api/v1/machines/{machine_id}/pick-list"):
        assert path in paths, path


@pytest.fixture
def vendctl(client, monkeypatch, capsys):
    def run(*argv, stdin=""):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, ADMIN)))
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_vendctl_products_purchase_orders_stock_and_pick_lists(vendctl, client, engine, tmp_path):
    with engine.begin() as conn:
        add_machine(conn, counts={"A1": 4, "A2": 10})
        sup = supplier(conn)
    catalogue = tmp_path / "products.csv"
    catalogue.write_text("sku,name,cost,price,currency,barcode,shelf_life_days,reorder_level\n"
                         "cola,Cola 330ml,1.20,3.50,CNY,6901234567892,180,24\n"
                         "water,Water,0.50,2.00,CNY,,,\n")
    code, out, err = vendctl("products", "import", str(catalogue))
    assert code == 0 and "2 products: 0 added, 2 updated" in out, (out, err)  # the planogram made both
    code, out, _ = vendctl("products")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["ID", "SKU", "NAME", "BARCODE"]
    assert "6901234567892" in out and "¥1.20" in out
    code, out, err = vendctl("purchase-orders", "create", "--supplier", str(sup), "--line", "cola=24",
                             "--line", "water=12@0.45")
    assert code == 0 and "purchase order 1 (draft)" in out, err
    assert vendctl("purchase-orders", "send", "1")[0] == 0
    code, out, err = vendctl("purchase-orders", "receive", "1", "--key", "grn-1", "--line", "cola=10")
    assert code == 0 and "partly received" in out, err
    code, out, _ = vendctl("purchase-orders", "receive", "1", "--key", "grn-1", "--line", "cola=10")
    assert code == 0 and "already received under this key: nothing changed" in out
    code, _, err = vendctl("purchase-orders", "receive", "1", "--key", "grn-2", "--line", "cola=99")
    assert code == 1 and "lines.0.quantity" in err
    code, out, _ = vendctl("purchase-orders")
    assert code == 0 and "partly_received" in out
    assert json.loads(vendctl("purchase-orders", "--json")[1])[0]["lines"][0]["received"] == 10
    code, out, _ = vendctl("stock")
    assert code == 0 and "cola" in out and "¥12.00" in out
    assert json.loads(vendctl("stock", "--json")[1])["warehouse"][0]["quantity"] == 10
    code, out, err = vendctl("pick-list", "--machine", "m-1")
    assert code == 0 and "A1" in out and out.splitlines()[0].split()[:3] == ["MACHINE", "SLOT", "PRODUCT"], err
    client.post("/api/v1/routes", headers=ADMIN, json={"name": "North", "machines": ["m-1"]})
    picked = json.loads(vendctl("pick-list", "--route", "1", "--json")[1])
    assert picked["machines"][0]["lines"][0]["pick"] == 6
    assert vendctl("purchase-orders", "cancel", "1", "--reason", "rest not needed")[0] == 0
    code, _, err = vendctl("pick-list", "--route", "9")
    assert code == 1 and "404" in err


def test_ingest_only_queues_a_count_and_the_sweeper_books_it_once(engine):
    with engine.begin() as conn:
        add_machine(conn, counts={"A1": 5, "A2": 0})
        cola = product(conn, "cola", cost=100)
    chain = Chain()
    chain.add("restock", slot="A1", count=9)
    with engine.begin() as conn:
        store_batch(conn, Wallet(), "m-1", chain.batch(1), NOW)
    before = counts(engine)["stock_movements"]
    with engine.connect() as conn:
        queued = conn.execute(sa.select(book.pending_counts)).all()
    assert [(r.slot, r.count_before, r.count_after) for r in queued] == [("A1", 5, 9)]
    for _ in range(2):  # two cloud processes' sweepers, one after the other
        with engine.begin() as conn:
            book.book_pending(conn, NOW)
    assert counts(engine)["stock_movements"] > before
    assert sums(engine, cola, Place("m-1", "A1"))[0] == 9
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(book.pending_counts)).scalar() == 0
