"""Staff, roles, sessions, API tokens and the audit trail (cloud/people/), through the HTTP API and vendctl."""

import hashlib
import io
import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, Type
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import cloud.cli
import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.web import limits
from cloud.fleet import locations, machines, planogram
from cloud.provisioning.ca import FleetCA
from cloud.core.db import utcnow
from cloud.people import audit, auth, staff
from cloud.finance import ledger, settlement
from cloud.payments import REGISTRY, txns
from cloud.stock import book, picking, purchasing, takes, visits
from cloud.fleet.alerts import machine_watch
from cloud.catalog import products as catalog
from tests.cloud_fixtures import MACHINE, ThroughTestClient, add_customer, add_machine, add_sale, db_url  # noqa: F401  (fixture)

BOOT = "bootstrap-token-for-tests"
GOOD_PW = "violet-tractor-harbour-91"
PRODUCTION_HASHER = staff.hasher
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch):
    """Cheap argon2 parameters: the tests hash hundreds of passwords. The real ones are checked below."""
    monkeypatch.setattr(staff, "hasher", FAST)


@pytest.fixture
def cloud_obj(tmp_path, db_url):
    settings_ = cloud.core.settings.Settings(var=str(tmp_path), db=db_url, broker="127.0.0.1:1").resolve()
    obj = cloud.service.Cloud(settings_)  # never started: no broker, no threads
    obj.ca = FleetCA(str(tmp_path / "ca"))  # as a cloud started with --broker-files keeps one
    cloud.core.db.migrate(obj.engine)
    with obj.engine.begin() as conn:
        add_machine(conn)
        locations.add(conn, "Lobby", now=utcnow())  # location 1, for the matrix's PUT .../location
        add_sale(conn, add_customer(conn))  # order o-sold, for the refund route
    yield obj
    obj.engine.dispose()


@pytest.fixture
def engine(cloud_obj):
    return cloud_obj.engine


@pytest.fixture
def app(cloud_obj):
    return cloud.app.create_app(cloud_obj, BOOT, b"k" * 32)


@pytest.fixture
def client(app):
    with TestClient(app, follow_redirects=False) as c:
        yield c


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(BOOT)


def add_user(engine, username, role, password=GOOD_PW, supplier_id=None, must_change=False) -> int:
    with engine.begin() as conn:
        if role == "supplier" and supplier_id is None:
            supplier_id = staff.add_supplier(conn, f"Supplier of {username}", "", utcnow())
        return staff.add_staff(conn, username, role, utcnow(), staff.hash_password(password) if password else None,
                               must_change, supplier_id)


def token_for(engine, user_id, name="test") -> str:
    with engine.begin() as conn:
        return auth.new_token(conn, user_id, name, utcnow())[1]


def rows(engine, table) -> list:
    with engine.begin() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.select(table)))


def audit_rows(engine) -> list:
    with engine.begin() as conn:
        return audit.query(conn, limit=1000)


def login(client, username, password):
    return client.post("/api/v1/login", json={"username": username, "password": password})


@pytest.fixture
def callers(engine) -> dict:
    """One staff member per role, each with an API token: role -> (user id, headers)."""
    out = {}
    for role in staff.ROLES:
        user_id = add_user(engine, f"{role[:5]}-1", role)
        out[role] = (user_id, bearer(token_for(engine, user_id)))
    return out


# -- the role matrix ---------------------------------------------------------------------------------
# Written out here on purpose, not imported: changing who may do what must change this table too.

