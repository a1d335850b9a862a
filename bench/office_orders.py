"""The office's order search over many orders: a page of 50 newest first, at the top and deep down, through
``cloud.sales.office.search`` (keyset: after the last row's (created_at, id)), against the baseline of the
same page fetched by OFFSET, timed in the same run on the same data. Also one customer's and one machine's
orders, deep down.

    python bench/office_orders.py                        # SQLite in a scratch folder, 1,000,000 orders
    python bench/office_orders.py --orders 200000 --postgres URL     # an empty PostgreSQL database
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import sqlalchemy as sa  # noqa: E402

from cloud.core import db  # noqa: E402
from cloud.sales import office, orders  # noqa: E402

PAGE = 50


def generate(engine: sa.Engine, count: int, machines: int, customers: int, seed: int) -> None:
    from cloud.fleet.machines import cabinets, products
    from cloud.fleet.machines import machines as machines_t
    from cloud.people import customers as customers_t

    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(machines_t.insert(), [dict(id=f"m{i:03d}", name=f"Machine {i}", secret="s" * 32,
                                                mqtt_password="p" * 24, created_at=start) for i in range(machines)])
        conn.execute(cabinets.insert(), [dict(machine_id=f"m{i:03d}", number=1, name="main") for i in range(machines)])
        conn.execute(products.insert(), [dict(sku="cola", name="Cola")])
        product = conn.execute(sa.select(products.c.id)).scalar()
        conn.execute(customers_t.insert(), [dict(name=f"C{i}", phone=f"+86139{i:08d}", payment_method="wallet",
                                                 created_at=start) for i in range(customers)])
    step = timedelta(seconds=365 * 86400 / count)
    batch = []
    with engine.begin() as conn:
        for i in range(count):
            at = start + step * i
            batch.append(dict(id=f"o{i:012x}", customer_id=rng.randrange(customers) + 1, idem_key=f"k{i}",
                              machine_id=f"m{rng.randrange(machines):03d}", slot="A1", product_id=product,
                              amount=350, currency="CNY", provider="wallet",
                              status="succeeded" if rng.random() < 0.95 else "failed", cmd_id=f"v{i}",
                              created_at=at, expires_at=at, updated_at=at))
            if len(batch) == 10_000:
                conn.execute(orders.orders.insert(), batch)
                batch = []
        if batch:
            conn.execute(orders.orders.insert(), batch)


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def by_offset(conn, f: office.Filters, skip: int) -> list:
    """The baseline: the same search, the page found by skipping ``skip`` rows."""
    o = orders.orders.c
    q = sa.select(orders.orders).order_by(o.created_at.desc(), o.id.desc()).offset(skip).limit(PAGE)
    for column, value in ((o.machine_id, f.machine), (o.customer_id, f.customer_id)):
        if value is not None:
            q = q.where(column == value)
    return conn.execute(q).all()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--orders", type=int, default=1_000_000)
    p.add_argument("--postgres")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="vend-bench-")
    url = args.postgres or f"sqlite:///{work}/bench.db"
    engine = sa.create_engine(url)
    try:
        db.migrate(engine)
        t = time.perf_counter()
        generate(engine, args.orders, machines=200, customers=20_000, seed=args.seed)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execute(sa.text("ANALYZE"))
        filled_s = time.perf_counter() - t
        results = []
        with engine.connect() as conn:
            for name, base in (("all", office.Filters(limit=PAGE)), ("machine", office.Filters(machine="m007", limit=PAGE)),
                               ("customer", office.Filters(customer_id=42, limit=PAGE))):
                total = conn.execute(sa.select(sa.func.count()).select_from(orders.orders).where(
                    *([orders.orders.c.machine_id == base.machine] if base.machine else []),
                    *([orders.orders.c.customer_id == base.customer_id] if base.customer_id else []))).scalar()
                deep = max(0, (total // 2) // PAGE * PAGE)
                # The row just before the deep page, found once, gives the keyset position.
                anchor = by_offset(conn, base, deep - 1)[0] if deep else None
                keyed = office.Filters(base.machine, base.customer_id, limit=PAGE,
                                       after=(anchor.created_at, anchor.id) if anchor else None)
                first_ms, _ = timed(lambda: office.search(conn, base), args.repeat)
                deep_ms, (rows, _) = timed(lambda: office.search(conn, keyed), args.repeat)
                offset_ms, baseline_rows = timed(lambda: by_offset(conn, base, deep), args.repeat)
                assert [r.id for r in rows] == [r.id for r in baseline_rows], name
                results.append({"filter": name, "matching": total, "page_at_row": deep, "first_page_ms": round(first_ms, 2),
                                "deep_page_keyset_ms": round(deep_ms, 2), "baseline_deep_page_offset_ms": round(offset_ms, 2)})
        print(json.dumps({"bench": "office_orders", "database": engine.dialect.name, "orders": args.orders,
                          "fill_s": round(filled_s, 1), "page": PAGE, "results": results}, indent=2))
    finally:
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
