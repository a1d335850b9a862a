"""Routes (an ordered list of machines a technician visits), pick lists, and low-stock and expiry alerts.

A pick list asks, for every slot, par level minus what the machine's ledger says is in it (the cloud's
projected slot count), and gives what the warehouse can cover: lots first-expiring first (FEFO), lots
already expired never, machines in route order, so a short product runs out at the end of the route.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa

from cloud.fleet import machines
from cloud.core.db import UTCDateTime, metadata
from cloud.stock import book
from cloud.stock.purchasing import due_by_product
from cloud.catalog.products import list_products
from cloud.catalog.common import StockError, text

MAX_STOPS = 200

routes = sa.Table(
    "routes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(80), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The days of the week the route is driven, ISO numbers (1 Monday .. 7 Sunday) in order: "135".
    sa.Column("weekdays", sa.String(7), nullable=False, server_default="1234567"),
)

route_stops = sa.Table(
    "route_stops", metadata,
    sa.Column("route_id", sa.Integer, sa.ForeignKey("routes.id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), nullable=False),
    sa.UniqueConstraint("route_id", "machine_id", name="a_machine_once_per_route"),
)


def par_levels(conn: sa.Connection, machine_id: str) -> dict[str, int]:
    """Each slot's par level, from the newest planogram: how many it should hold after a visit. Slots the
    planogram left out are not filled."""
    return {r.slot: r.par_level for r in machines.menu(conn, machine_id)}


# -- routes ------------------------------------------------------------------------------------------

ALL_WEEK = "1234567"


def weekdays_of(value) -> str:
    """Days of the week as "135" (ISO: 1 Monday .. 7 Sunday), from that text or a list of numbers."""
    if isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        value = "".join(str(d) for d in value)
    if not isinstance(value, str) or not value or any(c not in ALL_WEEK for c in value):
        raise StockError("weekdays", "give the days the route is driven as numbers 1 (Monday) to 7 (Sunday), "
                                     "like 135 or [1, 3, 5]")
    return "".join(sorted(set(value)))


def _machine_ids(conn: sa.Connection, machine_ids) -> list[str]:
    if not isinstance(machine_ids, list) or not 1 <= len(machine_ids) <= MAX_STOPS:
        raise StockError("machines", f"give 1 to {MAX_STOPS} machine ids, in visiting order")
    seen = set()
    for i, machine_id in enumerate(machine_ids):
        if not isinstance(machine_id, str):
            raise StockError(f"machines.{i}", "must be a machine id")
        try:
            machines.in_service(conn, machine_id)
        except machines.Retired as e:
            raise StockError(f"machines.{i}", str(e), 409) from None
        except machines.FleetError:
            raise StockError(f"machines.{i}", f"no machine {machine_id!r}", 404) from None
        if machine_id in seen:
            raise StockError(f"machines.{i}", f"{machine_id} is on the route already")
        seen.add(machine_id)
    return machine_ids


def add_route(conn: sa.Connection, name, machine_ids, now: datetime, weekdays=ALL_WEEK) -> int:
    name = text(name, "name", 80, 1)
    machine_ids = _machine_ids(conn, machine_ids)
    weekdays = weekdays_of(weekdays)
    if conn.execute(sa.select(routes.c.id).where(routes.c.name == name)).first() is not None:
        raise StockError("name", f"a route named {name!r} exists already", 409)
    route_id = conn.execute(routes.insert().values(name=name, created_at=now, weekdays=weekdays)).inserted_primary_key[0]
    conn.execute(route_stops.insert(), [dict(route_id=route_id, position=i, machine_id=m)
                                        for i, m in enumerate(machine_ids)])
    return route_id


def change_route(conn: sa.Connection, route_id: int, name=None, machine_ids=None, weekdays=None) -> dict:
    """Rename a route, give it a new list of stops or new days; {field: [old, new]} of what changed. Every
    field is checked before anything is written."""
    old = get_route(conn, route_id)
    if machine_ids is not None:
        machine_ids = _machine_ids(conn, machine_ids)
    diff = {}
    if weekdays is not None:
        weekdays = weekdays_of(weekdays)
        if weekdays != old["weekdays"]:
            conn.execute(routes.update().where(routes.c.id == route_id).values(weekdays=weekdays))
            diff["weekdays"] = [old["weekdays"], weekdays]
    if name is not None:
        name = text(name, "name", 80, 1)
        if name != old["name"]:
            if conn.execute(sa.select(routes.c.id).where(routes.c.name == name, routes.c.id != route_id)).first():
                raise StockError("name", f"a route named {name!r} exists already", 409)
            conn.execute(routes.update().where(routes.c.id == route_id).values(name=name))
            diff["name"] = [old["name"], name]
    if machine_ids is not None:
        if machine_ids != old["machines"]:
            conn.execute(route_stops.delete().where(route_stops.c.route_id == route_id))
            conn.execute(route_stops.insert(), [dict(route_id=route_id, position=i, machine_id=m)
                                                for i, m in enumerate(machine_ids)])
            diff["machines"] = [old["machines"], machine_ids]
    return diff


def get_route(conn: sa.Connection, route_id) -> dict:
    if not isinstance(route_id, int) or isinstance(route_id, bool):
        raise StockError("id", "must be a whole number")
    row = conn.execute(sa.select(routes).where(routes.c.id == route_id)).first()
    if row is None:
        raise StockError("id", f"no route {route_id}", 404)
    stops = conn.execute(sa.select(route_stops.c.machine_id).where(route_stops.c.route_id == route_id)
                         .order_by(route_stops.c.position)).scalars().all()
    return {"id": row.id, "name": row.name, "machines": list(stops), "weekdays": row.weekdays,
            "created_at": row.created_at.isoformat()}


def list_routes(conn: sa.Connection) -> list[dict]:
    return [get_route(conn, r) for r in conn.execute(sa.select(routes.c.id).order_by(routes.c.name)).scalars()]


def day_routes(conn: sa.Connection, day: date, lang: str | None = None) -> list[dict]:
    """The routes driven on ``day`` (by their weekdays), each with its stops in order: machine id, name (in
    ``lang`` where it has one), whether it is retired (left on the route, but not visited for stock)."""
    names = {m.id: m for m in machines.list_machines(conn, lang)}
    out = []
    for route in list_routes(conn):
        if str(day.isoweekday()) not in route["weekdays"]:
            continue
        stops = [{"position": i + 1, "machine_id": m, "name": names[m].name if m in names else m,
                  "retired": m in names and names[m].retired_at is not None} for i, m in enumerate(route["machines"])]
        out.append({**route, "day": day.isoformat(), "stops": stops})
    return out


# -- pick lists --------------------------------------------------------------------------------------

def pick_list(conn: sa.Connection, machine_ids: list[str], today: date) -> dict:
    """What to load for each slot of each machine, in the order given, and the totals to take from the
    warehouse, lot by lot. Machines must exist (StockError 404 otherwise)."""
    menus = {}
    for machine_id in machine_ids:
        try:
            machines.get(conn, machine_id)
        except machines.FleetError:
            raise StockError("machine_id", f"no machine {machine_id!r}", 404) from None
        menus[machine_id] = (machines.menu(conn, machine_id), par_levels(conn, machine_id))
    wanted = {r.product_id for menu, _ in menus.values() for r in menu}
    left: dict[int, list[list]] = {}
    expired: dict[int, int] = {}
    for lot in book.lots_on_hand(conn, wanted):
        if lot.expires_on is None or lot.expires_on >= today:
            left.setdefault(lot.product_id, []).append([lot, lot.quantity])
        else:
            expired[lot.product_id] = expired.get(lot.product_id, 0) + lot.quantity
    for product_lots in left.values():
        product_lots.sort(key=lambda item: book.fefo_key(item[0]))
    stops, totals = [], {}
    for machine_id in machine_ids:
        menu, par = menus[machine_id]
        lines = []
        for r in menu:
            need = max(par.get(r.slot, r.capacity) - r.count, 0)
            picked = []
            still = need
            for item in left.get(r.product_id, []):
                if still == 0:
                    break
                take = min(still, item[1])
                if take:
                    item[1] -= take
                    still -= take
                    picked.append({"lot_id": item[0].lot_id, "expires_on": _iso(item[0].expires_on), "quantity": take})
            pick = need - still
            lines.append({"slot": r.slot, "product_id": r.product_id, "sku": r.sku, "name": r.name,
                          "par": par.get(r.slot, r.capacity), "count": r.count, "need": need, "pick": pick,
                          "short": still, "flagged": r.flagged, "lots": picked})
            total = totals.setdefault(r.product_id, {"product_id": r.product_id, "sku": r.sku, "name": r.name,
                                                     "need": 0, "pick": 0, "short": 0, "lots": {},
                                                     "expired": expired.get(r.product_id, 0)})
            total["need"] += need
            total["pick"] += pick
            total["short"] += still
            for p in picked:
                lot = total["lots"].setdefault(p["lot_id"], {**p, "quantity": 0})
                lot["quantity"] += p["quantity"]
        stops.append({"machine_id": machine_id, "lines": lines, "pick": sum(line["pick"] for line in lines)})
    products_ = sorted(totals.values(), key=lambda t: t["sku"])
    for t in products_:
        t["lots"] = list(t["lots"].values())
    return {"date": today.isoformat(), "machines": stops, "products": products_,
            "pick": sum(t["pick"] for t in products_), "short": sum(t["short"] for t in products_)}


def route_pick_list(conn: sa.Connection, route_id: int, today: date) -> dict:
    """The pick list of a route's machines in visiting order; a retired one is left off (nothing to load)."""
    route = get_route(conn, route_id)
    retired = {m.id for m in machines.list_machines(conn) if m.retired_at is not None}
    return {"route": route, **pick_list(conn, [m for m in route["machines"] if m not in retired], today)}


