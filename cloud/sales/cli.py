"""``vendctl report sales`` and ``vendctl report stock``: the manager reports; ``vendctl orders`` (search,
``show``, ``refund``) and ``vendctl customers`` (search, ``show``, ``block``, ``unblock``): the office's
everyday jobs. All over the HTTP API; tables for people, ``--json`` for scripts."""

from __future__ import annotations

from cloud.core.client import money, table

import json
import secrets
from urllib.parse import quote, urlencode

COMMANDS = ("report", "orders", "customers")
KEY_TITLES = {"day": "DAY", "hour": "HOUR", "machine": "MACHINE", "product": "PRODUCT", "location": "LOCATION"}


def add_parsers(sub) -> None:
    r = sub.add_parser("report", help="manager reports: sales by day, machine, product, location or hour; "
                       "stock per slot")
    rsub = r.add_subparsers(dest="report", required=True)
    s = rsub.add_parser("sales", help="sales, refunds and net per currency over a range of local days (refunds in "
                         "the period they were booked)")
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
    add_office_parsers(sub)


def add_office_parsers(sub) -> None:
    o = sub.add_parser("orders", help="orders newest first by machine, customer, days and state; 'orders show "
                       "ID' with its money; 'orders refund ID --reason WHY [--amount 1.50]' (managers)",
                       usage="vendctl orders [--machine M] [--customer C] [--from DAY] [--to DAY] [--status S] "
                             "[--tz Z] [--limit N] [--after POS] [--json]\n"
                             "       vendctl orders show ID [--json]\n"
                             "       vendctl orders refund ID --reason WHY [--amount A] [--key K] [--json]")
    o.add_argument("words", nargs="*", metavar="show|refund ID")
    o.add_argument("--machine")
    o.add_argument("--customer", help="the customer id, or the phone number with its +")
    o.add_argument("--from", dest="start", help="first local day, YYYY-MM-DD")
    o.add_argument("--to", dest="end", help="last local day (included), YYYY-MM-DD")
    o.add_argument("--status", help="only orders in this state (succeeded, failed, declined...)")
    o.add_argument("--tz", help="the zone whose days count, like Asia/Shanghai (default UTC)")
    o.add_argument("--limit", default="50", help="orders per page, 1-200")
    o.add_argument("--after", help="where the previous page ended (printed under it)")
    o.add_argument("--reason", help="refund: why, kept in the audit trail")
    o.add_argument("--amount", help="refund: how much, as written in the order's currency; default all that is left")
    o.add_argument("--key", help="refund: its idempotency key (default: a new one, printed so a retry can reuse it)")
    o.add_argument("--json", action="store_true")
    c = sub.add_parser("customers", help="customers by name or phone; 'customers show C'; 'customers block C "
                       "--reason WHY', 'customers unblock C' (administrators)",
                       usage="vendctl customers [--search TEXT] [--limit N] [--after ID] [--json]\n"
                             "       vendctl customers show|block|unblock CUSTOMER [--reason WHY] [--json]")
    c.add_argument("words", nargs="*", metavar="show|block|unblock CUSTOMER")
    c.add_argument("--search", default="", help="part of the name or phone number")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--after", help="where the previous page ended (printed under it)")
    c.add_argument("--reason", help="block: why, kept in the audit trail")
    c.add_argument("--json", action="store_true")


def _print(r) -> None:
    print(json.dumps(r, indent=2, ensure_ascii=False))


def refund(args, client, error) -> None:
    """``vendctl refund ID`` and ``vendctl orders refund ID``: a refund with a reason, under a key."""
    key = args.key or "cli-" + secrets.token_urlsafe(12)
    body = {"reason": args.reason, "key": key, **({"amount": args.amount} if args.amount else {})}
    r = client.call("POST", f"/api/v1/orders/{quote(args.order, safe='')}/refund", body)
    if args.json:
        _print(r)
        return
    amount, currency = money(r["amount"], r["currency"]), r["currency"]
    done = {"succeeded": f"refunded {amount}", "pending": f"refund of {amount} sent to {r['provider']}, not "
            "confirmed yet", "failed": f"refund of {amount} REFUSED by {r['provider']}"}[r["status"]]
    if not r["created"]:
        done = f"this refund was asked before (key {key}): {done}; nothing more moved"
    print(f"order {r['order_id']}: {done}; refunded {money(r['refunded'], currency)} of "
          f"{money(r['captured'], currency)} captured (key {key})")
    if r["status"] == "failed":
        raise error(f"the provider refused the refund of order {r['order_id']}")


