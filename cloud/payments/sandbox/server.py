"""``python -m cloud.payments.sandbox``: a stand-in for an external payment provider (WeChat Pay, Alipay,
Stripe), run as its own small HTTP service so the cloud's flow of a real provider is exercised end to end.

It behaves, not just answers: an authorisation is answered ``pending`` at once and decided then (amounts
whose minor units end in a ``--decline`` suffix are declined); the decision reaches the cloud ``--delay``
seconds later as a webhook signed with HMAC-SHA256 over ``{timestamp}.{body}``, re-sent with backoff until
the cloud answers 2xx. Capture, void and refund answer at once. Every request carries an
``Idempotency-Key``: the same key again gets the first answer and changes nothing; the same key with other
parameters gets 409. Payments are named by the merchant's reference (the cloud's order id), as Alipay's
``out_trade_no`` and WeChat Pay's ``out_trade_no`` are.

    GET  /v1/payments/{reference}     a payment, with each operation that took effect (for tests, people)
    GET  /v1/events                   the webhooks, with what was last sent (replayable byte for byte)
    POST /v1/events/{id}/resend       send a webhook again now, signed afresh
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from cloud.payments.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

log = logging.getLogger("sandbox")

REFERENCE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
KEY_RE = re.compile(r"[!-~]{1,200}\Z")
WEBHOOK_TRIES = 8


class Refused(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def amount_of(body: dict, name: str = "amount") -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Refused(422, f"{name} must be a whole number of minor units above zero")
    return value


class Books:
    """The sandbox's payments and the keys it has answered; no clock inside: ``now`` is passed in."""

    def __init__(self, decline_suffixes: tuple[str, ...], delay_s: float):
        self.decline_suffixes = decline_suffixes
        self.delay_s = delay_s
        self.payments: dict[str, dict] = {}
        self.answers: dict[str, tuple[str, int, dict]] = {}  # key -> (fingerprint, code, body)
        self.events: dict[str, dict] = {}
        self.lock = threading.Lock()

    def handle(self, path: str, key: str | None, body: dict, now: float) -> tuple[int, dict, list[dict]]:
        """One POST: (status code, answer, webhooks to schedule)."""
        if not key or not KEY_RE.match(key):
            return 400, {"error": "an Idempotency-Key header is required"}, []
        fingerprint = path + " " + json.dumps(body, sort_keys=True)
        with self.lock:
            if key in self.answers:
                first, code, answer = self.answers[key]
                if first != fingerprint:
                    return 409, {"error": f"idempotency key {key} was used with other parameters"}, []
                return code, {**answer, "replayed": True}, []
            try:
                code, answer, events = self._apply(path, key, body, now)
            except Refused as e:
                code, answer, events = e.code, {"error": str(e)}, []
            if code < 500:
                self.answers[key] = (fingerprint, code, answer)
            return code, answer, events

    def _apply(self, path: str, key: str, body: dict, now: float) -> tuple[int, dict, list[dict]]:
        parts = path.strip("/").split("/")
        if parts == ["v1", "payments"]:
            return self._authorise(key, body, now)
        if len(parts) == 4 and parts[:2] == ["v1", "payments"] and parts[3] in ("capture", "void", "refunds"):
            payment = self.payments.get(parts[2])
            if payment is None:
                raise Refused(404, f"no payment {parts[2]}")
            step = {"capture": self._capture, "void": self._void, "refunds": self._refund}[parts[3]]
            answer = step(payment, body)
            payment["operations"].append({"op": parts[3].rstrip("s"), "key": key, "amount": answer.get("amount"),
                                          "at": now})
            return 200, answer, []
        raise Refused(404, f"no such endpoint: POST {path}")

    def _authorise(self, key: str, body: dict, now: float):
        reference, currency = body.get("reference"), body.get("currency")
        amount = amount_of(body)
        if not isinstance(reference, str) or not REFERENCE_RE.match(reference):
            raise Refused(422, "reference must be 1 to 64 letters, digits, - or _")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            raise Refused(422, "currency must be three capital letters")
        if reference in self.payments:
            raise Refused(409, f"payment {reference} exists already (under another key)")
        declined = any(str(amount).endswith(s) for s in self.decline_suffixes)
        reason = f"declined by the sandbox: the amount ends in {str(amount)[-2:]}" if declined else ""
        self.payments[reference] = {
            "reference": reference, "amount": amount, "currency": currency,
            "status": "declined" if declined else "authorised", "captured": 0, "refunded": 0, "reason": reason,
            "operations": [{"op": "authorise", "key": key, "amount": amount, "at": now}]}
        event_id = "evt_" + secrets.token_hex(8)
        event = {"id": event_id, "type": "authorisation.declined" if declined else "authorisation.succeeded",
                 "created": int(now), "data": {"reference": reference, "amount": amount, "currency": currency,
                                               "reason": reason}}
        self.events[event_id] = {"event": event, "due": now + self.delay_s, "attempts": 0, "delivered": False,
                                 "last": None}
        return 202, {"reference": reference, "status": "pending"}, [self.events[event_id]]

    def _capture(self, payment: dict, body: dict) -> dict:
        amount = amount_of(body)
        if payment["status"] != "authorised":
            raise Refused(409, f"payment {payment['reference']} is {payment['status']}: only an authorised one "
                               "can be captured")
        if amount > payment["amount"]:
            raise Refused(422, f"cannot capture {amount}: {payment['amount']} was authorised")
        payment.update(status="captured", captured=amount)
        return {"reference": payment["reference"], "status": "captured", "amount": amount}

    def _void(self, payment: dict, body: dict) -> dict:
        if payment["status"] == "captured":
            raise Refused(409, f"payment {payment['reference']} is captured: refund it instead")
        if payment["status"] == "authorised":
            payment["status"] = "voided"
        # Voiding what is voided or was declined holds nothing either way: the answer is the state.
        return {"reference": payment["reference"], "status": payment["status"], "amount": 0}

    def _refund(self, payment: dict, body: dict) -> dict:
        amount = amount_of(body)
        left = payment["captured"] - payment["refunded"]
        if payment["status"] != "captured":
            raise Refused(409, f"payment {payment['reference']} is {payment['status']}: nothing was captured")
        if amount > left:
            raise Refused(422, f"cannot refund {amount}: {left} is left of what was captured")
        payment["refunded"] += amount
        return {"reference": payment["reference"], "status": "refunded", "amount": amount,
                "refunded": payment["refunded"]}


