"""A machine's name in each language (issue 15, item 6): set through the API, vendctl and the machine's page,
shown in the page's language on the staff pages and the customer's; the fleet's errors said in Chinese on a
Chinese page and in English by the API; on both databases."""

import re

import pytest
from fastapi.testclient import TestClient

import cloud.app
import cloud.cli
from cloud.core.db import utcnow
from cloud.fleet import machines
from cloud.people import audit, staff
from cloud.web import i18n
from tests.cloud_fixtures import (MACHINE, ThroughTestClient, add_machine, db_url, fast_hashes,  # noqa: F401
                                  idle_cloud)

BOOT = "bootstrap-token-for-tests"
ADMIN = {"Authorization": f"Bearer {BOOT}"}
PW = "violet-tractor-harbour-91"
ZH = {"Accept-Language": "zh-CN"}


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


def name_lobby(client):
    r = client.patch(f"/api/v1/machines/{MACHINE}", headers=ADMIN,
                     json={"name": "Lobby B", "names": {"zh-CN": "B座大堂"}})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_machine_is_named_per_language_through_the_api_and_audited(client, cloud_obj):
    r = name_lobby(client)
    assert (r["name"], r["names"], r["changed"]) == ("Lobby B", {"zh-CN": "B座大堂"}, ["name", "names.zh-CN"])
    assert client.get(f"/api/v1/machines/{MACHINE}", headers=ADMIN).json()["names"] == {"zh-CN": "B座大堂"}
    listed = {m["id"]: m for m in client.get("/api/v1/machines", headers=ADMIN).json()}
    assert (listed[MACHINE]["name"], listed[MACHINE]["names"], listed["m-2"]["names"]) == \
        ("Lobby B", {"zh-CN": "B座大堂"}, {})
    # The same again changes nothing; an empty name drops the language.
    assert client.patch(f"/api/v1/machines/{MACHINE}", headers=ADMIN,
                        json={"names": {"zh-CN": "B座大堂"}}).json()["changed"] == []
    r = client.patch(f"/api/v1/machines/{MACHINE}", headers=ADMIN, json={"names": {"zh-CN": ""}})
    assert (r.json()["names"], r.json()["changed"]) == ({}, ["names.zh-CN"])
    with cloud_obj.engine.connect() as conn:
        changes = [e["change"] for e in audit.query(conn, action="machine.rename")]
    assert sorted(map(sorted, changes)) == [["name", "names.zh-CN"], ["names.zh-CN"]]


@pytest.mark.parametrize("body, status, words", [
    ({"names": {"fr": "Hall"}}, 422, "names: 'fr' is not a language of these pages: use one of zh-CN"),
    ({"names": {"zh-CN": "x" * 81}}, 422, "names.zh-CN must be 1-80 printable characters"),
    ({"name": ""}, 422, "name must be 1-80 printable characters"),
    ({"colour": "red"}, 422, "unknown field 'colour'"),
    ({"names": "B座大堂"}, 422, 'names must be an object like {"zh-CN": "..."}'),
])
def test_a_bad_name_is_refused_in_english_naming_the_field_and_nothing_changes(client, body, status, words):
    name_lobby(client)
    r = client.patch(f"/api/v1/machines/{MACHINE}", headers=ADMIN, json=body)
    assert r.status_code == status and words in str(r.json()), r.text
    m = client.get(f"/api/v1/machines/{MACHINE}", headers=ADMIN).json()
    assert (m["name"], m["names"]) == ("Lobby B", {"zh-CN": "B座大堂"})


def test_an_unknown_machine_is_404(client):
    r = client.patch("/api/v1/machines/ghost", headers=ADMIN, json={"name": "Ghost"})
    assert r.status_code == 404 and "no machine 'ghost'" in r.text


def test_a_technician_may_not_rename_a_machine(client):
    sign_in(client, "tom")
    r = client.post(f"/staff/machines/{MACHINE}/names", data={"name": "Mine"})
    assert r.status_code == 403


