"""Planograms: what each slot of a machine holds, at what price, how many it takes and how full a visit
leaves it (the par level), edited in the cloud as numbered versions and sent to the machine as its config.

A version is made whole and never changed afterwards: ``create`` checks every slot, writes the version,
moves the machine's desired version up by one and puts the slots in the ``slots`` table the menu sells
from. The cloud publishes the version as a ``Config`` message, retained, on the machine's ``config``
topic; the machine applies it when no vend is running and writes ``config.applied`` to its ledger. The
ingest calls ``project`` with every batch, so what the cloud shows as applied is what the machine's ledger
says, never what the cloud hoped: a version is *pending* until then, or *rejected* if the machine refused it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa

from protocol import ProtocolError
from protocol.messages import (CURRENCY_RE, MAX_CAPACITY, MAX_CONFIG_SLOTS, MAX_PRICE, SLOT_RE, Config, ConfigSlot,
                               parse_time)

from cloud.core.db import UTCDateTime, metadata, utcnow
from cloud.fleet.machines import FleetError, NoSuchMachine, SlotSpec, cabinets, get, machines, products, write_slots

log = logging.getLogger(__name__)

planograms = sa.Table(
    "planograms", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.Integer, sa.ForeignKey("staff.id"), nullable=True),
    sa.Column("note", sa.String(200), nullable=False, server_default=""),
)

planogram_slots = sa.Table(
    "planogram_slots", metadata,
    sa.Column("machine_id", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("slot", sa.String(3), primary_key=True),
    sa.Column("cabinet", sa.Integer, nullable=False),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("par_level", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(["machine_id", "version"], ["planograms.machine_id", "planograms.version"],
                            name="slot_of_version"),
    sa.ForeignKeyConstraint(["machine_id", "cabinet"], ["cabinets.machine_id", "cabinets.number"],
                            name="planogram_slot_in_cabinet"),
    sa.CheckConstraint("price >= 0", name="planogram_price_not_negative"),
    sa.CheckConstraint("capacity >= 1", name="planogram_capacity_positive"),
    sa.CheckConstraint("par_level >= 0", name="planogram_par_not_negative"),
    sa.CheckConstraint("par_level <= capacity", name="planogram_par_within_capacity"),
)

# Per machine: the newest version (desired), and what its ledger says it applied or refused.
machine_configs = sa.Table(
    "machine_configs", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("desired", sa.Integer, nullable=False, server_default="0"),
    sa.Column("applied", sa.Integer, nullable=False, server_default="0"),
    sa.Column("applied_at", UTCDateTime, nullable=True),
    sa.Column("rejected", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rejected_reason", sa.String(200), nullable=False, server_default=""),
)

SLOT_KEYS = ("slot", "sku", "price", "currency", "capacity", "par_level", "cabinet")
CONFIG_CMD_PREFIX = "config-"  # the cmd_id a machine gives the command.rejected of a config it refused
MAX_VERSION = 2**31 - 1  # the column's range; a machine claiming more is wrong, and must not stop its ingest


@dataclass(frozen=True)
class PlanogramSlot:
    """One slot of a planogram as an editor gives it; the product by SKU, which must exist."""

    slot: str
    sku: str
    price: int
    currency: str
    capacity: int
    par_level: int
    cabinet: int = 1

    @classmethod
    def from_obj(cls, obj, where: str) -> "PlanogramSlot":
        """Check one slot object; FleetError naming the slot and the field."""
        if not isinstance(obj, dict):
            raise FleetError("{where}: a slot must be an object", where=where)
        unknown = sorted(set(obj) - set(SLOT_KEYS))
        if unknown:
            raise FleetError("{where}: unknown field {field!r} (fields: {fields})", where=where, field=unknown[0],
                             fields=", ".join(SLOT_KEYS))
        slot = obj.get("slot")
        if not isinstance(slot, str) or not SLOT_RE.match(slot):
            raise FleetError("{where}: slot {slot!r} is not a slot code like A1 (a capital letter, 1-2 digits)",
                             where=where, slot=slot)
        where = f"{where} ({slot})"
        values = {"slot": slot}
        for key, default in (("sku", None), ("price", None), ("currency", None), ("capacity", None),
                             ("par_level", None), ("cabinet", 1)):
            value = obj.get(key, default)
            if value is None:
                raise FleetError("{where}: {key} is missing", where=where, key=key)
            want = str if key in ("sku", "currency") else int
            if not isinstance(value, want) or isinstance(value, bool):
                raise FleetError("{where}: {key} must be text, got {value!r}" if want is str else
                                 "{where}: {key} must be a whole number, got {value!r}", where=where, key=key, value=value)
            values[key] = value
        if not 1 <= len(values["sku"]) <= 40:
            raise FleetError("{where}: sku must be 1-40 characters", where=where)
        if not 0 <= values["price"] <= MAX_PRICE:
            raise FleetError("{where}: price must be a whole number of minor units from 0 to {most}, got {value}",
                             where=where, most=MAX_PRICE, value=values["price"])
        if not CURRENCY_RE.match(values["currency"]):
            raise FleetError("{where}: currency {value!r} is not an ISO 4217 code like CNY", where=where,
                             value=values["currency"])
        if not 1 <= values["capacity"] <= MAX_CAPACITY:
            raise FleetError("{where}: capacity must be 1-{most}, got {value}", where=where, most=MAX_CAPACITY,
                             value=values["capacity"])
        if values["par_level"] < 0:
            raise FleetError("{where}: par_level must be 0 or more, got {value}", where=where, value=values["par_level"])
        if values["par_level"] > values["capacity"]:
            raise FleetError("{where}: par_level {value} is above the capacity {capacity}", where=where,
                             value=values["par_level"], capacity=values["capacity"])
        if values["cabinet"] < 1:
            raise FleetError("{where}: cabinet must be 1 or more, got {value}", where=where, value=values["cabinet"])
        return cls(**values)


def parse(body) -> tuple[list[PlanogramSlot], str]:
    """The slots and note of a new version from an API body: ``{"slots": [...], "note": "..."}``."""
    if not isinstance(body, dict):
        raise FleetError("the body must be an object with slots (a list) and an optional note")
    unknown = sorted(set(body) - {"slots", "note"})
    if unknown:
        raise FleetError("unknown field {field!r}: a planogram has slots and note", field=unknown[0])
    raw, note = body.get("slots"), body.get("note", "")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CONFIG_SLOTS:
        raise FleetError("slots must be a list of 1-{most} slot objects", most=MAX_CONFIG_SLOTS)
    if not isinstance(note, str) or len(note) > 200:
        raise FleetError("note must be text of at most 200 characters")
    return [PlanogramSlot.from_obj(s, f"slots[{i}]") for i, s in enumerate(raw)], note.strip()


def _lock_machine(conn: sa.Connection, machine_id: str):
    """The machine's row, locked on PostgreSQL until the transaction ends: two editors saving at once get
    versions n and n+1, never two versions n (SQLite's BEGIN IMMEDIATE already admits one writer)."""
    query = sa.select(machines.c.id).where(machines.c.id == machine_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    if conn.execute(query).first() is None:
        raise NoSuchMachine("no machine {id!r}", id=machine_id)


def create(conn: sa.Connection, machine_id: str, slots: list[PlanogramSlot], now: datetime,
           user_id: int | None = None, note: str = "") -> int:
    """Make the machine's next planogram version from ``slots`` (all checked first: nothing is written if
    one is wrong) and return its number."""
    _lock_machine(conn, machine_id)
    if not 1 <= len(slots) <= MAX_CONFIG_SLOTS:
        raise FleetError("a planogram has 1-{most} slots, got {count}", most=MAX_CONFIG_SLOTS, count=len(slots))
    # Checked again whatever made them: a slot merged from PUT .../slots has been through other checks.
    slots = [PlanogramSlot.from_obj(asdict(s), f"slots[{i}]") for i, s in enumerate(slots)]
    seen: set[str] = set()
    for s in slots:
        if s.slot in seen:
            raise FleetError("slot {slot} appears twice", slot=s.slot)
        seen.add(s.slot)
    skus = sorted({s.sku for s in slots})
    known = {r.sku: r for r in conn.execute(sa.select(products.c.id, products.c.sku, products.c.name)
                                            .where(products.c.sku.in_(skus)))}
    have = set(conn.execute(sa.select(cabinets.c.number).where(cabinets.c.machine_id == machine_id)).scalars())
    for i, s in enumerate(slots):
        if s.sku not in known:
            raise FleetError("slots[{i}] ({slot}): sku {sku!r} is not a known product", i=i, slot=s.slot, sku=s.sku)
        if s.cabinet not in have:
            raise FleetError("slots[{i}] ({slot}): machine {id} has no cabinet {cabinet} (it has {have})", i=i,
                             slot=s.slot, id=machine_id, cabinet=s.cabinet, have=", ".join(map(str, sorted(have))))
    for i, s in enumerate(slots):
        try:
            # The machine checks each slot with this code; what it would refuse is refused here.
            ConfigSlot.from_obj(asdict(ConfigSlot(s.slot, known[s.sku].name, s.price, s.currency, s.capacity,
                                                  s.par_level)), f"slots[{i}]")
        except ProtocolError as e:
            raise FleetError("this planogram would not reach the machine: {problem}", problem=str(e)) from None
    slots = sorted(slots, key=lambda s: s.slot)
    row = conn.execute(sa.select(machine_configs.c.desired).where(machine_configs.c.machine_id == machine_id)).first()
    version = (row.desired if row else 0) + 1
    if row is None:
        conn.execute(machine_configs.insert().values(machine_id=machine_id, desired=version))
    else:
        conn.execute(machine_configs.update().where(machine_configs.c.machine_id == machine_id)
                     .values(desired=version))
    conn.execute(planograms.insert().values(machine_id=machine_id, version=version, created_at=now,
                                            created_by=user_id, note=note))
    rows = [dict(slot=s.slot, cabinet=s.cabinet, product_id=known[s.sku].id, price=s.price, currency=s.currency,
                 capacity=s.capacity, par_level=s.par_level) for s in slots]
    conn.execute(planogram_slots.insert(), [dict(r, machine_id=machine_id, version=version) for r in rows])
    write_slots(conn, machine_id, rows)
    return version


def merge(conn: sa.Connection, machine_id: str, specs: list[SlotSpec], now: datetime,
          user_id: int | None = None) -> int:
    """A new version that is the newest one with ``specs`` changed or added (what ``PUT .../slots`` does);
    a slot keeps its par level (lowered to a smaller capacity) and cabinet unless the spec gives them; a new
    slot's par is its capacity."""
    current = {r.slot: PlanogramSlot(r.slot, r.sku, r.price, r.currency, r.capacity, r.par_level, r.cabinet)
               for r in slots_of(conn, machine_id)}
    for spec in specs:
        old = current.get(spec.slot)
        # A new slot with no par given is filled to capacity on each visit; an old one keeps its own par.
        par = spec.par_level if spec.par_level is not None else (min(old.par_level, spec.capacity) if old
                                                                  else spec.capacity)
        cabinet = spec.cabinet if spec.cabinet is not None else (old.cabinet if old else 1)
        current[spec.slot] = PlanogramSlot(spec.slot, spec.sku, spec.price, spec.currency, spec.capacity, par,
                                           cabinet)
    return create(conn, machine_id, list(current.values()), now, user_id, "slots changed")


def slots_of(conn: sa.Connection, machine_id: str, version: int | None = None) -> list:
    """The slots of one version (the newest by default), with each product's SKU and name, in slot order."""
    if version is None:
        version = desired(conn, machine_id)
    ps = planogram_slots
    return list(conn.execute(
        sa.select(ps.c.slot, ps.c.cabinet, ps.c.price, ps.c.currency, ps.c.capacity, ps.c.par_level,
                  products.c.sku, products.c.name)
        .join(products, products.c.id == ps.c.product_id)
        .where(ps.c.machine_id == machine_id, ps.c.version == version).order_by(ps.c.slot)))


def desired(conn: sa.Connection, machine_id: str) -> int:
    """The machine's newest version; 0 if it has none."""
    return conn.execute(sa.select(machine_configs.c.desired)
                        .where(machine_configs.c.machine_id == machine_id)).scalar() or 0


def versions(conn: sa.Connection, machine_id: str) -> list[dict]:
    """Every version of a machine, newest first: when, by whom, with what note, how many slots."""
    get(conn, machine_id)
    counts = (sa.select(planogram_slots.c.version, sa.func.count().label("slots"))
              .where(planogram_slots.c.machine_id == machine_id).group_by(planogram_slots.c.version).subquery())
    rows = conn.execute(sa.select(planograms, counts.c.slots).join(counts, counts.c.version == planograms.c.version)
                        .where(planograms.c.machine_id == machine_id).order_by(planograms.c.version.desc()))
    return [{"version": r.version, "created_at": r.created_at.isoformat(), "created_by": r.created_by,
             "note": r.note, "slots": r.slots} for r in rows]


def state_of(row) -> str:
    """none, applied, rejected or pending, from a machine_configs row (or None)."""
    if row is None or not row.desired:
        return "none"
    if row.applied >= row.desired:
        return "applied"
    if row.rejected == row.desired:
        return "rejected"
    return "pending"


def status_of_none() -> dict:
    """What ``status`` says of a machine that has no planogram yet."""
    return _state_dict(None)


def _state_dict(row) -> dict:
    return {"desired_version": row.desired if row else 0, "applied_version": row.applied if row else 0,
            "applied_at": row.applied_at.isoformat() if row and row.applied_at else None,
            "rejected_version": row.rejected if row else 0,
            "rejected_reason": row.rejected_reason if row else "", "state": state_of(row)}


def status(conn: sa.Connection, machine_id: str) -> dict:
    """Desired against applied for one machine."""
    get(conn, machine_id)
    return _state_dict(conn.execute(sa.select(machine_configs)
                                    .where(machine_configs.c.machine_id == machine_id)).first())


def statuses(conn: sa.Connection) -> dict[str, dict]:
    """Desired against applied for every machine that has a planogram."""
    return {r.machine_id: _state_dict(r) for r in conn.execute(sa.select(machine_configs))}


def config_message(conn: sa.Connection, machine_id: str) -> Config | None:
    """The newest version as the machine gets it, or None if the machine has no planogram."""
    version = desired(conn, machine_id)
    if not version:
        return None
    return Config(version, tuple(ConfigSlot(r.slot, r.name, r.price, r.currency, r.capacity, r.par_level)
                                 for r in slots_of(conn, machine_id, version)))


def wanted_by(conn: sa.Connection, machine_id: str, reported_version: int) -> Config | None:
    """The config to send again to a machine whose status reports ``reported_version``: the newest, if the
    machine lacks it and has not refused it (the broker may have lost its retained copy in a restart)."""
    return wanted_by_many(conn, {machine_id: reported_version}).get(machine_id)


def wanted_by_many(conn: sa.Connection, reported: dict[str, int]) -> dict[str, Config]:
    """``wanted_by`` for many machines: one read for all of them; {machine: config} for those that lack it."""
    if not reported:
        return {}
    rows = conn.execute(sa.select(machine_configs.c.machine_id, machine_configs.c.desired, machine_configs.c.rejected)
                        .where(machine_configs.c.machine_id.in_(sorted(reported))))
    wanted = {}
    for row in rows.all():
        if row.desired > reported[row.machine_id] and row.rejected != row.desired:
            config = config_message(conn, row.machine_id)
            if config is not None:
                wanted[row.machine_id] = config
    return wanted


def project(conn: sa.Connection, machine_id: str, fresh: list, now: datetime) -> None:
    """Move the applied (or refused) version from a batch of the machine's ledger events; one pass over the
    batch and no statement at all when it holds no config fact."""
    applied = rejected = None
    for e in fresh:
        if e.kind == "config.applied":
            if 0 < e.data["version"] <= MAX_VERSION:
                applied = e
            else:
                log.error("machine %s: config.applied at seq %d names version %s; not projected", machine_id,
                          e.seq, e.data["version"])
        elif e.kind == "command.rejected" and e.data["cmd_id"].startswith(CONFIG_CMD_PREFIX):
            rejected = e
    if applied is None and rejected is None:
        return
    mc = machine_configs
    row = conn.execute(sa.select(mc).where(mc.c.machine_id == machine_id)).first()
    if row is None:
        conn.execute(mc.insert().values(machine_id=machine_id))
        row = conn.execute(sa.select(mc).where(mc.c.machine_id == machine_id)).first()
    values = {}
    if applied is not None and applied.data["version"] > row.applied:
        # The machine's clock, once synced; otherwise the time the cloud heard of it.
        at = parse_time(applied.ts, "ts") if applied.clock_synced else now
        values.update(applied=applied.data["version"], applied_at=at)
    if rejected is not None:
        version = rejected.data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            suffix = rejected.data["cmd_id"][len(CONFIG_CMD_PREFIX):]
            version = int(suffix) if suffix.isdigit() and len(suffix) <= 10 else 0
        version = version if 0 <= version <= MAX_VERSION else 0
        values.update(rejected=version, rejected_reason=str(rejected.data["reason"])[:200])
        log.warning("machine %s refused planogram version %s: %s", machine_id, version, rejected.data["reason"])
    if values:
        conn.execute(mc.update().where(mc.c.machine_id == machine_id).values(**values))


def slot_dict(r) -> dict:
    return {"slot": r.slot, "cabinet": r.cabinet, "sku": r.sku, "name": r.name, "price": r.price,
            "currency": r.currency, "capacity": r.capacity, "par_level": r.par_level}


def audit_change(version: int, slots: list[PlanogramSlot], note: str) -> dict:
    """What the audit trail keeps of a new version: all of it (it is small, and it is the change)."""
    return {"version": version, "note": note, "slots": [asdict(s) for s in slots]}


def set_slots(conn: sa.Connection, machine_id: str, specs: list[SlotSpec], now: datetime | None = None,
              user_id: int | None = None) -> int:
    """Set what some slots hold and at what price, making products that are new: a new planogram version
    with these slots changed and the others as they were. Counts stay as the machine's ledger says.
    Returns the new version."""
    get(conn, machine_id)
    for spec in specs:
        if conn.execute(sa.select(products.c.id).where(products.c.sku == spec.sku)).scalar() is None:
            conn.execute(products.insert().values(sku=spec.sku, name=spec.name))
    return merge(conn, machine_id, specs, now or utcnow(), user_id)
