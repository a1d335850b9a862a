"""Finance (cloud/finance/): journal postings, settlement rules and statements, reconciliation, on both databases."""

from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.fleet import locations
from cloud.sales import orders
from cloud.finance import ledger, reconcile, settlement
from cloud.finance.common import FinanceError, half_up
from cloud.sales.records import sales
from cloud.payments import PaymentError, Wallet, account, balance, entries, post, txns
from cloud.payments import statement
from cloud.payments.sandbox import ops
from cloud.people import staff
from cloud.stock import book, purchasing
from cloud.catalog import products as catalog
from tests.cloud_fixtures import (NOW, ThroughTestClient, add_customer, add_machine, add_sale, db_url, engine, idle_cloud, unbalanced_txns)

BOOT = "bootstrap-token-for-tests"
ADMIN = {"Authorization": f"Bearer {BOOT}"}
MAY = (date(2024, 5, 1), date(2024, 5, 31))


def count(engine, table) -> int:
    with engine.begin() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def world(conn):
    """A machine at a location, a supplier and a described product: (location id, supplier id, product id)."""
    add_machine(conn)
    location_id = locations.add(conn, "Station", now=NOW)
    locations.place(conn, "m-1", location_id, NOW)
    supplier_id = staff.add_supplier(conn, "Fresh Drinks", "", NOW)
    product_id = catalog.add_product(conn, "tea", "Tea", 120, 300, "CNY", NOW)
    return location_id, supplier_id, product_id


def receive(conn, supplier_id, product_id, qty, cost, key, at=NOW):
    po = purchasing.create(conn, supplier_id, "CNY", [{"product_id": product_id, "quantity": qty,
                                                       "unit_cost": cost}], at)
    purchasing.send(conn, po, at)
    return purchasing.receive(conn, po, key, [{"product_id": product_id, "quantity": qty}], at)


def sell_from_slot(conn, product_id, qty, key, at=NOW, load=True):
    """``qty`` units moved into m-1 A1 and counted as sold: the stock book's sale movement."""
    place = book.Place("m-1", "A1")
    assert book.claim(conn, key, "test", at)
    if load:
        book.transfer(conn, key, product_id, qty, place, at)
    return book.sell(conn, key, product_id, qty, place, at)


def acct(conn, kind, owner=0, currency="CNY"):
    return balance(conn, account(conn, kind, owner, currency))


def add_sale_row(conn, order_id, amount, seq, ts=NOW, machine="m-1", incident=""):
    conn.execute(sales.insert().values(machine_id=machine, seq=seq, ts=ts.isoformat(), order_id=order_id, slot="A1",
                                       product_id=None, amount=amount, currency="CNY", incident=incident))


# -- the journal -------------------------------------------------------------------------------------

def test_goods_received_post_inventory_against_the_suppliers_payable_once(engine):
    with engine.begin() as conn:
        _, supplier_id, product_id = world(conn)
        receive(conn, supplier_id, product_id, 3, 120, "grn-1")
        assert ledger.catch_up(conn, NOW) == 1
        assert ledger.catch_up(conn, NOW) == 0
        assert acct(conn, "inventory") == -360 and acct(conn, "supplier_payable", supplier_id) == 360
        (txn,) = conn.execute(sa.select(txns).where(txns.c.kind == "goods_received")).all()
        assert txn.key == "stock:receipt:receipt:grn-1:CNY"
        assert unbalanced_txns(conn) == []


def test_stock_booked_as_sold_posts_its_value_as_cost_of_goods_sold(engine):
    with engine.begin() as conn:
        _, supplier_id, product_id = world(conn)
        receive(conn, supplier_id, product_id, 3, 100, "grn-1")
        receive(conn, supplier_id, product_id, 1, 101, "grn-2")  # average 100.25
        value = sell_from_slot(conn, product_id, 2, "ledger:m-1:7")
        ledger.catch_up(conn, NOW)
        assert value == 200 and acct(conn, "cogs") == -200
        book_value = conn.execute(sa.select(sa.func.sum(book.movements.c.value))).scalar()
        assert acct(conn, "inventory") == -int(book_value) == -201
        assert ledger.catch_up(conn, NOW) == 0 and unbalanced_txns(conn) == []


