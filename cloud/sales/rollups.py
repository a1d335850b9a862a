"""The sales rollups the reports read (``cloud/sales/reports.py``), kept by ingest in its own transaction
(``project``, a few rows per batch) so that a report never groups the ``sales`` table (at a million sales
that takes seconds):

- ``sales_rollup``: count and amount per machine x product x currency x bucket, at three bucket sizes
  (an hour, a UTC day, and a block of 16 UTC days, each aligned on the epoch). A range of hours is cut
  into the fewest whole buckets (blocks in the middle, days and hours at the edges), so a year by machine
  reads tens of thousands of rows, not a million. Its rows are keyed by machine, and only the process
  that holds the machine's row lock (``ingest.store_batch``) writes them: no contention between cloud
  processes.
- ``sales_machine_rollup``: the same cells without the product (machine x currency x bucket, same spans),
  for every report that sums over products: by machine, by location, and by day or hour for some machines.
  At four products a machine it is a quarter of the rows (a thirtieth at thirty). Written by the same
  callers in the same transaction, right after the ``sales_rollup`` cells, so it keeps that
  table's property: only the machine's row-lock holder writes it. A table of its own rather than rows of
  ``sales_rollup`` under a sentinel product: its primary key starts with the time (span, bucket), so the
  whole fleet's year is a few ranges of an index that holds every column, read in order, not an index
  search and a lookup per row;
  and the readers that sum ``sales_rollup`` over products need no sentinel to leave out.
- fleet totals per UTC hour and currency, for day and hour-of-day reports over the whole fleet (8,760
  rows a year), and per product x currency x bucket (``sales_fleet_products``, the three spans), for the
  whole fleet's reports by product and any whole-fleet report for one product. Every machine's batch would
  update the same rows, so ingest only appends to ``sales_fleet_pending`` and ``sales_fleet_products_pending``
  (an insert locks nothing another process waits for); ``fold`` (the cloud's sweeper, every second) moves
  those rows into ``sales_fleet_hourly`` and ``sales_fleet_products``, and reports read both.

Every cell has its sales (``count``, ``amount``) and its refunds (``refund_count``, ``refunds``, minor units,
positive): a refund is counted in the hour it was booked (the journal's refund transaction), against the
machine and product of the order it refunds. The journal belongs to the payments layer, below this one, so
refunds reach the rollups by ``count_refunds`` (the sweeper's ``fold``, and every report before it reads),
which looks at the transactions booked since it last looked.

Lock order, for PostgreSQL and several cloud processes: a transaction upserts its ``sales_rollup`` cells in
key order (machine first), then its ``sales_machine_rollup`` cells in key order; ``fold`` upserts the fleet
tables after those.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timezone

import sqlalchemy as sa

from cloud.accounts.journal import accounts, entries, txns
from cloud.core.db import metadata, reader

HOUR_S = 3600
SPANS = (384, 24, 1)  # bucket sizes in hours, biggest first: 16 days, a day, an hour
NO_PRODUCT = 0  # a sale whose product the cloud did not know (a key column cannot be NULL)
LATE_TXNS = 1000  # how far behind the last transaction looked at a refund may commit and still be counted
# ``cloud.sales.orders`` imports this module (a late drop's charge), so its table is named, not imported.
_orders = sa.table("orders", sa.column("id"), sa.column("machine_id"), sa.column("product_id"))


FIGURE_COLUMNS = ("count", "amount", "refund_count", "refunds")


def _refund_columns():
    return (sa.Column("refund_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("refunds", sa.BigInteger, nullable=False, server_default="0"))  # minor units, positive

sales_rollup = sa.Table(
    "sales_rollup", metadata,
    sa.Column("machine_id", sa.String(32), primary_key=True),
    sa.Column("span", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),  # first hour, since the epoch
    sa.Column("product_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    *_refund_columns(),
    sa.Index("sales_rollup_by_time", "span", "bucket"),
    sa.Index("sales_rollup_by_product", "product_id", "span", "bucket"),
    sqlite_with_rowid=False,
)

sales_fleet_hourly = sa.Table(
    "sales_fleet_hourly", metadata,
    sa.Column("hour", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    *_refund_columns(),
    sqlite_with_rowid=False,
)

sales_fleet_pending = sa.Table(
    "sales_fleet_pending", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("hour", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    *_refund_columns(),
)

# The refund transactions already in the rollups (so a refund is counted once, whichever process saw it),
# and the newest transaction id looked at (so each look reads only what was booked since, less LATE_TXNS).
sales_refunds_counted = sa.Table(
    "sales_refunds_counted", metadata,
    sa.Column("txn_id", sa.Integer, primary_key=True, autoincrement=False),
)
sales_refunds_mark = sa.Table(
    "sales_refunds_mark", metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),  # always 1
    sa.Column("txn_id", sa.Integer, nullable=False),
)

# Revision 0029: the rollups without the product (per machine) and without the machine (per product).
sales_machine_rollup = sa.Table(
    "sales_machine_rollup", metadata,
    sa.Column("machine_id", sa.String(32), primary_key=True),
    sa.Column("span", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    *_refund_columns(),
    # The whole fleet's pieces of a range, read from the index alone (it holds every column).
    sa.Index("sales_machine_rollup_by_time", "span", "bucket", "machine_id", "currency", *FIGURE_COLUMNS),
    sqlite_with_rowid=False,
)

sales_fleet_products = sa.Table(
    "sales_fleet_products", metadata,
    sa.Column("product_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("span", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    *_refund_columns(),
    sa.Index("sales_fleet_products_by_time", "span", "bucket"),
    sqlite_with_rowid=False,
)

sales_fleet_products_pending = sa.Table(
    "sales_fleet_products_pending", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("product_id", sa.Integer, nullable=False),
    sa.Column("hour", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    *_refund_columns(),
)


def hour_of(ts: str) -> int:
    """Hours since the epoch of an ISO 8601 time with a zone (as the ledger's events carry)."""
    return math.floor(datetime.fromisoformat(ts).timestamp() / HOUR_S)


ROLLUP_KEY = ("machine_id", "span", "bucket", "product_id", "currency")
MACHINE_KEY = ("machine_id", "span", "bucket", "currency")
PRODUCT_KEY = ("product_id", "span", "bucket", "currency")
FIGURES = FIGURE_COLUMNS


def _cells() -> defaultdict:
    return defaultdict(lambda: [0, 0, 0, 0])


def rollup_rows(rows, refunds: bool = False) -> tuple[dict, dict]:
    """Machine rollup cells (keyed ``ROLLUP_KEY``) and fleet hourly deltas (keyed hour, product, currency), of
    ``FIGURES``, of (machine_id, time, product_id, amount, currency) rows: sales, or with ``refunds`` refunds.
    A time is an ISO 8601 text or an hour since the epoch."""
    machine, fleet = _cells(), _cells()
    hours: dict = {}
    n, a = (2, 3) if refunds else (0, 1)
    for machine_id, ts, product_id, amount, currency in rows:
        hour = hours.get(ts)
        if hour is None:
            hour = hours[ts] = ts if isinstance(ts, int) else hour_of(ts)
        product = NO_PRODUCT if product_id is None else product_id
        for span in SPANS:
            cell = machine[(machine_id, span, hour - hour % span, product, currency)]
            cell[n] += 1
            cell[a] += amount
        cell = fleet[(hour, product, currency)]
        cell[n] += 1
        cell[a] += amount
    return machine, fleet


def _add(cell: list, figures) -> None:
    for i, v in enumerate(figures):
        cell[i] += v


def _summed(cells: dict, key) -> dict:
    """The cells summed under a shorter key: ``key(old key)``."""
    out = _cells()
    for k, v in cells.items():
        _add(out[key(k)], v)
    return out


def _marks(conn: sa.Connection, n: int) -> str:
    return ", ".join(["?" if conn.dialect.paramstyle == "qmark" else "%s"] * n)


def _upsert_into(conn: sa.Connection, table: str, key: tuple, cells: dict, figures=FIGURES) -> None:
    """Add cells' ``figures`` to ``table``'s rows, in key order (two transactions upserting the same rows lock
    them in the same order)."""
    if not cells:
        return
    cols = key + FIGURES
    conn.exec_driver_sql(
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({_marks(conn, len(cols))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{f} = {table}.{f} + excluded.{f}" for f in figures),
        [k + tuple(v) for k, v in sorted(cells.items())])


def _upsert(conn: sa.Connection, machine: dict, figures=FIGURES, products_only: bool = False) -> None:
    """Add cells' ``figures`` to the machine rollups: every cell per product, then every cell without the
    product, each table in key order (the lock order in the module docstring): two statements for any
    number of machines (ingest stores many machines' batches together). ``products_only``: the first alone
    (revision 0027's backfill, before the table without the product was made)."""
    _upsert_into(conn, "sales_rollup", ROLLUP_KEY, machine, figures)
    if not products_only:
        _upsert_into(conn, "sales_machine_rollup", MACHINE_KEY, _summed(machine, lambda k: (k[0], k[1], k[2], k[4])),
                     figures)


def _pend(conn: sa.Connection, fleet: dict) -> None:
    """Append fleet deltas (keyed hour, product, currency) for ``fold``: per hour, and per product and hour."""
    if not fleet:
        return
    hourly = _summed(fleet, lambda k: (k[0], k[2]))
    conn.exec_driver_sql(f"INSERT INTO sales_fleet_pending (hour, currency, {', '.join(FIGURES)}) VALUES "
                         f"({_marks(conn, 6)})", [k + tuple(v) for k, v in sorted(hourly.items())])
    conn.exec_driver_sql(f"INSERT INTO sales_fleet_products_pending (product_id, hour, currency, "
                         f"{', '.join(FIGURES)}) VALUES ({_marks(conn, 7)})",
                         [(p, h, c, *v) for (h, p, c), v in sorted(fleet.items())])


def project(conn: sa.Connection, sale_rows: list[tuple]) -> None:
    """Add the sales just stored (``ingest.SALE_COLUMNS`` tuples) to the rollups, in ingest's transaction:
    two upserts and two inserts for the whole batch."""
    machine, fleet = rollup_rows((r[0], r[2], r[5], r[6], r[7]) for r in sale_rows)
    _upsert(conn, machine, FIGURES[:2])
    _pend(conn, fleet)


def add_amount(conn: sa.Connection, machine_id: str, ts: str, product_id: int | None, currency: str,
               amount: int) -> None:
    """Add ``amount`` to a sale already counted in the rollups (a late drop charged afresh after its sale was
    stored at 0): the same cells, no new sale."""
    machine, fleet = rollup_rows([(machine_id, ts, product_id, amount, currency)])
    for cell in list(machine.values()) + list(fleet.values()):
        cell[0] = 0
    _upsert(conn, machine, FIGURES[:2])
    _pend(conn, fleet)


def _add_fleet(conn: sa.Connection, fleet: dict, figures=FIGURES) -> None:
    """Add cells' ``figures`` to the fleet's hourly totals (keyed hour, currency); ``FIGURES[:2]`` writes only
    the columns revision 0008 made (its backfill)."""
    if not fleet:
        return
    written = FIGURES[:2] if figures == FIGURES[:2] else FIGURES
    cols = ("hour", "currency") + written
    conn.exec_driver_sql(
        f"INSERT INTO sales_fleet_hourly ({', '.join(cols)}) VALUES ({_marks(conn, len(cols))}) "
        "ON CONFLICT (hour, currency) DO UPDATE SET "
        + ", ".join(f"{f} = sales_fleet_hourly.{f} + excluded.{f}" for f in figures),
        [k + tuple(v[:len(written)]) for k, v in sorted(fleet.items())])


def _take(conn: sa.Connection, p: sa.Table, key: tuple, limit: int) -> list:
    """Delete the oldest ``limit`` rows of a pending table, returning their ``key`` columns and figures."""
    top = conn.execute(sa.select(p.c.id).order_by(p.c.id).offset(limit - 1).limit(1)).scalar()
    cond = p.c.id <= top if top is not None else sa.true()
    return conn.execute(p.delete().where(cond).returning(*(p.c[k] for k in key), *(p.c[f] for f in FIGURES))).all()


def fold(conn: sa.Connection, limit: int = 50_000) -> int:
    """Count the refunds booked since the last look (``count_refunds``), then move pending fleet deltas into
    the hourly totals and the per-product buckets; how many pending rows were moved. Safe to run in several
    processes at once: each pending row is deleted, and so counted, by one of them."""
    count_refunds(conn)
    moved = _take(conn, sales_fleet_pending, ("hour", "currency"), limit)
    hourly = _cells()
    for hour, currency, *figures in moved:
        _add(hourly[(hour, currency)], figures)
    _add_fleet(conn, hourly)
    products = _take(conn, sales_fleet_products_pending, ("product_id", "hour", "currency"), limit)
    cells = _cells()
    for product, hour, currency, *figures in products:
        for span in SPANS:
            _add(cells[(product, span, hour - hour % span, currency)], figures)
    _upsert_into(conn, "sales_fleet_products", PRODUCT_KEY, cells)
    return len(moved) + len(products)


def _refunds_query(ids: list[int] | None = None):
    """(txn id, booked at, machine, product, currency, amount) of each refund transaction in ``ids`` (None:
    every one): what it took back from revenue, against the order's machine and product."""
    q = (sa.select(txns.c.id, txns.c.created_at, _orders.c.machine_id, _orders.c.product_id, accounts.c.currency,
                   -sa.func.sum(entries.c.amount))
         .select_from(txns.join(entries, entries.c.txn_id == txns.c.id)
                      .join(accounts, accounts.c.id == entries.c.account_id)
                      .join(_orders, _orders.c.id == txns.c.order_id))
         .where(txns.c.kind == "refund", accounts.c.kind == "revenue")
         .group_by(txns.c.id, txns.c.created_at, _orders.c.machine_id, _orders.c.product_id, accounts.c.currency))
    return q if ids is None else q.where(txns.c.id.in_(ids))


def hour_at(t) -> int:
    if isinstance(t, str):  # a raw read of SQLite's text
        t = datetime.fromisoformat(t)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return math.floor(t.timestamp() / HOUR_S)


def _refund_rows(found) -> list[tuple]:
    return [(m, hour_at(at), product, int(amount), currency) for _id, at, m, product, currency, amount in found]


def _uncounted(conn: sa.Connection) -> tuple[int | None, int, list]:
    """The mark, the newest transaction, and the refunds booked after the mark (less ``LATE_TXNS``) that are
    not counted yet."""
    mark = conn.execute(sa.select(sales_refunds_mark.c.txn_id).where(sales_refunds_mark.c.id == 1)).scalar()
    newest = conn.execute(sa.select(sa.func.max(txns.c.id))).scalar() or 0
    after = None if mark is None else mark - LATE_TXNS
    c = sales_refunds_counted
    if after is None:
        return mark, newest, list(conn.execute(_refunds_query().where(txns.c.id.not_in(sa.select(c.c.txn_id)))))
    # The refunds among the newest transactions first, by the key's range, then their entries: joined as one
    # query, SQLite began at the revenue account and read every sale's entry ever booked, every second (25 ms
    # at 200,000 transactions; the sweeper holds the one writer meanwhile, and the ingest's acks wait).
    refunds = conn.execute(sa.select(txns.c.id).where(
        txns.c.id > after, txns.c.kind == "refund",
        txns.c.id.not_in(sa.select(c.c.txn_id).where(c.c.txn_id > after)))).scalars().all()
    return mark, newest, list(conn.execute(_refunds_query(refunds))) if refunds else []


def count_new_refunds(engine: sa.Engine) -> int:
    """``count_refunds`` before a page or a report reads the rollups: it looks first through ``db.reader``
    (on SQLite no write lock, so a page does not queue behind the ingest's transaction for nothing), and
    takes a write transaction only when it found a refund to count. The sweeper's ``fold`` moves the mark
    every second."""
    with reader(engine).connect() as conn:
        if not _uncounted(conn)[2]:
            return 0
    with engine.begin() as conn:
        return count_refunds(conn)


def count_refunds(conn: sa.Connection) -> int:
    """Add the refunds booked since the last look to the rollups, each once (a refund another process
    counted first is left to it); how many were added. Reads the transactions after the last one looked at,
    less ``LATE_TXNS`` (a refund committed that late after later ones would be missed; a refund's
    transaction is one short write)."""
    mark, newest, found = _uncounted(conn)
    claimed = []
    for row in found:
        got = conn.exec_driver_sql(f"INSERT INTO sales_refunds_counted (txn_id) VALUES ({_marks(conn, 1)}) "
                                   "ON CONFLICT (txn_id) DO NOTHING RETURNING txn_id", (row[0],)).first()
        if got is not None:
            claimed.append(row)
    machine, fleet = rollup_rows(_refund_rows(claimed), refunds=True)
    _upsert(conn, machine, FIGURES[2:])
    _pend(conn, fleet)
    if mark is None:
        conn.exec_driver_sql(f"INSERT INTO sales_refunds_mark (id, txn_id) VALUES (1, {_marks(conn, 1)}) "
                             "ON CONFLICT (id) DO NOTHING", (newest,))
    conn.execute(sales_refunds_mark.update().where(sales_refunds_mark.c.id == 1, sales_refunds_mark.c.txn_id < newest)
                 .values(txn_id=newest))
    return len(claimed)


def backfill(conn: sa.Connection, chunk: int = 100_000) -> int:
    """Rebuild ``sales_rollup`` and the fleet's hourly totals from ``sales`` (revision 0008, which made them;
    bench/reports.py); returns the number of sales read. Raw SQL of the columns revision 0008 knows, so that
    it does not depend on the newest table definitions. Refunds are ``backfill_refunds``' (after this), and
    the rollups revision 0029 made are ``rebuild_totals``' (after both): at the newest revision the three
    run together, or the reports by machine, location and product read stale rows."""
    conn.exec_driver_sql("DELETE FROM sales_rollup")
    conn.exec_driver_sql("DELETE FROM sales_fleet_hourly")
    conn.exec_driver_sql("DELETE FROM sales_fleet_pending")
    machine_all: dict = defaultdict(lambda: [0, 0, 0, 0])
    fleet_all: dict = defaultdict(lambda: [0, 0, 0, 0])
    result = conn.exec_driver_sql("SELECT machine_id, ts, product_id, amount, currency FROM sales")
    seen = 0
    while True:
        batch = result.fetchmany(chunk)
        if not batch:
            break
        seen += len(batch)
        machine, fleet = rollup_rows(batch)
        for target, part in ((machine_all, machine), (fleet_all, _summed(fleet, lambda k: (k[0], k[2])))):
            for k, (n, a, _rn, _ra) in part.items():
                target[k][0] += n
                target[k][1] += a
    rows = [k + tuple(v[:2]) for k, v in sorted(machine_all.items())]
    cols = ROLLUP_KEY + FIGURES[:2]
    for i in range(0, len(rows), chunk):
        conn.exec_driver_sql(f"INSERT INTO sales_rollup ({', '.join(cols)}) VALUES ({_marks(conn, len(cols))})",
                             rows[i:i + chunk])
    _add_fleet(conn, fleet_all, FIGURES[:2])
    return seen


def backfill_refunds(conn: sa.Connection) -> int:
    """Add every refund in the journal to ``sales_rollup`` and the fleet's hourly totals and mark them counted
    (revision 0027, after ``backfill`` in bench/reports.py); how many."""
    conn.exec_driver_sql("DELETE FROM sales_refunds_counted")
    conn.exec_driver_sql("DELETE FROM sales_refunds_mark")
    found = conn.execute(_refunds_query()).all()
    machine, fleet = rollup_rows(_refund_rows(found), refunds=True)
    _upsert(conn, machine, FIGURES[2:], products_only=True)
    _add_fleet(conn, _summed(fleet, lambda k: (k[0], k[2])), FIGURES[2:])
    ids = [(r[0],) for r in found]
    if ids:
        conn.exec_driver_sql(f"INSERT INTO sales_refunds_counted (txn_id) VALUES ({_marks(conn, 1)})", ids)
    newest = conn.execute(sa.select(sa.func.max(txns.c.id))).scalar() or 0
    conn.execute(sales_refunds_mark.insert().values(id=1, txn_id=newest))
    return len(found)


def rebuild_totals(conn: sa.Connection) -> None:
    """Fill the rollups without the product and without the machine from ``sales_rollup``, whose sums they
    are (revision 0029, which made them; bench/reports.py after ``backfill`` and ``backfill_refunds``), and
    empty the per-product pending deltas (``sales_rollup`` has them already). Run it with no ingest going on:
    a batch stored meanwhile would be counted twice or not at all."""
    sums = ", ".join(f"sum({f})" for f in FIGURES)
    conn.exec_driver_sql("DELETE FROM sales_machine_rollup")
    conn.exec_driver_sql(f"INSERT INTO sales_machine_rollup ({', '.join(MACHINE_KEY + FIGURES)}) "
                         f"SELECT {', '.join(MACHINE_KEY)}, {sums} FROM sales_rollup GROUP BY {', '.join(MACHINE_KEY)}")
    conn.exec_driver_sql("DELETE FROM sales_fleet_products_pending")
    conn.exec_driver_sql("DELETE FROM sales_fleet_products")
    conn.exec_driver_sql(f"INSERT INTO sales_fleet_products ({', '.join(PRODUCT_KEY + FIGURES)}) "
                         f"SELECT {', '.join(PRODUCT_KEY)}, {sums} FROM sales_rollup GROUP BY {', '.join(PRODUCT_KEY)}")
