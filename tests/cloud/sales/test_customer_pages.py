"""The customer's pages over HTTP beyond the plain purchase (tests/cloud/sales/test_web.py): product pictures, the live
order stream, receipts, the error pages in both languages."""

import json
import time

import sqlalchemy as sa

import cloud.app
import cloud.people
import cloud.sales.shop
from cloud.fleet import machines
from cloud.catalog import pictures as media
from cloud.sales import orders
from cloud.sync import ingest
from tests.cloud.sales.test_web import ADMIN, buy, client, cloud_obj, customer, expire, register, scan  # noqa: F401  (fixtures)
from tests.cloud_fixtures import MACHINE, NOW, SECRET, Chain, db_url, post_form  # noqa: F401  (fixture)
from protocol import token as qrtoken
from tests.cloud.people.test_people import PNG_1PX

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


def test_a_product_without_a_picture_gets_its_initial_on_its_own_colour_cached_by_etag(client):
    r = client.get("/media/products/cola")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert ">C</text>" in r.text and "max-age" in r.headers["cache-control"]
    again = client.get("/media/products/cola", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/media/products/nope").status_code == 404


def test_a_manager_uploads_a_picture_checked_by_its_bytes(client, cloud_obj):
    r = client.put("/api/v1/products/cola/picture", content=PNG_1PX, headers=ADMIN)
    assert r.status_code == 200, r.text
    shown = client.get("/media/products/cola")
    assert shown.headers["content-type"] == "image/png" and shown.content == PNG_1PX
    assert media.stored(cloud_obj.settings.var, "cola").endswith("cola.png")
    fake = client.put("/api/v1/products/cola/picture", content=b"<svg>not a photo</svg>", headers=ADMIN)
    assert fake.status_code == 422 and "PNG, JPEG or WebP" in fake.json()["error"]
    big = client.put("/api/v1/products/cola/picture", content=PNG_1PX + b"\0" * media.MAX_BYTES, headers=ADMIN)
    assert big.status_code == 422 and "512 KB" in big.json()["error"]
    assert client.put("/api/v1/products/nope/picture", content=PNG_1PX, headers=ADMIN).status_code == 404
    assert client.get("/media/products/cola").content == PNG_1PX, "a refused upload leaves the picture"


def test_the_menu_shows_pictures_stock_and_sold_out_in_words_in_chinese(client, cloud_obj, customer):
    with cloud_obj.engine.begin() as conn:
        conn.execute(machines.slots.update().where(machines.slots.c.slot == "A1").values(count=0))
    r = client.get("/m/m-1", headers=ZH)
    assert r.status_code == 200
    assert '<img src="/media/products/' in r.text and 'loading="lazy"' in r.text
    assert "已售罄" in r.text and "购买" in r.text


def test_the_order_stream_sends_the_settled_status_and_ends(client, cloud_obj, customer):
    post_form(client, "/wallet/topup", dict(amount="10", key="topup-key-1"))
    order_id = buy(client).headers["location"].rsplit("/", 1)[1]
    expire(cloud_obj, order_id)  # no broker: no machine answers, and the sweeper voids it at its expiry
    r = client.get(f"/orders/{order_id}/events")
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    assert [e["status"] for e in events] == ["expired"] and events[0]["settled"]
    assert "not been charged" in events[0]["text"]
    client.cookies.delete(cloud.people.COOKIE)
    assert client.get(f"/orders/{order_id}/events").status_code == 404


def test_the_receipt_names_machine_product_amount_and_status(client, cloud_obj, customer):
    post_form(client, "/wallet/topup", dict(amount="10", key="topup-key-1"))
    order_id = buy(client).headers["location"].rsplit("/", 1)[1]
    expire(cloud_obj, order_id)
    r = client.get(f"/orders/{order_id}/receipt")
    assert r.status_code == 200
    for shown in ("Machine m-1", "Cola", "CN¥3.50", "Wallet", "not been charged", order_id):
        assert shown in r.text
    zh = client.get(f"/orders/{order_id}/receipt", headers=ZH).text
    assert "收据" in zh and "支付方式" in zh


def test_someone_elses_order_and_receipt_look_like_no_order(client, customer):
    post_form(client, "/wallet/topup", dict(amount="10", key="topup-key-1"))
    order_id = buy(client).headers["location"].rsplit("/", 1)[1]
    client.cookies.clear()
    scan(client)
    register(client, name="Bob", phone="+86 138 0000 0002")
    for path in (f"/orders/{order_id}", f"/orders/{order_id}/receipt"):
        assert client.get(path).status_code == 404


def test_an_unknown_machine_says_so(client, customer):
    r = client.get("/m/ghost", headers=ZH)
    assert r.status_code == 404 and "未知的售货机" in r.text


def test_a_bad_topup_keeps_what_was_typed_and_names_the_field(client, customer):
    r = post_form(client, "/wallet/topup", dict(amount="12,5", key="topup-key-1"))
    assert r.status_code == 422 and 'value="12,5"' in r.text and "Amount:" in r.text


def test_an_expired_code_says_what_to_do_in_chinese(client):
    r = client.get(f"/q/{qrtoken.make(MACHINE, SECRET.encode(), time.time() - 3600, 5)}", headers=ZH)
    assert r.status_code == 410 and "二维码已过期" in r.text and "请扫描" in r.text



def test_pictures_of_skus_sharing_a_prefix_stay_apart(client, cloud_obj):
    """13 #9: a picture is found by its exact name, so "pic.x"'s upload is not "pic"'s picture, and "pic"'s
    upload does not delete it."""
    from cloud.catalog import products as catalog
    from tests.cloud_fixtures import NOW

    with cloud_obj.engine.begin() as conn:
        for sku in ("pic", "pic.x"):
            catalog.add_product(conn, sku, sku.upper(), 100, 200, "CNY", NOW)
    assert client.put("/api/v1/products/pic.x/picture", content=PNG_1PX, headers=ADMIN).status_code == 200
    shown = client.get("/media/products/pic")
    assert shown.headers["content-type"].startswith("image/svg+xml"), "pic.x's picture served for pic"
    jpeg = b"\xff\xd8\xff\xe0" + b"\0" * 16
    assert client.put("/api/v1/products/pic/picture", content=jpeg, headers=ADMIN).status_code == 200
    assert client.get("/media/products/pic").content == jpeg
    assert client.get("/media/products/pic.x").content == PNG_1PX, "pic's upload deleted pic.x's picture"
    assert media.stored(cloud_obj.settings.var, "pic").endswith("pic.jpg")


def test_back_to_the_menu_gets_a_fresh_key_and_an_old_key_buys_nothing_new(client, cloud_obj, customer):
    # Issue 15: Buy on a menu reached with Back re-sent the old key and showed "Take your product!" for the
    # earlier order, while nothing dropped.
    post_form(client, "/wallet/topup", dict(amount="10", key="topup-key-1"))
    menu = client.get("/m/m-1")
    assert menu.headers["cache-control"] == "no-store"  # Back reloads it, with a new key
    keys = {client.get("/m/m-1").text.split('name="key" value="')[1].split('"')[0] for _ in range(2)}
    assert len(keys) == 2
    first = buy(client, key="menu-key-0001")
    order_id = first.headers["location"].rsplit("/", 1)[1]
    assert buy(client, key="menu-key-0001").headers["location"] == first.headers["location"]  # a double tap
    expire(cloud_obj, order_id)  # that order is over (no machine answered)
    # The same key later (a retry after a lost answer) is that order, shown as what it is: nothing new.
    again = buy(client, key="menu-key-0001")
    assert again.status_code == 303 and again.headers["location"] == f"/orders/{order_id}"
    assert "not been charged" in client.get(again.headers["location"]).text
    with cloud_obj.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(orders.orders)).scalar() == 1


