"""Locations: the places machines stand (a name, an address, coordinates), and which machine is where.

A location is what a settlement with a site owner is about, and what a technician's route visits; a
machine stands at one location at a time, or at none while it is in the warehouse.
"""

from __future__ import annotations

import math
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata
from cloud.fleet.machines import FleetError, get as get_machine

locations = sa.Table(
    "locations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(80), nullable=False, unique=True),
    sa.Column("address", sa.String(200), nullable=False, server_default=""),
    # WGS 84 degrees; both or neither.
    sa.Column("latitude", sa.Float, nullable=True),
    sa.Column("longitude", sa.Float, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

machine_locations = sa.Table(
    "machine_locations", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("location_id", sa.Integer, sa.ForeignKey("locations.id"), nullable=False, index=True),
    sa.Column("since", UTCDateTime, nullable=False),
)


class NoSuchLocation(FleetError):
    """A location id the cloud does not know."""


def _coordinate(value, name: str, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FleetError(f"{name} must be a number of degrees, got {value!r}")
    if not -limit <= value <= limit:
        raise FleetError(f"{name} {value} is out of range: it must be between {-limit:g} and {limit:g} degrees")
    return float(value)


def check(name, address="", latitude=None, longitude=None) -> dict:
    """The columns of a location from what a person gave; FleetError naming the field that is wrong."""
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 80:
        raise FleetError("name must be 1-80 characters")
    if not isinstance(address, str) or len(address) > 200:
        raise FleetError("address must be text of at most 200 characters")
    if (latitude is None) != (longitude is None):
        raise FleetError("latitude and longitude go together: give both or neither")
    values = {"name": name.strip(), "address": address.strip(), "latitude": None, "longitude": None}
    if latitude is not None:
        values.update(latitude=_coordinate(latitude, "latitude", 90), longitude=_coordinate(longitude, "longitude", 180))
    return values


def add(conn: sa.Connection, name, address="", latitude=None, longitude=None, *, now: datetime) -> int:
    """Create a location and return its id."""
    values = check(name, address, latitude, longitude)
    if conn.execute(sa.select(locations.c.id).where(locations.c.name == values["name"])).first():
        raise FleetError(f"a location named {values['name']!r} exists already")
    return conn.execute(locations.insert().values(created_at=now, **values)).inserted_primary_key[0]


def get(conn: sa.Connection, location_id) -> sa.Row:
    if isinstance(location_id, bool) or not isinstance(location_id, int):
        raise FleetError(f"location_id must be a whole number, got {location_id!r}")
    row = conn.execute(sa.select(locations).where(locations.c.id == location_id)).first()
    if row is None:
        raise NoSuchLocation(f"no location {location_id}")
    return row


def public(row, machine_ids: list[str] | None = None) -> dict:
    out = {"id": row.id, "name": row.name, "address": row.address, "latitude": row.latitude,
           "longitude": row.longitude, "created_at": row.created_at.isoformat()}
    if machine_ids is not None:
        out["machines"] = machine_ids
    return out


def list_locations(conn: sa.Connection) -> list[dict]:
    """Every location with the ids of the machines at it, by name."""
    at: dict[int, list[str]] = {}
    for machine_id, location_id in conn.execute(sa.select(machine_locations.c.machine_id, machine_locations.c.location_id)
                                                .order_by(machine_locations.c.machine_id)):
        at.setdefault(location_id, []).append(machine_id)
    return [public(r, at.get(r.id, [])) for r in conn.execute(sa.select(locations).order_by(locations.c.name))]


def place(conn: sa.Connection, machine_id: str, location_id: int | None, now: datetime) -> int | None:
    """Put a machine at a location (None: at none); return the location it was at before."""
    get_machine(conn, machine_id)
    before = location_of(conn, machine_id)
    if location_id is not None:
        get(conn, location_id)
    if before == location_id:
        return before
    conn.execute(machine_locations.delete().where(machine_locations.c.machine_id == machine_id))
    if location_id is not None:
        conn.execute(machine_locations.insert().values(machine_id=machine_id, location_id=location_id, since=now))
    return before


def location_of(conn: sa.Connection, machine_id: str) -> int | None:
    return conn.execute(sa.select(machine_locations.c.location_id)
                        .where(machine_locations.c.machine_id == machine_id)).scalar()


def by_machine(conn: sa.Connection) -> dict[str, dict]:
    """{machine id: {id, name}} of every machine that stands somewhere."""
    rows = conn.execute(sa.select(machine_locations.c.machine_id, locations.c.id, locations.c.name)
                        .join(locations, locations.c.id == machine_locations.c.location_id))
    return {r.machine_id: {"id": r.id, "name": r.name} for r in rows}