A, M, T, S = "administrator", "manager", "technician", "supplier"
SLOTS = [dict(slot="C3", sku="tea", name="Tea", price=300, currency="CNY", capacity=5)]
MATRIX = [
    # (method, path, body for a role, table a refused call must leave alone, roles allowed)
    ("GET", "/api/v1/machines", None, None, {A, M, T}),
    ("GET", "/api/v1/machines/m-1/slots", None, None, {A, M, T}),
    ("GET", "/api/v1/ingest", None, None, {A, M, T}),
    ("GET", "/api/v1/sales", None, None, {A, M}),
    ("GET", "/api/v1/reports/sales", None, None, {A, M}),
    ("GET", "/api/v1/reports/stock", None, None, {A, M, T}),
    ("POST", "/api/v1/machines", lambda r: {"id": f"m-{r[:4]}", "name": "New"}, machines.machines, {A, M}),
    ("PUT", "/api/v1/machines/m-1/slots", lambda r: SLOTS, machines.slots, {A, M}),
    ("POST", "/api/v1/machines/m-1/rotate-secret", lambda r: {"overlap_s": 0}, machines.machines, {A}),
    ("GET", "/api/v1/machines/m-1/credentials", None, None, {A, T}),
    ("POST", "/api/v1/machines/m-1/certificate", None, None, {A, T}),
    ("GET", "/api/v1/suppliers", None, None, {A, M}),
    ("POST", "/api/v1/suppliers", lambda r: {"name": f"Sup {r}"}, staff.suppliers, {A, M}),
    ("GET", "/api/v1/people", None, None, {A}),
    ("POST", "/api/v1/people", lambda r: {"username": f"new-{r[:4]}", "role": T, "password": GOOD_PW},
     staff.staff, {A}),
    ("PATCH", "/api/v1/people/{technician}", lambda r: {"role": M}, staff.staff, {A}),
    ("GET", "/api/v1/audit", None, None, {A}),
    ("GET", "/api/v1/locations", None, None, {A, M, T}),
    ("POST", "/api/v1/locations", lambda r: {"name": f"Site of {r}", "latitude": 31.2, "longitude": 121.5},
     locations.locations, {A, M}),
    ("PUT", "/api/v1/machines/m-1/location", lambda r: {"location_id": 1 if r == M else None},
     locations.machine_locations, {A, M}),
    ("GET", "/api/v1/machines/m-1", None, None, {A, M, T}),
    ("POST", "/api/v1/machines/m-1/cabinets", lambda r: {"number": 2 if r == M else 3, "name": r},
     machines.cabinets, {A, M}),
    ("GET", "/api/v1/machines/m-1/planogram", None, None, {A, M, T}),
    ("POST", "/api/v1/machines/m-1/planogram", lambda r: {"slots": [dict(slot="A1", sku="cola", price=300,
                                                                        currency="CNY", capacity=10, par_level=8)]},
     planogram.planograms, {A, M}),
    ("GET", "/api/v1/machines/m-1/planogram/versions", None, None, {A, M, T}),
    ("GET", "/api/v1/alerts", None, None, {A, M, T}),
    ("GET", "/api/v1/machines/m-1/alerts", None, None, {A, M, T}),
    ("GET", "/api/v1/me", None, None, {A, M, T, S}),
    ("GET", "/api/v1/tokens", None, None, {A, M, T, S}),
    ("POST", "/api/v1/tokens", lambda r: {"name": f"script of {r}"}, auth.api_tokens, {A, M, T, S}),
    # stock: {draft}, {sent} are a purchase order of each role's own (a transition is made once), addressed
    # to the supplier account's supplier; STOCK holds the ids the bodies name (see the places fixture).
    ("GET", "/api/v1/suppliers/{supplier}", None, None, {A, M, S}),
    ("PATCH", "/api/v1/suppliers/{supplier}", lambda r: {"phone": f"+86 {len(r)}"}, staff.suppliers, {A, M}),
    ("GET", "/api/v1/products", None, None, {A, M, T}),
    ("POST", "/api/v1/products", lambda r: {"sku": f"sku-{r}", "name": "New", "cost": 1, "price": 2,
                                            "currency": "CNY"}, catalog.product_details, {A, M}),
    ("GET", "/api/v1/products/{product}", None, None, {A, M, T}),
    ("PATCH", "/api/v1/products/{product}", lambda r: {"reorder_level": len(r)}, catalog.product_details, {A, M}),
    ("PUT", "/api/v1/products/{sku}/picture", lambda r: PNG_1PX, None, {A, M}),
    ("GET", "/api/v1/purchase-orders", None, None, {A, M, S}),
    ("POST", "/api/v1/purchase-orders", lambda r: {"supplier_id": STOCK["supplier"], "currency": "CNY", "lines": [
        {"product_id": STOCK["product"], "quantity": 3}]}, purchasing.purchase_orders, {A, M}),
    ("GET", "/api/v1/purchase-orders/{sent}", None, None, {A, M, S}),
    ("POST", "/api/v1/purchase-orders/{draft}/send", None, purchasing.purchase_orders, {A, M}),
    ("POST", "/api/v1/purchase-orders/{draft}/cancel", lambda r: {"reason": "not needed"},
     purchasing.purchase_orders, {A, M}),
    ("POST", "/api/v1/purchase-orders/{sent}/confirm", lambda r: {}, purchasing.purchase_orders, {A, M, S}),
    ("POST", "/api/v1/purchase-orders/{sent}/receive", lambda r: {"key": f"grn-{r}", "lines": [
        {"product_id": STOCK["product"], "quantity": 2}]}, book.movements, {A, M}),
    ("GET", "/api/v1/stock", None, None, {A, M}),
    ("GET", "/api/v1/stock/movements", None, None, {A, M}),
    ("GET", "/api/v1/stock/takes", None, None, {A, M}),
    ("POST", "/api/v1/stock/takes", lambda r: {"key": f"take-{r}", "reason": "count", "lines": [
        {"product_id": STOCK["product"], "counted": len(r)}]}, takes.stock_takes, {A, M}),
    ("GET", "/api/v1/stock/alerts", None, None, {A, M, T}),
    ("GET", "/api/v1/routes", None, None, {A, M, T}),
    ("POST", "/api/v1/routes", lambda r: {"name": f"Route {r}", "machines": ["m-1"]}, picking.routes, {A, M}),
    ("PUT", "/api/v1/routes/{route}", lambda r: {"name": f"Renamed by {r}"}, picking.routes, {A, M}),
    ("GET", "/api/v1/routes/{route}/pick-list", None, None, {A, M, T}),
    ("GET", "/api/v1/routes/{route}", None, None, {A, M, T}),
    ("GET", "/api/v1/routes/today", None, None, {A, M, T}),
    ("GET", "/api/v1/tech/today", None, None, {A, M, T}),
    ("GET", "/api/v1/machines/m-1/door", None, None, {A, M, T}),
    # Each role loads for a day of its own: a machine is loaded once a day, a second time records nothing.
    ("POST", "/api/v1/machines/m-1/loaded", lambda r: {"key": f"load-{r}", "day": f"2024-05-{len(r):02d}"},
     visits.route_loads, {A, M, T}),
    ("POST", "/api/v1/machines/m-1/restocked", lambda r: {"key": f"restock-{r}", "counts": {"A1": 2}},
     visits.restock_reports, {A, M, T}),
    ("GET", "/api/v1/locations/{location}", None, None, {A, M, T}),
    ("PATCH", "/api/v1/locations/{location}", lambda r: {"name": f"Lobby of {r}"}, locations.locations, {A, M}),
    ("POST", "/api/v1/machines/m-1/move", lambda r: {"location_id": 1 if r == M else None},
     locations.machine_placements, {A, M}),
    ("POST", "/api/v1/machines/{retiree}/retire", None, None, {A, M}),
    ("GET", "/api/v1/machines/m-1/locations", None, None, {A, M, T}),
    ("GET", "/api/v1/machines/m-1/pick-list", None, None, {A, M, T}),
    ("POST", "/api/v1/orders/o-sold/refund", lambda r: {"reason": f"goodwill, {r}", "key": f"refund-{r}",
                                                        "amount": 1}, txns, {A, M}),
    ("GET", "/api/v1/customers/1/wallet", None, None, {A, M}),
    ("POST", "/api/v1/customers/1/wallet/credit", lambda r: {"amount": 100, "reason": f"goodwill, {r}",
                                                             "key": f"credit-{r}"}, txns, {A}),
    # finance: {period} is a month of each role's own (a statement is posted once per location and period).
    ("GET", "/api/v1/finance/journal", None, None, {A, M}),
    ("GET", "/api/v1/finance/trial-balance", None, None, {A, M}),
    ("GET", "/api/v1/finance/reconciliation", None, None, {A, M}),
    ("POST", "/api/v1/suppliers/{supplier}/payments", lambda r: {"key": f"pay-{r}", "amount": 100, "currency": "CNY",
                                                                  "paid_on": "2024-05-02"}, ledger.supplier_payments,
     {A, M}),
    ("GET", "/api/v1/suppliers/{supplier}/statement", None, None, {A, M, S}),
    ("GET", "/api/v1/locations/{location}/settlement-rules", None, None, {A, M}),
    ("POST", "/api/v1/locations/{location}/settlement-rules", lambda r: {
        "kind": "per_item", "amount": 5, "valid_from": f"20{len(r) + 30}-01-01", "valid_to": f"20{len(r) + 30}-12-31"},
     settlement.settlement_rules, {A, M}),
    ("GET", "/api/v1/locations/{location}/statements/{period}", None, None, {A, M}),
    ("POST", "/api/v1/locations/{location}/statements/{period}/post", None, settlement.statement_postings, {A, M}),
]
# What the matrix's placeholders stand for in the app's route paths.
PLACEHOLDERS = {"{technician}": "{user_id}", "{supplier}": "{supplier_id}", "{location}": "{location_id}",
                "{period}": "{period}",
                "{product}": "{product_id}", "{draft}": "{po_id}", "{sent}": "{po_id}", "{route}": "{route_id}",
                "{retiree}": "{machine_id}"}
