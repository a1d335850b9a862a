"""The rollups without the product and without the machine (cloud/sales/rollups.py, revision 0029): every
report, by every key and filter, equals a grouping of the sales, the refunds and the late drops' charges as
they were made; the two rollups stay the sums of the machine x product rollup through ingest, refunds,
late charges and folds, also with two cloud processes at once on PostgreSQL; and the migration fills them
from a database with sales and refunds already stored."""

import random
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

import cloud.core.db
from cloud.core.db import bulk_insert
from cloud.fleet import locations
from cloud.payments import Wallet
from cloud.sales import orders, reports
from cloud.sales.records import SALE_COLUMNS, sales
from tests.cloud.sales.test_reports import START, ZONES, seed
from tests.cloud_fixtures import (NOW, add_customer, add_machine, add_sale, db_url, engine,  # noqa: F401
                                  empty_db_url, upgrade_to)


def refunds_and_late_drops(engine, n=60, seed_=11) -> list[tuple]:
    """Orders on the seeded machines refunded at random times over the 60 days (some in part), and sales
    stored at 0 whose late drop was charged afresh later; the refunds as made: (machine, booked at, product,
    currency, amount). Some refunds counted before a fold, some after, some left for the report's count."""
    rng = random.Random(seed_)
    made = []
    with engine.begin() as conn:
        ann = add_customer(conn, topup=100_000)
        for i in range(n):
            m, slot = rng.choice(("m-1", "m-2", "m-3")), rng.choice(("A1", "A2"))
            order_id = f"r-{i}"
            add_sale(conn, ann, order_id, machine_id=m, slot=slot, amount=rng.choice((200, 350)))
            order = orders.get(conn, order_id)
            amount = rng.choice((order.amount, 50, 100))
            when = START + timedelta(seconds=rng.randrange(60 * 86400))
            assert Wallet().refund(conn, order, amount, f"rk-{i}", when).ok
            made.append((m, when, order.product_id, "CNY", amount))
            if i == n // 3:
                reports.fold(conn)
            if i == 2 * n // 3:
                reports.count_refunds(conn)
        # Late drops: a sale stored at 0 (the order was closed), then its fresh charge, as orders does.
        seqs = defaultdict(lambda: 10_000)
        for i in range(20):
            m = rng.choice(("m-1", "m-2", "m-3"))
            seqs[m] += 1
            ts = (START + timedelta(seconds=rng.randrange(60 * 86400))).isoformat(timespec="microseconds")
            row = (m, seqs[m], ts, f"late-{i}", "A1", 1, 0, "CNY")
            bulk_insert(conn, sales, SALE_COLUMNS, [row])
            reports.project(conn, [row])
            conn.execute(sales.update().where(sales.c.machine_id == m, sales.c.seq == seqs[m]).values(amount=350))
            reports.add_amount(conn, m, ts, 1, "CNY", 350)
        reports.count_refunds(conn)
    return made


