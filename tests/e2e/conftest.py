"""End-to-end fixtures: one broker, one cloud and two controllers per module, all real processes.

The broker is Mosquitto when `mosquitto` is on PATH, else the embedded amqtt broker in its own process;
with VEND_REQUIRE_MOSQUITTO=1 (set by .ci/run) a missing Mosquitto fails the run instead. Every module
runs twice: with the cloud on SQLite, and on a fresh PostgreSQL database when the server at
VEND_POSTGRES_URL answers (with VEND_REQUIRE_POSTGRES=1 an unreachable server fails the run).
"""

import pytest

from tests.cloud_fixtures import fresh_postgres
from tests.e2e.harness import Cloud, Machine, running_broker


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request):
    """The cloud's database URL for this module's run ('' for SQLite under the cloud's folder)."""
    if request.param == "sqlite":
        yield ""
        return
    with fresh_postgres("vend_e2e") as url:
        yield url


@pytest.fixture(scope="module")
def broker(database, tmp_path_factory):
    """A broker per database run, so no session or retained message outlives the machines it was for."""
    yield from running_broker(str(tmp_path_factory.mktemp("broker")))


@pytest.fixture(scope="module")
def cloud(database, broker, tmp_path_factory):
    c = Cloud(broker, str(tmp_path_factory.mktemp("cloud")), db_url=database)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def machines(cloud, broker, tmp_path_factory):
    """m1 drops quickly; m2 drops slowly (time to kill it mid-vend) and its slot B2 is jammed."""
    work = str(tmp_path_factory.mktemp("machines"))
    m1 = Machine(cloud, broker, work, "m1", drop_delay=0.2)
    m2 = Machine(cloud, broker, work, "m2", drop_delay=2.0, drop_timeout=3.0, jam="B2")
    for m in (m1, m2):
        m.start()
        m.stock()
    yield m1, m2
    for m in (m1, m2):
        m.proc.stop()
