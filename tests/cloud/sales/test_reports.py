"""Manager reports (cloud/sales/reports.py): every report equals a plain grouping of ``sales``, the rollups stay
right through ingest and the migration's backfill, roles, and bad input."""

import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.sync import ingest
from cloud.fleet import locations
from cloud.sales import reports
from cloud.core.db import bulk_insert, utcnow
from cloud.sales.records import SALE_COLUMNS, sales
from cloud.sync.ingest import store_batch
from cloud.catalog.products import products
from cloud.payments import Wallet
from cloud.people import auth, staff
from tests.cloud_fixtures import upgrade_to, MACHINE, NOW, SECRET, Chain, ThroughTestClient, add_machine, db_url, engine, idle_cloud, slot_spec

START = datetime(2026, 10, 20, tzinfo=timezone.utc)
ZONES = (None, "Asia/Shanghai", "America/New_York", "Asia/Kolkata")


def seed(engine, n=2500, seed=7):
    """Three machines (two at locations, one nowhere), products in slots, and ``n`` random sales over 60
    days in two currencies, stored the way ingest stores them: sales rows, then ``reports.project`` per
    batch; some fleet deltas are folded and some left pending, as between two sweeps."""
    rng = random.Random(seed)
    with engine.begin() as conn:
        specs = [slot_spec("A1", 350, "cola", "Cola"), slot_spec("A2", 200, "water", "Water"),
                 slot_spec("A3", 500, "nuts", "Nuts", currency="USD")]
        for m in ("m-1", "m-2", "m-3"):
            add_machine(conn, m, specs=specs)
        north = locations.add(conn, "North", now=NOW)
        south = locations.add(conn, "South", now=NOW)
        locations.place(conn, "m-1", north, NOW)
        locations.place(conn, "m-2", south, NOW)
        ids = dict(conn.execute(sa.select(products.c.sku, products.c.id)).all())
        rows, seqs = [], defaultdict(int)
        for _ in range(n):
            m = rng.choice(("m-1", "m-2", "m-3"))
            sku, currency = rng.choice((("cola", "CNY"), ("water", "CNY"), ("nuts", "USD"), (None, "CNY")))
            seqs[m] += 1
            ts = START + timedelta(seconds=rng.randrange(60 * 86400))
            rows.append((m, seqs[m], ts.isoformat(timespec="microseconds"), f"o-{m}-{seqs[m]}", "A1",
                         ids.get(sku), rng.choice((0, 200, 350, 500)), currency))
        for i in range(0, n, 97):
            bulk_insert(conn, sales, SALE_COLUMNS, rows[i:i + 97])
            reports.project(conn, rows[i:i + 97])
            if i < n // 2:
                reports.fold(conn)
    return ids


def expected(engine, by, start, end, tz=None, machine=None, location=None, product=None):
    """The report grouped straight from ``sales``: each sale in the local day and hour in which its UTC
    hour starts (exact for whole-hour zones; the documented rule for half-hour ones)."""
    zone = ZoneInfo(tz) if tz else timezone.utc
    lo = datetime.fromisoformat(start).replace(tzinfo=zone)
    hi = datetime.fromisoformat(end).replace(tzinfo=zone)
    with engine.connect() as conn:
        where = dict(conn.execute(sa.select(locations.machine_locations.c.machine_id,
                                            locations.machine_locations.c.location_id)).all())
        got = conn.execute(sa.select(sales.c.machine_id, sales.c.ts, sales.c.product_id, sales.c.amount,
                                     sales.c.currency)).all()
    cells = defaultdict(lambda: [0, 0])
    for m, ts, product_id, amount, currency in got:
        t = datetime.fromisoformat(ts)
        hour_start = datetime.fromtimestamp(reports.hour_of(ts) * 3600, zone)
        if tz == "Asia/Kolkata":  # the hour-start rule, for the range as for the day
            t = hour_start
        if not lo <= t < hi:
            continue
        if machine and m != machine or location and where.get(m) != location or \
                product and product_id != product:
            continue
        key = {"day": hour_start.date().isoformat(), "hour": hour_start.hour, "machine": m,
               "product": product_id or 0, "location": where.get(m)}[by]
        cells[(key, currency)][0] += 1
        cells[(key, currency)][1] += amount
    return {k: tuple(v) for k, v in cells.items()}


def report(engine, by, start, end, tz=None, **filters):
    with engine.connect() as conn:
        r = reports.sales_report(conn, reports.Query(conn, by, start, end, tz, **filters))
    return {(row["key"], row["currency"]): (row["count"], row["amount"]) for row in r["rows"]}, r


