"""Manager reports: sales by day, machine, product, location or hour of day over a date range, and stock
per slot across the fleet.

A report never groups the ``sales`` table: it reads the rollups that ingest keeps (``cloud/sales/rollups.py``,
whose docstring says what each holds). A range of hours is cut into the fewest whole buckets (blocks of 16
UTC days in the middle, days and hours at the edges); each report reads the smallest rollup that has its
key and filters: the fleet's hourly totals for the whole fleet by day or hour; the per-product fleet buckets
for the whole fleet by product, or for one product by day or hour; the per-machine buckets (no product) for
a report by machine or location, or by day or hour for some machines; the machine x product buckets only
when a report needs both (by machine or location for one product, by product for some machines).

Days are local days in the report's time zone, made of whole UTC hours: a UTC hour belongs to the local
day (and local hour of day) in which it starts. For zones at whole-hour offsets, DST included, that is
exact. For zones at a half or quarter hour (Asia/Kolkata, Asia/Kathmandu) the hour that straddles local
midnight is counted whole in the day where it starts: such a report is marked ``"exact": false``.

Every report row gives ``amount`` (gross, what it always gave), ``refunds`` and ``net``: a refund is counted
in the hour it was booked, against the machine and product of the order it refunds (``count_refunds``).

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
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.selectable import Join

from cloud.fleet.locations import locations, machine_locations, machine_placements
from cloud.fleet.machines import machines, products, slots
# The rollups' writers and tables, named here as well: ingest, orders, audits, the migrations and the bench
# call them through this module.
from cloud.sales.rollups import (  # noqa: F401
    FIGURES, HOUR_S, NO_PRODUCT, SPANS, hour_at, add_amount, backfill, backfill_refunds, count_new_refunds,
    count_refunds, fold, hour_of, project, rebuild_totals, sales_fleet_hourly, sales_fleet_pending, sales_fleet_products,
    sales_fleet_products_pending, sales_machine_rollup, sales_rollup)

BY = ("day", "machine", "product", "location", "hour")
MAX_DAYS = 3660
EPOCH = date(1970, 1, 1)


class ReportError(ValueError):
    """A report asked for wrongly; ``param`` names the query parameter at fault."""

    status = 422

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


class NotFound(ReportError):
    """A filter naming a machine, location or product the cloud does not know."""

    status = 404


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
        a = h0 if since is None else max(h0, hour_at(since))
        b = h1 if until is None else min(h1, hour_at(until))
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


class MachinesFirst(Join):
    """``chosen JOIN t``, which SQLite must read machine by machine: written CROSS JOIN (SQLite never reorders
    a CROSS JOIN). Left to choose, SQLite read the time index's range of the whole fleet for each machine: a
    year of one location's hours took 17 s, against 0.1 s."""

    inherit_cache = True


@compiles(MachinesFirst, "sqlite")
def _machines_first(join, compiler, **kw):
    kw.pop("asfrom", None)
    return (join.left._compiler_dispatch(compiler, asfrom=True, **kw) + " CROSS JOIN "
            + join.right._compiler_dispatch(compiler, asfrom=True, **kw) + " ON "
            + join.onclause._compiler_dispatch(compiler, **kw))


def _in_pieces(conn: sa.Connection, t: sa.Table, cut, chosen: list[str] | None, cols: list,
               *where) -> sa.Subquery | None:
    """``cols`` of the rows of ``t`` (a table keyed machine, span, bucket...) in the pieces of a range, for the
    ``chosen`` machines (None: all; empty: None, nothing to read), one SELECT per piece, each reading each
    chosen machine's range of the primary key (machine, span, bucket); for the whole fleet, its range of the
    time index.

    On SQLite the chosen machines are a table of their own (``WITH chosen(m) AS (VALUES ...)``, their ids sent
    once) read first (``MachinesFirst``): given ``machine_id IN (...)``, SQLite read every row of each machine
    (written ``span + 0 = ?`` to keep it off the time index): at 5,000 sales a machine, 100 machines' year took
    39 ms, and 2 ms so. PostgreSQL reads ``machine_id IN (...) AND span = ? AND bucket ...`` by the primary
    key; given the join, it hashed the time index's range of the whole fleet whenever its statistics were
    stale (320 ms against 14 for a location's year by hour at a million sales)."""
    if chosen is not None and not chosen:
        return None
    sqlite = conn.dialect.name == "sqlite"
    v = None if chosen is None or not sqlite else sa.values(sa.column("m", sa.String), name="chosen").data(
        [(m,) for m in chosen]).cte("chosen")
    arms = []
    for span, a, b in cut:
        arm = sa.select(*cols).where(t.c.span == span, t.c.bucket >= a, t.c.bucket < b, *where)
        if v is not None:
            arm = arm.select_from(MachinesFirst(v, t, t.c.machine_id == v.c.m))
        elif chosen is not None:
            arm = arm.where(t.c.machine_id.in_(chosen))
        arms.append(arm)
    return (sa.union_all(*arms) if len(arms) > 1 else arms[0]).subquery()