def orders(args, client, error) -> None:
    words = args.words
    if words and words[0] == "refund":
        if len(words) != 2 or not args.reason:
            raise error("vendctl orders refund ID --reason WHY [--amount 1.50]")
        args.order = words[1]
        refund(args, client, error)
        return
    if words and words[0] == "show":
        if len(words) != 2:
            raise error("vendctl orders show ID")
        r = client.call("GET", f"/api/v1/orders/{quote(words[1], safe='')}/details")
        if args.json:
            _print(r)
            return
        cur = r["currency"]
        product = f"{r['product']['sku']} {r['product']['name']}" if r["product"] else "?"
        print(f"order {r['id']} at {r['created_at']}: {r['status']}" + (f" ({r['reason']})" if r["reason"] else ""))
        print(f"  {product} from {r['machine_name']} slot {r['slot']}, {money(r['amount'], cur)} by {r['provider']}")
        print(f"  customer {r['customer']['id']} {r['customer']['name']} ({r['customer']['phone']})")
        print(f"  captured {money(r['captured'], cur)}, refunded {money(r['refunded'], cur)}, "
              f"{money(r['refundable'], cur)} left to refund")
        for s in r["story"]:
            s["money"] = money(s["amount"], cur)
        if r["story"]:
            print(table(r["story"], [("at", "AT (UTC)"), ("what", "WHAT"), ("money", "AMOUNT"), ("status", "RESULT"),
                                     ("reason", "REASON"), ("reference", "REFERENCE")]))
        return
    if words:
        raise error("vendctl orders [filters], vendctl orders show ID, vendctl orders refund ID --reason WHY")
    query = {k: v for k, v in (("machine", args.machine), ("customer", args.customer), ("from", args.start),
                               ("to", args.end), ("status", args.status), ("tz", args.tz),
                               ("after", args.after), ("limit", args.limit)) if v}
    r = client.call("GET", "/api/v1/orders?" + urlencode(query))
    if args.json:
        _print(r)
        return
    for o in r["orders"]:
        o["money"] = money(o["amount"], o["currency"])
    print(table(r["orders"], [("id", "ORDER"), ("created_at", "AT (UTC)"), ("machine_id", "MACHINE"),
                              ("slot", "SLOT"), ("customer_id", "CUSTOMER"), ("money", "AMOUNT"),
                              ("provider", "PAID BY"), ("status", "STATE")]) if r["orders"] else "no orders")
    if r["next"]:
        print(f"more: --after {r['next']}")