def test_a_supplier_payment_lowers_the_payable_once_under_its_key(engine):
    with engine.begin() as conn:
        _, supplier_id, product_id = world(conn)
        receive(conn, supplier_id, product_id, 10, 100, "grn-1")
        ledger.catch_up(conn, NOW)
        args = (supplier_id, "pay-1", 400, "CNY", "2024-05-03", "bank 77")
        first, made = ledger.pay_supplier(conn, *args, NOW)
        again, made_again = ledger.pay_supplier(conn, *args, NOW)
        assert (made, made_again) == (True, False) and first == again
        assert acct(conn, "supplier_payable", supplier_id) == 600 and acct(conn, "bank") == 400
        with pytest.raises(FinanceError, match="key") as e:
            ledger.pay_supplier(conn, supplier_id, "pay-1", 500, "CNY", "2024-05-03", "bank 77", NOW)
        assert e.value.status == 409
        s = ledger.supplier_statement(conn, supplier_id, *MAY, "CNY")
        assert (s["opening_balance"], s["purchases"], s["payments"], s["closing_balance"]) == (0, 1000, 400, 600)
        s = ledger.supplier_statement(conn, supplier_id, date(2024, 5, 2), date(2024, 5, 31), "CNY")
        assert (s["opening_balance"], s["purchases"], s["payments"], s["closing_balance"]) == (1000, 0, 400, 600)


def test_post_refuses_legs_that_do_not_balance_in_each_currency_and_writes_nothing(engine):
    with engine.begin() as conn:
        cny, cny2 = account(conn, "bank", 0, "CNY"), account(conn, "cogs", 0, "CNY")
        usd = account(conn, "bank", 0, "USD")
    for legs in ([(cny, 100), (cny2, -99)], [(cny, 100), (usd, -100)], [], [(cny, 1.5), (cny2, -1.5)],
                 [(cny, 5), (9999, -5)]):
        with pytest.raises(PaymentError):
            with engine.begin() as conn:
                post(conn, "bad", "test", legs, NOW)
    assert count(engine, txns) == 0 and count(engine, entries) == 0


OPS = st.lists(st.tuples(st.sampled_from(["topup", "sale", "refund", "receipt", "sell", "pay", "catch_up",
                                          "statement"]), st.integers(1, 900)), min_size=1, max_size=12)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPS)
def test_any_sequence_of_operations_keeps_every_account_equal_to_its_legs_and_the_trial_balance_zero(engine, ops_):
    with engine.begin() as conn:
        if conn.execute(sa.select(locations.locations.c.id)).first() is None:
            world(conn)
            add_customer(conn, topup=100_000)
        location_id = conn.execute(sa.select(locations.locations.c.id)).scalar()
        supplier_id = conn.execute(sa.select(staff.suppliers.c.id)).scalar()
        product_id = conn.execute(sa.select(catalog.product_details.c.product_id)).scalar()
        customer_id = conn.execute(sa.select(orders.orders.c.customer_id)).scalar() or 1
        n = conn.execute(sa.select(sa.func.count()).select_from(txns)).scalar()
        for i, (op, x) in enumerate(ops_):
            tag = f"{n}-{i}"
            if op == "topup":
                Wallet().topup(conn, customer_id, x, "CNY", f"t-{tag}", NOW)
            elif op == "sale" and Wallet().balance(conn, customer_id, "CNY") >= x:
                add_sale(conn, customer_id, f"o-{tag}", amount=x)
            elif op == "refund":
                captured = conn.execute(sa.select(txns.c.order_id).where(txns.c.kind == "capture")).scalars().all()
                if captured:
                    order = orders.get(conn, captured[x % len(captured)])
                    got, back = Wallet().refunded(conn, order)
                    if got > back:
                        Wallet().refund(conn, order, 1 + x % (got - back), f"r-{tag}", NOW)
            elif op == "receipt":
                receive(conn, supplier_id, product_id, 1 + x % 7, x, f"grn-{tag}")
            elif op == "sell":
                have = book.balance(conn, product_id)[0]
                if have:
                    sell_from_slot(conn, product_id, 1 + x % have, f"ledger:{tag}")
            elif op == "pay":
                ledger.pay_supplier(conn, supplier_id, f"pay-{tag}", x, "CNY", "2024-05-02", "", NOW)
            elif op == "catch_up":
                ledger.catch_up(conn, NOW)
            else:
                # Posted once the period is over (a period still running cannot be).
                settlement.post_statement(conn, location_id, NOW.date(), NOW.date() + timedelta(days=x % 40), "CNY",
                                          NOW + timedelta(days=41))
        ledger.catch_up(conn, NOW)
        by_account: dict = {}
        for account_id, amount in conn.execute(sa.select(entries.c.account_id, entries.c.amount)):
            by_account[account_id] = by_account.get(account_id, 0) + amount
        tb = ledger.trial_balance(conn)
        for row in tb["accounts"]:
            assert row["balance"] == by_account.get(row["account_id"], 0) == balance(conn, row["account_id"])
        assert tb["balanced"] and all(t["sum"] == 0 for t in tb["totals"])
        assert unbalanced_txns(conn) == []
        book_value = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(book.movements.c.value), 0))).scalar())
        assert acct(conn, "inventory") == -book_value


