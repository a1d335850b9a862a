"""Locations: the places machines stand (a name in each language, an address, coordinates, a time zone),
which machine is where, and where each one stood when.

A location is what a settlement with a site owner is about, and what a technician's route visits; a
machine stands at one location at a time, or at none while it is in the warehouse. ``machine_locations``
is where each machine stands now; ``machine_placements`` keeps every stay, [valid_from, valid_to), so a
settlement counts each sale at the place the machine stood when it sold. A machine's first stay has no
``valid_from``: it stood nowhere else before, and its earlier sales (a history brought in) count there.

A location's ``name`` is its name in the default language (English); ``location_names`` holds it in any
other language, one row per language code, so a third language is rows, not columns. A page shows the
name in its language and falls back to ``name``.
"""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata
from cloud.fleet import machines
from cloud.fleet.machines import FleetError, get as get_machine, in_service

locations = sa.Table(
    "locations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(80), nullable=False, unique=True),
    sa.Column("address", sa.String(200), nullable=False, server_default=""),
    # WGS 84 degrees; both or neither.
    sa.Column("latitude", sa.Float, nullable=True),
    sa.Column("longitude", sa.Float, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The IANA zone the place keeps its days in (its pages show local times in it).
    sa.Column("tz", sa.String(64), nullable=False, server_default="UTC"),
)

location_names = sa.Table(
    "location_names", metadata,
    sa.Column("location_id", sa.Integer, sa.ForeignKey("locations.id"), primary_key=True),
    sa.Column("lang", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(80), nullable=False),
)

machine_placements = sa.Table(
    "machine_placements", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), nullable=False),
    sa.Column("location_id", sa.Integer, sa.ForeignKey("locations.id"), nullable=False, index=True),
    sa.Column("valid_from", UTCDateTime, nullable=True),  # none: the machine's first stay, from its beginning
    sa.Column("valid_to", UTCDateTime, nullable=True),  # none: it stands there now
    sa.Column("placed_at", UTCDateTime, nullable=False),  # when the move was recorded
    sa.Index("placements_of_machine", "machine_id", "valid_to"),
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
        raise FleetError("{field} must be a number of degrees, got {value!r}", field=name, value=value)
    if not -limit <= value <= limit:
        raise FleetError("{field} {value} is out of range: it must be between {low:g} and {high:g} degrees",
                         field=name, value=value, low=-limit, high=limit)
    return float(value)


DEFAULT_LANGUAGE = "en"
LANG_CODE_LEN = 16


