"""The cloud's store: SQLAlchemy Core over SQLite (default) or PostgreSQL, migrated by Alembic.

Each domain declares its own tables on ``metadata``; ``cloud/schema.py`` collects them, the Alembic
migrations under ``cloud/migrations`` are what creates them, and a test checks that the two agree.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from collections import deque
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy import event

log = logging.getLogger(__name__)

metadata = sa.MetaData()

MAX_ID = 2 ** 63 - 1  # the largest id a database integer holds: a larger one names no row

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp that is always UTC with its zone, on SQLite (text) as on PostgreSQL (timestamptz)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store UTC with a zone")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite gives back what it stored, without the zone
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


READ_ONLY = "vend_read_only"


def reader(engine: sa.Engine) -> sa.Engine:
    """The engine for transactions that only read: on SQLite they take no write lock (every other
    transaction takes it at its start, even one that turns out to read only), so a long look at the fleet
    does not hold the ingest up; on PostgreSQL nothing changes. A write through it fails on SQLite's busy
    timeout rather than deadlock, so use it for reads alone."""
    return engine.execution_options(**{READ_ONLY: True})


SQLITE_BUSY_S = 30  # how long a writer waits for SQLite's write lock before it gives up


_thread_kind = threading.local()


def background_writer() -> None:
    """Mark this thread's writes as background work (the ingest, the sweepers): on SQLite, a writer someone
    is waiting for (a customer's purchase, a manager's form) goes before them (``WriteTurns``)."""
    _thread_kind.background = True


class ProcessTurns:
    """The turn at one SQLite database among the processes that write it (a cloud answering customers and
    one storing the machines' messages, ``--no-ingest``): a lock file each writer holds through its
    transaction, and a gate before it, so that a writer someone waits for goes before a background one.

    A writer someone waits for closes the gate, waits for the lock, and opens the gate once it holds the
    lock; a background writer that gets the lock looks at the gate, and while it is closed lets go of the lock
    and waits for the gate to open.
    So a purchase in one process waits for the one transaction under way in another, never for the ingest's
    next: SQLite's own busy handler polls at up to 100 ms and keeps missing a lock the ingest takes again
    within a millisecond. Only the thread holding this process's turn (``WriteTurns``) asks, so one open
    file of each serves the whole process. Each wait polls, every few milliseconds at most, and gives up
    after ``patience_s`` (SQLite's own lock still keeps writers apart), so a stuck process cannot hang the
    others for ever."""

    POLL_S = (0.0002, 0.002)  # the first and the longest pause between two tries

    def __init__(self, db_path: str, patience_s: float = SQLITE_BUSY_S):
        self.patience_s = patience_s
        self._lock = self._open(db_path + "-turn")
        self._gate = self._open(db_path + "-gate")

    def _open(self, path: str) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        weakref.finalize(self, os.close, fd)  # with its engine: a test suite makes thousands
        return fd

    def _wait(self, fd: int, how: int, deadline: float) -> bool:
        pause = self.POLL_S[0]
        while True:
            try:
                fcntl.flock(fd, how | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(pause)
                pause = min(self.POLL_S[1], pause * 2)

    def take(self, background: bool) -> bool:
        """Wait for this process's turn; False if it waited ``patience_s`` and goes on without it."""
        deadline = time.monotonic() + self.patience_s
        if background:
            while True:
                got = self._wait(self._lock, fcntl.LOCK_EX, deadline)
                if not got:
                    break
                if self._wait(self._gate, fcntl.LOCK_SH, 0.0):
                    fcntl.flock(self._gate, fcntl.LOCK_UN)
                    break
                if time.monotonic() >= deadline:
                    break  # it has the lock; the gate has been closed too long to wait for
                # One that someone waits for closed the gate while this one waited: it goes first.
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                if self._wait(self._gate, fcntl.LOCK_SH, deadline):
                    fcntl.flock(self._gate, fcntl.LOCK_UN)
        else:
            gate = self._wait(self._gate, fcntl.LOCK_EX, deadline)
            got = self._wait(self._lock, fcntl.LOCK_EX, deadline)
            if gate:
                fcntl.flock(self._gate, fcntl.LOCK_UN)
        if not got:
            log.warning("a writer waited %.0f s for another process's turn at SQLite's lock; going on without it",
                        self.patience_s)
        return got

    def end(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)


class WriteTurns:
    """The writers of one SQLite database in this process, let in one at a time: first those someone is
    waiting for, in the order they asked, then the background ones (``background_writer``), in theirs.

    SQLite has one writer, and a writer that finds the lock taken sleeps in SQLite's busy handler, polling
    at up to 100 ms. The ingest thread commits and begins its next transaction within a millisecond, so
    under a fleet's load a purchase polling for the lock kept missing it: pay to motor took 1.9 s at p99 with
    10,000 machines (``bench/fleet.py``). Here a writer waits its turn on a condition and is woken the
    moment the one before it ends, before the ingest can begin again. A purchase that waited in line behind
    the ingest, the sweeper and the alerts waited out each of their transactions (up to 150 ms); it now
    waits for the one under way at most.

    A thread that already holds a turn (a transaction begun inside another one) is not made to wait for
    itself; a writer that has waited ``SQLITE_BUSY_S`` goes on without its turn (SQLite's own lock still
    keeps writers apart; it is what happened before). A turn a connection still holds when the pool takes
    the connection back is ended then."""

    def __init__(self, patience_s: float = SQLITE_BUSY_S, processes: ProcessTurns | None = None):
        self.patience_s = patience_s
        self.processes = processes  # the turn among processes, taken once this process's is
        self._across = False  # whether the holder holds the turn among processes too
        self._cond = threading.Condition()
        self._tickets = 0
        self._waiting: tuple[deque, deque] = (deque(), deque())  # (someone waits for them, background)
        self._holder: int | None = None  # the thread whose turn it is

    def _next(self) -> int | None:
        urgent, background = self._waiting
        return urgent[0] if urgent else background[0] if background else None

    def take(self) -> bool:
        """Wait for this thread's turn; False if it did not wait (it holds one already) or gave up."""
        me = threading.get_ident()
        with self._cond:
            if self._holder == me:
                return False
            ticket = self._tickets
            self._tickets += 1
            background = getattr(_thread_kind, "background", False)
            line = self._waiting[1 if background else 0]
            line.append(ticket)
            deadline = time.monotonic() + self.patience_s
            while self._holder is not None or self._next() != ticket:
                left = deadline - time.monotonic()
                if left <= 0:
                    line.remove(ticket)
                    self._cond.notify_all()
                    log.warning("a writer waited %.0f s for its turn at SQLite's lock; going on without it",
                                self.patience_s)
                    return False
                self._cond.wait(left)
            line.popleft()
            self._holder = me
        # Outside the condition: the other threads may queue meanwhile, and this one alone asks.
        self._across = self.processes is not None and self.processes.take(background)
        return True

    def end(self) -> None:
        with self._cond:
            if self._across:
                self._across = False
                self.processes.end()
            self._holder = None
            self._cond.notify_all()


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, full sync, foreign keys and write-locking transactions."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_S},
                                  pool_size=8, max_overflow=8)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, record):
            # Let SQLAlchemy's "begin" below issue BEGIN itself (pysqlite's own handling defers it).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # money: a committed ack must survive a power cut
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        processes = None
        if path and path != ":memory:" and not path.startswith(("sqlite:", "file:")):
            try:
                processes = ProcessTurns(path)
            except OSError as e:  # a folder this process may not write: its writers queue in SQLite alone
                log.warning("no turns among processes at %s: %s", path, e)
        turns = WriteTurns(processes=processes)
        holding: set[int] = set()  # the DBAPI connections (by id) whose transaction holds the turn

        def _raw(dbapi_conn) -> int:
            return id(getattr(dbapi_conn, "dbapi_connection", None) or dbapi_conn)

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # IMMEDIATE takes the write lock at once: two writers never deadlock upgrading a read lock. A
            # reader's connection (``reader`` below) takes none: in WAL it reads a snapshot while one writes.
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
                return
            raw = _raw(conn.connection)
            if turns.take():
                holding.add(raw)
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _end_turn(raw)
                raise

        def _end_turn(raw: int) -> None:
            if raw in holding:
                holding.discard(raw)
                turns.end()

        # The turn ends when the COMMIT (or ROLLBACK) has run, not before: SQLAlchemy's "commit" event comes
        # first, and the next writer would find the lock still held through the commit's fsync and sleep in
        # SQLite's busy handler while the one after it waited for its turn. The dialect is this engine's own.
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def do_commit(dbapi_conn):
            try:
                commit(dbapi_conn)
            finally:
                _end_turn(_raw(dbapi_conn))

        def do_rollback(dbapi_conn):
            try:
                rollback(dbapi_conn)
            finally:
                _end_turn(_raw(dbapi_conn))

        dialect.do_commit, dialect.do_rollback = do_commit, do_rollback

        @event.listens_for(engine.pool, "checkin")
        def _on_checkin(dbapi_conn, record):
            if dbapi_conn is not None:
                _end_turn(id(dbapi_conn))

        return engine
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


