"""Money as integers in the currency's smallest unit; formatting and parsing for people."""

from __future__ import annotations

import re

EXPONENT = {"JPY": 0, "KRW": 0}
SYMBOL = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def format_money(amount: int, currency: str) -> str:
    exp = EXPONENT.get(currency, 2)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exp)
    text = f"{major:,}" + (f".{minor:0{exp}d}" if exp else "")
    symbol = SYMBOL.get(currency)
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency}"


def plain_amount(amount: int, currency: str) -> str:
    """1250 CNY -> '12.50': the amount as ``parse_amount`` reads it back (no symbol, no separators), for a CSV."""
    exp = EXPONENT.get(currency, 2)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exp)
    return f"{sign}{major}" + (f".{minor:0{exp}d}" if exp else "")


def parse_amount(text: str, currency: str, zero: bool = False) -> int:
    """'12.5' -> 1250 for CNY; raise ValueError with a reason for anything that is not a plain amount (zero
    only when ``zero``: a free item's price, a gift's cost)."""
    exp = EXPONENT.get(currency, 2)
    text = (text or "").strip()
    pattern = r"[0-9]{1,7}" + (rf"(\.[0-9]{{1,{exp}}})?" if exp else "")
    if not re.fullmatch(pattern, text):
        raise ValueError(f"{text!r} is not an amount: write it like 10 or 10.50")
    major, _, minor = text.partition(".")
    value = int(major) * 10**exp + (int(minor.ljust(exp, "0")) if minor else 0)
    if value <= 0 and not (zero and value == 0):
        raise ValueError("the amount must be more than zero")
    return value
