"""The product catalogue's office (cloud/catalog/office.py, names.py, pages.py): names per language on the
menu and the receipt, the API's add/edit/export/import, the dashboard page and its forms, and vendctl's
``products`` verbs, on SQLite and PostgreSQL; every bad input answered with the field or row named and
nothing written."""

import html as html_
import io
import json
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.app
import cloud.cli
from cloud.catalog import names, office
from cloud.catalog import products as catalog
from cloud.core.db import utcnow
from cloud.fleet import machines
from cloud.people import audit, auth, staff
from cloud.sales import receipts
from tests.cloud_fixtures import (NOW, ThroughTestClient, add_customer, add_machine, add_sale, db_url,  # noqa: F401
                                  fast_hashes, idle_cloud)

BOOT = "bootstrap-token-for-catalogue-tests"
ADMIN = {"Authorization": f"Bearer {BOOT}"}
PW = "violet-tractor-harbour-91"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40


@pytest.fixture
def cloud_obj(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        add_machine(conn)  # A1 cola 3.50, A2 water 2.00: products the planogram made, with no cost yet
    yield obj
    obj.engine.dispose()


@pytest.fixture
def app(cloud_obj):
    return cloud.app.create_app(cloud_obj, BOOT, b"k" * 32)


@pytest.fixture
def client(app):
    with TestClient(app, follow_redirects=False) as c:
        yield c


def signed_in(app, cloud_obj, username, role, lang="en") -> TestClient:
    with cloud_obj.engine.begin() as conn:
        staff.add_staff(conn, username, role, utcnow(), staff.hash_password(PW), False, None)
    c = TestClient(app, follow_redirects=False, headers={"Accept-Language": lang})
    assert c.post("/staff/login", data={"username": username, "password": PW}).status_code == 303
    return c


def written(cloud_obj) -> tuple:
    """What a refused change must leave alone: the products, their details and names, the audit trail."""
    with cloud_obj.engine.connect() as conn:
        return (list(conn.execute(sa.select(catalog.products).order_by(catalog.products.c.id))),
                list(conn.execute(sa.select(catalog.product_details).order_by(catalog.product_details.c.product_id))),
                list(conn.execute(sa.select(names.product_names).order_by(names.product_names.c.product_id))),
                len(audit.query(conn, limit=1000)))


def product_id(cloud_obj, sku) -> int:
    with cloud_obj.engine.connect() as conn:
        return conn.execute(sa.select(catalog.products.c.id).where(catalog.products.c.sku == sku)).scalar()


def error_next_to(html: str, field: str) -> str:
    assert f'aria-describedby="error-{field}"' in html, html
    found = re.search(rf'<p class="error" role="alert" id="error-{field}">([^<]*)</p>', html)
    assert found, html
    return html_.unescape(found.group(1))


# -- names per language -----------------------------------------------------------------------------------

def test_the_menu_and_the_receipt_name_a_product_in_the_page_language_or_by_its_default_name(cloud_obj):
    cola = product_id(cloud_obj, "cola")
    with cloud_obj.engine.begin() as conn:
        names.set_names(conn, cola, names.clean({"zh-CN": "可乐"}), NOW)
        add_sale(conn, add_customer(conn))
    with cloud_obj.engine.connect() as conn:
        assert [(r.slot, r.name) for r in machines.menu(conn, "m-1", "zh-CN")] == [("A1", "可乐"), ("A2", "Water")]
        assert [r.name for r in machines.menu(conn, "m-1", "en")] == ["Cola", "Water"]
        assert [r.name for r in machines.menu(conn, "m-1", "fr")] == ["Cola", "Water"]  # a language not spoken
        assert machines.slot_for_sale(conn, "m-1", "A1", "zh-CN").name == "可乐"
        assert receipts.products_of(conn, ["o-sold"], "zh-CN")["o-sold"].product == "可乐"
        assert receipts.products_of(conn, ["o-sold"])["o-sold"].product == "Cola"


def test_names_only_in_languages_the_pages_speak(cloud_obj):
    with pytest.raises(catalog.StockError, match=r"names\.fr: is not a language"):
        names.clean({"fr": "Coca"})
    with pytest.raises(catalog.StockError, match=r"names\.en: is not a language"):
        names.clean({"en": "Cola"})  # the default name is the product's name itself
    with pytest.raises(catalog.StockError, match=r"names\.zh-CN: must be 1 to 80"):
        names.clean({"zh-CN": "可" * 81})
    assert names.clean({"zh-CN": "  "}) == {"zh-CN": ""}


# -- the API ----------------------------------------------------------------------------------------------

def test_the_api_adds_edits_and_names_a_product_and_refuses_a_duplicate_sku(client, cloud_obj):
    r = client.post("/api/v1/products", headers=ADMIN, json={
        "sku": "tea", "name": "Green tea", "cost": 120, "price": 400, "currency": "CNY",
        "names": {"zh-CN": "绿茶"}})
    assert r.status_code == 201, r.text
    assert r.json()["names"] == {"zh-CN": "绿茶"}
    before = written(cloud_obj)
    r = client.post("/api/v1/products", headers=ADMIN, json={
        "sku": "tea", "name": "Other", "cost": 1, "price": 2, "currency": "CNY"})
    assert r.status_code == 409 and "sku: 'tea' exists already" in r.json()["error"]
    assert written(cloud_obj) == before
    cola = product_id(cloud_obj, "cola")  # made by the planogram: no cost yet, named only in English
    r = client.patch(f"/api/v1/products/{cola}", headers=ADMIN, json={"names": {"zh-CN": "可乐"}})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == ["names.zh-CN"] and r.json()["cost"] is None
    r = client.patch(f"/api/v1/products/{cola}", headers=ADMIN, json={"cost": 150, "price": 350, "currency": "CNY"})
    assert r.json()["cost"] == 150
    before = written(cloud_obj)
    r = client.patch(f"/api/v1/products/{cola}", headers=ADMIN, json={"price": -5, "names": {"zh-CN": "新名"}})
    assert r.status_code == 422 and "price: must not be negative" in r.json()["error"]
    r = client.patch(f"/api/v1/products/{cola}", headers=ADMIN, json={"names": {"de": "Cola"}})
    assert r.status_code == 422 and "names.de" in r.json()["error"]
    assert written(cloud_obj) == before
    listed = {p["sku"]: p for p in client.get("/api/v1/products", headers=ADMIN).json()}
    assert listed["cola"]["names"] == {"zh-CN": "可乐"} and listed["water"]["names"] == {}


def test_export_then_import_round_trips_and_a_second_import_changes_nothing(client, cloud_obj):
    client.post("/api/v1/products", headers=ADMIN, json={
        "sku": "tea", "name": "Green tea, large", "cost": 120, "price": 400, "currency": "CNY",
        "barcode": "6901234567892", "shelf_life_days": 180, "reorder_level": 12, "names": {"zh-CN": "绿茶"}})
    r = client.get("/api/v1/products/export", headers=ADMIN)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    text = r.text
    assert text.splitlines()[0] == ("sku,name,cost,price,currency,barcode,shelf_life_days,reorder_level,"
                                    "name_zh-CN")
    assert '"Green tea, large",1.20,4.00,CNY,6901234567892,180,12,绿茶' in text
    assert "cola,Cola,,,,,,0," in text  # described by nobody yet: no cost, price or currency
    before = written(cloud_obj)
    r = client.post("/api/v1/products/import", headers={**ADMIN, "Content-Type": "text/csv"}, content=text.encode())
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 0 and r.json()["updated"] == 0 and r.json()["unchanged"] == 3
    assert written(cloud_obj) == before
    assert client.get("/api/v1/products/export", headers=ADMIN).text == text


def test_an_import_adds_and_changes_all_rows_or_none_naming_a_bad_row(client, cloud_obj):
    good = ("sku,name,cost,price,currency,name_zh-CN\n"
            "cola,Cola,1.50,3.50,CNY,可乐\n"
            "juice,Orange juice,2.00,5.00,CNY,橙汁\n")
    h = {**ADMIN, "Content-Type": "text/csv"}
    r = client.post("/api/v1/products/import", headers=h, content=good.encode())
    assert r.json() == {"products": 2, "added": 1, "updated": 1, "unchanged": 0, "added_skus": ["juice"],
                        "updated_skus": ["cola"]}
    again = client.post("/api/v1/products/import", headers=h, content=good.encode()).json()
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 2)
    before = written(cloud_obj)
    for body, where in (
            ("sku,name,cost,price,currency\nwater,Water,1.00,2.00,CNY\nsoda,Soda,1.2.3,3.00,CNY\n",
             "line 3, cost: '1.2.3' is not an amount"),
            ("sku,name,cost,price,currency\nwater,Water,1.00,2.00,CNY\nwater,Water,1.00,2.00,CNY\n",
             "line 3, sku: 'water' is on line 2 already"),
            ("sku,name,cost,price,currency,barcode\nwater,Water,1.00,2.00,CNY,6901234567893\n",
             "line 2, barcode: 3 is not the check digit"),
            ("sku,name,cost,price,currency,name_fr\nwater,Water,1.00,2.00,CNY,Eau\n", "unknown column 'name_fr'"),
            ("sku,name,price,currency\n", "file: needs the columns cost"),
            ("sku,name,cost,price,currency\nwater,Water,1.00,-2,CNY\n", "line 2, price:"),
            ("sku,name,cost,price,currency\nnew,,1.00,2.00,CNY\n", "line 2, name: must be 1 to 80"),
            ("sku,name,cost,price,currency,name_zh-CN\ncola,Cola,1.50,3.50,CNY,可乐\nx,X,1,2,EURO,\n",
             "line 3, currency:")):
        r = client.post("/api/v1/products/import", headers=h, content=body.encode())
        assert r.status_code == 422, (body, r.text)
        assert where in r.json()["error"], (where, r.json())
    assert written(cloud_obj) == before
    r = client.post("/api/v1/products/import", headers=h, content="sku,name\n".encode("utf-16"))
    assert r.status_code == 422 and "not UTF-8" in r.json()["error"]
    r = client.post("/api/v1/products/import", headers=h, content=b"a" * 200_000)  # one cell past csv's limit
    assert r.status_code == 422 and "line 1: is not CSV" in r.json()["error"]
    assert written(cloud_obj) == before


