"""DEX through the API and vendctl: upload, import, show on the desk, refusals with their reasons."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

import cloud.app
import cloud.cli
from tests.cloud_fixtures import ThroughTestClient, db_url, fast_hashes, idle_cloud  # noqa: F401
from tests.dex.files import jofemar_next_day, path, raw
from tests.dex.test_writer import ledger_with_a_day

BOOT = "bootstrap-token-for-audit-tests"
ADMIN = {"Authorization": f"Bearer {BOOT}"}


@pytest.fixture
def client(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with TestClient(cloud.app.create_app(obj, BOOT, b"k" * 32), follow_redirects=False) as c:
        c.cloud = obj
        yield c
    obj.engine.dispose()


@pytest.fixture
def vendctl(client, monkeypatch, capsys):
    def run(*argv):
        monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, ADMIN)))
        code = cloud.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_upload_through_the_api(client):
    data = raw("jofemar-sample.dex")
    r = client.post("/api/v1/audits?filename=j.dex", content=data, headers=ADMIN)
    assert r.status_code == 404 and "unknown_machine" in r.json()["error"] and "--new-machine" in r.json()["error"]
    r = client.post("/api/v1/audits?filename=j.dex&new_machine=true", content=data, headers=ADMIN)
    assert r.status_code == 200 and r.json()["kind"] == "baseline" and r.json()["created"]
    again = client.post("/api/v1/audits?filename=j2.dex", content=data, headers=ADMIN).json()
    assert again["created"] is False and again["id"] == r.json()["id"]
    listed = client.get("/api/v1/audits?machine=dex-jof", headers=ADMIN).json()
    assert [a["paid_count"] for a in listed] == [423]
    assert "dex-jof" in [m["id"] for m in client.get("/api/v1/machines", headers=ADMIN).json()]
    assert client.post("/api/v1/audits", content=data).status_code == 401


def test_a_50_mb_upload_is_refused_by_its_declared_size(client):
    headers = {**ADMIN, "Content-Length": str(50 * 1024 * 1024)}
    r = client.post("/api/v1/audits", content=b"x" * 1024, headers=headers)
    assert r.status_code == 413 and "too big for a DEX audit" in r.json()["error"]
    r = client.post("/api/v1/audits", content=b"VA1*1*1\n" * 600_000, headers=ADMIN)  # 4.8 MB, no length check
    assert r.status_code == 413
    assert client.get("/api/v1/audits", headers=ADMIN).json() == []


def test_vendctl_dex_show_needs_no_cloud(monkeypatch, capsys):
    monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: pytest.fail("no cloud for show")))
    assert cloud.cli.main(["dex", "show", path("jofemar-sample.dex")]) == 0
    out = capsys.readouterr().out
    assert "G85 CRC F66D matched" in out
    assert "paid vends (VA1): 423 for €1,435.00 since initialisation" in out
    assert "cash (CA2): 382 for €1,282.50" in out and "cashless 1 (DA2): 41 for €152.50" in out
    assert "12       2     €3.80  23     €87.40   CA:22 DA:1" in out
    assert cloud.cli.main(["dex", "show", "--json", path("animo-optime.dex"), path("sielaff-siline.dex")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(a["crc"], a["paid"]["count_init"]) for a in shown] == [("matched", 8161), ("absent", 1666)]


def test_vendctl_dex_show_says_what_is_wrong(tmp_path, capsys):
    bad = tmp_path / "bad.dex"
    bad.write_bytes(raw("jofemar-sample.dex").replace(b"VA1*143500", b"VA1*143501"))
    junk = tmp_path / "junk.dex"
    junk.write_bytes(b"\x00\xff" * 50)
    assert cloud.cli.main(["dex", "show", str(bad), str(junk)]) == 1
    out, err = capsys.readouterr()
    assert "G85 CRC MISMATCH: the file says F66D" in out
    assert "junk.dex: binary content at byte 0" in err


def test_vendctl_dex_import(vendctl, tmp_path):
    code, out, err = vendctl("dex", "import", path("animo-optime.dex"))
    assert code == 1 and "no machine in the fleet has sent audits with serial 'ANIKraftver'" in err
    code, out, err = vendctl("dex", "import", "--new-machine", path("animo-optime.dex"))
    assert code == 0 and "machine dex-anikraftver, audit 1: the machine's first read: its baseline, no sales" in out
    code, out, err = vendctl("dex", "import", path("animo-optime.dex"))
    assert code == 0 and "already imported: nothing changed" in out
    code, out, err = vendctl("dex", "import", "--new-machine", path("sielaff-siline.dex"))
    assert code == 1 and "truncated" in err and "cut short" in err


def test_vendctl_dex_write_makes_an_audit_of_a_ledger_file(tmp_path, capsys):
    ledger_with_a_day(tmp_path / "ledger.db").close()
    out = tmp_path / "m-7.dex"
    assert cloud.cli.main(["dex", "write", "--ledger", str(tmp_path / "ledger.db"), "--machine", "m-7",
                           "--out", str(out)]) == 0
    assert cloud.cli.main(["dex", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "matched" in shown and "paid vends (VA1): 5 for €11.10 since initialisation" in shown
    assert cloud.cli.main(["dex", "write", "--ledger", str(tmp_path / "none.db"), "--machine", "m-7"]) == 1


def test_vendctl_journal_shows_the_cash_box(vendctl, tmp_path):
    later = tmp_path / "jofemar-2.dex"
    later.write_bytes(jofemar_next_day())
    assert vendctl("dex", "import", "--new-machine", path("jofemar-sample.dex"))[0] == 0
    assert vendctl("dex", "import", str(later))[0] == 0
    code, out, err = vendctl("journal")
    assert code == 0, err
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line) for line in out.splitlines()[1:])}
    assert rows["dex_cash"] == ["0", "EUR", "debit", "€3.80", "Cash in legacy machines' cash boxes (DEX)"]
    assert rows["dex_cashless1"] == ["0", "EUR", "debit", "€3.80", "Legacy machines' cashless device 1 (DEX)"]
    assert rows["revenue"] == ["0", "EUR", "credit", "€7.60"]
    code, out, err = vendctl("journal", "--account", "dex_cash", "--currency", "EUR")
    assert code == 0 and out.startswith("dex_cash 0 (EUR, debit, Cash in legacy machines' cash boxes (DEX)): €3.80")
    assert "audit:2:CA:EUR" in out


def test_the_journal_page_names_the_cash_box_in_chinese(client, tmp_path):
    from cloud.core.db import utcnow
    from cloud.people import staff

    assert client.post("/api/v1/audits?filename=j1.dex&new_machine=true", headers=ADMIN,
                       content=raw("jofemar-sample.dex")).status_code == 200
    assert client.post("/api/v1/audits?filename=j2.dex", headers=ADMIN, content=jofemar_next_day()).status_code == 200
    with client.cloud.engine.begin() as conn:
        staff.add_staff(conn, "mia", "manager", utcnow(), staff.hash_password("violet-tractor-harbour-91"), False)
    client.headers["Accept-Language"] = "zh-CN"
    assert client.post("/staff/login", data={"username": "mia", "password": "violet-tractor-harbour-91"}
                       ).status_code == 303
    r = client.get("/staff/journal")
    assert r.status_code == 200 and "总账" in r.text
    row = r.text.split('id="account-dex_cash-0-EUR"', 1)[1].split("</tr>", 1)[0]
    assert "旧式售货机钱箱中的现金（DEX）" in row and "借方" in row and "3.80" in row
    row = r.text.split('id="account-revenue-0-EUR"', 1)[1].split("</tr>", 1)[0]
    assert "贷方" in row and "7.60" in row
    assert "EUR 试算平衡：借贷相等。" in r.text