def test_vendctl_machines_rename(client, monkeypatch, capsys):
    monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, ADMIN)))
    assert cloud.cli.main(["machines", "rename", MACHINE, "--name", "Lobby B", "--name-in", "zh-CN=B座大堂"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"machine {MACHINE} 'Lobby B': changed name, names.zh-CN\n  name (zh-CN): B座大堂"
    assert cloud.cli.main(["machines", "show", MACHINE]) == 0
    assert "name (zh-CN): B座大堂" in capsys.readouterr().out
    assert cloud.cli.main(["machines", "rename", MACHINE]) != 0
    assert "nothing to change" in capsys.readouterr().err
    assert cloud.cli.main(["machines", "rename", MACHINE, "--name-in", "fr=Hall"]) != 0
    assert "'fr' is not a language of these pages" in capsys.readouterr().err


def test_the_staff_pages_show_the_name_in_the_page_s_language(client, cloud_obj):
    name_lobby(client)
    sign_in(client, "mia")
    for headers, shown, not_shown in (({}, "Lobby B", "B座大堂"), (ZH, "B座大堂", None)):
        fleet = client.get("/staff", headers=headers).text
        assert shown in fleet
        if not_shown:
            assert not_shown not in fleet
        page = client.get(f"/staff/machines/{MACHINE}", headers=headers).text
        assert re.search(r'<h1 id="machine-name">([^<]*)</h1>', page).group(1) == shown
        assert shown in client.get("/staff/machines", headers=headers).text
        assert shown in client.get(f"/staff/machines/{MACHINE}/place", headers=headers).text
    # Found by its Chinese name too.
    assert f"/staff/machines/{MACHINE}/place" in client.get("/staff/machines", params={"q": "大堂"}).text


def test_the_machine_s_form_saves_both_names_and_says_a_wrong_one_in_the_page_s_language(client, cloud_obj):
    sign_in(client, "mia")
    r = client.post(f"/staff/machines/{MACHINE}/names", data={"name": "Lobby B", "name_zh-CN": "B座大堂"})
    assert r.status_code == 303
    page = client.get(r.headers["location"], headers=ZH).text
    assert 'value="B座大堂"' in page and 'value="Lobby B"' in page
    r = client.post(f"/staff/machines/{MACHINE}/names", data={"name": "", "name_zh-CN": "大堂"}, headers=ZH)
    assert r.status_code == 422
    error = re.search(r'id="error-name">([^<]*)<', r.text).group(1)
    assert error == "名称须为 1-80 个可打印字符"
    assert 'value="大堂"' in r.text  # what was typed is kept
    with cloud_obj.engine.connect() as conn:
        assert machines.get(conn, MACHINE, "zh-CN").name == "B座大堂"


def test_the_location_form_says_its_errors_in_chinese_on_a_chinese_page(client):
    sign_in(client, "mia")
    r = client.post("/staff/locations", headers=ZH, data={"name": "Station", "latitude": "95", "longitude": "116.4",
                                                          "tz": "UTC", "address": ""})
    assert r.status_code == 422
    error = re.search(r'id="error-latitude">([^<]*)<', r.text).group(1)
    assert "纬度" in error and "out of range" not in error, error
    r = client.post("/api/v1/locations", headers=ADMIN, json={"name": "Station", "latitude": 95, "longitude": 116.4})
    assert r.status_code == 422 and "latitude 95 is out of range" in r.text


def test_every_fleet_error_template_a_page_can_show_has_its_chinese(client):
    """The templates of the errors the fleet's forms show (machines, names, locations) are in the catalogue."""
    source = "".join(open(f"cloud/fleet/{m}.py", encoding="utf-8").read()
                     for m in ("machines", "names", "locations", "planogram"))
    templates = {"".join(re.findall(r'"([^"]*)"', m.group(1))) for m in
                 re.finditer(r'(?:FleetError|NoSuchMachine|NoSuchLocation|Retired)\(\s*((?:"[^"]*"\s*)+)', source)}
    assert len(templates) > 50
    chinese = i18n.catalog("zh-CN")
    missing = sorted(t for t in templates if t not in chinese)
    assert not missing, missing


def test_a_machine_without_a_name_in_a_language_shows_its_default_name(cloud_obj, client):
    name_lobby(client)
    with cloud_obj.engine.connect() as conn:
        assert machines.get(conn, MACHINE, "zh-CN").name == "B座大堂"
        assert machines.get(conn, MACHINE, "zh-CN").default_name == "Lobby B"
        assert machines.get(conn, MACHINE, "en").name == "Lobby B"
        assert machines.get(conn, "m-2", "zh-CN").name == machines.get(conn, "m-2").name
        assert [m.name for m in machines.list_machines(conn, "zh-CN")] == ["B座大堂", machines.get(conn, "m-2").name]