def check_tz(tz) -> str:
    """An IANA time zone name, checked; FleetError naming ``tz`` otherwise."""
    if not isinstance(tz, str) or not tz.strip() or len(tz) > 64:
        raise FleetError("tz must be a time zone name like Asia/Shanghai")
    try:
        ZoneInfo(tz.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise FleetError("tz {tz!r} is not a time zone we know (write it like Asia/Shanghai)", tz=tz) from None
    return tz.strip()


def check_names(names) -> dict[str, str]:
    """{language code: name} for the languages other than the default one; an empty name drops that
    language. FleetError naming the language that is wrong."""
    if names is None:
        return {}
    if not isinstance(names, dict):
        raise FleetError("names must be an object like {example}", example='{"zh-CN": "..."}')
    out = {}
    for lang, text in names.items():
        if not isinstance(lang, str) or not 2 <= len(lang) <= LANG_CODE_LEN or \
                not all(c.isalnum() or c == "-" for c in lang):
            raise FleetError("names: {lang!r} is not a language code like zh-CN", lang=lang)
        if text is None:
            text = ""
        if not isinstance(text, str) or len(text.strip()) > 80:
            raise FleetError("names.{lang} must be text of at most 80 characters", lang=lang)
        out[lang] = text.strip()
    return out


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


def add(conn: sa.Connection, name, address="", latitude=None, longitude=None, *, now: datetime,
        tz="UTC", names=None) -> int:
    """Create a location and return its id."""
    values = check(name, address, latitude, longitude)
    values["tz"] = check_tz(tz)
    names = check_names(names)
    if conn.execute(sa.select(locations.c.id).where(locations.c.name == values["name"])).first():
        raise FleetError("a location named {name!r} exists already", name=values["name"])
    location_id = conn.execute(locations.insert().values(created_at=now, **values)).inserted_primary_key[0]
    _write_names(conn, location_id, names)
    return location_id


EDITABLE = ("name", "address", "latitude", "longitude", "tz", "names")


def edit(conn: sa.Connection, location_id, changes: dict) -> dict:
    """Change some of a location's fields (``EDITABLE``; coordinates both or neither); returns {field: [old,
    new]} of what changed. FleetError naming the field; nothing is written unless all of it is right."""
    row = get(conn, location_id)
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise FleetError("unknown field {field!r}: a location has {fields}", field=unknown[0], fields=", ".join(EDITABLE))
    if ("latitude" in changes) != ("longitude" in changes):
        raise FleetError("latitude and longitude go together: give both (null and null: no coordinates)")
    old = public(row, names=names_of(conn, location_id))
    merged = {k: changes.get(k, old[k]) for k in ("name", "address", "latitude", "longitude")}
    values = check(merged["name"], merged["address"], merged["latitude"], merged["longitude"])
    values["tz"] = check_tz(changes.get("tz", old["tz"]))
    names = {**old["names"], **check_names(changes.get("names"))}
    if values["name"] != row.name and conn.execute(sa.select(locations.c.id).where(
            locations.c.name == values["name"], locations.c.id != location_id)).first():
        raise FleetError("a location named {name!r} exists already", name=values["name"])
    conn.execute(locations.update().where(locations.c.id == location_id).values(**values))
    _write_names(conn, location_id, names)
    new = public(get(conn, location_id), names=names_of(conn, location_id))
    return {k: [old[k], new[k]] for k in EDITABLE if old[k] != new[k]}


def _write_names(conn: sa.Connection, location_id: int, names: dict[str, str]) -> None:
    conn.execute(location_names.delete().where(location_names.c.location_id == location_id))
    rows = [{"location_id": location_id, "lang": lang, "name": text} for lang, text in sorted(names.items())
            if text and lang != DEFAULT_LANGUAGE]
    if rows:
        conn.execute(location_names.insert(), rows)


def names_of(conn: sa.Connection, location_id: int) -> dict[str, str]:
    """A location's names in languages other than the default one: {language code: name}."""
    return dict(conn.execute(sa.select(location_names.c.lang, location_names.c.name)
                             .where(location_names.c.location_id == location_id)).all())


def all_names(conn: sa.Connection) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for location_id, lang, text in conn.execute(sa.select(location_names)):
        out.setdefault(location_id, {})[lang] = text
    return out


def name_in(loc: dict, lang: str) -> str:
    """A location's name (``public`` dict) in a page's language: its own name there, else the default one."""
    names = loc.get("names") or {}
    return names.get(lang) or names.get(lang.split("-")[0]) or loc["name"]


def get(conn: sa.Connection, location_id) -> sa.Row:
    if isinstance(location_id, bool) or not isinstance(location_id, int):
        raise FleetError("location_id must be a whole number, got {value!r}", value=location_id)
    row = conn.execute(sa.select(locations).where(locations.c.id == location_id)).first()
    if row is None:
        raise NoSuchLocation("no location {id}", id=location_id)
    return row


def public(row, machine_ids: list[str] | None = None, names: dict[str, str] | None = None) -> dict:
    out = {"id": row.id, "name": row.name, "names": names or {}, "address": row.address,
           "latitude": row.latitude, "longitude": row.longitude, "tz": row.tz,
           "created_at": row.created_at.isoformat()}
    if machine_ids is not None:
        out["machines"] = machine_ids
    return out


def list_locations(conn: sa.Connection) -> list[dict]:
    """Every location with the ids of the machines at it, by name."""
    at: dict[int, list[str]] = {}
    for machine_id, location_id in conn.execute(sa.select(machine_locations.c.machine_id, machine_locations.c.location_id)
                                                .order_by(machine_locations.c.machine_id)):
        at.setdefault(location_id, []).append(machine_id)
    names = all_names(conn)
    return [public(r, at.get(r.id, []), names.get(r.id)) for r in
            conn.execute(sa.select(locations).order_by(locations.c.name))]


def place(conn: sa.Connection, machine_id: str, location_id: int | None, now: datetime) -> int | None:
    """Put a machine at a location (None: at none), closing its stay where it was and opening one at the new
    place in ``machine_placements``; return the location it was at before. A retired machine is not moved
    (``machines.Retired``); a location that does not exist is NoSuchLocation; neither writes anything."""
    in_service(conn, machine_id)
    before = location_of(conn, machine_id)
    if location_id is not None:
        get(conn, location_id)
    if before == location_id:
        return before
    _leave(conn, machine_id, now)
    if location_id is not None:
        p = machine_placements
        stayed_before = conn.execute(sa.select(p.c.id).where(p.c.machine_id == machine_id).limit(1)).first()
        conn.execute(machine_locations.insert().values(machine_id=machine_id, location_id=location_id, since=now))
        conn.execute(p.insert().values(machine_id=machine_id, location_id=location_id,
                                       valid_from=now if stayed_before else None, valid_to=None, placed_at=now))
    return before


def _leave(conn: sa.Connection, machine_id: str, now: datetime) -> None:
    """End the machine's stay where it is now (if anywhere)."""
    conn.execute(machine_locations.delete().where(machine_locations.c.machine_id == machine_id))
    p = machine_placements
    conn.execute(p.update().where(p.c.machine_id == machine_id, p.c.valid_to.is_(None)).values(valid_to=now))


def retire(conn: sa.Connection, machine_id: str, now: datetime) -> int | None:
    """Retire a machine (``machines.retire``) and end its stay where it stood; the location it left."""
    get_machine(conn, machine_id)
    before = location_of(conn, machine_id)
    machines.retire(conn, machine_id, now)
    _leave(conn, machine_id, now)
    return before


def history(conn: sa.Connection, machine_id: str | None = None, location_id: int | None = None) -> list[dict]:
    """Stays of a machine or at a location, newest first: {machine_id, location_id, location, from, to}."""
    p = machine_placements
    q = sa.select(p, locations.c.name).join(locations, locations.c.id == p.c.location_id) \
        .order_by(p.c.placed_at.desc(), p.c.id.desc())
    if machine_id is not None:
        q = q.where(p.c.machine_id == machine_id)
    if location_id is not None:
        q = q.where(p.c.location_id == location_id)
    return [{"machine_id": r.machine_id, "location_id": r.location_id, "location": r.name,
             "from": r.valid_from.isoformat() if r.valid_from else None,
             "to": r.valid_to.isoformat() if r.valid_to else None} for r in conn.execute(q)]


def stays_at(conn: sa.Connection, location_id: int) -> list:
    """Every stay of a machine at the location: rows of (machine_id, valid_from, valid_to)."""
    p = machine_placements
    return conn.execute(sa.select(p.c.machine_id, p.c.valid_from, p.c.valid_to)
                        .where(p.c.location_id == location_id)).all()


def location_of(conn: sa.Connection, machine_id: str) -> int | None:
    return conn.execute(sa.select(machine_locations.c.location_id)
                        .where(machine_locations.c.machine_id == machine_id)).scalar()


def zones(conn: sa.Connection) -> dict[str, str]:
    """{machine id: its location's time zone} of every machine that stands somewhere."""
    return dict(conn.execute(sa.select(machine_locations.c.machine_id, locations.c.tz)
                             .join(locations, locations.c.id == machine_locations.c.location_id)).all())


def by_machine(conn: sa.Connection) -> dict[str, dict]:
    """{machine id: {id, name}} of every machine that stands somewhere."""
    rows = conn.execute(sa.select(machine_locations.c.machine_id, locations.c.id, locations.c.name)
                        .join(locations, locations.c.id == machine_locations.c.location_id))
    return {r.machine_id: {"id": r.id, "name": r.name} for r in rows}
