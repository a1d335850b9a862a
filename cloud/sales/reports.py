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
Locations are where each machine stands now (the cloud keeps no history of moves).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from cloud.core.db import metadata
from cloud.fleet.locations import locations, machine_locations
from cloud.fleet.machines import machines, products, slots

HOUR_S = 3600
SPANS = (384, 24, 1)  # bucket sizes in hours, biggest first: 16 days, a day, an hour
BY = ("day", "machine", "product", "location", "hour")
MAX_DAYS = 3660
NO_PRODUCT = 0  # a sale whose product the cloud did not know (a key column cannot be NULL)

sales_rollup = sa.Table(
    "sales_rollup", metadata,
    sa.Column("machine_id", sa.String(32), primary_key=True),
    sa.Column("span", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),  # first hour, since the epoch
    sa.Column("product_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
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
    sqlite_with_rowid=False,
)

sales_fleet_pending = sa.Table(
    "sales_fleet_pending", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("hour", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
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


def rollup_rows(sales_rows) -> tuple[dict, dict]:
    """Machine rollup and fleet hourly deltas of (machine_id, ts, product_id, amount, currency) rows."""
    machine: dict = defaultdict(lambda: [0, 0])
    fleet: dict = defaultdict(lambda: [0, 0])
    hours: dict[str, int] = {}
    for machine_id, ts, product_id, amount, currency in sales_rows:
        hour = hours.get(ts)
        if hour is None:
            hour = hours[ts] = hour_of(ts)
        product = NO_PRODUCT if product_id is None else product_id
        for span in SPANS:
            cell = machine[(machine_id, span, hour - hour % span, product, currency)]
            cell[0] += 1
            cell[1] += amount
        cell = fleet[(hour, currency)]
        cell[0] += 1
        cell[1] += amount
    return machine, fleet


def _upsert_sql(conn: sa.Connection) -> str:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ("INSERT INTO sales_rollup (machine_id, span, bucket, product_id, currency, count, amount) VALUES "
            f"({', '.join([mark] * 7)}) ON CONFLICT (machine_id, span, bucket, product_id, currency) DO UPDATE SET "
            "count = sales_rollup.count + excluded.count, amount = sales_rollup.amount + excluded.amount")


def project(conn: sa.Connection, sale_rows: list[tuple]) -> None:
    """Add the sales just stored (``ingest.SALE_COLUMNS`` tuples) to the rollups, in ingest's transaction:
    one upsert and one insert for the whole batch."""
    machine, fleet = rollup_rows((r[0], r[2], r[5], r[6], r[7]) for r in sale_rows)
    if not machine:
        return
    # Sorted keys: two transactions upserting the same rows lock them in the same order.
    conn.exec_driver_sql(_upsert_sql(conn), [k + tuple(v) for k, v in sorted(machine.items())])
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(f"INSERT INTO sales_fleet_pending (hour, currency, count, amount) VALUES "
                         f"({mark}, {mark}, {mark}, {mark})", [k + tuple(v) for k, v in sorted(fleet.items())])


def add_amount(conn: sa.Connection, machine_id: str, ts: str, product_id: int | None, currency: str,
               amount: int) -> None:
    """Add ``amount`` to a sale already counted in the rollups (a late drop charged afresh after its sale was
    stored at 0): the same cells, no new sale."""
    machine, fleet = rollup_rows([(machine_id, ts, product_id, amount, currency)])
    conn.exec_driver_sql(_upsert_sql(conn), [k + (0, v[1]) for k, v in sorted(machine.items())])
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(f"INSERT INTO sales_fleet_pending (hour, currency, count, amount) VALUES "
                         f"({mark}, {mark}, {mark}, {mark})", [k + (0, v[1]) for k, v in sorted(fleet.items())])


def _add_fleet(conn: sa.Connection, fleet: dict) -> None:
    if not fleet:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(
        f"INSERT INTO sales_fleet_hourly (hour, currency, count, amount) VALUES ({mark}, {mark}, {mark}, {mark}) "
        "ON CONFLICT (hour, currency) DO UPDATE SET count = sales_fleet_hourly.count + excluded.count, "
        "amount = sales_fleet_hourly.amount + excluded.amount", [k + tuple(v) for k, v in sorted(fleet.items())])


def fold(conn: sa.Connection, limit: int = 50_000) -> int:
    """Move pending fleet deltas into the hourly totals; how many rows were moved. Safe to run in several
    processes at once: each pending row is deleted, and so counted, by one of them."""
    p = sales_fleet_pending
    top = conn.execute(sa.select(p.c.id).order_by(p.c.id).offset(limit - 1).limit(1)).scalar()
    cond = p.c.id <= top if top is not None else sa.true()
    moved = conn.execute(p.delete().where(cond).returning(p.c.hour, p.c.currency, p.c.count, p.c.amount)).all()
    fleet: dict = defaultdict(lambda: [0, 0])
    for hour, currency, count, amount in moved:
        fleet[(hour, currency)][0] += count
        fleet[(hour, currency)][1] += amount
    _add_fleet(conn, fleet)
    return len(moved)


def backfill(conn: sa.Connection, chunk: int = 100_000) -> int:
    """Rebuild both rollups from ``sales`` (the migration that adds them; bench/reports.py); returns the
    number of sales read. Raw SQL, so that it does not depend on the newest table definitions."""
    conn.exec_driver_sql("DELETE FROM sales_rollup")
    conn.exec_driver_sql("DELETE FROM sales_fleet_hourly")
    conn.exec_driver_sql("DELETE FROM sales_fleet_pending")
    machine_all: dict = defaultdict(lambda: [0, 0])
    fleet_all: dict = defaultdict(lambda: [0, 0])
    result = conn.exec_driver_sql("SELECT machine_id, ts, product_id, amount, currency FROM sales")
    seen = 0
    while True:
        batch = result.fetchmany(chunk)
        if not batch:
            break
        seen += len(batch)
        machine, fleet = rollup_rows(batch)
        for target, part in ((machine_all, machine), (fleet_all, fleet)):
            for k, (n, a) in part.items():
                target[k][0] += n
                target[k][1] += a
    rows = [k + tuple(v) for k, v in sorted(machine_all.items())]
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for i in range(0, len(rows), chunk):
        conn.exec_driver_sql("INSERT INTO sales_rollup (machine_id, span, bucket, product_id, currency, count, "
                             f"amount) VALUES ({', '.join([mark] * 7)})", rows[i:i + chunk])
    _add_fleet(conn, fleet_all)
    return seen


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


def _filters(conn: sa.Connection, machine, location, product) -> tuple[list[str] | None, int | None, dict]:
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


def _span(q: Filter, r, span: int):
    """``span = n``; with a machine filter written ``span + 0``, which keeps SQLite off the time index
    (it would read every machine's rows in the range) and on the primary key, machine first."""
    return (r.c.span + 0 if q.machines is not None else r.c.span) == span


def _machine_filter(q: Query, table, stmt):
    if q.machines is not None:
        stmt = stmt.where(table.c.machine_id.in_(q.machines) if q.machines else sa.false())
    if q.product is not None:
        stmt = stmt.where(table.c.product_id == q.product)
    return stmt


def _hourly(conn: sa.Connection, q: Query) -> list[tuple[int, str, int, int]]:
    """(UTC hour, currency, count, amount) over the range, from the fleet totals or, with a filter, from
    the machine rollup's hour buckets."""
    if q.machines is None and q.product is None:
        parts = []
        for t in (sales_fleet_hourly, sales_fleet_pending):
            parts.append(sa.select(t.c.hour.label("hour"), t.c.currency, t.c.count, t.c.amount)
                         .where(t.c.hour >= q.h0, t.c.hour < q.h1))
        u = sa.union_all(*parts).subquery()
        stmt = sa.select(u.c.hour, u.c.currency, sa.func.sum(u.c.count), sa.func.sum(u.c.amount)) \
            .group_by(u.c.hour, u.c.currency)
    else:
        r = sales_rollup
        stmt = _machine_filter(q, r, sa.select(r.c.bucket, r.c.currency, sa.func.sum(r.c.count),
                                               sa.func.sum(r.c.amount))
                               .where(_span(q, r, 1), r.c.bucket >= q.h0, r.c.bucket < q.h1)
                               .group_by(r.c.bucket, r.c.currency))
    return [(h, c, int(n), int(a)) for h, c, n, a in conn.execute(stmt)]


def _by_dimension(conn: sa.Connection, q: Query, column: str) -> list[tuple]:
    """(machine_id or product_id, currency, count, amount) over the range, from the fewest whole buckets."""
    r = sales_rollup
    ranges = [sa.and_(_span(q, r, span), r.c.bucket >= a, r.c.bucket < b) for span, a, b in pieces(q.h0, q.h1)]
    if not ranges:
        return []
    stmt = _machine_filter(q, r, sa.select(r.c[column], r.c.currency, sa.func.sum(r.c.count),
                                           sa.func.sum(r.c.amount))
                           .where(sa.or_(*ranges)).group_by(r.c[column], r.c.currency))
    return [(k, c, int(n), int(a)) for k, c, n, a in conn.execute(stmt)]


def sales_report(conn: sa.Connection, q: Query) -> dict:
    """The report ``q`` asks for: one row per key and currency, with count and amount (minor units)."""
    cells: dict = defaultdict(lambda: [0, 0])
    names: dict = {}
    if q.by in ("day", "hour"):
        cache: dict[int, datetime] = {}
        for hour, currency, count, amount in _hourly(conn, q):
            local = cache.get(hour) or cache.setdefault(hour, datetime.fromtimestamp(hour * HOUR_S, q.tz))
            key = local.date().isoformat() if q.by == "day" else local.hour
            cells[(key, currency)][0] += count
            cells[(key, currency)][1] += amount
    else:
        column = "product_id" if q.by == "product" else "machine_id"
        where = {}
        if q.by == "location":
            where = {m: (loc_id, name) for m, loc_id, name in conn.execute(
                sa.select(machine_locations.c.machine_id, locations.c.id, locations.c.name)
                .join(locations, locations.c.id == machine_locations.c.location_id))}
        for key, currency, count, amount in _by_dimension(conn, q, column):
            if q.by == "location":
                key, names[key] = where.get(key, (None, "(no location)"))
            cells[(key, currency)][0] += count
            cells[(key, currency)][1] += amount
        if q.by == "machine":
            names = dict(conn.execute(sa.select(machines.c.id, machines.c.name)).all())
        elif q.by == "product":
            names = {i: f"{sku} {name}" for i, sku, name in conn.execute(
                sa.select(products.c.id, products.c.sku, products.c.name))}
            names[NO_PRODUCT] = "(unknown product)"
    order = sorted(cells.items(), key=lambda i: (i[0][0] is None, "" if i[0][0] is None else i[0][0], i[0][1]))
    rows = [{"key": k, "name": names.get(k), "currency": c, "count": n, "amount": a} for (k, c), (n, a) in order]
    if q.by in ("day", "hour"):
        for row in rows:
            del row["name"]
    totals: dict = defaultdict(lambda: [0, 0])
    for row in rows:
        totals[row["currency"]][0] += row["count"]
        totals[row["currency"]][1] += row["amount"]
    return {"by": q.by, "from": q.start.isoformat(), "to": q.end.isoformat(), "tz": q.tzname,
            "filters": q.filters, "exact": q.exact, "rows": rows,
            "totals": [{"currency": c, "count": n, "amount": a} for c, (n, a) in sorted(totals.items())]}


def stock_report(conn: sa.Connection, machine: str | None = None, location: int | str | None = None,
                 product: int | str | None = None) -> dict:
    """Every slot in the planograms across the fleet with its fill level (count / capacity), emptiest first."""
    q = Filter()
    q.machines, q.product, q.filters = _filters(conn, machine, location, product)
    s = slots
    stmt = (sa.select(s.c.machine_id, s.c.slot, s.c.count, s.c.capacity, s.c.par_level, s.c.flagged, s.c.product_id,
                      products.c.sku, products.c.name)
            .join(products, products.c.id == s.c.product_id).where(s.c.in_planogram == sa.true()))
    stmt = _machine_filter(q, s, stmt)
    where = {m: name for m, name in conn.execute(
        sa.select(machine_locations.c.machine_id, locations.c.name)
        .join(locations, locations.c.id == machine_locations.c.location_id))}
    rows = [{"machine_id": r.machine_id, "location": where.get(r.machine_id), "slot": r.slot,
             "product_id": r.product_id, "sku": r.sku, "name": r.name, "count": r.count, "capacity": r.capacity,
             "par_level": r.par_level, "fill": round(r.count / r.capacity, 3) if r.capacity else 0.0,
             "flagged": bool(r.flagged)} for r in conn.execute(stmt)]
    rows.sort(key=lambda r: (r["fill"], r["machine_id"], r["slot"]))
    units, room = sum(r["count"] for r in rows), sum(r["capacity"] for r in rows)
    return {"filters": q.filters, "slots": rows,
            "summary": {"slots": len(rows), "empty": sum(1 for r in rows if r["count"] == 0),
                        "below_quarter": sum(1 for r in rows if r["fill"] < 0.25),
                        "units": units, "capacity": room, "fill": round(units / room, 3) if room else 0.0}}


def days_by_machine(conn: sa.Connection, tz: str, today: date, days: int = 7) -> dict[str, dict]:
    """Each machine's sales on each of the ``days`` local days (in zone ``tz``) ending with ``today``:
    {machine id: {(day, currency): [count, amount]}}, from the rollups' day and hour buckets (each local day
    cut into whole buckets of its own, so every bucket falls in one day). Sales as stored: a refund is not
    taken off (the rollups count what was sold, as every report does)."""
    z = zone(tz)
    first = today - timedelta(days=days - 1)
    day_of: dict[tuple[int, int], date] = {}
    ranges = []
    r = sales_rollup
    for i in range(days):
        d = first + timedelta(days=i)
        for span, a, b in pieces(first_hour(d, z), first_hour(d + timedelta(days=1), z), SPANS[1:]):
            ranges.append(sa.and_(r.c.span == span, r.c.bucket >= a, r.c.bucket < b))
            day_of.update({(span, h): d for h in range(a, b, span)})
    out: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    stmt = (sa.select(r.c.machine_id, r.c.span, r.c.bucket, r.c.currency, sa.func.sum(r.c.count),
                      sa.func.sum(r.c.amount))
            .where(sa.or_(*ranges)).group_by(r.c.machine_id, r.c.span, r.c.bucket, r.c.currency))
    for machine_id, span, bucket, currency, count, amount in conn.execute(stmt):
        cell = out[machine_id][(day_of[(span, bucket)], currency)]
        cell[0] += int(count)
        cell[1] += int(amount)
    return {m: dict(cells) for m, cells in out.items()}
