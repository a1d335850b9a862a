"""Shared helpers for the cloud tests: a migrated SQLite database and small builders.

A plain module (not a conftest): test files import the ``engine`` fixture and the helpers by name.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa

import cloud.cli
import cloud.core.db
import cloud.service
import cloud.core.settings
from cloud.fleet import machines, planogram
from cloud import people
from cloud.fleet.machines import SlotSpec
from cloud.payments import REGISTRY, Wallet, entries
from protocol.messages import GENESIS_HASH, Event, EventBatch, Status

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
MACHINE = "m-1"
SECRET = "s" * 32


def make_migrated_engine(url: str) -> sa.Engine:
    engine = cloud.core.db.make_engine(url)
    cloud.core.db.migrate(engine)
    return engine


POSTGRES_URL = os.environ.get("VEND_POSTGRES_URL", "postgresql+psycopg://vend:vend@127.0.0.1:5432/vend")


def postgres_reachable() -> str:
    """'' if the PostgreSQL server for tests answers, else why not."""
    try:
        probe = sa.create_engine(POSTGRES_URL, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
        with probe.connect():
            pass
        return ""
    except Exception as e:  # noqa: BLE001 - any failure means "not reachable", and the reason is shown
        return f"PostgreSQL at {POSTGRES_URL.split('@')[-1]} not reachable: {type(e).__name__}"


def upgrade_to(engine: sa.Engine, revision: str) -> None:
    """Run the migrations up to ``revision`` only: a database as an older cloud left it."""
    from alembic import command

    cfg = cloud.core.db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def postgres_or_skip() -> None:
    """Skip the test if no PostgreSQL server answers; with VEND_REQUIRE_POSTGRES=1 (set by .ci/run), fail."""
    why = postgres_reachable()
    if why:
        if os.environ.get("VEND_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"VEND_REQUIRE_POSTGRES=1 but {why}")
        pytest.skip(why)


@contextmanager
def fresh_postgres(prefix: str, template: str = ""):
    """A new PostgreSQL database (its URL), dropped afterwards: empty, or a copy of ``template``; skips or
    fails if none can be had."""
    postgres_or_skip()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        drop_database(admin, name)
        admin.dispose()


def drop_database(admin: sa.Engine, name: str) -> None:
    """Drop a test database. An autovacuum worker that has just started on it cannot be terminated by a
    non-superuser, so wait for it a little; a database left behind is reported, not a failed test."""
    for _ in range(20):
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except sa.exc.DBAPIError:
            time.sleep(0.25)
    warnings.warn(f"test database {name} could not be dropped")


class MigratedTemplates:
    """A database migrated once per test process, on each engine, that each test gets a copy of: running the
    migrations for every test cost about a second each on SQLite and on PostgreSQL, two thirds of the
    cloud tests' time. The migrations themselves are still run by the tests that ask for ``empty_db_url``."""

    def __init__(self):
        self.sqlite_file = ""
        self.postgres_name = ""

    def sqlite_copy(self, dest: str) -> str:
        if not self.sqlite_file:
            folder = tempfile.mkdtemp(prefix="vend-template-")
            engine = make_migrated_engine(f"sqlite:///{folder}/template.db")
            engine.dispose()
            self.sqlite_file = f"{folder}/template.db"
            atexit.register(shutil.rmtree, folder, True)
        shutil.copyfile(self.sqlite_file, dest)
        return f"sqlite:///{dest}"

    def postgres(self) -> str:
        """The template database's name, made and migrated on first use, dropped when the process ends."""
        if not self.postgres_name:
            postgres_or_skip()
            name = f"vend_template_{uuid.uuid4().hex[:12]}"
            admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
            atexit.register(drop_database, admin, name)
            engine = make_migrated_engine(POSTGRES_URL.rsplit("/", 1)[0] + "/" + name)
            engine.dispose()  # a template must have no one connected when it is copied
            self.postgres_name = name
        return self.postgres_name


