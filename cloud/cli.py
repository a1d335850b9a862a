"""``vendctl``: the manager's command line, talking to the cloud's HTTP API; and ``vendctl hw``, the
technician's hardware test on a machine.

With no options it talks to the cloud that ``make demo`` starts (http://127.0.0.1:8000, with the built-in
administrator's token in ``var/cloud/admin-token``); ``VEND_CLOUD_URL`` and ``VEND_TOKEN`` (a token from
``vendctl tokens create``) point it elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys

from cloud.audits import cli as dex_cli
from cloud.alerts import cli as alerts_cli
from cloud.core.client import CliError, Client, duration, hide_secrets, money, print_broker, table
from cloud.finance import cli as finance_cli
from cloud.fleet import cli as fleetcli
from cloud.provisioning import cli as provision
from cloud.sales import cli as reportcli
from cloud.stock import cli as stock_cli
from controller import hwtool  # the machine's side: needs no cloud, no token

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vendctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("machines", help="list machines, or add one")
    m.add_argument("--json", action="store_true")
    msub = m.add_subparsers(dest="action")
    add = msub.add_parser("add", help="create a machine with its QR secret and broker password")
    add.add_argument("id")
    add.add_argument("--name", default="")
    add.add_argument("--location", default="")
    add.add_argument("--at", type=int, metavar="LOCATION_ID", help="the location it stands at (vendctl locations)")
    add.add_argument("--show-secrets", action="store_true", help="print the QR secret and broker password")
    add.add_argument("--json", action="store_true")
    shw = msub.add_parser("show", help="one machine: status, ledger, planogram, alerts and its last self-test")
    shw.add_argument("id")
    shw.add_argument("--json", action="store_true")
    rot = msub.add_parser("rotate-secret", help="give a machine a new QR secret and broker password; the old "
                          "ones keep working for the overlap")
    rot.add_argument("id")
    rot.add_argument("--overlap", type=duration, default=24 * 3600.0,
                     help="how long the old secret and password keep working: 24h (default), 90m, 7d; "
                     "0 ends them now (a leaked secret)")
    rot.add_argument("--show-secrets", action="store_true", help="print the new QR secret and broker password")
    rot.add_argument("--json", action="store_true")
    fleetcli.add_machine_parsers(msub)
    s = sub.add_parser("sales", help="recent sales and totals")
    s.add_argument("--machine")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")
    provision.add_arguments(sub)
    sl = sub.add_parser("slots", help="a machine's slots: product, price, count")
    sl.add_argument("machine")
    sl.add_argument("--json", action="store_true")
    add_people_parsers(sub)
    fleetcli.add_parsers(sub)
    alerts_cli.add_parsers(sub)
    stock_cli.add_parsers(sub)
    finance_cli.add_parsers(sub)
    reportcli.add_parsers(sub)
    add_payments_parsers(sub)
    hwtool.add_parser(sub)
    dex_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "hw":
        return hwtool.main(args)
    if args.command == "dex" and args.action in dex_cli.LOCAL:
        return dex_cli.run_local(args)

    try:
        client = Client.from_env()
        if args.command in PEOPLE_COMMANDS:
            people_command(args, client)
        elif args.command in fleetcli.COMMANDS:
            fleetcli.run(args, client, CliError)
        elif args.command in alerts_cli.COMMANDS:
            alerts_cli.run(args, client, CliError)
        elif args.command in stock_cli.COMMANDS:
            stock_cli.run(args, client, CliError, table)
        elif args.command in finance_cli.COMMANDS:
            finance_cli.run(args, client, CliError, table)
        elif args.command in reportcli.COMMANDS:
            reportcli.run(args, client, CliError)
        elif args.command == "dex":
            dex_cli.run(args, client, CliError)
        elif args.command in PAYMENTS_COMMANDS:
            payments_command(args, client)
        elif args.command == "machines" and args.action in fleetcli.MACHINE_ACTIONS:
            fleetcli.run_machines(args, client, CliError)
        elif args.command == "machines" and args.action == "add":
            result = client.call("POST", "/api/v1/machines", {"id": args.id, "name": args.name,
                                                              "location": args.location, "location_id": args.at})
            if args.json:
                print(json.dumps(hide_secrets(result, args.show_secrets), indent=2))
            else:
                print(f"machine {result['id']} created (broker user {result['mqtt_username']}); its QR secret and "
                      "broker password are kept in the cloud" + ("" if args.show_secrets else
                                                                   " (--show-secrets prints them)"))
                if args.show_secrets:
                    print(f"QR secret: {result['secret']}\nbroker password: {result['mqtt_password']}")
                print_broker(result)
                print(f"next: vendctl provision --machine {result['id']} --image raspios.img --hardware FILE")
        elif args.command == "machines" and args.action == "show":
            fleetcli.show_machine(client.call("GET", f"/api/v1/machines/{args.id}"), args.json)
        elif args.command == "machines" and args.action == "rotate-secret":
            result = client.call("POST", f"/api/v1/machines/{args.id}/rotate-secret", {"overlap_s": args.overlap})
            if args.json:
                print(json.dumps(hide_secrets(result, args.show_secrets), indent=2))
            else:
                print(f"machine {result['id']}: new QR secret and broker password (broker user "
                      f"{result['mqtt_username']})")
                if result["previous_valid_until"]:
                    print(f"the previous ones ({result['previous_username']}) keep working until "
                          f"{result['previous_valid_until']}")
                else:
                    print("the previous ones no longer work")
                if args.show_secrets:
                    print(f"QR secret: {result['secret']}\nbroker password: {result['mqtt_password']}")
                print_broker(result)
        elif args.command == "machines":
            rows = client.call("GET", "/api/v1/machines")
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    r["online"] = "yes" if r["online"] else "no"
                    r["behind"] = r["machine_head"] - r["cloud_head"]
                    r["ledgers"] = f"replaced {r['ledger_changes']}x" if r.get("ledger_changes") else ""
                    p = r["planogram"]
                    r["config"] = "" if p["state"] == "none" else f"v{p['desired_version']} {p['state']}" + (
                        "" if p["state"] == "applied" else f" (has v{p['applied_version']})")
                print(table(rows, [("id", "ID"), ("name", "NAME"), ("location_name", "LOCATION"), ("online", "ONLINE"),
                                   ("last_seen", "LAST SEEN"), ("machine_head", "LEDGER HEAD"),
                                   ("cloud_head", "IN CLOUD"), ("behind", "BEHIND"), ("ledgers", "LEDGER"),
                                   ("config", "PLANOGRAM")]))
        elif args.command == "provision":
            return provision.run(args, client, CliError)
        elif args.command == "sales":
            query = f"?limit={args.limit}" + (f"&machine={args.machine}" if args.machine else "")
            result = client.call("GET", "/api/v1/sales" + query)
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                for r in result["sales"]:
                    r["price"] = money(r["amount"], r["currency"])
                print(table(result["sales"], [("ts", "TIME (UTC)"), ("machine_id", "MACHINE"), ("slot", "SLOT"),
                                              ("price", "AMOUNT"), ("order_id", "ORDER")]))
                for t in result["totals"]:
                    print(f"total: {t['count']} sales, {money(t['amount'], t['currency'])}")
        elif args.command == "slots":
            rows = client.call("GET", f"/api/v1/machines/{args.machine}/slots")
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    r["price"] = money(r["price"], r["currency"])
                    r["flagged"] = "OUT OF SERVICE" if r["flagged"] else ""
                print(table(rows, [("slot", "SLOT"), ("name", "PRODUCT"), ("price", "PRICE"), ("count", "COUNT"),
                                   ("capacity", "CAPACITY"), ("flagged", "")]))
    except CliError as e:
        print(f"vendctl: {e}", file=sys.stderr)
        return 1
    return 0


# -- people, tokens and the audit trail ---------------------------------------------------------------

PEOPLE_COMMANDS = ("people", "tokens", "audit")


def add_people_parsers(sub) -> None:
    p = sub.add_parser("people", help="staff accounts: list, add, disable, enable, change role (administrators)")
    p.add_argument("--json", action="store_true")
    psub = p.add_subparsers(dest="action")
    add = psub.add_parser("add", help="create a staff account; prints a one-time password unless --password-stdin")
    add.add_argument("username")
    add.add_argument("--role", required=True, help="administrator, manager, technician or supplier")
    add.add_argument("--supplier", type=int, help="the supplier id a supplier account acts for")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.add_argument("--json", action="store_true")
    for action, help_text in (("disable", "disable an account: its sessions and tokens stop at once"),
                              ("enable", "enable a disabled account again")):
        a = psub.add_parser(action, help=help_text)
        a.add_argument("id", type=int)
        a.add_argument("--json", action="store_true")
    role = psub.add_parser("role", help="change an account's role")
    role.add_argument("id", type=int)
    role.add_argument("role")
    role.add_argument("--supplier", type=int)
    role.add_argument("--json", action="store_true")
    t = sub.add_parser("tokens", help="your API tokens: list, create, revoke")
    t.add_argument("--json", action="store_true")
    tsub = t.add_subparsers(dest="action")
    create = tsub.add_parser("create", help="a new token with your role; printed once")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    revoke = tsub.add_parser("revoke", help="revoke one of your tokens")
    revoke.add_argument("id", type=int)
    revoke.add_argument("--json", action="store_true")
    au = sub.add_parser("audit", help="who changed what and when, newest first (administrators)")
    au.add_argument("--limit", type=int, default=20)
    au.add_argument("--user", type=int, help="only this staff member's changes")
    au.add_argument("--action", help="e.g. people.add, machine.slots")
    au.add_argument("--kind", help="object kind: staff, token, machine, supplier")
    au.add_argument("--object", help="object id")
    au.add_argument("--since", help="ISO time, UTC unless it has a zone")
    au.add_argument("--until", help="ISO time, exclusive")
    au.add_argument("--json", action="store_true")


def people_command(args, client: Client) -> None:
    from urllib.parse import urlencode

    def show(result, text: str) -> None:
        print(json.dumps(result, indent=2) if args.json else text)

    if args.command == "people" and args.action == "add":
        body = {"username": args.username, "role": args.role, "supplier_id": args.supplier}
        if args.password_stdin:
            body["password"] = sys.stdin.readline().rstrip("\r\n")
        r = client.call("POST", "/api/v1/people", body)
        text = f"staff member {r['id']} {r['username']!r} created ({r['role']})"
        if "one_time_password" in r:
            text += ("; one-time password (shown once; to be changed at the first sign-in):\n"
                     + r["one_time_password"])
        show(r, text)
    elif args.command == "people" and args.action in ("disable", "enable", "role"):
        body = {"disabled": args.action == "disable"} if args.action != "role" else \
            {"role": args.role, **({"supplier_id": args.supplier} if args.supplier is not None else {})}
        r = client.call("PATCH", f"/api/v1/people/{args.id}", body)
        state = "disabled" if r["disabled"] else "enabled"
        show(r, f"staff member {r['id']} {r['username']!r}: {r['role']}, {state}"
                + ("" if r["changed"] else " (unchanged)"))
    elif args.command == "people":
        rows = client.call("GET", "/api/v1/people")
        for r in rows:
            r["state"] = "disabled" if r["disabled"] else "must change password" if r["must_change_password"] \
                else "active"
            r["builtin"] = "built-in" if r["builtin"] else ""
        show(rows, table(rows, [("id", "ID"), ("username", "USERNAME"), ("role", "ROLE"),
                                ("supplier_id", "SUPPLIER"), ("state", "STATE"), ("builtin", "")]))
    elif args.command == "tokens" and args.action == "create":
        r = client.call("POST", "/api/v1/tokens", {"name": args.name})
        show(r, f"token {r['id']} {r['name']!r} created; it is shown only now (use it as VEND_TOKEN):\n{r['token']}")
    elif args.command == "tokens" and args.action == "revoke":
        r = client.call("DELETE", f"/api/v1/tokens/{args.id}")
        show(r, f"token {r['id']} revoked")
    elif args.command == "tokens":
        rows = client.call("GET", "/api/v1/tokens")
        show(rows, table(rows, [("id", "ID"), ("name", "NAME"), ("prefix", "STARTS WITH"),
                                ("created_at", "CREATED (UTC)"), ("last_used_at", "LAST USED (UTC)")]))
    elif args.command == "audit":
        query = {"limit": args.limit, "user": args.user, "action": args.action, "kind": args.kind,
                 "object": args.object, "since": args.since, "until": args.until}
        rows = client.call("GET", "/api/v1/audit?" + urlencode({k: v for k, v in query.items() if v is not None}))
        for r in rows:
            r["who"] = f"{r['user_id']} ({r['via']})" if r["user_id"] is not None else r["via"]
            r["object"] = f"{r['object_kind']} {r['object_id']}"
            r["what"] = json.dumps(r["change"], sort_keys=True, ensure_ascii=False)
        show(rows, table(rows, [("id", "ID"), ("at", "AT (UTC)"), ("who", "WHO"), ("action", "ACTION"),
                                ("object", "OBJECT"), ("what", "CHANGE")]))


# -- refunds and wallets -----------------------------------------------------------------------------

PAYMENTS_COMMANDS = ("refund", "wallet")


def add_payments_parsers(sub) -> None:
    r = sub.add_parser("refund", help="refund a sale, in full or in part, with a reason (managers)")
    r.add_argument("order", help="the order id, as on the customer's page and in vendctl sales")
    r.add_argument("--reason", required=True, help="why: kept in the audit trail")
    r.add_argument("--amount", help="how much, as written in the order's currency (e.g. 1.50); default: all "
                   "that is left")
    r.add_argument("--key", help="the refund's idempotency key: the same key again refunds once (default: a "
                   "new one, printed so a retry can reuse it)")
    r.add_argument("--json", action="store_true")
    w = sub.add_parser("wallet", help="a customer's wallet: balance and history (managers); 'wallet credit "
                       "CUSTOMER AMOUNT --reason ...' grants money (administrators)",
                       usage="vendctl wallet CUSTOMER [--currency C] [--limit N] [--json]\n"
                             "       vendctl wallet credit CUSTOMER AMOUNT --reason WHY [--key K] [--currency C] [--json]")
    w.add_argument("words", nargs="+", metavar="CUSTOMER",
                   help="the customer id, or the phone number with its +; or: credit CUSTOMER AMOUNT (AMOUNT as "
                   "written in the currency, e.g. 20.00)")
    w.add_argument("--currency", default="CNY")
    w.add_argument("--limit", type=int, default=20)
    w.add_argument("--reason", help="why the credit: kept in the audit trail")
    w.add_argument("--key", help="the credit's idempotency key: the same key again credits once (default: a new one, "
                   "printed so a retry can reuse it)")
    w.add_argument("--json", action="store_true")


def payments_command(args, client: Client) -> None:
    from urllib.parse import quote, urlencode

    if args.command == "refund":
        reportcli.refund(args, client, CliError)  # the same as ``vendctl orders refund``
    elif args.words[0] == "credit":
        wallet_credit(args, client)
    else:
        if len(args.words) != 1:
            raise CliError("vendctl wallet CUSTOMER, or vendctl wallet credit CUSTOMER AMOUNT --reason WHY")
        query = urlencode({"currency": args.currency, "limit": args.limit})
        r = client.call("GET", f"/api/v1/customers/{quote(args.words[0], safe='')}/wallet?{query}")
        if args.json:
            print(json.dumps(r, indent=2))
            return
        c = r["customer"]
        print(f"customer {c['id']} {c['name']} ({c['phone']}, pays by {c['payment_method']}): balance "
              f"{money(r['balance'], r['currency'])}")
        for h in r["history"]:
            h["amount"] = money(h["amount"], r["currency"])
        print(table(r["history"], [("at", "AT (UTC)"), ("kind", "WHAT"), ("order_id", "ORDER"), ("amount", "AMOUNT")]))


def wallet_credit(args, client: Client) -> None:
    """``vendctl wallet credit CUSTOMER AMOUNT --reason WHY``: an administrator grants money, audited."""
    import secrets
    from urllib.parse import quote

    if len(args.words) != 3 or not args.reason:
        raise CliError("vendctl wallet credit CUSTOMER AMOUNT --reason WHY (AMOUNT as written, e.g. 20.00)")
    customer, amount = args.words[1], args.words[2]
    key = args.key or "cli-" + secrets.token_urlsafe(12)
    r = client.call("POST", f"/api/v1/customers/{quote(customer, safe='')}/wallet/credit",
                    {"amount": amount, "currency": args.currency, "reason": args.reason, "key": key})
    if args.json:
        print(json.dumps(r, indent=2))
        return
    done = f"credited {money(r['amount'], r['currency'])}" if r["created"] else \
        f"this credit was made before (key {key}); nothing more moved"
    print(f"customer {r['customer_id']}: {done}; balance {money(r['balance'], r['currency'])} (key {key})")


if __name__ == "__main__":
    sys.exit(main())
