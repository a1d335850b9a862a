"""DEX import: each read of a machine becomes the difference against the read before it.

Rules, in the order an import applies them (all in the caller's one transaction: nothing half-imported):

1. The same file twice changes nothing: audits are keyed by the SHA-256 of the file's bytes.
2. A file that is not clean is refused whole, with the reason: not DEX, a G85 CRC that does not match, a
   transaction set cut short (ST without SE), a field that does not parse, no VA1 totals. ``vendctl dex
   show`` shows what is wrong with it.
3. The machine: never one that reports through its own ledger (its sales would count twice). The one named, or the one whose earlier audits carry the same ID101 serial. A serial the
   fleet has never seen is refused unless the importer asks for a new machine (a legacy machine, known
   only from its audits): a typo, another operator's file or a board swapped in without a word must not
   quietly create a machine with sales.
4. The first read of a machine is its baseline: its counters are since the machine was initialised, not
   since any period the cloud knows, so it makes no sales. A read whose ID1/CB1 serial differs from the
   previous read of the same machine is a board swap: a new baseline, shown, no sales. A read whose VA1
   totals went backwards is a counter reset: the sales are this read's own counters (what the machine
   counted since the reset; what it sold between the previous read and the reset is lost, and said so).
   Otherwise the sales are this read's counters minus the previous read's, per product and per payment
   device (PA7; PA2 where the machine has no PA7; CA2/DA2 against VA1 where it has no products).
5. Every unit sold becomes one ``sales`` row, as a ledger's ``vend.succeeded`` does, so reports, the
   settlement's gross and per-item figures and the rollups count it. It is marked as coming from an audit
   by its order id (``records.AUDIT_PREFIX``: ``audit:{audit id}:{selection}:{device}``) and a negative
   seq (ledger seqs are positive, so the two never meet on a machine that has both). Its time is the
   read's time (ID5, the machine's clock taken as UTC; the import's time if the file has none). Slots
   whose code is the DEX selection lose the units sold, as a vend does.
6. The sales are booked in the double-entry journal (``booking.py``): revenue against the boundary account of
   the payment device the money came in through, once per audit, device and currency.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

import dex
from protocol.messages import format_time
from cloud.core.db import UTCDateTime, metadata
from cloud.core.money import EXPONENT
from cloud.fleet import machines as fleet
from cloud.fleet.machines import machines, slots
from cloud.audits import booking
from cloud.sales import reports
from cloud.sales.records import AUDIT_PREFIX, sales

BASELINE, DELTA, RESET, BOARD_SWAP = "baseline", "delta", "reset", "board_swap"
MAX_ROWS = 200_000  # sales one import may write: years of a busy machine; past it, something is wrong

audits = sa.Table(
    "audits", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("filename", sa.String(200), nullable=False, server_default=""),
    sa.Column("imported_at", UTCDateTime, nullable=False),
    sa.Column("read_at", UTCDateTime, nullable=True),  # ID5, taken as UTC
    sa.Column("serial", sa.String(40), nullable=False, server_default=""),  # ID101
    sa.Column("board", sa.String(40), nullable=False, server_default=""),  # CB101
    sa.Column("crc", sa.String(12), nullable=False),  # matched, absent
    sa.Column("kind", sa.String(12), nullable=False),  # baseline, delta, reset, board_swap
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("paid_count", sa.BigInteger, nullable=False),  # VA102, since initialisation
    sa.Column("paid_value", sa.BigInteger, nullable=False),  # VA101, in the currency's minor units
    sa.Column("sold_count", sa.BigInteger, nullable=False),  # sales rows this read made
    sa.Column("sold_value", sa.BigInteger, nullable=False),
    sa.Column("counters", sa.Text, nullable=False),  # what the next read is compared with (JSON)
    sa.Column("content", sa.Text, nullable=False),  # the file, for a person to read again
    sa.Index("audits_by_machine", "machine_id", "id"),
)


class AuditError(ValueError):
    """A file that cannot be imported; ``code`` says which rule refused it."""

    def __init__(self, code: str, message: str, status: int = 422):
        super().__init__(message)
        self.code, self.status = code, status


@dataclass
class Imported:
    audit: dict
    created: bool


def _machine_id_from(serial: str) -> str:
    """A machine id (lower case letters, digits, '-') made from a DEX serial."""
    return ("dex-" + re.sub(r"[^a-z0-9-]", "-", serial.lower())).rstrip("-")[:32]


def _scale(decimals: int | None, currency: str) -> int:
    """The factor from the machine's unit (ID401) to the currency's minor unit."""
    exponent = EXPONENT.get(currency, 2)
    places = exponent if decimals is None else decimals
    if places > exponent:
        raise AuditError("decimals", f"the file counts money in {places} decimal places, more than {currency} has "
                         f"({exponent}): the amounts cannot be kept exactly")
    return 10 ** (exponent - places)


def _check_clean(audit: dex.Audit) -> None:
    if audit.crc == "mismatch":
        raise AuditError("crc", f"{audit.name}: its G85 CRC says {audit.crc_stated} but its content gives "
                         f"{audit.crc_computed}: the file was changed or damaged; read it again from the machine")
    tags = {s.tag for s in audit.segments}
    if "ST" in tags and "SE" not in tags or "DXS" in tags and "DXE" not in tags:
        raise AuditError("truncated", f"{audit.name}: the file ends before its SE/DXE lines: it was cut short; "
                         "read it again from the machine")
    if audit.problems:
        listed = "; ".join(str(p) for p in audit.problems[:5])
        raise AuditError("fields", f"{audit.name}: {len(audit.problems)} field(s) do not parse ({listed}); "
                         "nothing imported")
    if audit.paid.count_init is None or audit.paid.value_init is None:
        raise AuditError("no_totals", f"{audit.name}: no VA1 totals (paid vends since initialisation)")


def _counters(audit: dex.Audit, scale: int) -> dict:
    """What the next read is compared with: VA1, CA2/DA2, and per product its PA7 lines (or PA2)."""
    def pair(c) -> list[int] | None:
        return None if c is None or c.count_init is None else [c.count_init, (c.value_init or 0) * scale]
    products = {}
    for p in audit.products:
        lines: dict[str, list[int]] = {}
        for x in p.by_payment:  # one line per device and price list (PA703): a device's lines add up
            if pair(x.sold):
                lines[x.device] = [a + b for a, b in zip(lines.get(x.device, [0, 0]), pair(x.sold))]
        products[p.selection] = lines or ({"?": pair(p.sold)} if pair(p.sold) else {})
    return {"paid": pair(audit.paid), "devices": {k: v for k, v in (("CA", pair(audit.cash)),
                                                                    ("DA", pair(audit.cashless)),
                                                                    ("DB", pair(audit.cashless2))) if v},
            "products": products}


def _sold_since(now_c: dict, prev_c: dict | None, notes: list[str]) -> dict[tuple[str, str], list[int]]:
    """(selection, device) -> [units, value] sold between two reads (all of now_c when prev_c is None)."""
    prev_products = (prev_c or {}).get("products", {})
    out: dict[tuple[str, str], list[int]] = {}

    def diff(key, cur, old):
        n, v = cur[0] - (old[0] if old else 0), cur[1] - (old[1] if old else 0)
        if n < 0 or v < 0:
            notes.append(f"selection {key[0]} ({key[1]}) went back from {old[0]} to {cur[0]} vends; counted as 0")
        elif n == 0 and v:
            notes.append(f"selection {key[0]} ({key[1]}): value {v} without a vend; not counted")
        elif n:
            out[key] = [n, v]
    if now_c["products"]:
        for sel, lines in now_c["products"].items():
            before = prev_products.get(sel, {})
            if before == {"?": [0, 0]}:
                before = {}  # nothing sold yet, so no PA7 line then: not a machine that stopped splitting by device
            if before and set(before) != set(lines) and ("?" in before or "?" in lines):
                # The machine began (or stopped) splitting this product by payment: compare it as a whole.
                lines = {"?": [sum(v[i] for v in lines.values()) for i in (0, 1)]}
                before = {"?": [sum(v[i] for v in before.values()) for i in (0, 1)]}
            for device, cur in lines.items():
                diff((sel, device), cur, before.get(device))
        return out
    # No products in the file: the totals by payment device, and what VA1 says beyond them.
    prev_devices = (prev_c or {}).get("devices", {})
    for device, cur in now_c["devices"].items():
        diff(("", device), cur, prev_devices.get(device))
    rest_now = [now_c["paid"][i] - sum(v[i] for v in now_c["devices"].values()) for i in (0, 1)]
    if prev_c:
        rest_prev = [prev_c["paid"][i] - sum(v[i] for v in prev_devices.values()) for i in (0, 1)]
        diff(("", "?"), rest_now, rest_prev)
    elif rest_now[0] > 0:
        diff(("", "?"), rest_now, None)
    return out


def _read_time(audit: dex.Audit, now: datetime) -> datetime | None:
    t = audit.read_at
    if t is None or t.year < 2000 or t.replace(tzinfo=timezone.utc) > now + timedelta(days=1):
        return None
    return t.replace(tzinfo=timezone.utc)


def import_audit(conn: sa.Connection, data: bytes, filename: str, now: datetime, *, machine_id: str | None = None,
                 new_machine: bool = False, currency: str | None = None) -> Imported:
    """Import one DEX file in the caller's transaction; see the module docstring. Raises ``AuditError``."""
    digest = hashlib.sha256(data).hexdigest()
    seen = conn.execute(sa.select(audits.c.id).where(audits.c.sha256 == digest)).scalar()
    if seen is not None:
        return Imported(audit_of(conn, seen), False)
    try:
        audit = dex.read(data, filename)
    except dex.DexError as e:
        raise AuditError("not_dex", str(e)) from None
    _check_clean(audit)
    serial = audit.identity.serial or audit.identity.board_serial
    machine_id = _which_machine(conn, audit, serial, machine_id, new_machine, now)
    if conn.execute(sa.select(machines.c.cloud_head + machines.c.ledger_base).where(machines.c.id == machine_id)
                    ).scalar():
        raise AuditError("has_ledger", f"machine {machine_id} reports its sales through its own ledger: its audit's "
                         "sales would be counted twice, so audits are imported only for machines without one", 409)
    if conn.dialect.name == "postgresql":  # one import per machine at a time: the seqs and the order below
        conn.execute(sa.select(machines.c.id).where(machines.c.id == machine_id).with_for_update())
    currency = (currency or audit.currency or _machine_currency(conn, machine_id) or "").upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise AuditError("currency", f"{filename}: the file names no currency (ID4) and the machine has no priced "
                         "slots: give the currency (--currency EUR)")
    scale = _scale(audit.decimals, currency)
    read_at = _read_time(audit, now)
    prev = conn.execute(sa.select(audits).where(audits.c.machine_id == machine_id)
                        .order_by(audits.c.id.desc()).limit(1)).first()
    if prev is not None and prev.currency != currency:
        raise AuditError("currency", f"{filename}: in {currency}, but machine {machine_id}'s last audit is in "
                         f"{prev.currency}")
    if prev is not None and read_at and prev.read_at and read_at < prev.read_at:
        raise AuditError("order", f"{filename}: read at {read_at:%Y-%m-%d %H:%M}, before machine {machine_id}'s "
                         f"last imported read ({prev.read_at:%Y-%m-%d %H:%M}): import a machine's reads in the "
                         "order they were taken")
    counters = _counters(audit, scale)
    notes: list[str] = []
    board = audit.identity.board_serial.strip("0")
    if prev is None:
        kind, sold = BASELINE, {}
    elif (audit.identity.serial and prev.serial and audit.identity.serial != prev.serial) or \
            (board and prev.board and board != prev.board):
        kind, sold = BOARD_SWAP, {}
        notes.append(f"board swap: serial {prev.serial}/{prev.board or '-'} before, {audit.identity.serial}/"
                     f"{board or '-'} now; a new baseline, no sales (what was sold since the previous read is "
                     "unknown)")
    else:
        before = json.loads(prev.counters)
        if counters["paid"][0] < before["paid"][0] or counters["paid"][1] < before["paid"][1]:
            kind = RESET
            notes.append(f"counter reset: VA1 went back from {before['paid'][0]} to {counters['paid'][0]} vends; "
                         "sales are what the machine counted since the reset (those between the previous read "
                         "and the reset are lost)")
            sold = _sold_since(counters, None, notes)
        else:
            kind, sold = DELTA, _sold_since(counters, before, notes)
    units = sum(n for n, _ in sold.values())
    if units > MAX_ROWS:
        raise AuditError("too_many", f"{filename}: {units:,} vends since the previous read is more than one import "
                         f"takes ({MAX_ROWS:,}); check the file and the machine")
    audit_id = conn.execute(audits.insert().values(
        machine_id=machine_id, sha256=digest, filename=filename[:200], imported_at=now, read_at=read_at,
        serial=audit.identity.serial[:40], board=board[:40], crc=audit.crc, kind=kind, note="\n".join(notes),
        currency=currency, paid_count=audit.paid.count_init, paid_value=audit.paid.value_init * scale,
        sold_count=units, sold_value=sum(v for _, v in sold.values()), counters=json.dumps(counters),
        content=data.decode("latin-1"))).inserted_primary_key[0]
    if sold:
        _write_sales(conn, machine_id, audit_id, sold, currency, format_time(read_at or now))
        booking.book(conn, audit_id, read_at or now)
    book_unbooked(conn)
    return Imported(audit_of(conn, audit_id), True)


