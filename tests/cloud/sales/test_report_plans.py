"""How SQLite reads the rollups for a report, checked on the query plan, not on a timing. Filtered by a
product: each piece of the range as a range of the product index (product_id, span, bucket), never every row
the product ever had (which an OR of the pieces after ``product_id = ?`` made it read: a year's report by
location for one product went from 109 to 351 ms at 200 machines and a million sales). Over the whole fleet
by machine, location or product: the rollup without the product, or the fleet's per product, never the
machine x product rollup (a year by machine read 200,000 of its rows at 2,000 machines)."""

import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from cloud.core import db
from cloud.fleet import locations
from cloud.sales import reports
from cloud.sales.records import SALE_COLUMNS, sales
from tests.cloud_fixtures import TEMPLATES, add_machine


@pytest.fixture
def engine(tmp_path):
    engine = db.make_engine(TEMPLATES.sqlite_copy(f"{tmp_path}/c.db"))
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        for m in ("m-1", "m-2"):
            add_machine(conn, m)
        engine.test_location = locations.add(conn, "North", now=start)
        for m in ("m-1", "m-2"):
            locations.place(conn, m, engine.test_location, start)
        product = conn.execute(sa.select(reports.slots.c.product_id).where(reports.slots.c.slot == "A1")).scalar()
        rows = [(m, i + 1, (start + timedelta(hours=7 * i)).isoformat(), f"o-{m}-{i}", "A1", product, 350, "CNY")
                for m in ("m-1", "m-2") for i in range(800)]
        conn.execute(sales.insert(), [dict(zip(SALE_COLUMNS, r)) for r in rows])
        reports.project(conn, rows)
    engine.test_product = product
    yield engine
    engine.dispose()


# The bucketed rollups (not their pending deltas, a few rows between two folds of the sweeper).
ROLLUPS = re.compile(r"\b(sales_rollup|sales_machine_rollup|sales_fleet_products)\b")


def planned(engine, by, **filters) -> tuple[dict, list[str]]:
    """The year's report and every step of the plans of its reads of the rollups."""
    plans = []
    with engine.connect() as conn:
        @sa.event.listens_for(conn, "before_cursor_execute")
        def explain(_c, cursor, statement, params, _context, _many):
            if ROLLUPS.search(statement) and statement.lstrip().upper().startswith(("SELECT", "WITH")):
                plans.append([row[3] for row in cursor.connection.execute("EXPLAIN QUERY PLAN " + statement,
                                                                         params).fetchall()])

        r = reports.sales_report(conn, reports.Query(conn, by, "2026-01-01", "2027-01-01", "Asia/Shanghai",
                                                     **filters))
    return r, [step for plan in plans for step in plan if ROLLUPS.search(step)]


@pytest.mark.parametrize("by", ["machine", "location", "day", "product"])
def test_a_report_for_one_product_reads_ranges_of_the_product_index(engine, by):
    r, searches = planned(engine, by, product=engine.test_product)
    assert sum(row["count"] for row in r["rows"]) == 1600
    assert searches, "the report read the rollup"
    for step in searches:
        assert "bucket" in step, f"a search of the rollup without a range of buckets: {step}"


@pytest.mark.parametrize("by,table", [("machine", "sales_machine_rollup"), ("location", "sales_machine_rollup"),
                                      ("product", "sales_fleet_products")])
def test_the_whole_fleets_year_reads_the_rollup_without_the_product_or_the_machine(engine, by, table):
    r, searches = planned(engine, by)
    assert sum(row["count"] for row in r["rows"]) == 1600
    assert len(searches) == 5, searches  # hours, days, 16-day blocks, days, hours of the year in Shanghai
    for step in searches:
        assert step.startswith(f"SEARCH {table} USING ") and "(span=? AND bucket>? AND bucket<?)" in step, step
    if table == "sales_machine_rollup":  # every column from the index, no lookup per row
        assert all("COVERING INDEX sales_machine_rollup_by_time" in step for step in searches), searches


@pytest.mark.parametrize("by", ["day", "machine", "location", "hour"])
def test_some_machines_are_read_by_their_own_rows_without_the_product(engine, by):
    """A machine's or a location's report (here both machines): each machine's range of each piece of the
    year in the rollup without the product, by its primary key; never the time index's range of the whole
    fleet, nor every row of the machine (all its hours, days and blocks: 39 ms against 2 ms for the year of
    100 machines at 5,000 sales each, bench/reports.py)."""
    for filters in ({"machine": "m-1"}, {"location": engine.test_location}):
        r, searches = planned(engine, by, **filters)
        assert sum(row["count"] for row in r["rows"]) == (800 if "machine" in filters else 1600)
        assert searches, filters
        assert set(searches) == {"SEARCH sales_machine_rollup USING PRIMARY KEY "
                                 "(machine_id=? AND span=? AND bucket>? AND bucket<?)"}, (filters, searches)


def test_counting_new_refunds_reads_the_newest_transactions_not_every_sales_entry(engine):
    # The sweeper counts new refunds every second. Joined in one query, SQLite began at the revenue account
    # and read every sale's entry ever booked: 25 ms at 200,000 transactions, in the sweeper's write
    # transaction, and the ingest's acks after a storm waited for it (bench/fleet.py, issue 16).
    from cloud.payments import Wallet
    from cloud.sales import orders
    from tests.cloud_fixtures import add_customer, add_sale

    with engine.begin() as conn:
        ann = add_customer(conn, topup=100_000)
        for i in range(40):
            add_sale(conn, ann, f"s-{i}", machine_id="m-1")
        reports.count_refunds(conn)  # the mark: the newest transaction looked at
        assert Wallet().refund(conn, orders.get(conn, "s-3"), 350, "rk-new", datetime.now(timezone.utc)).ok
        plans = []

        @sa.event.listens_for(conn, "before_cursor_execute")
        def explain(_c, cursor, statement, params, _context, _many):
            if re.search(r"\bentries\b", statement) and statement.lstrip().upper().startswith("SELECT"):
                plans.append([row[3] for row in cursor.connection.execute("EXPLAIN QUERY PLAN " + statement,
                                                                         params).fetchall()])

        assert reports.count_refunds(conn) == 1
        sa.event.remove(conn, "before_cursor_execute", explain)
    steps = [step for plan in plans for step in plan]
    assert steps and not [s for s in steps if "account_id" in s], steps
