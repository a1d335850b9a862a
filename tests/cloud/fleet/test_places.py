"""Machines, locations and routes (issue 15): add a machine with its credentials, move it with a history,
retire it (its QR refused), locations with names per language and a time zone, routes in order with the
day's routes; through the API (role-checked), the dashboard's forms and vendctl, on both databases."""

import json
import re
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.app
import cloud.cli
from cloud.core.db import utcnow
from cloud.fleet import locations, machines
from cloud.people import audit, auth, staff
from cloud.stock import picking
from protocol import token as qrtoken
from tests.cloud_fixtures import (MACHINE, SECRET, ThroughTestClient, add_machine, db_url, fast_hashes,  # noqa: F401
                                  idle_cloud)

BOOT = "bootstrap-token-for-tests"
ADMIN = {"Authorization": f"Bearer {BOOT}"}
PW = "violet-tractor-harbour-91"


@pytest.fixture
def cloud_obj(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        add_machine(conn)
        add_machine(conn, "m-2", online=False)
        for username, role in (("mia", "manager"), ("tom", "technician")):
            staff.add_staff(conn, username, role, utcnow(), staff.hash_password(PW), False, None)
    yield obj
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, BOOT, b"k" * 32), follow_redirects=False) as c:
        yield c


def sign_in(client, username):
    r = client.post("/staff/login", data={"username": username, "password": PW})
    assert r.status_code == 303, r.text


def token_for(cloud_obj, username) -> dict:
    """A bearer token of a staff member, for the API."""
    with cloud_obj.engine.begin() as conn:
        user = staff.get_by_name(conn, username)
        _id, secret = auth.new_token(conn, user.id, "tests", utcnow())
    return {"Authorization": f"Bearer {secret}"}


def count(cloud_obj, table) -> int:
    with cloud_obj.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


# -- locations ---------------------------------------------------------------------------------------

def test_a_location_has_names_per_language_an_address_coordinates_and_a_time_zone(client):
    r = client.post("/api/v1/locations", headers=ADMIN, json={
        "name": "South Station", "names": {"zh-CN": "南站"}, "address": "1 Rail Rd", "latitude": 39.86,
        "longitude": 116.38, "tz": "Asia/Shanghai"})
    assert r.status_code == 201, r.text
    loc = r.json()
    assert (loc["name"], loc["names"], loc["tz"]) == ("South Station", {"zh-CN": "南站"}, "Asia/Shanghai")
    # A third language is one more entry, not a new column; an empty name drops a language.
    r = client.patch(f"/api/v1/locations/{loc['id']}", headers=ADMIN,
                     json={"names": {"ja": "南駅", "zh-CN": ""}, "tz": "Asia/Tokyo"})
    assert r.status_code == 200, r.text
    assert (r.json()["names"], r.json()["tz"], r.json()["changed"]) == ({"ja": "南駅"}, "Asia/Tokyo", ["names", "tz"])
    assert client.get(f"/api/v1/locations/{loc['id']}", headers=ADMIN).json()["names"] == {"ja": "南駅"}


@pytest.mark.parametrize("change, words", [
    ({"tz": "Mars/Olympus"}, "tz 'Mars/Olympus' is not a time zone"),
    ({"latitude": 91.0, "longitude": 0.0}, "latitude 91.0 is out of range"),
    ({"latitude": 10.0}, "latitude and longitude go together"),
    ({"names": {"zh CN!": "x"}}, "is not a language code"),
    ({"name": ""}, "name must be 1-80 characters"),
    ({"colour": "red"}, "unknown field 'colour'")])
def test_a_bad_location_edit_names_the_field_and_changes_nothing(client, change, words):
    loc = client.post("/api/v1/locations", headers=ADMIN, json={"name": "Lobby", "names": {"zh-CN": "大堂"}}).json()
    r = client.patch(f"/api/v1/locations/{loc['id']}", headers=ADMIN, json={"address": "new", **change})
    assert r.status_code == 422 and words in r.text, r.text
    after = client.get(f"/api/v1/locations/{loc['id']}", headers=ADMIN).json()
    assert (after["name"], after["names"], after["address"], after["tz"]) == ("Lobby", {"zh-CN": "大堂"}, "", "UTC")