@pytest.mark.parametrize("by", reports.BY)
def test_every_report_equals_a_grouping_of_sales(engine, by):
    ids = seed(engine)
    cases = [("2026-10-01", "2027-01-01", {}), ("2026-11-03", "2026-11-20", {}),
             ("2026-11-03", "2026-12-11", {"machine": "m-2"}), ("2026-10-25", "2026-12-01", {"location": 1}),
             ("2026-10-25", "2026-12-13", {"product": ids["cola"]}),
             ("2026-11-01", "2026-12-01", {"location": 2, "product": ids["water"]})]
    checked = 0
    for tz in ZONES:
        for start, end, filters in cases:
            got, whole = report(engine, by, start, end, tz, **filters)
            assert got == expected(engine, by, start, end, tz, **filters), (tz, start, end, filters)
            assert whole["exact"] is (tz != "Asia/Kolkata")
            checked += len(got)
    assert checked > 40  # the data reached the reports, not only empty ones


@pytest.mark.parametrize("tz", ["UTC", "Asia/Shanghai", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
                                "Africa/Casablanca"])
def test_a_year_splits_where_the_offset_changes_and_nowhere_else(tz):
    """The day and hour reports sum hours in SQL one stretch of one offset at a time (``reports.offsets``):
    every hour of the year is in exactly one stretch, at the offset its start has in the zone."""
    zone = reports.zone(tz)
    h0 = reports.first_hour(datetime(2026, 1, 1).date(), zone)
    h1 = reports.first_hour(datetime(2027, 1, 1).date(), zone)
    stretches = reports.offsets(zone, h0, h1)
    assert stretches[0][0] == h0 and stretches[-1][1] == h1
    assert all(a < b for a, b, _m in stretches)
    assert all(stretches[i][1] == stretches[i + 1][0] and stretches[i][2] != stretches[i + 1][2]
               for i in range(len(stretches) - 1))
    for a, b, minutes in stretches:
        for h in range(a, b):
            assert datetime.fromtimestamp(h * 3600, zone).utcoffset() == timedelta(minutes=minutes), (tz, h)
    changes = {"UTC": 0, "Asia/Shanghai": 0, "America/New_York": 2, "Australia/Lord_Howe": 2, "Asia/Kathmandu": 0}
    if tz in changes:  # Casablanca's clocks stop for Ramadan: some changes, however many tzdata says
        assert len(stretches) == changes[tz] + 1


def test_a_report_is_a_group_by_over_sales_in_utc(engine):
    seed(engine, 800, seed=3)
    with engine.connect() as conn:
        plain = {(m, c): (n, int(a)) for m, c, n, a in conn.execute(
            sa.select(sales.c.machine_id, sales.c.currency, sa.func.count(), sa.func.sum(sales.c.amount))
            .group_by(sales.c.machine_id, sales.c.currency))}
    assert report(engine, "machine", "2026-01-01", "2027-06-01")[0] == plain


def test_the_rollup_follows_ingest_and_a_redelivered_batch_counts_once(engine):
    with engine.begin() as conn:
        add_machine(conn, counts={"A1": 9, "A2": 9})
    chain = Chain()
    for i in range(12):
        chain.add("vend.succeeded", order_id=f"o-{i}", cmd_id=f"v-{i}", slot="A1" if i % 3 else "A2", turns=1, ms=800)
    for first, last in ((1, 5), (1, 5), (6, 12), (3, 12)):  # the second and fourth are redeliveries
        with engine.begin() as conn:
            store_batch(conn, Wallet(), MACHINE, chain.batch(first, last), NOW)
    with engine.begin() as conn:
        assert reports.fold(conn) > 0
    day = NOW.date().isoformat()
    got, _ = report(engine, "day", day, (NOW.date() + timedelta(days=1)).isoformat())
    assert got == {(day, "CNY"): (12, 0)}  # no orders: drops the cloud never charged for
    by_product, _ = report(engine, "product", day, (NOW.date() + timedelta(days=1)).isoformat())
    assert sorted(n for n, _ in by_product.values()) == [4, 8]
    with engine.connect() as conn:
        kept = sorted(tuple(r) for r in conn.execute(sa.select(reports.sales_rollup)))
    with engine.begin() as conn:
        reports.backfill(conn)
        assert sorted(tuple(r) for r in conn.execute(sa.select(reports.sales_rollup))) == kept


def test_the_migration_fills_the_rollups_from_the_sales_already_stored(empty_db_url):
    db_url = empty_db_url
    eng = cloud.core.db.make_engine(db_url)
    try:
        upgrade_to(eng, "0006")
        with eng.begin() as conn:
            # The rows as the schema of 0006 has them (today's model has columns that 0006 lacks).
            then = sa.MetaData()
            machines_then = sa.Table("machines", then, autoload_with=conn)
            products_then = sa.Table("products", then, autoload_with=conn)
            row = {"id": MACHINE, "name": "Machine m-1", "secret": SECRET, "mqtt_password": "p" * 24,
                   "created_at": NOW}
            conn.execute(machines_then.insert().values({k: v for k, v in row.items() if k in machines_then.c}))
            conn.execute(products_then.insert().values(id=1, sku="cola", name="Cola"))
            bulk_insert(conn, sales, SALE_COLUMNS, [
                (MACHINE, i, (START + timedelta(hours=7 * i)).isoformat(), f"o-{i}", "A1", 1, 350, "CNY")
                for i in range(1, 201)])
        cloud.core.db.migrate(eng)
        got, _ = report(eng, "day", "2026-10-01", "2027-01-01", "Asia/Shanghai")
        assert got == expected(eng, "day", "2026-10-01", "2027-01-01", "Asia/Shanghai")
        assert sum(n for n, _ in got.values()) == 200
    finally:
        eng.dispose()


