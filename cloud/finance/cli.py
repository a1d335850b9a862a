"""``vendctl journal``, ``settlement`` and ``reconcile``: the finance module's commands, over the HTTP API like
the rest of vendctl (no database, no cloud extras needed on the manager's laptop)."""

from __future__ import annotations

import csv
import json
import re
import sys
from urllib.parse import quote, urlencode

from cloud.core.money import format_money

COMMANDS = ("journal", "settlement", "reconcile")


def basis_money(basis: str, currency: str) -> str:
    """A commission's basis with its minor units written as money ("12.50% of 550" -> "12.50% of CN¥5.50"),
    or as it is if it takes another form."""
    for pattern, shape in ((r"(\d+\.\d\d)% of (-?\d+)", "{0}% of {m1}"), (r"(\d+) x (\d+)", "{0} x {m1}"),
                           (r"(\d+) a month: (.*)", "{m0} a month: {1}")):
        found = re.fullmatch(pattern, basis)
        if found:
            a, b = found.groups()
            return shape.format(a, b, m0=format_money(int(a), currency) if a.lstrip("-").isdigit() else a,
                                m1=format_money(int(b), currency) if b.lstrip("-").isdigit() else b)
    return basis


def money_or_blank(amount, currency: str) -> str:
    return "" if amount is None else format_money(amount, currency or "CNY")


def add_parsers(sub) -> None:
    j = sub.add_parser("journal", help="the general journal: every account's balance, or one account's legs")
    j.add_argument("--account", help="an account kind (revenue, inventory, cogs, supplier_payable, bank, ...)")
    j.add_argument("--owner", type=int, default=0, help="the account's owner: a supplier, location or customer id")
    j.add_argument("--currency", default="CNY")
    j.add_argument("--json", action="store_true")
    s = sub.add_parser("settlement", help="a location's settlement statement for a month")
    s.add_argument("location", help="the location's id or name")
    s.add_argument("--month", required=True, help="like 2026-11")
    s.add_argument("--currency", default="CNY")
    s.add_argument("--csv", action="store_true", help="print the statement as CSV")
    s.add_argument("--post", action="store_true", help="book the total as commission owed (once per month)")
    s.add_argument("--json", action="store_true")
    r = sub.add_parser("reconcile", help="provider captures against ledger sales and the journal, with mismatches")
    r.add_argument("--from", dest="start", help="first day, YYYY-MM-DD")
    r.add_argument("--to", dest="end", help="last day, YYYY-MM-DD")
    r.add_argument("--statement", metavar="FILE", help="import a payment platform's statement file first "
                   "(Stripe balance transactions, the Alipay bill, the WeChat Pay trade bill)")
    r.add_argument("--provider", help="whose statement it is (stripe, alipay, wechat, ...)")
    r.add_argument("--json", action="store_true")


def location_id(client, text: str, error) -> int:
    if text.isdigit():
        return int(text)
    for loc in client.call("GET", "/api/v1/locations"):
        if loc["name"].lower() == text.lower():
            return loc["id"]
    raise error(f"no location named {text!r} (vendctl locations lists them)")


