"""``vendctl products``, ``purchase-orders``, ``stock`` and ``pick-list``: the stock module's commands, over
the HTTP API like the rest of vendctl (no database, no cloud extras needed on the manager's laptop)."""

from __future__ import annotations

import csv
import json
import secrets
import sys
from urllib.parse import quote, urlencode

from cloud.core.money import format_money, parse_amount

COMMANDS = ("products", "purchase-orders", "stock", "pick-list", "routes", "tech")
DAY_NAMES = dict(zip("1234567", ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")))
# The cloud's limit on a picture (cloud/catalog/pictures.py): checked here too, so a big file is refused before it is sent.
PICTURE_MAX_BYTES = 512 * 1024


def add_route_parsers(sub) -> None:
    r = sub.add_parser("routes", help="technicians' routes: machines in visiting order, the days driven")
    r.add_argument("--json", action="store_true")
    rsub = r.add_subparsers(dest="action")
    add = rsub.add_parser("add", help="a new route")
    add.add_argument("name")
    add.add_argument("machines", nargs="+", help="machine ids in visiting order")
    add.add_argument("--days", default="1234567", help="days driven, 1 Monday .. 7 Sunday: 135 (default: every day)")
    add.add_argument("--json", action="store_true")
    edit = rsub.add_parser("edit", help="rename a route, give its machines anew (in order) or its days")
    edit.add_argument("id", type=int)
    edit.add_argument("--name")
    edit.add_argument("--machines", help="machine ids in visiting order, comma-separated: m1,m3,m2")
    edit.add_argument("--days")
    edit.add_argument("--json", action="store_true")
    shw = rsub.add_parser("show", help="one route; with --day (or no id) the routes driven that day")
    shw.add_argument("id", type=int, nargs="?")
    shw.add_argument("--day", default="", help="a date like 2026-12-07 (default today, UTC)")
    shw.add_argument("--json", action="store_true")


def days_text(weekdays: str) -> str:
    return "every day" if weekdays == "1234567" else " ".join(DAY_NAMES[d] for d in weekdays)


def routes(args, client, error, table, show) -> None:
    """``vendctl routes`` and its actions."""
    if args.action == "add":
        r = client.call("POST", "/api/v1/routes", {"name": args.name, "machines": args.machines, "weekdays": args.days})
        show(r, f"route {r['id']} {r['name']!r} added: {' → '.join(r['machines'])} ({days_text(r['weekdays'])})")
    elif args.action == "edit":
        body = {"name": args.name, "weekdays": args.days,
                "machines": [m.strip() for m in args.machines.split(",") if m.strip()] if args.machines else None}
        body = {k: v for k, v in body.items() if v is not None}
        if not body:
            raise error("nothing to change: give --name, --machines or --days")
        r = client.call("PUT", f"/api/v1/routes/{args.id}", body)
        show(r, f"route {r['id']} {r['name']!r}: " + (f"changed {', '.join(r['changed'])}" if r["changed"]
                                                        else "unchanged"))
    elif args.action == "show" and args.id is not None and not args.day:
        r = client.call("GET", f"/api/v1/routes/{args.id}")
        show(r, f"route {r['id']} {r['name']!r} ({days_text(r['weekdays'])}):\n" +
             "\n".join(f"  {i}. {m}" for i, m in enumerate(r["machines"], 1)))
    elif args.action == "show":
        found = client.call("GET", "/api/v1/routes/today" + (f"?{urlencode({'day': args.day})}" if args.day else ""))
        if args.id is not None:
            found = [r for r in found if r["id"] == args.id]
        lines = []
        for r in found:
            lines.append(f"route {r['id']} {r['name']!r} on {r['day']}:")
            lines += [f"  {s['position']}. {s['machine_id']} {s['name']}" + (" (retired)" if s["retired"] else "")
                      for s in r["stops"]]
        show(found, "\n".join(lines) or "no route is driven that day")
    else:
        rows = client.call("GET", "/api/v1/routes")
        for r in rows:
            r["stops"], r["days"] = " → ".join(r["machines"]), days_text(r["weekdays"])
        show(rows, table(rows, [("id", "ID"), ("name", "NAME"), ("days", "DAYS"), ("stops", "MACHINES")]))


def add_tech_parsers(sub) -> None:
    t = sub.add_parser("tech", help="the technician's day: today's route with what to load, loaded, restocked")
    t.add_argument("--json", action="store_true")
    tsub = t.add_subparsers(dest="action")
    today = tsub.add_parser("today", help="the day's routes: each machine with what to load and whether it is loaded")
    today.add_argument("--day", default="", help="a date like 2026-12-07 (default today, UTC)")
    today.add_argument("--json", action="store_true")
    loaded = tsub.add_parser("loaded", help="say a machine's load for today is in the van (once a day)")
    loaded.add_argument("machine")
    loaded.add_argument("--key", help="idempotency key: the one printed by a try that may not have arrived")
    loaded.add_argument("--json", action="store_true")
    restocked = tsub.add_parser("restocked", help="units put in each slot, like A1=8 A2=6; refused while the "
                                "machine's service door is shut or the machine offline")
    restocked.add_argument("machine")
    restocked.add_argument("counts", nargs="+", help="SLOT=UNITS")
    restocked.add_argument("--key", help="idempotency key: the one printed by a try that may not have arrived")
    restocked.add_argument("--json", action="store_true")
    door = tsub.add_parser("door", help="the cloud's last word on a machine's service door")
    door.add_argument("machine")
    door.add_argument("--json", action="store_true")


def tech(args, client, error, show) -> None:
    """``vendctl tech`` and its actions."""
    key = getattr(args, "key", None) or f"cli-{secrets.token_urlsafe(12)}"
    if args.action == "loaded":
        print(f"key {key}", file=sys.stderr)
        r = client.call("POST", f"/api/v1/machines/{quote(args.machine, safe='')}/loaded", {"key": key})
        show(r, f"{r['machine_id']} loaded for {r['day']} by {r['loaded_by']} at {r['loaded_at']}")
    elif args.action == "restocked":
        counts = {}
        for item in args.counts:
            slot, _, n = item.partition("=")
            if not slot or not n.isdigit():
                raise error(f"{item!r}: give SLOT=UNITS, like A1=8")
            counts[slot.strip()] = int(n)
        print(f"key {key}", file=sys.stderr)
        r = client.call("POST", f"/api/v1/machines/{quote(args.machine, safe='')}/restocked",
                        {"key": key, "counts": counts})
        show(r, f"restock of {r['machine_id']} recorded by {r['reported_by']}: " +
             ", ".join(f"{s} {n}" for s, n in r["counts"].items()))
    elif args.action == "door":
        r = client.call("GET", f"/api/v1/machines/{quote(args.machine, safe='')}/door")
        show(r, f"{r['machine_id']}: service door {r['door']}" + (f" since {r['since']}" if r["since"] else ""))
    else:
        day = getattr(args, "day", "")
        found = client.call("GET", "/api/v1/tech/today" + (f"?{urlencode({'day': day})}" if day else ""))
        lines = []
        for r in found:
            lines.append(f"route {r['id']} {r['name']!r} on {r['day']}:")
            for s in r["stops"]:
                done = f" (loaded by {s['loaded']['loaded_by']})" if s["loaded"] else ""
                lines.append(f"  {s['position']}. {s['machine_id']} {s['name']}{done}")
                lines += [f"     {line['slot']} {line['name']} x{line['pick']}" +
                          (f" ({line['short']} short)" if line["short"] else "")
                          for line in s["lines"] if line["pick"] or line["short"]]
        show(found, "\n".join(lines) or "no route is driven that day")


def add_parsers(sub) -> None:
    add_route_parsers(sub)
    add_tech_parsers(sub)
    p = sub.add_parser("products", help="the product catalogue: list, add, import a CSV, upload a "
                       "picture")
    p.add_argument("--search", help="part of a SKU or name, or a whole barcode")
    p.add_argument("--json", action="store_true")
    psub = p.add_subparsers(dest="action")
    add = psub.add_parser("add", help="a new product")
    add.add_argument("sku")
    add.add_argument("--name", required=True)
    add.add_argument("--cost", required=True, help="unit cost, like 1.20")
    add.add_argument("--price", required=True, help="list price, like 3.50")
    add.add_argument("--currency", default="CNY")
    add.add_argument("--barcode", help="EAN-13 or UPC-A")
    add.add_argument("--shelf-life", type=int, help="days from receipt to expiry")
    add.add_argument("--reorder-level", type=int, default=0, help="warehouse units under which to reorder")
    name_options(add)
    add.add_argument("--json", action="store_true")
    edit = psub.add_parser("edit", help="change a product: only the fields given change")
    edit.add_argument("sku")
    edit.add_argument("--name", help="the name in the default language (English)")
    edit.add_argument("--cost", help="unit cost, like 1.20")
    edit.add_argument("--price", help="list price, like 3.50")
    edit.add_argument("--currency", help="the currency of cost and price (default: the product's)")
    edit.add_argument("--barcode", help="EAN-13 or UPC-A; '' removes it")
    edit.add_argument("--shelf-life", type=int, help="days from receipt to expiry")
    edit.add_argument("--reorder-level", type=int, help="warehouse units under which to reorder")
    name_options(edit)
    edit.add_argument("--json", action="store_true")
    imp = psub.add_parser("import", help="add or change products from a CSV with the columns sku, name, cost, "
                          "price, currency, and optionally barcode, shelf_life_days, reorder_level and "
                          "name_LANG (name_zh-CN): all rows or none; the same file twice changes nothing")
    imp.add_argument("file")
    imp.add_argument("--json", action="store_true")
    exp = psub.add_parser("export", help="the catalogue as the CSV import reads (to a file, or standard output)")
    exp.add_argument("file", nargs="?", help="where to write it (default: standard output)")
    pic = psub.add_parser("picture", help="upload a product's picture for the customers' menu: a PNG, JPEG or "
                          "WebP file of 512 KB at most")
    pic.add_argument("sku")
    pic.add_argument("file")
    pic.add_argument("--json", action="store_true")

    po = sub.add_parser("purchase-orders", help="purchase orders: list, create, send, receive, cancel, confirm")
    po.add_argument("--status", help="draft, sent, partly_received, received or cancelled")
    po.add_argument("--json", action="store_true")
    posub = po.add_subparsers(dest="action")
    create = posub.add_parser("create", help="a draft order to a supplier")
    create.add_argument("--supplier", type=int, required=True, help="the supplier's id")
    create.add_argument("--line", action="append", required=True, metavar="SKU=QTY[@COST]",
                        help="a line, like cola=24 or cola=24@1.15 (cost defaults to the product's)")
    create.add_argument("--currency", help="default: the products' currency")
    create.add_argument("--expected", help="delivery date, YYYY-MM-DD")
    create.add_argument("--note", default="")
    create.add_argument("--json", action="store_true")
    for action, text in (("send", "send a draft: its lines are fixed from then on"),
                         ("confirm", "record the supplier's confirmation")):
        a = posub.add_parser(action, help=text)
        a.add_argument("id", type=int)
        if action == "confirm":
            a.add_argument("--expected", help="the delivery date the supplier promises")
        a.add_argument("--json", action="store_true")
    receive = posub.add_parser("receive", help="goods received into the warehouse")
    receive.add_argument("id", type=int)
    receive.add_argument("--key", required=True, help="the delivery note's number: receiving again under the "
                         "same key changes nothing")
    receive.add_argument("--line", action="append", required=True, metavar="SKU=QTY[:YYYY-MM-DD]",
                         help="units received, like cola=10, with their expiry if it is not today plus the shelf life")
    receive.add_argument("--allow-over", action="store_true", help="accept more than is still due")
    receive.add_argument("--json", action="store_true")
    cancel = posub.add_parser("cancel", help="cancel an order (one partly received is closed short)")
    cancel.add_argument("id", type=int)
    cancel.add_argument("--reason", required=True)
    cancel.add_argument("--json", action="store_true")

    s = sub.add_parser("stock", help="the warehouse: quantity, value at moving average cost, lots")
    s.add_argument("--json", action="store_true")

    pl = sub.add_parser("pick-list", help="what to load for a route or a machine (the page to print on A4: "
                        "the same path in a browser, with ?format=html, and &lang=zh-CN for it in "
                        "Chinese)")
    which = pl.add_mutually_exclusive_group(required=True)
    which.add_argument("--route", type=int)
    which.add_argument("--machine")
    pl.add_argument("--json", action="store_true")


def minor(text: str, currency: str, what: str, error) -> int:
    """'1.20' -> 120; '0' is allowed (a free sample costs nothing)."""
    if text is not None and text.strip() in ("0", "0.0", "0.00"):
        return 0
    try:
        return parse_amount(text, currency)
    except ValueError as e:
        raise error(f"{what}: {e}") from None


def run(args, client, error, table) -> None:
    """Carry out one of ``COMMANDS``; ``error`` is vendctl's CliError, ``table`` its table printer."""

    def show(result, text: str) -> None:
        print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else text)

    if args.command == "products":
        products(args, client, error, table, show)
    elif args.command == "routes":
        routes(args, client, error, table, show)
    elif args.command == "tech":
        tech(args, client, error, show)
    elif args.command == "purchase-orders":
        purchase_orders(args, client, error, table, show)
    elif args.command == "stock":
        result = client.call("GET", "/api/v1/stock")
        rows = []
        for r in result["warehouse"]:
            lots = r["lots"]
            rows.append({**r, "avg": format_money(r["average_cost"], r["currency"]) if r["quantity"] else "",
                         "worth": format_money(r["value"], r["currency"]), "lots_n": len(lots),
                         "soonest": next((lot["expires_on"] for lot in lots if lot["expires_on"]), ""),
                         "reorder": "REORDER" if r["below_reorder_level"] else ""})
        text = table(rows, [("sku", "SKU"), ("name", "NAME"), ("quantity", "QTY"), ("avg", "AVG COST"),
                            ("worth", "VALUE"), ("lots_n", "LOTS"), ("soonest", "FIRST EXPIRY"), ("reorder", "")])
        text += "".join(f"\ntotal: {format_money(t['value'], t['currency'])}" for t in result["totals"])
        show(result, text)
    elif args.command == "pick-list":
        path = f"/api/v1/routes/{args.route}/pick-list" if args.route is not None else \
            f"/api/v1/machines/{quote(args.machine, safe='')}/pick-list"
        result = client.call("GET", path)
        rows = [{"machine": stop["machine_id"], **line,
                 "lots_text": ", ".join(f"{lot['lot_id']}x{lot['quantity']}" for lot in line["lots"])}
                for stop in result["machines"] for line in stop["lines"] if line["need"]]
        text = table(rows, [("machine", "MACHINE"), ("slot", "SLOT"), ("name", "PRODUCT"), ("count", "IN SLOT"),
                            ("par", "PAR"), ("pick", "LOAD"), ("short", "SHORT"), ("lots_text", "LOTS")])
        text += f"\n{result['pick']} units to pick" + (f", {result['short']} short in the warehouse"
                                                      if result["short"] else "")
        show(result, text)


def name_options(parser) -> None:
    parser.add_argument("--name-zh", help="the name in Chinese (zh-CN); '' removes it")
    parser.add_argument("--name-in", action="append", default=[], metavar="LANG=NAME",
                        help="the name in another language the cloud speaks, like zh-CN=可乐; '' removes it")


def names_given(args, error) -> dict:
    names = {}
    for spec in args.name_in:
        lang, eq, name = spec.partition("=")
        if not eq or not lang:
            raise error(f"--name-in {spec}: write it as LANG=NAME, like zh-CN=可乐")
        names[lang] = name
    if args.name_zh is not None:
        names["zh-CN"] = args.name_zh
    return names


def find_product(client, sku: str, error) -> dict:
    found = [p for p in client.call("GET", "/api/v1/products?" + urlencode({"search": sku})) if p["sku"] == sku]
    if not found:
        raise error(f"no product with the SKU {sku!r}")
    return found[0]


def product_text(r: dict) -> str:
    money = (lambda v: format_money(v, r["currency"])) if r["currency"] else (lambda v: "not set")  # noqa: E731
    names = "".join(f", {lang}: {name}" for lang, name in sorted(r.get("names", {}).items()))
    return f"product {r['id']} {r['sku']!r}: {r['name']}{names}; cost {money(r['cost'])}, price {money(r['price'])}"


def edit_product(args, client, error, show) -> None:
    product = find_product(client, args.sku, error)
    currency = args.currency or product["currency"] or "CNY"
    body = {"names": names_given(args, error)} if (args.name_in or args.name_zh is not None) else {}
    for key, value in (("name", args.name), ("shelf_life_days", args.shelf_life),
                       ("reorder_level", args.reorder_level)):
        if value is not None:
            body[key] = value
    if args.barcode is not None:
        body["barcode"] = args.barcode.strip() or None
    if args.currency:
        body["currency"] = args.currency
    for key in ("cost", "price"):
        if getattr(args, key) is not None:
            body[key] = minor(getattr(args, key), currency, f"--{key}", error)
    if not body:
        raise error("nothing to change: give --name, --name-zh, --cost, --price, --currency, --barcode, "
                    "--shelf-life or --reorder-level")
    r = client.call("PATCH", f"/api/v1/products/{product['id']}", body)
    show(r, product_text(r) + (f" (changed: {', '.join(r['changed'])})" if r["changed"] else " (nothing changed)"))


def products(args, client, error, table, show) -> None:
    if args.action == "add":
        body = {"sku": args.sku, "name": args.name, "currency": args.currency,
                "cost": minor(args.cost, args.currency, "--cost", error),
                "price": minor(args.price, args.currency, "--price", error),
                "barcode": args.barcode, "shelf_life_days": args.shelf_life, "reorder_level": args.reorder_level,
                "names": names_given(args, error)}
        r = client.call("POST", "/api/v1/products", body)
        show(r, product_text(r) + " added")
        return
    if args.action == "edit":
        edit_product(args, client, error, show)
        return
    if args.action == "import":
        import_products(args, client, error, show)
        return
    if args.action == "export":
        text = client.fetch_text("/api/v1/products/export")
        if args.file:
            with open(args.file, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return
    if args.action == "picture":
        upload_picture(args, client, error, show)
        return
    rows = client.call("GET", "/api/v1/products" + (f"?{urlencode({'search': args.search})}" if args.search else ""))
    for r in rows:
        money = (lambda v: format_money(v, r["currency"])) if r["currency"] else (lambda v: "")  # noqa: E731
        r.update(cost_text=money(r["cost"]), price_text=money(r["price"]),
                 life=f"{r['shelf_life_days']} d" if r["shelf_life_days"] else "")
    show(rows, table(rows, [("id", "ID"), ("sku", "SKU"), ("name", "NAME"), ("barcode", "BARCODE"),
                            ("cost_text", "COST"), ("price_text", "PRICE"), ("life", "SHELF LIFE"),
                            ("reorder_level", "REORDER AT")]))


def picture_type(data: bytes) -> str:
    """The media type a picture's first bytes say (as the cloud judges it); anything else goes as it is, for
    the cloud to refuse with its own reason."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return "application/octet-stream"


def upload_picture(args, client, error, show) -> None:
    try:
        with open(args.file, "rb") as f:
            data = f.read(PICTURE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{args.file}: no such file") from None
    except OSError as e:
        raise error(f"{args.file}: cannot read it: {e.strerror}") from None
    if len(data) > PICTURE_MAX_BYTES:
        raise error(f"{args.file}: a picture is {PICTURE_MAX_BYTES // 1024} KB at most")
    r = client.send("PUT", f"/api/v1/products/{quote(args.sku, safe='')}/picture", data, picture_type(data))
    show(r, f"picture of {r['sku']!r} uploaded: {r['type']}, {r['bytes']} bytes, shown at {r['url']}")


def import_products(args, client, error, show) -> None:
    """The file sent as it is: the cloud checks every row and imports all of them or none."""
    try:
        with open(args.file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise error(f"cannot read {args.file}: {e.strerror}") from None
    r = client.send("POST", "/api/v1/products/import", data, "text/csv")
    show(r, f"{r['products']} products: {r['added']} added, {r['updated']} updated, {r['unchanged']} unchanged")


def purchase_orders(args, client, error, table, show) -> None:
    if args.action == "create":
        catalogue = {p["sku"]: p for p in client.call("GET", "/api/v1/products")}
        lines, currencies = [], set()
        for spec in args.line:
            sku, _, rest = spec.partition("=")
            qty, _, cost = rest.partition("@")
            if sku not in catalogue:
                raise error(f"--line {spec}: no product with the SKU {sku!r}")
            if not qty.isdigit():
                raise error(f"--line {spec}: write it as SKU=QTY or SKU=QTY@COST, like cola=24@1.15")
            product = catalogue[sku]
            currencies.add(product["currency"])
            line = {"product_id": product["id"], "quantity": int(qty)}
            if cost:
                line["unit_cost"] = minor(cost, args.currency or product["currency"] or "CNY", f"--line {spec}", error)
            lines.append(line)
        currency = args.currency or (currencies.pop() if len(currencies) == 1 else None)
        if currency is None:
            raise error("the products are costed in several currencies: give --currency")
        body = {"supplier_id": args.supplier, "currency": currency, "lines": lines, "note": args.note}
        if args.expected:
            body["expected_on"] = args.expected
        r = client.call("POST", "/api/v1/purchase-orders", body)
        show(r, f"purchase order {r['id']} ({r['status']}) to {r['supplier']}: {len(r['lines'])} lines, "
                f"{format_money(r['total'], r['currency'])}")
    elif args.action in ("send", "confirm"):
        body = {"expected_on": args.expected} if args.action == "confirm" and args.expected else None
        r = client.call("POST", f"/api/v1/purchase-orders/{args.id}/{args.action}", body)
        show(r, f"purchase order {r['id']}: {r['status'].replace('_', ' ')}"
                + (f", confirmed for {r['expected_on'] or 'no date'}" if args.action == "confirm" else ""))
    elif args.action == "receive":
        po = client.call("GET", f"/api/v1/purchase-orders/{args.id}")
        by_sku = {line["sku"]: line for line in po["lines"]}
        lines = []
        for spec in args.line:
            sku, _, rest = spec.partition("=")
            qty, _, expiry = rest.partition(":")
            if sku not in by_sku:
                raise error(f"--line {spec}: purchase order {args.id} has no line for {sku!r}")
            if not qty.isdigit():
                raise error(f"--line {spec}: write it as SKU=QTY or SKU=QTY:YYYY-MM-DD")
            lines.append({"line_id": by_sku[sku]["line_id"], "quantity": int(qty),
                          **({"expires_on": expiry} if expiry else {})})
        r = client.call("POST", f"/api/v1/purchase-orders/{args.id}/receive",
                        {"key": args.key, "lines": lines, "allow_over": args.allow_over})
        status = r["purchase_order"]["status"].replace("_", " ")
        text = (f"purchase order {args.id}: {status}; " +
                (f"{sum(lot['quantity'] for lot in r['lots'])} units in {len(r['lots'])} lots" if r["applied"]
                 else "already received under this key: nothing changed"))
        show(r, text)
    elif args.action == "cancel":
        r = client.call("POST", f"/api/v1/purchase-orders/{args.id}/cancel", {"reason": args.reason})
        show(r, f"purchase order {r['id']}: cancelled")
    else:
        rows = client.call("GET", "/api/v1/purchase-orders" + (f"?{urlencode({'status': args.status})}"
                                                               if args.status else ""))
        for r in rows:
            got, ordered = (sum(line[k] for line in r["lines"]) for k in ("received", "quantity"))
            r.update(total_text=format_money(r["total"], r["currency"]), got=f"{got}/{ordered}",
                     confirmed="yes" if r["confirmed_at"] else "")
        show(rows, table(rows, [("id", "ID"), ("supplier", "SUPPLIER"), ("status", "STATUS"),
                                ("expected_on", "EXPECTED"), ("confirmed", "CONFIRMED"), ("total_text", "TOTAL"),
                                ("got", "RECEIVED")]))