STOCK: dict = {}
# The smallest PNG there is: a product picture's upload is judged by its magic bytes.
PNG_1PX = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
PUBLIC = {("GET", "/api/v1/health"), ("GET", "/api/v1/orders/{order_id}"), ("POST", "/api/v1/login"),
          ("GET", "/api/v1/machine/credentials"),  # a machine's own request, signed with its secret
          ("GET", "/api/v1/openapi.json")}
# Each payment provider's webhook: the platform's, whose signature is the credential.
PUBLIC |= {("POST", f"/api/v1/payments/webhook/{spec.name}") for spec in REGISTRY if spec.webhook is not None}
OWN_ONLY = {("POST", "/api/v1/logout"), ("POST", "/api/v1/me/password"), ("DELETE", "/api/v1/tokens/{token_id}")}


@pytest.fixture
def places(engine, callers) -> dict:
    """Per role, the ids the matrix's placeholders stand for: a product, a route, the supplier account's
    supplier, and a draft and a sent purchase order of the role's own, addressed to that supplier."""
    now = utcnow()
    with engine.begin() as conn:
        supplier_id = staff.get(conn, callers[S][0]).supplier_id
        product_id = catalog.add_product(conn, "matrix", "Matrix", 100, 200, "CNY", now)
        route_id = picking.add_route(conn, "Matrix", [MACHINE], now)
        conn.execute(machine_watch.insert().values(machine_id=MACHINE, door_open_since=now))  # a restock is allowed
        out = {}
        for role in staff.ROLES:
            draft, sent = (purchasing.create(conn, supplier_id, "CNY", [{"product_id": product_id, "quantity": 5}], now)
                           for _ in range(2))
            purchasing.send(conn, sent, now)
            retiree = f"retiree-{role[:5]}"  # each role retires a machine of its own: a second retire is refused
            machines.add_machine(conn, retiree, retiree, "", now)
            out[role] = dict(technician=callers[T][0], supplier=supplier_id, product=product_id, route=route_id,
                             draft=draft, sent=sent, location=1, period=f"2024-{len(out) + 1:02d}",
                             sku="matrix", retiree=retiree)
    STOCK.update(supplier=supplier_id, product=product_id)
    return out


