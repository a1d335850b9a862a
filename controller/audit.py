"""The machine's own EVA-DTS audit, from its ledger and applied planogram (``dex.writer``)."""

from __future__ import annotations

from datetime import datetime

from dex.writer import SlotInfo, write

from controller.ledger import Ledger

CHUNK = 1000


def dex_audit(ledger: Ledger, machine_id: str, now: datetime, firmware: str = "",
              refunds: dict[str, int] | None = None) -> str:
    """Every event of ``ledger`` as one DEX audit, priced by the planogram the machine has applied."""
    planogram = ledger.planogram()
    currencies = {s.currency for s in planogram.values()} or {"XXX"}
    if len(currencies) > 1:
        raise ValueError(f"the planogram mixes currencies {sorted(currencies)}: one audit has one currency")
    events, seq = [], 1
    while batch := ledger.read(seq, CHUNK):
        events += batch
        seq = batch[-1].seq + 1
    slots = {code: SlotInfo(s.product, s.price) for code, s in planogram.items()}
    return write(events, machine_id=machine_id, slots=slots, currency=currencies.pop(), read_at=now,
                 firmware=firmware, refunds=refunds)
