"""The Alembic migrations create exactly the schema that cloud/*.py declares on cloud.core.db.metadata."""

import re
import pprint

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import cloud.core.db
import cloud.schema
from tests.cloud_fixtures import upgrade_to, engine  # noqa: F401  (fixture)


def test_migrated_database_matches_the_declared_metadata(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), cloud.schema.load_tables())
    assert diff == [], "migration and metadata disagree:\n" + pprint.pformat(diff)


def test_migration_creates_every_declared_table_and_records_its_revision(engine):
    declared = set(cloud.schema.load_tables().tables)
    present = set(sa.inspect(engine).get_table_names())
    assert declared <= present
    assert present - declared == {"alembic_version"}
    with engine.connect() as conn:
        version = conn.execute(sa.text("select version_num from alembic_version")).scalar()
    assert version == ScriptDirectory.from_config(cloud.core.db.alembic_config(str(engine.url))).get_current_head()


def test_migrate_twice_is_a_no_op(engine):
    cloud.core.db.migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from alembic_version")).scalar() == 1


def _unquote(text):
    text = re.sub(r"::[a-z ]+$", "", str(text))  # PostgreSQL reports ''::character varying
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


def test_server_defaults_match_the_declared_ones(engine):
    # compare_metadata leaves server defaults out unless asked, and with compare_server_default=True it
    # reports '' defaults as changed on SQLite whatever the DDL says; compare the reflected text instead.
    insp = sa.inspect(engine)
    for table in cloud.schema.load_tables().tables.values():
        for col in insp.get_columns(table.name):
            declared = table.c[col["name"]].server_default
            if declared is None:
                # A PostgreSQL serial column's sequence is its own default, not one we declared.
                serial = str(col["default"] or "").startswith("nextval(")
                assert col["default"] is None or serial, (table.name, col["name"])
                continue
            arg = declared.arg if isinstance(declared.arg, str) else declared.arg.compile(dialect=engine.dialect)
            assert _unquote(col["default"]) == _unquote(arg), (table.name, col["name"])


def test_check_constraints_match_the_declared_ones(engine):
    # compare_metadata does not look at CHECK constraints at all.
    insp = sa.inspect(engine)
    for table in cloud.schema.load_tables().tables.values():
        declared = {c.name: str(c.sqltext) for c in table.constraints if isinstance(c, sa.CheckConstraint)}
        reflected = {c["name"]: c["sqltext"] for c in insp.get_check_constraints(table.name)}
        assert reflected == declared, table.name


def test_a_database_with_rows_upgrades_from_the_first_revision(empty_db_url):
    """An operator's cloud, already selling, takes every later migration with its rows kept; on SQLite that
    means tables rebuilt under foreign keys that point at them."""
    db_url = empty_db_url
    eng = cloud.core.db.make_engine(db_url)
    try:
        upgrade_to(eng, "0001")
        with eng.begin() as conn:
            conn.execute(sa.text("INSERT INTO machines (id, name, secret, created_at) "
                                 "VALUES ('m1', 'Lobby', 'sixteen-chars-secret', '2026-11-01 08:00:00+00:00')"))
            conn.execute(sa.text("INSERT INTO products (sku, name) VALUES ('cola', 'Cola')"))
            conn.execute(sa.text("INSERT INTO slots (machine_id, slot, product_id, price, currency, capacity, count) "
                                 "VALUES ('m1', 'A1', 1, 350, 'CNY', 10, 7)"))
        cloud.core.db.migrate(eng)
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT slot, count FROM slots WHERE machine_id = 'm1'")).all() == [("A1", 7)]
            assert conn.execute(sa.text("SELECT name, secret FROM machines")).all() == [("Lobby", "sixteen-chars-secret")]
            password = conn.execute(sa.text("SELECT mqtt_password FROM machines")).scalar()
            assert password and len(password) >= 24  # each machine made before 0002 got its own broker password
    finally:
        eng.dispose()