def test_the_catalogue_routes_are_role_checked_and_in_the_openapi_document(app, client, cloud_obj):
    tech = signed_in(app, cloud_obj, "tina", "technician")
    assert tech.get("/api/v1/products/export").status_code == 200
    assert tech.post("/api/v1/products/import", content=b"sku,name,cost,price,currency\n",
                     headers={"Content-Type": "text/csv", "Origin": "http://testserver"}).status_code == 403
    assert client.get("/api/v1/products/export").status_code == 401
    document = client.get("/api/v1/openapi.json").json()
    paths = document["paths"]
    assert "text/csv" in json.dumps(paths["/api/v1/products/export"]["get"]["responses"])
    assert "text/csv" in json.dumps(paths["/api/v1/products/import"]["post"]["requestBody"])
    assert "names" in document["components"]["schemas"]["ProductChange"]["properties"]


# -- the page ---------------------------------------------------------------------------------------------

def test_a_manager_adds_a_product_on_the_page_and_a_bad_price_is_answered_next_to_it(app, cloud_obj):
    m = signed_in(app, cloud_obj, "mona", "manager")
    page = m.get("/staff/products").text
    assert 'href="/staff/products/new"' in page and "Cola" in page and "not set" in page
    form = {"sku": "tea", "name": "Green tea", "names.zh-CN": "绿茶", "currency": "CNY", "cost": "1.20",
            "price": "four", "barcode": "", "shelf_life_days": "", "reorder_level": "0"}
    before = written(cloud_obj)
    r = m.post("/staff/products/new", data=form)
    assert r.status_code == 422
    assert error_next_to(r.text, "price").startswith("Price: “four” is not an amount")
    assert 'value="绿茶"' in r.text  # the form kept
    r = m.post("/staff/products/new", data={**form, "sku": "cola", "price": "4.00"})
    assert r.status_code == 409 and "SKU: this SKU exists already" in error_next_to(r.text, "sku")
    assert written(cloud_obj) == before
    r = m.post("/staff/products/new", data={**form, "price": "4.00"})
    assert r.status_code == 303
    page = m.get(r.headers["location"]).text
    assert "Saved." in page and 'value="4.00"' in page and "¥4.00" in page and 'value="绿茶"' in page
    listing = m.get("/staff/products?q=绿茶").text
    assert "tea" in listing and "¥1.20" in listing and "water" not in listing.lower()


