"""The WeChat Pay trade bill (``/v3/bill/tradebill``, bill_type ALL), read into statement lines.

The file is CSV: a header row of Chinese column names, one row per trade or refund with every field
prefixed by a backquote (so a spreadsheet keeps long numbers as text), then a summary header
(``总交易单数,...``) and one summary row. Amounts are yuan with two decimals, read into fen exactly (never
through a float); times are Beijing time. A file without its summary, whose summary does not add up to its
rows, that is not this format, or that is another merchant's (the 商户号 column) is refused whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8))
AMOUNT_RE = re.compile(r"(-?)(\d{1,12})\.(\d{2})\Z")
TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\Z")
COLUMNS = {"at": "交易时间", "mchid": "商户号", "transaction_id": "微信订单号", "out_trade_no": "商户订单号",
           "state": "交易状态", "currency": "货币种类", "settled": "应结订单金额", "refund_id": "微信退款单号",
           "out_refund_no": "商户退款单号", "refund": "退款金额", "refund_state": "退款状态", "fee": "手续费",
           "attach": "商户数据包"}
SUMMARY = {"count": "总交易单数", "settled": "应结订单总金额", "refund": "退款总金额", "fee": "手续费总金额"}


class BillRefused(ValueError):
    """The file is not a whole trade bill of this merchant; nothing of it is read."""


@dataclass(frozen=True)
class BillLine:
    platform_id: str  # WeChat Pay's transaction_id of a payment, its refund_id of a refund
    kind: str  # capture | refund
    out_trade_no: str  # the merchant's number of the payment (from the cloud's order id)
    amount: int  # fen, above zero
    currency: str
    at: datetime  # UTC
    fee: int  # fen WeChat Pay took (a refund's is negative: the fee given back)
    out_refund_no: str = ""
    attach: str = ""  # what the merchant attached to the payment (the cloud: its order id)


def fen(text: str, where: str) -> int:
    """Yuan written with two decimals ("3.50", "-0.02") in fen, exactly."""
    m = AMOUNT_RE.match(text)
    if not m:
        raise BillRefused(f"{where}: {text!r} is not an amount in yuan with two decimals")
    value = int(m.group(2)) * 100 + int(m.group(3))
    return -value if m.group(1) else value


def when(text: str, where: str) -> datetime:
    """A Beijing time written YYYY-MM-DD HH:MM:SS (read without strptime, a tenth of a bill's reading time)."""
    m = TIME_RE.match(text)
    try:
        if not m:
            raise ValueError
        return datetime(*(int(g) for g in m.groups()), tzinfo=BEIJING)
    except ValueError:
        raise BillRefused(f"{where}: {text!r} is not a time as YYYY-MM-DD HH:MM:SS") from None


def fields(line: str, where: str) -> list[str]:
    """A row's fields, each without its leading backquote. Splitting on ``,``` keeps a comma that is inside
    a field (a product name) in that field."""
    if not line.startswith("`"):
        raise BillRefused(f"{where}: a row of the trade bill starts with a backquote")
    return line[1:].split(",`")


def parse(data: bytes, mchid: str) -> list[BillLine]:
    """The bill's payments and refunds; raises BillRefused (with the reason) for a file not to be trusted."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BillRefused("not a WeChat Pay trade bill: the file is not UTF-8 text") from None
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise BillRefused("the file is empty")
    header = lines[0].split(",")
    missing = [name for name in COLUMNS.values() if name not in header]
    if missing:
        raise BillRefused(f"not a WeChat Pay trade bill: the header lacks {', '.join(missing)}")
    col = {key: header.index(name) for key, name in COLUMNS.items()}
    try:
        end = next(i for i, ln in enumerate(lines) if ln.startswith(SUMMARY["count"]))
    except StopIteration:
        raise BillRefused("the bill is truncated: its summary (总交易单数 ...) is missing") from None
    if end + 2 != len(lines):
        raise BillRefused("the bill is truncated or has lines after its summary row")
    out, sums = [], {"count": 0, "settled": 0, "refund": 0, "fee": 0}
    for number, line in enumerate(lines[1:end], start=2):
        where = f"line {number}"
        row = fields(line, where)
        if len(row) != len(header):
            raise BillRefused(f"{where}: {len(row)} fields where the header has {len(header)} (truncated?)")
        if row[col["mchid"]] != mchid:
            raise BillRefused(f"{where}: the bill is merchant {row[col['mchid']]}'s, not this cloud's ({mchid})")
        at = when(row[col["at"]], where)
        currency, fee = row[col["currency"]], fen(row[col["fee"]], where)
        settled, refund = fen(row[col["settled"]], where), fen(row[col["refund"]], where)
        sums["count"] += 1
        sums["settled"] += settled
        sums["refund"] += refund
        sums["fee"] += fee
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise BillRefused(f"{where}: {currency!r} is not a currency")
        state, at = row[col["state"]], at.astimezone(timezone.utc)
        if state == "SUCCESS" and settled > 0:
            out.append(BillLine(row[col["transaction_id"]], "capture", row[col["out_trade_no"]], settled, currency,
                                at, fee, attach=row[col["attach"]]))
        elif state == "REFUND" and refund > 0 and row[col["refund_state"]] == "SUCCESS":
            out.append(BillLine(row[col["refund_id"]], "refund", row[col["out_trade_no"]], refund, currency, at,
                                fee, row[col["out_refund_no"]], row[col["attach"]]))
    head = lines[end].split(",")
    if any(name not in head for name in SUMMARY.values()):
        raise BillRefused("the summary header lacks " + ", ".join(n for n in SUMMARY.values() if n not in head))
    summary = fields(lines[end + 1], f"line {end + 2}")
    if len(summary) != len(head):
        raise BillRefused("the summary row is truncated")
    said = {}
    for key, name in SUMMARY.items():
        text = summary[head.index(name)]
        if key == "count":
            if not text.isdigit():
                raise BillRefused(f"the summary's {name} ({text!r}) is not a count")
            said[key] = int(text)
        else:
            said[key] = fen(text, "summary")
    for key, name in SUMMARY.items():
        if said[key] != sums[key]:
            raise BillRefused(f"the summary's {name} ({summary[head.index(name)]}) is not what the rows add up to: "
                              "the bill is truncated or altered")
    return out
