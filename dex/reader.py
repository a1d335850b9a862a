"""Read an EVA-DTS (DEX/UCS) audit: the envelope, the G85 check, and the blocks a fleet needs.

Tolerant where real machines differ, strict where money is concerned. Line endings may be CR LF, LF or CR;
trailing spaces are ignored; the envelope (DXS/ST ... SE/DXE) may be missing in part or whole (a file cut
short is read as far as it goes, and said to be). Elements are separated by ``*``; some machines use
``^``, which is accepted on any line. Every line is kept in ``Audit.segments``, and a block this reader does
not interpret is kept in ``Audit.unknown``, never dropped. A field that does not parse becomes a
``Problem`` naming its line and block; the rest of the file is still read. What cannot be a DEX file at all
(binary content, nothing that looks like a DEX line, more than ``MAX_BYTES``) raises ``DexError``.
"""

from __future__ import annotations

import os
import re
from datetime import datetime

from dex.crc import g85
from dex.model import Audit, Counters, Event, PaymentLine, Problem, Product, PriceList, Segment

# A big machine's audit (a few hundred selections, every PA block) is some hundred kilobytes; four
# megabytes leaves room for any real one and refuses a wrong file before it is read whole.
MAX_BYTES = 4 * 1024 * 1024

TAG = re.compile(r"([A-Z]{1,3}[0-9]{0,3})(?:([*^])(.*))?\Z")
DIGITS = re.compile(r"-?[0-9]+\Z")

# ISO 4217 numeric codes of the currencies a fleet is likely to meet. ID402 writes the numeric code with a
# leading digit (1978 for the euro, 1840 for the US dollar): the last three digits are the ISO code.
NUMERIC_CURRENCY = {
    "978": "EUR", "840": "USD", "826": "GBP", "756": "CHF", "156": "CNY", "392": "JPY", "124": "CAD",
    "036": "AUD", "752": "SEK", "578": "NOK", "208": "DKK", "985": "PLN", "203": "CZK", "348": "HUF",
    "344": "HKD", "702": "SGD", "410": "KRW", "901": "TWD", "949": "TRY", "356": "INR", "484": "MXN",
    "986": "BRL", "710": "ZAR", "554": "NZD", "946": "RON", "975": "BGN", "784": "AED", "682": "SAR",
}

# Blocks read into the model; any other tag is kept in ``Audit.unknown`` as well as in ``segments``.
# CA1/BA1/DA1/DB1 (device identities), the coin and bill detail (CA3..CA17, BA..), SA (selection
# status) and the rest are vendor and device detail a fleet does not count money from: kept, not read.
INTERPRETED = {"DXS", "DXE", "ST", "SE", "G85", "ID1", "ID4", "ID5", "CB1", "VA1", "VA2", "VA3", "CA2", "DA2",
               "DB2", "TA2", "PA1", "PA2", "PA3", "PA4", "PA7", "LA1", "MA5"}


class DexError(ValueError):
    """Input that is not a DEX audit at all."""