def test_editing_on_the_page_in_chinese_and_a_picture_that_is_not_one(app, cloud_obj):
    m = signed_in(app, cloud_obj, "mona", "manager", lang="zh-CN")
    cola = product_id(cloud_obj, "cola")
    form = {"name": "Cola", "names.zh-CN": "可口可乐", "currency": "CNY", "cost": "1.50", "price": "3.50",
            "barcode": "", "shelf_life_days": "", "reorder_level": "0"}
    before = written(cloud_obj)
    r = m.post(f"/staff/products/{cola}", data={**form, "price": "3,50"})
    assert r.status_code == 422 and error_next_to(r.text, "price") == "价格：“3,50”不是金额，请写成 10 或 10.50 这样的格式。"
    r = m.post(f"/staff/products/{cola}", data={**form, "reorder_level": "-1"})
    assert r.status_code == 422 and error_next_to(r.text, "reorder_level") == "补货点：“-1”不是整数。"
    assert written(cloud_obj) == before
    assert m.post(f"/staff/products/{cola}", data=form).status_code == 303
    with cloud_obj.engine.connect() as conn:
        assert machines.menu(conn, "m-1", "zh-CN")[0].name == "可口可乐"
        assert catalog.get_product(conn, cola).cost == 150
    r = m.post(f"/staff/products/{cola}/picture", files={"picture": ("x.png", b"GIF89a not a png", "image/png")})
    assert r.status_code == 422 and error_next_to(r.text, "picture")
    r = m.post(f"/staff/products/{cola}/picture", files={"picture": ("x.png", PNG, "image/png")})
    assert r.status_code == 303
    assert m.get("/media/products/cola").content == PNG


