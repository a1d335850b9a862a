"""Write an EVA-DTS audit of a machine from its ledger events, in the form ``dex.reader`` reads back.

The machine's counters are cumulative since its ledger began (so "since reset" equals "since
initialisation": this system never resets a counter, a reader takes differences between reads). Every sale
here is a cashless one (a phone paid for it through the cloud), so each product's paid vends are also its
PA7 ``DA`` line and the machine's DA2. What EVA-DTS has no block for is written as this project's own:

- ledger events as EA1 lines (code, date, time, slot) and EA2 counts per code, with the codes in
  ``EVENT_CODES``, all starting with ``O``, as EVA-DTS leaves codes outside its own list to the maker;
- refunds (the cloud's, not the machine's: the product was vended and counted) as vendor data
  ``MA5*REFUNDS*count*value``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Protocol

from dex.crc import g85
from dex.reader import NUMERIC_CURRENCY

EVENT_CODES = {
    "vend.failed": "OVF",  # a jam, or nothing dropped
    "vend.unknown": "OVU",  # a vend a reboot cut short
    "drop.unexpected": "ODU",
    "restock": "ORS",
    "stock.adjusted": "OSA",
    "door.opened": "ODO",
    "door.closed": "ODC",
    "fault": "OFT",
    "boot": "OBT",
    "command.rejected": "OCR",
}
ALPHA_NUMERIC = {alpha: num for num, alpha in NUMERIC_CURRENCY.items()}
ZERO_DECIMALS = {"JPY", "KRW"}  # ISO 4217 currencies without a minor unit, among those a fleet meets


def decimals_of(currency: str) -> int:
    """The decimal places of a currency's minor unit (ID401)."""
    return 0 if currency in ZERO_DECIMALS else 2


class LedgerEvent(Protocol):
    """What the writer needs of an event: ``protocol.messages.Event`` is one."""

    kind: str
    data: dict
    ts: str


@dataclass(frozen=True)
class SlotInfo:
    """A slot's product as the planogram names it, and its price in minor units."""

    name: str
    price: int


def _clean(text: str, size: int = 40) -> str:
    """An element: no separators or line breaks inside, ASCII, bounded."""
    out = "".join(c if 32 <= ord(c) < 127 and c not in "*^" else " " for c in str(text))
    return out.strip()[:size]


def _stamp(ts: str) -> tuple[str, str]:
    t = datetime.fromisoformat(ts).astimezone(timezone.utc)
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S")


def write(events: Iterable[LedgerEvent], *, machine_id: str, slots: dict[str, SlotInfo], currency: str,
          read_at: datetime, decimals: int | None = None, firmware: str = "", refunds: dict[str, int] | None = None,
          model: str = "vend-fleet") -> str:
    """The audit text (CR LF line endings, G85 computed) of a machine whose ledger holds ``events``.

    ``slots`` prices each sale (the price the slot has now: the ledger does not carry prices); a sale from
    a slot not in ``slots`` is counted at 0 under its own slot code. ``refunds`` maps order ids to the
    minor units given back.
    """
    sold: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # slot -> [count, value]
    lines_events: list[str] = []
    counts: Counter = Counter()
    for e in events:
        if e.kind == "vend.succeeded":
            slot = e.data["slot"]
            sold[slot][0] += 1
            sold[slot][1] += slots[slot].price if slot in slots else 0
        code = EVENT_CODES.get(e.kind)
        if code:
            date, time = _stamp(e.ts)
            detail = e.data.get("slot") or e.data.get("code") or e.data.get("reason") or ""
            lines_events.append(f"EA1*{code}*{date}*{time}****{_clean(detail, 20)}")
            counts[code] += 1
    decimals = decimals_of(currency) if decimals is None else decimals
    count = sum(c for c, _ in sold.values())
    value = sum(v for _, v in sold.values())
    numeric = ALPHA_NUMERIC.get(currency)
    comm_id = "VND" + "".join(c for c in machine_id if c.isdigit())[-7:].rjust(7, "0")
    body = [
        "ST*001*0001",
        f"ID1*{_clean(machine_id, 20)}*{_clean(model, 20)}*{_clean(firmware, 12)}",
        f"CB1*{_clean(machine_id, 20)}*{_clean(model, 20)}*{_clean(firmware, 12)}",
        f"ID4*{decimals}*{'1' + numeric if numeric else ''}*{currency}",
        f"ID5*{read_at.astimezone(timezone.utc):%Y%m%d*%H%M%S}",
        f"VA1*{value}*{count}*{value}*{count}",
        "VA2*0*0*0*0",
        "VA3*0*0*0*0",
        "CA2*0*0*0*0",
        f"DA2*{value}*{count}*{value}*{count}",
    ]
    for slot in sorted(set(slots) | set(sold)):
        info = slots.get(slot, SlotInfo("", 0))
        n, v = sold.get(slot, (0, 0))
        body += [f"PA1*{_clean(slot, 8)}*{info.price}*{_clean(info.name, 20)}", f"PA2*{n}*{v}*{n}*{v}"]
        if n:
            body.append(f"PA7*{_clean(slot, 8)}*DA*0*{info.price}*{n}*{v}*{n}*{v}")
    body += lines_events
    body += [f"EA2*{code}*{n}*{n}" for code, n in sorted(counts.items())]
    if refunds:
        body.append(f"MA5*REFUNDS*{len(refunds)}*{sum(refunds.values())}")
    body.append(f"G85*{g85(body)}")
    body.append(f"SE*{len(body) + 1}*0001")
    lines = [f"DXS*{comm_id}*VA*V1/1*1"] + body + ["DXE*1*1"]
    return "\r\n".join(lines) + "\r\n"
