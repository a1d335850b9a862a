"""A machine's QR secret and broker password: made with the machine, rotated with an overlap, on both databases."""

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.fleet import machines
from tests.cloud_fixtures import upgrade_to, NOW, db_url, engine, idle_cloud  # noqa: F401  (fixtures)
from protocol import token as qrtoken
from protocol.messages import utcnow

HOUR = timedelta(hours=1)


def add(conn, machine_id="m-1"):
    return machines.add_machine(conn, machine_id, "", "", NOW)


def test_each_machine_gets_its_own_broker_user_and_password(engine):
    with engine.begin() as conn:
        add(conn, "m-1")
        add(conn, "m-2")
        one, two = machines.credentials(conn, "m-1", NOW), machines.credentials(conn, "m-2", NOW)
        users, ids = machines.broker_users(conn, NOW)
    assert (one.mqtt_username, two.mqtt_username) == ("m-1.1", "m-2.1")
    assert len({one.mqtt_password, two.mqtt_password, one.secret, two.secret}) == 4
    assert len(one.mqtt_password) >= 24
    assert [(u.username, u.machine_id) for u in users] == [("m-1.1", "m-1"), ("m-2.1", "m-2")]
    assert ids == ["m-1", "m-2"]


def test_during_the_overlap_old_and_new_both_work_and_after_it_only_the_new(engine):
    with engine.begin() as conn:
        old_secret = add(conn)
        old = machines.credentials(conn, "m-1", NOW)
        new = machines.rotate(conn, "m-1", NOW, 24 * HOUR)
    assert new.secret != old_secret and new.mqtt_password != old.mqtt_password
    assert (new.mqtt_username, new.previous_username, new.previous_until) == ("m-1.2", "m-1.1", NOW + 24 * HOUR)
    during, after = NOW + 23 * HOUR, NOW + 24 * HOUR
    with engine.connect() as conn:
        assert machines.secrets_of(conn, "m-1", during) == [new.secret.encode(), old_secret.encode()]
        assert machines.secrets_of(conn, "m-1", after) == [new.secret.encode()]
        users_during = {u.username: u.password for u in machines.broker_users(conn, during)[0]}
        users_after = {u.username: u.password for u in machines.broker_users(conn, after)[0]}
    assert users_during == {"m-1.2": new.mqtt_password, "m-1.1": old.mqtt_password}
    assert users_after == {"m-1.2": new.mqtt_password}
    with engine.begin() as conn:
        assert machines.expire_rotations(conn, during) == 0
        assert machines.expire_rotations(conn, after) == 1
        row = machines.get(conn, "m-1")
    assert (row.prev_secret, row.prev_mqtt_password, row.prev_until) == (None, None, None)


def test_a_second_rotation_during_the_overlap_is_refused_unless_it_ends_every_old_secret(engine):
    with engine.begin() as conn:
        add(conn)
        machines.rotate(conn, "m-1", NOW, HOUR)
    with pytest.raises(machines.FleetError, match="still changing over.*overlap 0"):
        with engine.begin() as conn:
            machines.rotate(conn, "m-1", NOW + HOUR / 2, HOUR)
    with engine.begin() as conn:
        now = machines.rotate(conn, "m-1", NOW + HOUR / 2, timedelta(0))
        assert now.mqtt_username == "m-1.3" and now.previous_username is None
        assert machines.secrets_of(conn, "m-1", NOW + HOUR / 2) == [now.secret.encode()]
        assert [u.username for u in machines.broker_users(conn, NOW)[0]] == ["m-1.3"]


@pytest.mark.parametrize("machine_id, overlap, error", [
    ("nope", HOUR, "no machine 'nope'"),
    ("m-1", -HOUR, "between 0 and 30 days"),
    ("m-1", timedelta(days=31), "between 0 and 30 days"),
])
def test_bad_rotations_are_refused_and_change_nothing(engine, machine_id, overlap, error):
    with engine.begin() as conn:
        secret = add(conn)
    with pytest.raises(machines.FleetError, match=error):
        with engine.begin() as conn:
            machines.rotate(conn, machine_id, NOW, overlap)
    with engine.connect() as conn:
        assert machines.secrets_of(conn, "m-1", NOW) == [secret.encode()]
        assert machines.credentials(conn, "m-1", NOW).mqtt_username == "m-1.1"


def test_machines_made_before_the_migration_get_a_broker_password_each(empty_db_url):
    db_url = empty_db_url
    eng = cloud.core.db.make_engine(db_url)
    upgrade_to(eng, "0001")
    with eng.begin() as conn:
        for machine_id in ("old-1", "old-2"):
            conn.execute(sa.text("INSERT INTO machines (id, name, secret, created_at) VALUES (:i, :i, :s, :t)"),
                         {"i": machine_id, "s": "s" * 32, "t": NOW.isoformat()})
    cloud.core.db.migrate(eng)
    with eng.connect() as conn:
        passwords = [machines.credentials(conn, m, NOW).mqtt_password for m in ("old-1", "old-2")]
    eng.dispose()
    assert all(len(p) >= 24 for p in passwords) and passwords[0] != passwords[1]


@pytest.fixture
def web(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with TestClient(cloud.app.create_app(obj, "admintoken", b"k" * 32), follow_redirects=False) as c:
        c.headers["Authorization"] = "Bearer admintoken"
        yield c, obj
    obj.engine.dispose()


def test_an_old_qr_code_works_during_the_overlap_and_not_after(web):
    client, obj = web
    old = client.post("/api/v1/machines", json={"id": "m-1"}).json()["secret"]
    rotated = client.post("/api/v1/machines/m-1/rotate-secret", json={"overlap_s": 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]

    def scan(secret):
        return client.get(f"/q/{qrtoken.make('m-1', secret.encode(), time.time(), 5)}")

    assert scan(old).status_code == 303 and scan(new).status_code == 303
    with obj.engine.begin() as conn:  # the overlap ends (as if an hour had passed)
        conn.execute(machines.machines.update().values(prev_until=utcnow() - timedelta(seconds=1)))
    refused = scan(old)
    assert refused.status_code == 400 and "QR code not recognised" in refused.text
    assert scan(new).status_code == 303


@pytest.mark.parametrize("path, body, status, error", [
    ("/api/v1/machines/ghost/rotate-secret", {}, 404, "no machine 'ghost'"),
    ("/api/v1/machines/m-1/rotate-secret", {"overlap_s": "a day"}, 422, "overlap_s must be a number"),
    ("/api/v1/machines/m-1/rotate-secret", {"overlap_s": 1e30}, 422, "overlap_s must be a number"),
    ("/api/v1/machines/ghost/certificate", {}, 404, "no machine 'ghost'"),
])
def test_the_api_names_what_is_wrong(web, path, body, status, error):
    client, _ = web
    client.post("/api/v1/machines", json={"id": "m-1"})
    r = client.post(path, json=body)
    assert (r.status_code, error in r.json()["error"]) == (status, True), r.text
    assert client.get("/api/v1/machines/ghost/credentials").status_code == 404
