"""The machine's ledger: every fact, in order, chained by hash, on disk before anyone acts on it.

SQLite in WAL mode with ``synchronous=FULL``: when ``append`` returns, the event survives a power cut.
The same transaction updates the machine's own view of its slots (count, flagged) and the commands it has
seen, so the two can never disagree with the events. Events are never deleted; the cloud's ack only moves
the ``acked`` mark.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import datetime

import sqlite_utils
from sqlite_utils.migrations import Migrations

from protocol import ProtocolError
from protocol.messages import GENESIS_HASH, ConfigSlot, Event

log = logging.getLogger(__name__)

migrations = Migrations("vend-ledger")


@migrations(name="0001_events")
def _m0001(db: sqlite_utils.Database) -> None:
    db.execute("""CREATE TABLE events (
        seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, boot INTEGER NOT NULL, clock_synced INTEGER NOT NULL,
        kind TEXT NOT NULL, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('acked_seq', 0), ('boot_count', 0)")


@migrations(name="0002_slots_and_commands")
def _m0002(db: sqlite_utils.Database) -> None:
    db.execute("""CREATE TABLE slots (
        slot TEXT PRIMARY KEY, count INTEGER NOT NULL DEFAULT 0, flagged INTEGER NOT NULL DEFAULT 0)""")
    db.execute("""CREATE TABLE commands (
        id TEXT PRIMARY KEY, seq INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '')""")


@migrations(name="0003_planogram")
def _m0003(db: sqlite_utils.Database) -> None:
    # The planogram the machine has applied: one row per slot, replaced whole with each new version, in the
    # same transaction as the config.applied event that records it.
    db.execute("""CREATE TABLE planogram (
        slot TEXT PRIMARY KEY, product TEXT NOT NULL, price INTEGER NOT NULL, currency TEXT NOT NULL,
        capacity INTEGER NOT NULL, par INTEGER NOT NULL)""")
    db.execute("INSERT INTO meta VALUES ('planogram_version', 0)")


@migrations(name="0004_ledger_id")
def _m0004(db: sqlite_utils.Database) -> None:
    # The ledger's identity, random, made once with the file: every batch carries it, so the cloud tells a
    # new ledger (a new card, starting again at seq 1) from redeliveries of the one it has stored.
    db.execute("CREATE TABLE identity (ledger_id TEXT NOT NULL)")
    db.execute("INSERT INTO identity VALUES (?)", [secrets.token_hex(16)])


@migrations(name="0005_commands_from")
def _m0005(db: sqlite_utils.Database) -> None:
    # The cloud time (whole seconds) from which this ledger takes vend commands: a command issued before it
    # may have been run by the card this one replaced, which the new ledger cannot know. 0: not yet pinned
    # (a new ledger pins it at the start of the process that first learns the time); a ledger that already
    # holds events was there all along: every command it has not seen is its own.
    held = db.execute("SELECT count(*) FROM events").fetchone()[0]
    db.execute("INSERT INTO meta VALUES ('commands_from', ?)", [1 if held else 0])


class LedgerError(RuntimeError):
    """The ledger on disk is not what it should be (a broken chain, a gap)."""


class Ledger:
    """The one owner of the ledger database; use it from one thread."""

    def __init__(self, path: str):
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self.db = sqlite_utils.Database(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        migrations.apply(self.db)
        row = self.db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        self.head, self.head_hash = row if row else (0, GENESIS_HASH)
        self.boot_number = self._meta("boot_count")
        self.ledger_id: str = self.db.execute("SELECT ledger_id FROM identity").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def _meta(self, key: str) -> int:
        return self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()[0]

    @property
    def acked(self) -> int:
        return self._meta("acked_seq")

    def set_acked(self, seq: int) -> bool:
        """Move the acked mark forward to ``seq`` (never back, never past the head); True if it moved."""
        seq = min(seq, self.head)
        with self.db.atomic():
            cur = self.db.execute("UPDATE meta SET value = ? WHERE key = 'acked_seq' AND value < ?", [seq, seq])
        return cur.rowcount > 0

    @property
    def commands_from(self) -> int:
        """The cloud time (epoch seconds) before which a command may be the replaced card's; 0: not pinned."""
        return self._meta("commands_from")

    def pin_commands_from(self, cloud_time: float) -> int:
        """Pin ``commands_from`` once, at ``cloud_time`` (whole seconds); return the mark in force."""
        with self.db.atomic():
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'commands_from' AND value = 0",
                            [max(1, int(cloud_time))])
        return self.commands_from

    def start_boot(self) -> int:
        """Count one more boot; every event written from now on carries this number."""
        with self.db.atomic():
            self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'boot_count'")
        self.boot_number = self._meta("boot_count")
        return self.boot_number

    def append(self, kind: str, data: dict, now: datetime, clock_synced: bool) -> Event:
        """Write one fact durably, with its effect on slots and commands, and return it."""
        event = Event.make(self.head + 1, now, self.boot_number, clock_synced, kind, data, self.head_hash)
        with self.db.atomic():
            self._insert(event)
        self.head, self.head_hash = event.seq, event.hash
        return event

    def _insert(self, event: Event) -> None:
        self.db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [event.seq, event.ts, event.boot, int(event.clock_synced), event.kind,
             json.dumps(event.data, separators=(",", ":"), ensure_ascii=False), event.prev_hash, event.hash],
        )
        self._project(event)

    @property
    def planogram_version(self) -> int:
        """The version of the planogram this machine has applied; 0 before the first."""
        return self._meta("planogram_version")

    def planogram(self) -> dict[str, ConfigSlot]:
        """The applied planogram, by slot code."""
        rows = self.db.execute("SELECT slot, product, price, currency, capacity, par FROM planogram").fetchall()
        return {r[0]: ConfigSlot(*r) for r in rows}

    def apply_planogram(self, version: int, slots: tuple[ConfigSlot, ...], now: datetime,
                        clock_synced: bool) -> Event:
        """Replace the planogram with ``version`` and append ``config.applied``, in one transaction: the
        ledger never says a version was applied that the table does not hold, nor the reverse."""
        if version <= self.planogram_version:
            raise LedgerError(f"planogram version {version} is not newer than the applied {self.planogram_version}")
        event = Event.make(self.head + 1, now, self.boot_number, clock_synced, "config.applied",
                           {"version": version, "slots": len(slots)}, self.head_hash)
        with self.db.atomic():
            self.db.execute("DELETE FROM planogram")
            self.db.conn.executemany("INSERT INTO planogram VALUES (?, ?, ?, ?, ?, ?)",
                                [(s.code, s.product, s.price, s.currency, s.capacity, s.par) for s in slots])
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'planogram_version'", [version])
            self._insert(event)
        self.head, self.head_hash = event.seq, event.hash
        return event

    def _project(self, event: Event) -> None:
        d = event.data
        if event.kind in ("restock", "stock.adjusted"):
            # A technician's count is the truth about a slot, and a restock means it was looked at.
            self.db.execute(
                "INSERT INTO slots (slot, count, flagged) VALUES (?, ?, 0) "
                "ON CONFLICT(slot) DO UPDATE SET count = excluded.count, flagged = 0", [d["slot"], d["count"]])
        elif event.kind == "vend.succeeded":
            self.db.execute("UPDATE slots SET count = MAX(count - 1, 0) WHERE slot = ?", [d["slot"]])
        elif event.kind == "vend.failed" and d.get("slot_ok") is not True:
            # slot_ok: a failure that says nothing against the slot (a cancelled cashless session) keeps it selling.
            self.db.execute("UPDATE slots SET flagged = 1 WHERE slot = ?", [d["slot"]])
        if event.kind == "vend.started":
            self.db.execute("INSERT INTO commands VALUES (?, ?, 'started', '')", [d["cmd_id"], event.seq])
        elif event.kind == "command.rejected":
            self.db.execute("INSERT OR IGNORE INTO commands VALUES (?, ?, 'rejected', ?)",
                            [d["cmd_id"], event.seq, d["reason"]])
        elif event.kind in ("vend.succeeded", "vend.failed", "vend.unknown") and "cmd_id" in d:
            status = event.kind.split(".")[1]
            self.db.execute("UPDATE commands SET status = ?, reason = ? WHERE id = ?",
                            [status, d.get("reason", ""), d["cmd_id"]])

    def command(self, cmd_id: str) -> tuple[str, str, int] | None:
        """(status, reason, seq) of a command this machine has already seen, else None."""
        row = self.db.execute("SELECT status, reason, seq FROM commands WHERE id = ?", [cmd_id]).fetchone()
        return tuple(row) if row else None

    def slot(self, slot: str) -> tuple[int, bool]:
        """(count, flagged) of one slot as this machine's ledger has it."""
        row = self.db.execute("SELECT count, flagged FROM slots WHERE slot = ?", [slot]).fetchone()
        return (row[0], bool(row[1])) if row else (0, False)

    def read(self, from_seq: int, limit: int) -> list[Event]:
        """Events from ``from_seq`` on, at most ``limit``, in order."""
        rows = self.db.execute(
            "SELECT seq, ts, boot, clock_synced, kind, data, prev_hash, hash FROM events "
            "WHERE seq >= ? ORDER BY seq LIMIT ?", [from_seq, limit]).fetchall()
        return [Event(r[0], r[1], r[2], bool(r[3]), r[4], json.loads(r[5]), r[6], r[7]) for r in rows]

    def interrupted_vend(self) -> Event | None:
        """The last ``vend.started`` if no outcome follows it: a vend a reboot cut short."""
        row = self.db.execute(
            "SELECT seq FROM events WHERE kind IN ('vend.started', 'vend.succeeded', 'vend.failed', "
            "'vend.unknown') ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        event = self.read(row[0], 1)[0]
        return event if event.kind == "vend.started" else None

    def verify(self) -> int:
        """Walk the whole chain; return the number of events, or raise LedgerError at the first break."""
        prev_hash, expected = GENESIS_HASH, 1
        seq = 0
        while True:
            batch = self.read(expected, 1000)
            if not batch:
                if seq < self.acked:
                    raise LedgerError(f"{self.path}: ledger ends at seq {seq} but the cloud acked {self.acked}: "
                                      "events were removed")
                return seq
            for event in batch:
                if event.seq != expected:
                    raise LedgerError(f"{self.path}: seq {expected} is missing")
                if event.prev_hash != prev_hash:
                    raise LedgerError(f"{self.path}: hash chain broken at seq {event.seq}")
                try:
                    Event.from_obj(event.to_obj(), f"{self.path}: event")
                except ProtocolError as e:
                    raise LedgerError(str(e)) from None
                prev_hash, expected, seq = event.hash, expected + 1, event.seq