def book_unbooked(conn: sa.Connection) -> int:
    """Book every audit with sales the journal does not hold (those imported before audits were booked);
    how many transactions were posted. Run by every import and by finance's catch-up."""
    done = 0
    for audit_id, read_at, imported_at in conn.execute(
            sa.select(audits.c.id, audits.c.read_at, audits.c.imported_at)
            .where(audits.c.sold_value > 0, ~booking.booked(audits.c.id)).order_by(audits.c.id)).all():
        done += booking.book(conn, audit_id, read_at or imported_at)
    return done


def _which_machine(conn, audit: dex.Audit, serial: str, machine_id: str | None, new_machine: bool,
                   now: datetime) -> str:
    if machine_id:
        if conn.execute(sa.select(machines.c.id).where(machines.c.id == machine_id)).first():
            return machine_id
        if not new_machine:
            raise AuditError("unknown_machine", f"there is no machine {machine_id!r}; to add it as a machine known "
                             "only from its audits, import with --new-machine", 404)
    else:
        known = serial and conn.execute(sa.select(audits.c.machine_id).where(audits.c.serial == serial)
                                        .order_by(audits.c.id.desc()).limit(1)).scalar()
        if known:
            return known
        if not new_machine:
            raise AuditError("unknown_machine", f"{audit.name}: no machine in the fleet has sent audits with serial "
                             f"{serial!r} (ID101). To attach the file to a machine the fleet has: --machine ID. To "
                             "add it to the fleet as a legacy machine, known only from its audits: --new-machine "
                             "(and --machine ID to choose its id)", 404)
        if not serial:
            raise AuditError("unknown_machine", f"{audit.name}: the file has no serial (ID101, CB101): name the "
                             "machine with --machine ID")
        machine_id = _machine_id_from(serial)
    try:
        fleet.add_machine(conn, machine_id, f"{audit.identity.model or 'DEX'} {serial}".strip()[:80],
                          audit.identity.location[:200], now)
    except fleet.FleetError as e:
        raise AuditError("unknown_machine", f"cannot add machine {machine_id!r}: {e}") from None
    return machine_id