def customers(args, client, error) -> None:
    words = args.words
    if words and words[0] in ("block", "unblock"):
        if len(words) != 2 or (words[0] == "block" and not args.reason):
            raise error("vendctl customers block CUSTOMER --reason WHY, or vendctl customers unblock CUSTOMER")
        r = client.call("POST", f"/api/v1/customers/{quote(words[1], safe='')}/{words[0]}",
                        {"reason": args.reason or ""})
        if args.json:
            _print(r)
            return
        state = f"blocked ({r['blocked_reason']})" if r["blocked"] else "may buy"
        print(f"customer {r['id']} {r['name']}: {state}" + ("" if r["changed"] else " (it was already)"))
        return
    if words and words[0] == "show":
        if len(words) != 2:
            raise error("vendctl customers show CUSTOMER")
        r = client.call("GET", f"/api/v1/customers/{quote(words[1], safe='')}")
        if args.json:
            _print(r)
            return
        m = r["mandate"]
        print(f"customer {r['id']} {r['name']} ({r['phone']}), pays by {r['payment_method']}"
              + (f", mandate {m['status']}" if m else "") + f"; wallet {money(r['balance'], r['currency'])}")
        print(f"BLOCKED since {r['blocked_at']}: {r['blocked_reason']}" if r["blocked"] else "may buy")
        for o in r["orders"]:
            o["money"] = money(o["amount"], o["currency"])
        print(table(r["orders"], [("id", "ORDER"), ("created_at", "AT (UTC)"), ("machine_id", "MACHINE"),
                                  ("money", "AMOUNT"), ("status", "STATE")]) if r["orders"] else "no orders")
        return
    if words:
        raise error("vendctl customers [--search TEXT], vendctl customers show|block|unblock CUSTOMER")
    query = {"q": args.search, "limit": args.limit, **({"after": args.after} if args.after else {})}
    r = client.call("GET", "/api/v1/customers?" + urlencode(query))
    if args.json:
        _print(r)
        return
    for c in r["customers"]:
        c["state"] = "BLOCKED" if c["blocked"] else ""
    print(table(r["customers"], [("id", "ID"), ("name", "NAME"), ("phone", "PHONE"),
                                 ("payment_method", "PAYS BY"), ("state", "")]) if r["customers"] else "no customers")
    if r["next"]:
        print(f"more: --after {r['next']}")


def whole(client, path: str, query: dict, rows: str, error) -> dict:
    """A paged report in full: every page's ``rows`` in order, following each ``next`` (the API's page is 500
    rows; its totals are the whole report's already), answered as one report whose ``next`` is null."""
    r = client.call("GET", path + ("?" + urlencode(query) if query else ""))
    seen = set()
    while r.get("next") is not None:  # an older cloud answers no next: one page is all
        if r["next"] in seen:
            raise error(f"{path}: the cloud gave the same next twice ({r['next']}); the report is not whole")
        seen.add(r["next"])
        more = client.call("GET", path + "?" + urlencode({**query, "after": r["next"]}))
        r = {**more, rows: r[rows] + more[rows]}
    return {**r, "next": None}


def run(args, client, error) -> None:
    """Carry out ``vendctl report|orders|customers ...`` through the cloud's API."""
    if args.command == "orders":
        orders(args, client, error)
        return
    if args.command == "customers":
        customers(args, client, error)
        return
    filters = {k: getattr(args, k) for k in ("machine", "location", "product") if getattr(args, k)}
    if args.report == "stock":
        r = whole(client, "/api/v1/reports/stock", filters, "slots", error)
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
    r = whole(client, "/api/v1/reports/sales", query, "rows", error)
    if args.json:
        print(json.dumps(r, indent=2, ensure_ascii=False))
        return
    for row in r["rows"]:
        for field in ("amount", "refunds", "net"):
            row[f"{field}_money"] = money(row[field], row["currency"])
        row["label"] = f"{row['key']:02d}:00" if args.by == "hour" else (
            f"{row['key']} {row['name']}" if args.by in ("machine", "location", "product") else row["key"])
    print(f"sales by {r['by']}, {r['from']} to {r['to']} (exclusive), {r['tz']}"
          + "".join(f", {k} {v}" for k, v in r["filters"].items()))
    print(table(r["rows"], [("label", KEY_TITLES[r["by"]]), ("currency", "CURRENCY"), ("count", "SALES"),
                            ("amount_money", "GROSS"), ("refund_count", "REFUNDS"), ("refunds_money", "REFUNDED"),
                            ("net_money", "NET")]) if r["rows"] else "no sales")
    for t in r["totals"]:
        c = t["currency"]
        print(f"total: net {money(t['net'], c)} ({t['count']} sales, {money(t['amount'], c)} gross, "
              f"{t['refund_count']} refunds, {money(t['refunds'], c)} refunded)")
    if not r["exact"]:
        print("note: this zone is not a whole number of hours from UTC; the hour that holds local midnight "
              "is counted whole in the day where it starts")