@pytest.mark.parametrize("method,path,body,table,allowed", MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_each_role_against_each_route(client, engine, callers, places, method, path, body, table, allowed):
    for role in (S, T, M, A):  # the refused ones first, while the tables are as they were
        before_audit = len(audit_rows(engine))
        before = rows(engine, table) if table is not None else None
        sent = body(role) if body else None
        r = client.request(method, path.format(**places[role]), headers=callers[role][1],
                           **({"content": sent} if isinstance(sent, bytes) else {"json": sent}))
        if role in allowed:
            assert r.status_code < 300, (role, r.status_code, r.text)
            if method != "GET":
                assert len(audit_rows(engine)) == before_audit + 1, role
        else:
            assert r.status_code == 403, (role, r.status_code, r.text)
            assert role in r.json()["error"]
            assert len(audit_rows(engine)) == before_audit, role
            if table is not None:
                assert rows(engine, table) == before, role


def test_every_api_route_is_in_the_matrix_and_refuses_a_caller_without_credentials(app, client):
    covered = set()
    for m, p, *_ in MATRIX:
        for placeholder, name in PLACEHOLDERS.items():
            p = p.replace(placeholder, name)
        p = p.replace("/o-sold/", "/{order_id}/").replace("/customers/1/", "/customers/{customer}/")
        covered.add((m, re.sub(r"/m-1(?=/|$)", "/{machine_id}", p)))
    for route in app.routes:
        if not getattr(route, "path", "").startswith("/api/v1/"):
            continue
        for method in route.methods - {"HEAD", "OPTIONS"}:
            key = (method, route.path)
            if key in PUBLIC:
                continue
            assert key in covered or key in OWN_ONLY, f"{key} is not in the role matrix of this test"
            path = route.path.replace("{machine_id}", MACHINE)
            for name in ("{user_id}", "{token_id}", "{supplier_id}", "{product_id}", "{po_id}", "{route_id}",
                         "{location_id}"):
                path = path.replace(name, "1")
            r = client.request(method, path, json={})
            assert r.status_code == 401, (key, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"


def test_no_credentials_401_bad_credentials_401_wrong_role_403(client, callers):
    assert client.get("/api/v1/people").status_code == 401
    assert client.get("/api/v1/people", headers=bearer("not-a-token")).status_code == 401
    assert client.get("/api/v1/people", headers={"Authorization": f"Basic {BOOT}"}).status_code == 401
    assert client.get("/api/v1/people", headers={"Authorization": "Bearer "}).status_code == 401
    client.cookies.set(auth.SESSION_COOKIE, "1.forged")
    assert client.get("/api/v1/people").status_code == 401
    r = client.get("/api/v1/people", headers=callers[M][1])
    assert r.status_code == 403 and r.json() == {"error": "this needs the role administrator; you are manager"}
    assert client.get("/api/v1/people", headers=ADMIN).status_code == 200


def test_a_bad_token_in_the_header_does_not_fall_back_to_a_good_session_cookie(client, engine):
    add_user(engine, "ann", M)
    assert login(client, "ann", GOOD_PW).status_code == 200
    assert client.get("/api/v1/me").status_code == 200
    assert client.get("/api/v1/me", headers=bearer("wrong")).status_code == 401


def test_the_openapi_document_lists_the_people_routes_and_both_ways_to_sign_in(client):
    doc = client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/login", "/api/v1/logout", "/api/v1/me", "/api/v1/me/password", "/api/v1/people",
                 "/api/v1/people/{user_id}", "/api/v1/tokens", "/api/v1/tokens/{token_id}", "/api/v1/audit",
                 "/api/v1/suppliers"):
        assert path in doc["paths"], path
    assert {"HTTPBearer", "APIKeyCookie"} <= set(doc["components"]["securitySchemes"])
    assert "/staff/login" not in doc["paths"]


# -- the bootstrap token -----------------------------------------------------------------------------

def test_the_bootstrap_token_belongs_to_a_built_in_administrator(client, engine):
    me = client.get("/api/v1/me", headers=ADMIN).json()
    assert (me["username"], me["role"], me["builtin"], me["via"]) == ("admin", A, True, "token")
    actions = [(a["action"], a["via"]) for a in audit_rows(engine)]
    assert ("people.bootstrap", "system") in actions and ("token.bootstrap", "system") in actions


def test_starting_again_with_the_same_token_changes_nothing_and_a_new_token_replaces_the_old(cloud_obj, client,
                                                                                           engine):
    before = (rows(engine, staff.staff), rows(engine, auth.api_tokens), len(audit_rows(engine)))
    cloud.app.create_app(cloud_obj, BOOT, b"k" * 32)
    assert (rows(engine, staff.staff), rows(engine, auth.api_tokens), len(audit_rows(engine))) == before
    app2 = cloud.app.create_app(cloud_obj, "a-new-bootstrap-token", b"k" * 32)
    with TestClient(app2) as c2:
        assert c2.get("/api/v1/me", headers=ADMIN).status_code == 401
        assert c2.get("/api/v1/me", headers=bearer("a-new-bootstrap-token")).json()["username"] == "admin"
    assert len(rows(engine, staff.staff)) == 1


def test_a_revoked_bootstrap_token_stays_revoked_after_a_restart(cloud_obj, client):
    (boot,) = client.get("/api/v1/tokens", headers=ADMIN).json()
    assert boot["name"] == "bootstrap" and boot["prefix"] == ""  # nothing of a hand-made token is shown
    assert client.delete(f"/api/v1/tokens/{boot['id']}", headers=ADMIN).status_code == 200
    with TestClient(cloud.app.create_app(cloud_obj, BOOT, b"k" * 32)) as c2:
        assert c2.get("/api/v1/me", headers=ADMIN).status_code == 401


# -- staff accounts ----------------------------------------------------------------------------------

def test_adding_a_person_stores_an_argon2_hash_and_audits_without_the_password(client, engine):
    r = client.post("/api/v1/people", json={"username": "Ann", "role": M, "password": GOOD_PW}, headers=ADMIN)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["username"], body["role"], body["has_password"]) == ("ann", M, True)
    assert "one_time_password" not in body and "password_hash" not in body
    with engine.begin() as conn:
        stored = staff.get(conn, body["id"]).password_hash
    assert stored.startswith("$argon2id$") and GOOD_PW not in stored
    assert FAST.verify(stored, GOOD_PW)
    (entry,) = [a for a in audit_rows(engine) if a["action"] == "people.add"]
    admin_id = client.get("/api/v1/me", headers=ADMIN).json()["id"]
    assert (entry["user_id"], entry["via"], entry["object_kind"], entry["object_id"]) == (admin_id, "token", "staff",
                                                                                         str(body["id"]))
    assert entry["change"] == {"username": "ann", "role": M, "supplier_id": None}
    assert GOOD_PW not in json.dumps(audit_rows(engine))


def test_the_production_hasher_is_argon2id_with_rfc_9106_parameters():
    assert PRODUCTION_HASHER.type is Type.ID
    assert PRODUCTION_HASHER.memory_cost >= 64 * 1024 and PRODUCTION_HASHER.time_cost >= 3