# -- alerts ------------------------------------------------------------------------------------------

def alerts(conn: sa.Connection, today: date, slot_fraction: float = 0.25, expiry_days: int = 7) -> dict:
    """Slots of the machines in service holding less than ``slot_fraction`` of their par level; described
    products under their
    reorder level in the warehouse (with what is on order); lots with stock that expire within
    ``expiry_days`` (or have expired)."""
    if not isinstance(slot_fraction, (int, float)) or isinstance(slot_fraction, bool) or not 0 < slot_fraction <= 1:
        raise StockError("slot_fraction", "must be more than 0 and at most 1")
    if not isinstance(expiry_days, int) or isinstance(expiry_days, bool) or not 0 <= expiry_days <= 3650:
        raise StockError("expiry_days", "must be a whole number of days from 0 to 3650")
    low_slots = []
    low = machines.menus(conn, below=slot_fraction)  # one query for the fleet, not two per machine
    for m in machines.list_machines(conn):
        if m.retired_at is not None:  # sells no more: nothing to fill
            continue
        low_slots += [{"machine_id": m.id, "slot": r.slot, "product_id": r.product_id, "sku": r.sku, "name": r.name,
                       "count": r.count, "par": r.par_level} for r in low.get(m.id, [])]
    stock = {row["product_id"]: row for row in book.warehouse(conn, today)}
    due = due_by_product(conn)
    low_warehouse = [{"product_id": p.id, "sku": p.sku, "name": p.name, "quantity": stock[p.id]["quantity"],
                      "reorder_level": p.reorder_level, "on_order": due.get(p.id, 0)}
                     for p in list_products(conn) if p.id in stock and stock[p.id]["quantity"] < p.reorder_level]
    names = {p.id: p for p in list_products(conn)}
    horizon = today + timedelta(days=expiry_days)
    expiring = [{"lot_id": lot.lot_id, "product_id": lot.product_id, "sku": names[lot.product_id].sku,
                 "name": names[lot.product_id].name, "quantity": lot.quantity, "expires_on": _iso(lot.expires_on),
                 "days_left": (lot.expires_on - today).days}
                for lot in book.lots_on_hand(conn) if lot.expires_on is not None and lot.expires_on <= horizon]
    expiring.sort(key=lambda e: (e["expires_on"], e["lot_id"]))
    return {"date": today.isoformat(), "slot_fraction": slot_fraction, "expiry_days": expiry_days,
            "low_slots": low_slots, "low_warehouse": low_warehouse, "expiring": expiring}


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d is not None else None
