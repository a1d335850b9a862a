"""A transaction that only reads does not wait for the one writer (SQLite takes its write lock at BEGIN)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from cloud.core import db
from cloud.fleet.machines import machines
from tests.cloud_fixtures import db_url  # noqa: F401


def test_a_reader_sees_the_committed_fleet_while_a_writer_holds_its_transaction_open(db_url):
    engine = db.make_engine(db_url)
    try:
        seen = []

        def look():
            with db.reader(engine).connect() as conn:
                seen.append(conn.execute(sa.select(sa.func.count()).select_from(machines)).scalar())

        with engine.begin() as writing:
            writing.execute(sa.text("UPDATE machines SET name = name"))  # the write lock, held
            reader = threading.Thread(target=look, daemon=True)
            reader.start()
            reader.join(5)  # with BEGIN IMMEDIATE it would wait out the writer (SQLite's 30 s busy timeout)
            assert seen == [0], "the reader waited for the writer"
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_writer_waiting_for_sqlites_lock_goes_before_the_writer_that_just_committed(db_url):
    # The ingest thread commits and begins its next transaction within a millisecond; a purchase that found
    # the lock taken slept in SQLite's busy handler and kept missing it (pay to motor 1.9 s at p99 under a
    # fleet's load). Writers now take turns in the order they asked.
    engine = db.make_engine(db_url)
    try:
        rounds, got_in = [], []
        started = threading.Event()

        def ingest():
            for n in range(15):
                with engine.begin() as conn:
                    rounds.append(n)
                    conn.execute(sa.text("UPDATE machines SET name = name"))
                    started.set()
                    time.sleep(0.02)

        def purchase():
            started.wait(5)
            with engine.begin() as conn:
                got_in.append(len(rounds))
                conn.execute(sa.text("UPDATE machines SET name = name"))

        threads = [threading.Thread(target=ingest), threading.Thread(target=purchase)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert got_in == [1], f"the purchase got in after {got_in} of the ingest's 15 transactions"
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_purchase_waiting_for_the_write_lock_goes_before_the_background_writers_waiting_with_it(db_url):
    # Under a fleet's load a purchase that asked for SQLite's lock after the sweeper and the alerts waited out
    # each of their transactions as well as the ingest's: up to 150 ms before its own began (bench/fleet.py,
    # 10,000 machines). The background writers now wait for those someone is waiting for.
    engine = db.make_engine(db_url)
    try:
        order, holding, let_go = [], threading.Event(), threading.Event()

        def write(name, background, first=None):
            if background:
                db.background_writer()
            if first:
                first.wait(5)
            with engine.begin() as conn:
                order.append(name)
                conn.execute(sa.text("UPDATE machines SET name = name"))
                if name == "ingest":
                    holding.set()
                    let_go.wait(5)

        ingest = threading.Thread(target=write, args=("ingest", True))
        ingest.start()
        holding.wait(5)
        waiting = []
        for name, background in (("sweeper", True), ("alerts", True), ("purchase", False)):
            waiting.append(threading.Thread(target=write, args=(name, background)))
            waiting[-1].start()
            time.sleep(0.2)  # each in line before the next asks
        let_go.set()
        for t in [ingest, *waiting]:
            t.join(30)
        assert order == ["ingest", "purchase", "sweeper", "alerts"]
    finally:
        engine.dispose()


WRITER = """
import sys, time
import sqlalchemy as sa
from cloud.core import db
name, background, rounds = sys.argv[1], sys.argv[2] == "background", int(sys.argv[3])
if background:
    db.background_writer()
engine = db.make_engine(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()  # go
for n in range(rounds):
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO turns_taken (name) VALUES (:n)"), {"n": f"{name}-{n}"})
        if n == 0:
            print("holding", flush=True)
            sys.stdin.readline()  # let go
"""


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_purchase_goes_before_the_background_writers_of_other_processes(db_url):
    # A cloud that answers customers and one that stores the machines' messages (--no-ingest) write the same
    # SQLite file. A purchase waiting in SQLite's busy handler (it polls at up to 100 ms) kept missing the lock
    # that the ingest takes again within a millisecond of its commit.
    engine = db.make_engine(db_url)
    procs = []
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE turns_taken (id INTEGER PRIMARY KEY, name TEXT)"))

        def writer(name, background, rounds):
            p = subprocess.Popen([sys.executable, "-c", WRITER, name, background, str(rounds), db_url],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "ready"
            return p

        ingest = writer("ingest", "background", 30)
        sweeper = writer("sweeper", "background", 1)
        ingest.stdin.write("go\n")
        ingest.stdin.flush()
        assert ingest.stdout.readline().strip() == "holding"
        sweeper.stdin.write("go\n")
        sweeper.stdin.flush()
        time.sleep(0.3)  # the sweeper waits for the lock ...

        def buy():
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO turns_taken (name) VALUES ('purchase')"))

        purchase = threading.Thread(target=buy)
        purchase.start()
        time.sleep(0.3)  # ... and the purchase too, asking after it
        ingest.stdin.write("let go\n")
        ingest.stdin.flush()
        sweeper.stdin.write("let go\n")
        sweeper.stdin.flush()
        purchase.join(30)
        for p in procs:
            assert p.wait(30) == 0
        with engine.connect() as conn:
            order = conn.execute(sa.text("SELECT name FROM turns_taken ORDER BY id")).scalars().all()
        assert order[:2] == ["ingest-0", "purchase"], order
        assert len(order) == 32
    finally:
        for p in procs:
            p.kill()
        engine.dispose()


def test_a_writer_stuck_in_another_process_holds_the_others_up_for_the_patience_only(tmp_path, caplog):
    # A process stopped in the middle of a transaction (SIGSTOP, a debugger) keeps its lock file locked; the
    # others wait their patience, then go on with SQLite's own lock, as they did before the turns.
    path = str(tmp_path / "cloud.db")
    turns = db.ProcessTurns(path, patience_s=0.3)
    stuck = os.open(path + "-turn", os.O_RDWR)
    try:
        fcntl.flock(stuck, fcntl.LOCK_EX)
        for background in (False, True):
            started = time.monotonic()
            assert turns.take(background) is False
            assert 0.3 <= time.monotonic() - started < 3
        assert "going on without it" in caplog.text
        fcntl.flock(stuck, fcntl.LOCK_UN)
        assert turns.take(True) is True  # and once it lets go, the turns work again
        turns.end()
        assert turns.take(False) is True
        turns.end()
    finally:
        os.close(stuck)