def test_without_a_password_a_one_time_password_is_shown_once_and_must_be_changed(client, engine):
    r = client.post("/api/v1/people", json={"username": "bob", "role": T}, headers=ADMIN)
    otp = r.json()["one_time_password"]
    assert r.json()["must_change_password"] is True
    assert otp not in json.dumps(client.get("/api/v1/people", headers=ADMIN).json())
    assert login(client, "bob", otp).status_code == 200
    assert client.get("/api/v1/me").json()["must_change_password"] is True
    r = client.get("/api/v1/machines")
    assert r.status_code == 403 and "one-time password" in r.json()["error"]
    r = client.post("/api/v1/me/password", json={"current": "wrong", "new": GOOD_PW})
    assert r.status_code == 403
    r = client.post("/api/v1/me/password", json={"current": otp, "new": GOOD_PW})
    assert r.status_code == 200 and r.json()["must_change_password"] is False
    assert client.get("/api/v1/machines").status_code == 200
    assert login(client, "bob", otp).status_code == 401 and login(client, "bob", GOOD_PW).status_code == 200


@pytest.mark.parametrize("password,rule", [
    ("short", "at least 10 characters"),
    ("x" * 257, "at most 256 characters"),
    ("password123", "too common"),
    ("1234567890", "too common"),
    ("qwertyuiop", "too common"),
    ("aaaaaaaaaaaa", "too common"),
    ("Carol-vending", "contains the username"),
    ("carol12345x", "contains the username"),
    ("tab\there-and-more", "printable text"),
])
def test_a_weak_password_is_refused_naming_the_rule_and_nothing_is_written(client, engine, password, rule):
    before = (rows(engine, staff.staff), len(audit_rows(engine)))
    r = client.post("/api/v1/people", json={"username": "carol", "role": T, "password": password}, headers=ADMIN)
    assert r.status_code == 422 and rule in r.json()["error"] and "rule" in r.json()["error"]
    assert (rows(engine, staff.staff), len(audit_rows(engine))) == before


@pytest.mark.parametrize("body,status,shown", [
    ({"username": "x", "role": T}, 422, "username"),
    ({"username": "bad name", "role": T}, 422, "username"),
    ({"username": "dave", "role": "owner"}, 422, "role must be one of"),
    ({"username": "dave", "role": S}, 422, "supplier_id"),
    ({"username": "dave", "role": S, "supplier_id": 999}, 404, "no supplier 999"),
    ({"username": "dave", "role": M, "supplier_id": 1}, 422, "only a supplier account"),
    ({"username": "dave", "role": M, "extra": 1}, 422, "extra"),
    ({"username": 5, "role": M}, 422, "username"),
])
def test_bad_staff_input_gives_a_clear_error_and_writes_nothing(client, engine, body, status, shown):
    before = (rows(engine, staff.staff), len(audit_rows(engine)))
    r = client.post("/api/v1/people", json=body, headers=ADMIN)
    assert r.status_code == status and shown in r.json()["error"], r.text
    assert (rows(engine, staff.staff), len(audit_rows(engine))) == before


def test_duplicate_usernames_are_refused_whatever_their_case(client):
    assert client.post("/api/v1/people", json={"username": "erin", "role": T}, headers=ADMIN).status_code == 201
    r = client.post("/api/v1/people", json={"username": " ERIN ", "role": M}, headers=ADMIN)
    assert r.status_code == 409 and "taken" in r.json()["error"]


def test_an_id_past_64_bits_is_no_supplier_and_a_number_past_them_is_refused_not_a_500(client):
    """Found by the API fuzz: SQLite cannot bind such an int (OverflowError), which was a 500."""
    huge = 2 ** 70
    r = client.patch(f"/api/v1/suppliers/{huge}", json={"contact": "x"}, headers=ADMIN)
    assert r.status_code == 404 and f"no supplier {huge}" in r.json()["error"]
    r = client.get(f"/api/v1/suppliers/{huge}", headers=ADMIN)
    assert r.status_code == 404
    r = client.patch(f"/api/v1/people/{huge}", json={"role": M}, headers=ADMIN)
    assert r.status_code in (404, 422) and r.status_code != 500


def test_a_supplier_account_is_linked_to_a_supplier(client):
    sup = client.post("/api/v1/suppliers", json={"name": "Fresh Drinks Ltd", "contact": "+86 10 1234"},
                      headers=ADMIN).json()
    r = client.post("/api/v1/people", json={"username": "fresh", "role": S, "supplier_id": sup["id"]}, headers=ADMIN)
    assert r.status_code == 201 and r.json()["supplier_id"] == sup["id"]
    assert client.post("/api/v1/suppliers", json={"name": "Fresh Drinks Ltd"}, headers=ADMIN).status_code == 409


