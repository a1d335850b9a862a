"""13 #8: a lone surrogate in a JSON body (valid JSON, not text) is a 422 naming the field on every route,
never a 500 from deep inside it; and nothing is written."""

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.app
from cloud.fleet import machines
from cloud.web.bodies import lone_surrogate
from tests.cloud_fixtures import add_customer, add_machine, add_sale, db_url, idle_cloud  # noqa: F401  (fixture)

ADMIN = {"Authorization": "Bearer admintoken", "Content-Type": "application/json"}


@pytest.fixture
def client(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        add_machine(conn)
        add_sale(conn, add_customer(conn))
    app = cloud.app.create_app(obj, "admintoken", b"k" * 32)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.cloud = obj
        yield c
    obj.engine.dispose()


@pytest.mark.parametrize("method,path,body,field", [
    ("POST", "/api/v1/machines", '{"id": "m-9", "name": "\\ud800", "location": "hall"}', "name"),
    ("POST", "/api/v1/machines", '{"id": "m-9", "name": "ok", "location": "\\udfff hall"}', "location"),
    ("POST", "/api/v1/login", '{"username": "ann\\ud83d", "password": "x"}', "username"),
    ("POST", "/api/v1/orders/o-sold/refund", '{"reason": "x\\udc00", "key": "refund-key-1"}', "reason"),
    ("POST", "/api/v1/machines/m-1/planogram",
     '{"slots": [{"slot": "A1", "sku": "cola", "name": "Co\\ud800la", "price": 300, "currency": "CNY", '
     '"capacity": 10}]}', "slots.0.name"),
    ("POST", "/api/v1/tokens", '{"name": "\\ud800"}', "name"),
])
def test_a_lone_surrogate_is_a_422_naming_the_field(client, method, path, body, field):
    before = machines_count(client)
    r = client.request(method, path, content=body.encode(), headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith(f"{field}: ") and "surrogate" in r.json()["error"]
    assert machines_count(client) == before


def test_a_pair_of_surrogates_is_text_and_passes(client):
    """An emoji written as an escaped pair is ordinary text."""
    r = client.post("/api/v1/machines", content='{"id": "m-9", "name": "Caf\\u00e9 \\ud83d\\ude00", "location": '
                                                '"hall"}'.encode(), headers=ADMIN)
    assert r.status_code < 300, r.text
    assert machines_count(client) == 2


def machines_count(client) -> int:
    with client.cloud.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(machines.machines)).scalar()


def test_the_path_of_the_first_lone_surrogate():
    assert lone_surrogate({"a": [1, {"b": "ok"}, {"c": "\ud800"}]}) == ("a", 2, "c")
    assert lone_surrogate({"a": "😀", "b": ["x"]}) is None
    assert lone_surrogate("\udfff") == ()