def test_import_and_export_from_the_page(app, cloud_obj):
    m = signed_in(app, cloud_obj, "mona", "manager")
    before = written(cloud_obj)
    bad = "sku,name,cost,price,currency\nwater,Water,1.00,2.00,CNY\nsoda,Soda,abc,3.00,CNY\n"
    r = m.post("/staff/products/import", files={"file": ("p.csv", bad.encode(), "text/csv")})
    assert r.status_code == 422 and "line 3, Cost:" in r.text.replace("line 3, cost", "line 3, Cost")
    assert written(cloud_obj) == before
    exported = m.get("/staff/products/export.csv")
    assert exported.status_code == 200 and exported.text.startswith("sku,name,")
    good = "sku,name,cost,price,currency,name_zh-CN\ncola,Cola,1.50,3.50,CNY,可乐\n"
    r = m.post("/staff/products/import", files={"file": ("p.csv", good.encode(), "text/csv")})
    assert r.status_code == 303
    assert "1 changed" in m.get(r.headers["location"]).text


def test_a_technician_reads_the_catalogue_but_cannot_change_it(app, cloud_obj):
    t = signed_in(app, cloud_obj, "tina", "technician")
    cola = product_id(cloud_obj, "cola")
    page = t.get(f"/staff/products/{cola}").text
    assert "disabled" in page and "<button" not in page.split('id="product-form"')[1].split("</form>")[0]
    assert 'href="/staff/products/new"' not in t.get("/staff/products").text
    r = t.post(f"/staff/products/{cola}", data={"name": "Hacked"})
    assert r.status_code == 403
    assert t.get("/staff/products/new").status_code == 403


