"""Reports net of refunds, and by the place each machine stood when it sold (cloud/sales/reports.py): a
refund lowers the net of the period it was booked in, in the API, the CLI and the settlement alike; a moved
machine splits between its places; migration 0027 brings the refunds already booked into the rollups."""

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import cloud.app
import cloud.core.db
from cloud.core.db import bulk_insert
from cloud.finance import settlement
from cloud.fleet import locations
from cloud.payments import Wallet
from cloud.sales import orders, reports
from cloud.sales.records import SALE_COLUMNS, sales
from tests.cloud_fixtures import (upgrade_to, NOW, ThroughTestClient, add_customer, add_machine, add_sale, db_url, engine,
                                  idle_cloud)

TOKEN = {"Authorization": "Bearer boot-token-net"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def sold(conn, machine_id: str, seq: int, when: datetime, amount: int, order_id: str | None = None,
         project: bool = True) -> None:
    """A sale as ingest stores it: its row, and (unless told not to) the rollups."""
    row = (machine_id, seq, when.isoformat(timespec="microseconds"), order_id or f"o-{machine_id}-{seq}", "A1",
           1, amount, "CNY")
    bulk_insert(conn, sales, SALE_COLUMNS, [row])
    if project:
        reports.project(conn, [row])


def refund(conn, order_id: str, amount: int, when: datetime, key: str) -> None:
    assert Wallet().refund(conn, orders.get(conn, order_id), amount, key, when).ok


def settled(conn, location_id: int, start: str, end: str) -> dict:
    """The settlement's figures for a location over [start, end] (UTC days, both inclusive)."""
    days = settlement.daily(conn, location_id, datetime.fromisoformat(start).date(),
                            datetime.fromisoformat(end).date(), "CNY")
    return {k: sum(d[k] for d in days.values()) for k in ("items", "gross", "refunds")}


@pytest.fixture
def client(tmp_path, db_url):
    obj = idle_cloud(tmp_path, db_url)
    with TestClient(cloud.app.create_app(obj, "boot-token-net", b"k" * 32)) as c:
        c.engine = obj.engine
        yield c
    obj.engine.dispose()


def test_a_refund_lowers_the_net_of_the_period_it_was_booked_in(client, monkeypatch, capsys):
    import cloud.cli

    with client.engine.begin() as conn:
        add_machine(conn)
        north = locations.add(conn, "North", now=NOW)
        locations.place(conn, "m-1", north, NOW)
        ann = add_customer(conn)
        add_sale(conn, ann, "o-1")  # 3.50, captured at NOW (2024-05-01 12:00 UTC)
        sold(conn, "m-1", 1, NOW, 350, "o-1")

    def api(by, start, end):
        r = client.get(f"/api/v1/reports/sales?by={by}&from={start}&to={end}", headers=TOKEN)
        assert r.status_code == 200, r.text
        return r.json()

    may = api("day", "2024-05-01", "2024-06-01")
    assert may["totals"] == [{"currency": "CNY", "count": 1, "amount": 350, "refund_count": 0, "refunds": 0,
                              "net": 350}]
    with client.engine.begin() as conn:
        refund(conn, "o-1", 150, at("2024-05-10 09:30"), "r-1")
    # The API counts the refund booked since the sweeper last looked: no sweep needed.
    may = api("day", "2024-05-01", "2024-06-01")
    assert may["totals"] == [{"currency": "CNY", "count": 1, "amount": 350, "refund_count": 1, "refunds": 150,
                              "net": 200}]
    assert [(r["key"], r["count"], r["amount"], r["refunds"], r["net"]) for r in may["rows"]] == [
        ("2024-05-01", 1, 350, 0, 350), ("2024-05-10", 0, 0, 150, -150)]
    by_place = api("location", "2024-05-01", "2024-06-01")
    assert [(r["name"], r["amount"], r["refunds"], r["net"]) for r in by_place["rows"]] == [("North", 350, 150, 200)]
    with client.engine.connect() as conn:  # the settlement counts the same money in the same period
        assert settled(conn, north, "2024-05-01", "2024-05-31") == {"items": 1, "gross": 350, "refunds": 150}

    with client.engine.begin() as conn:  # a later refund is the later month's, and the sweeper counts it
        refund(conn, "o-1", 50, at("2024-06-03 08:00"), "r-2")
        reports.fold(conn)
        assert reports.count_refunds(conn) == 0  # counted once
    assert api("hour", "2024-06-01", "2024-07-01")["totals"] == [
        {"currency": "CNY", "count": 0, "amount": 0, "refund_count": 1, "refunds": 50, "net": -50}]
    assert api("product", "2024-05-01", "2024-06-01")["totals"][0]["net"] == 200  # May is as it was
    with client.engine.connect() as conn:
        assert settled(conn, north, "2024-06-01", "2024-06-30") == {"items": 0, "gross": 0, "refunds": 50}

    monkeypatch.setattr(cloud.cli.Client, "from_env", classmethod(lambda cls: ThroughTestClient(client, TOKEN)))
    assert cloud.cli.main(["report", "sales", "--by", "machine", "--from", "2024-05-01", "--to", "2024-06-01"]) == 0
    out = capsys.readouterr().out
    assert "GROSS" in out and "NET" in out and "¥3.50" in out and "¥1.50" in out
    assert "total: net ¥2.00 (1 sales, ¥3.50 gross, 1 refunds, ¥1.50 refunded)" in out
    assert cloud.cli.main(["report", "sales", "--from", "2024-06-01", "--to", "2024-07-01"]) == 0
    assert "total: net -¥0.50" in capsys.readouterr().out


def test_a_moved_machine_splits_between_its_places_and_a_retired_one_keeps_its_past(engine):
    with engine.begin() as conn:
        add_machine(conn, "m-1")
        add_machine(conn, "m-2")
        north = locations.add(conn, "North", now=NOW)
        south = locations.add(conn, "South", now=NOW)
        locations.place(conn, "m-1", north, at("2026-10-01 00:00"))
        locations.place(conn, "m-2", north, at("2026-10-01 00:00"))
        sold(conn, "m-2", 1, at("2026-11-05 12:00"), 200)
        sold(conn, "m-1", 1, at("2026-11-10 12:00"), 350)
        locations.place(conn, "m-1", south, at("2026-11-15 10:20"))
        sold(conn, "m-1", 2, at("2026-11-15 10:40"), 500)  # the hour of the move: the new place's
        sold(conn, "m-1", 3, at("2026-11-20 12:00"), 500)
        locations.retire(conn, "m-2", at("2026-11-18 00:00"))
        locations.place(conn, "m-1", None, at("2026-11-25 00:00"))  # to the warehouse
        sold(conn, "m-1", 4, at("2026-11-26 12:00"), 100)
        locations.place(conn, "m-1", north, at("2026-11-28 00:00"))
        sold(conn, "m-1", 5, at("2026-11-29 12:00"), 70)

    def report(by, start="2026-11-01", end="2026-12-01", **filters):
        with engine.connect() as conn:
            r = reports.sales_report(conn, reports.Query(conn, by, start, end, **filters))
        return {(row.get("name") or row["key"]): (row["count"], row["amount"]) for row in r["rows"]}

    assert report("location") == {"North": (3, 620), "South": (2, 1000), "(no location)": (1, 100)}
    assert report("location", "2026-10-01", "2026-11-12") == {"North": (2, 550)}
    assert report("day", location=north) == {"2026-11-05": (1, 200), "2026-11-10": (1, 350),
                                             "2026-11-29": (1, 70)}
    assert report("machine", location=south) == {"Machine m-1": (2, 1000)}
    assert report("machine", location=north, machine="m-2") == {"Machine m-2": (1, 200)}
    assert report("location", machine="m-1") == {"North": (2, 420), "South": (2, 1000), "(no location)": (1, 100)}
    assert report("machine") == {"Machine m-1": (5, 1520), "Machine m-2": (1, 200)}  # retired, still there
    with engine.connect() as conn:  # the settlement splits the month the same way
        assert settled(conn, north, "2026-11-01", "2026-11-30")["gross"] == 620
        assert settled(conn, south, "2026-11-01", "2026-11-30")["gross"] == 1000


def test_the_migration_brings_the_refunds_already_booked_into_the_rollups(empty_db_url):
    db_url = empty_db_url
    eng = cloud.core.db.make_engine(db_url)
    try:
        upgrade_to(eng, "0026")
        with eng.begin() as conn:  # sales and refunds as a cloud at 0026 stored them
            add_machine(conn)
            ann = add_customer(conn)
            for i in (1, 2):
                add_sale(conn, ann, f"o-{i}")
                sold(conn, "m-1", i, NOW + timedelta(hours=i), 350, f"o-{i}", project=False)
            reports.backfill(conn)  # the rollups as ingest kept them (0008's columns)
            refund(conn, "o-1", 350, NOW + timedelta(days=2), "r-1")
            refund(conn, "o-2", 100, NOW + timedelta(days=40), "r-2")
            assert "refunds" not in {c["name"] for c in sa.inspect(conn).get_columns("sales_rollup")}
        cloud.core.db.migrate(eng)
        with eng.connect() as conn:
            got = reports.sales_report(conn, reports.Query(conn, "day", "2024-05-01", "2024-06-01"))
            assert got["totals"] == [{"currency": "CNY", "count": 2, "amount": 700, "refund_count": 1,
                                      "refunds": 350, "net": 350}]
            june = reports.sales_report(conn, reports.Query(conn, "machine", "2024-06-01", "2024-07-01",
                                                            machine="m-1"))
            assert [(r["key"], r["refunds"], r["net"]) for r in june["rows"]] == [("m-1", 100, -100)]
        with eng.begin() as conn:  # counted once: the sweeper finds nothing more to add
            assert reports.count_refunds(conn) == 0
            reports.fold(conn)
        with eng.connect() as conn:
            again = reports.sales_report(conn, reports.Query(conn, "day", "2024-05-01", "2024-06-01"))
            assert again["totals"] == got["totals"]
    finally:
        eng.dispose()
