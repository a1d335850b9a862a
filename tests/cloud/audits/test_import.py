"""DEX import into the cloud: deltas between reads feed sales, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from cloud.audits import AuditError, import_audit, list_audits
from cloud.audits.imports import audits
from cloud.fleet import machines
from cloud.finance.reconcile import reconcile
from cloud.sales import records, reports
from dex.writer import SlotInfo, write
from protocol.messages import Event, GENESIS_HASH
from tests.cloud_fixtures import add_machine, engine, db_url, slot_spec  # noqa: F401
from tests.dex.files import jofemar_next_day, raw

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 5, 12, 0, tzinfo=timezone.utc)  # when the files are imported
SLOTS = {"A1": SlotInfo("Cola", 350), "A2": SlotInfo("Water", 200)}


def vends(slots_sold: list[str], start: int = 1) -> list[Event]:
    out, prev = [], GENESIS_HASH
    for i, slot in enumerate(slots_sold, start):
        e = Event.make(i, T0, 1, True, "vend.succeeded", {"order_id": f"o{i}", "slot": slot, "turns": 1}, prev)
        out.append(e)
        prev = e.hash
    return out


def dex_file(sold: list[str], read_at: datetime, machine: str = "m-1") -> bytes:
    return write(vends(sold), machine_id=machine, slots=SLOTS, currency="CNY", read_at=read_at).encode()


def audit_sales(conn, machine="m-1"):
    s = records.sales
    return conn.execute(sa.select(s.c.slot, s.c.amount, s.c.order_id, s.c.seq, s.c.product_id)
                        .where(s.c.machine_id == machine).order_by(s.c.seq.desc())).all()


def test_two_reads_make_the_sales_between_them(engine):
    with engine.begin() as conn:
        add_machine(conn, counts={"A1": 10, "A2": 10})
        first = import_audit(conn, dex_file(["A1", "A2"], T0), "r1.dex", NOW, machine_id="m-1")
    assert first.created and first.audit["kind"] == "baseline" and first.audit["sold_count"] == 0
    with engine.begin() as conn:
        assert audit_sales(conn) == []
        # Between the reads: three colas and a water more.
        second = import_audit(conn, dex_file(["A1", "A2", "A1", "A1", "A2", "A1"], T0 + timedelta(days=1)),
                              "r2.dex", NOW)  # found by its ID101 serial
    a = second.audit
    assert (a["machine_id"], a["kind"], a["sold_count"], a["sold_value"]) == ("m-1", "delta", 4, 3 * 350 + 200)
    with engine.begin() as conn:
        rows = audit_sales(conn)
        assert sorted((r.slot, r.amount) for r in rows) == [("A1", 350)] * 3 + [("A2", 200)]
        assert all(r.seq < 0 and r.order_id.startswith(f"audit:{a['id']}:") and r.order_id.endswith(":DA")
                   for r in rows)
        cola = machines.slot_for_sale(conn, "m-1", "A1")
        assert cola.count == 7 and all(r.product_id is not None for r in rows)
        assert records.recent(conn, "m-1", 10)["totals"] == [{"currency": "CNY", "count": 4, "amount": 1250}]
        assert records.recent(conn, "m-1", 1)["sales"][0]["source"] == "audit"
        # The reports count them (the rollups), and reconciliation does not ask a provider for them.
        report = reports.sales_report(conn, reports.Query(conn, "machine", "2026-11-01", "2026-11-30"))
        assert [(r["count"], r["amount"]) for r in report["rows"]] == [(4, 1250)]
        assert reconcile(conn, date(2026, 11, 1), date(2026, 11, 30))["clear"]


def test_the_same_file_twice_changes_nothing(engine):
    data = dex_file(["A1"], T0)
    with engine.begin() as conn:
        add_machine(conn)
        import_audit(conn, data, "r1.dex", NOW, machine_id="m-1")
        import_audit(conn, dex_file(["A1", "A1"], T0 + timedelta(hours=5)), "r2.dex", NOW)
        again = import_audit(conn, dex_file(["A1", "A1"], T0 + timedelta(hours=5)), "copy.dex", NOW)
    assert not again.created and again.audit["filename"] == "r2.dex"
    with engine.begin() as conn:
        assert len(audit_sales(conn)) == 1 and len(list_audits(conn)) == 2


def test_a_counter_reset_is_detected_and_counts_from_the_reset(engine):
    with engine.begin() as conn:
        add_machine(conn)
        import_audit(conn, dex_file(["A1"] * 5, T0), "r1.dex", NOW, machine_id="m-1")
        r = import_audit(conn, dex_file(["A2", "A2"], T0 + timedelta(days=1)), "r2.dex", NOW).audit
    assert r["kind"] == "reset" and "VA1 went back from 5 to 2 vends" in r["note"]
    assert (r["sold_count"], r["sold_value"]) == (2, 400)


def test_a_board_swap_is_a_new_baseline(engine):
    with engine.begin() as conn:
        add_machine(conn)
        import_audit(conn, dex_file(["A1"] * 5, T0), "r1.dex", NOW, machine_id="m-1")
        r = import_audit(conn, dex_file(["A1"] * 9, T0 + timedelta(days=1), machine="board-2"), "r2.dex", NOW,
                         machine_id="m-1").audit
    assert r["kind"] == "board_swap" and r["sold_count"] == 0 and "serial m-1/m-1 before, board-2/board-2" in r["note"]


def test_an_unknown_machine_is_refused_unless_asked_for(engine):
    data = raw("jofemar-sample.dex")
    with engine.begin() as conn:
        with pytest.raises(AuditError, match="no machine in the fleet has sent audits with serial 'JOF'.*--new-machine"):
            import_audit(conn, data, "jofemar.dex", NOW)
    with engine.begin() as conn:
        assert list_audits(conn) == [] and machines.list_machines(conn) == []
        r = import_audit(conn, data, "jofemar.dex", NOW, new_machine=True).audit
    assert (r["machine_id"], r["kind"], r["currency"], r["paid_count"], r["paid_value"]) == (
        "dex-jof", "baseline", "EUR", 423, 143500)
    with engine.begin() as conn:
        assert [m.id for m in machines.list_machines(conn)] == ["dex-jof"]  # in the fleet, with its audit
        assert [a["id"] for a in list_audits(conn, "dex-jof")] == [r["id"]]


def test_the_real_files_import_as_baselines_and_a_later_read_of_the_jofemar_as_a_delta(engine):
    with engine.begin() as conn:
        for name in ("animo-optime.dex", "jofemar-sample.dex"):
            assert import_audit(conn, raw(name), name, NOW, new_machine=True).audit["kind"] == "baseline"
        r = import_audit(conn, jofemar_next_day(), "jofemar-2.dex", NOW).audit
        assert (r["kind"], r["sold_count"], r["sold_value"]) == ("delta", 2, 760)
        assert sorted(x.order_id.rsplit(":", 1)[1] for x in audit_sales(conn, "dex-jof")) == ["CA", "DA"]


@pytest.mark.parametrize("mangle, code", [
    (lambda d: d.replace(b"VA1*143500", b"VA1*143501"), "crc"),
    (lambda d: d[:2000], "truncated"),
    (lambda d: b"\x00\x01garbage" * 100, "not_dex"),
    (lambda d: d.replace(b"PA2*23*8740", b"PA2*2X*8740"), "crc"),
    (lambda d: d.replace(b"PA2*23*8740", b"PA2*2X*8740").replace(b"G85*F66D\n", b""), "fields"),
])
def test_bad_files_are_refused_whole(engine, mangle, code):
    with engine.begin() as conn:
        with pytest.raises(AuditError) as e:
            import_audit(conn, mangle(raw("jofemar-sample.dex")), "bad.dex", NOW, new_machine=True)
    assert e.value.code == code
    with engine.begin() as conn:
        assert list_audits(conn) == [] and machines.list_machines(conn) == []
        assert conn.execute(sa.select(sa.func.count()).select_from(audits)).scalar() == 0


def test_the_cut_short_sielaff_is_refused_with_the_reason(engine):
    with engine.begin() as conn:
        with pytest.raises(AuditError, match="cut short"):
            import_audit(conn, raw("sielaff-siline.dex"), "sielaff.dex", NOW, new_machine=True)


def test_a_machine_with_its_own_ledger_is_not_counted_twice(engine):
    with engine.begin() as conn:
        add_machine(conn)
        conn.execute(machines.machines.update().where(machines.machines.c.id == "m-1").values(cloud_head=12))
        with pytest.raises(AuditError, match="reports its sales through its own ledger") as e:
            import_audit(conn, dex_file(["A1"], T0), "r1.dex", NOW, machine_id="m-1")
    assert e.value.status == 409