def test_a_technician_reads_locations_but_does_not_change_them(client, cloud_obj):
    tom = token_for(cloud_obj, "tom")
    loc = client.post("/api/v1/locations", headers=ADMIN, json={"name": "Lobby"}).json()
    assert client.get(f"/api/v1/locations/{loc['id']}", headers=tom).status_code == 200
    assert client.patch(f"/api/v1/locations/{loc['id']}", headers=tom, json={"name": "X"}).status_code == 403
    assert client.post(f"/api/v1/machines/{MACHINE}/move", headers=tom, json={"location_id": loc["id"]}).status_code == 403
    assert client.post(f"/api/v1/machines/{MACHINE}/retire", headers=tom).status_code == 403


# -- moving and retiring -----------------------------------------------------------------------------

def test_a_move_ends_one_stay_and_begins_the_next_and_is_audited(client, cloud_obj):
    a = client.post("/api/v1/locations", headers=ADMIN, json={"name": "A"}).json()["id"]
    b = client.post("/api/v1/locations", headers=ADMIN, json={"name": "B"}).json()["id"]
    assert client.post(f"/api/v1/machines/{MACHINE}/move", headers=ADMIN, json={"location_id": a}).json()["changed"]
    r = client.post(f"/api/v1/machines/{MACHINE}/move", headers=ADMIN, json={"location_id": b})
    assert r.status_code == 200 and r.json()["from_location_id"] == a
    stays = client.get(f"/api/v1/machines/{MACHINE}/locations", headers=ADMIN).json()
    assert [(s["location"], s["from"] is None, s["to"] is None) for s in stays] == [("B", False, True),
                                                                                  ("A", True, False)]
    assert stays[0]["from"] == stays[1]["to"] and stays[0]["from"].endswith("+00:00")
    with cloud_obj.engine.connect() as conn:
        assert [e["change"] for e in audit.query(conn, action="machine.move")][:1] == [{"location_id": [a, b]}]


def test_moving_to_a_location_that_does_not_exist_names_it_and_writes_nothing(client, cloud_obj):
    before = count(cloud_obj, locations.machine_placements)
    r = client.post(f"/api/v1/machines/{MACHINE}/move", headers=ADMIN, json={"location_id": 42})
    assert r.status_code == 404 and "no location 42" in r.text
    r = client.post("/api/v1/machines/nope/move", headers=ADMIN, json={"location_id": None})
    assert r.status_code == 404 and "no machine 'nope'" in r.text
    assert count(cloud_obj, locations.machine_placements) == before


def test_a_retired_machine_stops_selling_keeps_its_history_and_cannot_be_retired_twice(client, cloud_obj):
    a = client.post("/api/v1/locations", headers=ADMIN, json={"name": "A"}).json()["id"]
    client.post(f"/api/v1/machines/{MACHINE}/move", headers=ADMIN, json={"location_id": a})
    r = client.post(f"/api/v1/machines/{MACHINE}/retire", headers=ADMIN)
    assert r.status_code == 200 and r.json()["left_location_id"] == a
    again = client.post(f"/api/v1/machines/{MACHINE}/retire", headers=ADMIN)
    assert again.status_code == 409 and f"machine {MACHINE} was retired already" in again.text
    moved = client.post(f"/api/v1/machines/{MACHINE}/move", headers=ADMIN, json={"location_id": a})
    assert moved.status_code == 409 and "is retired" in moved.text
    stays = client.get(f"/api/v1/machines/{MACHINE}/locations", headers=ADMIN).json()
    assert [(s["location"], s["to"] is not None) for s in stays] == [("A", True)]
    assert client.get(f"/api/v1/machines/{MACHINE}", headers=ADMIN).json()["retired_at"] == r.json()["retired_at"]
    # Nothing about it needs a person any more: m-2, never connected, is offline; the retired m-1 is not.
    assert {a["machine_id"] for a in client.get("/api/v1/alerts", headers=ADMIN).json()} == {"m-2"}
    # Its QR code: a clear page, not the menu.
    tok = qrtoken.make(MACHINE, SECRET.encode(), time.time(), 5)
    page = client.get(f"/q/{tok}")
    assert page.status_code == 410 and "no longer in service" in page.text