def _summed(conn: sa.Connection, u: sa.Subquery | None) -> list[tuple]:
    """(k, currency, *FIGURES) of ``_in_pieces``' rows summed by key and currency."""
    if u is None:
        return []
    stmt = sa.select(u.c.k, u.c.currency, *_sums(u)).group_by(u.c.k, u.c.currency)
    return [(k, c, *map(int, figures)) for k, c, *figures in conn.execute(stmt)]


def _machine_filter(q: Filter, table, stmt, machines: list[str] | None = None):
    machines = q.machines if machines is None else machines
    if machines is not None:
        stmt = stmt.where(table.c.machine_id.in_(machines) if machines else sa.false())
    if q.product is not None:
        stmt = stmt.where(table.c.product_id == q.product)
    return stmt


def _sums(t):
    return [sa.func.sum(t.c[f]) for f in FIGURES]


def _arms(t: sa.Table, key: str, cut, chosen: list[str] | None = None, product: int | None = None) -> list:
    """One SELECT of (key as k, currency, *FIGURES[, machine as m]) per piece of the range, so that each reads
    one range of a key ending in (span, bucket): an OR of the pieces after ``product_id = ?`` left SQLite
    reading every row the product ever had. The machines are chosen once, outside (``_read``): a list of
    them in every piece could pass SQLite's limit of parameters."""
    out = []
    for span, a, b in cut:
        cols = [t.c[key].label("k"), t.c.currency, *(t.c[f] for f in FIGURES)]
        if chosen is not None:
            cols.append(t.c.machine_id.label("m"))
        s = sa.select(*cols).where(t.c.span == span, t.c.bucket >= a, t.c.bucket < b)
        out.append(s if product is None else s.where(t.c.product_id == product))
    return out


def _some_machines(conn: sa.Connection, key: str, cut, chosen: list[str]) -> list[tuple]:
    """(k, currency, *FIGURES) of the ``chosen`` machines over the pieces, from the per-machine rollup."""
    t = sales_machine_rollup
    return _summed(conn, _in_pieces(conn, t, cut, chosen, [t.c[key].label("k"), t.c.currency,
                                                      *(t.c[f] for f in FIGURES)]))


def _pending_arm(key: str, h0: int, h1: int, product: int | None) -> sa.Select:
    """The per-product fleet deltas not yet folded, in [h0, h1): ``key`` is ``hour`` or ``product_id``."""
    p = sales_fleet_products_pending
    s = sa.select(p.c[key].label("k"), p.c.currency, *(p.c[f] for f in FIGURES)).where(p.c.hour >= h0, p.c.hour < h1)
    return s if product is None else s.where(p.c.product_id == product)


def _read(conn: sa.Connection, arms: list, chosen: list[str] | None = None) -> list[tuple]:
    """(k, currency, *FIGURES) summed over the arms, for the ``chosen`` machines (None: all)."""
    u = sa.union_all(*arms).subquery()
    stmt = sa.select(u.c.k, u.c.currency, *_sums(u)).group_by(u.c.k, u.c.currency)
    if chosen is not None:
        stmt = stmt.where(u.c.m.in_(chosen) if chosen else sa.false())
    return [(k, c, *map(int, figures)) for k, c, *figures in conn.execute(stmt)]


def _hours(conn: sa.Connection, q: Query, chosen: list[str] | None, h0: int, h1: int) -> sa.Subquery | None:
    """(k: a UTC hour, currency, *FIGURES): the rows to sum over [h0, h1), from the fleet totals; for one
    product, the product's fleet hour buckets; for some machines, their hour buckets (per product if for
    one product too). A few rows may share an hour (a fleet hour and its deltas not yet folded)."""
    def hours_of(t, key: str, *where):
        return sa.select(t.c[key].label("k"), t.c.currency, *(t.c[f] for f in FIGURES)).where(
            t.c[key] >= h0, t.c[key] < h1, *where)

    if chosen is None and q.product is None:
        arms = [hours_of(sales_fleet_hourly, "hour"), hours_of(sales_fleet_pending, "hour")]
    elif chosen is None:
        arms = _arms(sales_fleet_products, "bucket", [(1, h0, h1)], product=q.product) + [
            _pending_arm("hour", h0, h1, q.product)]
    else:
        t = sales_machine_rollup if q.product is None else sales_rollup
        cols = [t.c.bucket.label("k"), t.c.currency, *(t.c[f] for f in FIGURES)]
        return _in_pieces(conn, t, [(1, h0, h1)], chosen, cols,
                          *([] if q.product is None else [t.c.product_id == q.product]))
    return sa.union_all(*arms).subquery()