# -- settlement --------------------------------------------------------------------------------------

def rule(conn, location_id, **body):
    return settlement.add_rule(conn, location_id, {"currency": "CNY", **body}, NOW)


def test_half_up_rounding_is_exact():
    assert [half_up(n, 10) for n in (1254, 1255, 1256, -1255, -1256, 0)] == [125, 126, 126, -125, -126, 0]
    assert half_up(10**30 + 5, 10) == 10**29 + 1


@pytest.fixture
def sold_in_may(engine):
    """At the location in May 2024: 4 sales (350, 350, 200, 104 = 1004), a 100 refund, cost of goods 300."""
    with engine.begin() as conn:
        location_id, supplier_id, product_id = world(conn)
        customer_id = add_customer(conn)
        add_sale(conn, customer_id, "o-1", amount=350)
        for seq, (order, amount, day) in enumerate([("o-1", 350, 1), ("o-2", 350, 5), ("o-3", 200, 20),
                                                    ("o-4", 104, 31)], 1):
            add_sale_row(conn, order, amount, seq, NOW.replace(day=day))
        add_sale_row(conn, "o-free", 0, 9, NOW)  # a drop already voided: not a sale
        add_sale_row(conn, "o-june", 500, 10, NOW.replace(month=6))
        Wallet().refund(conn, orders.get(conn, "o-1"), 100, "r-1", NOW + timedelta(days=2))
        receive(conn, supplier_id, product_id, 3, 100, "grn-1")
        sell_from_slot(conn, product_id, 3, "ledger:m-1:1", NOW + timedelta(days=3))
    return location_id


def test_a_statement_counts_the_locations_sales_net_of_refunds_and_its_cost_of_goods(engine, sold_in_may):
    with engine.begin() as conn:
        s = settlement.statement(conn, sold_in_may, *MAY, "CNY", NOW)
    assert (s["sales_count"], s["gross"], s["refunds"], s["net"], s["cogs"], s["profit"]) == (4, 1004, 100, 904, 300,
                                                                                              604)
    assert s["lines"] == [] and s["total_due"] == 0 and s["period"] == "2024-05"


def test_a_machine_moved_mid_month_splits_its_sales_between_the_two_locations(engine):
    # Issue 15: a statement counted every sale of the machines standing at a location now, so a machine
    # moved on the 10th took its whole month (and its earlier months) to the new place.
    moved = NOW.replace(day=10, hour=9)
    with engine.begin() as conn:
        station, supplier_id, product_id = world(conn)  # m-1 at Station since May 1st
        airport = locations.add(conn, "Airport", now=NOW)
        customer_id = add_customer(conn)
        add_sale(conn, customer_id, "o-1", amount=350)
        for seq, (order, amount, at) in enumerate([
                ("o-1", 350, NOW.replace(day=3)), ("o-2", 200, moved - timedelta(minutes=1)),
                ("o-3", 400, moved + timedelta(minutes=1)), ("o-4", 150, NOW.replace(day=28))], 1):
            add_sale_row(conn, order, amount, seq, at)
        receive(conn, supplier_id, product_id, 4, 100, "grn-1")
        sell_from_slot(conn, product_id, 1, "ledger:m-1:1", NOW.replace(day=4))
        locations.place(conn, "m-1", airport, moved)
        sell_from_slot(conn, product_id, 2, "ledger:m-1:2", NOW.replace(day=12), load=True)
        Wallet().refund(conn, orders.get(conn, "o-1"), 100, "r-1", NOW.replace(day=20))  # o-1 sold at Station
        rule(conn, station, kind="percent_gross", percent="10", valid_from="2024-01-01")
        rule(conn, airport, kind="percent_gross", percent="10", valid_from="2024-01-01")
        at_station = settlement.statement(conn, station, *MAY, "CNY", NOW + timedelta(days=40))
        at_airport = settlement.statement(conn, airport, *MAY, "CNY", NOW + timedelta(days=40))
        stays = locations.history(conn, "m-1")
    assert (at_station["sales_count"], at_station["gross"], at_station["refunds"], at_station["cogs"]) == \
        (2, 550, 100, 100)
    assert (at_airport["sales_count"], at_airport["gross"], at_airport["refunds"], at_airport["cogs"]) == \
        (2, 550, 0, 200)
    assert (at_station["total_due"], at_airport["total_due"]) == (45, 55)
    assert [(s["location"], s["from"], s["to"]) for s in stays] == [
        ("Airport", moved.isoformat(), None), ("Station", None, moved.isoformat())]


