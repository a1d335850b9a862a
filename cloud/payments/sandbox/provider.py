"""The sandbox provider, as the cloud sees it: an external service reached over HTTP, like WeChat Pay,
Alipay or Stripe.

A call in the order flow never waits for the network: it writes the request into ``sandbox_ops`` in the
caller's transaction (an outbox, which is also this provider's idempotency record), and a worker thread
sends it afterwards, with timeouts, retries and the row's key as the ``Idempotency-Key``, so a request
sent twice (a retry after a lost reply, two cloud processes) takes effect once. The sandbox confirms an
authorisation later, through the signed webhook (``cloud/payments/webhook.py``); captures, voids and
refunds it answers at once, and what it confirmed is posted to the journal against its boundary account
(``BOUNDARY``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa

from cloud.core.db import UTCDateTime, bulk_insert, db_value, insert_ignore, metadata, utcnow
from cloud.accounts.journal import IdempotencyConflict, PaymentError, account, post
from cloud.payments.provider import Outcome, Payable, Provider, check_amount, refund_amount
from cloud.payments.webhook import Event

log = logging.getLogger(__name__)

ops = sa.Table(
    "sandbox_ops", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(160), nullable=False, unique=True),  # "{op}:{caller's key}"
    sa.Column("op", sa.String(10), nullable=False),  # authorise, capture, void, refund
    sa.Column("order_id", sa.String(64), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    # queued (to send, or to send again), pending (sent; the webhook will say), succeeded, declined,
    # failed (the sandbox refused the request), cancelled (never needed after all)
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_try_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("sandbox_ops_due", "status", "next_try_at"),
)

OP_COLUMNS = ("key", "op", "order_id", "amount", "currency", "status", "reason", "attempts", "next_try_at",
              "created_at", "updated_at")
LEASE_S = 60.0  # a request claimed by a worker that died is sent again after this
POLL_S = 1.0  # for requests queued by another cloud process, or due again; this one's own kick the worker
MAX_BACKOFF_S = 300.0
FINAL = ("succeeded", "declined", "failed", "cancelled")
NAME = "sandbox"  # how customers choose it, and the registry knows it
BOUNDARY = "sandbox"  # the journal account of what the sandbox owes us


class Unreachable(RuntimeError):
    """The sandbox did not answer (or answered 5xx) through every retry."""


@dataclass(frozen=True)
class Reply:
    code: int
    body: dict


class SandboxClient:
    """HTTP to the sandbox service, with a timeout on every request and retries of what may not have
    arrived (a connection error, a timeout, a 5xx or 429); a 4xx is an answer, not retried."""

    def __init__(self, url: str, timeout_s: float, retries: int, transport=None, sleep=time.sleep):
        self.url = url.rstrip("/")
        self.retries = retries
        self.sleep = sleep
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)

    def send(self, path: str, key: str, body: dict) -> Reply:
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(min(2.0, 0.2 * 2 ** (attempt - 1)))
            try:
                r = self.http.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code >= 500 or r.status_code == 429:
                last = f"HTTP {r.status_code}"
                continue
            try:
                answer = r.json()
            except ValueError:
                answer = {}
            return Reply(r.status_code, answer if isinstance(answer, dict) else {})
        raise Unreachable(f"sandbox at {self.url} did not answer {path} ({self.retries + 1} tries; last: {last})")

    def close(self) -> None:
        self.http.close()


def request_of(op) -> tuple[str, dict]:
    """The sandbox's path and body for one queued request; payments are named by our order id."""
    if op.op == "authorise":
        return "/v1/payments", {"reference": op.order_id, "amount": op.amount, "currency": op.currency}
    path = f"/v1/payments/{op.order_id}/" + {"capture": "capture", "void": "void", "refund": "refunds"}[op.op]
    return path, ({} if op.op == "void" else {"amount": op.amount})


