"""``vendctl locations`` and ``vendctl planogram``: the fleet's places and what each machine's slots hold;
tables for people, ``--json`` for scripts. (``vendctl alerts`` is ``cloud/alerts/cli.py``.)"""

from __future__ import annotations

from cloud.core.client import money, print_broker, table
from cloud.core.money import parse_amount

import csv
import io
import json
import sys

COMMANDS = ("locations", "planogram")
MACHINE_ACTIONS = ("move", "retire", "rename")  # of ``vendctl machines``
CSV_COLUMNS = ("slot", "sku", "price", "currency", "capacity", "par_level")
STATE_TEXT = {"applied": "applied", "pending": "PENDING: the machine has not applied it yet",
              "rejected": "REJECTED by the machine", "none": "no planogram yet"}


def add_parsers(sub) -> None:
    loc = sub.add_parser("locations", help="where machines stand: list, add, put a machine at one")
    loc.add_argument("--json", action="store_true")
    lsub = loc.add_subparsers(dest="action")
    add = lsub.add_parser("add", help="a new location")
    add.add_argument("name")
    add.add_argument("--address", default="")
    add.add_argument("--lat", type=float, help="latitude in degrees, -90 to 90 (with --lon)")
    add.add_argument("--lon", type=float, help="longitude in degrees, -180 to 180 (with --lat)")
    add.add_argument("--tz", default="UTC", help="the place's time zone, like Asia/Shanghai (default UTC)")
    add.add_argument("--name-in", action="append", default=[], metavar="LANG=NAME",
                     help="its name in another language, like zh-CN=北京南站 (again for each language)")
    add.add_argument("--json", action="store_true")
    edit = lsub.add_parser("edit", help="change a location: name, names per language, address, coordinates, "
                           "time zone")
    edit.add_argument("id", type=int)
    edit.add_argument("--name", help="its name in English (the default language)")
    edit.add_argument("--name-in", action="append", default=[], metavar="LANG=NAME",
                      help="its name in another language (LANG= with no name drops it)")
    edit.add_argument("--address")
    edit.add_argument("--lat", type=float)
    edit.add_argument("--lon", type=float)
    edit.add_argument("--no-coordinates", action="store_true", help="forget its coordinates")
    edit.add_argument("--tz", help="its time zone, like Asia/Shanghai")
    edit.add_argument("--json", action="store_true")
    shw = lsub.add_parser("show", help="one location: its names, machines, and which machine stood there when")
    shw.add_argument("id", type=int)
    shw.add_argument("--json", action="store_true")
    place = lsub.add_parser("place", help="put a machine at a location (--none: at none)")
    place.add_argument("machine")
    place.add_argument("location", nargs="?", type=int, help="the location's id")
    place.add_argument("--none", action="store_true", help="the machine stands nowhere (in the warehouse)")
    place.add_argument("--json", action="store_true")
    p = sub.add_parser("planogram", help="a machine's planogram: desired against applied version, its slots; "
                       "--set makes a new version")
    p.add_argument("machine")
    p.add_argument("--set", metavar="FILE", help="a new version from FILE.csv (columns: "
                   f"{','.join(CSV_COLUMNS)}[,cabinet]; price like 3.50) or FILE.json (the API's slots, price "
                   "in minor units)")
    p.add_argument("--note", default="", help="why, for the version list (with --set)")
    p.add_argument("--version", type=int, help="show this version instead of the newest")
    p.add_argument("--history", action="store_true", help="list every version")
    p.add_argument("--json", action="store_true")


def add_machine_parsers(msub) -> None:
    """``vendctl machines move``, ``retire`` and ``rename`` (``machines add``, ``show``, ``rotate-secret`` are in
    cloud/cli.py)."""
    mv = msub.add_parser("move", help="move a machine to another location; its history is kept, so "
                         "settlements count each sale where the machine stood")
    mv.add_argument("id")
    to = mv.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", type=int, metavar="LOCATION_ID", help="the location's id (vendctl locations)")
    to.add_argument("--warehouse", action="store_true", help="to no location")
    mv.add_argument("--json", action="store_true")
    rt = msub.add_parser("retire", help="take a machine out of service for good: its QR codes are refused; its "
                         "sales and history stay")
    rt.add_argument("id")
    rt.add_argument("--json", action="store_true")
    rn = msub.add_parser("rename", help="a machine's name, and its names in the pages' other languages (shown "
                         "on every page in the reader's language)")
    rn.add_argument("id")
    rn.add_argument("--name", help="its name in English (the default language)")
    rn.add_argument("--name-in", action="append", default=[], metavar="LANG=NAME",
                    help="its name in another language, like zh-CN=B座大堂 (LANG= with no name drops it)")
    rn.add_argument("--json", action="store_true")