def test_what_changes_a_posted_month_is_carried_once_into_the_next_statement(engine, sold_in_may):
    # Issue 15: after a later refund the settlement page said "Commission due ¥0.69 · Posted: Yes, ¥1.13",
    # with no adjustment anywhere. A refund counts on the day it is made, so one after posting lands in the
    # next statement by itself; what still changes a posted month is a sale its machine reports late (a
    # machine offline for weeks): that change is carried, once, into the next statement posted.
    june = (date(2024, 6, 1), date(2024, 6, 30))
    july = (date(2024, 7, 1), date(2024, 7, 31))
    after = NOW + timedelta(days=100)
    with engine.begin() as conn:
        rule(conn, sold_in_may, kind="percent_gross", percent="10", valid_from="2024-01-01")
        may, made = settlement.post_statement(conn, sold_in_may, *MAY, "CNY", after)
        assert made and may["total_due"] == 90  # 10 % of 904
        Wallet().refund(conn, orders.get(conn, "o-1"), 250, "r-late", NOW.replace(month=6, day=3))
        assert settlement.statement(conn, sold_in_may, *june, "CNY", after)["refunds"] == 250
        add_sale_row(conn, "o-late", 300, 20, NOW.replace(day=28))  # a May sale, reported in August
        again = settlement.statement(conn, sold_in_may, *MAY, "CNY", after)
        assert (again["posted"]["total"], again["total_due"], again["posted"]["carried"]) == (90, 120, [])
        june_s = settlement.statement(conn, sold_in_may, *june, "CNY", after)
        carried = [x for x in june_s["lines"] if x["kind"] == "adjustment"]
        assert [(x["period"], x["commission"]) for x in carried] == [("2024-05", 30)]
        assert june_s["total_due"] == 25 + 30  # June's own 10 % of (500 - 250), and May's change
        settlement.post_statement(conn, sold_in_may, *june, "CNY", after)
        assert settlement.statement(conn, sold_in_may, *MAY, "CNY", after)["posted"]["carried"] == \
            [{"carried_in": "2024-06", "amount": 30}]
        # Carried once: July has nothing of May's, and June, posted, shows what it carried.
        assert [x for x in settlement.statement(conn, sold_in_may, *july, "CNY", after)["lines"]
                if x["kind"] == "adjustment"] == []
        june_posted = settlement.statement(conn, sold_in_may, *june, "CNY", after)
        assert [(x["period"], x["commission"]) for x in june_posted["lines"] if x["kind"] == "adjustment"] == \
            [("2024-05", 30)] and june_posted["total_due"] == june_posted["posted"]["total"] == 55
        assert acct(conn, "commission_payable", sold_in_may) == 90 + 55


def test_each_rule_kind_with_exact_integers_and_half_up_rounding(engine, sold_in_may):
    with engine.begin() as conn:
        rule(conn, sold_in_may, kind="percent_gross", percent="12.50", valid_from="2024-01-01")  # 904 -> 113
        rule(conn, sold_in_may, kind="percent_profit", percent=7.25, valid_from="2024-01-01")  # 604 -> 43.79 -> 44
        rule(conn, sold_in_may, kind="per_item", amount=15, valid_from="2024-05-02", valid_to="2024-05-31")  # 3 items
        rule(conn, sold_in_may, kind="flat_monthly", amount=1000, valid_from="2024-05-11")  # 21/31 -> 677.4 -> 677
        s = settlement.statement(conn, sold_in_may, *MAY, "CNY", NOW)
    got = {x["kind"]: x["commission"] for x in s["lines"]}
    assert got == {"percent_gross": 113, "percent_profit": 44, "per_item": 45, "flat_monthly": 677}
    assert s["total_due"] == 113 + 44 + 45 + 677


