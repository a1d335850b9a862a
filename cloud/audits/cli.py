"""``vendctl dex``: read DEX files on the desk (``show``, no cloud needed), import them into the cloud
(``import``), or write a machine's own audit from its ledger file (``write``, on the machine)."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from urllib.parse import urlencode

import dex
from cloud.core.client import money, table
from controller.audit import dex_audit
from controller.ledger import Ledger

LOCAL = ("show", "write")  # the actions that need no cloud


def add_parsers(sub) -> None:
    d = sub.add_parser("dex", help="EVA-DTS (DEX) audits: show files, import them into the cloud, write one")
    dsub = d.add_subparsers(dest="action", required=True)
    show = dsub.add_parser("show", help="read DEX files here, no cloud: identity, totals, products, events, CRC")
    show.add_argument("files", nargs="+", metavar="FILE")
    show.add_argument("--json", action="store_true")
    imp = dsub.add_parser("import", help="import DEX files into the cloud: each read against the one before it")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--machine", help="the machine the files are of (else found by the file's ID101 serial)")
    imp.add_argument("--new-machine", action="store_true",
                     help="add the machine to the fleet if it is not there: a legacy machine known from its audits")
    imp.add_argument("--currency", help="when the file has no ID4 currency and the machine no priced slots")
    imp.add_argument("--json", action="store_true")
    w = dsub.add_parser("write", help="a machine's DEX audit from its ledger file (on the machine)")
    w.add_argument("--ledger", required=True, help="the ledger database, e.g. /var/lib/vend/ledger.db")
    w.add_argument("--machine", required=True, help="the machine id, written as its ID1 serial")
    w.add_argument("--out", help="write to this file (default: standard output)")


def _money(value, audit: dex.Audit) -> str:
    if value is None:
        return "-"
    if audit.currency:
        return money(value, audit.currency)
    return str(value)


def describe(audit: dex.Audit) -> str:
    """What a person wants to see of one file."""
    i = audit.identity
    crc = {"matched": f"G85 CRC {audit.crc_stated} matched", "mismatch":
           f"G85 CRC MISMATCH: the file says {audit.crc_stated}, its content gives {audit.crc_computed}",
           "absent": "no G85 CRC in the file"}[audit.crc]
    out = [f"{audit.name}: {crc}",
           f"machine: serial {i.serial or '-'}, model {i.model or '-'}, asset {i.asset or '-'}, location "
           f"{i.location or '-'}; board {i.board_serial or '-'} {i.board_model} {i.board_software}".rstrip(),
           f"read at: {audit.read_at.isoformat(' ') if audit.read_at else '-'} (the machine's clock); currency "
           f"{audit.currency or '?'}, {audit.decimals if audit.decimals is not None else '?'} decimals"]
    p = audit.paid
    out.append(f"paid vends (VA1): {p.count_init} for {_money(p.value_init, audit)} since initialisation, "
               f"{p.count_reset} for {_money(p.value_reset, audit)} since reset")
    for label, c in (("cash (CA2)", audit.cash), ("cashless 1 (DA2)", audit.cashless),
                     ("cashless 2 (DB2)", audit.cashless2), ("tokens (TA2)", audit.token)):
        if c is not None:
            out.append(f"{label}: {c.count_init} for {_money(c.value_init, audit)} since initialisation")
    if audit.products:
        rows = [{"sel": pr.selection, "name": pr.name, "price": _money(pr.price, audit), "n": pr.sold.count_init,
                 "v": _money(pr.sold.value_init, audit),
                 "pay": " ".join(f"{x.device}:{x.sold.count_init}" for x in pr.by_payment)} for pr in audit.products]
        out.append(table(rows, [("sel", "PRODUCT"), ("name", "NAME"), ("price", "PRICE"), ("n", "VENDS"),
                                ("v", "VALUE"), ("pay", "BY PAYMENT")]))
    for e in audit.events:
        out.append(f"event {e.tag} {e.code} {e.date} {e.time}".rstrip())
    for c in audit.checks():
        out.append(f"check {'ok  ' if c.ok else 'DIFF'} {c.name}: {c.stated} against {c.summed}")
    if audit.unknown:
        out.append("kept, not interpreted: " + " ".join(sorted({s.tag for s in audit.unknown})))
    out += [f"note: {n}" for n in audit.notes]
    out += [f"PROBLEM {pr}" for pr in audit.problems]
    return "\n".join(out)


def run_local(args) -> int:
    """``dex show`` and ``dex write``: no cloud, no token."""
    if args.action == "write":
        ledger = Ledger(args.ledger) if os.path.exists(args.ledger) else None
        if ledger is None:
            print(f"vendctl: no ledger at {args.ledger}", file=sys.stderr)
            return 1
        try:
            text = dex_audit(ledger, args.machine, datetime.now(timezone.utc))
        finally:
            ledger.close()
        if args.out:
            with open(args.out, "w", newline="", encoding="ascii") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return 0
    status, shown = 0, []
    for path in args.files:
        try:
            audit = dex.read_file(path)
        except dex.DexError as e:
            print(f"vendctl: {e}", file=sys.stderr)
            status = 1
            continue
        if audit.crc == "mismatch" or audit.problems:
            status = 1
        shown.append(audit.to_json() if args.json else describe(audit))
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        print("\n\n".join(shown))
    return status


def run(args, client, error) -> None:
    """``dex import``: each file to the cloud, in the order given (a machine's reads oldest first)."""
    results = []
    for path in args.files:
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise error(f"{path}: {e.strerror}") from None
        if size > dex.MAX_BYTES:
            raise error(f"{path}: {size:,} bytes is too big for a DEX audit (at most {dex.MAX_BYTES:,})")
        with open(path, "rb") as f:
            data = f.read()
        query = {"filename": os.path.basename(path)}
        if args.machine:
            query["machine"] = args.machine
        if args.new_machine:
            query["new_machine"] = "true"
        if args.currency:
            query["currency"] = args.currency
        r = client.send("POST", "/api/v1/audits?" + urlencode(query), data, "application/octet-stream")
        results.append(r)
        if not args.json:
            said = "already imported: nothing changed" if not r["created"] else {
                "baseline": "the machine's first read: its baseline, no sales",
                "board_swap": "BOARD SWAP: a new baseline, no sales", "reset": "COUNTER RESET",
                "delta": "delta"}[r["kind"]]
            print(f"{path}: machine {r['machine_id']}, audit {r['id']}: {said}; {r['sold_count']} sales for "
                  f"{money(r['sold_value'], r['currency'])}")
            for line in filter(None, r["note"].split("\n")):
                print(f"  {line}")
    if args.json:
        print(json.dumps(results, indent=2))
