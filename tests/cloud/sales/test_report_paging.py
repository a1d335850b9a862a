"""The API's sales and stock reports a page at a time (cloud/sales/paging.py, ``reports.stock_report``'s
keyset): the pages put end to end are the whole report in its order, the last page says so, the totals are
the whole report's on every page, bad ``limit``/``after`` are refused naming the parameter, and ``vendctl``
still prints every row."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

import cloud.app
import cloud.cli
from cloud.core.db import bulk_insert
from cloud.fleet.machines import slots
from cloud.sales import reports
from cloud.sales.records import SALE_COLUMNS, sales
from tests.cloud.sales.test_reports import seed
from tests.cloud_fixtures import ThroughTestClient, add_machine, idle_cloud, slot_spec

TOKEN = {"Authorization": "Bearer boot-token-paging"}
CROWD = 55  # machines of ten slots besides the seed's three: 559 slots, more than a default page
LONG_DAYS = 520  # one sale a day on crowd-00 from LONG_START: a report by day of more rows than a default page
LONG_START = datetime(2024, 1, 1, 12, tzinfo=timezone.utc)


@pytest.fixture
def client(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    seed(obj.engine, 300)
    with obj.engine.begin() as conn:
        specs = [slot_spec(f"B{i}", 100 + i, "cola" if i % 2 else "water", "Cola" if i % 2 else "Water")
                 for i in range(10)]
        for n in range(CROWD):
            # Counts 0-10 of 10 over and over: many slots share a fill, so the order needs machine and slot too.
            add_machine(conn, f"crowd-{n:02d}", specs=specs, online=False,
                        counts={s.slot: (n * 7 + i * 3) % 11 for i, s in enumerate(specs)})
        rows = [("crowd-00", i + 1, (LONG_START + timedelta(days=i)).isoformat(timespec="microseconds"),
                 f"o-long-{i}", "B1", None, 100 + i, "CNY") for i in range(LONG_DAYS)]
        bulk_insert(conn, sales, SALE_COLUMNS, rows)
        reports.project(conn, rows)
    with TestClient(cloud.app.create_app(obj, "boot-token-paging", b"k" * 32)) as c:
        c.engine = obj.engine
        yield c
    obj.engine.dispose()


def pages(client, path: str, rows: str, **query) -> list[dict]:
    """Every page of a report, following ``next`` until it is null."""
    got = []
    after = None
    while True:
        r = client.get(path, params={**query, **({"after": after} if after else {})}, headers=TOKEN)
        assert r.status_code == 200, r.text
        got.append(r.json())
        after = got[-1]["next"]
        if after is None:
            return got
        assert len(got) < 2000, "next never became null"


@pytest.mark.parametrize("by,query", [
    ("day", {"from": "2026-10-01", "to": "2027-01-01", "tz": "Asia/Shanghai"}),
    ("hour", {"from": "2026-10-01", "to": "2027-01-01"}),
    ("machine", {"from": "2026-10-01", "to": "2027-01-01"}),
    ("product", {"from": "2026-10-01", "to": "2027-01-01"}),
    ("location", {"from": "2026-10-01", "to": "2027-01-01"}),  # m-3 stands nowhere: a row keyed null, last
])
def test_sales_pages_end_to_end_are_the_whole_report(client, by, query):
    whole = client.get("/api/v1/reports/sales", params={"by": by, **query, "limit": 5000}, headers=TOKEN).json()
    assert whole["next"] is None and len(whole["rows"]) >= 4
    if by == "location":
        assert whole["rows"][-1]["key"] is None
    with client.engine.connect() as conn:
        plain = reports.sales_report(conn, reports.Query(conn, by, query["from"], query["to"], query.get("tz")))
    assert whole["rows"] == plain["rows"] and whole["totals"] == plain["totals"]
    for limit in (1, 3, len(whole["rows"]) - 1, len(whole["rows"])):
        got = pages(client, "/api/v1/reports/sales", "rows", by=by, **query, limit=limit)
        assert [row for page in got for row in page["rows"]] == whole["rows"], limit
        assert len(got) == -(-len(whole["rows"]) // limit)
        assert all(len(page["rows"]) == limit for page in got[:-1])
        assert all(page["totals"] == whole["totals"] for page in got), "the totals are the whole report's"
        assert got[-1]["next"] is None


def test_a_sales_report_longer_than_a_page_comes_in_pages_of_500(client):
    query = {"by": "day", "from": "2024-01-01", "to": "2025-07-01", "machine": "crowd-00"}
    first = client.get("/api/v1/reports/sales", params=query, headers=TOKEN).json()
    assert len(first["rows"]) == 500 and first["next"] == "2025-05-14~CNY"
    assert first["totals"][0]["count"] == LONG_DAYS
    rest = client.get("/api/v1/reports/sales", params={**query, "after": first["next"]}, headers=TOKEN).json()
    assert [r["key"] for r in rest["rows"]] == [(LONG_START + timedelta(days=i)).date().isoformat()
                                                for i in range(500, LONG_DAYS)]
    assert rest["next"] is None


def test_stock_pages_end_to_end_are_the_whole_report_emptiest_first(client):
    with client.engine.connect() as conn:
        plain = reports.stock_report(conn)
    assert len(plain["slots"]) == 9 + 10 * CROWD and plain["next"] is None
    fills = [(s["count"] / s["capacity"], s["machine_id"], s["slot"]) for s in plain["slots"]]
    assert fills == sorted(fills), "emptiest first, then by machine and slot"
    first = client.get("/api/v1/reports/stock", headers=TOKEN).json()
    assert len(first["slots"]) == 500 and first["next"] is not None
    assert first["summary"] == plain["summary"] and first["summary"]["slots"] == 559
    for limit in (1, 7, 500, 558, 559, 5000):
        got = pages(client, "/api/v1/reports/stock", "slots", limit=limit)
        assert [s for page in got for s in page["slots"]] == plain["slots"], limit
        assert all(page["summary"] == plain["summary"] for page in got), "the summary is over every slot"
        assert got[-1]["next"] is None and len(got) == -(-559 // limit)
    one = pages(client, "/api/v1/reports/stock", "slots", limit=2, machine="crowd-03")
    assert [s for page in one for s in page["slots"]] == [s for s in plain["slots"] if s["machine_id"] == "crowd-03"]
    assert one[0]["summary"]["slots"] == 10


def test_a_stock_page_starts_where_the_last_stopped_when_a_slot_changes_between_pages(client):
    """A keyset, not an offset: a slot sold out while the manager reads page 1 moves to the front, and page 2
    neither repeats nor skips any of the others."""
    first = client.get("/api/v1/reports/stock", params={"limit": 300}, headers=TOKEN).json()
    late = first["slots"][-1]
    assert late["count"] > 0
    with client.engine.begin() as conn:
        conn.execute(slots.update().where(slots.c.machine_id == late["machine_id"], slots.c.slot == late["slot"])
                     .values(count=0))
    second = pages(client, "/api/v1/reports/stock", "slots", limit=300, after=first["next"])
    with client.engine.connect() as conn:
        now = reports.stock_report(conn)["slots"]
    seen = [(s["machine_id"], s["slot"]) for s in first["slots"]]
    rest = [(s["machine_id"], s["slot"]) for page in second for s in page["slots"]]
    assert not set(seen) & set(rest)
    assert rest == [(s["machine_id"], s["slot"]) for s in now if (s["machine_id"], s["slot"]) not in seen]


BAD = [
    ("sales", "limit=0", "limit"), ("sales", "limit=5001", "limit"), ("sales", "limit=-1", "limit"),
    ("sales", "limit=ten", "limit"), ("sales", "limit=" + "9" * 40, "limit"),
    ("sales", "by=day&after=yesterday~CNY", "after"), ("sales", "by=day&after=2026-11-01", "after"),
    ("sales", "by=day&after=2026-11-01~cny", "after"), ("sales", "by=hour&after=24~CNY", "after"),
    ("sales", "by=product&after=cola~CNY", "after"), ("sales", "by=location&after=north~CNY", "after"),
    ("sales", "by=machine&after=" + "m" * 40 + "~CNY", "after"), ("sales", "by=hour&after=~CNY", "after"),
    ("stock", "limit=0", "limit"), ("stock", "limit=5001", "limit"), ("stock", "limit=1.5", "limit"),
    ("stock", "after=m-1~A1", "after"), ("stock", "after=5/0~m-1~A1", "after"), ("stock", "after=x", "after"),
    ("stock", "after=5/10~M-1~A1", "after"), ("stock", "after=5/10~m-1~A1;drop", "after"),
]


def test_a_bad_page_is_refused_naming_the_parameter(client):
    for path, query, param in BAD:
        r = client.get(f"/api/v1/reports/{path}?{query}", headers=TOKEN)
        assert r.status_code == 422, (query, r.text)
        assert r.json()["error"].startswith(f"{param}: "), (query, r.json())


def test_a_position_past_the_end_is_an_empty_last_page(client):
    r = client.get("/api/v1/reports/stock", params={"after": "999/1~zz~Z99"}, headers=TOKEN).json()
    assert r["slots"] == [] and r["next"] is None and r["summary"]["slots"] == 559
    r = client.get("/api/v1/reports/sales", params={"by": "day", "after": "2999-01-01~CNY"}, headers=TOKEN).json()
    assert r["rows"] == [] and r["next"] is None


def test_vendctl_prints_every_row_across_the_pages(client, monkeypatch, capsys):
    through = ThroughTestClient(client, TOKEN)
    asked = []
    call = through.call
    monkeypatch.setattr(through, "call", lambda method, path, body=None: asked.append(path) or call(method, path, body))
    monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: through))

    assert cloud.cli.main(["report", "stock"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("m-", "crowd-"))]
    assert len(lines) == 559 and len(set(lines)) == 559
    assert "559 slots" in out and len(asked) == 2, asked

    asked.clear()
    assert cloud.cli.main(["report", "sales", "--by", "day", "--from", "2024-01-01", "--to", "2025-07-01",
                           "--machine", "crowd-00"]) == 0
    out = capsys.readouterr().out
    days = [line.split()[0] for line in out.splitlines() if line[:4] in ("2024", "2025")]
    assert days == [(LONG_START + timedelta(days=i)).date().isoformat() for i in range(LONG_DAYS)]
    assert f"({LONG_DAYS} sales" in out and len(asked) == 2, asked

    assert cloud.cli.main(["report", "stock", "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert len(whole["slots"]) == 559 and whole["next"] is None and whole["summary"]["slots"] == 559
