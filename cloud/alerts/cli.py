"""``vendctl alerts``: the alerts kept (list, ``ack ID``, ``resolve ID``) and the rules of who is told
(``alerts rules``: list, add, change, delete); tables for people, ``--json`` for scripts."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from cloud.core.client import table

COMMANDS = ("alerts",)
KIND_HELP = ("offline, out_of_service, vend_failures, low_stock, temperature, door_open, not_synced, late_drop, "
             "unknown_order, payment_failed")


def _rule_options(p, required: bool) -> None:
    p.add_argument("--kinds", required=required, help=f"comma-separated: {KIND_HELP}")
    to = p.add_mutually_exclusive_group(required=required)
    to.add_argument("--email", help="send them to this e-mail address")
    to.add_argument("--webhook", help="POST them, signed, to this http(s) URL")
    p.add_argument("--note", help="whose address, what for")
    p.add_argument("--no-test", action="store_true", help="save without sending a test message first")
    p.add_argument("--json", action="store_true")


def add_parsers(sub) -> None:
    a = sub.add_parser("alerts", help="what needs a person: list the alerts, acknowledge or resolve one, and "
                       "the rules of who is told")
    a.add_argument("--machine", help="only this machine's")
    a.add_argument("--state", default="open,acknowledged", help="open, acknowledged, resolved (comma-separated) "
                   "or all; default: those not resolved")
    a.add_argument("--json", action="store_true")
    asub = a.add_subparsers(dest="action")
    for verb, text in (("ack", "say someone is on it"), ("resolve", "end it by hand")):
        p = asub.add_parser(verb, help=text)
        p.add_argument("id", type=int)
        p.add_argument("--json", action="store_true")
    r = asub.add_parser("rules", help="who is told of which alerts: list, add, change, delete")
    r.add_argument("--json", action="store_true")
    rsub = r.add_subparsers(dest="rule_action")
    _rule_options(rsub.add_parser("add", help="a new rule (a test message is sent first)"), True)
    change = rsub.add_parser("change", help="change a rule: the options given replace the rule's")
    change.add_argument("id", type=int)
    _rule_options(change, False)
    delete = rsub.add_parser("delete", help="delete a rule")
    delete.add_argument("id", type=int)
    delete.add_argument("--json", action="store_true")


def _rule_body(args, before: dict | None = None) -> dict:
    body = dict(before or {})
    body.pop("id", None)
    for k in ("created_by", "created_at", "updated_at"):
        body.pop(k, None)
    if args.kinds is not None:
        body["kinds"] = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if args.email is not None:
        body.update(channel="email", target=args.email)
    if args.webhook is not None:
        body.update(channel="webhook", target=args.webhook)
    if args.note is not None:
        body["note"] = args.note
    body["test"] = not args.no_test
    return body


def _rule_rows(rows: list[dict]) -> str:
    for r in rows:
        r["kinds_text"] = ",".join(r["kinds"])
    return table(rows, [("id", "ID"), ("channel", "BY"), ("target", "TO"), ("kinds_text", "KINDS"),
                        ("note", "NOTE")]) if rows else "no rules: alerts are kept but sent to no one"


def run(args, client, error) -> None:
    """Carry out ``vendctl alerts ...`` through the cloud's API."""
    def show(result, text: str) -> None:
        print(json.dumps(result, indent=2) if args.json else text)

    if args.action in ("ack", "resolve"):
        r = client.call("POST", f"/api/v1/alerts/{args.id}/{args.action}")
        verb = "acknowledged" if args.action == "ack" else "resolved"
        who = r["acknowledged_by"] if args.action == "ack" else r["resolved_by"]
        show(r, f"alert {r['id']} ({r['kind']} on {r['machine_id']}) {verb}"
             + (f" by {who}" if r["changed"] else f" already (by {who or 'itself: its condition cleared'})"))
    elif args.action == "rules" and args.rule_action == "add":
        r = client.call("POST", "/api/v1/alert-rules", _rule_body(args))
        show(r, f"rule {r['id']} added: {','.join(r['kinds'])} to {r['target']}")
    elif args.action == "rules" and args.rule_action == "change":
        before = next((r for r in client.call("GET", "/api/v1/alert-rules") if r["id"] == args.id), None)
        if before is None:
            raise error(f"there is no rule {args.id}")
        r = client.call("PUT", f"/api/v1/alert-rules/{args.id}", _rule_body(args, before))
        show(r, f"rule {r['id']} changed: {','.join(r['kinds'])} to {r['target']}")
    elif args.action == "rules" and args.rule_action == "delete":
        r = client.call("DELETE", f"/api/v1/alert-rules/{args.id}")
        show(r, f"rule {r['id']} deleted")
    elif args.action == "rules":
        rows = client.call("GET", "/api/v1/alert-rules")
        show(rows, _rule_rows(rows))
    else:
        query = urlencode({"state": args.state})
        path = f"/api/v1/machines/{args.machine}/alerts" if args.machine else "/api/v1/alerts"
        rows = client.call("GET", f"{path}?{query}")
        for r in rows:
            r["who"] = (f"resolved by {r['resolved_by'] or 'itself'}" if r["resolved_at"] else
                        f"ack by {r['acknowledged_by']}" if r["acknowledged_at"] else "")
        show(rows, table(rows, [("id", "ID"), ("state", "STATE"), ("machine_id", "MACHINE"), ("kind", "ALERT"),
                                ("slot", "SLOT"), ("since", "SINCE (UTC)"), ("who", "WHO"), ("detail", "DETAIL")])
             if rows else "no alerts")
