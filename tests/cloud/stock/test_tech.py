"""The technician's phone view (cloud/stock/tech.py, visits.py): today's route with each machine's pick
list and "loaded" (once, however often tapped), "restocked" refused while the cloud last heard the service
door shut or the machine offline and kept once the machine says it is open (door events through the
cloud's real ingest), a fault cleared from the machine's page, and a technician kept off the money pages."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.app
from cloud.core.db import utcnow
from cloud.fleet import locations
from cloud.people import staff
from cloud.stock import visits
from cloud.web import i18n
from protocol import topics
from protocol.messages import Status
from tests.cloud_fixtures import MACHINE, Chain, add_machine, db_url, fast_hashes, idle_cloud  # noqa: F401

BOOT = "bootstrap-token-for-tests"
ADMIN = {"Authorization": f"Bearer {BOOT}"}
PW = "violet-tractor-harbour-91"
KEY = re.compile(r'name="key" value="([^"]+)"')


@pytest.fixture
def cloud_obj(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        add_machine(conn)
        staff.add_staff(conn, "tom", "technician", utcnow(), staff.hash_password(PW), False)
    yield obj
    obj.alerter.stop()
    obj.engine.dispose()


@pytest.fixture
def client(cloud_obj):
    with TestClient(cloud.app.create_app(cloud_obj, BOOT, b"k" * 32), follow_redirects=False) as c:
        r = c.post("/api/v1/routes", headers=ADMIN, json={"name": "North", "machines": [MACHINE]})
        assert r.status_code == 201, r.text
        r = c.post("/staff/login", data={"username": "tom", "password": PW})
        assert r.status_code == 303, r.text
        yield c


def door(cloud_obj, chain: Chain, kind: str) -> None:
    """The machine's door event, through the cloud's real ingest (as the MQTT worker calls it)."""
    chain.add(kind)
    cloud_obj.apply([(topics.topic(MACHINE, "events"), chain.batch(len(chain.events)).encode())])


def rows(cloud_obj, table):
    with cloud_obj.engine.connect() as conn:
        return conn.execute(sa.select(table)).all()


def test_today_shows_the_route_with_each_machines_pick_list_and_loaded_is_recorded_once(client, cloud_obj):
    r = client.get("/tech")
    assert r.status_code == 200
    assert "North" in r.text and "Machine m-1" in r.text
    assert "A1" in r.text and "Cola" in r.text
    key = KEY.search(r.text).group(1)
    first = client.post(f"/tech/{MACHINE}/loaded", data={"key": key})
    assert first.status_code == 303 and first.headers["location"].startswith("/tech?done=loaded")
    # Back and tap again (the same key), and a fresh page's key: still one record, shown as done.
    again = client.post(f"/tech/{MACHINE}/loaded", data={"key": key})
    assert again.headers["location"].startswith("/tech?done=unchanged")
    other = KEY.search(client.get("/tech").text)
    assert other is None  # a loaded machine has no button any more
    assert client.post(f"/tech/{MACHINE}/loaded", data={"key": "another-key-123"}).status_code == 303
    assert len(rows(cloud_obj, visits.route_loads)) == 1
    page = client.get("/tech?done=unchanged").text
    assert "Loaded by tom" in page and "Nothing changed" in page
    # The API answers the same: 200 with the first record, not a second one.
    r = client.post(f"/api/v1/machines/{MACHINE}/loaded", headers=ADMIN, json={"key": "api-key-0001"})
    assert r.status_code == 200 and r.json()["loaded_by"] == "tom"
    plan = client.get("/api/v1/tech/today", headers=ADMIN).json()
    (stop,) = plan[0]["stops"]
    assert stop["loaded"]["loaded_by"] == "tom"
    assert [(line["slot"], line["need"]) for line in stop["lines"]] == [("A1", 5), ("A2", 5)]


def test_restocked_is_refused_while_the_door_is_shut_and_kept_once_it_is_open(client, cloud_obj):
    chain = Chain()
    page = client.get(f"/tech/{MACHINE}")
    assert 'data-door="shut"' in page.text
    key = KEY.search(page.text).group(1)
    form = {"key": key, "count-A1": "4", "count-A2": "6"}
    refused = client.post(f"/tech/{MACHINE}/restocked", data=form)
    assert refused.status_code == 409
    assert "Open the service door first: the machine must see you restock." in refused.text
    assert 'value="4"' in refused.text and 'value="6"' in refused.text  # the form kept as typed
    assert rows(cloud_obj, visits.restock_reports) == []
    r = client.post(f"/api/v1/machines/{MACHINE}/restocked", headers=ADMIN, json={"key": key, "counts": {"A1": 4}})
    assert r.status_code == 409 and "open the service door first" in r.json()["error"]

    door(cloud_obj, chain, "door.opened")
    assert client.get(f"/api/v1/machines/{MACHINE}/door", headers=ADMIN).json()["door"] == "open"
    ok = client.post(f"/tech/{MACHINE}/restocked", data=form)
    assert ok.status_code == 303 and ok.headers["location"] == f"/tech/{MACHINE}?done=restocked"
    # A double tap, and Back then the same form after the door shut: the same key, one report.
    door(cloud_obj, chain, "door.closed")
    assert client.post(f"/tech/{MACHINE}/restocked", data=form).headers["location"].endswith("done=unchanged")
    (report,) = rows(cloud_obj, visits.restock_reports)
    assert (report.machine_id, report.reported_by, report.counts) == (MACHINE, "tom", '{"A1": 4, "A2": 6}')
    assert "Restock recorded by tom" in client.get(f"/tech/{MACHINE}").text


def test_restocked_is_refused_while_the_machine_is_offline_and_bad_counts_name_the_fault(client, cloud_obj):
    chain = Chain()
    door(cloud_obj, chain, "door.opened")
    cloud_obj.apply([(topics.topic(MACHINE, "status"), Status(online=False, firmware="1").encode())])
    r = client.post(f"/api/v1/machines/{MACHINE}/restocked", headers=ADMIN,
                    json={"key": "offline-key-1", "counts": {"A1": 4}})
    assert r.status_code == 409 and "offline" in r.json()["error"]
    cloud_obj.apply([(topics.topic(MACHINE, "status"), Status(online=True, firmware="1").encode())])
    r = client.post(f"/api/v1/machines/{MACHINE}/restocked", headers=ADMIN,
                    json={"key": "offline-key-1", "counts": {"Z9": 4}})
    assert r.status_code == 422 and "no slot 'Z9'" in r.json()["error"]
    r = client.post(f"/api/v1/machines/{MACHINE}/restocked", headers=ADMIN,
                    json={"key": "offline-key-1", "counts": {"A1": 5000}})
    assert r.status_code == 422 and "counts.A1" in r.json()["error"]
    bad = client.post(f"/tech/{MACHINE}/restocked", data={"key": "offline-key-1", "count-A1": "-3"})
    assert bad.status_code == 422 and "Each count is a whole number from 0 to 1000." in bad.text
    assert rows(cloud_obj, visits.restock_reports) == []
    r = client.post(f"/api/v1/machines/{MACHINE}/restocked", headers=ADMIN,
                    json={"key": "offline-key-1", "counts": {"A1": 5}})
    assert r.status_code == 201 and r.json()["counts"] == {"A1": 5}


def test_a_fault_is_cleared_from_the_machines_page(client, cloud_obj):
    chain = Chain()
    door(cloud_obj, chain, "door.opened")
    with cloud_obj.engine.begin() as conn:
        from cloud.alerts import alert_occurrences  # noqa: PLC0415 - only this test writes an alert by hand
        alert_id = conn.execute(alert_occurrences.insert().values(
            kind="out_of_service", machine_id=MACHINE, slot="A1", since=utcnow(), raised_at=utcnow(),
            detail="slot A1 is out of service after a failed vend")).inserted_primary_key[0]
    page = client.get(f"/tech/{MACHINE}").text
    assert "Slot out of service" in page and "Cleared" in page
    r = client.post(f"/tech/{MACHINE}/alerts/{alert_id}/resolve")
    assert r.headers["location"] == f"/tech/{MACHINE}?done=resolve#faults"
    again = client.post(f"/tech/{MACHINE}/alerts/{alert_id}/resolve")
    assert again.headers["location"].endswith("done=unchanged#faults")
    page = client.get(f"/tech/{MACHINE}").text
    assert "No open faults." in page
    (row,) = rows(cloud_obj, alert_occurrences)
    assert row.resolved_by == "tom"


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize("placed", [True, False])
def test_times_are_in_the_machines_own_zone_and_the_readers_language(tmp_path, db_url, lang, placed):
    # Issue 15: the door's time, the restocks and the loads were shown in UTC. A machine at a location is
    # in the location's zone; one at none in the fleet's (--time-zone).
    obj = idle_cloud(tmp_path, db_url, time_zone="America/New_York")
    with obj.engine.begin() as conn:
        add_machine(conn)
        staff.add_staff(conn, "tom", "technician", utcnow(), staff.hash_password(PW), False)
        if placed:
            locations.place(conn, MACHINE, locations.add(conn, "Pudong", now=utcnow(), tz="Asia/Shanghai"), utcnow())
    zone = "Asia/Shanghai" if placed else "America/New_York"
    try:
        with TestClient(cloud.app.create_app(obj, BOOT, b"k" * 32), follow_redirects=False,
                        headers={"Accept-Language": lang}) as c:
            assert c.post("/api/v1/routes", headers=ADMIN, json={"name": "North", "machines": [MACHINE]}).is_success
            assert c.post("/staff/login", data={"username": "tom", "password": PW}).status_code == 303
            door(obj, Chain(), "door.opened")
            key = KEY.search(c.get("/tech").text).group(1)
            assert c.post(f"/tech/{MACHINE}/loaded", data={"key": key}).status_code == 303
            page = c.get(f"/tech/{MACHINE}")
            assert c.post(f"/tech/{MACHINE}/restocked",
                          data={"key": KEY.search(page.text).group(1), "count-A1": "3"}).status_code == 303
            page, today = c.get(f"/tech/{MACHINE}").text, c.get("/tech").text
        (loaded,) = rows(obj, visits.route_loads)
        (report,) = rows(obj, visits.restock_reports)
    finally:
        obj.alerter.stop()
        obj.engine.dispose()
    _ = i18n.Translator(lang)
    since, at = report.door_open_since, report.reported_at
    assert _("since {when}", when=i18n.when(since, lang, zone)) in page
    assert _("Restock recorded by {who}, {when}", who="tom", when=i18n.when(at, lang, zone)) in page
    assert _("Loaded by {who}, {when}", who="tom", when=i18n.when(loaded.loaded_at, lang, zone)) in today
    for t in (since, at):
        assert i18n.when(t, lang, "UTC") not in page, "a time in UTC"
    assert i18n.day_label(loaded.day, lang, "yMMMEd") in today


@pytest.mark.parametrize("path", ["/staff/settlements", "/staff/sales", "/staff/reconcile", "/staff/journal",
                                  "/staff/orders", "/staff/stock"])
def test_a_technician_cannot_see_money_pages(client, path):
    r = client.get(path)
    assert r.status_code == 403, (path, r.status_code)
    nav = client.get("/tech").text
    assert 'href="/tech"' in nav and f'href="{path}"' not in nav


def test_a_technician_cannot_read_money_through_the_api(client):
    assert client.get("/api/v1/reports/sales").status_code == 403


def test_vendctl_tech_shows_today_marks_loaded_and_restocks_only_with_the_door_open(client, cloud_obj, monkeypatch,
                                                                                      capsys):
    import io

    import cloud.cli
    from tests.cloud_fixtures import ThroughTestClient

    def vendctl(*argv):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, ADMIN)))
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = vendctl("tech", "today")
    assert code == 0 and "route 1 'North'" in out and "1. m-1 Machine m-1" in out and "A1 Cola x0 (5 short)" in out
    code, out, err = vendctl("tech", "loaded", MACHINE)
    assert code == 0 and out.startswith("m-1 loaded for ") and "by admin" in out and err.startswith("key cli-")
    assert vendctl("tech", "loaded", MACHINE)[0] == 0
    assert len(rows(cloud_obj, visits.route_loads)) == 1
    code, out, _ = vendctl("tech", "door", MACHINE)
    assert out.strip() == "m-1: service door shut"
    code, out, err = vendctl("tech", "restocked", MACHINE, "A1=4", "--key", "cli-key-0001")
    assert code != 0 and "open the service door first" in err
    assert vendctl("tech", "restocked", MACHINE, "A1:4")[0] != 0
    door(cloud_obj, Chain(), "door.opened")
    code, out, _ = vendctl("tech", "restocked", MACHINE, "A1=4", "--key", "cli-key-0001")
    assert code == 0 and out.strip() == "restock of m-1 recorded by admin: A1 4"
    assert vendctl("tech", "restocked", MACHINE, "A1=4", "--key", "cli-key-0001")[0] == 0
    assert len(rows(cloud_obj, visits.restock_reports)) == 1
