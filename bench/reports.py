"""Manager reports over a fleet's year: 200 machines, 1,000,000 sales, each report timed through the service
functions (and once through HTTP), against the baseline of the same report as a plain GROUP BY over
``sales`` timed in the same run.

The data goes straight into the database (bulk inserts; COPY on PostgreSQL): more sales by day than by
night, four products per machine out of thirty, twenty locations, one machine in twenty moved mid-year
(``machine_placements``). No refunds: the rollups carry their columns on every row all the same. The
rollups are filled by the migrations' backfill path (``cloud.sales.reports.backfill``, which does per table
what ingest does per batch, then ``backfill_refunds`` and ``rebuild_totals``, revision 0029's sums of the
first rollup without the product and without the machine).

    python bench/reports.py                      # SQLite in a scratch folder
    python bench/reports.py --postgres postgresql+psycopg://vend:vend@127.0.0.1:5432/vend

The issue's size, built once (10 minutes on SQLite) and timed as often as wanted; at ten million sales a
year's baseline GROUP BY takes minutes, so only the months get one:

    python bench/reports.py --machines 2000 --sales 10000000 --keep /var/tmp/reports-10m.db --build-only
    python bench/reports.py --keep /var/tmp/reports-10m.db --repeat 20 --baseline-ranges month
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from urllib.parse import urlencode
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import sqlalchemy as sa  # noqa: E402

from cloud.core import db
from cloud.sales import reports  # noqa: E402
from cloud.sales.records import SALE_COLUMNS  # noqa: E402

YEAR = 2026
TZ = "Asia/Shanghai"
# Relative sales per local hour of day: quiet at night, a lunch and an evening peak.
PROFILE = [1, 1, 1, 1, 1, 2, 4, 8, 12, 10, 9, 12, 16, 14, 10, 9, 10, 12, 14, 12, 9, 6, 3, 2]


def generate(engine: sa.Engine, machines: int, count: int, seed: int) -> dict:
    """Machines, products, slots, locations and ``count`` sales over YEAR; returns the ids it chose."""
    from cloud.fleet.locations import locations, machine_locations, machine_placements
    from cloud.fleet.machines import cabinets, products, slots
    from cloud.fleet.machines import machines as machines_t

    rng = random.Random(seed)
    now = datetime(YEAR, 1, 1, tzinfo=timezone.utc)
    ids = [f"bench-{i:03d}" for i in range(machines)]
    with engine.begin() as conn:
        conn.execute(machines_t.insert(), [dict(id=m, name=f"Machine {i}", secret="s" * 32, mqtt_password="p" * 24,
                                                created_at=now) for i, m in enumerate(ids)])
        conn.execute(cabinets.insert(), [dict(machine_id=m, number=1, name="main") for m in ids])
        conn.execute(products.insert(), [dict(sku=f"p{i:02d}", name=f"Product {i}") for i in range(30)])
        product_ids = conn.execute(sa.select(products.c.id).order_by(products.c.id)).scalars().all()
        conn.execute(locations.insert(), [dict(name=f"Site {i}", created_at=now) for i in range(20)])
        location_ids = conn.execute(sa.select(locations.c.id).order_by(locations.c.id)).scalars().all()
        # Nine machines in ten stand somewhere; one in twenty moved to the next site on 1 July (a report by
        # location splits its year), which leaves the chosen site (the first) and every total as they were.
        moved = datetime(YEAR, 7, 1, tzinfo=timezone.utc)
        placed = [(i, m) for i, m in enumerate(ids) if i % 10 != 9]
        conn.execute(machine_locations.insert(), [dict(
            machine_id=m, location_id=location_ids[(i + (i % 20 == 5)) % 20], since=moved if i % 20 == 5 else now)
            for i, m in placed])
        conn.execute(machine_placements.insert(), [dict(
            machine_id=m, location_id=location_ids[i % 20], valid_from=None, valid_to=moved if i % 20 == 5 else None,
            placed_at=now) for i, m in placed] + [dict(
            machine_id=m, location_id=location_ids[(i + 1) % 20], valid_from=moved, valid_to=None, placed_at=moved)
            for i, m in placed if i % 20 == 5])
        menu = {}
        slot_rows = []
        for m in ids:
            chosen = rng.sample(product_ids, 4)
            menu[m] = [(f"A{j + 1}", p, 150 + 50 * (p % 7)) for j, p in enumerate(chosen)]
            slot_rows += [dict(machine_id=m, slot=s, product_id=p, price=price, currency="CNY", capacity=10,
                               count=rng.randrange(11), par_level=8) for s, p, price in menu[m]]
        conn.execute(slots.insert(), slot_rows)
    hours = list(range(24))
    weights = [PROFILE[(h + 8) % 24] for h in hours]  # UTC hour h is local hour h + 8
    seqs = dict.fromkeys(ids, 0)
    chunk = 100_000
    with engine.begin() as conn:
        for start in range(0, count, chunk):
            rows = []
            for _ in range(min(chunk, count - start)):
                m = ids[int(rng.paretovariate(1.2)) % machines] if rng.random() < 0.3 else rng.choice(ids)
                seqs[m] += 1
                slot, product, price = rng.choice(menu[m])
                ts = now + timedelta(days=rng.randrange(365), hours=rng.choices(hours, weights)[0],
                                     seconds=rng.randrange(3600))
                rows.append((m, seqs[m], ts.isoformat(timespec="microseconds"), f"o-{m}-{seqs[m]}", slot, product,
                             price, "CNY"))
            if conn.dialect.name == "postgresql":
                with conn.connection.dbapi_connection.cursor() as cur:
                    with cur.copy(f"COPY sales ({', '.join(SALE_COLUMNS)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            else:
                db.bulk_insert(conn, sa.table("sales"), SALE_COLUMNS, rows)
    return {"machine": ids[0], "product": product_ids[0], "location": location_ids[0], "last": ids[-1]}


def reused(engine: sa.Engine) -> dict:
    """The ids ``generate`` chose, read back from a database it filled in an earlier run (``--keep``)."""
    from cloud.fleet.locations import locations
    from cloud.fleet.machines import machines as machines_t
    from cloud.fleet.machines import products

    with engine.connect() as conn:
        ids = conn.execute(sa.select(machines_t.c.id).order_by(machines_t.c.id)).scalars().all()
        product = conn.execute(sa.select(sa.func.min(products.c.id))).scalar()
        location = conn.execute(sa.select(sa.func.min(locations.c.id))).scalar()
    return {"machine": ids[0], "product": product, "location": location, "last": ids[-1]}


def stood(dialect: str) -> str:
    """SQL: the stay ``ml`` (a machine_placements row) held the sale's time (the hour of a move the new
    place's; bench moves fall on whole hours). SQLite keeps a stay's times as 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    ts = "(ts::timestamptz)" if dialect == "postgresql" else "replace(substr(ts, 1, 26), 'T', ' ')"
    return f"(ml.valid_from IS NULL OR {ts} >= ml.valid_from) AND (ml.valid_to IS NULL OR {ts} < ml.valid_to)"


