"""A transaction that only reads does not wait for the one writer (SQLite takes its write lock at BEGIN)."""

from __future__ import annotations

import threading

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