def expected(engine, made, by, start, end, tz=None, machine=None, location=None, product=None):
    """The report grouped straight from ``sales`` and from the refunds as made: each in the local day and
    hour in which its UTC hour starts."""
    zone = ZoneInfo(tz) if tz else timezone.utc
    lo = datetime.fromisoformat(start).replace(tzinfo=zone)
    hi = datetime.fromisoformat(end).replace(tzinfo=zone)
    with engine.connect() as conn:
        where = dict(conn.execute(sa.select(locations.machine_locations.c.machine_id,
                                            locations.machine_locations.c.location_id)).all())
        sold = conn.execute(sa.select(sales.c.machine_id, sales.c.ts, sales.c.product_id, sales.c.currency,
                                      sales.c.amount)).all()
    cells = defaultdict(lambda: [0, 0, 0, 0])
    facts = [(m, datetime.fromisoformat(ts), p, c, amount, 0) for m, ts, p, c, amount in sold]
    facts += [(m, when, p, c, amount, 2) for m, when, p, c, amount in made]
    for m, t, product_id, currency, amount, i in facts:
        hour_start = datetime.fromtimestamp(int(t.timestamp() // 3600) * 3600, zone)
        if not lo <= (hour_start if tz == "Asia/Kolkata" else t) < hi:
            continue
        if machine and m != machine or location and where.get(m) != location or product and product_id != product:
            continue
        key = {"day": hour_start.date().isoformat(), "hour": hour_start.hour, "machine": m,
               "product": product_id or 0, "location": where.get(m)}[by]
        cells[(key, currency)][i] += 1
        cells[(key, currency)][i + 1] += amount
    return {k: tuple(v) for k, v in cells.items() if any(v)}


def report(engine, by, start, end, tz=None, **filters):
    with engine.connect() as conn:
        r = reports.sales_report(conn, reports.Query(conn, by, start, end, tz, **filters))
    return {(row["key"], row["currency"]): (row["count"], row["amount"], row["refund_count"], row["refunds"])
            for row in r["rows"]}


@pytest.mark.parametrize("by", reports.BY)
def test_every_report_equals_a_grouping_of_sales_refunds_and_late_drops(engine, by):
    ids = seed(engine, 1500)
    made = refunds_and_late_drops(engine)
    cases = [("2026-10-01", "2027-01-01", {}), ("2026-11-03", "2026-11-20", {}),
             ("2026-11-03", "2026-12-11", {"machine": "m-2"}), ("2026-10-25", "2026-12-01", {"location": 1}),
             ("2026-10-25", "2026-12-13", {"product": ids["cola"]}),
             ("2026-11-01", "2026-12-01", {"location": 2, "product": ids["water"]}),
             ("2026-10-20", "2026-12-20", {"machine": "m-3", "product": ids["cola"]})]
    refunded = 0
    for tz in ZONES:
        for start, end, filters in cases:
            got = report(engine, by, start, end, tz, **filters)
            assert got == expected(engine, made, by, start, end, tz, **filters), (tz, start, end, filters)
            refunded += sum(v[2] for v in got.values())
    assert refunded > 100  # the refunds reached the reports


def sums_of_the_rollup(conn) -> tuple[list, list]:
    """The per-machine and per-product rows as the machine x product rollup sums them."""
    r = reports.sales_rollup
    figures = [sa.func.sum(r.c[f]) for f in reports.FIGURES]
    per_machine = conn.execute(sa.select(r.c.machine_id, r.c.span, r.c.bucket, r.c.currency, *figures)
                               .group_by(r.c.machine_id, r.c.span, r.c.bucket, r.c.currency)).all()
    per_product = conn.execute(sa.select(r.c.product_id, r.c.span, r.c.bucket, r.c.currency, *figures)
                               .group_by(r.c.product_id, r.c.span, r.c.bucket, r.c.currency)).all()
    return sorted(tuple(map(_plain, row)) for row in per_machine), sorted(tuple(map(_plain, row)) for row in per_product)


def _plain(v):
    return int(v) if not isinstance(v, str) else v


def kept(conn) -> tuple[list, list]:
    m, p = reports.sales_machine_rollup, reports.sales_fleet_products
    return (sorted(tuple(map(_plain, row)) for row in conn.execute(
                sa.select(m.c.machine_id, m.c.span, m.c.bucket, m.c.currency, *(m.c[f] for f in reports.FIGURES)))),
            sorted(tuple(map(_plain, row)) for row in conn.execute(
                sa.select(p.c.product_id, p.c.span, p.c.bucket, p.c.currency, *(p.c[f] for f in reports.FIGURES)))))


def test_the_rollups_without_product_or_machine_are_the_sums_of_the_rollup(engine):
    seed(engine, 800)
    refunds_and_late_drops(engine, 30)
    with engine.begin() as conn:
        while reports.fold(conn, limit=7):  # a small limit: several folds, each a part of the pending rows
            pass
        assert conn.execute(sa.select(sa.func.count()).select_from(reports.sales_fleet_products_pending)).scalar() == 0
        incremental = kept(conn)
        assert incremental == sums_of_the_rollup(conn)
        assert len(incremental[0]) > 100 and len(incremental[1]) > 100
        reports.rebuild_totals(conn)  # what the migration and the bench fill them with
        assert kept(conn) == incremental


def test_two_cloud_processes_ingesting_and_folding_at_once_count_everything_once(db_url):
    """Two engines (two cloud processes' pools) store sales of their own machines, count refunds and fold at
    the same time, each transaction run again if the database gives it up (as the cloud's are); in the end
    the per-product fleet buckets and the per-machine buckets are the sums of the machine x product rollup."""
    engines = [cloud.core.db.make_engine(db_url) for _ in range(2)]
    try:
        with engines[0].begin() as conn:
            for m in ("m-1", "m-2", "m-3", "m-4"):
                add_machine(conn, m)
            ann = add_customer(conn, topup=100_000)
            for i in range(20):
                add_sale(conn, ann, f"o-{i}", machine_id=f"m-{1 + i % 4}")
        errors = []

        def cloud_process(k: int):
            rng = random.Random(k)
            mine = ("m-1", "m-3") if k == 0 else ("m-2", "m-4")
            seqs = defaultdict(int)
            try:
                for n in range(40):
                    def work(conn):
                        rows = []
                        for m in mine:  # machines in id order, as ingest takes them
                            for _ in range(rng.randrange(1, 5)):
                                seqs[m] += 1
                                ts = (NOW + timedelta(minutes=rng.randrange(3 * 24 * 60))).isoformat()
                                rows.append((m, seqs[m], ts, f"s-{k}-{m}-{n}-{seqs[m]}", "A1",
                                             rng.choice((1, 2)), 350, "CNY"))
                        for m in mine:
                            own = [r for r in rows if r[0] == m]
                            bulk_insert(conn, sales, SALE_COLUMNS, own)
                            reports.project(conn, own)
                    cloud.core.db.in_transaction(engines[k], work, tries=10)
                    if n % 4 == k:
                        def refund(conn, i=n // 4 + 10 * k):
                            Wallet().refund(conn, orders.get(conn, f"o-{i}"), 10, f"rk-{i}", NOW + timedelta(hours=i))
                        cloud.core.db.in_transaction(engines[k], refund, tries=10)
                    cloud.core.db.in_transaction(engines[k], lambda conn: reports.fold(conn, limit=5), tries=10)
            except Exception as e:  # noqa: BLE001 - reported by the test below
                errors.append(e)

        threads = [threading.Thread(target=cloud_process, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        with engines[0].begin() as conn:
            while reports.fold(conn):
                pass
            incremental = kept(conn)
            assert incremental == sums_of_the_rollup(conn)
            total = conn.execute(sa.select(sa.func.count()).select_from(sales)).scalar()
        by_product = report(engines[0], "product", "2024-04-01", "2024-06-01")
        assert total > 200
        assert sum(v[0] for v in by_product.values()) == total
        assert (sum(v[2] for v in by_product.values()), sum(v[3] for v in by_product.values())) == (20, 200)
    finally:
        for e in engines:
            e.dispose()


def test_the_migration_fills_them_from_the_sales_and_refunds_already_stored(empty_db_url):
    eng = cloud.core.db.make_engine(empty_db_url)
    try:
        upgrade_to(eng, "0028")
        with eng.begin() as conn:  # sales and refunds as a cloud at 0028 kept them
            for m in ("m-1", "m-2", "m-3"):
                add_machine(conn, m)
            north = locations.add(conn, "North", now=NOW)
            locations.place(conn, "m-1", north, NOW)
            rng = random.Random(5)
            rows = [(m, i, (START + timedelta(seconds=rng.randrange(60 * 86400))).isoformat(), f"o-{m}-{i}",
                     "A1", rng.choice((1, 2, None)), rng.choice((200, 350)), "CNY")
                    for m in ("m-1", "m-2", "m-3") for i in range(1, 120)]
            bulk_insert(conn, sales, SALE_COLUMNS, rows)
            reports.backfill(conn)
            ann = add_customer(conn, topup=100_000)
            made = []
            for i in range(12):
                m = ("m-1", "m-2", "m-3")[i % 3]
                add_sale(conn, ann, f"r-{i}", machine_id=m, slot=("A1", "A2")[i % 2])
                order = orders.get(conn, f"r-{i}")
                when = START + timedelta(days=5 * i, hours=i)
                assert Wallet().refund(conn, order, 100, f"rk-{i}", when).ok
                made.append((m, when, order.product_id, "CNY", 100))
                if i == 9:  # the first ten counted at 0028; the rest after the migration, by the sweeper
                    reports.backfill_refunds(conn)
            assert not sa.inspect(conn).has_table("sales_machine_rollup")
        cloud.core.db.migrate(eng)
        with eng.begin() as conn:
            reports.count_refunds(conn)
        checked = 0
        for by in reports.BY:
            for filters in ({}, {"machine": "m-2"}, {"location": north}, {"product": 1}):
                got = report(eng, by, "2026-10-01", "2027-01-01", "Asia/Shanghai", **filters)
                assert got == expected(eng, made, by, "2026-10-01", "2027-01-01", "Asia/Shanghai", **filters), \
                    (by, filters)
                checked += len(got)
        assert checked > 200
        with eng.begin() as conn:  # the sweeper folds what the migration's sweeper count left pending
            reports.fold(conn)
            assert kept(conn) == sums_of_the_rollup(conn)
        assert report(eng, "product", "2026-10-01", "2027-01-01") == expected(
            eng, made, "product", "2026-10-01", "2027-01-01")
    finally:
        eng.dispose()
