"""A local fake of the parts of Stripe's HTTP API the cloud uses, following Stripe's published formats:
form-encoded requests with bracketed keys, ``Authorization: Bearer sk_...``, ``Idempotency-Key`` (a key
reused with other parameters is a 400 ``idempotency_error``; reused with the same ones, the first answer
again with ``Idempotent-Replayed: true``), JSON objects with ``object`` and ``id``, errors as
``{"error": {"type", "code", "decline_code", "message"}}`` (a declined card: 402 ``card_error``), events
signed in ``Stripe-Signature: t=...,v1=...`` (HMAC-SHA256 over ``{t}.{payload}``), and the hosted pages
a browser clicks through: Checkout in setup mode (``/c/pay/{session}``) and the 3-D Secure test page.

Endpoints: customers, checkout sessions (setup mode), setup intents, payment intents (create with
confirm, retrieve, list by customer, capture, cancel), refunds, payment methods (detach), balance
transactions, and the itemized "Balance change from activity" report as CSV (``/fake/report.csv``).

Test cards (Stripe's own numbers): 4242424242424242 succeeds; 4000002760003184 needs authentication on
every payment; 4000000000000341 attaches but every charge is declined; 4000000000000002 is declined at
setup. Run as a process: ``python -m tests.fakes.stripe --port P --api-key K --webhook-url U
--webhook-secret S``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import html
import io
import itertools
import json
import secrets
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_VERSION = "2026-10-28.endive"
CARDS = {
    "4242424242424242": "ok",
    "4000002760003184": "authenticate",
    "4000000000000341": "decline_charges",
    "4000000000000002": "decline",
}
ZERO_DECIMAL = {"jpy", "krw", "vnd", "clp", "xof", "xaf", "ugx", "pyg", "rwf", "kmf", "gnf", "bif", "djf", "mga",
                "vuv", "xpf"}
REPORT_COLUMNS = ("balance_transaction_id", "created_utc", "created", "available_on_utc", "currency", "gross",
                  "fee", "net", "reporting_category", "source_id", "description", "customer_id", "charge_id",
                  "payment_intent_id", "payment_metadata[order_id]", "refund_metadata[order_id]")


class StripeError(Exception):
    def __init__(self, status: int, type_: str, message: str, code: str = "", **extra):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "message": message, **({"code": code} if code else {}), **extra}}


def decode_form(body: str) -> dict:
    """Stripe's form encoding (``a[b][0]=c``) back into nested dicts and lists."""
    out: dict = {}
    for key, value in urllib.parse.parse_qsl(body, keep_blank_values=True):
        parts = [key.split("[", 1)[0]] + [p.rstrip("]") for p in key.split("[")[1:]]
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(out)


def _lists(node):
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def signature_header(secret: str, payload: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={v1}"


def major(amount: int, currency: str) -> str:
    """An amount as the reports write it: in major units, with the currency's decimals."""
    if currency in ZERO_DECIMAL:
        return str(amount)
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d}"