def run_machines(args, client, error) -> None:
    """Carry out ``machines move``, ``retire`` or ``rename`` (``MACHINE_ACTIONS``); ``error`` (an exception
    class) says what was wrong with the command line."""
    if args.action == "move":
        r = client.call("POST", f"/api/v1/machines/{args.id}/move", {"location_id": None if args.warehouse else args.to})
        where = f"location {r['location_id']}" if r["location_id"] is not None else "the warehouse (no location)"
        text = f"machine {r['machine']} moved to {where}" if r["changed"] else f"machine {r['machine']} is at {where} already"
        print(json.dumps(r, indent=2, ensure_ascii=False) if args.json else text)
    elif args.action == "rename":
        body = {"name": args.name} if args.name is not None else {}
        if args.name_in:
            body["names"] = names_in(args.name_in, error)
        if not body:
            raise error("nothing to change: give --name or --name-in LANG=NAME")
        r = client.call("PATCH", f"/api/v1/machines/{args.id}", body)
        names = "".join(f"\n  name ({lang}): {n}" for lang, n in sorted(r["names"].items()))
        changed = f"changed {', '.join(r['changed'])}" if r["changed"] else "unchanged"
        print(json.dumps(r, indent=2, ensure_ascii=False) if args.json else f"machine {r['id']} {r['name']!r}: "
              f"{changed}{names}")
    elif args.action == "retire":
        r = client.call("POST", f"/api/v1/machines/{args.id}/retire", {})
        print(json.dumps(r, indent=2) if args.json else f"machine {r['machine']} retired at {r['retired_at']}: its QR "
              "codes and its broker login are refused from now on")
        if not args.json:
            print_broker(r)


def names_in(pairs: list[str], error) -> dict[str, str]:
    """``--name-in zh-CN=北京南站`` options as {language: name}."""
    out = {}
    for pair in pairs:
        lang, sep, name = pair.partition("=")
        if not sep or not lang.strip():
            raise error(f"--name-in {pair!r}: write it as LANG=NAME, like zh-CN=北京南站")
        out[lang.strip()] = name.strip()
    return out


