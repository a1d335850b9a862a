"""Planograms, locations, cabinets and alerts in the cloud (cloud/fleet/planogram.py, cloud/fleet/locations.py,
cloud/fleet/alerts.py, cloud/fleet/routes.py, vendctl), on SQLite and PostgreSQL; and the Config message."""

import io
import json
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

import cloud.cli
import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.fleet import alerts, locations, machines, planogram
from cloud.fleet.alerts import Limits, Readings
from cloud.sync.ingest import store_batch
from cloud.fleet.machines import FleetError, NoSuchMachine
from cloud.people import audit
from cloud.fleet.planogram import PlanogramSlot
from cloud.payments import Wallet
from tests.cloud_fixtures import MACHINE, NOW, Chain, ThroughTestClient, add_machine, db_url, engine, slot_row, slot_spec
from protocol import ProtocolError, topics
from protocol.messages import (MAX_CONFIG_SLOTS, MAX_PAYLOAD_BYTES, MAX_PRICE, Ack, Config, ConfigSlot, Event, Status,
                               Telemetry, decode)

BOOT = "bootstrap-token-for-planogram-tests"
ADMIN = {"Authorization": f"Bearer {BOOT}"}
LIMITS = Limits(offline_s=60, failed_vends=3, failed_window_s=600, temp_min_c=2, temp_max_c=8, temp_for_s=300,
                door_open_s=120, unsynced_s=180)
S = timedelta(seconds=1)


def ps(slot="A1", sku="cola", price=350, capacity=10, par_level=8, cabinet=1, currency="CNY") -> PlanogramSlot:
    return PlanogramSlot(slot, sku, price, currency, capacity, par_level, cabinet)


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def store(engine, batch, now=NOW):
    with engine.begin() as conn:
        return store_batch(conn, Wallet(), MACHINE, batch, now)


def state(engine, machine_id=MACHINE) -> dict:
    with engine.connect() as conn:
        return planogram.status(conn, machine_id)


@pytest.fixture
def fleet(engine):
    """Machine m-1 with A1 cola and A2 water (version 1 of its planogram), online since NOW."""
    with engine.begin() as conn:
        add_machine(conn)
    return engine


# -- versions -----------------------------------------------------------------------------------------

def test_setting_slots_makes_version_1_and_each_edit_the_next_one(fleet):
    assert state(fleet) == {"desired_version": 1, "applied_version": 0, "applied_at": None,
                            "rejected_version": 0, "rejected_reason": "", "state": "pending"}
    with fleet.begin() as conn:
        v1 = [tuple(r) for r in planogram.slots_of(conn, MACHINE, 1)]
        assert planogram.create(conn, MACHINE, [ps(price=400)], NOW, note="dearer") == 2
        assert planogram.create(conn, MACHINE, [ps(price=450), ps("B1", "water", 150, 20, 5)], NOW) == 3
        assert [tuple(r) for r in planogram.slots_of(conn, MACHINE, 1)] == v1  # made once, never changed
        assert [v["version"] for v in planogram.versions(conn, MACHINE)] == [3, 2, 1]
        assert planogram.versions(conn, MACHINE)[1]["note"] == "dearer"
        config = planogram.config_message(conn, MACHINE)
    assert config == Config(3, (ConfigSlot("A1", "Cola", 450, "CNY", 10, 8), ConfigSlot("B1", "Water", 150, "CNY", 20, 5)))


def test_a_slot_left_out_of_a_version_leaves_the_menu_and_keeps_its_count(fleet):
    with fleet.begin() as conn:
        planogram.create(conn, MACHINE, [ps("A2", "water", 200, 10, 4)], NOW)
        assert [r.slot for r in machines.menu(conn, MACHINE)] == ["A2"]
        assert machines.slot_for_sale(conn, MACHINE, "A1") is None
        assert slot_row(conn, MACHINE, "A1").count == 5  # the machine still holds what it holds
        planogram.create(conn, MACHINE, [ps("A1"), ps("A2", "water", 200, 10, 4)], NOW)
        item = machines.slot_for_sale(conn, MACHINE, "A1")
    assert (item.count, item.par_level, item.price) == (5, 8, 350)


def test_put_slots_changes_only_the_slots_it_names_and_keeps_their_par_and_cabinet(fleet):
    with fleet.begin() as conn:
        machines.add_cabinet(conn, MACHINE, 2, "chilled")
        planogram.create(conn, MACHINE, [ps(par_level=9, cabinet=2), ps("A2", "water", 200, 10, 4)], NOW)
        version = planogram.set_slots(conn, MACHINE, [slot_spec(price=380, capacity=6)], NOW)
        rows = {r.slot: r for r in planogram.slots_of(conn, MACHINE)}
    assert version == 3
    assert (rows["A1"].price, rows["A1"].capacity, rows["A1"].par_level, rows["A1"].cabinet) == (380, 6, 6, 2)
    assert (rows["A2"].price, rows["A2"].par_level) == (200, 4)