class Sandbox(Provider):
    """The sandbox external provider: requests queued in the caller's transaction, sent by a worker."""

    name = NAME

    def __init__(self, client: SandboxClient | None, confirm_timeout_s: float = 60.0, counts: Counter | None = None):
        self.client = client
        self.confirm_timeout_s = confirm_timeout_s
        self.counts: Counter = Counter() if counts is None else counts
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the provider interface: each call queues one keyed request ----------------------------------

    def _queue(self, conn, op: str, order: Payable, amount: int, key: str, now: datetime) -> Outcome:
        full_key = f"{op}:{key}"
        row = dict(key=full_key, op=op, order_id=order.id, amount=amount, currency=order.currency, status="queued",
                   reason="", attempts=0, next_try_at=now, created_at=now, updated_at=now)
        if conn.execute(insert_ignore(conn, ops).values(**row).returning(ops.c.id)).first() is not None:
            return Outcome(True, pending=True, amount=amount)
        before = conn.execute(sa.select(ops).where(ops.c.key == full_key)).one()
        if (before.op, before.order_id, before.amount, before.currency) != (op, order.id, amount, order.currency):
            raise IdempotencyConflict(f"key {full_key} was used for another request ({before.op} of "
                                      f"{before.amount} {before.currency} on order {before.order_id})")
        return outcome_of(before)

    def _once(self, conn, order: Payable, steps: tuple[str, ...], key: str, what: str) -> None:
        for other in conn.execute(sa.select(ops.c.key).where(ops.c.order_id == order.id, ops.c.op.in_(steps),
                                                             ops.c.status != "cancelled")).scalars():
            if other != key:
                raise PaymentError(f"order {order.id} has a {other.split(':')[0]} already (under another key): "
                                   f"cannot {what} it")

    def _authorisation(self, conn, order: Payable):
        return conn.execute(sa.select(ops).where(ops.c.order_id == order.id, ops.c.op == "authorise")
                            .order_by(ops.c.id)).first()

    def authorise(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        check_amount(order.amount)
        self._once(conn, order, ("authorise",), f"authorise:{key}", "authorise")
        return self._queue(conn, "authorise", order, order.amount, key, now)

    def capture(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        self._once(conn, order, ("capture", "void"), f"capture:{key}", "capture")
        auth = self._authorisation(conn, order)
        if auth is None or auth.status != "succeeded" or auth.amount != order.amount:
            raise PaymentError(f"order {order.id} has no confirmed authorisation of {order.amount} to capture")
        return self._queue(conn, "capture", order, order.amount, key, now)

    def void(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        self._once(conn, order, ("capture", "void"), f"void:{key}", "void")
        if self._authorisation(conn, order) is None:
            raise PaymentError(f"order {order.id} was never authorised: nothing to void")
        # An authorisation not sent yet need not be: cancel it (the void then finds nothing held).
        conn.execute(ops.update().where(ops.c.order_id == order.id, ops.c.op == "authorise", ops.c.status == "queued")
                     .values(status="cancelled", reason="voided before it was sent", updated_at=now))
        return self._queue(conn, "void", order, order.amount, key, now)

    def charge(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        """Not charged: a product that dropped after its order was voided stays ``dropped_unpaid``.

        The sandbox names a payment by our order id, and that payment was voided; a fresh charge would be
        a new payment under another reference, authorised asynchronously (a webhook seconds later, or a
        decline) and then captured, a round trip the ingest's transaction cannot wait for, and one the
        customer never approved (a real platform would ask them: an Alipay or WeChat Pay order needs
        their confirmation). So nothing is queued; the order, the alert and reconciliation show the drop,
        and a person settles it with the customer."""
        return Outcome(False, "the sandbox cannot charge again after a void without the customer")

    def void_late(self, conn, order: Payable, event_id: str, now: datetime) -> Outcome:
        """Release an authorisation confirmed after its order stopped waiting for it."""
        return self._queue(conn, "void", order, order.amount, f"{order.id}:late:{event_id}", now)

    def refunded(self, conn, order: Payable) -> tuple[int, int]:
        rows = conn.execute(sa.select(ops.c.op, ops.c.status, ops.c.amount).where(
            ops.c.order_id == order.id, ops.c.op.in_(("capture", "refund")))).all()
        captured = sum(r.amount for r in rows if r.op == "capture" and r.status == "succeeded")
        # A refund on its way counts already: two refunds must not both spend the same amount.
        refunded = sum(r.amount for r in rows if r.op == "refund" and r.status in ("queued", "pending", "succeeded"))
        return captured, refunded

    def refund(self, conn, order: Payable, amount: int | None, key: str, now: datetime) -> Outcome:
        full_key = f"refund:{key}"
        before = conn.execute(sa.select(ops).where(ops.c.key == full_key)).first()
        if before is not None:
            if before.op != "refund" or before.order_id != order.id or amount not in (None, before.amount):
                raise IdempotencyConflict(f"key {full_key} was used for another request ({before.op} of "
                                          f"{before.amount} on order {before.order_id})")
            return outcome_of(before)
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(ops.c.id).where(ops.c.order_id == order.id, ops.c.op == "capture")
                         .with_for_update())
        captured, refunded = self.refunded(conn, order)
        if captured == 0 and self._capture_on_its_way(conn, order):
            raise PaymentError(f"order {order.id}: the sandbox has not confirmed the capture yet; try again shortly")
        return self._queue(conn, "refund", order, refund_amount(amount, captured, refunded, order.id), key, now)

    def _capture_on_its_way(self, conn, order: Payable) -> bool:
        return conn.execute(sa.select(ops.c.id).where(ops.c.order_id == order.id, ops.c.op == "capture",
                                                      ops.c.status.in_(("queued", "pending")))).first() is not None

    def settle(self, conn, items: list[tuple[object, str]], now: datetime) -> None:
        """Queue many captures and voids in one statement (the ingest's path); each key is the order id."""
        stamp = db_value(conn, ops.c.created_at, now)
        bulk_insert(conn, ops, OP_COLUMNS, [(f"{a}:{o.id}", a, o.id, o.amount, o.currency, "queued", "", 0, stamp,
                                             stamp, stamp) for o, a in items])
        self.kick()  # the worker may look before this commits; its next poll finds them then

    def confirm(self, conn, event: Event, now: datetime) -> bool:
        """Record the sandbox's word on an authorisation; False if it names none we are waiting for."""
        status = "succeeded" if event.succeeded else "declined"
        return conn.execute(ops.update().where(
            ops.c.order_id == event.order_id, ops.c.op == "authorise", ops.c.amount == event.amount,
            ops.c.currency == event.currency, ops.c.status.in_(("queued", "pending")))
            .values(status=status, reason=event.reason, updated_at=now)).rowcount == 1

    # -- the worker: sends what is queued ------------------------------------------------------------

    def deliver_due(self, engine: sa.Engine, clock=utcnow, limit: int = 50) -> int:
        """Send the requests that are due, each claimed first so two workers do not both send it; return
        how many were sent."""
        now = clock()
        with engine.begin() as conn:
            due = conn.execute(sa.select(ops).where(ops.c.status == "queued", ops.c.next_try_at <= now)
                               .order_by(ops.c.id).limit(limit)).all()
            mine = [op for op in due if conn.execute(ops.update().where(
                ops.c.id == op.id, ops.c.status == "queued", ops.c.attempts == op.attempts)
                .values(attempts=op.attempts + 1, next_try_at=now + timedelta(seconds=LEASE_S))).rowcount]
        down = ""
        for op in mine:
            path, body = request_of(op)
            reply, error = None, down
            if not down:  # once the sandbox did not answer, the rest of this round waits for the next
                try:
                    reply = self.client.send(path, op.key, body)
                except Unreachable as e:
                    error = down = str(e)
            with engine.begin() as conn:
                self._record(conn, op, reply, error, clock())
        return len(mine)

    def _record(self, conn, op, reply: Reply | None, error: str, now: datetime) -> None:
        mine = (ops.c.id == op.id, ops.c.status == "queued", ops.c.attempts == op.attempts + 1)
        if reply is None:
            wait = min(MAX_BACKOFF_S, 2.0 ** min(op.attempts + 1, 16))
            conn.execute(ops.update().where(*mine).values(next_try_at=now + timedelta(seconds=wait),
                                                          reason=error[:200], updated_at=now))
            self.counts["sandbox_unreachable"] += 1
            log.warning("sandbox: %s %s not delivered (try %d, next in %.0f s): %s", op.op, op.key, op.attempts + 1,
                        wait, error)
            return
        text = str(reply.body.get("error", ""))[:200]
        if op.op == "authorise":
            status, reason = ("pending", "") if reply.code < 300 else ("failed", text)
        elif op.op == "void" and reply.code == 404:
            status, reason = "succeeded", "nothing was held"  # the authorisation never reached the sandbox
        else:
            status, reason = ("succeeded", "") if reply.code < 300 else ("failed", text)
        if not conn.execute(ops.update().where(*mine).values(status=status, reason=reason, updated_at=now)).rowcount:
            log.info("sandbox: %s %s changed while it was being sent; its answer (%d) is not recorded", op.op, op.key,
                     reply.code)
            return
        log.info("sandbox: %s %s for order %s: %d, %s", op.op, op.key, op.order_id, reply.code, status)
        if status == "failed":
            self.counts["sandbox_refused"] += 1
            log.error("sandbox refused %s %s for order %s: %d %s", op.op, op.key, op.order_id, reply.code, text)
        elif op.op in ("capture", "refund") and status == "succeeded":
            outside, revenue = account(conn, BOUNDARY, 0, op.currency), account(conn, "revenue", 0, op.currency)
            legs = [(outside, -op.amount), (revenue, op.amount)]
            post(conn, f"{NAME}:{op.key}", op.op, legs if op.op == "capture" else [(a, -m) for a, m in legs], now,
                 op.order_id)

    def start(self, engine: sa.Engine) -> None:
        def loop():
            while not self._stop.is_set():
                if self._kick.wait(POLL_S):
                    # A kick from inside a transaction (the ingest's) comes before its commit: give it a
                    # moment; whatever this round still misses, the next poll finds.
                    time.sleep(0.02)
                self._kick.clear()
                try:
                    while self.deliver_due(engine) and not self._stop.is_set():
                        pass
                except Exception:  # noqa: BLE001 - a database hiccup must not end the worker
                    log.exception("sandbox worker failed; will try again")
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=loop, name="sandbox", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Send what was just queued without waiting for the next poll."""
        self._kick.set()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.client is not None:
            self.client.close()

    @property
    def answer_timeout_s(self) -> float:
        """How long a refund waits for the sandbox's answer: every try of the client, and a second to spare."""
        return (self.client.http.timeout.read or 5.0) * (self.client.retries + 1) + 1

    def answer(self, engine: sa.Engine, key: str) -> str | None:
        """The status of the request under ``key`` once the sandbox answered it (or "pending" if it has
        not within ``answer_timeout_s``); None when no sandbox is configured to answer."""
        if self.client is None:
            return None
        self.kick()
        row = self.wait(engine, key, self.answer_timeout_s)
        return None if row is None else {"queued": "pending"}.get(row.status, row.status)

    def wait(self, engine: sa.Engine, key: str, timeout_s: float):
        """The queued request under ``key`` once it is final, or as it is after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            with engine.connect() as conn:
                row = conn.execute(sa.select(ops).where(ops.c.key == key)).first()
            if row is None or row.status in FINAL or time.monotonic() >= deadline:
                return row
            time.sleep(0.05)


def outcome_of(row) -> Outcome:
    """What a request recorded before answers now."""
    if row.status in ("queued", "pending"):
        return Outcome(True, created=False, pending=True, amount=row.amount)
    if row.status == "succeeded":
        return Outcome(True, row.reason, created=False, amount=row.amount)
    return Outcome(False, row.reason or row.status, created=False, amount=row.amount)


def reported(conn: sa.Connection, lo: datetime | None = None, hi: datetime | None = None,
             order_ids: list[str] | None = None) -> list:
    """The captures the sandbox confirmed (key, order_id, amount, currency): those confirmed in [lo, hi),
    or those of ``order_ids``; what reconciliation holds the journal against."""
    q = sa.select(ops.c.key, ops.c.order_id, ops.c.amount, ops.c.currency).where(
        ops.c.op == "capture", ops.c.status == "succeeded")
    if order_ids is not None:
        q = q.where(ops.c.order_id.in_(order_ids))
    if lo is not None:
        q = q.where(ops.c.updated_at >= lo, ops.c.updated_at < hi)
    return conn.execute(q).all()
