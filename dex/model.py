"""What an EVA-DTS audit says, as plain data: the reader fills it, the writer and the cloud read it.

Money is an integer in the machine's smallest unit (``Audit.decimals`` places, from ID401): DEX has no
decimal point in its values. Counters come in pairs, since the machine was initialised ("init", the
history that never resets) and since the last read with reset ("reset", the interim counters).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

# Payment devices as PA7 names them (PA702).
DEVICES = {"CA": "cash", "DA": "cashless 1", "DB": "cashless 2", "TA": "token"}


@dataclass
class Problem:
    """A field or line that could not be read as EVA-DTS says; the rest of the file is still read."""

    line: int
    block: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.block or '?'}): {self.message}"


@dataclass
class Segment:
    """One line as written: its tag (VA1, PA7, ...) and its elements, kept whether or not it is understood."""

    line: int
    tag: str
    elements: list[str]


@dataclass
class Counters:
    """Count and value since initialisation and since the last reset (None where the file leaves it out)."""

    count_init: int | None = None
    value_init: int | None = None
    count_reset: int | None = None
    value_reset: int | None = None


@dataclass
class PaymentLine:
    """PA7: one product's sales by one payment device."""

    device: str  # CA, DA, DB, TA
    price_list: str
    price: int | None
    sold: Counters
    line: int


@dataclass
class Product:
    """PA1 and the PA2..PA7 lines that follow it."""

    selection: str  # PA101, the product number the machine shows
    price: int | None  # PA102
    name: str  # PA103, the product identification
    line: int
    sold: Counters = field(default_factory=Counters)  # PA2: paid vends
    test: Counters | None = None  # PA3
    free: Counters | None = None  # PA4
    by_payment: list[PaymentLine] = field(default_factory=list)  # PA7


@dataclass
class PriceList:
    """LA1: a product's price in one price list, and how many vends it made there."""

    price_list: str
    selection: str
    price: int | None
    count_init: int | None
    count_reset: int | None
    line: int


@dataclass
class Event:
    """An EA block: EA1 (an event with its date and time), EA2 (an event's counts), EA3 (the read itself),
    or a vendor's other EA lines, kept with their elements."""

    tag: str
    code: str
    date: str
    time: str
    elements: list[str]
    line: int


@dataclass
class Identity:
    serial: str = ""  # ID101
    model: str = ""  # ID102
    build: str = ""  # ID103
    location: str = ""  # ID104
    asset: str = ""  # ID106
    board_serial: str = ""  # CB101
    board_model: str = ""  # CB102
    board_software: str = ""  # CB103


@dataclass
class Check:
    """A total the file states against the same total summed from its other lines."""

    name: str
    stated: int
    summed: int

    @property
    def ok(self) -> bool:
        return self.stated == self.summed


@dataclass
class Audit:
    """One read of one machine."""

    name: str = ""
    identity: Identity = field(default_factory=Identity)
    decimals: int | None = None  # ID401
    currency: str = ""  # ISO 4217 alpha, from ID403 or ID402
    read_date: str = ""  # ID501 as written
    read_time: str = ""  # ID502 as written
    read_at: datetime | None = None  # ID501 + ID502, the machine's own clock (no zone)
    paid: Counters = field(default_factory=Counters)  # VA1
    test: Counters | None = None  # VA2
    free: Counters | None = None  # VA3
    cash: Counters | None = None  # CA2
    cashless: Counters | None = None  # DA2
    cashless2: Counters | None = None  # DB2
    token: Counters | None = None  # TA2
    products: list[Product] = field(default_factory=list)
    price_lists: list[PriceList] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    vendor: list[Segment] = field(default_factory=list)  # MA5
    segments: list[Segment] = field(default_factory=list)  # every line, in order, understood or not
    unknown: list[Segment] = field(default_factory=list)  # lines of blocks this reader does not interpret
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # envelope remarks: missing DXS, SE count, ...
    crc: str = "absent"  # "matched", "mismatch" or "absent" (no G85 line)
    crc_stated: str = ""
    crc_computed: str = ""

    def product(self, selection: str) -> Product | None:
        return next((p for p in self.products if p.selection == selection), None)

    def checks(self) -> list[Check]:
        """The file's totals against each other: VA1 against the sum of PA2, CA2 + DA2 (+ DB2, TA2)
        against VA1, each product's PA2 against its PA7 lines. A machine may break these (free vends
        counted one way or another); they are shown, not enforced."""
        found = []
        if self.products and self.paid.count_init is not None:
            found.append(Check("VA1 paid vends = sum of PA2", self.paid.count_init,
                               sum(p.sold.count_init or 0 for p in self.products)))
            found.append(Check("VA1 paid value = sum of PA2", self.paid.value_init or 0,
                               sum(p.sold.value_init or 0 for p in self.products)))
        devices = [c for c in (self.cash, self.cashless, self.cashless2, self.token) if c is not None]
        if (self.cash or self.cashless) and self.paid.value_init is not None:
            found.append(Check("VA1 paid value = CA2 + DA2 + DB2 + TA2", self.paid.value_init,
                               sum(c.value_init or 0 for c in devices)))
            found.append(Check("VA1 paid vends = CA2 + DA2 + DB2 + TA2", self.paid.count_init or 0,
                               sum(c.count_init or 0 for c in devices)))
        for p in self.products:
            if p.by_payment:
                found.append(Check(f"PA2 of {p.selection} = its PA7 lines", p.sold.count_init or 0,
                                   sum(x.sold.count_init or 0 for x in p.by_payment)))
        return found

    def to_json(self) -> dict:
        """Everything read, for ``--json`` and the API (datetimes as ISO text)."""
        out = asdict(self)
        out["read_at"] = self.read_at.isoformat() if self.read_at else None
        out["checks"] = [dict(asdict(c), ok=c.ok) for c in self.checks()]
        del out["segments"]
        return out