def test_changing_a_person_audits_old_and_new_and_an_unknown_id_is_404(client, engine, callers):
    tech = callers[T][0]
    r = client.patch(f"/api/v1/people/{tech}", json={"role": M}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["role"] == M and r.json()["changed"] == ["role"]
    (entry,) = [a for a in audit_rows(engine) if a["action"] == "people.change"]
    assert entry["change"] == {"role": [T, M]} and entry["object_id"] == str(tech)
    before = len(audit_rows(engine))
    r = client.patch(f"/api/v1/people/{tech}", json={"role": M}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["changed"] == [] and len(audit_rows(engine)) == before
    assert client.patch("/api/v1/people/9999", json={"role": M}, headers=ADMIN).status_code == 404
    assert client.patch(f"/api/v1/people/{tech}", json={}, headers=ADMIN).status_code == 422
    assert client.patch(f"/api/v1/people/{tech}", json={"disabled": "yes"}, headers=ADMIN).status_code == 422
    assert len(audit_rows(engine)) == before


def test_the_last_active_administrator_cannot_be_disabled_or_demoted(client, engine):
    admin_id = client.get("/api/v1/me", headers=ADMIN).json()["id"]
    for body in ({"disabled": True}, {"role": M}):
        r = client.patch(f"/api/v1/people/{admin_id}", json=body, headers=ADMIN)
        assert r.status_code == 409 and "last active administrator" in r.json()["error"]
    add_user(engine, "second-admin", A)
    assert client.patch(f"/api/v1/people/{admin_id}", json={"role": M}, headers=ADMIN).status_code == 200


def test_a_disabled_persons_sessions_and_tokens_stop_at_once(client, app, engine):
    user_id = add_user(engine, "gail", M)
    token = token_for(engine, user_id)
    web = TestClient(app)
    assert login(web, "gail", GOOD_PW).status_code == 200
    assert web.get("/api/v1/machines").status_code == 200
    assert client.get("/api/v1/machines", headers=bearer(token)).status_code == 200
    assert client.patch(f"/api/v1/people/{user_id}", json={"disabled": True}, headers=ADMIN).status_code == 200
    assert web.get("/api/v1/machines").status_code == 401
    assert client.get("/api/v1/machines", headers=bearer(token)).status_code == 401
    assert login(web, "gail", GOOD_PW).status_code == 401
    assert client.patch(f"/api/v1/people/{user_id}", json={"disabled": False}, headers=ADMIN).status_code == 200
    assert client.get("/api/v1/machines", headers=bearer(token)).status_code == 401  # revoked, not paused
    assert web.get("/api/v1/machines").status_code == 401
    assert login(web, "gail", GOOD_PW).status_code == 200


def test_a_changed_role_applies_to_existing_tokens_at_once(client, engine, callers):
    tech_id, tech = callers[T]
    assert client.get("/api/v1/sales", headers=tech).status_code == 403
    client.patch(f"/api/v1/people/{tech_id}", json={"role": M}, headers=ADMIN)
    assert client.get("/api/v1/sales", headers=tech).status_code == 200


def test_a_refused_audit_write_undoes_the_change(app, engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(audit, "record", broken)
    before = rows(engine, staff.staff)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/api/v1/people", json={"username": "hank", "role": T, "password": GOOD_PW}, headers=ADMIN)
        assert r.status_code == 500
        r = c.post("/api/v1/machines", json={"id": "m-9", "name": "Nine"}, headers=ADMIN)
        assert r.status_code == 500
    assert rows(engine, staff.staff) == before
    assert [m["id"] for m in TestClient(app).get("/api/v1/machines", headers=ADMIN).json()] == [MACHINE]


def test_changing_the_fleet_is_audited_without_the_machine_secret(client, engine):
    r = client.post("/api/v1/machines", json={"id": "m-2", "name": "Two", "location": "hall"}, headers=ADMIN)
    secret = r.json()["secret"]
    client.put("/api/v1/machines/m-2/slots", json=SLOTS, headers=ADMIN)
    entries = {a["action"]: a for a in audit_rows(engine)}
    assert entries["machine.add"]["change"] == {"name": "Two", "location": "hall"}
    assert entries["machine.slots"]["change"]["slots"][0]["slot"] == "C3"
    assert secret not in json.dumps(audit_rows(engine))


# -- sessions ----------------------------------------------------------------------------------------

def test_login_sets_a_signed_httponly_lax_cookie_that_logout_revokes(client, engine):
    add_user(engine, "ivy", T)
    r = login(client, "ivy", GOOD_PW)
    assert r.status_code == 200 and r.json()["username"] == "ivy"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Max-Age=43200" in cookie
    value = client.cookies[auth.SESSION_COOKIE]
    with engine.begin() as conn:
        (session,) = conn.execute(sa.select(auth.sessions)).all()
    assert value.rsplit(".", 1)[0] not in session.secret_hash  # only the digest is kept
    assert client.get("/api/v1/me").json()["via"] == "session"
    assert client.post("/api/v1/logout").status_code == 200
    client.cookies.set(auth.SESSION_COOKIE, value)  # a copy kept by someone else
    assert client.get("/api/v1/me").status_code == 401
    assert [a["action"] for a in audit_rows(engine)][:2] == ["session.logout", "session.login"]


def test_a_session_expires(client, app, engine):
    add_user(engine, "jo", T)
    login(client, "jo", GOOD_PW)
    app.state.people.clock = lambda: utcnow() + auth.SESSION_TTL + timedelta(seconds=1)
    assert client.get("/api/v1/me").status_code == 401


def test_a_session_cookie_is_refused_on_a_change_sent_from_another_site(client, engine):
    add_user(engine, "kim", A)
    login(client, "kim", GOOD_PW)
    before = rows(engine, auth.api_tokens)
    r = client.post("/api/v1/tokens", json={"name": "x"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and rows(engine, auth.api_tokens) == before
    assert client.post("/api/v1/tokens", json={"name": "x"}, headers={"Origin": "http://testserver"}).status_code == 201


def test_logout_with_a_token_is_refused(client):
    r = client.post("/api/v1/logout", headers=ADMIN)
    assert r.status_code == 400 and "DELETE /api/v1/tokens" in r.json()["error"]


def test_a_wrong_password_and_an_unknown_user_get_the_same_401(client, engine):
    add_user(engine, "lee", M)
    wrong_pw, no_user = login(client, "lee", "not-the-password"), login(client, "nobody", "not-the-password")
    assert wrong_pw.status_code == no_user.status_code == 401
    assert wrong_pw.json() == no_user.json() == {"error": "wrong username or password"}
    assert auth.SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize("case", ["unknown", "wrong password", "disabled", "no password", "bad name", "right"])
def test_every_login_path_verifies_exactly_one_argon2_hash(client, engine, monkeypatch, case):
    add_user(engine, "mo", M)
    add_user(engine, "tokenonly", M, password=None)
    off = add_user(engine, "off", M)
    with engine.begin() as conn:
        staff.update_staff(conn, off, {"disabled": True})
    calls = []

    class Spy(PasswordHasher):
        def verify(self, hash, password):
            calls.append(hash)
            return super().verify(hash, password)

    monkeypatch.setattr(staff, "hasher", Spy(time_cost=1, memory_cost=1024, parallelism=1))
    name, pw = {"unknown": ("nobody", GOOD_PW), "wrong password": ("mo", "nope-nope-nope"), "disabled": ("off", GOOD_PW),
                "no password": ("tokenonly", GOOD_PW), "bad name": ("!!", GOOD_PW), "right": ("mo", GOOD_PW)}[case]
    r = login(client, name, pw)
    assert r.status_code == (200 if case == "right" else 401)
    assert len(calls) == 1 and calls[0].startswith("$argon2id$")


def test_repeated_failures_lock_a_username_whether_it_exists_or_not(client, app, engine):
    add_user(engine, "nat", M)
    for name in ("nat", "ghost"):
        for _ in range(staff.FREE_FAILURES):
            assert login(client, name, "wrong-wrong-wrong").status_code == 401
        r = login(client, name, GOOD_PW)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    start = utcnow()
    app.state.people.clock = lambda: start + staff.LOCK_BASE + timedelta(seconds=1)
    assert login(client, "nat", GOOD_PW).status_code == 200
    with engine.begin() as conn:
        assert conn.execute(sa.select(staff.login_failures.c.username)).scalars().all() == ["ghost"]


def test_the_backoff_doubles_and_is_capped(engine):
    now, locks = utcnow(), []
    for _ in range(staff.FREE_FAILURES + 9):  # each failure just after the previous lock ran out
        with engine.begin() as conn:
            state = staff.login_state(conn, "victim", now)
            staff.note_login(conn, state, staff.LoginVerdict(False, None, None), now)
            lock = conn.execute(sa.select(staff.login_failures.c.locked_until)).scalar()
        locks.append(int((lock - now).total_seconds()) if lock and lock > now else 0)
        now = max(now, lock or now) + timedelta(seconds=1)
    assert locks == [0] * (staff.FREE_FAILURES - 1) + [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_a_hash_made_with_old_parameters_is_redone_at_login(client, engine, monkeypatch):
    user_id = add_user(engine, "olga", M)
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    monkeypatch.setattr(staff, "hasher", stronger)
    assert login(client, "olga", GOOD_PW).status_code == 200
    with engine.begin() as conn:
        new = staff.get(conn, user_id).password_hash
    assert "m=2048,t=2,p=1" in new and not stronger.check_needs_rehash(new)
    assert login(client, "olga", GOOD_PW).status_code == 200


# -- tokens ------------------------------------------------------------------------------------------

def test_a_token_is_shown_once_and_only_its_digest_is_stored(client, engine, callers):
    _, tech = callers[T]
    r = client.post("/api/v1/tokens", json={"name": "nightly export"}, headers=tech)
    assert r.status_code == 201
    token = r.json()["token"]
    assert token.startswith("vend_") and len(token) > 40
    listed = client.get("/api/v1/tokens", headers=tech).json()
    assert token not in json.dumps(listed) and "nightly export" in [t["name"] for t in listed]
    with engine.begin() as conn:
        stored = conn.execute(sa.select(auth.api_tokens).where(auth.api_tokens.c.id == r.json()["id"])).first()
    assert stored.secret_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps([list(map(str, row)) for row in rows(engine, auth.api_tokens)])
    assert token not in json.dumps(audit_rows(engine))
    me = client.get("/api/v1/me", headers=bearer(token)).json()
    assert (me["role"], me["via"]) == (T, "token")
    assert client.get("/api/v1/sales", headers=bearer(token)).status_code == 403  # the role of its user
    assert client.get("/api/v1/tokens", headers=bearer(token)).json()[-1]["last_used_at"] is not None


def test_revoking_a_token_stops_it_and_someone_elses_token_is_404(client, callers):
    _, tech = callers[T]
    _, mgr = callers[M]
    created = client.post("/api/v1/tokens", json={"name": "tmp"}, headers=tech).json()
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=mgr).status_code == 404
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=tech).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(created["token"])).status_code == 401
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=tech).status_code == 404
    assert client.delete("/api/v1/tokens/99999", headers=tech).status_code == 404


@pytest.mark.parametrize("name", ["", "   ", "x" * 81, "tab\there"])
def test_a_bad_token_name_is_refused(client, engine, name):
    client.get("/api/v1/me", headers=ADMIN)  # the token's first use is written; the next within a minute not
    before = rows(engine, auth.api_tokens)
    r = client.post("/api/v1/tokens", json={"name": name}, headers=ADMIN)
    assert r.status_code == 422 and "token name" in r.json()["error"]
    assert rows(engine, auth.api_tokens) == before


# -- the audit trail ---------------------------------------------------------------------------------

def test_the_audit_trail_filters(client, engine, callers):
    admin_id = client.get("/api/v1/me", headers=ADMIN).json()["id"]
    mgr_id, mgr = callers[M]
    client.post("/api/v1/suppliers", json={"name": "Acme"}, headers=mgr)
    client.post("/api/v1/people", json={"username": "pat", "role": T, "password": GOOD_PW}, headers=ADMIN)
    by_mgr = client.get(f"/api/v1/audit?user={mgr_id}", headers=ADMIN).json()
    assert [a["action"] for a in by_mgr] == ["supplier.add"]
    by_admin = client.get(f"/api/v1/audit?user={admin_id}&action=people.add", headers=ADMIN).json()
    assert [a["change"]["username"] for a in by_admin] == ["pat"]
    assert [a["action"] for a in client.get("/api/v1/audit?kind=supplier", headers=ADMIN).json()] == ["supplier.add"]
    everything = client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
    assert [a["id"] for a in everything] == sorted((a["id"] for a in everything), reverse=True)
    page = client.get(f"/api/v1/audit?limit=2&before={everything[0]['id']}", headers=ADMIN).json()
    assert [a["id"] for a in page] == [a["id"] for a in everything[1:3]]
    assert client.get("/api/v1/audit?since=2000-01-01T00:00:00", headers=ADMIN).json() == everything[:100]
    assert client.get("/api/v1/audit?until=2000-01-01T00:00:00Z", headers=ADMIN).json() == []
    r = client.get("/api/v1/audit?since=2024-02-01&until=2024-01-01", headers=ADMIN)
    assert r.status_code == 422 and "since must be before until" in r.json()["error"]
    assert client.get("/api/v1/audit?limit=0", headers=ADMIN).status_code == 422
    assert client.get("/api/v1/audit?since=yesterday", headers=ADMIN).status_code == 422


# -- the staff pages ---------------------------------------------------------------------------------

def test_the_staff_sign_in_page(client, engine):
    add_user(engine, "quinn", M)
    assert "Staff sign-in" in client.get("/staff/login").text
    assert client.get("/staff/account").headers["location"] == "/staff/login?next=/staff/account"
    r = client.post("/staff/login", data={"username": "quinn", "password": "wrong-wrong-wrong"})
    assert r.status_code == 401 and "Wrong username or password" in r.text
    r = client.post("/staff/login", data={"username": "quinn", "password": GOOD_PW})
    assert (r.status_code, r.headers["location"]) == (303, "/staff")
    assert "Signed in as quinn, manager" in client.get("/staff/account").text
    r = client.post("/staff/password", data={"current": GOOD_PW, "new": "short"})
    assert r.status_code == 422 and "at least 10 characters" in r.text
    assert client.post("/staff/logout").headers["location"] == "/staff/login"
    assert client.get("/api/v1/me").status_code == 401


# -- any input ---------------------------------------------------------------------------------------

ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=300)
# Mostly printable and long enough, so that the accepted path is walked as often as the refused one.
PASSWORDS = st.one_of(ANY_TEXT, st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=10,
                                        max_size=80))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=PASSWORDS, n=st.integers(0, 10**9))
