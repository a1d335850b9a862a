"""The G85 check value of an EVA-DTS transaction set: CRC-16, as 4 hexadecimal digits.

EVA-DTS 6.1 says the CRC-16 runs over every byte from the start of the ST segment up to the G85 segment.
Which CRC-16 is not obvious from the prose, so it was found by trying the usual ones against real files
(``/work/shared/dex/animo-optime.dex``, stated ``B9AE``; ``jofemar-sample.dex``, stated ``F66D``): both
match **CRC-16/ARC** (polynomial 0x8005 reflected as 0xA001, initial value 0, no final XOR; the "CRC-16"
of IBM bisync and MODBUS's cousin) over the lines from ST through the line before G85, **each line ended
by CR LF**, the ending the DEX/UCS link sends. The files as published had lost their CRs (they were
stored with LF only); recomputed with LF the values do not match, so a reader puts CR LF back before it
checks. No other common variant (CCITT, XMODEM, KERMIT, DNP, with or without init 0xFFFF or final XOR,
from DXS or from the line after ST) matches either file.
"""

from __future__ import annotations

_TABLE: list[int] = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0xA001 if _crc & 1 else _crc >> 1
    _TABLE.append(_crc)


def crc16(data: bytes, crc: int = 0) -> int:
    """CRC-16/ARC of ``data`` (continuing from ``crc``)."""
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc


def g85(lines: list[str]) -> str:
    """The G85 value of a transaction set's lines (ST first, the G85 line's predecessor last), each
    without its line ending: CR LF is put after every line, as the machine sent it."""
    crc = 0
    for line in lines:
        crc = crc16(line.encode("latin-1") + b"\r\n", crc)
    return f"{crc:04X}"