@pytest.fixture
def client(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    seed(obj.engine, 300)
    with TestClient(cloud.app.create_app(obj, "boot-token-reports", b"k" * 32)) as c:
        c.engine = obj.engine
        yield c
    obj.engine.dispose()


def caller(engine, role):
    with engine.begin() as conn:
        supplier = staff.add_supplier(conn, "Sup", "", utcnow()) if role == "supplier" else None
        user = staff.add_staff(conn, f"{role}-r", role, utcnow(), None, False, supplier)
        return {"Authorization": f"Bearer {auth.new_token(conn, user, 't', utcnow())[1]}"}


@pytest.mark.parametrize("role,sales_ok,stock_ok", [("administrator", True, True), ("manager", True, True),
                                                     ("technician", False, True), ("supplier", False, False)])
def test_roles(client, role, sales_ok, stock_ok):
    h = caller(client.engine, role)
    r = client.get("/api/v1/reports/sales?by=machine&from=2026-10-01&to=2027-01-01", headers=h)
    assert r.status_code == (200 if sales_ok else 403)
    if sales_ok:
        assert sum(t["count"] for t in r.json()["totals"]) == 300
    assert client.get("/api/v1/reports/stock", headers=h).status_code == (200 if stock_ok else 403)
    assert client.get("/api/v1/reports/stock").status_code == 401


def test_stock_per_slot_with_fill_level(client):
    h = {"Authorization": "Bearer boot-token-reports"}
    r = client.get("/api/v1/reports/stock?location=1", headers=h).json()
    assert {s["machine_id"] for s in r["slots"]} == {"m-1"}
    assert r["slots"][0] == {"machine_id": "m-1", "location": "North", "slot": "A1", "product_id": 1, "sku": "cola",
                             "name": "Cola", "count": 5, "capacity": 10, "par_level": 10, "fill": 0.5,
                             "flagged": False}
    assert r["summary"] == {"slots": 3, "empty": 0, "below_quarter": 0, "units": 15, "capacity": 30, "fill": 0.5}


@pytest.mark.parametrize("query,status,param", [
    ("by=week", 422, "by"), ("from=2026-12-01&to=2026-11-01", 422, "to"), ("from=2026-11-01&to=2026-11-01", 422, "to"),
    ("from=yesterday", 422, "from"), ("tz=Mars/Olympus", 422, "tz"), ("tz=" + "A" * 300, 422, "tz"),
    ("tz=Asia/" + "x" * 300, 422, "tz"), ("tz=../../etc/passwd", 422, "tz"), ("machine=m-9", 404, "machine"),
    ("location=9", 404, "location"), ("location=north", 422, "location"), ("product=caviar", 404, "product"),
    ("product=99", 404, "product")])
def test_bad_input_is_refused_naming_the_parameter(client, query, status, param):
    r = client.get(f"/api/v1/reports/sales?{query}", headers={"Authorization": "Bearer boot-token-reports"})
    assert r.status_code == status
    assert r.json()["error"].startswith(f"{param}: ")


def test_vendctl_report_sales_and_stock(client, monkeypatch, capsys):
    import json

    import cloud.cli

    through = ThroughTestClient(client, {"Authorization": "Bearer boot-token-reports"})
    monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: through))

    def vendctl(*argv):
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = vendctl("report", "sales", "--by", "day", "--from", "2026-11-01", "--to", "2026-12-01",
                           "--tz", "Asia/Shanghai")
    assert code == 0 and "sales by day, 2026-11-01 to 2026-12-01 (exclusive), Asia/Shanghai" in out
    assert "DAY" in out and "2026-11-15" in out and "total:" in out
    code, out, _ = vendctl("report", "sales", "--by", "machine", "--from", "2026-10-01", "--to", "2027-01-01", "--json")
    assert code == 0 and sum(t["count"] for t in json.loads(out)["totals"]) == 300
    code, out, _ = vendctl("report", "sales", "--by", "hour", "--tz", "Asia/Kolkata", "--from", "2026-10-01")
    assert code == 0 and "note: this zone is not a whole number of hours" in out
    code, _, err = vendctl("report", "sales", "--tz", "Nowhere/Land")
    assert code == 1 and "tz: unknown time zone" in err
    code, out, _ = vendctl("report", "stock", "--machine", "m-2")
    assert code == 0 and "m-2" in out and "3 slots, 0 empty" in out
