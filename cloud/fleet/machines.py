"""Machines, their cabinets, their slots and the products in them; online state from each machine's
retained status.

The ``slots`` table is what the cloud sells from: the newest planogram version of each machine
(``cloud/fleet/planogram.py`` writes it), with the counts the machine's ledger reports. A slot that a newer
version leaves out stays, with its count, but out of the planogram and so off the menu.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta

import sqlalchemy as sa

from protocol.messages import CURRENCY_RE, GENESIS_HASH, SLOT_RE, Status
from protocol.topics import check_machine_id

from cloud.provisioning.brokerfiles import BrokerUser, password_username
from cloud.catalog.names import join_names, name_in
from cloud.catalog.products import products
from cloud.core.db import UTCDateTime, metadata

MAX_OVERLAP = timedelta(days=30)

machines = sa.Table(
    "machines", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("location", sa.String(200), nullable=False, server_default=""),
    sa.Column("secret", sa.String(128), nullable=False),
    # The broker password of user "{id}.{mqtt_generation}". Kept readable, like the QR secret: the cloud
    # writes both onto the machine's SD card when it is provisioned.
    sa.Column("mqtt_password", sa.String(64), nullable=False),
    sa.Column("mqtt_generation", sa.Integer, nullable=False, server_default="1"),
    # During a rotation's overlap the previous QR secret and broker password work too, until prev_until.
    sa.Column("prev_secret", sa.String(128), nullable=True),
    sa.Column("prev_mqtt_password", sa.String(64), nullable=True),
    sa.Column("prev_until", UTCDateTime, nullable=True),
    sa.Column("online", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_seen", UTCDateTime, nullable=True),
    sa.Column("firmware", sa.String(40), nullable=False, server_default=""),
    sa.Column("boot", sa.Integer, nullable=False, server_default="0"),
    sa.Column("machine_head", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cloud_head", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cloud_head_hash", sa.String(64), nullable=False, server_default=GENESIS_HASH),
    # The ledger the cloud follows ('' until a controller that sends ledger ids is heard): cloud_head is in
    # its numbering, and its seq n is stored as events seq ledger_base + n (cloud/fleet/ledger.py).
    sa.Column("ledger_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("ledger_base", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # A retired machine sells no more (its QR codes are refused); its records, sales and moves stay.
    sa.Column("retired_at", UTCDateTime, nullable=True),
)

# A machine's name in each language the pages speak besides the default one (``machines.name`` is the name
# in the default language, the one its SD card and the API's reports carry): a language is rows, not columns.
machine_names = sa.Table(
    "machine_names", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("lang", sa.String(16), primary_key=True),  # a tag of i18n.LANGUAGES, like "zh-CN"
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# A machine has one cabinet or more (a snack tower beside a chilled one); each slot is in one of them, and
# the slot code stays unique across the whole machine, since the code is what a vend command names.
cabinets = sa.Table(
    "cabinets", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(40), nullable=False, server_default=""),
)

slots = sa.Table(
    "slots", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("slot", sa.String(3), primary_key=True),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("flagged", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("cabinet", sa.Integer, nullable=False, server_default="1"),
    sa.Column("par_level", sa.Integer, nullable=False, server_default="0"),
    sa.Column("in_planogram", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.ForeignKeyConstraint(["machine_id", "cabinet"], ["cabinets.machine_id", "cabinets.number"],
                            name="slot_in_cabinet"),
    sa.CheckConstraint("price >= 0", name="price_not_negative"),
    sa.CheckConstraint("count >= 0", name="count_not_negative"),
    sa.CheckConstraint("par_level >= 0", name="par_not_negative"),
    sa.CheckConstraint("par_level <= capacity", name="par_within_capacity"),
)


class FleetError(ValueError):
    """A request about machines, slots or products that cannot be done as asked. ``template`` is the message
    in English with ``{fields}`` left in it: it is also the message's id in the gettext catalogue
    (``cloud/web/locale/*/fleet.po``), so a page says it in its reader's language (``said``); the API
    answers ``str(e)``, the English with the fields filled in."""

    def __init__(self, template: str, **fields):
        super().__init__(template.format(**fields) if fields else template)
        self.template, self.fields = template, fields

    def said(self, _) -> str:
        """The message in the language of ``_`` (a page's translator); English where it has no translation.
        A ``field`` it names is said as the form labels it (msgctxt "fleet field")."""
        fields = dict(self.fields)
        if isinstance(fields.get("field"), str):
            fields["field"] = _(fields["field"], context="fleet field")
        return _(self.template, **fields)


class NoSuchMachine(FleetError):
    """A machine id the cloud does not know."""


class Retired(FleetError):
    """A machine that was retired, asked to do what only a machine in service does."""


@dataclass(frozen=True)
class SlotSpec:
    """One slot as ``PUT /api/v1/machines/{id}/slots`` gives it: the product by SKU and name (made if new).
    ``par_level`` and ``cabinet`` may be left out: the slot keeps the ones it has (0 and 1 for a new one)."""

    slot: str
    sku: str
    name: str
    price: int
    currency: str
    capacity: int
    par_level: int | None = None
    cabinet: int | None = None

    @classmethod
    def from_obj(cls, obj: dict) -> "SlotSpec":
        if not isinstance(obj, dict):
            raise FleetError("each slot must be an object")
        for key, typ in (("slot", str), ("sku", str), ("name", str), ("price", int), ("currency", str),
                         ("capacity", int)):
            if key not in obj:
                raise FleetError("slot {slot}: missing {key!r}", slot=obj.get("slot", "?"), key=key)
            if not isinstance(obj[key], typ) or isinstance(obj[key], bool):
                raise FleetError("slot {slot}: {key!r} must be {kind}", slot=obj.get("slot", "?"), key=key,
                                 kind=typ.__name__)
        for key in ("par_level", "cabinet"):
            if obj.get(key) is not None and (not isinstance(obj[key], int) or isinstance(obj[key], bool)):
                raise FleetError("slot {slot}: {key!r} must be int", slot=obj.get("slot", "?"), key=key)
        spec = cls(obj["slot"], obj["sku"], obj["name"], obj["price"], obj["currency"], obj["capacity"],
                   obj.get("par_level"), obj.get("cabinet"))
        if not SLOT_RE.match(spec.slot):
            raise FleetError("slot {slot!r} is not a slot code like A1", slot=spec.slot)
        if not isinstance(spec.price, int) or isinstance(spec.price, bool) or spec.price < 0:
            raise FleetError("slot {slot}: price must be a whole number of minor units >= 0", slot=spec.slot)
        if not CURRENCY_RE.match(spec.currency):
            raise FleetError("slot {slot}: currency {currency!r} is not an ISO 4217 code", slot=spec.slot,
                             currency=spec.currency)
        if not isinstance(spec.capacity, int) or not 1 <= spec.capacity <= 1000:
            raise FleetError("slot {slot}: capacity must be 1-1000", slot=spec.slot)
        if not spec.sku or not spec.name or len(spec.sku) > 40 or len(spec.name) > 80:
            raise FleetError("slot {slot}: sku and name must be 1-40 and 1-80 characters", slot=spec.slot)
        if spec.par_level is not None and not 0 <= spec.par_level <= spec.capacity:
            raise FleetError("slot {slot}: par_level {par} must be 0 to the capacity {capacity}", slot=spec.slot,
                             par=spec.par_level, capacity=spec.capacity)
        return spec


def add_machine(conn: sa.Connection, machine_id: str, name: str, location: str, now: datetime,
                secret: str | None = None) -> str:
    """Create a machine and return its QR secret."""
    if not all(isinstance(v, str) for v in (machine_id, name, location)) or not isinstance(secret, (str, type(None))):
        raise FleetError("id, name, location and secret must be text")
    try:
        check_machine_id(machine_id)
    except ValueError as e:
        raise FleetError(str(e)) from None
    if conn.execute(sa.select(machines.c.id).where(machines.c.id == machine_id)).first():
        raise FleetError("machine {id} exists already", id=machine_id)
    secret = secret or secrets.token_urlsafe(32)
    if len(secret) < 16:
        raise FleetError("a machine secret must be at least 16 characters")
    conn.execute(machines.insert().values(id=machine_id, name=name or machine_id, location=location,
                                          secret=secret, mqtt_password=new_password(), created_at=now))
    conn.execute(cabinets.insert().values(machine_id=machine_id, number=1, name="main"))
    return secret


MAX_CABINETS = 20


def add_cabinet(conn: sa.Connection, machine_id: str, number: int, name: str) -> None:
    """Give a machine another cabinet; FleetError naming the field if it cannot be."""
    get(conn, machine_id)
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_CABINETS:
        raise FleetError("number must be a whole number 1-{most}, got {number!r}", most=MAX_CABINETS, number=number)
    if not isinstance(name, str) or len(name) > 40:
        raise FleetError("name must be text of at most 40 characters")
    if conn.execute(sa.select(cabinets.c.number).where(cabinets.c.machine_id == machine_id,
                                                       cabinets.c.number == number)).first():
        raise FleetError("machine {id} has a cabinet {number} already", id=machine_id, number=number)
    conn.execute(cabinets.insert().values(machine_id=machine_id, number=number, name=name.strip()))


def cabinets_of(conn: sa.Connection, machine_id: str) -> list:
    """A machine's cabinets, by number."""
    return list(conn.execute(sa.select(cabinets.c.number, cabinets.c.name).where(cabinets.c.machine_id == machine_id)
                             .order_by(cabinets.c.number)))


def new_password() -> str:
    """A broker password: 192 random bits."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Credentials:
    """What a machine needs to sell and to reach the broker; the previous ones too while they still work."""

    machine_id: str
    secret: str
    mqtt_username: str
    mqtt_password: str
    previous_username: str | None = None
    previous_until: datetime | None = None

    def public(self) -> dict:
        """The parts that are not secret."""
        return {"id": self.machine_id, "mqtt_username": self.mqtt_username,
                "previous_username": self.previous_username,
                "previous_valid_until": self.previous_until.isoformat() if self.previous_until else None}


def _credentials(row, now: datetime | None = None) -> Credentials:
    overlap = row.prev_until is not None and (now is None or row.prev_until > now)
    return Credentials(row.id, row.secret, password_username(row.id, row.mqtt_generation), row.mqtt_password,
                       password_username(row.id, row.mqtt_generation - 1) if overlap else None,
                       row.prev_until if overlap else None)


def credentials(conn: sa.Connection, machine_id: str, now: datetime) -> Credentials:
    """A machine's current QR secret and broker password; FleetError if there is no such machine."""
    return _credentials(get(conn, machine_id), now)


def rotate(conn: sa.Connection, machine_id: str, now: datetime, overlap: timedelta) -> Credentials:
    """Give a machine a new QR secret and broker password; the old ones keep working for ``overlap``, so the
    machine sells on while it takes up the new ones. ``overlap`` 0 ends the old ones now (a leaked secret)."""
    if not timedelta(0) <= overlap <= MAX_OVERLAP:
        raise FleetError("the overlap must be between 0 and {days} days", days=MAX_OVERLAP.days)
    row = conn.execute(sa.select(machines).where(machines.c.id == machine_id).with_for_update()).first()
    if row is None:
        raise NoSuchMachine("no machine {id!r}", id=machine_id)
    if row.retired_at is not None:
        raise Retired("machine {id} is retired (since {at}): it has no broker login to rotate", id=machine_id,
                      at=row.retired_at.isoformat())
    if overlap and row.prev_until is not None and row.prev_until > now:
        # A second rotation now would end the oldest secret early, and the machine may still be using it.
        raise FleetError("machine {id} is still changing over from its last rotation: the previous secret works "
                         "until {until}; rotate after that, or with overlap 0 to end every old secret at once",
                         id=machine_id, until=row.prev_until.isoformat())
    values = dict(secret=secrets.token_urlsafe(32), mqtt_password=new_password(),
                  mqtt_generation=row.mqtt_generation + 1)
    if overlap:
        values.update(prev_secret=row.secret, prev_mqtt_password=row.mqtt_password, prev_until=now + overlap)
    else:
        values.update(prev_secret=None, prev_mqtt_password=None, prev_until=None)
    conn.execute(machines.update().where(machines.c.id == machine_id).values(**values))
    return credentials(conn, machine_id, now)


def expire_rotations(conn: sa.Connection, now: datetime) -> int:
    """Forget previous secrets whose overlap is over; how many machines that was (their broker users go)."""
    return conn.execute(machines.update().where(machines.c.prev_until <= now)
                        .values(prev_secret=None, prev_mqtt_password=None, prev_until=None)).rowcount


def broker_users(conn: sa.Connection, now: datetime) -> tuple[list[BrokerUser], list[str]]:
    """Every machine's broker users (the previous one too during an overlap), and every machine id, for the
    password file and the ACL. A retired machine has neither: no login, and its certificate (which the
    broker cannot tell from a live one) reaches no topic."""
    users, ids = [], []
    for row in conn.execute(sa.select(machines).where(machines.c.retired_at.is_(None)).order_by(machines.c.id)):
        ids.append(row.id)
        users.append(BrokerUser(password_username(row.id, row.mqtt_generation), row.mqtt_password, row.id))
        if row.prev_mqtt_password and row.prev_until is not None and row.prev_until > now:
            users.append(BrokerUser(password_username(row.id, row.mqtt_generation - 1), row.prev_mqtt_password,
                                    row.id))
    return users, ids


def write_slots(conn: sa.Connection, machine_id: str, wanted: list[dict]) -> None:
    """Make the ``slots`` table hold exactly ``wanted`` (dicts of slot, product_id, price, currency,
    capacity, par_level, cabinet) as the machine's planogram; any other slot leaves it, keeping its count."""
    for values in wanted:
        values = dict(values, in_planogram=True)
        slot = values.pop("slot")
        updated = conn.execute(slots.update().where(slots.c.machine_id == machine_id, slots.c.slot == slot)
                               .values(**values)).rowcount
        if not updated:
            conn.execute(slots.insert().values(machine_id=machine_id, slot=slot, **values))
    conn.execute(slots.update().where(slots.c.machine_id == machine_id,
                                      slots.c.slot.not_in([w["slot"] for w in wanted]))
                 .values(in_planogram=False))


def retire(conn: sa.Connection, machine_id: str, now: datetime) -> None:
    """Take a machine out of service for good: it sells no more, and the broker's files written after this
    (``broker_users``) hold no login for it; Retired if it was retired already."""
    row = conn.execute(sa.select(machines).where(machines.c.id == machine_id).with_for_update()).first()
    if row is None:
        raise NoSuchMachine("no machine {id!r}", id=machine_id)
    if row.retired_at is not None:
        raise Retired("machine {id} was retired already, on {at}", id=machine_id, at=row.retired_at.isoformat())
    conn.execute(machines.update().where(machines.c.id == machine_id).values(retired_at=now))


def in_service(conn: sa.Connection, machine_id: str):
    """The machine's row; NoSuchMachine or Retired if it cannot sell or be moved."""
    row = get(conn, machine_id)
    if row.retired_at is not None:
        raise Retired("machine {id} is retired (since {at})", id=machine_id, at=row.retired_at.isoformat())
    return row


def machine_name_in(lang: str | None, label: str = "name"):
    """A column for a query that joins ``machines``: the machine's name in ``lang``, or its default name where
    it has none in that language (join with ``join_machine_names(lang)``)."""
    if not lang:
        return machines.c.name.label(label)
    return sa.func.coalesce(_named(lang).c.name, machines.c.name).label(label)


def join_machine_names(selectable, lang: str | None):
    """``selectable`` (which contains ``machines``) outer-joined to the names in ``lang``, for ``machine_name_in``."""
    if not lang:
        return selectable
    named = _named(lang)
    return selectable.outerjoin(named, sa.and_(named.c.machine_id == machines.c.id, named.c.lang == lang))


@lru_cache(maxsize=None)  # one alias object per language, so the column and the join name the same one
def _named(lang: str):
    return machine_names.alias("machine_name_in_" + "".join(c if c.isalnum() else "_" for c in lang).lower())


def _in_language(lang: str | None):
    """A select of every column of ``machines`` with ``name`` in ``lang`` where the machine has a name in it
    (its default name otherwise), and ``default_name`` the name in the default language."""
    columns = [c if c.name != "name" else machine_name_in(lang) for c in machines.c]
    return sa.select(*columns, machines.c.name.label("default_name")).select_from(join_machine_names(machines, lang))


def get(conn: sa.Connection, machine_id: str, lang: str | None = None):
    """The machine's row, its ``name`` in ``lang`` (the default name where it has none in it)."""
    row = conn.execute(_in_language(lang).where(machines.c.id == machine_id)).first()
    if row is None:
        raise NoSuchMachine("no machine {id!r}", id=machine_id)
    return row


def secrets_of(conn: sa.Connection, machine_id: str, now: datetime) -> list[bytes]:
    """The QR secrets a machine's tokens may be signed with now: its current one, and during a rotation's
    overlap the previous one; empty for an unknown machine."""
    row = conn.execute(sa.select(machines.c.secret, machines.c.prev_secret, machines.c.prev_until)
                       .where(machines.c.id == machine_id)).first()
    if row is None:
        return []
    if row.prev_secret and row.prev_until is not None and row.prev_until > now:
        return [row.secret.encode(), row.prev_secret.encode()]
    return [row.secret.encode()]


def _menu_query(machine_id: str | None, lang: str | None = None):
    """The slots of one machine's menu (None: every machine's, by machine)."""
    joined = join_names(slots.join(products, products.c.id == slots.c.product_id), lang)
    stmt = (sa.select(slots.c.slot, slots.c.price, slots.c.currency, slots.c.count, slots.c.flagged,
                      slots.c.capacity, slots.c.par_level, slots.c.cabinet, name_in(lang), products.c.sku,
                      products.c.id.label("product_id"), slots.c.machine_id)
            .select_from(joined).where(slots.c.in_planogram))
    if machine_id is None:
        return stmt.order_by(slots.c.machine_id, slots.c.slot)
    return stmt.where(slots.c.machine_id == machine_id).order_by(slots.c.slot)


def menu(conn: sa.Connection, machine_id: str, lang: str | None = None) -> list:
    """The machine's slots with product, price and what is left, in slot order; the products' names in
    ``lang`` where they have one (the default name otherwise)."""
    return list(conn.execute(_menu_query(machine_id, lang)))


def menus(conn: sa.Connection, machine_ids: list[str] | None = None, below: float | None = None
          ) -> dict[str, list]:
    """Every machine's menu (or these machines') in one query, as ``menu`` gives one: {machine id: slots in
    slot order}; with ``below``, only the slots holding less than that share of their par level."""
    out: dict[str, list] = {}
    stmt = _menu_query(None)
    if machine_ids is not None:
        stmt = stmt.where(slots.c.machine_id.in_(machine_ids))
    if below is not None:
        stmt = stmt.where(slots.c.count < slots.c.par_level * below)
    for r in conn.execute(stmt):
        out.setdefault(r.machine_id, []).append(r)
    return out


def currency_of(conn: sa.Connection, machine_id: str) -> str | None:
    """The currency the machine's menu sells in (its first slot's), or None without a menu."""
    items = menu(conn, machine_id)
    return items[0].currency if items else None


def shortfalls(conn: sa.Connection, low_fraction: float) -> dict[str, dict[str, int]]:
    """Every machine's slots in one query: {machine id: {"count", "capacity", "empty": slots with nothing,
    "low": slots holding something but less than ``low_fraction`` of their par level (their capacity if it
    has none; the low stock alert's rule), "missing": units to bring every slot up to that level}}."""
    s = slots
    target = sa.case((s.c.par_level > 0, s.c.par_level), else_=s.c.capacity)
    q = (sa.select(s.c.machine_id, sa.func.sum(s.c.count), sa.func.sum(s.c.capacity),
                   sa.func.sum(sa.case((s.c.count <= 0, 1), else_=0)),
                   sa.func.sum(sa.case((sa.and_(s.c.count > 0, s.c.count < target * low_fraction), 1), else_=0)),
                   sa.func.sum(sa.case((s.c.count < target, target - s.c.count), else_=0)))
         .where(s.c.in_planogram).group_by(s.c.machine_id))
    return {m: {"count": int(n or 0), "capacity": int(c or 0), "empty": int(e or 0), "low": int(lo or 0),
                "missing": int(x or 0)} for m, n, c, e, lo, x in conn.execute(q)}


def slot_for_sale(conn: sa.Connection, machine_id: str, slot: str, lang: str | None = None):
    """One slot as ``menu`` shows it, or None."""
    return conn.execute(_menu_query(machine_id, lang).where(slots.c.slot == slot)).first()


def list_machines(conn: sa.Connection, lang: str | None = None) -> list:
    """Every machine by id, each ``name`` in ``lang`` where it has one there."""
    return list(conn.execute(_in_language(lang).order_by(machines.c.id)))


def apply_status(conn: sa.Connection, machine_id: str, status: Status, now: datetime) -> bool:
    """Record a machine's retained status; False if the machine is unknown."""
    return machine_id in apply_statuses(conn, {machine_id: status}, now)


def lock(conn: sa.Connection, ids) -> None:
    """Take the row locks of these machines at once, in id order (PostgreSQL; SQLite's BEGIN IMMEDIATE lets one
    writer in at a time). A transaction that writes several machines' rows takes them here first, so two cloud
    processes never each hold a row the other waits for: statuses and events of different groups name the
    same machines in different orders."""
    if conn.dialect.name != "postgresql":
        return
    ids = sorted(ids)
    for n in range(0, len(ids), 500):
        conn.execute(sa.select(machines.c.id).where(machines.c.id.in_(ids[n:n + 500])).order_by(machines.c.id)
                     .with_for_update()).all()


def apply_statuses(conn: sa.Connection, statuses: dict[str, Status], now: datetime) -> set[str]:
    """Record the newest status of each of many machines in a few statements (one per kind of status, not
    one per machine: status is most of a fleet's traffic); returns the ids of the machines that exist."""
    if not statuses:
        return set()
    known = {r.id for r in conn.execute(sa.select(machines.c.id).where(machines.c.id.in_(sorted(statuses))))}
    groups: dict[tuple, list[dict]] = {}
    for machine_id in sorted(known):
        status = statuses[machine_id]
        row = {"b_id": machine_id, "b_last_seen": now}
        if status.online:
            row.update(b_firmware=status.firmware[:40], b_machine_head=status.ledger_head, b_boot=status.boot)
        elif status.ledger_head:
            row.update(b_machine_head=status.ledger_head)
        groups.setdefault((status.online, tuple(row)), []).append(row)
    for (online, keys), rows in groups.items():
        values = {k[2:]: sa.bindparam(k) for k in keys if k != "b_id"}
        conn.execute(machines.update().where(machines.c.id == sa.bindparam("b_id")).values(online=online, **values),
                     rows)
    return known

def _like(text: str) -> str:
    """An ILIKE pattern (escape ``\\``) for the names holding ``text``."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def named_like(conn: sa.Connection, text: str) -> set[str]:
    """The machines with a name in a language besides the default one that holds ``text`` (any case)."""
    return set(conn.execute(sa.select(machine_names.c.machine_id)
                            .where(machine_names.c.name.ilike(_like(text), escape="\\"))).scalars())


def search(conn: sa.Connection, text: str = "", after: str | None = None, limit: int = 50,
           lang: str | None = None) -> tuple[list, str | None]:
    """A page of machines whose id or name (in any language) holds ``text``, by id, after the id ``after``
    (keyset: never an OFFSET), each named in ``lang``; and the ``after`` of the next page (None: the last)."""
    q = _in_language(lang).order_by(machines.c.id).limit(limit + 1)
    if text:
        like = _like(text)
        named = sa.select(machine_names.c.machine_id).where(machine_names.c.name.ilike(like, escape="\\"))
        q = q.where(sa.or_(machines.c.id.ilike(like, escape="\\"), machines.c.name.ilike(like, escape="\\"),
                           machines.c.id.in_(named)))
    if after:
        q = q.where(machines.c.id > after)
    rows = conn.execute(q).all()
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None