def test_a_route_naming_an_unknown_or_retired_machine_names_it_and_writes_nothing(client, cloud_obj):
    r = client.post("/api/v1/routes", headers=ADMIN, json={"name": "North", "machines": [MACHINE, "ghost"]})
    assert r.status_code == 404 and "no machine 'ghost'" in r.text
    client.post("/api/v1/machines/m-2/retire", headers=ADMIN)
    r = client.post("/api/v1/routes", headers=ADMIN, json={"name": "North", "machines": [MACHINE, "m-2"]})
    assert r.status_code == 409 and "machine m-2 is retired" in r.text
    r = client.post("/api/v1/routes", headers=ADMIN, json={"name": "North", "machines": [MACHINE, MACHINE]})
    assert r.status_code == 422 and f"{MACHINE} is on the route already" in r.text
    assert count(cloud_obj, picking.routes) == 0 and count(cloud_obj, picking.route_stops) == 0


def test_the_days_routes_are_those_driven_on_its_weekday(client):
    mon = client.post("/api/v1/routes", headers=ADMIN, json={"name": "Mon-Wed", "machines": ["m-2", MACHINE],
                                                              "weekdays": [1, 3]}).json()
    client.post("/api/v1/routes", headers=ADMIN, json={"name": "Weekend", "machines": [MACHINE], "weekdays": "67"})
    monday = client.get("/api/v1/routes/today?day=2026-12-07", headers=ADMIN).json()
    assert [(r["name"], [s["machine_id"] for s in r["stops"]]) for r in monday] == [("Mon-Wed", ["m-2", MACHINE])]
    assert [r["name"] for r in client.get("/api/v1/routes/today?day=2026-12-06", headers=ADMIN).json()] == ["Weekend"]
    assert client.get("/api/v1/routes/today?day=soon", headers=ADMIN).status_code == 422
    r = client.put(f"/api/v1/routes/{mon['id']}", headers=ADMIN, json={"weekdays": "8"})
    assert r.status_code == 422 and "1 (Monday) to 7 (Sunday)" in r.text
    assert client.get(f"/api/v1/routes/{mon['id']}", headers=ADMIN).json()["weekdays"] == "13"


def test_the_new_routes_are_in_the_openapi_schema(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for path in ("/api/v1/machines/{machine_id}/move", "/api/v1/machines/{machine_id}/retire",
                 "/api/v1/machines/{machine_id}/locations", "/api/v1/locations/{location_id}", "/api/v1/routes/today",
                 "/api/v1/routes/{route_id}"):
        assert path in paths


# -- vendctl ---------------------------------------------------------------------------------------

@pytest.fixture
def vendctl(client, monkeypatch, capsys):
    def run(*argv):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, ADMIN)))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_vendctl_locations_machines_and_routes(vendctl):
    code, out, _ = vendctl("locations", "add", "Station", "--name-in", "zh-CN=车站", "--tz", "Asia/Shanghai")
    assert code == 0 and "location 1 'Station' added" in out
    code, out, _ = vendctl("locations", "edit", "1", "--address", "1 Rail Rd", "--name-in", "ja=駅")
    assert code == 0 and "changed address, names" in out
    assert vendctl("machines", "move", MACHINE, "--to", "1")[1].strip() == f"machine {MACHINE} moved to location 1"
    code, out, _ = vendctl("locations", "show", "1")
    assert code == 0 and "name (ja): 駅" in out and "name (zh-CN): 车站" in out and MACHINE in out
    code, out, _ = vendctl("machines", "add", "m-3", "--name", "Third", "--at", "1")
    assert code == 0 and "machine m-3 created" in out
    code, _, err = vendctl("machines", "add", "m-4", "--at", "7")
    assert code != 0 and "no location 7" in err
    assert "m-4" not in vendctl("machines", "--json")[1]
    code, _, err = vendctl("machines", "move", MACHINE, "--to", "9")
    assert code != 0 and "no location 9" in err
    code, out, _ = vendctl("routes", "add", "North", "m-2", MACHINE, "--days", "135")
    assert code == 0 and f"m-2 → {MACHINE} (Mon Wed Fri)" in out
    assert vendctl("routes", "edit", "1", "--machines", f"{MACHINE},m-2")[1].strip() == "route 1 'North': changed machines"
    code, out, _ = vendctl("routes", "show", "--day", "2026-12-09")  # a Wednesday
    assert code == 0 and out.splitlines() == ["route 1 'North' on 2026-12-09:", f"  1. {MACHINE} Machine {MACHINE}",
                                              "  2. m-2 Machine m-2"]
    assert vendctl("routes", "show", "--day", "2026-12-10")[1].strip() == "no route is driven that day"
    code, _, err = vendctl("routes", "add", "South", "ghost")
    assert code != 0 and "no machine 'ghost'" in err
    assert vendctl("machines", "retire", "m-2")[0] == 0
    code, _, err = vendctl("machines", "retire", "m-2")
    assert code != 0 and "was retired already" in err