def test_the_wallet_history_shows_a_hold_and_its_release_never_paid_then_returned(client, cloud_obj, customer):
    post_form(client, "/wallet/topup", dict(amount="10", key="topup-key-1"))
    order_id = buy(client).headers["location"].rsplit("/", 1)[1]
    held = client.get("/wallet").text
    assert "Held for a purchase" in held and ">Paid" not in held
    expire(cloud_obj, order_id)
    history = client.get("/wallet").text
    assert "Held for a purchase" in history and "Hold released: not dropped, not charged" in history
    assert ">Paid" not in history and "Returned" not in history


def test_a_refunded_order_says_refunded_not_take_your_product(client, cloud_obj, customer):
    post_form(client, "/wallet/topup", dict(amount="10", key="topup-key-1"))
    order_id = buy(client).headers["location"].rsplit("/", 1)[1]
    chain = Chain()  # the machine's ledger: the product dropped
    chain.add("vend.started", order_id=order_id, cmd_id=f"v-{order_id}", slot="A1")
    chain.add("vend.succeeded", order_id=order_id, slot="A1", turns=1)
    with cloud_obj.engine.begin() as conn:
        ingest.store_batch(conn, cloud_obj.provider, MACHINE, chain.batch(1), NOW)
    assert "Take your product!" in client.get(f"/orders/{order_id}").text
    assert "Paid" in client.get("/wallet").text
    with cloud_obj.engine.begin() as conn:
        orders.refund(conn, cloud_obj.provider, order_id, 100, "refund-part-1", NOW)
    assert "Partly refunded" in client.get(f"/orders/{order_id}").text
    with cloud_obj.engine.begin() as conn:
        orders.refund(conn, cloud_obj.provider, order_id, None, "refund-rest-1", NOW)
    for page in (client.get(f"/orders/{order_id}").text, client.get(f"/orders/{order_id}/receipt").text):
        assert "Refunded in full" in page and "Take your product!" not in page