def test_any_string_as_a_password_is_taken_or_refused_with_a_message(client, password, n):
    # Sixty sign-ins from one address within a second: this test is about passwords, not the rate limits
    # (tests/cloud/web/test_limits.py), so each example starts with fresh buckets.
    client.app.state.limiter = limits.Limiter.from_settings(client.app.state.cloud.settings)
    body = json.dumps({"username": f"u{n}", "role": T, "password": password})  # escapes lone surrogates
    r = client.post("/api/v1/people", content=body, headers={**ADMIN, "Content-Type": "application/json"})
    event(str(r.status_code))
    assert r.status_code in (201, 409, 422), r.text
    if r.status_code == 422:
        assert r.json()["error"].startswith("password")
    elif r.status_code == 201:
        r = client.post("/api/v1/login", content=json.dumps({"username": f"u{n}", "password": password}),
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(username=ANY_TEXT, password=ANY_TEXT)
def test_any_login_is_refused_with_401_or_429_never_a_500(client, username, password):
    body = json.dumps({"username": username, "password": password})
    r = client.post("/api/v1/login", content=body, headers={"Content-Type": "application/json"})
    surrogate = any(0xD800 <= ord(ch) <= 0xDFFF for ch in username + password)
    # A lone surrogate is not text: refused as a bad field (422, naming it) before any login is tried.
    assert r.status_code in ((401, 422, 429) if surrogate else (401, 429)), r.text
    if r.status_code == 422:
        assert r.json()["error"].startswith(("username:", "password:"))
    assert auth.SESSION_COOKIE not in r.cookies


# -- vendctl -----------------------------------------------------------------------------------------

@pytest.fixture
def vendctl(client, monkeypatch, capsys):
    def run(*argv, token=BOOT, stdin=""):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, bearer(token))))
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_vendctl_people_add_list_disable(vendctl, client):
    code, out, _ = vendctl("people", "add", "rita", "--role", "manager")
    assert code == 0 and "one-time password" in out
    otp = out.strip().splitlines()[-1]
    assert login(client, "rita", otp).status_code == 200
    code, out, _ = vendctl("people", "add", "sam", "--role", "technician", "--password-stdin", stdin=GOOD_PW + "\n")
    assert code == 0 and "one-time" not in out and login(client, "sam", GOOD_PW).status_code == 200
    code, out, _ = vendctl("people")
    assert code == 0 and out.splitlines()[0].split() == ["ID", "USERNAME", "ROLE", "SUPPLIER", "STATE"]
    assert "rita" in out and "must change password" in out and "built-in" in out
    sam_id = next(p["id"] for p in json.loads(vendctl("people", "--json")[1]) if p["username"] == "sam")
    code, out, _ = vendctl("people", "disable", str(sam_id))
    assert code == 0 and "disabled" in out
    assert login(client, "sam", GOOD_PW).status_code == 401
    code, _, err = vendctl("people", "add", "tom", "--role", "owner")
    assert code == 1 and "422 role must be one of" in err
    code, _, err = vendctl("people", "add", "uma", "--role", "manager", "--password-stdin", stdin="short\n")
    assert code == 1 and "at least 10 characters" in err


def test_vendctl_tokens_and_audit(vendctl):
    code, out, _ = vendctl("tokens", "create", "backup")
    assert code == 0 and "shown only now" in out
    token = out.strip().splitlines()[-1]
    code, out, _ = vendctl("tokens", token=token)
    assert code == 0 and "backup" in out and token not in out
    created = json.loads(vendctl("tokens", "--json", token=token)[1])
    assert {t["name"] for t in created} == {"bootstrap", "backup"}
    code, out, _ = vendctl("audit", "--limit", "2")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "AT", "(UTC)"] and "token.create" in out
    assert len(out.strip().splitlines()) == 3
    entries = json.loads(vendctl("audit", "--json", "--action", "token.create")[1])
    assert [e["change"] for e in entries] == [{"name": "backup"}]
    backup_id = next(t["id"] for t in created if t["name"] == "backup")
    assert vendctl("tokens", "revoke", str(backup_id))[0] == 0
    code, _, err = vendctl("tokens", token=token)
    assert code == 1 and "401" in err