# -- the pages ---------------------------------------------------------------------------------------

def test_adding_a_machine_on_the_page_shows_its_secrets_once_and_never_logs_them(client, cloud_obj, caplog):
    sign_in(client, "mia")
    loc = client.post("/staff/locations", data={"name": "Lobby", "name_zh-CN": "大堂", "tz": "Asia/Shanghai"})
    assert loc.status_code == 303
    location_id = loc.headers["location"].split("/")[-1].split("?")[0]
    r = client.post("/staff/machines", data={"id": "m-new", "name": "New one", "location": location_id})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    with cloud_obj.engine.connect() as conn:
        creds = machines.credentials(conn, "m-new", utcnow())
        assert locations.location_of(conn, "m-new") == int(location_id)
        change = audit.query(conn, action="machine.add")[0]["change"]
    assert creds.secret in r.text and creds.mqtt_password in r.text and creds.mqtt_username in r.text
    assert creds.secret not in caplog.text and creds.secret not in json.dumps(change)
    again = client.get("/staff/machines")
    assert creds.secret not in again.text and "m-new" in again.text
    # The same id again: the error next to the field, the form kept.
    dup = client.post("/staff/machines", data={"id": "m-new", "name": "Twin", "location": ""})
    assert dup.status_code == 422 and 'id="error-id"' in dup.text and "exists already" in dup.text
    assert 'value="Twin"' in dup.text


def test_the_location_form_keeps_what_was_typed_and_names_the_wrong_field(client, cloud_obj):
    sign_in(client, "mia")
    r = client.post("/staff/locations", data={"name": "Lobby", "name_zh-CN": "大堂", "latitude": "95",
                                              "longitude": "10", "tz": "UTC"})
    assert r.status_code == 422 and 'id="error-latitude"' in r.text and "out of range" in r.text
    assert 'value="大堂"' in r.text and 'value="95"' in r.text
    assert count(cloud_obj, locations.locations) == 0
    r = client.post("/staff/locations", data={"name": "Lobby", "name_zh-CN": "大堂", "tz": "UTC"})
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and 'value="大堂"' in page.text
    client.cookies.set("vend_lang", "zh-CN")
    assert "大堂" in client.get("/staff/locations").text


def test_moving_and_retiring_on_the_machine_s_page(client, cloud_obj):
    sign_in(client, "mia")
    with cloud_obj.engine.begin() as conn:
        a = locations.add(conn, "Alpha", now=utcnow(), tz="Asia/Shanghai", names={"zh-CN": "甲"})
        locations.place(conn, MACHINE, a, utcnow())
        b = locations.add(conn, "Beta", now=utcnow())
    bad = client.post(f"/staff/machines/{MACHINE}/move", data={"location": "999"})
    assert bad.status_code == 422 and "no such location" in bad.text
    r = client.post(f"/staff/machines/{MACHINE}/move", data={"location": str(b)})
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert re.search(r'id="stands-at">Beta<', page) and "Alpha" in page
    assert f'<option value="{b}" selected>Beta</option>' in page and f'<option value="{a}">' in page
    assert client.post(f"/staff/machines/{MACHINE}/retire", data={}).status_code == 422
    assert client.post(f"/staff/machines/{MACHINE}/retire", data={"sure": "yes"}).status_code == 303
    twice = client.post(f"/staff/machines/{MACHINE}/retire", data={"sure": "yes"})
    assert twice.status_code == 409 and "retired already" in twice.text