def test_times_on_the_customers_pages_are_the_fleets_local_time_in_the_pages_language(tmp_path, db_url):
    from zoneinfo import ZoneInfo

    from fastapi.testclient import TestClient

    from tests.cloud_fixtures import add_machine, idle_cloud

    obj = idle_cloud(tmp_path, db_url, demo_topups=True, time_zone="Asia/Shanghai")
    with obj.engine.begin() as conn:
        add_machine(conn)
    with TestClient(cloud.app.create_app(obj, "admintoken", b"k" * 32), follow_redirects=False) as c:
        scan(c)
        register(c)
        post_form(c, "/wallet/topup", dict(amount="10", key="topup-key-1"))
        order_id = buy(c).headers["location"].rsplit("/", 1)[1]
        with obj.engine.connect() as conn:
            created = orders.get(conn, order_id).created_at
        local = created.astimezone(ZoneInfo("Asia/Shanghai"))
        zh = c.get(f"/orders/{order_id}/receipt", headers=ZH).text
        assert f"{local.hour}:{local.minute:02d}" in zh and "UTC" not in zh  # 24-hour, Beijing time
        en = c.get(f"/orders/{order_id}/receipt").text
        assert f"{(local.hour - 1) % 12 + 1}:{local.minute:02d}" in en and "UTC" not in en
        wallet = c.get("/wallet", headers=ZH).text
        assert f"{local.hour}:{local.minute:02d}" in wallet
    obj.engine.dispose()


def test_the_order_pages_poll_gets_the_customers_view_of_their_order(client, cloud_obj, customer):
    # The office's staff order API once took the same path and answered the customer's page with a 401.
    post_form(client, "/wallet/topup", dict(amount="10", key="topup-key-1"))
    order_id = buy(client).headers["location"].rsplit("/", 1)[1]
    expire(cloud_obj, order_id)
    r = client.get(f"/api/v1/orders/{order_id}")
    assert r.status_code == 200 and r.json()["settled"] and r.json()["status"] == "expired"
