"""The Alipay trade bill (业务明细), read into statement lines.

What Alipay gives (``alipay.data.dataservice.bill.downloadurl.query`` with ``bill_type`` trade, or the merchant
portal): a zip of GBK CSV files, the detail (``..._业务明细.csv``) and its summary (``..._业务明细(汇总).csv``);
this reads the detail, from the zip or alone. The file opens with ``#`` lines (the title, ``#账号：[...]``
naming the merchant's account, the dates), then the column names, the rows, and ``#`` lines closing the list
with the totals (``#交易合计：N笔...``, ``#退款合计：M笔...``). Cells often end in a tab (so spreadsheets keep
long numbers); amounts are yuan with two decimals, read by text into fen, never through a float.

Each ``交易`` row is a capture (its 订单金额, and the 服务费 Alipay kept as its fee); each ``退款`` row a refund
(its 商家实收, negative in the file, and the part of the fee Alipay gave back); anything else is ``other``.
A file for another merchant (its account is not ``--alipay-pid``), a truncated one (no closing lines, or
fewer rows than its totals say) or another format is refused, naming why.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import datetime, timedelta, timezone

from cloud.payments.alipay.client import fen, order_of
from cloud.payments.statement import StatementLine, StatementRefused

CHINA = timezone(timedelta(hours=8))
COLUMNS = {"trade_no": "支付宝交易号", "out_trade_no": "商户订单号", "kind": "业务类型", "done": "完成时间",
           "total": "订单金额（元）", "received": "商家实收（元）", "request_no": "退款批次号/请求号",
           "fee": "服务费（元）"}
ACCOUNT_RE = re.compile(r"#账号：\[([0-9A-Za-z@._-]+)\]")
TOTAL_RE = re.compile(r"#(交易|退款)合计：([0-9]+)笔")


def detail_file(data: bytes) -> bytes:
    """The 业务明细 CSV: ``data`` itself, or the one detail file in a zip of Alipay's."""
    if not data.startswith(b"PK\x03\x04"):
        return data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            found = []
            for info in z.infolist():
                # Alipay's zips name files in GBK without the UTF-8 flag; zipfile then reads them as cp437.
                name = info.filename if info.flag_bits & 0x800 else info.filename.encode("cp437").decode("gbk", "replace")
                if name.endswith("业务明细.csv"):
                    found.append(info)
            if len(found) != 1:
                raise StatementRefused(f"the zip holds {len(found)} 业务明细 files, not one: not an Alipay trade bill")
            return z.read(found[0])
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise StatementRefused(f"a broken zip (truncated?): {e}") from None


def read_bill(data: bytes, pid: str, currency: str = "CNY") -> list[StatementLine]:
    """The bill's lines; raises StatementRefused for another merchant's, a truncated or a foreign file."""
    if not pid:
        raise StatementRefused("set --alipay-pid (the merchant's 2088... partner id) to import Alipay bills")
    try:
        text = detail_file(data).decode("gb18030")
    except UnicodeDecodeError:
        raise StatementRefused("not GBK text: not an Alipay bill") from None
    lines = text.splitlines()
    comments = [line.strip() for line in lines if line.startswith("#")]
    if not comments or "支付宝" not in comments[0]:
        raise StatementRefused("no '#支付宝...' title line: not an Alipay bill")
    account = next((m.group(1) for c in comments if (m := ACCOUNT_RE.match(c))), None)
    if account is None:
        raise StatementRefused("no '#账号：[...]' line naming the merchant: not an Alipay bill")
    if not account.startswith(pid):
        raise StatementRefused(f"the bill is for account {account}, another merchant's (ours is {pid})")
    totals = {m.group(1): int(m.group(2)) for c in comments if (m := TOTAL_RE.match(c))}
    if "交易" not in totals or not any("列表结束" in c for c in comments):
        raise StatementRefused("the bill ends before its closing '#...列表结束' and '#交易合计' lines: truncated")
    table = [line for line in lines if line.strip() and not line.startswith("#")]
    if not table:
        raise StatementRefused("no column names: not an Alipay trade bill")
    rows = list(csv.reader(table))
    header = [cell.strip() for cell in rows[0]]
    missing = [name for name in COLUMNS.values() if name not in header]
    if missing:
        raise StatementRefused(f"the bill lacks the columns {', '.join(missing)}: not an Alipay trade bill")
    at = {key: header.index(name) for key, name in COLUMNS.items()}
    out, counted = [], {"交易": 0, "退款": 0}
    for number, row in enumerate(rows[1:], start=2):
        cells = [cell.strip() for cell in row]
        if len(cells) < len(header):
            raise StatementRefused(f"bill row {number} has {len(cells)} cells, not {len(header)}: truncated or damaged")
        out.append(line_of(number, {key: cells[i] for key, i in at.items()}, currency))
        if cells[at["kind"]] in counted:
            counted[cells[at["kind"]]] += 1
    for kind, count in counted.items():
        if totals.get(kind, 0) != count:
            raise StatementRefused(f"the bill's totals say {totals.get(kind, 0)} {kind} rows, it has {count}: truncated")
    if not out:
        raise StatementRefused("the bill lists no trades")
    return out


def line_of(number: int, cell: dict[str, str], currency: str) -> StatementLine:
    try:
        at = datetime.strptime(cell["done"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA).astimezone(timezone.utc)
        total, received, fee = fen(cell["total"]), fen(cell["received"]), fen(cell["fee"] or "0.00")
    except ValueError as e:
        raise StatementRefused(f"bill row {number}: {e}") from None
    trade_no, order_id = cell["trade_no"], order_of(cell["out_trade_no"])
    if not trade_no:
        raise StatementRefused(f"bill row {number} has no 支付宝交易号")
    if cell["kind"] == "交易":
        return StatementLine(trade_no, "capture", order_id, total, currency, at, max(0, -fee))
    if cell["kind"] == "退款":
        # A fee Alipay gives back on a refund is not a fee kept: the line carries none (see docs/payments.md).
        return StatementLine(cell["request_no"] or trade_no, "refund", order_id, abs(received), currency, at)
    return StatementLine(f"{trade_no}:{number}", "other", order_id, abs(received), currency, at)
