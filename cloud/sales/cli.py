"""``vendctl report sales`` and ``vendctl report stock``: the manager reports over the HTTP API; tables for
people, ``--json`` for scripts."""

from __future__ import annotations

from cloud.core.client import money, table

import json
from urllib.parse import urlencode

COMMANDS = ("report",)
KEY_TITLES = {"day": "DAY", "hour": "HOUR", "machine": "MACHINE", "product": "PRODUCT", "location": "LOCATION"}


def add_parsers(sub) -> None:
    r = sub.add_parser("report", help="manager reports: sales by day, machine, product, location or hour; "
                       "stock per slot")
    rsub = r.add_subparsers(dest="report", required=True)
    s = rsub.add_parser("sales", help="count and amount per currency over a range of local days")
    s.add_argument("--by", default="day", choices=("day", "machine", "product", "location", "hour"))
    s.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (default: 30 days before --to)")
    s.add_argument("--to", dest="end", help="the day after the last, YYYY-MM-DD (exclusive; default: tomorrow)")
    s.add_argument("--tz", help="the zone whose days and hours count, like Asia/Shanghai (default UTC)")
    for name in ("machine", "location", "product"):
        s.add_argument(f"--{name}", help=f"only this {name}" + (" (id or SKU)" if name == "product" else ""))
    s.add_argument("--json", action="store_true")
    st = rsub.add_parser("stock", help="every slot across the fleet with its fill level, emptiest first")
    for name in ("machine", "location", "product"):
        st.add_argument(f"--{name}", help=f"only this {name}")
    st.add_argument("--json", action="store_true")


def run(args, client, error) -> None:
    """Carry out ``vendctl report ...`` through the cloud's API."""
    filters = {k: getattr(args, k) for k in ("machine", "location", "product") if getattr(args, k)}
    if args.report == "stock":
        r = client.call("GET", "/api/v1/reports/stock" + ("?" + urlencode(filters) if filters else ""))
        if args.json:
            print(json.dumps(r, indent=2, ensure_ascii=False))
            return
        for s in r["slots"]:
            s["fill_text"] = f"{round(100 * s['fill'])}%"
            s["product"] = f"{s['sku']} {s['name']}"
            s["flag"] = "OUT OF SERVICE" if s["flagged"] else ""
        print(table(r["slots"], [("machine_id", "MACHINE"), ("location", "LOCATION"), ("slot", "SLOT"),
                                 ("product", "PRODUCT"), ("count", "COUNT"), ("capacity", "CAPACITY"),
                                 ("fill_text", "FILL"), ("flag", "")]))
        s = r["summary"]
        print(f"{s['slots']} slots, {s['empty']} empty, {s['below_quarter']} under a quarter full; "
              f"{s['units']} of {s['capacity']} units ({round(100 * s['fill'])}%)")
        return
    query = {"by": args.by, **filters}
    for key, value in (("from", args.start), ("to", args.end), ("tz", args.tz)):
        if value:
            query[key] = value
    r = client.call("GET", "/api/v1/reports/sales?" + urlencode(query))
    if args.json:
        print(json.dumps(r, indent=2, ensure_ascii=False))
        return
    for row in r["rows"]:
        row["money"] = money(row["amount"], row["currency"])
        row["label"] = f"{row['key']:02d}:00" if args.by == "hour" else (
            f"{row['key']} {row['name']}" if args.by in ("machine", "location", "product") else row["key"])
    print(f"sales by {r['by']}, {r['from']} to {r['to']} (exclusive), {r['tz']}"
          + "".join(f", {k} {v}" for k, v in r["filters"].items()))
    print(table(r["rows"], [("label", KEY_TITLES[r["by"]]), ("currency", "CURRENCY"), ("count", "SALES"),
                            ("money", "AMOUNT")]) if r["rows"] else "no sales")
    for t in r["totals"]:
        print(f"total: {t['count']} sales, {money(t['amount'], t['currency'])}")
    if not r["exact"]:
        print("note: this zone is not a whole number of hours from UTC; the hour that holds local midnight "
              "is counted whole in the day where it starts")