def test_a_percent_lands_half_up_on_an_exact_half(engine, sold_in_may):
    with engine.begin() as conn:
        rule(conn, sold_in_may, kind="percent_gross", percent="12.5", valid_from="2024-05-31")  # 104 x 12.5% = 13
        rule(conn, sold_in_may, kind="percent_gross", percent="0.5", valid_from="2024-05-20", valid_to="2024-05-20")
        s = settlement.statement(conn, sold_in_may, *MAY, "CNY", NOW)  # 200 x 0.5% = 1.0
    assert [x["commission"] for x in s["lines"]] == [1, 13]
    with engine.begin() as conn:
        s = settlement.statement(conn, sold_in_may, date(2024, 5, 5), date(2024, 5, 5), "CNY", NOW)
    assert s["gross"] == 350 and s["period"] == "2024-05-05..2024-05-05"


def test_a_flat_fee_is_prorated_by_days_in_each_month_it_touches(engine, sold_in_may):
    with engine.begin() as conn:
        rule(conn, sold_in_may, kind="flat_monthly", amount=1000, valid_from="2024-04-25", valid_to="2024-05-05")
        s = settlement.statement(conn, sold_in_may, date(2024, 4, 1), date(2024, 5, 31), "CNY", NOW)
    (line,) = s["lines"]
    assert line["commission"] == 200 + 161  # April 6/30 of 1000, May 5/31 of 1000 = 161.29
    assert (line["from"], line["to"]) == ("2024-04-25", "2024-05-05")


def test_profit_below_zero_owes_nothing(engine, sold_in_may):
    with engine.begin() as conn:
        rule(conn, sold_in_may, kind="percent_profit", percent=50, valid_from="2024-05-04")  # 0 sold, cost 300
        rule(conn, sold_in_may, kind="percent_gross", percent=10, valid_from="2024-05-04", valid_to="2024-05-04")
        s = settlement.statement(conn, sold_in_may, date(2024, 5, 4), date(2024, 5, 4), "CNY", NOW)
    assert s["profit"] == -300 and [x["commission"] for x in s["lines"]] == [0, 0]


@pytest.mark.parametrize("body,field,status", [
    ({"kind": "percent_gross", "percent": -1, "valid_from": "2024-01-01"}, "percent", 422),
    ({"kind": "percent_gross", "percent": 100.5, "valid_from": "2024-01-01"}, "percent", 422),
    ({"kind": "percent_gross", "percent": "1.234", "valid_from": "2024-01-01"}, "percent", 422),
    ({"kind": "per_item", "amount": -5, "valid_from": "2024-01-01"}, "amount", 422),
    ({"kind": "per_item", "percent": 5, "valid_from": "2024-01-01"}, "percent", 422),
    ({"kind": "bonus", "amount": 5, "valid_from": "2024-01-01"}, "kind", 422),
    ({"kind": "per_item", "amount": 5, "valid_from": "2024-02-01", "valid_to": "2024-01-01"}, "valid_to", 422),
    ({"kind": "per_item", "amount": 5, "valid_from": "someday"}, "valid_from", 422),
    ({"kind": "per_item", "amount": 5, "valid_from": "2024-03-31"}, "valid_from", 409),  # overlaps the open one
    ({"kind": "per_item", "amount": 5, "valid_from": "2023-01-01", "valid_to": "2024-01-01"}, "valid_from", 409),
])
def test_bad_rules_name_the_field_and_write_nothing(engine, body, field, status):
    with engine.begin() as conn:
        location_id, _, _ = world(conn)
        rule(conn, location_id, kind="per_item", amount=5, valid_from="2024-01-01")
    with pytest.raises(FinanceError) as e:
        with engine.begin() as conn:
            rule(conn, location_id, **body)
    assert (e.value.field, e.value.status) == (field, status)
    assert count(engine, settlement.settlement_rules) == 1
    with engine.begin() as conn:  # the day before the open rule: no overlap
        rule(conn, location_id, kind="per_item", amount=5, valid_from="2023-01-01", valid_to="2023-12-31")
        with pytest.raises(FinanceError) as e:
            rule(conn, 999, kind="per_item", amount=5, valid_from="2023-01-01")
        assert e.value.status == 404


# -- reconciliation ----------------------------------------------------------------------------------