# PostgreSQL's "deadlock detected" and "could not serialize access": the transaction was rolled back whole
# for another's sake, and running it again is the documented remedy.
RETRYABLE_SQLSTATES = ("40P01", "40001")


def in_transaction(engine: sa.Engine, work, tries: int = 3):
    """``work(conn)`` in one transaction, run again (``tries`` times at most) when the database gave it up
    for a deadlock or a serialization failure; what ``work`` returned."""
    for attempt in range(1, tries + 1):
        try:
            with engine.begin() as conn:
                return work(conn)
        except sa.exc.OperationalError as e:
            if attempt == tries or getattr(e.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                raise
            log.warning("transaction given up by the database (%s); running it again (%d of %d)",
                        getattr(e.orig, "sqlstate", None), attempt + 1, tries)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: sa.Engine) -> None:
    """Bring the database to the newest schema."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # SQLite changes a column by copying the table and dropping the old one, which the foreign keys
            # pointing at it forbid once it holds rows; so they are off during the migration (outside any
            # transaction, where the pragma works) and checked as a whole before the commit.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration left rows pointing nowhere: {broken[:5]}")
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


def insert_ignore(conn: sa.Connection, table: sa.Table):
    """INSERT ... ON CONFLICT DO NOTHING for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


def db_value(conn: sa.Connection, column: sa.Column, value):
    """``value`` as the driver must receive it for ``column`` (for bulk_insert of a timestamp)."""
    processor = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return processor(value) if processor else value


def bulk_insert(conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert many rows straight through the driver, for the ingest's hot path.

    SQLAlchemy's per-row parameter processing costs more than SQLite's insert itself at tens of thousands
    of rows a second. Only for columns whose Python values the driver stores as is (text, numbers, bools):
    a timestamp goes in as ``db_value(conn, column, t)``.
    """
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    conn.exec_driver_sql(sql, rows)
