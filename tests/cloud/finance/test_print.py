"""The pages printed on A4 (a pick list, a location's settlement statement, a supplier's statement) in the
reader's language, chosen by the browser, the cookie or ``?lang=``; and ``vendctl products picture``."""

import io
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

import cloud.cli
import cloud.core.db
import cloud.service
import cloud.core.settings
import cloud.app
from cloud.web import i18n
from cloud.catalog import pictures as media
from cloud.finance import ledger
from tests.cloud_fixtures import NOW, ThroughTestClient, add_customer, add_sale, db_url, idle_cloud  # noqa: F401  (fixtures)
from tests.cloud.finance.test_finance import add_sale_row, world
from tests.cloud.stock.test_stock import product, received_po

BOOT = "bootstrap-token-for-print-tests"
ADMIN = {"Authorization": f"Bearer {BOOT}"}
ZH = {**ADMIN, "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture
def printed(tmp_path, db_url):
    """A cloud with a location that sold for 3.50 CNY in May 2024 under three settlement rules, a supplier
    that delivered and was paid, and a route whose machine needs loading: (client, location, supplier)."""
    obj = idle_cloud(tmp_path, db_url)
    with obj.engine.begin() as conn:
        location_id, supplier_id, _ = world(conn)
        add_sale(conn, add_customer(conn), "o-1", amount=350)
        add_sale_row(conn, "o-1", 350, 1)
        received_po(conn, supplier_id, product(conn, "cola", 120), 5, 120, "grn-1", NOW.date() + timedelta(days=30))
        ledger.catch_up(conn, NOW)
    app = cloud.app.create_app(obj, BOOT, b"k" * 32)
    app.state.people.clock = lambda: NOW
    with TestClient(app) as client:
        for rule in ({"kind": "percent_gross", "percent": "10"}, {"kind": "per_item", "amount": 50},
                     {"kind": "flat_monthly", "amount": 3100}):
            r = client.post(f"/api/v1/locations/{location_id}/settlement-rules", headers=ADMIN,
                            json={**rule, "currency": "CNY", "valid_from": "2024-01-01"})
            assert r.status_code == 201, r.text
        r = client.post(f"/api/v1/suppliers/{supplier_id}/payments", headers=ADMIN, json={
            "key": "pay-1", "amount": 500, "currency": "CNY", "paid_on": "2024-05-03", "reference": "bank 1"})
        assert r.status_code == 201, r.text
        assert client.post("/api/v1/routes", headers=ADMIN, json={"name": "North", "machines": ["m-1"]}).is_success
        yield client, location_id, supplier_id
    obj.engine.dispose()


def statement(client, location_id, headers, query=""):
    return client.get(f"/api/v1/locations/{location_id}/statements/2024-05?format=html{query}", headers=headers)


def test_a_settlement_statement_in_chinese_has_chinese_headings_and_yuan(printed):
    client, location_id, _ = printed
    page = statement(client, location_id, ZH)
    assert page.status_code == 200 and '<html lang="zh-CN">' in page.text
    for text in ("结算单：Station", "销售总额", "退款", "应付合计", "按销售净额分成", "按售出件数", "月固定费用",
                 "期间：2024-05-01 至 2024-05-31（UTC）", "未入账"):  # noqa: RUF001 (Chinese punctuation)
        assert text in page.text, text
    # 10% of 3.50, 1 item at 0.50, a month at 31.00: each basis in the reader's money, never minor units.
    assert "¥3.50 的 10.00%" in page.text and "1 件 × ¥0.50" in page.text
    assert "每月 ¥31.00：2024-05：31 天中的 31 天" in page.text and "按销售净额分成（规则 1）" in page.text
    assert '<td class="n" id="total">¥31.85</td>' in page.text and "CN¥" not in page.text
    english = statement(client, location_id, ADMIN)
    assert '<html lang="en">' in english.text and "Total due" in english.text
    assert "10.00% of CN¥3.50" in english.text and "1 × CN¥0.50" in english.text
    assert "CN¥31.00 a month: 2024-05: 31 of 31 days" in english.text
    assert '<td class="n" id="total">CN¥31.85</td>' in english.text and "应付" not in english.text


def test_a_supplier_statement_in_chinese(printed):
    client, _, supplier_id = printed
    page = client.get(f"/api/v1/suppliers/{supplier_id}/statement?from=2024-05-01&to=2024-05-31&format=html",
                      headers=ZH)
    assert page.status_code == 200 and '<html lang="zh-CN">' in page.text
    for text in ("供应商对账单：Fresh Drinks", "期初余额", "收货", "付款", "期末余额（应付供应商）", "¥6.00", "采购：¥6.00。付款：¥5.00。"):
        assert text in page.text, text
    assert '<td class="n" id="closing">¥1.00</td>' in page.text and "CN¥" not in page.text


def test_a_pick_list_in_chinese(printed):
    client, _, _ = printed
    page = client.get("/api/v1/routes/1/pick-list?format=html", headers=ZH)
    assert page.status_code == 200 and '<html lang="zh-CN">' in page.text
    for text in ("拣货单：North", "从仓库取货", "1. 售货机 m-1：5 件", "先到期的先取", "已装", "货道现有",
                 "2024-05-01 需拣货 5 件。", "仓库缺货 5 件。", "批次 1（2024-05-31）：5"):
        assert text in page.text, text
    one = client.get("/api/v1/machines/m-1/pick-list?format=html", headers=ZH)
    assert "拣货单：售货机 m-1" in one.text
    assert "Pick list: Machine m-1" in client.get("/api/v1/machines/m-1/pick-list?format=html", headers=ADMIN).text


def test_lang_in_the_link_chooses_the_language_of_a_printed_page(printed):
    client, location_id, supplier_id = printed
    for path in (f"/api/v1/locations/{location_id}/statements/2024-05?format=html",
                 f"/api/v1/suppliers/{supplier_id}/statement?format=html", "/api/v1/routes/1/pick-list?format=html"):
        zh = client.get(path + "&lang=zh-CN", headers=ADMIN)
        assert zh.status_code == 200 and '<html lang="zh-CN">' in zh.text, path
        client.cookies.set(i18n.COOKIE, "zh-CN")
        en = client.get(path + "&lang=en", headers=ADMIN)
        assert '<html lang="en">' in en.text, path
        assert '<html lang="zh-CN">' in client.get(path + "&lang=fr", headers=ADMIN).text, path  # not ours: ignored
        client.cookies.clear()


@pytest.fixture
def vendctl(printed, monkeypatch, capsys):
    client = printed[0]

    def run(*argv):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, ADMIN)))
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_vendctl_uploads_a_product_picture(vendctl, printed, tmp_path):
    client = printed[0]
    picture = tmp_path / "tea.png"
    picture.write_bytes(PNG)
    code, out, err = vendctl("products", "picture", "tea", str(picture))
    assert code == 0 and "picture of 'tea' uploaded: image/png, 48 bytes" in out, (out, err)
    served = client.get("/media/products/tea")
    assert served.content == PNG and served.headers["content-type"] == "image/png"
    webp = tmp_path / "tea.webp"
    webp.write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20)
    code, out, _ = vendctl("products", "picture", "tea", str(webp), "--json")
    assert code == 0 and json.loads(out)["type"] == "image/webp"
    assert client.get("/media/products/tea").headers["content-type"] == "image/webp"


def test_vendctl_refuses_a_missing_file_a_big_one_and_one_that_is_no_picture(vendctl, tmp_path):
    code, _, err = vendctl("products", "picture", "tea", str(tmp_path / "nope.png"))
    assert code == 1 and "nope.png: no such file" in err
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\x00" * media.MAX_BYTES)
    code, _, err = vendctl("products", "picture", "tea", str(big))
    assert code == 1 and "512 KB at most" in err
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    code, _, err = vendctl("products", "picture", "tea", str(text))
    assert code == 1 and "not a PNG, JPEG or WebP file" in err
    picture = tmp_path / "x.png"
    picture.write_bytes(PNG)
    code, _, err = vendctl("products", "picture", "nope", str(picture))
    assert code == 1 and "404" in err and "no product nope" in err
