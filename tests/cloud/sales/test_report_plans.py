"""How SQLite reads the rollup for a report filtered by a product: each piece of the range as a range of the
product index (product_id, span, bucket), never every row the product ever had (which an OR of the pieces
after ``product_id = ?`` made it read: a year's report by location for one product went from 109 to 351 ms at
200 machines and a million sales). Checked on the query plan, not on a timing."""

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from cloud.core import db
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
        product = conn.execute(sa.select(reports.slots.c.product_id).where(reports.slots.c.slot == "A1")).scalar()
        rows = [(m, i + 1, (start + timedelta(hours=7 * i)).isoformat(), f"o-{m}-{i}", "A1", product, 350, "CNY")
                for m in ("m-1", "m-2") for i in range(800)]
        conn.execute(sales.insert(), [dict(zip(SALE_COLUMNS, r)) for r in rows])
        reports.project(conn, rows)
    engine.test_product = product
    yield engine
    engine.dispose()


@pytest.mark.parametrize("by", ["machine", "location", "day", "product"])
def test_a_report_for_one_product_reads_ranges_of_the_product_index(engine, by):
    plans = []
    with engine.connect() as conn:
        @sa.event.listens_for(conn, "before_cursor_execute")
        def explain(_c, cursor, statement, params, _context, _many):
            if "sales_rollup" in statement and statement.lstrip().upper().startswith("SELECT"):
                plans.append([row[3] for row in cursor.connection.execute("EXPLAIN QUERY PLAN " + statement,
                                                                         params).fetchall()])

        r = reports.sales_report(conn, reports.Query(conn, by, "2026-01-01", "2027-01-01", "Asia/Shanghai",
                                                     product=engine.test_product))
    assert sum(row["count"] for row in r["rows"]) == 1600
    searches = [step for plan in plans for step in plan if "sales_rollup" in step]
    assert searches, "the report read the rollup"
    for step in searches:
        assert "bucket" in step, f"a search of the rollup without a range of buckets: {step}"