def test_the_list_pages_by_sku(app, cloud_obj):
    with cloud_obj.engine.begin() as conn:
        for i in range(60):
            catalog.add_product(conn, f"p{i:03d}", f"Product {i}", 100, 200, "CNY", NOW)
    m = signed_in(app, cloud_obj, "mona", "manager")
    first = m.get("/staff/products").text
    assert first.count('<th scope="row">') == 50
    nxt = re.search(r'id="next-page" href="([^"]*)"', first).group(1).replace("&amp;", "&")
    second = m.get(nxt).text
    assert second.count('<th scope="row">') == 12 and ">p048<" not in second and ">p049<" in second and ">water<" in second
    assert 'id="next-page"' not in second


# -- vendctl ----------------------------------------------------------------------------------------------

@pytest.fixture
def vendctl(client, monkeypatch, capsys):
    def run(*argv):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, ADMIN)))
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_vendctl_edits_exports_and_imports_with_money_as_money(vendctl, cloud_obj, tmp_path):
    code, out, err = vendctl("products", "edit", "cola", "--cost", "1.50", "--price", "3.50", "--currency", "CNY",
                             "--name-zh", "可乐")
    assert code == 0, err
    assert "可乐" in out and "cost ¥1.50, price ¥3.50" in out
    code, out, err = vendctl("products", "edit", "cola", "--price", "abc")
    assert code != 0 and "--price: 'abc' is not an amount" in err
    code, out, err = vendctl("products", "add", "cola", "--name", "Cola", "--cost", "1", "--price", "2")
    assert code != 0 and "409" in err and "exists already" in err
    path = tmp_path / "products.csv"
    code, out, err = vendctl("products", "export", str(path))
    assert code == 0, err
    assert "cola,Cola,1.50,3.50,CNY,,,0,可乐" in path.read_text(encoding="utf-8")
    code, out, err = vendctl("products", "import", str(path))
    assert code == 0 and "2 products: 0 added, 0 updated, 2 unchanged" in out
    path.write_text("sku,name,cost,price,currency\nnew,New,x,1,CNY\n")
    code, out, err = vendctl("products", "import", str(path))
    assert code != 0 and "line 2, cost" in err
    code, out, err = vendctl("products")
    assert "¥3.50" in out


def test_the_purchase_order_form_lists_a_product_once_the_catalogue_page_gives_it_a_cost(app, cloud_obj):
    """The issue's gap: products the planogram made have no cost, so the new order form listed none."""
    m = signed_in(app, cloud_obj, "mona", "manager")
    form = m.get("/staff/purchase-orders").text
    assert "Products with no cost yet, which cannot be ordered: 2." in form and ">cola Cola" not in form
    cola = product_id(cloud_obj, "cola")
    r = m.post(f"/staff/products/{cola}", data={"name": "Cola", "names.zh-CN": "", "currency": "CNY", "cost": "1.50",
                                                 "price": "3.50", "barcode": "", "shelf_life_days": "",
                                                 "reorder_level": "0"})
    assert r.status_code == 303
    form = m.get("/staff/purchase-orders").text
    assert "Products with no cost yet, which cannot be ordered: 1." in form and ">cola Cola (CN¥1.50)</option>" in form
