"""Manager reports: sales by day, machine, product, location or hour of day over a date range, and stock
per slot across the fleet.

A report never groups the ``sales`` table: at a million sales that takes seconds. Ingest keeps two
rollups in its own transaction instead (``project``, a few rows per batch):

- ``sales_rollup``: count and amount per machine x product x currency x bucket, at three bucket sizes
  (an hour, a UTC day, and a block of 16 UTC days, each aligned on the epoch). A range of hours is cut
  into the fewest whole buckets (blocks in the middle, days and hours at the edges), so a year by machine
  reads tens of thousands of rows, not a million. Its rows are keyed by machine, and only the process
  that holds the machine's row lock (``ingest.store_batch``) writes them: no contention between cloud
  processes.
- fleet totals per UTC hour and currency, for day and hour-of-day reports over the whole fleet (8,760
  rows a year). Every machine's batch would update the same row, so ingest only appends to
  ``sales_fleet_pending`` (an insert locks nothing another process waits for); ``fold`` (the cloud's
  sweeper, every second) moves those rows into ``sales_fleet_hourly``, and reports read both.

Days are local days in the report's time zone, made of whole UTC hours: a UTC hour belongs to the local
day (and local hour of day) in which it starts. For zones at whole-hour offsets, DST included, that is
exact. For zones at a half or quarter hour (Asia/Kolkata, Asia/Kathmandu) the hour that straddles local
midnight is counted whole in the day where it starts: such a report is marked ``"exact": false``.

Refunds are in the same rollups, as ``refund_count`` and ``refunds`` (minor units, positive) beside each
cell's sales: a refund is counted in the hour it was booked (the journal's refund transaction), against the
machine and product of the order it refunds. Every report row gives ``amount`` (gross, what it always gave),
``refunds`` and ``net``. The journal belongs to the payments layer, below this one, so refunds reach the
rollups by ``count_refunds`` (the sweeper's ``fold``, and every report before it reads), which looks at the
transactions booked since it last looked.

A report by location, or filtered by one, counts each hour of a machine at the place it stood in that hour
(``locations.machine_placements``): a machine moved mid-month splits between the two places, and a retired
machine's past sales stay where they were made. The hour in which a move was recorded counts at the new
place.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from cloud.accounts.journal import accounts, entries, txns
from cloud.core.db import metadata
from cloud.fleet.locations import locations, machine_locations, machine_placements
from cloud.fleet.machines import machines, products, slots

HOUR_S = 3600
SPANS = (384, 24, 1)  # bucket sizes in hours, biggest first: 16 days, a day, an hour
BY = ("day", "machine", "product", "location", "hour")
MAX_DAYS = 3660
NO_PRODUCT = 0  # a sale whose product the cloud did not know (a key column cannot be NULL)
LATE_TXNS = 1000  # how far behind the last transaction looked at a refund may commit and still be counted
# ``cloud.sales.orders`` imports this module (a late drop's charge), so its table is named, not imported.
_orders = sa.table("orders", sa.column("id"), sa.column("machine_id"), sa.column("product_id"))


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


class ReportError(ValueError):
    """A report asked for wrongly; ``param`` names the query parameter at fault."""

    status = 422

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


class NotFound(ReportError):
    """A filter naming a machine, location or product the cloud does not know."""

    status = 404


# -- the rollups, kept by ingest ------------------------------------------------------------------------

def hour_of(ts: str) -> int:
    """Hours since the epoch of an ISO 8601 time with a zone (as the ledger's events carry)."""
    return math.floor(datetime.fromisoformat(ts).timestamp() / HOUR_S)


ROLLUP_KEY = ("machine_id", "span", "bucket", "product_id", "currency")
FIGURES = ("count", "amount", "refund_count", "refunds")


def rollup_rows(rows, refunds: bool = False) -> tuple[dict, dict]:
    """Machine rollup and fleet hourly deltas, cells of ``FIGURES``, of (machine_id, time, product_id, amount,
    currency) rows: sales, or with ``refunds`` refunds. A time is an ISO 8601 text or an hour since the epoch."""
    machine: dict = defaultdict(lambda: [0, 0, 0, 0])
    fleet: dict = defaultdict(lambda: [0, 0, 0, 0])
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
        cell = fleet[(hour, currency)]
        cell[n] += 1
        cell[a] += amount
    return machine, fleet


def _marks(conn: sa.Connection, n: int) -> str:
    return ", ".join(["?" if conn.dialect.paramstyle == "qmark" else "%s"] * n)


def _upsert(conn: sa.Connection, machine: dict, figures=FIGURES) -> None:
    """Add cells' ``figures`` to the machine rollup, in key order (two transactions upserting the same rows
    lock them in the same order)."""
    if not machine:
        return
    cols = ROLLUP_KEY + FIGURES
    conn.exec_driver_sql(
        f"INSERT INTO sales_rollup ({', '.join(cols)}) VALUES ({_marks(conn, len(cols))}) "
        f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET "
        + ", ".join(f"{f} = sales_rollup.{f} + excluded.{f}" for f in figures),
        [k + tuple(v) for k, v in sorted(machine.items())])


def _pend(conn: sa.Connection, fleet: dict) -> None:
    if fleet:
        conn.exec_driver_sql(f"INSERT INTO sales_fleet_pending (hour, currency, {', '.join(FIGURES)}) VALUES "
                             f"({_marks(conn, 6)})", [k + tuple(v) for k, v in sorted(fleet.items())])


def project(conn: sa.Connection, sale_rows: list[tuple]) -> None:
    """Add the sales just stored (``ingest.SALE_COLUMNS`` tuples) to the rollups, in ingest's transaction:
    one upsert and one insert for the whole batch."""
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
    """Add cells' ``figures`` to the fleet's hourly totals; ``FIGURES[:2]`` writes only the columns revision
    0008 made (its backfill)."""
    if not fleet:
        return
    written = FIGURES[:2] if figures == FIGURES[:2] else FIGURES
    cols = ("hour", "currency") + written
    conn.exec_driver_sql(
        f"INSERT INTO sales_fleet_hourly ({', '.join(cols)}) VALUES ({_marks(conn, len(cols))}) "
        "ON CONFLICT (hour, currency) DO UPDATE SET "
        + ", ".join(f"{f} = sales_fleet_hourly.{f} + excluded.{f}" for f in figures),
        [k + tuple(v[:len(written)]) for k, v in sorted(fleet.items())])


def fold(conn: sa.Connection, limit: int = 50_000) -> int:
    """Count the refunds booked since the last look (``count_refunds``), then move pending fleet deltas into
    the hourly totals; how many pending rows were moved. Safe to run in several processes at once: each
    pending row is deleted, and so counted, by one of them."""
    count_refunds(conn)
    p = sales_fleet_pending
    top = conn.execute(sa.select(p.c.id).order_by(p.c.id).offset(limit - 1).limit(1)).scalar()
    cond = p.c.id <= top if top is not None else sa.true()
    moved = conn.execute(p.delete().where(cond).returning(p.c.hour, p.c.currency, *(p.c[f] for f in FIGURES))).all()
    fleet: dict = defaultdict(lambda: [0, 0, 0, 0])
    for hour, currency, *figures in moved:
        cell = fleet[(hour, currency)]
        for i, v in enumerate(figures):
            cell[i] += v
    _add_fleet(conn, fleet)
    return len(moved)


def _refunds_query(after: int | None):
    """(txn id, booked at, machine, product, currency, amount) of each refund transaction after txn ``after``
    (None: all): what it took back from revenue, against the order's machine and product."""
    q = (sa.select(txns.c.id, txns.c.created_at, _orders.c.machine_id, _orders.c.product_id, accounts.c.currency,
                   -sa.func.sum(entries.c.amount))
         .select_from(txns.join(entries, entries.c.txn_id == txns.c.id)
                      .join(accounts, accounts.c.id == entries.c.account_id)
                      .join(_orders, _orders.c.id == txns.c.order_id))
         .where(txns.c.kind == "refund", accounts.c.kind == "revenue")
         .group_by(txns.c.id, txns.c.created_at, _orders.c.machine_id, _orders.c.product_id, accounts.c.currency))
    return q if after is None else q.where(txns.c.id > after)


def _hour_at(t) -> int:
    if isinstance(t, str):  # a raw read of SQLite's text
        t = datetime.fromisoformat(t)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return math.floor(t.timestamp() / HOUR_S)


def _refund_rows(found) -> list[tuple]:
    return [(m, _hour_at(at), product, int(amount), currency) for _id, at, m, product, currency, amount in found]


def count_refunds(conn: sa.Connection) -> int:
    """Add the refunds booked since the last look to the rollups, each once (a refund another process
    counted first is left to it); how many were added. Reads the transactions after the last one looked at,
    less ``LATE_TXNS`` (a refund committed that late after later ones would be missed; a refund's
    transaction is one short write)."""
    mark = conn.execute(sa.select(sales_refunds_mark.c.txn_id).where(sales_refunds_mark.c.id == 1)).scalar()
    newest = conn.execute(sa.select(sa.func.max(txns.c.id))).scalar() or 0
    after = None if mark is None else mark - LATE_TXNS
    c = sales_refunds_counted
    seen = sa.select(c.c.txn_id)
    if after is not None:
        seen = seen.where(c.c.txn_id > after)
    found = [r for r in conn.execute(_refunds_query(after).where(txns.c.id.not_in(seen)))]
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
    """Rebuild both rollups' sales from ``sales`` (the migration that adds them; bench/reports.py); returns
    the number of sales read. Raw SQL of the columns revision 0008 knows, so that it does not depend on the
    newest table definitions. Refunds are ``backfill_refunds``' (after this)."""
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
        for target, part in ((machine_all, machine), (fleet_all, fleet)):
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
    """Add every refund in the journal to the rollups and mark them counted (revision 0027, after
    ``backfill`` in bench/reports.py); how many."""
    conn.exec_driver_sql("DELETE FROM sales_refunds_counted")
    conn.exec_driver_sql("DELETE FROM sales_refunds_mark")
    found = conn.execute(_refunds_query(None)).all()
    machine, fleet = rollup_rows(_refund_rows(found), refunds=True)
    _upsert(conn, machine, FIGURES[2:])
    _add_fleet(conn, fleet, FIGURES[2:])
    ids = [(r[0],) for r in found]
    if ids:
        conn.exec_driver_sql(f"INSERT INTO sales_refunds_counted (txn_id) VALUES ({_marks(conn, 1)})", ids)
    newest = conn.execute(sa.select(sa.func.max(txns.c.id))).scalar() or 0
    conn.execute(sales_refunds_mark.insert().values(id=1, txn_id=newest))
    return len(found)


# -- asking -------------------------------------------------------------------------------------------

def zone(tz: str | None) -> ZoneInfo | timezone:
    if not tz or tz == "UTC":
        return timezone.utc
    try:
        # The name becomes a file name under the zone database: a very long one raises OSError ("File name
        # too long"), not ZoneInfoNotFoundError; IANA names are short, so anything long is no zone.
        if len(tz) > 64:
            raise ValueError(tz)
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ReportError("tz", f"unknown time zone {tz[:64]!r}; use an IANA name like Asia/Shanghai or UTC") from None


def parse_day(text, param: str) -> date:
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ReportError(param, f"{text!r} is not a date like 2026-11-01") from None


def first_hour(day: date, tz) -> int:
    """The first whole UTC hour of a local day: the hour in which local midnight falls, or the next one
    if midnight falls inside it (see the module docstring)."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
    return math.ceil(midnight / HOUR_S)


def pieces(h0: int, h1: int, spans=SPANS) -> list[tuple[int, int, int]]:
    """[h0, h1) as (span, first bucket, end) ranges of whole buckets, the biggest in the middle."""
    if h0 >= h1:
        return []
    span, rest = spans[0], spans[1:]
    a, b = -(-h0 // span) * span, (h1 // span) * span
    if not rest:
        return [(span, h0, h1)]
    if a >= b:
        return pieces(h0, h1, rest)
    return pieces(h0, a, rest) + [(span, a, b)] + pieces(b, h1, rest)


class Filter:
    """The machines (None: all) and the product (None: any) a request is about."""

    machines: list[str] | None = None
    product: int | None = None
    filters: dict = {}


class Query(Filter):
    """A checked report request: the UTC hours it covers and the machines and product it is about."""

    def __init__(self, conn: sa.Connection, by: str, start: str | None, end: str | None, tz: str | None = None,
                 machine: str | None = None, location: int | str | None = None, product: int | str | None = None,
                 today: date | None = None):
        if by not in BY:
            raise ReportError("by", f"unknown report {by!r}; use one of {', '.join(BY)}")
        self.by, self.tzname = by, tz or "UTC"
        self.tz = zone(tz)
        today = today or datetime.now(self.tz).date()
        self.end = parse_day(end, "to") if end else today + timedelta(days=1)
        self.start = parse_day(start, "from") if start else self.end - timedelta(days=30)
        if self.start >= self.end:
            raise ReportError("to", f"the range is empty: to ({self.end}) must be after from ({self.start}); "
                              "to is exclusive")
        if (self.end - self.start).days > MAX_DAYS:
            raise ReportError("to", f"a report covers at most {MAX_DAYS} days")
        self.h0, self.h1 = first_hour(self.start, self.tz), first_hour(self.end, self.tz)
        self.exact = all(_whole_hours(self.tz, h) for h in (self.h0, self.h1)) and _whole_hours_between(
            self.tz, self.h0, self.h1)
        self.machines, self.product, self.filters = _filters(conn, machine, location, product)
        # (machines or None for all, first hour, end): the parts of the range the report reads; a location
        # filter makes one part per stretch of hours its machines stood there.
        self.parts: list[tuple[list[str] | None, int, int]] = [(self.machines, self.h0, self.h1)]
        if "location" in self.filters:
            groups: dict = defaultdict(list)
            for m, stays in _stays(conn, self.h0, self.h1, self.filters["location"]).items():
                if self.machines is None or m in self.machines:
                    for a, b, _loc in stays:
                        groups[(a, b)].append(m)
            self.parts = [(sorted(ms), a, b) for (a, b), ms in sorted(groups.items())]


def _stays(conn: sa.Connection, h0: int, h1: int, location: int | None = None) -> dict[str, list[tuple]]:
    """{machine: [(first hour, end, location id)]}: the hours of [h0, h1) each machine stood at a place (at
    ``location`` if given), by ``machine_placements``; the hour in which a move was recorded is the new place's."""
    p = machine_placements
    q = sa.select(p.c.machine_id, p.c.location_id, p.c.valid_from, p.c.valid_to)
    if location is not None:
        q = q.where(p.c.location_id == location)
    out: dict[str, list[tuple]] = defaultdict(list)
    for m, loc, since, until in conn.execute(q):
        a = h0 if since is None else max(h0, _hour_at(since))
        b = h1 if until is None else min(h1, _hour_at(until))
        if a < b:
            out[m].append((a, b, loc))
    return out


def _filters(conn: sa.Connection, machine, location, product, now: bool = False
             ) -> tuple[list[str] | None, int | None, dict]:
    """The machines (None: all) and product (None: any) the filters leave, and the filters as given back."""
    chosen: list[str] | None = None
    wanted: int | None = None
    filters: dict = {}
    if machine is not None:
        if conn.execute(sa.select(machines.c.id).where(machines.c.id == machine)).first() is None:
            raise NotFound("machine", f"no machine {machine!r}")
        chosen, filters["machine"] = [machine], machine
    if location is not None:
        loc = _int(location, "location")
        if conn.execute(sa.select(locations.c.id).where(locations.c.id == loc)).first() is None:
            raise NotFound("location", f"no location {loc}")
        if now:  # where the machines stand now (the stock); a sales report reads their stays (Query.parts)
            at = conn.execute(sa.select(machine_locations.c.machine_id)
                              .where(machine_locations.c.location_id == loc)).scalars().all()
            chosen = sorted(set(at) & set(chosen)) if chosen is not None else sorted(at)
        filters["location"] = loc
    if product is not None:
        q = sa.select(products.c.id)
        q = q.where(products.c.id == int(product)) if str(product).isdigit() else q.where(products.c.sku == product)
        wanted = conn.execute(q).scalar()
        if wanted is None:
            raise NotFound("product", f"no product {product!r} (give its id or SKU)")
        filters["product"] = wanted
    return chosen, wanted, filters


def _int(value, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ReportError(param, f"{value!r} is not a whole number") from None


def _whole_hours(tz, hour: int) -> bool:
    offset = datetime.fromtimestamp(hour * HOUR_S, tz).utcoffset()
    return offset.total_seconds() % HOUR_S == 0


def _whole_hours_between(tz, h0: int, h1: int) -> bool:
    """Whether the zone's offset is whole hours all through [h0, h1): checked once a month, which catches
    every zone in tzdata (none has been at a fractional offset for less than a month at a time)."""
    if tz is timezone.utc:
        return True
    return all(_whole_hours(tz, h) for h in range(h0, h1, 24 * 28))


def _span(conn: sa.Connection, machines: list[str] | None, r, span: int):
    """``span = n``; on SQLite with a machine filter written ``span + 0``, which keeps SQLite off the time
    index (it would read every machine's rows in the range) and on the primary key, machine first.
    PostgreSQL reads the primary key by machine, span and bucket on its own, given ``span = n``."""
    sqlite = conn.dialect.name == "sqlite"
    return (r.c.span + 0 if machines is not None and sqlite else r.c.span) == span


def _machine_filter(q: Filter, table, stmt, machines: list[str] | None = None):
    machines = q.machines if machines is None else machines
    if machines is not None:
        stmt = stmt.where(table.c.machine_id.in_(machines) if machines else sa.false())
    if q.product is not None:
        stmt = stmt.where(table.c.product_id == q.product)
    return stmt


def _sums(t):
    return [sa.func.sum(t.c[f]) for f in FIGURES]


def _hourly(conn: sa.Connection, q: Query) -> list[tuple]:
    """(UTC hour, currency, *FIGURES) over the range, from the fleet totals or, with a filter, from the
    machine rollup's hour buckets."""
    out = []
    for chosen, h0, h1 in q.parts:
        if chosen is None and q.product is None:
            parts = []
            for t in (sales_fleet_hourly, sales_fleet_pending):
                parts.append(sa.select(t.c.hour.label("hour"), t.c.currency, *(t.c[f] for f in FIGURES))
                             .where(t.c.hour >= h0, t.c.hour < h1))
            u = sa.union_all(*parts).subquery()
            stmt = sa.select(u.c.hour, u.c.currency, *_sums(u)).group_by(u.c.hour, u.c.currency)
        else:
            r = sales_rollup
            stmt = _machine_filter(q, r, sa.select(r.c.bucket, r.c.currency, *_sums(r))
                                   .where(_span(conn, chosen, r, 1), r.c.bucket >= h0, r.c.bucket < h1)
                                   .group_by(r.c.bucket, r.c.currency), chosen)
        out += [(h, c, *map(int, figures)) for h, c, *figures in conn.execute(stmt)]
    return out


def _by_dimension(conn: sa.Connection, q: Query, column: str, parts=None) -> list[tuple]:
    """(machine_id or product_id, currency, *FIGURES) over the parts of the range (the query's unless
    given), from the fewest whole buckets."""
    r = sales_rollup
    out = []
    for chosen, h0, h1 in q.parts if parts is None else parts:
        cut = pieces(h0, h1)
        if not cut:
            continue
        if q.product is not None:
            # One SELECT per piece, so that each reads a range of (product_id, span, bucket): after
            # ``product_id = ?`` an OR of the pieces left SQLite reading every row the product ever had. The
            # machines are chosen once, outside (a list of them in every piece could pass SQLite's limit of
            # parameters).
            u = sa.union_all(*(sa.select(r.c.machine_id.label("m"), r.c[column].label("k"), r.c.currency,
                                         *(r.c[f] for f in FIGURES))
                               .where(r.c.product_id == q.product, r.c.span == span, r.c.bucket >= a,
                                      r.c.bucket < b) for span, a, b in cut)).subquery()
            stmt = sa.select(u.c.k, u.c.currency, *_sums(u)).group_by(u.c.k, u.c.currency)
            if chosen is not None:
                stmt = stmt.where(u.c.m.in_(chosen) if chosen else sa.false())
        else:
            ranges = [sa.and_(_span(conn, chosen, r, span), r.c.bucket >= a, r.c.bucket < b) for span, a, b in cut]
            stmt = _machine_filter(q, r, sa.select(r.c[column], r.c.currency, *_sums(r))
                                   .where(sa.or_(*ranges)).group_by(r.c[column], r.c.currency), chosen)
        out += [(k, c, *map(int, figures)) for k, c, *figures in conn.execute(stmt)]
    return out


def _by_location(conn: sa.Connection, q: Query) -> list[tuple]:
    """(location id or None, currency, *FIGURES): each machine's hours at the place it stood in them. Read
    per machine over the whole range; a machine that stood at more than one place (or at none for a while)
    is read again per stay, and what its stays leave is at no location."""
    rows = _by_dimension(conn, q, "machine_id")
    if "location" in q.filters:  # the parts are that location's stays already
        return [(q.filters["location"], c, *figures) for _m, c, *figures in rows]
    stays = _stays(conn, q.h0, q.h1)
    whole = {m: s[0][2] for m, s in stays.items() if len(s) == 1 and s[0][:2] == (q.h0, q.h1)}
    split = {m for m in stays if m not in whole and (q.machines is None or m in q.machines)}
    groups: dict = defaultdict(list)
    for m in sorted(split):
        for a, b, _loc in stays[m]:
            groups[(a, b)].append(m)
    where = {(m, a, b): loc for m in split for a, b, loc in stays[m]}
    out, rest = [], defaultdict(lambda: [0, 0, 0, 0])
    for m, c, *figures in rows:
        if m in split:
            for i, v in enumerate(figures):
                rest[(m, c)][i] += v
        else:
            out.append((whole.get(m), c, *figures))
    for (a, b), ms in sorted(groups.items()):
        for m, c, *figures in _by_dimension(conn, q, "machine_id", [(ms, a, b)]):
            out.append((where[(m, a, b)], c, *figures))
            for i, v in enumerate(figures):
                rest[(m, c)][i] -= v
    out += [(None, c, *figures) for (_m, c), figures in rest.items() if any(figures)]
    return out


def sales_report(conn: sa.Connection, q: Query) -> dict:
    """The report ``q`` asks for: one row per key and currency, with the sales' count and amount (gross), the
    refunds' count and amount, and net (amount less refunds), all money in minor units. Refunds booked after
    the last ``count_refunds`` are not in it yet (the API counts them before it asks)."""
    cells: dict = defaultdict(lambda: [0, 0, 0, 0])
    names: dict = {}

    def add(key, currency, figures):
        cell = cells[(key, currency)]
        for i, v in enumerate(figures):
            cell[i] += v

    if q.by in ("day", "hour"):
        cache: dict[int, datetime] = {}
        for hour, currency, *figures in _hourly(conn, q):
            local = cache.get(hour) or cache.setdefault(hour, datetime.fromtimestamp(hour * HOUR_S, q.tz))
            add(local.date().isoformat() if q.by == "day" else local.hour, currency, figures)
    elif q.by == "location":
        for key, currency, *figures in _by_location(conn, q):
            add(key, currency, figures)
        names = dict(conn.execute(sa.select(locations.c.id, locations.c.name)).all())
        names[None] = "(no location)"
    else:
        column = "product_id" if q.by == "product" else "machine_id"
        for key, currency, *figures in _by_dimension(conn, q, column):
            add(key, currency, figures)
        if q.by == "machine":
            names = dict(conn.execute(sa.select(machines.c.id, machines.c.name)).all())
        else:
            names = {i: f"{sku} {name}" for i, sku, name in conn.execute(
                sa.select(products.c.id, products.c.sku, products.c.name))}
            names[NO_PRODUCT] = "(unknown product)"
    order = sorted(((k, v) for k, v in cells.items() if any(v)),
                   key=lambda i: (i[0][0] is None, "" if i[0][0] is None else i[0][0], i[0][1]))
    rows = [{"key": k, "name": names.get(k), "currency": c, **_figures(v)} for (k, c), v in order]
    if q.by in ("day", "hour"):
        for row in rows:
            del row["name"]
    totals: dict = defaultdict(lambda: [0, 0, 0, 0])
    for (_k, c), v in order:
        for i, x in enumerate(v):
            totals[c][i] += x
    return {"by": q.by, "from": q.start.isoformat(), "to": q.end.isoformat(), "tz": q.tzname,
            "filters": q.filters, "exact": q.exact, "rows": rows,
            "totals": [{"currency": c, **_figures(v)} for c, v in sorted(totals.items())]}


def _figures(v) -> dict:
    return {"count": v[0], "amount": v[1], "refund_count": v[2], "refunds": v[3], "net": v[1] - v[3]}


STOCK_AFTER_RE = re.compile(r"(\d{1,9})/(\d{1,9})~([a-z0-9][a-z0-9-]{0,31})~([A-Z][0-9]{1,2})\Z")


def _stock_after(after: str) -> tuple[float, str, str]:
    """(fill, machine, slot) of the row a stock report's ``next`` names: its fill as the fraction it was
    (count/capacity, 0/1 for no capacity), so that the next page starts exactly where the last one stopped."""
    found = STOCK_AFTER_RE.match(after)
    if found is None or int(found.group(2)) == 0:
        raise ReportError("after", "not a position this report gave (use its next)")
    return int(found.group(1)) / int(found.group(2)), found.group(3), found.group(4)


def _stock_next(row: dict) -> str:
    count, capacity = (row["count"], row["capacity"]) if row["capacity"] > 0 else (0, 1)
    return f"{count}/{capacity}~{row['machine_id']}~{row['slot']}"


def stock_report(conn: sa.Connection, machine: str | None = None, location: int | str | None = None,
                 product: int | str | None = None, after: str | None = None, limit: int | None = None) -> dict:
    """Every slot in the planograms across the fleet with its fill level (count / capacity), emptiest first
    (then by machine and slot); with ``limit``, a page of them after the row ``after`` names, and ``next``
    for the following page (None on the last). The summary is always over every slot the filters leave."""
    q = Filter()
    q.machines, q.product, q.filters = _filters(conn, machine, location, product, now=True)
    s = slots
    position = _stock_after(after) if after else None
    whole = _machine_filter(q, s, sa.select(s.c.count, s.c.capacity).where(s.c.in_planogram == sa.true()))
    # The order of the rows, in SQL so that a page is a keyset: the fill as a double (as Python divides).
    fill = sa.case((s.c.capacity > 0, sa.cast(s.c.count, sa.Float) / s.c.capacity), else_=0.0)
    stmt = (sa.select(s.c.machine_id, s.c.slot, s.c.count, s.c.capacity, s.c.par_level, s.c.flagged, s.c.product_id,
                      products.c.sku, products.c.name, locations.c.name.label("location"))
            .join(products, products.c.id == s.c.product_id)
            .outerjoin(machine_locations, machine_locations.c.machine_id == s.c.machine_id)
            .outerjoin(locations, locations.c.id == machine_locations.c.location_id)
            .where(s.c.in_planogram == sa.true()).order_by(fill, s.c.machine_id, s.c.slot))
    stmt = _machine_filter(q, s, stmt)
    if position is not None:
        f, m, slot = position
        stmt = stmt.where(sa.or_(fill > f, sa.and_(fill == f, sa.tuple_(s.c.machine_id, s.c.slot)
                                                   > sa.tuple_(m, slot))))
    if limit is not None:
        stmt = stmt.limit(limit + 1)
    rows = [{"machine_id": r.machine_id, "location": r.location, "slot": r.slot,
             "product_id": r.product_id, "sku": r.sku, "name": r.name, "count": r.count, "capacity": r.capacity,
             "par_level": r.par_level, "fill": round(r.count / r.capacity, 3) if r.capacity > 0 else 0.0,
             "flagged": bool(r.flagged)} for r in conn.execute(stmt)]
    more = limit is not None and len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    counts = conn.execute(whole).all()
    units, room = sum(n for n, _c in counts), sum(c for _n, c in counts)
    return {"filters": q.filters, "slots": rows, "next": _stock_next(last) if last else None,
            "summary": {"slots": len(counts), "empty": sum(1 for n, _c in counts if n == 0),
                        "below_quarter": sum(1 for n, c in counts if (round(n / c, 3) if c > 0 else 0.0) < 0.25),
                        "units": units, "capacity": room, "fill": round(units / room, 3) if room else 0.0}}


def days_by_machine(conn: sa.Connection, tz: str, today: date, days: int = 7,
                    machine_ids: list[str] | None = None) -> dict[str, dict]:
    """Each machine's sales on each of the ``days`` local days (in zone ``tz``) ending with ``today``:
    {machine id: {(day, currency): [count, net]}}, from the rollups' day and hour buckets (each local day
    cut into whole buckets of its own, so every bucket falls in one day). ``count`` is the items sold;
    ``net`` the amount sold less the refunds booked that day, as in every report (the refunds booked since
    the last ``count_refunds`` are not in it yet)."""
    z = zone(tz)
    first = today - timedelta(days=days - 1)
    day_of: dict[tuple[int, int], date] = {}
    ranges = []
    r = sales_rollup
    for i in range(days):
        d = first + timedelta(days=i)
        for span, a, b in pieces(first_hour(d, z), first_hour(d + timedelta(days=1), z), SPANS[1:]):
            ranges.append(sa.and_(_span(conn, machine_ids, r, span), r.c.bucket >= a, r.c.bucket < b))
            day_of.update({(span, h): d for h in range(a, b, span)})
    out: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    stmt = (sa.select(r.c.machine_id, r.c.span, r.c.bucket, r.c.currency, sa.func.sum(r.c.count),
                      sa.func.sum(r.c.amount), sa.func.sum(r.c.refunds))
            .where(sa.or_(*ranges)).group_by(r.c.machine_id, r.c.span, r.c.bucket, r.c.currency))
    if machine_ids is not None:  # these machines only (None: all), read by the primary key, machine first
        stmt = stmt.where(r.c.machine_id.in_(machine_ids) if machine_ids else sa.false())
    for machine_id, span, bucket, currency, count, amount, refunds in conn.execute(stmt):
        cell = out[machine_id][(day_of[(span, bucket)], currency)]
        cell[0] += int(count)
        cell[1] += int(amount) - int(refunds)
    return {m: dict(cells) for m, cells in out.items()}