def test_retiring_on_the_page_takes_the_machine_s_login_out_of_the_files_the_broker_reads(tmp_path, db_url):
    # Issue 15: a retired machine kept its broker login. (tests/e2e/test_rotation.py runs this against a real
    # Mosquitto through the API and vendctl.)
    obj = idle_cloud(tmp_path, db_url, broker_files=str(tmp_path / "broker"))
    with obj.engine.begin() as conn:
        add_machine(conn)
        add_machine(conn, "m-2", online=False)
        staff.add_staff(conn, "mia", "manager", utcnow(), staff.hash_password(PW), False, None)
    obj.refresh_broker()

    def files():
        return tuple((tmp_path / "broker" / name).read_text() for name in ("passwd", "acl"))

    passwd, acl = files()
    assert f"{MACHINE}.1:" in passwd and f"user {MACHINE}\n" in acl and f"vend/v1/{MACHINE}/events" in acl
    try:
        with TestClient(cloud.app.create_app(obj, BOOT, b"k" * 32), follow_redirects=False) as client:
            sign_in(client, "mia")
            assert client.post(f"/staff/machines/{MACHINE}/retire", data={"sure": "yes"}).status_code == 303
        passwd, acl = files()
        assert f"{MACHINE}." not in passwd and f"vend/v1/{MACHINE}/" not in acl
        assert "m-2.1:" in passwd and "vend/v1/m-2/events" in acl, "the other machines keep theirs"
    finally:
        obj.engine.dispose()


def test_a_technician_sees_the_pages_but_not_the_forms(client):
    sign_in(client, "tom")
    for path in ("/staff/machines", "/staff/locations", f"/staff/machines/{MACHINE}/place", "/staff/routes",
                 "/staff/routes/today"):
        r = client.get(path)
        assert r.status_code == 200 and 'method="post" action="/staff/' not in r.text.replace(
            'action="/staff/logout"', ""), path
    assert client.post("/staff/routes", data={"name": "X", "machine": MACHINE, "day": "1"}).status_code == 403
    assert client.post(f"/staff/machines/{MACHINE}/retire", data={"sure": "yes"}).status_code == 403


def test_a_route_is_made_and_reordered_with_buttons_and_the_pick_list_offers_today_s_first(client, cloud_obj):
    sign_in(client, "mia")
    bad = client.post("/staff/routes", data={"name": "North", "machine": MACHINE})
    assert bad.status_code == 422 and 'id="error-weekdays"' in bad.text and 'value="North"' in bad.text
    r = client.post("/staff/routes", data={"name": "North", "machine": MACHINE, "day": list("1234567")})
    assert r.status_code == 303
    route = r.headers["location"]
    assert client.post(route, data={"op": "add", "machine": "m-2"}).status_code == 303
    assert client.post(route, data={"op": "up:1"}).status_code == 303
    with cloud_obj.engine.connect() as conn:
        assert picking.list_routes(conn)[0]["machines"] == ["m-2", MACHINE]
    ghost = client.post(route, data={"op": "add", "machine": "ghost"})
    assert ghost.status_code == 404 and "no machine &#39;ghost&#39;" in ghost.text
    assert client.post(route, data={"op": "remove:5"}).status_code == 422
    client.post(f"/api/v1/machines/{MACHINE}/retire", headers=ADMIN)  # a retired stop: nothing to load there
    picks = client.get("/api/v1/routes/1/pick-list", headers=ADMIN).json()
    assert [m["machine_id"] for m in picks["machines"]] == ["m-2"]
    today = client.get("/staff/routes/today").text
    assert "North" in today and today.index("m-2") < today.index(MACHINE) and "(Retired)" in today
    pick = client.get("/staff/pick-lists").text
    assert re.search(r'<optgroup label="Today"><option value="\d+">North</option>', pick)
    # The machine menu offers the machines in service only (issue 15: the retired one was offered).
    assert '<option value="m-2">' in pick and f'<option value="{MACHINE}">' not in pick
