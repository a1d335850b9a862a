"""The fleet pages of the dashboard (cloud/fleet/pages.py): who may see and change what, the fleet's
figures, the screen mirror, and the planogram editor's errors and its one version per form."""

import re
import threading

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.fleet import locations, machines, planogram
from cloud.core.db import utcnow
from cloud.people import audit, staff
from cloud.fleet import pages as fleet
from tests.cloud_fixtures import MACHINE, add_machine, db_url, fast_hashes, idle_cloud  # noqa: F401  (fixtures)

BOOT = "bootstrap-token-for-tests"
PW = "violet-tractor-harbour-91"


@pytest.fixture
def cloud_obj(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        add_machine(conn)
        where = locations.add(conn, "Lobby", "1 Main St", 31.23, 121.47, now=utcnow())
        locations.place(conn, MACHINE, where, utcnow())
        add_machine(conn, "m-2", online=False)
        for username, role in (("mia", "manager"), ("tom", "technician"), ("sue", "supplier")):
            supplier = staff.add_supplier(conn, "Acme", "", utcnow()) if role == "supplier" else None
            staff.add_staff(conn, username, role, utcnow(), staff.hash_password(PW), False, supplier)
    yield obj
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, BOOT, b"k" * 32), follow_redirects=False) as c:
        yield c


def sign_in(client, username):
    r = client.post("/staff/login", data={"username": username, "password": PW})
    assert r.status_code == 303, r.text


