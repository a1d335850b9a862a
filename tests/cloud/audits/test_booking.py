"""An audit's sales in the double-entry journal, on SQLite and PostgreSQL: revenue per payment device."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa

from cloud.accounts.journal import entries, find_account, txns
from cloud.audits import import_audit
from cloud.audits.booking import DEVICE_ACCOUNTS
from cloud.audits.imports import book_unbooked
from cloud.finance import ledger
from cloud.finance.reconcile import reconcile
from tests.cloud.audits.test_import import NOW, T0, dex_file
from tests.cloud_fixtures import add_machine, engine, db_url  # noqa: F401
from tests.dex.files import jofemar_next_day, raw


def balances(conn) -> dict[str, int]:
    """{account kind: natural balance} of the accounts with money in them."""
    return {r["kind"]: r["natural_balance"] for r in ledger.balances(conn) if r["balance"]}


def test_two_reads_book_each_devices_takings_once(engine):
    with engine.begin() as conn:
        import_audit(conn, raw("jofemar-sample.dex"), "jofemar.dex", NOW, new_machine=True)
        assert balances(conn) == {}  # the baseline's counters are since the machine began: no revenue
        a = import_audit(conn, jofemar_next_day(), "jofemar-2.dex", NOW).audit
    assert (a["kind"], a["currency"], a["sold_value"]) == ("delta", "EUR", 760)
    with engine.begin() as conn:
        # One selection 12 at 3.80 for cash, one through cashless device 1.
        assert balances(conn) == {"revenue": 760, "dex_cash": 380, "dex_cashless1": 380}
        tb = ledger.trial_balance(conn)
        assert tb["balanced"] and tb["totals"] == [{"currency": "EUR", "sum": 0}]
        keys = conn.execute(sa.select(txns.c.key, txns.c.kind, txns.c.created_at).order_by(txns.c.key)).all()
        assert [(k.key, k.kind) for k in keys] == [(f"audit:{a['id']}:CA:EUR", "audit_sale"),
                                                   (f"audit:{a['id']}:DA:EUR", "audit_sale")]
        assert {k.created_at.isoformat() for k in keys} == {"2024-04-16T09:00:00+00:00"}  # the read's time
        # The same file again (under another name), and a catch-up: nothing more.
        again = import_audit(conn, jofemar_next_day(), "copy.dex", NOW)
        assert not again.created and book_unbooked(conn) == 0 and ledger.catch_up(conn, NOW) == 0
        assert balances(conn) == {"revenue": 760, "dex_cash": 380, "dex_cashless1": 380}
        # Reconciliation still asks no provider for these sales.
        assert reconcile(conn, date(2024, 4, 1), date(2024, 4, 30))["clear"]


def test_a_reset_books_only_what_it_sold_and_a_board_swap_nothing(engine):
    with engine.begin() as conn:
        add_machine(conn)
        import_audit(conn, dex_file(["A1"] * 5, T0), "r1.dex", NOW, machine_id="m-1")
        import_audit(conn, dex_file(["A1"] * 6, T0 + timedelta(hours=1)), "r2.dex", NOW)
        assert balances(conn) == {"revenue": 350, "dex_cashless1": 350}
        # The counters restart: two waters counted since; nothing is taken back for VA1 going from 6 to 2.
        r = import_audit(conn, dex_file(["A2", "A2"], T0 + timedelta(days=1)), "r3.dex", NOW).audit
        assert (r["kind"], r["sold_value"]) == ("reset", 400)
        assert balances(conn) == {"revenue": 750, "dex_cashless1": 750}
        # A board swap is a new baseline: nothing booked, however high its counters.
        s = import_audit(conn, dex_file(["A1"] * 9, T0 + timedelta(days=2), machine="board-2"), "r4.dex", NOW,
                         machine_id="m-1").audit
        assert s["kind"] == "board_swap"
        assert balances(conn) == {"revenue": 750, "dex_cashless1": 750}
        assert ledger.trial_balance(conn)["balanced"]
        assert all(r["side"] == "debit" for r in ledger.balances(conn) if r["kind"] in DEVICE_ACCOUNTS.values())


def test_audits_imported_before_booking_are_booked_by_the_catch_up(engine):
    with engine.begin() as conn:
        add_machine(conn)
        import_audit(conn, dex_file(["A1"], T0), "r1.dex", NOW, machine_id="m-1")
        a = import_audit(conn, dex_file(["A1", "A1", "A2"], T0 + timedelta(hours=1)), "r2.dex", NOW).audit
        # As an older cloud left it: the sales, and no journal.
        ids = [t for t, in conn.execute(sa.select(txns.c.id).where(txns.c.kind == "audit_sale"))]
        conn.execute(entries.delete().where(entries.c.txn_id.in_(ids)))
        conn.execute(txns.delete().where(txns.c.id.in_(ids)))
        assert balances(conn) == {}
        ledger.catch_up(conn, NOW)  # what every finance request runs first
        assert book_unbooked(conn) == 0 and ledger.catch_up(conn, NOW) == 0
        # A2 had sold nothing at the first read (no PA7 line to compare with): its sale is still cashless 1's.
        assert balances(conn) == {"revenue": 550, "dex_cashless1": 550}
        assert find_account(conn, "dex_cash", 0, "CNY") is None  # no cash account without cash
    assert a["sold_value"] == 550