def test_two_editors_at_once_get_consecutive_versions(fleet):
    errors = []

    def editor(price):
        try:
            for i in range(4):
                with fleet.begin() as conn:
                    planogram.create(conn, MACHINE, [ps(price=price + i)], NOW)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=editor, args=(p,)) for p in (100, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with fleet.connect() as conn:
        assert [v["version"] for v in planogram.versions(conn, MACHINE)] == list(range(9, 0, -1))
        assert planogram.desired(conn, MACHINE) == 9


@pytest.mark.parametrize("slots, fragment", [
    ([ps(price=-1)], "slots[0] (A1): price must be a whole number of minor units from 0"),
    ([ps(price=MAX_PRICE + 1)], "price must be"),
    ([ps(capacity=-1, par_level=0)], "capacity must be 1-1000, got -1"),
    ([ps(capacity=0, par_level=0)], "capacity must be 1-1000, got 0"),
    ([ps(capacity=10, par_level=11)], "par_level 11 is above the capacity 10"),
    ([ps(par_level=-1)], "par_level must be 0 or more"),
    ([ps(sku="nope")], "slots[0] (A1): sku 'nope' is not a known product"),
    ([ps(cabinet=4)], "machine m-1 has no cabinet 4 (it has 1)"),
    ([ps(), ps(price=1)], "slot A1 appears twice"),
    ([ps(currency="cny")], "currency 'cny' is not an ISO 4217 code"),
    ([], "a planogram has 1-500 slots"),
])
def test_a_bad_version_names_the_field_and_writes_nothing(fleet, slots, fragment):
    before = (count(fleet, planogram.planograms), count(fleet, planogram.planogram_slots), state(fleet))
    with pytest.raises(FleetError) as info:
        with fleet.begin() as conn:
            planogram.create(conn, MACHINE, slots, NOW)
    assert fragment in str(info.value)
    assert (count(fleet, planogram.planograms), count(fleet, planogram.planogram_slots), state(fleet)) == before


def test_an_unknown_machine_is_its_own_error(fleet):
    with pytest.raises(NoSuchMachine, match="no machine 'm-9'"):
        with fleet.begin() as conn:
            planogram.create(conn, "m-9", [ps()], NOW)


def test_a_product_name_the_machine_would_refuse_is_refused_in_the_cloud(fleet):
    with pytest.raises(FleetError) as info:
        with fleet.begin() as conn:
            planogram.set_slots(conn, MACHINE, [slot_spec("B1", sku="tab", name="Tab\tbar")], NOW)
    assert "would not reach the machine" in str(info.value) and "B1" in str(info.value)
    assert "product must be 1-80 printable characters" in str(info.value)
    with fleet.connect() as conn:
        assert conn.execute(sa.select(machines.products.c.sku).where(machines.products.c.sku == "tab")).first() is None


@pytest.mark.parametrize("obj, fragment", [
    ({"slot": "a1"}, "slot 'a1' is not a slot code like A1"),
    ({"slot": "A100"}, "slot 'A100' is not a slot code"),
    ({"slot": 7}, "slot 7 is not a slot code"),
    ({"slot": "A1", "sku": "cola", "price": True, "currency": "CNY", "capacity": 1, "par_level": 0},
     "(A1): price must be a whole number, got True"),
    ({"slot": "A1", "sku": "cola", "price": 1.5, "currency": "CNY", "capacity": 1, "par_level": 0},
     "price must be a whole number, got 1.5"),
    ({"slot": "A1", "sku": "cola", "currency": "CNY", "capacity": 1, "par_level": 0}, "(A1): price is missing"),
    ({"slot": "A1", "par": 3}, "unknown field 'par'"),
    ("A1", "a slot must be an object"),
])
def test_each_slot_object_is_checked_field_by_field(obj, fragment):
    with pytest.raises(FleetError) as info:
        PlanogramSlot.from_obj(obj, "slots[0]")
    assert fragment in str(info.value)


# -- applied, pending, rejected: from the machine's ledger ---------------------------------------------

def unsynced(chain: Chain, kind: str, **data) -> Event:
    """An event written while the machine's clock was not synchronised (its time says 1970)."""
    from datetime import datetime, timezone

    ev = Event.make(len(chain.events) + 1, datetime(1970, 1, 1, tzinfo=timezone.utc), 1, False, kind, data,
                    chain.head_hash)
    chain.events.append(ev)
    return ev


def test_applied_and_pending_follow_what_the_machines_ledger_says(fleet):
    chain = Chain()
    chain.add("boot", firmware="1.0")
    store(fleet, chain.batch(1))
    assert state(fleet)["state"] == "pending"
    chain.add("config.applied", version=1, slots=2)
    store(fleet, chain.batch(2))
    assert state(fleet) | {"applied_at": None} == {"desired_version": 1, "applied_version": 1, "applied_at": None,
                                                   "rejected_version": 0, "rejected_reason": "", "state": "applied"}
    assert state(fleet)["applied_at"] == (NOW + S).isoformat()  # the machine's own (synchronised) clock
    with fleet.begin() as conn:
        planogram.create(conn, MACHINE, [ps(price=300)], NOW)
    assert (state(fleet)["desired_version"], state(fleet)["state"]) == (2, "pending")
    unsynced(chain, "config.applied", version=2, slots=1)
    store(fleet, chain.batch(3), now=NOW + 60 * S)
    assert state(fleet)["state"] == "applied"
    assert state(fleet)["applied_at"] == (NOW + 60 * S).isoformat()  # 1970 is no time: when the cloud heard
    store(fleet, chain.batch(1))  # a redelivery changes nothing
    assert state(fleet)["applied_version"] == 2


def test_a_refused_version_shows_rejected_with_the_machines_reason_until_the_next(fleet):
    chain = Chain()
    chain.add("config.applied", version=1, slots=2)
    with fleet.begin() as conn:
        planogram.create(conn, MACHINE, [ps(), ps("C9", "water", 200, 5, 1)], NOW)
    chain.add("command.rejected", cmd_id="config-2", reason="no slot C9 on this machine", version=2)
    store(fleet, chain.batch(1))
    got = state(fleet)
    assert (got["state"], got["rejected_version"], got["rejected_reason"], got["applied_version"]) == (
        "rejected", 2, "no slot C9 on this machine", 1)
    with fleet.begin() as conn:
        assert planogram.wanted_by(conn, MACHINE, 1) is None  # sending it again would change nothing
        planogram.create(conn, MACHINE, [ps()], NOW)
        assert planogram.status(conn, MACHINE)["state"] == "pending"
        assert planogram.wanted_by(conn, MACHINE, 1).version == 3
        assert planogram.wanted_by(conn, MACHINE, 3) is None


def test_an_absurd_version_from_a_machine_is_stored_but_not_projected(fleet):
    chain = Chain()
    chain.add("config.applied", version=2**40, slots=1)
    assert store(fleet, chain.batch(1)).stored == 1
    assert state(fleet)["applied_version"] == 0


@contextmanager
def statements(engine):
    seen: list[str] = []

    def note(conn, cursor, statement, params, context, executemany):
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def test_a_batch_without_config_door_or_failure_facts_costs_no_statement_for_them(fleet):
    chain = Chain()
    for i in range(50):
        chain.add("restock", slot="A1", count=i % 10)
    with statements(fleet) as seen:
        store(fleet, chain.batch(1))
    touched = [s for s in seen if any(t in s for t in ("machine_configs", "machine_watch", "vend_failures"))]
    assert touched == []


# -- alerts, at injected times -------------------------------------------------------------------------

def alerts_at(engine, now, readings=None, machine_id=None, kind=None) -> list:
    with engine.connect() as conn:
        found = alerts.compute(conn, now, LIMITS, readings or {}, machine_id)
    return [a for a in found if kind is None or a.kind == kind]


def status(engine, head, now, online=True, machine_id=MACHINE):
    with engine.begin() as conn:
        message = Status(online=online, firmware="1.0", ledger_head=head)
        assert machines.apply_status(conn, machine_id, message, now)
        alerts.note_status(conn, machine_id, message, now)


def test_offline_past_the_limit(fleet):
    assert alerts_at(fleet, NOW + 59 * S) == []
    (a,) = alerts_at(fleet, NOW + 61 * S)
    assert (a.kind, a.since, a.detail) == ("offline", NOW, "silent for 61 s")
    status(fleet, 0, NOW + 100 * S, online=False)
    assert alerts_at(fleet, NOW + 150 * S) == []
    (a,) = alerts_at(fleet, NOW + (100 + 3 * 3600) * S)
    assert (a.since, a.detail) == (NOW + 100 * S, "offline for 3 h")
    with fleet.begin() as conn:
        machines.add_machine(conn, "m-2", "Two", "", NOW)
    (a,) = alerts_at(fleet, NOW + 3600 * S, machine_id="m-2")
    assert a.detail == "offline for 60 min (never connected)"


def test_repeated_failed_vends_on_one_slot_within_the_window(fleet):
    chain = Chain()
    for i in range(3):
        chain.add("vend.failed", order_id=f"o-{i}", slot="A1", reason="no drop seen after 2 turns")
    chain.add("vend.failed", order_id="o-9", slot="A2", reason="no drop seen after 2 turns")
    store(fleet, chain.batch(1, 2))
    assert alerts_at(fleet, NOW + 10 * S, kind="vend_failures") == []  # two are not yet "repeated"
    store(fleet, chain.batch(3))
    (a,) = alerts_at(fleet, NOW + 10 * S, kind="vend_failures")
    assert (a.slot, a.value, a.since) == ("A1", 3, NOW)
    assert a.detail == "3 failed vends on slot A1 in the last 10 min"
    assert alerts_at(fleet, NOW + 601 * S, kind="vend_failures") == []  # the first fell out of the window


def test_temperature_out_of_range_for_long_enough(fleet):
    readings = Readings(LIMITS)
    readings.note(MACHINE, 5.0, NOW)
    readings.note(MACHINE, 9.5, NOW + 10 * S)
    readings.note(MACHINE, 11.0, NOW + 40 * S)
    assert alerts_at(fleet, NOW + 40 * S, readings.snapshot(), kind="temperature") == []
    status(fleet, 0, NOW + 300 * S)
    readings.note(MACHINE, 12.0, NOW + 310 * S)
    (a,) = alerts_at(fleet, NOW + 310 * S, readings.snapshot(), kind="temperature")
    assert (a.since, a.value) == (NOW + 10 * S, 12.0)
    assert a.detail == "12.0 C, outside 2..8 C for 5 min"
    readings.note(MACHINE, 6.0, NOW + 320 * S)
    assert alerts_at(fleet, NOW + 320 * S, readings.snapshot(), kind="temperature") == []
    readings.note(MACHINE, -3.0, NOW + 330 * S)
    # an old reading says nothing about now: the offline alert speaks instead
    assert alerts_at(fleet, NOW + 2000 * S, readings.snapshot(), kind="temperature") == []


def test_door_open_too_long_from_the_ledgers_door_events(fleet):
    chain = Chain()
    chain.add("door.opened")
    store(fleet, chain.batch(1))
    assert alerts_at(fleet, NOW + 100 * S, kind="door_open") == []
    (a,) = alerts_at(fleet, NOW + 130 * S, kind="door_open")
    assert (a.since, a.detail) == (NOW, "door open for 2 min")
    chain.add("door.closed")
    unsynced(chain, "door.opened")
    store(fleet, chain.batch(2), now=NOW + 1000 * S)
    (a,) = alerts_at(fleet, NOW + 1200 * S, kind="door_open")
    assert a.since == NOW + 1000 * S  # a 1970 time is replaced by when the cloud heard of it
    chain.add("door.closed")
    store(fleet, chain.batch(4))
    assert alerts_at(fleet, NOW + 5000 * S, kind="door_open") == []


def test_data_not_synced_while_the_cloud_makes_no_progress(fleet):
    chain = Chain()
    for i in range(10):
        chain.add("restock", slot="A1", count=i)
    status(fleet, 10, NOW)
    assert alerts_at(fleet, NOW + 170 * S, kind="not_synced") == []
    (a,) = alerts_at(fleet, NOW + 190 * S, kind="not_synced")
    assert (a.since, a.value) == (NOW, 10)
    store(fleet, chain.batch(1, 5), now=NOW + 200 * S)
    assert alerts_at(fleet, NOW + 200 * S, kind="not_synced") == []  # progress: the event it waited for came
    status(fleet, 10, NOW + 210 * S)
    assert alerts_at(fleet, NOW + 300 * S, kind="not_synced") == []
    (a,) = alerts_at(fleet, NOW + 400 * S, kind="not_synced")
    assert (a.since, a.value) == (NOW + 210 * S, 5)
    store(fleet, chain.batch(6), now=NOW + 500 * S)
    status(fleet, 10, NOW + 510 * S)
    assert alerts_at(fleet, NOW + 5000 * S, kind="not_synced") == []
    with fleet.connect() as conn:
        assert conn.execute(sa.select(alerts.machine_watch.c.unsynced_since)).scalar() is None


def machine_states() -> list[dict]:
    """One machine per case: each rule's inputs at a microsecond before, at and after its limit (None: not
    set), crossed with the others it reads, retired or not; what a rule does not read stays quiet."""
    us = timedelta(microseconds=1)

    def around(seconds):
        return [None, seconds * S - us, seconds * S, seconds * S + us]

    quiet = dict(seen=timedelta(0), online=True, door=None, unsynced=None, head_gap=0, seq_gap=0, reading=None,
                 out_for=None)
    cases = [dict(seen=seen, online=online) for seen in around(LIMITS.offline_s) + [timedelta(0)]
             for online in (True, False)]
    cases += [dict(door=door) for door in around(LIMITS.door_open_s)]
    cases += [dict(unsynced=since, head_gap=head, seq_gap=seq) for since in around(LIMITS.unsynced_s)
              for head in (-1, 0, 1) for seq in (-1, 0, 1)]
    cases += [dict(reading=at, out_for=out) for at in around(LIMITS.offline_s) + [timedelta(0)]
              for out in around(LIMITS.temp_for_s)]
    return [dict(quiet, **case, retired=retired) for case in cases for retired in (False, True)]


def plainly(states: dict, readings: dict, now) -> set:
    """The alerts of the module's table, machine by machine, as plain Python says them."""
    found = set()
    for machine_id, m in states.items():
        if m["retired"]:
            continue
        seen = now - m["seen"] if m["seen"] is not None else NOW  # never seen: since it was added
        if now - seen > LIMITS.offline_s * S:
            found.add((machine_id, "offline", seen))
        if m["door"] is not None and m["door"] > LIMITS.door_open_s * S:
            found.add((machine_id, "door_open", now - m["door"]))
        if m["unsynced"] is not None and m["head_gap"] > 0 and m["seq_gap"] > 0 \
                and m["unsynced"] > LIMITS.unsynced_s * S:
            found.add((machine_id, "not_synced", now - m["unsynced"]))
        r = readings.get(machine_id)
        if r is not None and r.out_since is not None and now - r.at <= LIMITS.offline_s * S \
                and now - r.out_since >= LIMITS.temp_for_s * S:
            found.add((machine_id, "temperature", r.out_since))
    return found


def test_the_database_picks_the_same_machines_as_the_plain_rules(engine):
    """``compute`` has SQL pick out the machines with something to say; it must pick exactly those the rules
    name, to the microsecond at each limit, on both databases, for the fleet and for each machine."""
    now = NOW + 3600 * S
    states = {f"p-{i}": m for i, m in enumerate(machine_states())}
    readings = {"not-a-machine": alerts.Reading(30.0, now, NOW)}  # telemetry from a machine never added
    w = alerts.machine_watch
    with engine.begin() as conn:
        for machine_id, m in states.items():
            machines.add_machine(conn, machine_id, machine_id, "", NOW)
            conn.execute(machines.machines.update().where(machines.machines.c.id == machine_id).values(
                online=m["online"], last_seen=None if m["seen"] is None else now - m["seen"],
                retired_at=now if m["retired"] else None, cloud_head=2, machine_head=2 + m["head_gap"]))
            if m["door"] is not None or m["unsynced"] is not None:
                conn.execute(w.insert().values(
                    machine_id=machine_id, door_open_since=None if m["door"] is None else now - m["door"],
                    unsynced_since=None if m["unsynced"] is None else now - m["unsynced"],
                    unsynced_seq=2 + m["seq_gap"]))
            if m["reading"] is not None:
                out_since = None if m["out_for"] is None else now - m["out_for"]
                readings[machine_id] = alerts.Reading(1.5, now - m["reading"], out_since)
    expected = plainly(states, readings, now)
    assert {kind for _m, kind, _since in expected} == {"offline", "door_open", "not_synced", "temperature"}
    looked = {(a.machine_id, a.kind, a.since) for a in alerts_at(engine, now, readings) if a.machine_id in states}
    assert looked == expected
    for machine_id in states:
        assert {(a.machine_id, a.kind, a.since) for a in alerts_at(engine, now, readings, machine_id=machine_id)} \
            == {a for a in expected if a[0] == machine_id}


def test_the_limits_are_checked_when_the_cloud_starts(tmp_path):
    settings = cloud.core.settings.parse(["--var", str(tmp_path), "--alert-temp-min", "9", "--alert-temp-max", "3"])
    with pytest.raises(SystemExit, match="alert temperatures must be"):
        cloud.service.Cloud(settings)
    assert cloud.core.settings.parse(["--var", str(tmp_path)]).alert_offline_s == Limits().offline_s


# -- the Config message --------------------------------------------------------------------------------

def config_payload(version=1, slots=None, **extra) -> bytes:
    if slots is None:
        slots = [{"code": "A1", "product": "Cola", "price": 350, "currency": "CNY", "capacity": 10, "par": 8}]
    return json.dumps({"v": 1, "version": version, "slots": slots, **extra}).encode()


def slot(**changes) -> dict:
    return {"code": "A1", "product": "Cola", "price": 350, "currency": "CNY", "capacity": 10, "par": 8, **changes}


def test_config_round_trip_and_topic():
    config = Config(7, (ConfigSlot("A1", "Cola", 350, "CNY", 10, 8), ConfigSlot("B12", "Crisps", 0, "EUR", 1, 0)))
    assert Config.decode(config.encode()) == config
    assert decode("config", config.encode()) == config
    assert topics.KINDS["config"] == (1, True)  # QoS 1, retained: a machine that was off finds it
    assert Config.decode(config_payload(slots=[slot(extra="a newer cloud says more")])).slots[0].code == "A1"


@pytest.mark.parametrize("data, fragments", [
    (b"{not json", ["config: not valid JSON"]),
    (b'{"v": 2, "version": 1, "slots": []}', ["protocol version 2"]),
    (b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", ["over the", str(MAX_PAYLOAD_BYTES)]),
    (config_payload(version=0), ["field 'version' must be between 1"]),
    (config_payload(version=-3), ["field 'version' must be between 1"]),
    (config_payload(version=True), ["field 'version' must be an integer"]),
    (config_payload(version="2"), ["field 'version' must be an integer"]),
    (json.dumps({"v": 1, "slots": []}).encode(), ["missing field 'version'"]),
    (json.dumps({"v": 1, "version": 2}).encode(), ["config version 2: missing field 'slots'"]),
    (config_payload(slots=[]), ["0 slots; a planogram has 1-500"]),
    (config_payload(slots=[slot()] * (MAX_CONFIG_SLOTS + 1)), ["501 slots"]),
    (config_payload(slots=["A1"]), ["slots[0]: a slot must be an object"]),
    (config_payload(slots=[slot(code="a1")]), ["slots[0]: code 'a1' is not a slot code"]),
    (config_payload(slots=[slot(), slot(price=1)]), ["slot A1 appears twice"]),
    (config_payload(slots=[slot(price=-1)]), ["slots[0] (A1): price must be 0-"]),
    (config_payload(slots=[slot(price=MAX_PRICE + 1)]), ["price must be 0-"]),
    (config_payload(slots=[slot(price=3.5)]), ["field 'price' must be an integer"]),
    (config_payload(slots=[slot(currency="yuan")]), ["currency 'yuan' is not an ISO 4217 code"]),
    (config_payload(slots=[slot(capacity=0)]), ["capacity must be 1-1000, got 0"]),
    (config_payload(slots=[slot(capacity=-2, par=0)]), ["capacity must be 1-1000, got -2"]),
    (config_payload(slots=[slot(par=11)]), ["par must be 0-10 (the capacity), got 11"]),
    (config_payload(slots=[slot(par=-1)]), ["par must be 0-10"]),
    (config_payload(slots=[slot(product="")]), ["product must be 1-80 printable characters"]),
    (config_payload(slots=[slot(product="Cola\n")]), ["product must be 1-80 printable"]),
    (config_payload(slots=[slot(product=None)]), ["missing field 'product'"]),
])
def test_config_rejects_malformed_payloads_with_a_reason(data, fragments):
    with pytest.raises(ProtocolError) as info:
        Config.decode(data)
    for fragment in fragments:
        assert fragment in str(info.value)


# -- migration of a fleet that had slots before planograms -----------------------------------------------

def test_the_migration_gives_every_machine_a_cabinet_and_its_slots_as_version_1(empty_db_url):
    db_url = empty_db_url
    engine = cloud.core.db.make_engine(db_url)
    try:
        cfg = cloud.core.db.alembic_config(db_url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003")
            m = sa.table("machines", *(sa.column(c) for c in ("id", "name", "secret", "mqtt_password",
                                                              "created_at", "cloud_head")))
            p = sa.table("products", sa.column("id"), sa.column("sku"), sa.column("name"))
            s = sa.table("slots", *(sa.column(c) for c in ("machine_id", "slot", "product_id", "price", "currency",
                                                           "capacity", "count")))
            e = sa.table("events", *(sa.column(c) for c in ("machine_id", "seq", "ts", "boot", "clock_synced",
                                                            "kind", "data", "prev_hash", "hash")))
            conn.execute(m.insert(), [dict(id=i, name=i, secret="s" * 32, mqtt_password="p", created_at=NOW,
                                           cloud_head=1) for i in ("old-1", "old-2")])
            conn.execute(p.insert().values(id=1, sku="cola", name="Cola"))
            conn.execute(s.insert().values(machine_id="old-1", slot="A1", product_id=1, price=350, currency="CNY",
                                           capacity=10, count=4))
            conn.execute(e.insert().values(machine_id="old-1", seq=1, ts="t", boot=1, clock_synced=True, kind="boot",
                                           data="{}", prev_hash="0" * 64, hash="f" * 64))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        with engine.connect() as conn:
            assert conn.execute(sa.select(machines.cabinets.c.machine_id, machines.cabinets.c.number)
                                .order_by(machines.cabinets.c.machine_id)).all() == [("old-1", 1), ("old-2", 1)]
            row = slot_row(conn, "old-1", "A1")
            assert (row.count, row.cabinet, row.par_level, row.in_planogram) == (4, 1, 0, True)
            assert planogram.status(conn, "old-1")["desired_version"] == 1
            assert planogram.status(conn, "old-2")["state"] == "none"
            assert planogram.config_message(conn, "old-1") == Config(1, (ConfigSlot("A1", "Cola", 350, "CNY", 10, 0),))
    finally:
        engine.dispose()


# -- the API and vendctl ----------------------------------------------------------------------------------

@pytest.fixture
def cloud_obj(tmp_path, db_url):
    settings = cloud.core.settings.Settings(var=str(tmp_path), db=db_url, broker="127.0.0.1:1").resolve()
    obj = cloud.service.Cloud(settings)  # never started: no broker, no threads
    obj.published = []
    obj.bus.publish = lambda machine_id, kind, payload: obj.published.append((machine_id, kind, payload)) or True
    cloud.core.db.migrate(obj.engine)
    with obj.engine.begin() as conn:
        add_machine(conn)
    yield obj
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, BOOT, b"k" * 32)) as c:
        yield c


def audit_rows(engine, action):
    with engine.connect() as conn:
        return audit.query(conn, action=action)


BODY = {"slots": [dict(slot="A1", sku="cola", price=300, currency="CNY", capacity=12, par_level=10),
                  dict(slot="A2", sku="water", price=200, currency="CNY", capacity=12, par_level=6)],
        "note": "summer prices"}


def test_a_new_version_through_the_api_is_audited_published_and_pending(client, cloud_obj):
    r = client.post("/api/v1/machines/m-1/planogram", json=BODY, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json() == {"machine": MACHINE, "version": 2, "slots": 2, "published": True}
    ((machine_id, kind, payload),) = cloud_obj.published
    assert (machine_id, kind) == (MACHINE, "config")
    assert Config.decode(payload) == Config(2, (ConfigSlot("A1", "Cola", 300, "CNY", 12, 10),
                                                ConfigSlot("A2", "Water", 200, "CNY", 12, 6)))
    (entry,) = audit_rows(cloud_obj.engine, "machine.planogram")
    admin = client.get("/api/v1/me", headers=ADMIN).json()["id"]
    assert (entry["user_id"], entry["object_id"], entry["change"]["version"], entry["change"]["note"]) == (
        admin, MACHINE, 2, "summer prices")
    got = client.get("/api/v1/machines/m-1/planogram", headers=ADMIN).json()
    assert (got["version"], got["desired_version"], got["applied_version"], got["state"]) == (2, 2, 0, "pending")
    assert got["slots"][0] == {"slot": "A1", "cabinet": 1, "sku": "cola", "name": "Cola", "price": 300,
                               "currency": "CNY", "capacity": 12, "par_level": 10}
    assert client.get("/api/v1/machines/m-1/planogram?version=1", headers=ADMIN).json()["slots"][0]["price"] == 350
    assert client.get("/api/v1/machines/m-1/planogram?version=3", headers=ADMIN).status_code == 404
    versions = client.get("/api/v1/machines/m-1/planogram/versions", headers=ADMIN).json()
    assert [(v["version"], v["created_by"], v["slots"]) for v in versions] == [(2, admin, 2), (1, None, 2)]
    (m,) = client.get("/api/v1/machines", headers=ADMIN).json()
    assert m["planogram"]["state"] == "pending" and m["planogram"]["desired_version"] == 2
    slots = client.get("/api/v1/machines/m-1/slots", headers=ADMIN).json()
    assert [(s["slot"], s["price"], s["par_level"], s["cabinet"]) for s in slots] == [("A1", 300, 10, 1),
                                                                                      ("A2", 200, 6, 1)]


def test_the_bus_publishes_configs_qos_1_retained():
    sent = []

    class FakeClient:
        def publish(self, topic, payload, qos, retain):
            sent.append((topic, qos, retain))
            return type("Info", (), {"rc": 0})()

    bus = cloud.service.Bus.__new__(cloud.service.Bus)
    bus.client = FakeClient()
    assert bus.publish("m-1", "config", b"{}") and bus.publish("m-1", "ack", b"{}")
    assert sent == [("vend/v1/m-1/config", 1, True), ("vend/v1/m-1/ack", 1, False)]


def bad(**changes):
    return {"slots": [dict(BODY["slots"][0], **changes)]}


@pytest.mark.parametrize("body, status, fragment", [
    (bad(price=-5), 422, "slots[0] (A1): price must be a whole number of minor units from 0"),
    (bad(capacity=-1), 422, "slots[0] (A1): capacity must be 1-1000, got -1"),
    (bad(par_level=13), 422, "slots[0] (A1): par_level 13 is above the capacity 12"),
    (bad(sku="unicorn"), 422, "slots[0] (A1): sku 'unicorn' is not a known product"),
    (bad(slot="AA1"), 422, "slots[0]: slot 'AA1' is not a slot code like A1"),
    (bad(cabinet=2), 422, "machine m-1 has no cabinet 2"),
    (bad(par=3), 422, "slots[0]: unknown field 'par'"),
    ({"slots": []}, 422, "slots must be a list of 1-500 slot objects"),
    ({"slot": []}, 422, "unknown field 'slot'"),
    ({"slots": BODY["slots"], "note": "x" * 201}, 422, "note must be text of at most 200"),
])
def test_bad_input_is_a_clear_error_and_nothing_is_written(client, cloud_obj, body, status, fragment):
    before = (count(cloud_obj.engine, planogram.planograms), len(audit_rows(cloud_obj.engine, "machine.planogram")))
    r = client.post("/api/v1/machines/m-1/planogram", json=body, headers=ADMIN)
    assert r.status_code == status and fragment in r.json()["error"], r.text
    assert (count(cloud_obj.engine, planogram.planograms),
            len(audit_rows(cloud_obj.engine, "machine.planogram"))) == before
    assert cloud_obj.published == []


def test_an_unknown_machine_is_404(client):
    for method, path, body in (("POST", "/api/v1/machines/m-9/planogram", BODY),
                               ("GET", "/api/v1/machines/m-9/planogram", None),
                               ("GET", "/api/v1/machines/m-9/planogram/versions", None),
                               ("GET", "/api/v1/machines/m-9", None),
                               ("GET", "/api/v1/machines/m-9/alerts", None),
                               ("POST", "/api/v1/machines/m-9/cabinets", {"number": 2}),
                               ("PUT", "/api/v1/machines/m-9/location", {"location_id": None})):
        r = client.request(method, path, json=body, headers=ADMIN)
        assert r.status_code == 404 and "no machine 'm-9'" in r.json()["error"], (method, path, r.text)


def test_put_slots_keeps_working_and_makes_a_version(client, cloud_obj):
    body = [dict(slot="B1", sku="tea", name="Tea", price=300, currency="CNY", capacity=5, par_level=4)]
    r = client.put("/api/v1/machines/m-1/slots", json=body, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"machine": MACHINE, "slots": 1, "version": 2, "published": True}
    got = client.get("/api/v1/machines/m-1/planogram", headers=ADMIN).json()
    assert [(s["slot"], s["name"], s["par_level"]) for s in got["slots"]] == [("A1", "Cola", 10), ("A2", "Water", 10),
                                                                               ("B1", "Tea", 4)]
    r = client.put("/api/v1/machines/m-1/slots", json=[dict(body[0], par_level=6)], headers=ADMIN)
    assert r.status_code == 422 and "B1: par_level 6 must be 0 to the capacity 5" in r.json()["error"]


def test_locations_cabinets_and_a_machines_details(client, cloud_obj):
    r = client.post("/api/v1/locations", json={"name": "Station hall", "address": "1 Main St", "latitude": 31.23,
                                               "longitude": 121.47}, headers=ADMIN)
    assert r.status_code == 201, r.text
    loc = r.json()
    assert (loc["name"], loc["latitude"], loc["longitude"], loc["machines"]) == ("Station hall", 31.23, 121.47, [])
    assert client.put("/api/v1/machines/m-1/location", json={"location_id": loc["id"]}, headers=ADMIN).json() == {
        "machine": MACHINE, "location_id": loc["id"], "changed": True}
    assert client.get("/api/v1/locations", headers=ADMIN).json()[0]["machines"] == [MACHINE]
    assert client.post("/api/v1/machines/m-1/cabinets", json={"number": 2, "name": "chilled"},
                       headers=ADMIN).status_code == 201
    r = client.post("/api/v1/machines/m-1/planogram", json=bad(cabinet=2), headers=ADMIN)
    assert r.status_code == 201
    detail = client.get("/api/v1/machines/m-1", headers=ADMIN).json()
    assert detail["location"]["name"] == "Station hall"
    assert detail["cabinets"] == [{"number": 1, "name": "main"}, {"number": 2, "name": "chilled"}]
    assert detail["planogram"]["desired_version"] == 2
    assert [a["kind"] for a in detail["alerts"]] == ["offline"]  # last seen at NOW, long ago
    (m,) = client.get("/api/v1/machines", headers=ADMIN).json()
    assert (m["location_id"], m["location_name"]) == (loc["id"], "Station hall")
    actions = [a["action"] for a in audit_rows(cloud_obj.engine, None)]
    assert {"location.add", "machine.location", "machine.cabinet", "machine.planogram"} <= set(actions)


@pytest.mark.parametrize("body, fragment", [
    ({"name": "X", "latitude": 90.5, "longitude": 0}, "latitude 90.5 is out of range: it must be between -90 and 90"),
    ({"name": "X", "latitude": 0, "longitude": -180.01}, "longitude -180.01 is out of range"),
    ({"name": "X", "latitude": 10}, "latitude and longitude go together"),
    ({"name": "X", "latitude": "north", "longitude": 1}, "latitude must be a number of degrees"),
    ({"name": "X", "latitude": True, "longitude": 1}, "latitude must be a number of degrees"),
    ({"name": "", "latitude": 1, "longitude": 1}, "name must be 1-80 characters"),
    ({"name": "X", "address": "a" * 201}, "address must be text of at most 200"),
    ({"name": "X", "lat": 1}, "unknown field 'lat'"),
])
def test_a_bad_location_names_the_field_and_writes_nothing(client, cloud_obj, body, fragment):
    r = client.post("/api/v1/locations", json=body, headers=ADMIN)
    assert r.status_code == 422 and fragment in r.json()["error"], r.text
    assert count(cloud_obj.engine, locations.locations) == 0
    assert audit_rows(cloud_obj.engine, "location.add") == []


def test_placing_at_an_unknown_location_or_a_second_cabinet_1_is_refused(client, cloud_obj):
    r = client.put("/api/v1/machines/m-1/location", json={"location_id": 42}, headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"] == "no location 42"
    r = client.post("/api/v1/machines/m-1/cabinets", json={"number": 1}, headers=ADMIN)
    assert r.status_code == 422 and "has a cabinet 1 already" in r.json()["error"]
    r = client.post("/api/v1/machines/m-1/cabinets", json={"number": 0}, headers=ADMIN)
    assert r.status_code == 422 and "number must be a whole number 1-20" in r.json()["error"]
    assert count(cloud_obj.engine, locations.machine_locations) == 0
    assert count(cloud_obj.engine, machines.cabinets) == 1


def test_the_cloud_sends_the_newest_version_again_to_a_machine_online_without_it(cloud_obj):
    with cloud_obj.engine.begin() as conn:
        planogram.create(conn, MACHINE, [ps()], NOW)
    status_topic = topics.topic(MACHINE, "status")
    cloud_obj.apply([(status_topic, Status(online=True, firmware="1", ledger_head=0, planogram_version=1).encode())])
    configs = [Config.decode(p) for m, k, p in cloud_obj.published if k == "config"]
    assert [c.version for c in configs] == [2]
    cloud_obj.published.clear()
    cloud_obj.apply([(status_topic, Status(online=True, firmware="1", ledger_head=0, planogram_version=2).encode()),
                     (topics.topic(MACHINE, "telemetry"), Telemetry(temperature_c=4.5).encode()),
                     (topics.topic(MACHINE, "config"), Config(2, (ConfigSlot("A1", "x", 1, "CNY", 1, 0),)).encode())])
    # No config again; only the ack of the cloud's clock that answers every online status (seq 0).
    assert [(k, Ack.decode(p).seq) for _, k, p in cloud_obj.published] == [("ack", 0)]
    assert cloud_obj.readings.snapshot()[MACHINE].temperature_c == 4.5
    assert cloud_obj.stats.counts["rejected"] == 0


def test_the_alerts_routes(client):
    (a,) = client.get("/api/v1/alerts", headers=ADMIN).json()
    assert (a["machine_id"], a["kind"], a["since"]) == (MACHINE, "offline", NOW.isoformat())
    assert client.get("/api/v1/machines/m-1/alerts", headers=ADMIN).json() == [a]


@pytest.fixture
def vendctl(client, monkeypatch, capsys):
    def run(*argv):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, ADMIN)))
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_vendctl_planogram_set_from_csv_and_json_and_show(vendctl, tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("slot,sku,price,currency,capacity,par_level\nA1,cola,3.80,CNY,10,8\nA2,water,2,CNY,12,6\n")
    code, out, err = vendctl("planogram", MACHINE, "--set", str(csv_file), "--note", "from the sheet")
    assert code == 0, err
    assert out.strip() == "machine m-1: planogram version 2 made (2 slots), sent to the machine"
    code, out, _ = vendctl("planogram", MACHINE)
    assert out.splitlines()[0] == ("machine m-1: desired version 2, applied version 0 - PENDING: the machine has "
                                   "not applied it yet")
    assert out.splitlines()[2].split() == ["A1", "1", "cola", "Cola", "¥3.80", "10", "8"]
    json_file = tmp_path / "p.json"
    json_file.write_text(json.dumps({"slots": BODY["slots"]}))
    assert vendctl("planogram", MACHINE, "--set", str(json_file))[0] == 0
    shown = json.loads(vendctl("planogram", MACHINE, "--json")[1])
    assert (shown["desired_version"], shown["slots"][0]["price"]) == (3, 300)
    code, out, _ = vendctl("planogram", MACHINE, "--history")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["3", "2", "1"] and "from the sheet" in out
    code, out, _ = vendctl("machines")
    assert "v3 pending (has v0)" in out


@pytest.mark.parametrize("text, fragment", [
    ("slot,sku,price,currency,capacity\nA1,cola,3,CNY,10\n", "missing column 'par_level'"),
    ("slot,sku,price,currency,capacity,par_level\nA1,cola,-3,CNY,10,2\n", "line 2: '-3' is not an amount"),
    ("slot,sku,price,currency,capacity,par_level\nA1,cola,3,CNY,ten,2\n", "line 2: invalid literal"),
    ("slot,sku,price,currency,capacity,par_level\nA1,cola,3,CNY,10,12\n", "par_level 12 is above the capacity 10"),
])
def test_vendctl_planogram_refuses_a_bad_file_naming_the_line_or_field(vendctl, tmp_path, text, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    code, out, err = vendctl("planogram", MACHINE, "--set", str(path))
    assert code == 1 and fragment in err, err


def test_vendctl_locations_and_alerts(vendctl):
    code, out, err = vendctl("locations", "add", "Hall", "--address", "1 Main St", "--lat", "31.2", "--lon", "121.5")
    assert code == 0 and out.strip() == "location 1 'Hall' added", err
    assert vendctl("locations", "place", MACHINE, "1")[1].strip() == "machine m-1 is at location 1"
    code, out, _ = vendctl("locations")
    assert out.splitlines()[1].split() == ["1", "Hall", "1", "Main", "St", "31.20000,", "121.50000", MACHINE]
    code, _, err = vendctl("locations", "add", "Pole", "--lat", "91", "--lon", "0")
    assert code == 1 and "latitude 91.0 is out of range" in err
    code, out, _ = vendctl("alerts")
    # Each alert is kept with an id, to acknowledge or resolve it by (cloud/alerts/cli.py).
    assert out.splitlines()[0].split() == ["ID", "STATE", "MACHINE", "ALERT", "SLOT", "SINCE", "(UTC)", "WHO", "DETAIL"]
    (shown,) = json.loads(vendctl("alerts", "--machine", MACHINE, "--json")[1])
    assert shown["kind"] == "offline" and shown["state"] == "open"
    code, out, _ = vendctl("alerts", "ack", str(shown["id"]))
    assert (code, out.strip()) == (0, f"alert {shown['id']} (offline on m-1) acknowledged by admin")