def run(args, client, error, table) -> None:
    """Carry out one of ``COMMANDS``; ``error`` is vendctl's CliError, ``table`` its table printer."""

    def show(result, text: str) -> None:
        print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else text)

    if args.command == "journal":
        query = {"account": args.account, "owner": args.owner, "currency": args.currency} if args.account else {}
        r = client.call("GET", "/api/v1/finance/journal" + (f"?{urlencode(query)}" if query else ""))
        if args.account:
            a = r["account"]
            legs = [{**x, "money": format_money(x["amount"], a["currency"])} for x in r["legs"]]
            show(r, f"{a['kind']} {a['owner']} ({a['currency']}, {a['side']}"
                    + (f", {a['name']}" if a.get("name") else "") + "): "
                    f"{format_money(a['natural_balance'], a['currency'])}\n" +
                 table(legs, [("txn_id", "TXN"), ("at", "AT (UTC)"), ("kind", "KIND"), ("key", "KEY"),
                              ("order_id", "ORDER"), ("money", "AMOUNT")]))
            return
        rows = [{**x, "money": format_money(x["natural_balance"], x["currency"])} for x in r["accounts"]]
        show(r, table(rows, [("kind", "ACCOUNT"), ("owner", "OWNER"), ("currency", "CUR"), ("side", "SIDE"),
                             ("money", "BALANCE"), ("name", "NAME")]))
    elif args.command == "settlement":
        loc = location_id(client, args.location, error)
        path = f"/api/v1/locations/{loc}/statements/{quote(args.month, safe='')}"
        query = f"?{urlencode({'currency': args.currency})}"
        s = client.call("POST" if args.post else "GET", path + ("/post" if args.post else "") + query)
        if args.csv:
            out = csv.writer(sys.stdout, lineterminator="\n")
            out.writerow(("line", "rule_id", "kind", "from", "to", "basis", "amount"))
            for name in ("sales_count", "gross", "refunds", "net", "cogs", "profit"):
                out.writerow((name, "", "", s["from"], s["to"], s["currency"], s[name]))
            for x in s["lines"]:
                out.writerow(("commission", x["rule_id"], x["kind"], x["from"], x["to"], x["basis"], x["commission"]))
            out.writerow(("total_due", "", "", s["from"], s["to"], s["currency"], s["total_due"]))
            return
        m = lambda v: format_money(v, s["currency"])  # noqa: E731
        lines = [{**x, "money": m(x["commission"]), "basis": basis_money(x["basis"], s["currency"])}
                 for x in s["lines"]]
        posted = (f"posted {s['posted']['at'][:10]} ({m(s['posted']['total'])})" if s["posted"] else "not posted")
        show(s, f"{s['location']}, {s['from']} to {s['to']}: {s['sales_count']} sales, gross {m(s['gross'])}, refunds "
                f"{m(s['refunds'])}, cost of goods {m(s['cogs'])}\n"
             + table(lines, [("kind", "RULE"), ("from", "FROM"), ("to", "TO"), ("basis", "BASIS"),
                             ("money", "COMMISSION")])
             + f"\ntotal due: {m(s['total_due'])}; {posted}")
    else:
        if args.statement:
            if not args.provider:
                raise error("--statement needs --provider: whose statement it is")
            try:
                with open(args.statement, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise error(f"{args.statement}: {e.strerror}") from None
            done = client.send("POST", "/api/v1/finance/statements?" + urlencode({"provider": args.provider}), data,
                               "application/octet-stream")
            fees = ", ".join(format_money(v, c) for c, v in sorted(done["fees"].items())) or "none"
            print(f"{args.statement}: {done['lines']} lines, {done['new']} new; fees posted: {fees}")
            if not args.start:
                return
        if not (args.start and args.end):
            raise error("reconcile needs --from and --to (or --statement FILE --provider NAME alone)")
        r = client.call("GET", "/api/v1/finance/reconciliation?" + urlencode({"from": args.start, "to": args.end}))
        t = r["totals"]
        sums = r["by_currency"] or [{"currency": "CNY", **t}]
        figures = "; ".join(f"sold {format_money(c['sold'], c['currency'])}, captured "
                            f"{format_money(c['captured'], c['currency'])}, refunded "
                            f"{format_money(c['refunded'], c['currency'])}" for c in sums)
        head = f"{r['from']} to {r['to']}: {t['orders']} orders, {figures}"
        if r["clear"]:
            show(r, head + "\nno mismatches")
            return
        rows = [{**x, **{k: money_or_blank(x.get(k), x.get("currency")) for k in ("sold", "captured", "refunded")}}
                for x in r["mismatches"]]
        show(r, head + f"\n{len(r['mismatches'])} mismatches:\n" +
             table(rows, [("kind", "KIND"), ("order_id", "ORDER"), ("sold", "SOLD"), ("captured", "CAPTURED"),
                          ("refunded", "REFUNDED"), ("detail", "DETAIL")]))
        if not args.json:
            raise error(f"{len(r['mismatches'])} mismatches")