def offsets(tz, h0: int, h1: int) -> list[tuple[int, int, int]]:
    """[h0, h1) as (first hour, end, minutes east of UTC) stretches in which the zone's offset at the start of
    each hour stays the same: one stretch a year for most zones, three where the clocks change twice."""
    def minutes(hour: int) -> int:
        return int(datetime.fromtimestamp(hour * HOUR_S, tz).utcoffset().total_seconds()) // 60

    out, a, now = [], h0, minutes(h0)
    while a < h1:
        b = a  # the last hour known to be at ``now``; look a day on, then find the change within the day
        while b + 24 < h1 and minutes(b + 24) == now:
            b += 24
        lo, hi = b, min(b + 24, h1)  # minutes(lo) == now; a change, if any, is at an hour in (lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if minutes(mid) == now else (lo, mid)
        if hi >= h1 or minutes(hi) == now:
            out.append((a, h1, now))
            break
        out.append((a, hi, now))
        a, now = hi, minutes(hi)
    return out


def _hourly(conn: sa.Connection, q: Query) -> list[tuple]:
    """(local day as days since 1970-01-01, or local hour of day, currency, *FIGURES) over the range, as
    ``q.by`` asks: SQL sums the hours into local days or hours of the day, a stretch of one offset at a time
    (each hour counts in the local day and hour in which it begins)."""
    out = []
    for chosen, h0, h1 in q.parts:
        for a, b, minutes in offsets(q.tz, h0, h1):
            s = _hours(conn, q, chosen, a, b)
            if s is None:  # no machine to read
                continue
            local = s.c.k * 60 + minutes  # minutes since 1970 on the local clock
            key = (local // 1440) if q.by == "day" else (local // 60) % 24
            stmt = sa.select(key.label("key"), s.c.currency, *_sums(s)).group_by(key, s.c.currency)
            out += [(k, c, *map(int, figures)) for k, c, *figures in conn.execute(stmt)]
    return out


def _by_dimension(conn: sa.Connection, q: Query, column: str, parts=None) -> list[tuple]:
    """(machine_id or product_id, currency, *FIGURES) over the parts of the range (the query's unless
    given), from the fewest whole buckets of the smallest rollup that has the key and the filters."""
    r = sales_rollup
    out = []
    for chosen, h0, h1 in q.parts if parts is None else parts:
        cut = pieces(h0, h1)
        if not cut:
            continue
        if column == "machine_id" and q.product is None:
            out += (_read(conn, _arms(sales_machine_rollup, column, cut)) if chosen is None
                    else _some_machines(conn, column, cut, chosen))
        elif column == "product_id" and chosen is None:
            out += _read(conn, _arms(sales_fleet_products, column, cut, product=q.product)
                         + [_pending_arm(column, h0, h1, q.product)])
        elif q.product is not None:
            out += _read(conn, _arms(r, column, cut, chosen, q.product), chosen)
        else:  # by product, for some machines
            out += _summed(conn, _in_pieces(conn, r, cut, chosen, [r.c[column].label("k"), r.c.currency,
                                                             *(r.c[f] for f in FIGURES)]))
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
        for key, currency, *figures in _hourly(conn, q):
            add((EPOCH + timedelta(days=key)).isoformat() if q.by == "day" else key, currency, figures)
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
    {machine id: {(day, currency): [count, net]}}, from the per-machine rollup's day and hour buckets (each
    local day cut into whole buckets of its own, so every bucket falls in one day). ``count`` is the items
    sold; ``net`` the amount sold less the refunds booked that day, as in every report (the refunds booked
    since the last ``count_refunds`` are not in it yet)."""
    z = zone(tz)
    first = today - timedelta(days=days - 1)
    day_of: dict[tuple[int, int], date] = {}
    cut: list[tuple[int, int, int]] = []
    for i in range(days):
        d = first + timedelta(days=i)
        for span, a, b in pieces(first_hour(d, z), first_hour(d + timedelta(days=1), z), SPANS[1:]):
            day_of.update({(span, h): d for h in range(a, b, span)})
            if cut and cut[-1][0] == span and cut[-1][2] == a:  # one range for the hours of days in a row
                cut[-1] = (span, cut[-1][1], b)
            else:
                cut.append((span, a, b))
    t = sales_machine_rollup
    u = _in_pieces(conn, t, cut, machine_ids, [t.c.machine_id, t.c.span, t.c.bucket, t.c.currency, t.c.count,
                                               t.c.amount, t.c.refunds])
    if u is None:  # no machine asked for
        return {}
    out: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for machine_id, span, bucket, currency, count, amount, refunds in conn.execute(sa.select(u)):
        cell = out[machine_id][(day_of[(span, bucket)], currency)]
        cell[0] += int(count)
        cell[1] += int(amount) - int(refunds)
    return {m: dict(cells) for m, cells in out.items()}