def baseline_sql(dialect: str, by: str) -> str:
    """The report as a GROUP BY over sales, the day and hour in TZ (a fixed +8 hours on SQLite, which
    has no zones; Asia/Shanghai has kept +8 all year since 1991)."""
    pg = dialect == "postgresql"
    key = {
        "day": "date((ts::timestamptz) AT TIME ZONE 'Asia/Shanghai')" if pg else "date(ts, '+8 hours')",
        "hour": "extract(hour from (ts::timestamptz) AT TIME ZONE 'Asia/Shanghai')" if pg
        else "strftime('%H', ts, '+8 hours')",
        "machine": "sales.machine_id", "product": "product_id", "location": "ml.location_id"}[by]
    join = f" LEFT JOIN machine_placements ml ON ml.machine_id = sales.machine_id AND {stood(dialect)}" \
        if by == "location" else ""
    return (f"SELECT {key} AS k, currency, count(*), sum(amount) FROM sales{join} WHERE ts >= :lo AND ts < :hi "
            "{filter} GROUP BY k, currency")


def timed(fn, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


def figures(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            "max_ms": round(ordered[-1], 2), "runs": len(ordered)}


def baseline(conn: sa.Connection, by: str, filt: str | None, start: str, end: str, chosen: dict, zone, r: dict,
             repeat: int) -> dict:
    """The same report as a plain GROUP BY over ``sales``, timed, and whether its sums match the report's."""
    lo = datetime.fromisoformat(start).replace(tzinfo=zone).astimezone(timezone.utc)
    hi = datetime.fromisoformat(end).replace(tzinfo=zone).astimezone(timezone.utc)
    where = ""
    if filt == "location":
        where = (" AND EXISTS (SELECT 1 FROM machine_placements ml WHERE ml.machine_id = "
                 f"sales.machine_id AND ml.location_id = {chosen['location']} AND "
                 f"{stood(conn.dialect.name)})")
    elif filt:
        where = f" AND sales.{filt}_id = :v" if filt == "product" else " AND sales.machine_id = :v"
    sql = sa.text(baseline_sql(conn.dialect.name, by).replace("{filter}", where))
    params = {"lo": lo.isoformat(timespec="microseconds"), "hi": hi.isoformat(timespec="microseconds"),
              "v": chosen.get(filt)}
    base_times, base = timed(lambda: conn.execute(sql, params).all(), repeat)
    same = (len(base) == len(r["rows"]) and sum(row[2] for row in base) ==
            sum(row["count"] for row in r["rows"]) and sum(int(row[3]) for row in base) ==
            sum(row["amount"] for row in r["rows"]))
    base_figures = figures(base_times)
    return {"matches_baseline": same, "baseline_p50_ms": base_figures["p50_ms"],
            "baseline_p95_ms": base_figures["p95_ms"]}


def run(engine: sa.Engine, args) -> dict:
    from zoneinfo import ZoneInfo

    out = {"benchmark": "reports", "store": engine.dialect.name, "sales": args.sales, "machines": args.machines}
    if args.reused:
        chosen = reused(engine)
        out["reused"] = args.keep
        with engine.connect() as conn:
            out["sales"] = conn.execute(sa.text("SELECT count(*) FROM sales")).scalar()
            out["machines"] = conn.execute(sa.text("SELECT count(*) FROM machines")).scalar()
    else:
        t = time.perf_counter()
        chosen = generate(engine, args.machines, args.sales, args.seed)
        out["generate_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        with engine.begin() as conn:
            reports.backfill(conn)
            reports.backfill_refunds(conn)
            reports.rebuild_totals(conn)
        out["backfill_s"] = round(time.perf_counter() - t, 1)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # the planner's statistics, as autovacuum would in time
                conn.exec_driver_sql("ANALYZE")
        if args.build_only:
            return out
    with engine.begin() as conn:
        out["rollup_rows"] = conn.execute(sa.select(sa.func.count()).select_from(reports.sales_rollup)).scalar()
        out["fleet_hourly_rows"] = conn.execute(sa.select(sa.func.count())
                                                .select_from(reports.sales_fleet_hourly)).scalar()
        out["machine_rollup_rows"] = conn.execute(sa.select(sa.func.count())
                                                  .select_from(reports.sales_machine_rollup)).scalar()
        out["fleet_product_rows"] = conn.execute(sa.select(sa.func.count())
                                                 .select_from(reports.sales_fleet_products)).scalar()
    ranges = {"month": ("2026-11-01", "2026-12-01"), "year": ("2026-01-01", "2027-01-01")}
    filters = {"day": "product", "hour": "location", "machine": "product", "product": "machine",
               "location": "product"}
    zone = ZoneInfo(TZ)
    results = []
    http_paths = []
    with engine.connect() as conn:
        for by in reports.BY:
            for span, (start, end) in ranges.items():
                for filt in (None, filters[by]):
                    kw = {filt: chosen[filt]} if filt else {}

                    def report():
                        return reports.sales_report(conn, reports.Query(conn, by, start, end, TZ, **kw))

                    times, r = timed(report, args.repeat)
                    http_paths.append(("/api/v1/reports/sales?" + urlencode(
                        {"by": by, "from": start, "to": end, "tz": TZ, **kw})))
                    result = {"report": f"by={by} {span}" + (f" {filt}={kw[filt]}" if filt else ""),
                              "rows": len(r["rows"]), **figures(times)}
                    if span in args.baseline_ranges:
                        result.update(baseline(conn, by, filt, start, end, chosen, zone, r, args.baseline_repeat))
                    results.append(result)
        times, r = timed(lambda: reports.stock_report(conn), args.repeat)
        results.append({"report": "stock", "rows": len(r["slots"]), **figures(times)})
    out["reports"] = results
    out["worst_p95_ms"] = max(r["p95_ms"] for r in results)
    based = [r["baseline_p50_ms"] for r in results if "baseline_p50_ms" in r]
    out["baseline_p50_ms_range"] = [min(based), max(based)] if based else None
    out["all_match_baseline"] = all(r.get("matches_baseline", True) for r in results)
    out["target_p95_ms"] = 200
    out["http"] = http_overhead(engine, args, chosen, http_paths + ["/api/v1/reports/stock"])
    dashboard = out["http"]["dashboard"]
    out["pages_worst_p95_ms"] = max(p["p95_ms"] for p in dashboard.values())
    out["pages_most_bytes"] = max(p["bytes"] for p in dashboard.values())
    out["api_worst_p95_ms"] = max(p["p95_ms"] for p in out["http"]["api"])
    out["api_most_bytes"] = max(p["bytes"] for p in out["http"]["api"])
    out["api_most_bytes_all_pages"] = max(p["all_pages_bytes"] for p in out["http"]["api"])
    out["budget"] = {"p95_ms": 200, "bytes": 200 * 1024}
    return out


def alerts_cost(obj, args) -> dict:
    """What the alerts worker spends looking over the whole fleet (cloud/alerts/watch.py: ``refresh``, after a
    first look raised what there is), against the baseline of computing the alerts alone as the fleet page
    did on every view before alerts were kept (``cloud.fleet.alerts.compute``)."""
    from cloud.core.db import utcnow
    from cloud.fleet import alerts

    first = time.perf_counter()
    raised = len(obj.alerter.refresh())
    first_ms = round((time.perf_counter() - first) * 1000, 1)
    times, _ = timed(obj.alerter.refresh, args.repeat)

    def compute():
        with obj.engine.connect() as conn:
            return alerts.compute(conn, utcnow(), obj.alert_limits, obj.readings.snapshot())

    base_times, found = timed(compute, args.repeat)
    base = figures(base_times)
    return {"raised_at_first_look": raised, "first_look_ms": first_ms, "alerts_now": len(found),
            "refresh": figures(times), "baseline_compute_p50_ms": base["p50_ms"],
            "baseline_compute_p95_ms": base["p95_ms"]}


def pages(chosen: dict) -> dict[str, str]:
    """Every staff page an operator opens, by name: the ones whose size could follow the fleet or the sales."""
    m = chosen["machine"]
    return {"fleet": "/staff", "fleet, page 2": "/staff?page=2", "fleet, a search": f"/staff?q={chosen['last']}",
            "machine": f"/staff/machines/{m}", "machines": "/staff/machines", "stock": "/staff/stock",
            "stock, page 2": "/staff/stock?page=2",
            "sales, 30 days (the default)": "/staff/sales",
            "sales, a year": f"/staff/sales?from={YEAR}-01-01&to={YEAR}-12-31&tz={TZ}",
            "orders": "/staff/orders", "customers": "/staff/customers", "products": "/staff/products",
            "alerts": "/staff/alerts", "pick list": "/staff/pick-lists", "pick list, one machine":
            f"/staff/pick-lists?machine={m}", "tech": "/tech", "routes": "/staff/routes",
            "locations": "/staff/locations", "a location": f"/staff/locations/{chosen['location']}"}


def whole(client, path: str, first) -> dict:
    """The baseline of a paged report, from the same run: all its pages (each ``next`` followed), their count
    and bytes together, which is what one answer weighed before the API answered a page at a time."""
    pages, size, answer = 1, len(first.content), first.json()
    while answer.get("next"):
        r = client.get(path + ("&" if "?" in path else "?") + urlencode({"after": answer["next"]}),
                       headers={"Authorization": "Bearer bench-token"})
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
        pages, size, answer = pages + 1, size + len(r.content), r.json()
    return {"pages": pages, "all_pages_bytes": size}


def http_overhead(engine: sa.Engine, args, chosen: dict, api_paths: list[str]) -> dict:
    """Every API report and every staff page through the whole app (FastAPI's in-process test client:
    routing, auth, rendering, JSON; no socket): server time and bytes of each answer."""
    from fastapi.testclient import TestClient

    import cloud.service
    import cloud.core.settings
    import cloud.app

    var = tempfile.mkdtemp(prefix="vend-bench-http-")
    try:
        # The cloud is not started, so its alerts worker does not run: looking for alerts is timed on its own
        # below, and a long --alert-check keeps the pages from looking again (in a running cloud the worker
        # looks, off every request).
        settings = cloud.core.settings.Settings(var=var, db=engine.url.render_as_string(hide_password=False),
                                           broker="127.0.0.1:1", alert_check_s=3600).resolve()
        obj = cloud.service.Cloud(settings)
        alerts_out = alerts_cost(obj, args)
        app = cloud.app.create_app(obj, "bench-token", b"k" * 32)
        cloud.app.settle()  # as vend-cloud does before it serves
        with TestClient(app) as client:
            headers = {"Authorization": "Bearer bench-token"}
            out = {"api": [], "dashboard": {}, "alerts": alerts_out}
            for path in api_paths:
                times, r = timed(lambda: client.get(path, headers=headers), args.repeat)
                assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
                out["api"].append({"path": path, "bytes": len(r.content), **figures(times), **whole(client, path, r)})
            for name, page in pages(chosen).items():
                times, r = timed(lambda: client.get(page, headers=headers), args.repeat)
                assert r.status_code == 200, f"{page}: {r.status_code} {r.text[:300]}"
                out["dashboard"][name] = {"path": page, "bytes": len(r.content), **figures(times)}
        obj.engine.dispose()
        return out
    finally:
        shutil.rmtree(var, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--sales", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30, help="timings of each report")
    parser.add_argument("--baseline-repeat", type=int, default=3, help="timings of each baseline GROUP BY")
    parser.add_argument("--baseline-ranges", default="month,year",
                        help="the ranges whose reports are also timed as a plain GROUP BY over sales (month, year "
                             "or both): at 10,000,000 sales a year's GROUP BY takes minutes, and there are ten")
    parser.add_argument("--build-only", action="store_true", help="with --keep: build the database and stop")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--postgres", metavar="URL", default="",
                        help="a fresh database on this PostgreSQL server instead of SQLite, e.g. "
                             "postgresql+psycopg://vend:vend@127.0.0.1:5432/vend")
    parser.add_argument("--keep", metavar="FILE_OR_NAME", default="",
                        help="build the database in FILE (SQLite), or in the database NAME on the --postgres server, "
                             "and keep it; if it exists, time the reports over it as it is (--machines, --sales and "
                             "--seed are then those it was built with)")
    args = parser.parse_args()
    if args.build_only and not args.keep:
        parser.error("--build-only needs --keep")
    args.baseline_ranges = set(filter(None, args.baseline_ranges.split(",")))
    if not args.baseline_ranges <= {"month", "year"}:
        parser.error("--baseline-ranges: month, year or both")
    if args.keep and args.postgres and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.keep):
        parser.error("--keep with --postgres: a database name (lower-case letters, digits, _)")
    work = tempfile.mkdtemp(prefix="vend-bench-reports-")
    admin = None
    args.reused = False
    if args.postgres:
        name = args.keep or f"vend_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as conn:
            args.reused = bool(conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                            {"n": name}).first())
            if not args.reused:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        url = args.postgres.rsplit("/", 1)[0] + "/" + name
        if args.keep:  # kept: not dropped at the end
            admin.dispose()
            admin = None
    elif args.keep:
        args.reused = os.path.exists(args.keep)
        url = f"sqlite:///{os.path.abspath(args.keep)}"
    else:
        url = f"sqlite:///{work}/cloud.db"
    engine = db.make_engine(url)
    try:
        db.migrate(engine)
        result = run(engine, args)
        text = json.dumps({k: v for k, v in result.items() if k != "reports"}, indent=1)
        if "reports" not in result:  # --build-only
            print(text)
            return 0
        # One object; a report per line, so that a person can read the table.
        print(text[:-2] + ',\n "reports": [\n  ' + ",\n  ".join(json.dumps(r) for r in result["reports"]) + "\n ]\n}")
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
            admin.dispose()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