def test_reconciliation_is_clear_when_every_sale_was_captured_for_its_amount(engine):
    with engine.begin() as conn:
        add_machine(conn)
        customer_id = add_customer(conn)
        for i, amount in enumerate((350, 200), 1):
            add_sale(conn, customer_id, f"o-{i}", amount=amount)
            add_sale_row(conn, f"o-{i}", amount, i)
        Wallet().refund(conn, orders.get(conn, "o-1"), 350, "r-1", NOW)
        r = reconcile.reconcile(conn, *MAY)
    assert r["clear"] and r["mismatches"] == []
    assert r["totals"] == {"sold": 550, "captured": 550, "refunded": 350, "orders": 2}
    assert r["by_currency"] == [{"currency": "CNY", "sold": 550, "captured": 550, "refunded": 350, "orders": 2}]


def test_reconciliation_lists_each_kind_of_mismatch(engine):
    with engine.begin() as conn:
        add_machine(conn)
        customer_id = add_customer(conn, topup=10_000)
        revenue, wallet = account(conn, "revenue", 0, "CNY"), account(conn, "wallet", customer_id, "CNY")
        sandbox = account(conn, "sandbox", 0, "CNY")
        add_sale(conn, customer_id, "o-nosale", amount=100)  # captured_not_sold
        add_sale_row(conn, "o-nocapture", 120, 1)  # sold_not_captured
        add_sale(conn, customer_id, "o-differ", amount=350)
        add_sale_row(conn, "o-differ", 300, 2)  # amounts_differ
        add_sale(conn, customer_id, "o-twice", amount=200)
        add_sale_row(conn, "o-twice", 200, 3)
        add_sale_row(conn, "o-twice", 200, 4)  # sold_twice (and so amounts_differ: 400 sold, 200 captured)
        add_sale(conn, customer_id, "o-cap2", amount=50)
        add_sale_row(conn, "o-cap2", 50, 5)
        post(conn, "capture:again", "capture", [(wallet, -50), (revenue, 50)], NOW, "o-cap2")  # captured_twice
        add_sale(conn, customer_id, "o-refund", amount=80)
        add_sale_row(conn, "o-refund", 80, 6)
        post(conn, "refund:too-much", "refund", [(revenue, -90), (wallet, 90)], NOW, "o-refund")
        add_sale_row(conn, "o-provider", 70, 7)  # the sandbox captured it, the journal never heard
        conn.execute(ops.insert().values(key="capture:o-provider", op="capture", order_id="o-provider", amount=70,
                                         currency="CNY", status="succeeded", next_try_at=NOW, created_at=NOW,
                                         updated_at=NOW))
        add_sale_row(conn, "o-journal", 60, 8)  # the journal holds a sandbox capture the sandbox never made
        post(conn, "sandbox:capture:o-journal", "capture", [(sandbox, -60), (revenue, 60)], NOW, "o-journal")
        add_sale_row(conn, "o-later", 10, 9, NOW + timedelta(days=40))  # outside the period: not looked at
        add_sale_row(conn, "o-late-drop", 0, 10, incident="dropped_unpaid")  # dropped after a void, not charged
        add_sale_row(conn, "o-elsewhere", 0, 11, incident="no_such_order")  # another machine's order, or none
        add_sale_row(conn, "o-charged-late", 0, 12, incident="dropped_charged")  # charged afresh: no mismatch
        add_sale_row(conn, "o-unlisted", 30, 13)  # captured and confirmed, but the statement does not list it
        conn.execute(ops.insert().values(key="capture:o-unlisted", op="capture", order_id="o-unlisted", amount=30,
                                         currency="CNY", status="succeeded", next_try_at=NOW, created_at=NOW,
                                         updated_at=NOW))
        post(conn, "sandbox:capture:o-unlisted", "capture", [(sandbox, -30), (revenue, 30)], NOW, "o-unlisted")
        # The platform's statement: a capture the journal never had, and another amount for o-journal.
        statement.import_statement(conn, "sandbox", "sandbox", [
            statement.StatementLine("bt_1", "capture", "o-stmt-only", 40, "CNY", NOW),
            statement.StatementLine("bt_2", "capture", "o-journal", 55, "CNY", NOW)], b"statement", NOW)
        r = reconcile.reconcile(conn, *MAY)
    found = {(m["kind"], m["order_id"]) for m in r["mismatches"]}
    assert found == {("captured_not_sold", "o-nosale"), ("sold_not_captured", "o-nocapture"),
                     ("amounts_differ", "o-differ"), ("sold_twice", "o-twice"), ("amounts_differ", "o-twice"),
                     ("captured_twice", "o-cap2"), ("amounts_differ", "o-cap2"),
                     ("refunded_more_than_captured", "o-refund"), ("provider_not_in_journal", "o-provider"),
                     ("sold_not_captured", "o-provider"), ("journal_not_at_provider", "o-journal"),
                     ("dropped_not_charged", "o-late-drop"), ("sold_no_such_order", "o-elsewhere"),
                     ("statement_not_in_journal", "o-stmt-only"), ("statement_amount_differs", "o-journal"),
                     ("journal_not_in_statement", "o-unlisted")}
    assert not r["clear"] and set(r["counts"]) == set(reconcile.KINDS)
    assert {m["currency"] for m in r["mismatches"]} == {"CNY"}, "each row says its currency, from whichever side it has"
    differ = next(m for m in r["mismatches"] if m["order_id"] == "o-differ")
    assert (differ["sold"], differ["captured"]) == (300, 350)
    assert {k for k, n in r["counts"].items() if n} == set(reconcile.KINDS)