class StripeFake:
    """Stripe's books for one account: the objects, the idempotency record and the events."""

    def __init__(self, api_key: str = "sk_test_fake", webhook_secret: str = "whsec_fake", webhook_url: str = "",
                 base_url: str = "http://stripe.test", clock=time.time):
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.base_url = base_url
        self.clock = clock
        self.lock = threading.RLock()
        self.objects: dict[str, dict] = {}
        self.idempotency: dict[str, tuple[str, int, dict]] = {}
        self.events: list[dict] = []  # every event, in order
        self.undelivered: list[dict] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Idempotency-Key)
        self.down = 0  # the next this-many API requests fail with a 503 before doing anything
        self.lose_replies = 0  # the next this-many API requests are done, then the reply is lost (a 500)
        self.slow = 0  # the next this-many API requests are done, but answered only after ``slow_s``
        self.slow_s = 2.0
        self.auto_deliver = False
        self._ids = itertools.count(1)

    # -- objects -------------------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}{secrets.token_hex(6)}"

    def now(self) -> int:
        return int(self.clock())

    def get(self, oid: str, kind: str) -> dict:
        obj = self.objects.get(oid)
        if obj is None or obj["object"] != kind:
            raise StripeError(404, "invalid_request_error", f"No such {kind}: '{oid}'", "resource_missing",
                              param="id")
        return obj

    def event(self, type_: str, obj: dict, previous: dict | None = None) -> dict:
        ev = {"id": self.new_id("evt"), "object": "event", "api_version": API_VERSION, "created": self.now(),
              "livemode": False, "pending_webhooks": 1, "type": type_,
              "data": {"object": json.loads(json.dumps(obj)), **({"previous_attributes": previous} if previous else {})},
              "request": {"id": None, "idempotency_key": None}}
        self.events.append(ev)
        self.undelivered.append(ev)
        if self.auto_deliver and self.webhook_url:
            threading.Thread(target=self.deliver, daemon=True).start()
        return ev

    def signed(self, ev: dict, timestamp: int | None = None) -> tuple[bytes, dict]:
        payload = json.dumps(ev, indent=2).encode()
        return payload, {"Stripe-Signature": signature_header(self.webhook_secret, payload, timestamp),
                         "Content-Type": "application/json; charset=utf-8"}

    def deliver(self) -> list[int]:
        """Post the undelivered events, in order, to ``webhook_url``; the HTTP statuses."""
        statuses = []
        while True:
            with self.lock:
                if not self.undelivered:
                    return statuses
                ev = self.undelivered.pop(0)
            payload, headers = self.signed(ev)
            req = urllib.request.Request(self.webhook_url, data=payload, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    statuses.append(r.status)
            except urllib.error.HTTPError as e:
                statuses.append(e.code)
            except OSError:
                statuses.append(0)

    # -- the API -------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, headers, body: str) -> tuple[int, dict, dict]:
        """One API request: (status, JSON body, extra headers)."""
        key = headers.get("Idempotency-Key")
        with self.lock:
            self.requests.append((method, path, key))
            if self.down > 0:
                self.down -= 1
                return 503, {"error": {"type": "api_error", "message": "the fake is down"}}, {}
            auth = headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                return 401, {"error": {"type": "invalid_request_error",
                                       "message": "Invalid API Key provided"}}, {}
            params = decode_form(body if method == "POST" else query)
            if method == "POST" and key:
                digest = hashlib.sha256(f"{method} {path} {json.dumps(params, sort_keys=True)}".encode()).hexdigest()
                if key in self.idempotency:
                    first_digest, status, answer = self.idempotency[key]
                    if first_digest != digest:
                        return 400, {"error": {"type": "idempotency_error", "message":
                                               "Keys for idempotent requests can only be used with the same "
                                               f"parameters they were first used with. Try using a key other than "
                                               f"'{key}' if you meant to execute a different request."}}, {}
                    return status, answer, {"Idempotent-Replayed": "true"}
            try:
                status, answer = 200, self.route(method, path, params)
            except StripeError as e:
                status, answer = e.status, e.body
            if method == "POST" and key:
                self.idempotency[key] = (digest, status, json.loads(json.dumps(answer)))
            if self.slow > 0:
                self.slow -= 1
                delay = self.slow_s
            else:
                delay = 0.0
            if self.lose_replies > 0:
                self.lose_replies -= 1
                return 500, {"error": {"type": "api_error", "message": "the reply was lost"}}, {}
        if delay:
            time.sleep(delay)  # outside the lock: done, but the answer comes too late for the caller
        return status, answer, {"Original-Request": "req_" + secrets.token_hex(7)}

    def route(self, method: str, path: str, p: dict) -> dict:
        parts = path.strip("/").split("/")
        if parts[0] != "v1":
            raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})")
        parts = parts[1:]
        match (method, parts):
            case ("POST", ["customers"]):
                return self.create_customer(p)
            case ("POST", ["checkout", "sessions"]):
                return self.create_session(p)
            case ("GET", ["checkout", "sessions", sid]):
                return self.expand(self.get(sid, "checkout.session"), p)
            case ("GET", ["setup_intents", sid]):
                return self.get(sid, "setup_intent")
            case ("POST", ["payment_intents"]):
                return self.create_intent(p)
            case ("GET", ["payment_intents"]):
                return self.list_intents(p)
            case ("GET", ["payment_intents", pid]):
                return self.get(pid, "payment_intent")
            case ("POST", ["payment_intents", pid, "capture"]):
                return self.capture(self.get(pid, "payment_intent"), p)
            case ("POST", ["payment_intents", pid, "cancel"]):
                return self.cancel(self.get(pid, "payment_intent"), p)
            case ("POST", ["refunds"]):
                return self.create_refund(p)
            case ("GET", ["refunds"]):
                data = [o for o in self.objects.values() if o["object"] == "refund"
                        and (not p.get("payment_intent") or o["payment_intent"] == p["payment_intent"])]
                return {"object": "list", "data": sorted(data, key=lambda o: o["id"], reverse=True)[
                    : int(p.get("limit") or 10)], "has_more": False, "url": "/v1/refunds"}
            case ("GET", ["payment_methods", pm]):
                return self.get(pm, "payment_method")
            case ("POST", ["payment_methods", pm, "detach"]):
                return self.detach(pm)
            case ("GET", ["balance_transactions"]):
                txns = [o for o in self.objects.values() if o["object"] == "balance_transaction"]
                return {"object": "list", "data": sorted(txns, key=lambda t: t["created"], reverse=True),
                        "has_more": False, "url": "/v1/balance_transactions"}
        raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: /{'/'.join(parts)})")

    def expand(self, obj: dict, p: dict) -> dict:
        obj = dict(obj)
        for field in p.get("expand") or []:
            if isinstance(obj.get(field), str) and obj[field] in self.objects:
                obj[field] = self.objects[obj[field]]
        return obj

    def create_customer(self, p: dict) -> dict:
        c = {"id": self.new_id("cus"), "object": "customer", "created": self.now(), "livemode": False,
             "metadata": p.get("metadata") or {}, "description": p.get("description"), "email": p.get("email")}
        self.objects[c["id"]] = c
        return c

    def create_session(self, p: dict) -> dict:
        if p.get("mode") != "setup":
            raise StripeError(400, "invalid_request_error", "this fake knows only mode=setup", param="mode")
        for field in ("success_url", "customer", "currency"):
            if not p.get(field):
                raise StripeError(400, "invalid_request_error", f"Missing required param: {field}.", "parameter_missing",
                                  param=field)
        self.get(p["customer"], "customer")
        seti = {"id": self.new_id("seti"), "object": "setup_intent", "created": self.now(), "customer": p["customer"],
                "payment_method": None, "status": "requires_payment_method", "usage": "off_session",
                "metadata": (p.get("setup_intent_data") or {}).get("metadata") or {}, "livemode": False}
        sid = "cs_test_" + secrets.token_hex(12)
        s = {"id": sid, "object": "checkout.session", "mode": "setup", "status": "open", "created": self.now(),
             "customer": p["customer"], "currency": p["currency"], "setup_intent": seti["id"],
             "success_url": p["success_url"], "cancel_url": p.get("cancel_url"),
             "client_reference_id": p.get("client_reference_id"), "metadata": p.get("metadata") or {},
             "url": f"{self.base_url}/c/pay/{sid}", "livemode": False}
        self.objects[seti["id"]] = seti
        self.objects[sid] = s
        return s

    def complete_session(self, sid: str, number: str) -> tuple[str | None, str]:
        """The customer typed a card on the Checkout page: (an error for the page, or None; where to go)."""
        with self.lock:
            s = self.get(sid, "checkout.session")
            if s["status"] != "open":
                return "This Checkout session is no longer open.", ""
            outcome = CARDS.get(number.replace(" ", ""))
            if outcome is None:
                return "Your card number is invalid (use a Stripe test card).", ""
            if outcome == "decline":
                return "Your card was declined.", ""
            seti = self.objects[s["setup_intent"]]
            pm = {"id": self.new_id("pm"), "object": "payment_method", "type": "card", "customer": s["customer"],
                  "created": self.now(), "livemode": False, "metadata": {},
                  "card": {"brand": "visa", "last4": number[-4:], "exp_month": 12, "exp_year": 2030,
                           "fingerprint": hashlib.sha256(number.encode()).hexdigest()[:16], "_behaviour": outcome}}
            self.objects[pm["id"]] = pm
            seti.update(status="succeeded", payment_method=pm["id"])
            s.update(status="complete")
            self.event("payment_method.attached", pm)
            self.event("setup_intent.succeeded", seti)
            self.event("checkout.session.completed", s)
            return None, s["success_url"].replace("{CHECKOUT_SESSION_ID}", sid)

    def list_intents(self, p: dict) -> dict:
        data = [o for o in self.objects.values() if o["object"] == "payment_intent"
                and (not p.get("customer") or o["customer"] == p["customer"])]
        data.sort(key=lambda o: o["id"], reverse=True)
        return {"object": "list", "data": data[: int(p.get("limit") or 10)], "has_more": False,
                "url": "/v1/payment_intents"}

    def create_intent(self, p: dict) -> dict:
        try:
            amount = int(p.get("amount", ""))
        except ValueError:
            raise StripeError(400, "invalid_request_error", "Invalid integer: amount", param="amount") from None
        if amount < 1 or not p.get("currency"):
            raise StripeError(400, "invalid_request_error", "amount and currency are required", param="amount")
        pm = self.get(p["payment_method"], "payment_method") if p.get("payment_method") else None
        if pm is not None and p.get("customer") and pm["customer"] != p["customer"]:
            raise StripeError(400, "invalid_request_error", "The provided PaymentMethod was previously used with "
                              "a PaymentIntent without Customer attachment, shared with a connected account "
                              "without Customer attachment, or was detached from a Customer.", param="payment_method")
        manual = p.get("capture_method") == "manual"
        pi = {"id": self.new_id("pi"), "object": "payment_intent", "amount": amount, "amount_capturable": 0,
              "amount_received": 0, "currency": p["currency"], "customer": p.get("customer"),
              "payment_method": p.get("payment_method"), "capture_method": "manual" if manual else "automatic",
              "status": "requires_payment_method", "metadata": p.get("metadata") or {},
              "description": p.get("description"), "created": self.now(), "latest_charge": None,
              "next_action": None, "last_payment_error": None, "cancellation_reason": None, "livemode": False,
              "client_secret": None, "setup_future_usage": None, "off_session": p.get("off_session") == "true"}
        pi["client_secret"] = f"{pi['id']}_secret_{secrets.token_hex(8)}"
        self.objects[pi["id"]] = pi
        if p.get("confirm") == "true" and pm is not None:
            behaviour = pm["card"]["_behaviour"]
            if behaviour == "decline_charges":
                return self.fail(pi, "card_declined", "generic_decline", "Your card was declined.")
            if behaviour == "authenticate":
                if pi["off_session"]:
                    return self.fail(pi, "authentication_required", "authentication_required",
                                     "Your card was declined. This transaction requires authentication.")
                if not p.get("return_url"):
                    raise StripeError(400, "invalid_request_error", "A return_url is needed to confirm a "
                                      "payment that may need authentication.", param="return_url")
                pi.update(status="requires_action", next_action={
                    "type": "redirect_to_url", "redirect_to_url": {
                        "url": f"{self.base_url}/3ds/{pi['id']}", "return_url": p["return_url"]}})
                self.event("payment_intent.requires_action", pi)
                return pi
            self.authorised(pi)
        return pi

    def authorised(self, pi: dict) -> None:
        if pi["capture_method"] == "manual":
            pi.update(status="requires_capture", amount_capturable=pi["amount"], next_action=None)
            pi["latest_charge"] = self.new_id("ch")
            self.event("payment_intent.amount_capturable_updated", pi)
        else:
            pi.update(next_action=None)
            self.charge(pi, pi["amount"])
            self.event("payment_intent.succeeded", pi)

    def fail(self, pi: dict, code: str, decline_code: str, message: str) -> dict:
        err = {"type": "card_error", "code": code, "decline_code": decline_code, "message": message,
               "payment_method": {"id": pi["payment_method"]}}
        pi.update(status="requires_payment_method", last_payment_error=err, next_action=None)
        self.event("payment_intent.payment_failed", pi)
        raise StripeError(402, "card_error", message, code, decline_code=decline_code,
                          payment_intent=json.loads(json.dumps(pi)))

    def authenticate(self, pid: str, passed: bool) -> str:
        """The customer finished the 3-D Secure page: where the browser goes back to."""
        with self.lock:
            pi = self.get(pid, "payment_intent")
            back = pi["next_action"]["redirect_to_url"]["return_url"] if pi.get("next_action") else ""
            if pi["status"] == "requires_action":
                if passed:
                    self.authorised(pi)
                else:
                    try:
                        self.fail(pi, "payment_intent_authentication_failure", "authentication_failure",
                                  "The provided PaymentMethod has failed authentication.")
                    except StripeError:
                        pass
            q = urllib.parse.urlencode({"payment_intent": pid, "payment_intent_client_secret": pi["client_secret"],
                                        "redirect_status": "succeeded" if passed else "failed"})
            return back + ("&" if "?" in back else "?") + q if back else ""

    def charge(self, pi: dict, amount: int) -> None:
        fee = amount * 29 // 1000 + 30 if pi["currency"] not in ZERO_DECIMAL else amount * 29 // 1000 + 1
        ch = pi["latest_charge"] or self.new_id("ch")
        txn = {"id": self.new_id("txn"), "object": "balance_transaction", "amount": amount, "fee": fee,
               "net": amount - fee, "currency": pi["currency"], "created": self.now(), "available_on": self.now(),
               "type": "charge", "reporting_category": "charge", "source": ch, "status": "pending",
               "description": pi["description"], "_pi": pi["id"], "_customer": pi["customer"],
               "_metadata": dict(pi["metadata"]), "fee_details": [{"amount": fee, "currency": pi["currency"],
                                                                   "type": "stripe_fee", "description": "Stripe processing fees"}]}
        self.objects[txn["id"]] = txn
        pi.update(status="succeeded", amount_received=amount, amount_capturable=0, latest_charge=ch)

    def capture(self, pi: dict, p: dict) -> dict:
        if pi["status"] != "requires_capture":
            raise StripeError(400, "invalid_request_error", f"This PaymentIntent could not be captured because it "
                              f"has a status of {pi['status']}. Only a PaymentIntent with one of the following "
                              "statuses may be captured: requires_capture.", "payment_intent_unexpected_state",
                              payment_intent=json.loads(json.dumps(pi)))
        amount = int(p.get("amount_to_capture") or pi["amount_capturable"])
        self.charge(pi, amount)
        self.event("payment_intent.succeeded", pi)
        return pi

    def cancel(self, pi: dict, p: dict) -> dict:
        if pi["status"] in ("succeeded", "canceled"):
            raise StripeError(400, "invalid_request_error", f"You cannot cancel this PaymentIntent because it has a "
                              f"status of {pi['status']}. Only a PaymentIntent with one of the following statuses "
                              "may be canceled: requires_payment_method, requires_capture, requires_confirmation, "
                              "requires_action, processing.", "payment_intent_unexpected_state",
                              payment_intent=json.loads(json.dumps(pi)))
        pi.update(status="canceled", amount_capturable=0, next_action=None,
                  cancellation_reason=p.get("cancellation_reason") or "requested_by_customer")
        self.event("payment_intent.canceled", pi)
        return pi

    def create_refund(self, p: dict) -> dict:
        pi = self.get(p.get("payment_intent", ""), "payment_intent")
        refunded = sum(o["amount"] for o in self.objects.values()
                       if o["object"] == "refund" and o["payment_intent"] == pi["id"])
        amount = int(p.get("amount") or pi["amount_received"] - refunded)
        if pi["status"] != "succeeded":
            raise StripeError(400, "invalid_request_error", f"This PaymentIntent ({pi['id']}) does not have a "
                              "successful charge to refund.", "charge_not_refundable")
        if amount > pi["amount_received"] - refunded:
            raise StripeError(400, "invalid_request_error", f"Refund amount ({amount}) is greater than unrefunded "
                              f"amount on charge ({pi['amount_received'] - refunded})", "amount_too_large",
                              param="amount")
        txn = {"id": self.new_id("txn"), "object": "balance_transaction", "amount": -amount, "fee": 0,
               "net": -amount, "currency": pi["currency"], "created": self.now(), "available_on": self.now(),
               "type": "refund", "reporting_category": "refund", "source": None, "status": "pending",
               "description": "REFUND FOR CHARGE (" + (pi["description"] or "") + ")", "_pi": pi["id"],
               "_customer": pi["customer"], "_metadata": dict(pi["metadata"]), "fee_details": []}
        re_ = {"id": self.new_id("re"), "object": "refund", "amount": amount, "currency": pi["currency"],
               "payment_intent": pi["id"], "charge": pi["latest_charge"], "status": "succeeded",
               "metadata": p.get("metadata") or {}, "created": self.now(), "balance_transaction": txn["id"],
               "reason": p.get("reason")}
        txn["source"] = re_["id"]
        self.objects[txn["id"]] = txn
        self.objects[re_["id"]] = re_
        self.event("refund.created", re_)
        return re_

    def detach(self, pm_id: str) -> dict:
        with self.lock:
            pm = self.get(pm_id, "payment_method")
            before = pm["customer"]
            pm["customer"] = None
            self.event("payment_method.detached", pm, {"customer": before})
            return pm

    # -- the itemized "Balance change from activity" report ------------------------------------------

    def report(self) -> bytes:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(REPORT_COLUMNS)
        txns = sorted((o for o in self.objects.values() if o["object"] == "balance_transaction"),
                      key=lambda t: (t["created"], t["id"]))
        for t in txns:
            at = datetime.fromtimestamp(t["created"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            cur = t["currency"]
            w.writerow([t["id"], at, at, at, cur, major(t["amount"], cur), major(t["fee"], cur), major(t["net"], cur),
                        t["reporting_category"], t["source"], t["description"] or "", t["_customer"] or "",
                        self.objects[t["_pi"]]["latest_charge"], t["_pi"],
                        t["_metadata"].get("order_id", "") if t["type"] == "charge" else "",
                        t["_metadata"].get("order_id", "") if t["type"] == "refund" else ""])
        return out.getvalue().encode()


# -- the HTTP server ---------------------------------------------------------------------------------

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>"""


def checkout_page(s: dict, error: str = "") -> str:
    err = f'<p role="alert" class="error">{html.escape(error)}</p>' if error else ""
    cancel = f'<p><a href="{html.escape(s["cancel_url"])}">Cancel</a></p>' if s.get("cancel_url") else ""
    return PAGE.format(title="Save your card", body=f"""{err}
<p>Test mode: save a card for later payments ({html.escape(s['currency'].upper())}).</p>
<form method="post"><label>Card number <input name="cardnumber" autocomplete="cc-number" inputmode="numeric"></label>
<label>Expiry <input name="exp" value="12 / 30"></label><label>CVC <input name="cvc" value="123"></label>
<label>Name on card <input name="name"></label><button type="submit">Save card</button></form>{cancel}""")


def authentication_page(pi: dict) -> str:
    return PAGE.format(title="3D Secure 2 Test Page", body=f"""
<p>Authenticate a payment of {html.escape(major(pi['amount'], pi['currency']))} {html.escape(pi['currency'].upper())}.</p>
<form method="post"><button name="outcome" value="complete">Complete authentication</button>
<button name="outcome" value="fail">Fail authentication</button></form>""")


class Handler(BaseHTTPRequestHandler):
    fake: StripeFake

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", "req_" + secrets.token_hex(7))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, url: str) -> None:
        self.send_response(303)
        self.send_header("Location", url)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _page(self, text: str, status: int = 200) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _body(self) -> str:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        fake = self.fake
        try:
            if parts[:2] == ["c", "pay"] and len(parts) == 3:
                s = fake.objects.get(parts[2])
                if s is None or s["object"] != "checkout.session":
                    return self._page(PAGE.format(title="Not found", body=""), 404)
                if method == "GET":
                    return self._page(checkout_page(s))
                form = dict(urllib.parse.parse_qsl(self._body()))
                error, to = fake.complete_session(parts[2], form.get("cardnumber", ""))
                return self._page(checkout_page(s, error), 402) if error else self._redirect(to)
            if parts[0] == "3ds" and len(parts) == 2:
                pi = fake.objects.get(parts[1])
                if pi is None or pi["object"] != "payment_intent":
                    return self._page(PAGE.format(title="Not found", body=""), 404)
                if method == "GET":
                    return self._page(authentication_page(pi))
                form = dict(urllib.parse.parse_qsl(self._body()))
                to = fake.authenticate(parts[1], form.get("outcome") == "complete")
                return self._redirect(to) if to else self._page(PAGE.format(title="Done", body=""))
            if url.path == "/fake/report.csv":
                return self._send(200, fake.report(), "text/csv; charset=utf-8")
            if url.path == "/fake/objects":  # what the fake holds, for a test in another process
                kind = dict(urllib.parse.parse_qsl(url.query)).get("object", "")
                with fake.lock:
                    found = [o for o in fake.objects.values() if not kind or o["object"] == kind]
                    return self._send(200, json.dumps(found).encode(), "application/json")
            if url.path == "/fake/requests":
                with fake.lock:
                    return self._send(200, json.dumps(fake.requests).encode(), "application/json")
            if url.path == "/fake/detach" and method == "POST":
                fake.detach(dict(urllib.parse.parse_qsl(self._body()))["payment_method"])
                return self._send(200, b"{}", "application/json")
            body = self._body() if method == "POST" else ""
            status, answer, extra = fake.handle(method, url.path, url.query, self.headers, body)
            self._send(status, json.dumps(answer).encode(), "application/json", extra)
        except StripeError as e:
            self._send(e.status, json.dumps(e.body).encode(), "application/json")

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")


def serve(fake: StripeFake, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``fake`` on a thread; ``fake.base_url`` becomes the server's address. Stop with ``shutdown()``."""
    handler = type("BoundHandler", (Handler,), {"fake": fake})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    fake.base_url = f"http://{host}:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--api-key", default="sk_test_fake")
    ap.add_argument("--webhook-url", default="")
    ap.add_argument("--webhook-secret", default="whsec_fake")
    a = ap.parse_args(argv)
    fake = StripeFake(a.api_key, a.webhook_secret, a.webhook_url)
    fake.auto_deliver = bool(a.webhook_url)
    server = serve(fake, a.port)
    print(f"stripe fake at {fake.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