def read_slots(path: str, error) -> list[dict]:
    """The slots of a planogram file, CSV or JSON; ``error`` (an exception class) names the line at fault."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror}") from None
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise error(f"{path}: not valid JSON ({e})") from None
        slots = data.get("slots") if isinstance(data, dict) else data
        if not isinstance(slots, list):
            raise error(f"{path}: expected a list of slots, or an object with \"slots\"")
        return slots
    if not path.lower().endswith(".csv"):
        raise error(f"{path}: use a .csv or a .json file")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise error(f"{path}: missing column {missing[0]!r}; the header is {','.join(CSV_COLUMNS)}[,cabinet]")
    slots = []
    for row in reader:
        where = f"{path} line {reader.line_num}"
        try:
            price = row["price"].strip()
            slot = {"slot": row["slot"].strip(), "sku": row["sku"].strip(), "currency": row["currency"].strip(),
                    "price": 0 if price in ("0", "0.0", "0.00") else parse_amount(price, row["currency"].strip()),
                    "capacity": int(row["capacity"]), "par_level": int(row["par_level"])}
            if (row.get("cabinet") or "").strip():
                slot["cabinet"] = int(row["cabinet"])
        except (ValueError, AttributeError) as e:
            raise error(f"{where}: {e}") from None
        slots.append(slot)
    return slots


def run(args, client, error) -> None:
    """Carry out one of COMMANDS through the cloud's API."""
    def show(result, text: str) -> None:
        print(json.dumps(result, indent=2) if args.json else text)

    if args.command == "locations" and args.action == "add":
        body = {"name": args.name, "address": args.address, "tz": args.tz, "names": names_in(args.name_in, error)}
        if args.lat is not None or args.lon is not None:
            body.update(latitude=args.lat, longitude=args.lon)
        r = client.call("POST", "/api/v1/locations", body)
        show(r, f"location {r['id']} {r['name']!r} added")
    elif args.command == "locations" and args.action == "edit":
        body = {k: v for k, v in (("name", args.name), ("address", args.address), ("tz", args.tz)) if v is not None}
        if args.name_in:
            body["names"] = names_in(args.name_in, error)
        if args.no_coordinates:
            body.update(latitude=None, longitude=None)
        elif args.lat is not None or args.lon is not None:
            body.update(latitude=args.lat, longitude=args.lon)
        if not body:
            raise error("nothing to change: give --name, --name-in, --address, --lat/--lon or --tz")
        r = client.call("PATCH", f"/api/v1/locations/{args.id}", body)
        show(r, f"location {r['id']} {r['name']!r}: " + (f"changed {', '.join(r['changed'])}" if r["changed"]
                                                           else "unchanged"))
    elif args.command == "locations" and args.action == "show":
        r = client.call("GET", f"/api/v1/locations/{args.id}")
        names = "".join(f"\n  name ({lang}): {n}" for lang, n in sorted(r["names"].items()))
        where = "" if r["latitude"] is None else f"\n  at {r['latitude']:.5f}, {r['longitude']:.5f}"
        stays = table(r["history"], [("machine_id", "MACHINE"), ("from", "FROM (UTC)"), ("to", "TO (UTC)")]) \
            if r["history"] else "no machine has stood here"
        show(r, f"{r['id']}  {r['name']}{names}\n  {r['address']}{where}\n  time zone {r['tz']}\n"
                f"  machines now: {' '.join(r['machines']) or 'none'}\n{stays}")
    elif args.command == "locations" and args.action == "place":
        if (args.location is None) != args.none:
            raise error("give a location id, or --none")
        r = client.call("PUT", f"/api/v1/machines/{args.machine}/location", {"location_id": args.location})
        where = f"location {r['location_id']}" if r["location_id"] is not None else "no location"
        show(r, f"machine {r['machine']} is at {where}" + ("" if r["changed"] else " (unchanged)"))
    elif args.command == "locations":
        rows = client.call("GET", "/api/v1/locations")
        for r in rows:
            r["where"] = "" if r["latitude"] is None else f"{r['latitude']:.5f}, {r['longitude']:.5f}"
            r["at"] = " ".join(r["machines"])
        show(rows, table(rows, [("id", "ID"), ("name", "NAME"), ("address", "ADDRESS"), ("where", "LAT, LON"),
                                ("at", "MACHINES")]))
    elif args.command == "planogram" and args.history:
        rows = client.call("GET", f"/api/v1/machines/{args.machine}/planogram/versions")
        show(rows, table(rows, [("version", "VERSION"), ("created_at", "MADE (UTC)"), ("created_by", "BY"),
                                ("slots", "SLOTS"), ("note", "NOTE")]))
    elif args.command == "planogram" and args.set:
        slots = read_slots(args.set, error)
        r = client.call("POST", f"/api/v1/machines/{args.machine}/planogram", {"slots": slots, "note": args.note})
        sent = "sent to the machine" if r["published"] else \
            "NOT sent yet (broker unreachable): it goes out when the machine next reports"
        show(r, f"machine {r['machine']}: planogram version {r['version']} made ({r['slots']} slots), {sent}")
    elif args.command == "planogram":
        query = f"?version={args.version}" if args.version is not None else ""
        r = client.call("GET", f"/api/v1/machines/{args.machine}/planogram{query}")
        head = (f"machine {r['machine']}: desired version {r['desired_version']}, applied version "
                f"{r['applied_version']}" + (f" at {r['applied_at']}" if r["applied_at"] else "")
                + f" - {STATE_TEXT[r['state']]}")
        if r["state"] == "rejected":
            head += f": {r['rejected_reason']}"
        if r["version"] != r["desired_version"]:
            head += f"\nshowing version {r['version']}"
        for s in r["slots"]:
            s["price_text"] = money(s["price"], s["currency"])
        show(r, head + "\n" + table(r["slots"], [("slot", "SLOT"), ("cabinet", "CABINET"), ("sku", "SKU"),
                                                 ("name", "PRODUCT"), ("price_text", "PRICE"),
                                                 ("capacity", "CAPACITY"), ("par_level", "PAR")]))
    else:
        print(f"vendctl: unknown command {args.command}", file=sys.stderr)


def show_machine(m: dict, as_json: bool) -> None:
    """``vendctl machines show ID``: the machine's state and its last self-test, one check a line."""
    if as_json:
        print(json.dumps(m, indent=2))
        return
    where = f", at {m['location']['name']}" if m.get("location") else ""
    print(f"{m['id']}  {m['name']}{where}")
    for lang, name in sorted(m.get("names", {}).items()):
        print(f"  name ({lang}): {name}")
    print(f"  online: {'yes' if m['online'] else 'no'}; last seen {m['last_seen'] or 'never'}; "
          f"firmware {m['firmware'] or '?'}")
    print(f"  ledger: head {m['machine_head']}, in the cloud {m['cloud_head']}")
    p = m["planogram"]
    if p["state"] != "none":
        print(f"  planogram: v{p['desired_version']} {p['state']}")
    for a in m["alerts"]:
        print(f"  alert: {a['kind']}{' ' + a['slot'] if a['slot'] else ''}: {a['detail']} (since {a['since']})")
    test = m.get("selftest")
    if test is None:
        print("  self-test: none received yet")
        return
    print(f"  self-test {'passed' if test['passed'] else 'FAILED'} (boot {test['boot']}, {test['ts']}"
          f"{'' if test['clock_synced'] else ', machine clock not yet set'}):")
    for c in test["checks"]:
        print(f"    {'✓' if c['ok'] else '✗'} {c['check']}: {c['detail']}")