class Notifier:
    """Sends the webhooks when they are due, signed, again with backoff until the cloud answers 2xx."""

    def __init__(self, books: Books, url: str, secret: bytes, timeout_s: float):
        self.books, self.url, self.secret = books, url, secret
        self.http = httpx.Client(timeout=timeout_s)
        self.queue: list[tuple[float, int, str]] = []
        self.count = 0
        self.wake = threading.Condition()
        self.stopped = False

    def schedule(self, record: dict, at: float) -> None:
        with self.wake:
            self.count += 1
            heapq.heappush(self.queue, (at, self.count, record["event"]["id"]))
            self.wake.notify()

    def run(self) -> None:
        while True:
            with self.wake:
                while not self.stopped and (not self.queue or self.queue[0][0] > time.time()):
                    self.wake.wait(None if not self.queue else max(0.0, self.queue[0][0] - time.time()))
                if self.stopped:
                    return
                _, _, event_id = heapq.heappop(self.queue)
            self.deliver(event_id)

    def deliver(self, event_id: str) -> None:
        record = self.books.events[event_id]
        body = json.dumps(record["event"], separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(self.secret, timestamp, body),
                   "Content-Type": "application/json"}
        record["attempts"] += 1
        record["last"] = {"headers": headers, "body": body.decode()}
        try:
            code = self.http.post(self.url, content=body, headers=headers).status_code
        except httpx.HTTPError as e:
            code, error = 0, str(e)
        else:
            error = ""
        record["delivered"] = record["delivered"] or 200 <= code < 300
        log.info("webhook %s (%s) to %s: %s", event_id, record["event"]["type"], self.url, code or error)
        if not 200 <= code < 300 and record["attempts"] < WEBHOOK_TRIES:
            self.schedule(record, time.time() + min(30.0, 0.5 * 2 ** (record["attempts"] - 1)))

    def stop(self) -> None:
        with self.wake:
            self.stopped = True
            self.wake.notify()
        self.http.close()


def make_handler(books: Books, notifier: Notifier):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            log.debug("%s " + fmt, self.address_string(), *args)

        def answer(self, code: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            parts = self.path.split("?")[0].strip("/").split("/")
            with books.lock:
                if parts == ["health"]:
                    return self.answer(200, {"ok": True})
                if len(parts) == 3 and parts[:2] == ["v1", "payments"] and parts[2] in books.payments:
                    return self.answer(200, books.payments[parts[2]])
                if parts == ["v1", "events"]:
                    return self.answer(200, list(books.events.values()))
            self.answer(404, {"error": f"no such resource: {self.path}"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > 64 * 1024:
                return self.answer(413, {"error": "body too large"})
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                return self.answer(400, {"error": f"the body must be a JSON object: {e}"})
            parts = self.path.strip("/").split("/")
            if len(parts) == 4 and parts[:2] == ["v1", "events"] and parts[3] == "resend":
                record = books.events.get(parts[2])
                if record is None:
                    return self.answer(404, {"error": f"no event {parts[2]}"})
                notifier.schedule(record, time.time())
                return self.answer(202, {"event": parts[2], "resending": True})
            code, answer, events = books.handle(self.path, self.headers.get("Idempotency-Key"), body, time.time())
            log.info("POST %s key=%s -> %d %s", self.path, self.headers.get("Idempotency-Key"), code,
                     answer.get("status") or answer.get("error"))
            for record in events:
                notifier.schedule(record, record["due"])
            self.answer(code, answer)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.payments.sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--webhook", required=True, help="the cloud's webhook URL, e.g. "
                        "http://127.0.0.1:8000/api/v1/payments/webhook/sandbox")
    parser.add_argument("--secret", default=os.environ.get("VEND_SANDBOX_SECRET", ""),
                        help="the webhook signing secret, shared with the cloud (env VEND_SANDBOX_SECRET)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds before an authorisation's webhook")
    parser.add_argument("--decline", default="13", help="comma-separated endings of amounts (in minor units) "
                        "that are declined; empty: none")
    parser.add_argument("--webhook-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if len(args.secret) < 16:
        parser.error("--secret (or VEND_SANDBOX_SECRET): at least 16 characters, the same as the cloud's")
    if not 0 <= args.delay <= 3600:
        parser.error("--delay: 0 to 3600 seconds")
    suffixes = tuple(s.strip() for s in args.decline.split(",") if s.strip())
    if not all(s.isdigit() for s in suffixes):
        parser.error(f"--decline {args.decline!r}: digits, comma-separated (e.g. 13 or 13,99)")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    books = Books(suffixes, args.delay)
    notifier = Notifier(books, args.webhook, args.secret.encode(), args.webhook_timeout)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(books, notifier))
    server.daemon_threads = True
    sender = threading.Thread(target=notifier.run, name="webhooks", daemon=True)
    sender.start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log.info("sandbox provider on http://%s:%d; webhooks to %s after %.1f s; declining amounts ending in %s",
             args.host, args.port, args.webhook, args.delay, ", ".join(suffixes) or "nothing")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        notifier.stop()
        server.server_close()
    return 0