TEMPLATES = MigratedTemplates()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database at the newest schema: SQLite, and PostgreSQL when a server is reachable. Migrating
    it again (as the cloud does when it starts) finds nothing to do."""
    if request.param == "sqlite":
        yield TEMPLATES.sqlite_copy(f"{tmp_path}/c.db")
        return
    with fresh_postgres("vend_t", template=TEMPLATES.postgres()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request, tmp_path):
    """A fresh, empty database, for the tests of the migrations themselves."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/c.db"
        return
    with fresh_postgres("vend_t") as url:
        yield url


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch):
    """Cheap argon2 parameters, for the modules that import this (it is autouse where imported)."""
    from argon2 import PasswordHasher

    monkeypatch.setattr(people.staff, "hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


FORM_TOKEN = re.compile(r'name="csrf" value="([^"]*)"')


def form_pages(path: str | None) -> list[str]:
    """Pages that carry a customer's form, the page of the form being sent first (a menu for a purchase)."""
    own = [path.rsplit("/", 1)[0]] if path and path.endswith("/buy") else []
    return own + ["/register", "/wallet", "/signin"]


def form_token(client, path: str | None = None) -> str:
    """The anti-forgery token a customer's browser reads from any of the customer's forms (it is tied to
    the phone's form cookie, which the page sets: cloud/people/forms.py): the form's own page, the
    registration form's, or for a registered phone the wallet's or the sign-in page's."""
    for page in form_pages(path):
        match = FORM_TOKEN.search(client.get(page).text)
        if match:
            return match.group(1)
    return ""


def post_form(client, path: str, data: dict, **kw):
    """A customer's form sent as their browser sends it: with the token from the page."""
    return client.post(path, data={**data, "csrf": form_token(client, path)}, **kw)


def idle_cloud(var, db_url: str, **options) -> "cloud.service.Cloud":
    """A migrated cloud that is never started: no broker, no threads. Its routes work; publishing finds no
    broker and says so. ``options``: other settings (``demo_topups=True`` for the demo's top-up form)."""
    settings = cloud.core.settings.Settings(var=str(var), db=db_url, broker="127.0.0.1:1", **options).resolve()
    obj = cloud.service.Cloud(settings)
    cloud.core.db.migrate(obj.engine)
    return obj


@pytest.fixture
def engine(db_url):
    """A freshly migrated cloud database on each engine."""
    eng = cloud.core.db.make_engine(db_url)
    yield eng
    eng.dispose()


def slot_spec(slot="A1", price=350, sku="cola", name="Cola", currency="CNY", capacity=10) -> SlotSpec:
    return SlotSpec.from_obj(dict(slot=slot, sku=sku, name=name, price=price, currency=currency,
                                  capacity=capacity))


def add_machine(conn, machine_id=MACHINE, specs=None, online=True, counts=None) -> None:
    """A machine with slots (A1 cola 3.50, A2 water 2.00 by default), online and stocked if asked."""
    machines.add_machine(conn, machine_id, f"Machine {machine_id}", "lobby", NOW, secret=SECRET)
    specs = specs if specs is not None else [slot_spec(), slot_spec("A2", 200, "water", "Water")]
    planogram.set_slots(conn, machine_id, specs)
    for slot, count in (counts if counts is not None else {s.slot: 5 for s in specs}).items():
        conn.execute(machines.slots.update().where(machines.slots.c.machine_id == machine_id,
                                                   machines.slots.c.slot == slot).values(count=count))
    if online:
        machines.apply_status(conn, machine_id, Status(online=True, firmware="1.0"), NOW)


def add_customer(conn, phone="+8613800000001", topup=1000, name="Ann", method="wallet") -> int:
    customer_id = people.register(conn, name, phone, method, NOW, methods=REGISTRY.names)
    if topup:
        Wallet().topup(conn, customer_id, topup, "CNY", f"seed-{customer_id}", NOW)
    return customer_id


def add_sale(conn, customer_id: int, order_id="o-sold", machine_id=MACHINE, slot="A1", amount=350,
             provider=None) -> None:
    """A sale whose product dropped: an order in ``succeeded``, authorised and captured in the wallet."""
    from cloud.sales import orders

    product = conn.execute(sa.select(machines.slots.c.product_id).where(
        machines.slots.c.machine_id == machine_id, machines.slots.c.slot == slot)).scalar()
    conn.execute(orders.orders.insert().values(
        id=order_id, customer_id=customer_id, idem_key=f"k-{order_id}", machine_id=machine_id, slot=slot,
        product_id=product, amount=amount, currency="CNY", provider="wallet", status="succeeded",
        cmd_id=f"v-{order_id}", created_at=NOW, expires_at=NOW + timedelta(seconds=30), updated_at=NOW))
    row = orders.get(conn, order_id)
    wallet = provider or Wallet()
    assert wallet.authorise(conn, row, order_id, NOW).ok
    wallet.capture(conn, row, order_id, NOW)


def slot_row(conn, machine_id, slot):
    return conn.execute(sa.select(machines.slots).where(machines.slots.c.machine_id == machine_id,
                                                        machines.slots.c.slot == slot)).first()


def unbalanced_txns(conn) -> list:
    """Txn ids whose entries do not sum to zero."""
    return conn.execute(sa.select(entries.c.txn_id).group_by(entries.c.txn_id)
                        .having(sa.func.sum(entries.c.amount) != 0)).scalars().all()


class Chain:
    """Builds a machine's ledger events, each chained to the one before, starting at GENESIS_HASH."""

    def __init__(self):
        self.events: list[Event] = []

    @property
    def head_hash(self) -> str:
        return self.events[-1].hash if self.events else GENESIS_HASH

    def add(self, kind: str, **data) -> Event:
        ev = Event.make(len(self.events) + 1, NOW + timedelta(seconds=len(self.events)), 1, True, kind, data,
                        self.head_hash)
        self.events.append(ev)
        return ev

    def batch(self, first: int, last: int | None = None, ledger: str = "") -> EventBatch:
        """Events first..last (1-based, inclusive; last defaults to the newest), of ``ledger`` ('': a controller
        older than ledger ids)."""
        last = last if last is not None else len(self.events)
        return EventBatch(tuple(self.events[first - 1:last]), ledger)


class FakeSandbox:
    """The sandbox service's own books (cloud/payments/sandbox/server.py) behind httpx's MockTransport: the cloud's
    real HTTP client and the sandbox's real rules, without a socket or a thread. ``down`` makes every
    request fail to connect, as an unreachable provider's would."""

    def __init__(self, decline=("13",)):
        from cloud.payments.sandbox.server import Books

        self.books = Books(decline, 0.0)
        self.down = False
        self.requests: list[tuple[str, str]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.url.path, request.headers.get("Idempotency-Key")))
        if self.down:
            raise httpx.ConnectError("connection refused")
        body = json.loads(request.content or b"{}")
        code, answer, _ = self.books.handle(request.url.path, request.headers.get("Idempotency-Key"), body,
                                            NOW.timestamp())
        return httpx.Response(code, json=answer)

    def client(self, retries=1):
        from cloud.payments import SandboxClient

        return SandboxClient("http://sandbox.test", 1.0, retries, transport=httpx.MockTransport(self.handle),
                             sleep=lambda s: None)

    def operations(self, reference: str, op: str | None = None) -> list[dict]:
        payment = self.books.payments.get(reference, {"operations": []})
        return [o for o in payment["operations"] if op is None or o["op"] == op]


class ThroughTestClient(cloud.cli.Client):
    """vendctl's HTTP client, sending its requests through FastAPI's test client instead of a socket."""

    def __init__(self, client, headers: dict):
        super().__init__("http://testserver", "")
        self.client, self.headers = client, headers

    def fetch_text(self, path):
        r = self.client.get(path, headers=self.headers)
        if r.status_code >= 400:
            raise cloud.cli.CliError(f"GET {path}: {r.status_code}")
        return r.text

    def send(self, method, path, data, content_type):
        r = self.client.request(method, path, content=data, headers={**self.headers, "Content-Type": content_type})
        if r.status_code >= 400:
            raise cloud.cli.CliError(f"{method} {path}: {r.status_code} {r.json().get('error')}")
        return r.json()