def _machine_currency(conn, machine_id: str) -> str | None:
    return conn.execute(sa.select(slots.c.currency).where(slots.c.machine_id == machine_id).limit(1)).scalar()


def _write_sales(conn, machine_id: str, audit_id: int, sold: dict, currency: str, ts: str) -> None:
    """One sales row per unit, each carrying an even share of the value (the remainder on the first ones)."""
    lowest = conn.execute(sa.select(sa.func.min(sales.c.seq)).where(sales.c.machine_id == machine_id,
                                                                    sales.c.seq < 0)).scalar() or 0
    known = {r.slot: r for r in conn.execute(sa.select(slots.c.slot, slots.c.product_id, slots.c.count)
                                             .where(slots.c.machine_id == machine_id))}
    rows, seq, taken = [], lowest, {}
    for (selection, device), (n, value) in sorted(sold.items()):
        slot = known.get(selection)
        share, extra = divmod(value, n)
        for i in range(n):
            seq -= 1
            rows.append((machine_id, seq, ts, f"{AUDIT_PREFIX}{audit_id}:{selection}:{device}", selection[:3],
                         slot.product_id if slot else None, share + (1 if i < extra else 0), currency))
        if slot:
            taken[selection] = taken.get(selection, 0) + n
    for chunk in range(0, len(rows), 5000):
        conn.execute(sales.insert(), [dict(zip(("machine_id", "seq", "ts", "order_id", "slot", "product_id",
                                                "amount", "currency"), r)) for r in rows[chunk:chunk + 5000]])
    reports.project(conn, rows)
    for selection, n in taken.items():
        conn.execute(slots.update().where(slots.c.machine_id == machine_id, slots.c.slot == selection)
                     .values(count=sa.func.max(slots.c.count - n, 0) if conn.dialect.name == "sqlite"
                             else sa.func.greatest(slots.c.count - n, 0)))


def _row(r) -> dict:
    return {"id": r.id, "machine_id": r.machine_id, "filename": r.filename, "imported_at": r.imported_at.isoformat(),
            "read_at": r.read_at.isoformat() if r.read_at else None, "serial": r.serial, "board": r.board,
            "crc": r.crc, "kind": r.kind, "note": r.note, "currency": r.currency, "paid_count": r.paid_count,
            "paid_value": r.paid_value, "sold_count": r.sold_count, "sold_value": r.sold_value, "sha256": r.sha256}


LISTED = [c for c in audits.c if c.name not in ("counters", "content")]


def audit_of(conn: sa.Connection, audit_id: int) -> dict:
    row = conn.execute(sa.select(*LISTED).where(audits.c.id == audit_id)).first()
    if row is None:
        raise AuditError("not_found", f"no audit {audit_id}", 404)
    return _row(row)


def list_audits(conn: sa.Connection, machine_id: str | None = None, limit: int = 100) -> list[dict]:
    """Audits newest first (of one machine, or all)."""
    q = sa.select(*LISTED).order_by(audits.c.id.desc()).limit(limit)
    if machine_id:
        q = q.where(audits.c.machine_id == machine_id)
    return [_row(r) for r in conn.execute(q)]