# -- the API -----------------------------------------------------------------------------------------

@pytest.fixture
def api(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        location_id, supplier_id, product_id = world(conn)
        customer_id = add_customer(conn)
        add_sale(conn, customer_id, "o-1", amount=350)
        add_sale_row(conn, "o-1", 350, 1)
    with TestClient(cloud.app.create_app(obj, BOOT, b"k" * 32)) as client:
        yield client, obj.engine, location_id, supplier_id
    obj.engine.dispose()


def test_a_statement_as_json_csv_and_a_printable_page_and_posted_once(api):
    client, engine, location_id, _ = api
    r = client.post(f"/api/v1/locations/{location_id}/settlement-rules", headers=ADMIN,
                    json={"kind": "percent_gross", "percent": "10", "currency": "CNY", "valid_from": "2024-01-01"})
    assert r.status_code == 201, r.text
    s = client.get(f"/api/v1/locations/{location_id}/statements/2024-05", headers=ADMIN).json()
    assert (s["sales_count"], s["gross"], s["total_due"]) == (1, 350, 35)
    r = client.get(f"/api/v1/locations/{location_id}/statements/2024-05?format=csv", headers=ADMIN)
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0] == "line,rule_id,kind,from,to,basis,amount" and lines[-1].endswith(",CNY,35")
    page = client.get(f"/api/v1/locations/{location_id}/statements/2024-05?format=html", headers=ADMIN)
    assert page.status_code == 200 and "@page { size: A4" in page.text
    assert '<td class="n" id="total">CN¥0.35</td>' in page.text and "Station" in page.text
    before = count(engine, txns)
    first = client.post(f"/api/v1/locations/{location_id}/statements/2024-05/post", headers=ADMIN).json()
    again = client.post(f"/api/v1/locations/{location_id}/statements/2024-05/post", headers=ADMIN).json()
    assert (first["created"], again["created"]) == (True, False) and count(engine, txns) == before + 1
    with engine.begin() as conn:
        assert acct(conn, "commission_payable", location_id) == 35 and acct(conn, "commission_expense") == -35
    assert client.get(f"/api/v1/locations/{location_id}/statements/2024-13", headers=ADMIN).status_code == 422
    # A month still running cannot be posted: later sales would change what it owes (issue 15).
    running = datetime.now(timezone.utc).strftime("%Y-%m")
    r = client.post(f"/api/v1/locations/{location_id}/statements/{running}/post", headers=ADMIN)
    assert r.status_code == 409 and "has not ended yet" in r.json()["error"], r.text
    assert count(engine, txns) == before + 1
    r = client.get(f"/api/v1/locations/{location_id}/statements/2024-05-09..2024-05-01", headers=ADMIN)
    assert r.status_code == 422 and "wrong order" in r.json()["error"]
    assert client.get("/api/v1/locations/99/statements/2024-05", headers=ADMIN).status_code == 404