def read_file(path: str) -> Audit:
    """Read a file from disk, refusing by its size before reading it."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise DexError(f"{path}: cannot read it ({e.strerror})") from None
    if size > MAX_BYTES:
        raise DexError(f"{path}: {size:,} bytes is too big for a DEX audit (at most {MAX_BYTES:,}); "
                       "is it the right file?")
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    return read(data, os.path.basename(path))


def read(data: bytes, name: str = "") -> Audit:
    """Read one audit from its bytes; see the module docstring for what is tolerated and what raises."""
    where = name or "the file"
    if len(data) > MAX_BYTES:
        raise DexError(f"{where}: {len(data):,} bytes is too big for a DEX audit (at most {MAX_BYTES:,})")
    # A DOS-era link or a memory dump may end the file with Ctrl-Z (0x1A) or NUL padding: not content.
    data = data.rstrip(b"\x1a\x00")
    if not data.strip():
        raise DexError(f"{where}: the file is empty")
    binary = next((i for i, b in enumerate(data) if b < 32 and b not in (9, 10, 13)), None)
    if binary is not None:
        raise DexError(f"{where}: binary content at byte {binary} (0x{data[binary]:02x}): not a DEX text file")
    # EVA-DTS is ASCII; latin-1 keeps any byte a vendor put in a name, one character per byte.
    text = data.decode("latin-1")
    audit = Audit(name=name)
    lines = re.split(r"\r\n|\r|\n", text)
    understood = 0
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip(" \t")
        if not line:
            continue
        m = TAG.match(line)
        if not m:
            audit.problems.append(Problem(number, "", f"not a DEX line: {_short(line)!r}"))
            continue
        understood += 1
        tag, rest = m.group(1), m.group(3)
        elements = [] if rest is None else rest.split(m.group(2))
        audit.segments.append(Segment(number, tag, elements))
    if not understood:
        raise DexError(f"{where}: no line of it looks like a DEX block (TAG*value*...): not a DEX file")
    _envelope(audit, lines)
    current: Product | None = None
    for seg in audit.segments:
        try:
            current = _block(audit, seg, current)
        except _Bad as e:
            audit.problems.append(Problem(seg.line, seg.tag, str(e)))
    return audit


class _Bad(ValueError):
    pass


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _el(seg: Segment, i: int) -> str:
    """Element i (1-based, as EVA-DTS numbers them: VA101 is element 1), stripped; '' if absent."""
    return seg.elements[i - 1].strip() if i <= len(seg.elements) else ""


def _num(audit: Audit, seg: Segment, i: int) -> int | None:
    """A numeric element, or None if empty; a non-number is a Problem (and None), never a guess."""
    value = _el(seg, i)
    if value == "":
        return None
    if not DIGITS.match(value):
        audit.problems.append(Problem(seg.line, seg.tag, f"{seg.tag}{i:02d} is {_short(value)!r}, not a number"))
        return None
    return int(value)


def _counters(audit: Audit, seg: Segment, value_first: bool) -> Counters:
    """Four counters: VA1, CA2, DA2 write value, count, value, count; PA2, PA3, PA4 write count, value, ..."""
    a, b, c, d = (_num(audit, seg, i) for i in range(1, 5))
    return Counters(b, a, d, c) if value_first else Counters(a, b, c, d)


def _block(audit: Audit, seg: Segment, current: Product | None) -> Product | None:
    tag = seg.tag
    ident = audit.identity
    if tag == "ID1":
        ident.serial, ident.model, ident.build, ident.location = (_el(seg, i) for i in range(1, 5))
        ident.asset = _el(seg, 6)
    elif tag == "CB1":
        ident.board_serial, ident.board_model, ident.board_software = (_el(seg, i) for i in range(1, 4))
    elif tag == "ID4":
        audit.decimals = _num(audit, seg, 1)
        if audit.decimals is not None and audit.decimals > 6:
            audit.problems.append(Problem(seg.line, tag, f"ID401 says {audit.decimals} decimal places"))
            audit.decimals = None
        alpha, numeric = _el(seg, 3).upper(), _el(seg, 2)
        if re.fullmatch(r"[A-Z]{3}", alpha):
            audit.currency = alpha
        elif numeric:
            audit.currency = NUMERIC_CURRENCY.get(numeric[-3:].zfill(3), "")
            if not audit.currency:
                audit.problems.append(Problem(seg.line, tag, f"ID402 currency code {numeric!r} is not one this "
                                                             "reader knows; give the currency by hand"))
    elif tag == "ID5":
        audit.read_date, audit.read_time = _el(seg, 1), _el(seg, 2)
        audit.read_at = _when(audit.read_date, audit.read_time)
        if audit.read_date and audit.read_at is None:
            audit.problems.append(Problem(seg.line, tag, f"date {audit.read_date!r} time {audit.read_time!r} "
                                                         "is not a date and time"))
    elif tag == "VA1":
        audit.paid = _counters(audit, seg, True)
    elif tag in ("VA2", "VA3", "CA2", "DA2", "DB2", "TA2"):
        name = {"VA2": "test", "VA3": "free", "CA2": "cash", "DA2": "cashless", "DB2": "cashless2",
                "TA2": "token"}[tag]
        setattr(audit, name, _counters(audit, seg, True))
    elif tag == "PA1":
        if not _el(seg, 1):
            raise _Bad("PA101 (the product number) is empty")
        current = Product(_el(seg, 1), _num(audit, seg, 2), _el(seg, 3), seg.line)
        audit.products.append(current)
    elif tag in ("PA2", "PA3", "PA4", "PA7"):
        if current is None:
            raise _Bad(f"{tag} before any PA1: not counted to a product")
        if tag == "PA2":
            current.sold = _counters(audit, seg, False)
        elif tag in ("PA3", "PA4"):
            setattr(current, "test" if tag == "PA3" else "free", _counters(audit, seg, False))
        else:
            if _el(seg, 1) and _el(seg, 1) != current.selection:
                raise _Bad(f"PA701 names product {_el(seg, 1)!r} inside product {current.selection!r}")
            device = _el(seg, 2).upper()
            if not device:
                raise _Bad("PA702 (the payment device) is empty")
            sold = Counters(*(_num(audit, seg, i) for i in (5, 6, 7, 8)))
            current.by_payment.append(PaymentLine(device, _el(seg, 3), _num(audit, seg, 4), sold, seg.line))
    elif tag == "LA1":
        audit.price_lists.append(PriceList(_el(seg, 1), _el(seg, 2), _num(audit, seg, 3), _num(audit, seg, 4),
                                           _num(audit, seg, 5), seg.line))
    elif tag.startswith("EA"):
        code, date, time = _event_fields(seg)
        audit.events.append(Event(tag, code, date, time, [e.strip() for e in seg.elements], seg.line))
    elif tag == "MA5":
        audit.vendor.append(seg)
    elif tag not in INTERPRETED:
        audit.unknown.append(seg)
    return current if tag.startswith("PA") else None  # a product's block ends at its first non-PA line


def _event_fields(seg: Segment) -> tuple[str, str, str]:
    """(code, date, time) of an EA line. EA1 and EA2 start with the event's code (EA1 then its date and
    time); EA3 is the read itself (EA302 date, EA303 time); for other EA lines the first element that is
    a date, and the one after it, are taken."""
    if seg.tag == "EA1":
        return _el(seg, 1), _el(seg, 2), _el(seg, 3)
    if seg.tag == "EA2":
        return _el(seg, 1), "", ""
    if seg.tag == "EA3":
        return "", _el(seg, 2), _el(seg, 3)
    for i in range(1, len(seg.elements) + 1):
        if re.fullmatch(r"(19|20)[0-9]{6}", _el(seg, i)):
            words = [e.strip() for e in seg.elements[i + 1:] if e.strip() and not e.strip().isdigit()]
            return (words[-1] if words else ""), _el(seg, i), _el(seg, i + 1)  # the last words say what
    return _el(seg, 1), "", ""


def _when(date: str, time: str) -> datetime | None:
    """ID501 (YYYYMMDD, or YYMMDD in older files) and ID502 (HHMM or HHMMSS) as a naive datetime."""
    try:
        if len(date) == 8:
            day = datetime.strptime(date, "%Y%m%d")
        elif len(date) == 6:
            day = datetime.strptime(date, "%y%m%d")
        else:
            return None
        if not time:
            return day
        clock = datetime.strptime(time, "%H%M%S" if len(time) == 6 else "%H%M")
        return day.replace(hour=clock.hour, minute=clock.minute, second=clock.second)
    except ValueError:
        return None


def _envelope(audit: Audit, lines: list[str]) -> None:
    """Check DXS/ST/SE/DXE and the G85 CRC; what is missing or wrong is noted, the data is read anyway."""
    tags = [s.tag for s in audit.segments]
    for tag, what in (("DXS", "no DXS line (the file starts without its header)"),
                      ("ST", "no ST line (the transaction set has no start)"),
                      ("SE", "no SE line: the file may be cut short"),
                      ("DXE", "no DXE line: the file may be cut short")):
        if tag not in tags:
            audit.notes.append(what)
    st = next((s for s in audit.segments if s.tag == "ST"), None)
    se = next((s for s in audit.segments if s.tag == "SE"), None)
    if st and se:
        counted = sum(1 for s in audit.segments if st.line <= s.line <= se.line)
        stated = _el(se, 1)
        if stated and stated.isdigit() and int(stated) != counted:
            audit.notes.append(f"SE01 says {stated} segments, the transaction set has {counted}")
    g = next((s for s in audit.segments if s.tag == "G85"), None)
    if g is None:
        return
    audit.crc_stated = _el(g, 1).upper()
    start = st.line if st else next((s.line + 1 for s in audit.segments if s.tag == "DXS"), 1)
    body = [raw for raw in lines[start - 1:g.line - 1]]
    audit.crc_computed = g85(body)
    if audit.crc_computed != audit.crc_stated:
        # Some machines pad lines with spaces that a copy later loses or keeps: try the stripped lines too.
        stripped = g85([raw.rstrip(" \t") for raw in body])
        if stripped == audit.crc_stated:
            audit.crc_computed = stripped
    audit.crc = "matched" if audit.crc_computed == audit.crc_stated else "mismatch"
    if audit.crc == "mismatch":
        audit.notes.append(f"G85 CRC mismatch: the file says {audit.crc_stated or '(nothing)'}, its content gives "
                           f"{audit.crc_computed}: the file was changed or damaged after the machine wrote it")