def editor_form(client, **changes) -> dict:
    """The editor's fields as the page gives them, with some changed: {"price-0": "4.20"}."""
    html = client.get(f"/staff/machines/{MACHINE}").text
    form = dict(re.findall(r'<input id="[^"]*" name="([^"]+)" type="text" value="([^"]*)"', html))
    form.update(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    form.update(changes)
    return form


def versions(cloud_obj) -> int:
    with cloud_obj.engine.connect() as conn:
        return planogram.desired(conn, MACHINE)


@pytest.mark.parametrize("path", ["/staff", f"/staff/machines/{MACHINE}", f"/staff/machines/{MACHINE}/screen.svg"])
def test_without_a_session_the_pages_send_you_to_sign_in_and_back(client, path):
    r = client.get(path)
    assert (r.status_code, r.headers["location"]) == (303, "/staff/login?next=" + path)


@pytest.mark.parametrize("path", ["/staff", f"/staff/machines/{MACHINE}"])
def test_a_supplier_gets_a_page_saying_it_is_not_for_their_role(client, path):
    sign_in(client, "sue")
    r = client.get(path)
    assert r.status_code == 403 and "Not for your role" in r.text and "<html" in r.text


def test_the_fleet_shows_every_machine_with_state_fill_and_the_map(client):
    sign_in(client, "mia")
    r = client.get("/staff")
    assert r.status_code == 200
    assert 'href="/staff/machines/m-1"' in r.text and 'href="/staff/machines/m-2"' in r.text
    assert "Lobby" in r.text and "Online" in r.text and "Offline" in r.text
    assert "50% (10 of 20)" in r.text  # two slots of 10, five in each
    assert "<svg" in r.text and "<circle" in r.text and "<title" in r.text
    assert "Machines not on the map: 1" in r.text


def test_a_technician_sees_the_machine_and_its_planogram_but_cannot_change_it(client, cloud_obj):
    sign_in(client, "tom")
    r = client.get(f"/staff/machines/{MACHINE}")
    assert r.status_code == 200 and "Only a manager or an administrator can change the planogram" in r.text
    assert 'action="/staff/machines/m-1/slots"' not in r.text
    assert "Cola" in r.text and "5 of 10" in r.text
    r = client.post(f"/staff/machines/{MACHINE}/slots", data={"rows": "1", "key": "k" * 16, "slot-0": "A1"})
    assert r.status_code == 403 and "Not for your role" in r.text
    assert versions(cloud_obj) == 1


def test_the_screen_mirror_is_an_svg_with_a_qr_that_says_it_is_a_copy(client, monkeypatch):
    made = []
    real_make = fleet.qrtoken.make
    monkeypatch.setattr(fleet.qrtoken, "make", lambda *a, **k: made.append(real_make(*a, **k)) or made[-1])
    sign_in(client, "tom")
    r = client.get(f"/staff/machines/{MACHINE}/screen.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert "Machine m-1" in r.text and "Scan to buy" in r.text and "Ready" in r.text and "<path" in r.text
    # The code drawn is signed by the machine's secret, and the landing page says it is the dashboard's copy:
    # buying needs standing at the machine. No visit starts.
    scanned = client.get(f"/q/{made[0]}")
    assert scanned.status_code == 403 and "copy of the machine&#39;s screen" in scanned.text
    assert "vend_visit" not in scanned.cookies
    assert client.get("/staff/machines/m-2/screen.svg").text.count("Offline - reconnecting") == 1
    assert client.get("/staff/machines/nope/screen.svg").status_code == 404


def test_a_manager_changes_a_price_making_one_version_audited_like_the_api(client, cloud_obj):
    sign_in(client, "mia")
    form = editor_form(client, **{"price-0": "4.20"})
    r = client.post(f"/staff/machines/{MACHINE}/slots", data=form)
    assert (r.status_code, r.headers["location"]) == (303, "/staff/machines/m-1?saved=2#planogram")
    again = client.post(f"/staff/machines/{MACHINE}/slots", data=form)
    assert again.status_code == 303 and versions(cloud_obj) == 2, "the same form twice is one version"
    with cloud_obj.engine.connect() as conn:
        assert machines.slot_for_sale(conn, MACHINE, "A1").price == 420
        rows = audit.query(conn, action="machine.slots", object_id=MACHINE)
    assert len(rows) == 1 and rows[0]["change"]["version"] == 2 and rows[0]["via"] == "session"
    page = client.get(r.headers["location"]).text
    assert "Version 2 saved" in page and "Version 2 pending" in page


def test_a_new_slot_from_the_spare_row(client, cloud_obj):
    sign_in(client, "mia")
    form = editor_form(client, **{"slot-2": "B1", "sku-2": "tea", "name-2": "Tea", "price-2": "5",
                                  "capacity-2": "8"})
    assert client.post(f"/staff/machines/{MACHINE}/slots", data=form).status_code == 303
    with cloud_obj.engine.connect() as conn:
        b1 = machines.slot_for_sale(conn, MACHINE, "B1")
    assert (b1.name, b1.price, b1.capacity, b1.par_level) == ("Tea", 500, 8, 8)


@pytest.mark.parametrize("field,value,shown", [
    ("price-0", "three fifty", "Write the price like 3.50"),
    ("price-0", "-1", "Write the price like 3.50"),
    ("capacity-0", "-3", "The capacity must be a whole number from 1 to 1000"),
    ("par-0", "11", "The par level must be a whole number from 0 to the capacity"),
    ("slot-1", "A1", "Slot A1 is in the form twice"),
    ("slot-0", "a-1", "A slot code is a capital letter and 1-2 digits"),
    ("currency-0", "yuan", "A currency is a three-letter code"),
])
def test_nonsense_in_the_editor_comes_back_with_the_error_at_the_field_and_the_values_kept(
        client, cloud_obj, field, value, shown):
    sign_in(client, "mia")
    form = editor_form(client, **{field: value, "name-1": "Still water"})
    r = client.post(f"/staff/machines/{MACHINE}/slots", data=form)
    assert r.status_code == 422 and shown in r.text
    assert f'id="err-{field}"' in r.text and f'aria-describedby="err-{field}"' in r.text
    assert f'value="{value}"' in r.text and 'value="Still water"' in r.text, "what was typed stays"
    assert versions(cloud_obj) == 1


def test_a_form_without_its_key_is_refused(client, cloud_obj):
    sign_in(client, "mia")
    r = client.post(f"/staff/machines/{MACHINE}/slots", data=editor_form(client, key=""))
    assert r.status_code == 422 and "reload the page" in r.text and versions(cloud_obj) == 1


def test_an_unknown_machine_is_a_404_page(client):
    sign_in(client, "mia")
    r = client.get("/staff/machines/nope")
    assert r.status_code == 404 and "There is no machine nope" in r.text


def test_a_second_cabinet_splits_the_grid_and_the_editor_offers_it(client, cloud_obj):
    with cloud_obj.engine.begin() as conn:
        machines.add_cabinet(conn, MACHINE, 2, "chilled")
    sign_in(client, "mia")
    html = client.get(f"/staff/machines/{MACHINE}").text
    assert "Cabinet 1: main" in html and "Cabinet 2: chilled" in html
    form = editor_form(client, **{"cabinet-1": "2"})
    assert client.post(f"/staff/machines/{MACHINE}/slots", data=form).status_code == 303
    with cloud_obj.engine.connect() as conn:
        assert machines.slot_for_sale(conn, MACHINE, "A2").cabinet == 2


def test_the_map_keeps_every_place_inside_its_margin_and_centres_a_single_one():
    from cloud.fleet.draw import MAP_H, MAP_MARGIN, MAP_W, project

    one = project([{"latitude": 31.2, "longitude": 121.5, "name": "A", "machines": []}])
    assert (one[0].x, one[0].y) == (MAP_W / 2, MAP_H / 2)
    many = project([{"latitude": lat, "longitude": lon, "name": str(i), "machines": []}
                    for i, (lat, lon) in enumerate([(31.2, 121.4), (31.3, 121.6), (22.5, 114.1)])])
    assert all(MAP_MARGIN <= d.x <= MAP_W - MAP_MARGIN and MAP_MARGIN <= d.y <= MAP_H - MAP_MARGIN for d in many)
    north, south = many[1], many[2]
    assert north.y < south.y and north.x > south.x, "north is up, east is right"


def test_a_replaced_ledger_shows_on_the_machine_page_and_in_the_api(client, cloud_obj):
    import dataclasses

    from cloud.sync.ingest import store_batch
    from tests.cloud_fixtures import Chain

    old, new = Chain(), Chain()
    for chain in (old, old, new):
        chain.add("door.opened")
    with cloud_obj.engine.begin() as conn:
        store_batch(conn, cloud_obj.provider, MACHINE, dataclasses.replace(old.batch(1), ledger="a" * 32), utcnow())
        store_batch(conn, cloud_obj.provider, MACHINE, dataclasses.replace(new.batch(1), ledger="b" * 32), utcnow())
    sign_in(client, "mia")
    assert "New ledger bbbbbbbb since" in client.get(f"/staff/machines/{MACHINE}").text
    detail = client.get(f"/api/v1/machines/{MACHINE}").json()
    assert detail["ledger_id"] == "b" * 32
    assert [(c["old_ledger"], c["old_head"], c["stored_from_seq"]) for c in detail["ledger_changes"]] == [
        ("a" * 32, 2, 3)]
    assert {m["id"]: m["ledger_changes"] for m in client.get("/api/v1/machines").json()} == {MACHINE: 1, "m-2": 0}


# SQLite only: its one writer is what a page waited for (PostgreSQL's readers never wait for writers).
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_fleet_machine_and_sales_pages_answer_while_the_ingest_holds_the_write_lock(cloud_obj, client):
    # Every page counted the refunds booked since the sweeper looked in a write transaction, and read in
    # another one (SQLite's BEGIN IMMEDIATE): under a busy ingest each page view queued for the writer.
    sign_in(client, "mia")
    pages = ["/staff", f"/staff/machines/{MACHINE}", "/staff/sales", "/api/v1/reports/sales?by=machine"]
    for page in pages:  # once, so the alert watcher's look (a write; its worker is not running here) is done
        assert client.get(page).status_code == 200, page
    answered = []

    def read_pages():
        answered.extend((page, client.get(page).status_code) for page in pages)

    with cloud_obj.engine.begin() as ingest:
        ingest.execute(sa.text("UPDATE machines SET name = name"))  # the write lock, held as ingest holds it
        reader = threading.Thread(target=read_pages, daemon=True)
        reader.start()
        reader.join(10)  # waiting for the writer would take SQLite's busy timeout, 30 s
        assert answered == [(page, 200) for page in pages]
