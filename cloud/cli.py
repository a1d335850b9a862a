"""``vendctl``: the manager's command line, talking to the cloud's HTTP API; and ``vendctl hw``, the
technician's hardware test on a machine.

With no options it talks to the cloud that ``make demo`` starts (http://127.0.0.1:8000, token in
``var/cloud/admin-token``); ``VEND_CLOUD_URL`` and ``VEND_TOKEN`` point it elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TOKEN_FILE = os.path.join("var", "cloud", "admin-token")


class CliError(Exception):
    pass


class Client:
    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        self.token = token

    @classmethod
    def from_env(cls) -> "Client":
        token = os.environ.get("VEND_TOKEN", "")
        if not token:
            path = os.environ.get("VEND_TOKEN_FILE", DEFAULT_TOKEN_FILE)
            try:
                with open(path) as f:
                    token = f.read().strip()
            except OSError:
                raise CliError(f"no admin token: set VEND_TOKEN, or run where {path} exists") from None
        return cls(os.environ.get("VEND_CLOUD_URL", DEFAULT_URL), token)

    def call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("error")
            except ValueError:
                detail = e.reason
            raise CliError(f"{method} {path}: {e.code} {detail}") from None
        except urllib.error.URLError as e:
            raise CliError(f"cannot reach the cloud at {self.url}: {e.reason}; is it running? "
                           "(VEND_CLOUD_URL points elsewhere)") from None


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    cells = [[title for _, title in columns]] + [["" if r.get(k) is None else str(r.get(k)) for k, _ in columns]
                                                 for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


SECRET_KEYS = ("secret", "mqtt_password", "key_pem")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def hide_secrets(result: dict, show: bool) -> dict:
    """The API's answer as printed: secrets only with --show-secrets."""
    return result if show else {k: v for k, v in result.items() if k not in SECRET_KEYS}


def duration(text: str) -> float:
    """'24h', '90m', '7d', '30s' or a number of seconds."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 24h, 90m, 7d or 30s")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def print_broker(result: dict) -> None:
    """What the cloud did to the broker's users; on stderr if it could not."""
    note = result.get("broker")
    if note is None:
        return
    print(f"broker: {note}", file=sys.stderr if "NOT" in note else sys.stdout)


def money(amount: int, currency: str) -> str:
    from .money import format_money

    return format_money(amount, currency)


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
    add.add_argument("--show-secrets", action="store_true", help="print the QR secret and broker password")
    add.add_argument("--json", action="store_true")
    rot = msub.add_parser("rotate-secret", help="give a machine a new QR secret and broker password; the old "
                          "ones keep working for the overlap")
    rot.add_argument("id")
    rot.add_argument("--overlap", type=duration, default=24 * 3600.0,
                     help="how long the old secret and password keep working: 24h (default), 90m, 7d; "
                     "0 ends them now (a leaked secret)")
    rot.add_argument("--show-secrets", action="store_true", help="print the new QR secret and broker password")
    rot.add_argument("--json", action="store_true")
    s = sub.add_parser("sales", help="recent sales and totals")
    s.add_argument("--machine")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")
    from . import provision

    provision.add_arguments(sub)
    sl = sub.add_parser("slots", help="a machine's slots: product, price, count")
    sl.add_argument("machine")
    sl.add_argument("--json", action="store_true")
    from controller import hwtool  # the machine's side: needs no cloud, no token

    hwtool.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "hw":
        return hwtool.main(args)

    try:
        client = Client.from_env()
        if args.command == "machines" and args.action == "add":
            result = client.call("POST", "/api/v1/machines", {"id": args.id, "name": args.name,
                                                              "location": args.location})
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
                print(table(rows, [("id", "ID"), ("name", "NAME"), ("online", "ONLINE"), ("last_seen", "LAST SEEN"),
                                   ("machine_head", "LEDGER HEAD"), ("cloud_head", "IN CLOUD"), ("behind", "BEHIND")]))
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


if __name__ == "__main__":
    sys.exit(main())