def test_supplier_payments_and_their_bad_input(api):
    client, engine, _, supplier_id = api
    body = {"key": "pay-1", "amount": 500, "currency": "CNY", "paid_on": "2024-05-03", "reference": "bank 1"}
    r = client.post(f"/api/v1/suppliers/{supplier_id}/payments", json=body, headers=ADMIN)
    assert r.status_code == 201 and r.json()["created"] is True
    r = client.post(f"/api/v1/suppliers/{supplier_id}/payments", json=body, headers=ADMIN)
    assert r.status_code == 201 and r.json()["created"] is False
    before = (count(engine, txns), count(engine, ledger.supplier_payments))
    for bad, status, shown in (({**body, "key": "pay-2", "amount": -5}, 422, "amount"),
                               ({**body, "key": "pay-2", "amount": 0}, 422, "amount"),
                               ({**body, "amount": 600}, 409, "key"),
                               ({**body, "key": "pay-2", "currency": "yuan"}, 422, "currency"),
                               ({**body, "key": "pay-2", "paid_on": "soon"}, 422, "paid_on")):
        r = client.post(f"/api/v1/suppliers/{supplier_id}/payments", json=bad, headers=ADMIN)
        assert r.status_code == status and shown in r.text, r.text
    r = client.post("/api/v1/suppliers/999/payments", json={**body, "key": "pay-3"}, headers=ADMIN)
    assert r.status_code == 404
    assert (count(engine, txns), count(engine, ledger.supplier_payments)) == before
    s = client.get(f"/api/v1/suppliers/{supplier_id}/statement?from=2024-05-01&to=2024-05-31", headers=ADMIN).json()
    assert (s["payments"], s["closing_balance"]) == (500, -500)
    period = f"/api/v1/suppliers/{supplier_id}/statement?from=2024-05-01&to=2024-05-31"
    text = client.get(period + "&format=csv", headers=ADMIN).text.splitlines()
    assert text[-2:] == ["opening_balance,purchases,payments,closing_balance", f"0,{s['purchases']},500,-500"]
    assert any(",supplier_payment," in line and line.endswith(",-500") for line in text), text
    page = client.get(period + "&format=html", headers=ADMIN)
    assert page.headers["content-type"].startswith("text/html") and 'id="closing">' in page.text
    assert "Payment" in page.text
    tb = client.get("/api/v1/finance/trial-balance", headers=ADMIN).json()
    assert tb["balanced"]
    r = client.get("/api/v1/finance/journal?account=bank", headers=ADMIN).json()
    assert r["account"]["natural_balance"] == -500 and r["legs"][0]["kind"] == "supplier_payment"
    r = client.get("/api/v1/finance/reconciliation?from=2024-05-01&to=2024-05-31", headers=ADMIN).json()
    assert r["clear"] and r["totals"]["sold"] == 350
    assert client.get("/api/v1/finance/reconciliation?from=2024-05-31&to=2024-05-01",
                      headers=ADMIN).status_code == 422


def test_vendctl_settlement_reconcile_and_journal(api, monkeypatch, capsys):
    import cloud.cli

    client, engine, location_id, _ = api

    through = ThroughTestClient(client, ADMIN)
    monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: through))
    client.post(f"/api/v1/locations/{location_id}/settlement-rules", headers=ADMIN,
                json={"kind": "per_item", "amount": 20, "valid_from": "2024-05-01"})
    assert cloud.cli.main(["settlement", "Station", "--month", "2024-05"]) == 0
    out = capsys.readouterr().out
    assert "1 sales" in out and "total due: ¥0.20; not posted" in out
    assert "1 x ¥0.20" in out and "1 x 20" not in out  # the basis in money, not minor units (issue 15)
    assert cloud.cli.main(["settlement", str(location_id), "--month", "2024-05", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "total_due,,,2024-05-01,2024-05-31,CNY,20"
    assert cloud.cli.main(["reconcile", "--from", "2024-05-01", "--to", "2024-05-31"]) == 0
    out = capsys.readouterr().out
    assert "no mismatches" in out and "sold ¥3.50" in out and "minor units" not in out
    assert cloud.cli.main(["journal", "--json"]) == 0
    kinds = {a["kind"] for a in __import__("json").loads(capsys.readouterr().out)["accounts"]}
    assert {"revenue", "wallet", "topup_clearing"} <= kinds
    assert cloud.cli.main(["journal", "--account", "revenue"]) == 0
    assert "revenue 0 (CNY, credit): ¥3.50" in capsys.readouterr().out


def test_a_supplier_reads_only_its_own_statement(api):
    from cloud.people import auth

    client, engine, _, supplier_id = api
    with engine.begin() as conn:
        other = staff.add_supplier(conn, "Other Drinks", "", NOW)
        user = staff.add_staff(conn, "fresh", "supplier", NOW, None, False, supplier_id)
        token = auth.new_token(conn, user, "t", NOW)[1]
    own = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/v1/suppliers/{supplier_id}/statement", headers=own).status_code == 200
    assert client.get(f"/api/v1/suppliers/{other}/statement", headers=own).status_code == 404
    assert client.get("/api/v1/finance/journal", headers=own).status_code == 403
