"""The writer: a machine's ledger written as DEX, and read back to the same figures with a matching CRC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dex
from controller.audit import dex_audit
from controller.ledger import Ledger
from protocol.messages import ConfigSlot

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=timezone.utc)


def ledger_with_a_day(path) -> Ledger:
    """Sales in two slots, a jam, restocks, a stock adjustment, a door opened and closed."""
    led = Ledger(str(path))
    t = iter(T0 + timedelta(minutes=i) for i in range(1000))
    led.apply_planogram(1, (ConfigSlot("A1", "Cola 330ml", 250, "EUR", 10, 5),
                            ConfigSlot("A2", "Water*still", 180, "EUR", 10, 5),
                            ConfigSlot("B1", "Crisps", 120, "EUR", 8, 4)), next(t), True)
    led.append("restock", {"slot": "A1", "count": 10}, next(t), True)
    led.append("restock", {"slot": "A2", "count": 10}, next(t), True)
    for i, slot in enumerate(["A1", "A1", "A2", "A1", "A2"]):
        led.append("vend.started", {"order_id": f"o{i}", "cmd_id": f"v-o{i}", "slot": slot}, next(t), True)
        led.append("vend.succeeded", {"order_id": f"o{i}", "cmd_id": f"v-o{i}", "slot": slot, "turns": 1}, next(t), True)
    led.append("vend.started", {"order_id": "o9", "cmd_id": "v-o9", "slot": "A2"}, next(t), True)
    led.append("vend.failed", {"order_id": "o9", "cmd_id": "v-o9", "slot": "A2", "reason": "no drop"}, next(t), True)
    led.append("door.opened", {}, next(t), True)
    led.append("stock.adjusted", {"slot": "A2", "count": 6, "reason": "one damaged"}, next(t), True)
    led.append("restock", {"slot": "A1", "count": 10}, next(t), True)
    led.append("door.closed", {}, next(t), True)
    return led


def test_ledger_to_dex_and_back(tmp_path):
    led = ledger_with_a_day(tmp_path / "ledger.db")
    text = dex_audit(led, "m-7", T0 + timedelta(days=1), firmware="1.4.0", refunds={"o3": 250})
    assert text.endswith("\r\n") and "\r\n" in text
    a = dex.read(text.encode("ascii"), "m-7.dex")
    assert a.crc == "matched" and a.problems == [] and a.notes == []
    assert a.identity.serial == "m-7" and a.identity.board_software == "1.4.0"
    assert (a.currency, a.decimals) == ("EUR", 2)
    assert a.read_at == datetime(2026, 11, 4, 9, 0)
    # Three colas at 2.50 and two waters at 1.80; the jammed vend is not a sale.
    assert (a.paid.count_init, a.paid.value_init) == (5, 3 * 250 + 2 * 180)
    assert (a.cashless.count_init, a.cashless.value_init) == (5, 1110)
    assert (a.cash.count_init, a.cash.value_init) == (0, 0)
    figures = {p.selection: (p.name, p.price, p.sold.count_init, p.sold.value_init) for p in a.products}
    assert figures == {"A1": ("Cola 330ml", 250, 3, 750), "A2": ("Water still", 180, 2, 360), "B1": ("Crisps", 120, 0, 0)}
    assert [(x.device, x.sold.count_init, x.sold.value_init) for x in a.product("A1").by_payment] == [("DA", 3, 750)]
    assert all(c.ok for c in a.checks())
    ea1 = [(e.code, e.elements[-1]) for e in a.events if e.tag == "EA1"]
    assert ea1 == [("ORS", "A1"), ("ORS", "A2"), ("OVF", "A2"), ("ODO", ""), ("OSA", "A2"), ("ORS", "A1"), ("ODC", "")]
    counts = {e.code: e.elements[1] for e in a.events if e.tag == "EA2"}
    assert counts == {"ODC": "1", "ODO": "1", "ORS": "3", "OSA": "1", "OVF": "1"}
    assert [m.elements for m in a.vendor] == [["REFUNDS", "1", "250"]]
    led.close()


def test_an_empty_ledger_writes_a_valid_audit(tmp_path):
    led = Ledger(str(tmp_path / "l.db"))
    a = dex.read(dex_audit(led, "m-1", T0).encode())
    assert a.crc == "matched" and (a.paid.count_init, a.paid.value_init) == (0, 0) and a.products == []
    led.close()
