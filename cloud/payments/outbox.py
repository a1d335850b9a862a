"""The outbox every external payment platform's provider is built on (Stripe, Alipay, WeChat Pay).

A call in the order flow never waits for the network: ``authorise``, ``capture``, ``void``, ``refund`` and
``charge`` write one row into ``payment_ops`` in the caller's transaction (the outbox, and the provider's
idempotency record: ``"{op}:{caller's key}"``, unique per provider). A worker thread sends each row
afterwards through the subclass's ``send`` (one call to the platform, the row's key as the platform's
idempotency key), outside any transaction, and records the answer:

- ``Unreachable`` (a timeout, a connection error, a 5xx or 429): the row is tried again later with
  exponential backoff, under the same key; before it is sent again, the platform is asked what it knows of
  it (``query``), so an authorisation whose answer was lost is neither sent twice nor voided blind;
- ``pending``: the platform accepted it and will say (a signed notification, the customer's return);
- ``succeeded``, ``declined`` or ``failed``: final. A confirmed capture, refund or charge is posted to the
  journal against the provider's boundary account (``"{name}:{op key}"``). A capture that fails after the
  drop is logged as an error, counted, and listed by reconciliation (``sold_not_captured``).

The platform's later word (a verified notification, a return page) goes through ``record``. When an
authorisation becomes final outside the order flow (the worker, a return page) the cloud is told through
``on_authorisation`` (set by ``cloud/service.py``), which moves the order and sends the vend.

``cloud/payments/sandbox/`` predates this module and keeps its own table (``sandbox_ops``) with the same
mechanism; moving it here is a clean-up for later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, insert_ignore, metadata, utcnow
from cloud.accounts.journal import IdempotencyConflict, PaymentError, account, post
from cloud.payments import mandates
from cloud.payments.provider import Outcome, Payable, Provider, Step, check_amount, refund_amount
from cloud.payments.webhook import Event

log = logging.getLogger(__name__)

payment_ops = sa.Table(
    "payment_ops", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("key", sa.String(160), nullable=False),  # "{op}:{caller's key}"
    sa.Column("op", sa.String(10), nullable=False),  # authorise, capture, void, refund, charge
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),  # queued, pending, succeeded, declined, failed, cancelled
    sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_try_at", UTCDateTime, nullable=False),
    sa.Column("platform_ref", sa.String(100), nullable=False, server_default=""),  # the platform's id for it
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),  # JSON: for send, and for the customer
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("provider", "key", name="payment_ops_key"),
    sa.Index("payment_ops_due", "provider", "status", "next_try_at"),
    sa.Index("payment_ops_order", "provider", "order_id"),
)

OPS = ("authorise", "capture", "void", "refund", "charge")
OPEN = ("queued", "pending")
FINAL = ("succeeded", "declined", "failed", "cancelled")
LEASE_S = 60.0  # a row claimed by a worker that died is sent again after this
POLL_S = 1.0
MAX_BACKOFF_S = 300.0


class Unreachable(RuntimeError):
    """The platform did not answer (a timeout, a connection error, a 5xx or 429): try again later."""


@dataclass(frozen=True)
class Sent:
    """The platform's answer to one request. ``status``: pending (it will say), succeeded, declined (a final
    no), failed (the request was refused)."""

    status: str
    reason: str = ""
    platform_ref: str = ""
    detail: dict | None = None  # merged into the row's detail (e.g. {"action_url": ...})

    def __post_init__(self):
        if self.status not in ("pending", "succeeded", "declined", "failed"):
            raise ValueError(f"a platform's answer is pending, succeeded, declined or failed, not {self.status!r}")


def outcome_of(row) -> Outcome:
    """What a request recorded before answers now."""
    if row.status in OPEN:
        return Outcome(True, created=False, pending=True, amount=row.amount)
    if row.status == "succeeded":
        return Outcome(True, row.reason, created=False, amount=row.amount)
    return Outcome(False, row.reason or row.status, created=False, amount=row.amount)


def detail_of(row) -> dict:
    try:
        found = json.loads(row.detail or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


class Outbox(Provider):
    """A provider whose platform is reached over the network, through the outbox above. A subclass sets
    ``name`` and ``boundary`` and implements ``send`` and ``query`` (and ``prepare`` if its requests need
    more than the order)."""

    name = "outbox"
    boundary = ""
    can_charge = False  # may a product that dropped after its order was closed be charged afresh?

    def __init__(self, live: bool = True, confirm_timeout_s: float = 60.0, counts: Counter | None = None):
        """``live`` False: an idle provider that only queues (its settings are gone; the orders placed while
        they were set wait for them)."""
        self.live = live
        self.confirm_timeout_s = confirm_timeout_s
        self.counts: Counter = Counter() if counts is None else counts
        self.on_authorisation: Callable[[str, bool, str], None] | None = None
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what a subclass provides -------------------------------------------------------------------

    def prepare(self, conn: sa.Connection, op: str, order: Payable, now: datetime) -> dict:
        """What ``send`` will need besides the row (kept in its ``detail``), read in the caller's
        transaction: e.g. the customer's mandate. Raise ``mandates.MandateMissing`` when there is none."""
        return {}

    def send(self, op) -> Sent:
        """Make the request of one queued row; raise Unreachable if the platform did not answer."""
        raise NotImplementedError

    def query(self, op) -> Sent | None:
        """What the platform knows of a row sent before whose answer never came; None: nothing."""
        return None

    def settled(self, conn: sa.Connection, op, sent: Sent, now: datetime) -> None:
        """Called in the transaction that records a final answer (e.g. to revoke a mandate the platform
        says is gone)."""

    # -- the provider contract ----------------------------------------------------------------------

    def _queue(self, conn, op: str, order: Payable, amount: int, key: str, now: datetime,
               detail: dict | None = None, status: str = "queued", reason: str = "") -> Outcome:
        full_key = f"{op}:{key}"
        row = dict(provider=self.name, key=full_key, op=op, order_id=order.id, customer_id=order.customer_id,
                   amount=amount, currency=order.currency, status=status, reason=reason, attempts=0,
                   next_try_at=now, platform_ref="", detail=json.dumps(detail or {}, sort_keys=True),
                   created_at=now, updated_at=now)
        if conn.execute(insert_ignore(conn, payment_ops).values(**row).returning(payment_ops.c.id)).first() is not None:
            if status == "queued":
                return Outcome(True, pending=True, amount=amount)
            return outcome_of(_RowLike(row))
        before = self._row(conn, full_key)
        if (before.op, before.order_id, before.amount, before.currency) != (op, order.id, amount, order.currency):
            raise IdempotencyConflict(f"key {full_key} was used for another request ({before.op} of "
                                      f"{before.amount} {before.currency} on order {before.order_id})")
        return outcome_of(before)

    def _row(self, conn, full_key: str):
        return conn.execute(sa.select(payment_ops).where(payment_ops.c.provider == self.name,
                                                         payment_ops.c.key == full_key)).first()

    def _ops(self, conn, order_id: str, *ops: str) -> list:
        return conn.execute(sa.select(payment_ops).where(
            payment_ops.c.provider == self.name, payment_ops.c.order_id == order_id, payment_ops.c.op.in_(ops))
            .order_by(payment_ops.c.id)).all()

    def _once(self, conn, order: Payable, steps: tuple[str, ...], key: str, what: str) -> None:
        for other in self._ops(conn, order.id, *steps):
            if other.key != key and other.status != "cancelled":
                raise PaymentError(f"order {order.id} has a {other.op} already (under another key): cannot {what} it")

    def authorisation(self, conn, order_id: str):
        """The order's authorisation row, or None."""
        found = self._ops(conn, order_id, "authorise")
        return found[0] if found else None

    def authorise(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        check_amount(order.amount)
        self._once(conn, order, ("authorise",), f"authorise:{key}", "authorise")
        if self._row(conn, f"authorise:{key}") is None:
            detail = self.prepare(conn, "authorise", order, now)
        else:
            detail = None  # a repeat: the first answer stands
        return self._queue(conn, "authorise", order, order.amount, key, now, detail)

    def capture(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        self._once(conn, order, ("capture", "void"), f"capture:{key}", "capture")
        auth = self.authorisation(conn, order.id)
        if auth is None or auth.status != "succeeded" or auth.amount != order.amount:
            raise PaymentError(f"order {order.id} has no confirmed authorisation of {order.amount} to capture")
        return self._queue(conn, "capture", order, order.amount, key, now,
                           {**self.prepare(conn, "capture", order, now), "authorisation": auth.platform_ref})

    def void(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        self._once(conn, order, ("capture", "void"), f"void:{key}", "void")
        auth = self.authorisation(conn, order.id)
        if auth is None:
            raise PaymentError(f"order {order.id} was never authorised: nothing to void")
        if auth.status == "queued" and auth.attempts == 0:
            # Never sent: cancel it, and the void has nothing to release.
            conn.execute(payment_ops.update().where(payment_ops.c.id == auth.id, payment_ops.c.status == "queued",
                                                    payment_ops.c.attempts == 0)
                         .values(status="cancelled", reason="voided before it was sent", updated_at=now))
            return self._queue(conn, "void", order, order.amount, key, now, status="succeeded",
                               reason="nothing was held")
        if auth.status in ("declined", "failed", "cancelled"):
            return self._queue(conn, "void", order, order.amount, key, now, status="succeeded",
                               reason=f"nothing was held (the authorisation {auth.status})")
        return self._queue(conn, "void", order, order.amount, key, now,
                           {**self.prepare(conn, "void", order, now), "authorisation": auth.platform_ref})

    def void_late(self, conn, order: Payable, event_id: str, now: datetime) -> Outcome:
        """Release an authorisation confirmed after its order stopped waiting for it."""
        auth = self.authorisation(conn, order.id)
        return self._queue(conn, "void", order, order.amount, f"{order.id}:late:{event_id}", now,
                           {"authorisation": auth.platform_ref if auth is not None else ""})

    def charge(self, conn, order: Payable, key: str, now: datetime) -> Outcome:
        """A product that dropped after its order was closed, charged afresh on the customer's mandate
        (off-session) where the platform allows it (``can_charge``)."""
        if not self.can_charge:
            return super().charge(conn, order, key, now)
        return self._queue(conn, "charge", order, order.amount, key, now, self.prepare(conn, "charge", order, now))

    def story(self, conn, order: Payable) -> list[Step]:
        return [Step(r.created_at, r.op, r.amount, r.status, r.reason, r.platform_ref)
                for r in self._ops(conn, order.id, *OPS)]

    def refunded(self, conn, order: Payable) -> tuple[int, int]:
        rows = self._ops(conn, order.id, "capture", "charge", "refund")
        captured = sum(r.amount for r in rows if r.op in ("capture", "charge") and r.status == "succeeded")
        refunded = sum(r.amount for r in rows if r.op == "refund" and r.status in ("queued", "pending", "succeeded"))
        return captured, refunded

    def refund(self, conn, order: Payable, amount: int | None, key: str, now: datetime) -> Outcome:
        full_key = f"refund:{key}"
        before = self._row(conn, full_key)
        if before is not None:
            if before.order_id != order.id or amount not in (None, before.amount):
                raise IdempotencyConflict(f"key {full_key} was used for another request ({before.op} of "
                                          f"{before.amount} on order {before.order_id})")
            return outcome_of(before)
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(payment_ops.c.id).where(payment_ops.c.provider == self.name,
                                                           payment_ops.c.order_id == order.id).with_for_update())
        captured, refunded = self.refunded(conn, order)
        if captured == 0 and any(r.status in OPEN for r in self._ops(conn, order.id, "capture", "charge")):
            raise PaymentError(f"order {order.id}: {self.name} has not confirmed the capture yet; try again shortly")
        paid = [r for r in self._ops(conn, order.id, "capture", "charge") if r.status == "succeeded"]
        return self._queue(conn, "refund", order, refund_amount(amount, captured, refunded, order.id), key, now,
                           {**self.prepare(conn, "refund", order, now),
                            "payment": paid[-1].platform_ref if paid else ""})

    def action_url(self, conn, order: Payable) -> str | None:
        """Where the customer confirms a pending authorisation themselves (3-D Secure, a JSAPI payment)."""
        auth = self.authorisation(conn, order.id)
        if auth is None or auth.status not in OPEN:
            return None
        return detail_of(auth).get("action_url") or None

    # -- the platform's later word -------------------------------------------------------------------

    def record(self, conn, order_id: str, op: str, sent: Sent, now: datetime, amount: int | None = None,
               currency: str | None = None) -> bool:
        """Record the platform's word on the order's open ``op`` (a verified notification, a return page);
        False if no such op waits, or the amount or currency differ from what was asked (tampered)."""
        rows = [r for r in self._ops(conn, order_id, op) if r.status in OPEN]
        if not rows:
            return False
        row = rows[-1]
        if (amount is not None and amount != row.amount) or (currency is not None and currency != row.currency):
            self.counts[f"{self.name}_amount_mismatch"] += 1
            log.error("%s: the word on %s %s names %s %s, not the %d %s asked; ignored", self.name, op, row.key,
                      amount, currency, row.amount, row.currency)
            return False
        return self._settle_row(conn, row, sent, now, open_only=True)

    def confirm(self, conn, event: Event, now: datetime) -> bool:
        """The webhook route's call: an authorisation the platform confirmed or declined."""
        sent = Sent("succeeded" if event.succeeded else "declined", event.reason)
        return self.record(conn, event.order_id, "authorise", sent, now, event.amount, event.currency)

    def notified(self, conn, event: Event, now: datetime) -> str:
        """A verified notification that is not an authorisation's (those the webhook route takes): a mandate
        set up (``mandate.activated``, data: customer_id, reference, detail) or withdrawn
        (``mandate.revoked``, data: reference), or the platform's word on a capture, void, refund or charge
        (``op.succeeded``, ``op.declined``, ``op.failed``; data: op, platform_ref). Returns what it did."""
        data = event.data or {}
        if event.type == "mandate.activated":
            done = mandates.activate(conn, int(data["customer_id"]), self.name, str(data["reference"]), now,
                                     data.get("detail"))
            return "mandate activated" if done else "no mandate was being set up for that customer"
        if event.type == "mandate.revoked":
            customer = mandates.revoke(conn, self.name, str(data["reference"]), now)
            return f"mandate of customer {customer} revoked" if customer is not None else "no such active mandate"
        if event.type in ("op.succeeded", "op.declined", "op.failed") and data.get("op") in OPS[1:]:
            sent = Sent(event.type[3:], event.reason, str(data.get("platform_ref", "")))
            done = self.record(conn, event.order_id, data["op"], sent, now, event.amount or None,
                               event.currency or None)
            return f"{data['op']} {sent.status}" if done else f"no {data['op']} of that order waits"
        return f"{event.type}: nothing to do"

    def _settle_row(self, conn, row, sent: Sent, now: datetime, open_only: bool = False) -> bool:
        where = [payment_ops.c.id == row.id]
        if open_only:
            where.append(payment_ops.c.status.in_(OPEN))
        else:
            where += [payment_ops.c.status == "queued", payment_ops.c.attempts == row.attempts + 1]
        values = dict(status=sent.status, reason=sent.reason[:200], updated_at=now)
        if sent.platform_ref:
            values["platform_ref"] = sent.platform_ref[:100]
        if sent.detail:
            values["detail"] = json.dumps({**detail_of(row), **sent.detail}, sort_keys=True)
        if not conn.execute(payment_ops.update().where(*where).values(**values)).rowcount:
            return False
        if sent.status == "succeeded" and row.op in ("capture", "charge", "refund"):
            outside, revenue = account(conn, self.boundary, 0, row.currency), account(conn, "revenue", 0, row.currency)
            legs = [(outside, -row.amount), (revenue, row.amount)]
            post(conn, f"{self.name}:{row.key}", "refund" if row.op == "refund" else "capture",
                 legs if row.op != "refund" else [(a, -m) for a, m in legs], now, row.order_id)
        if sent.status == "failed":
            self.counts[f"{self.name}_refused"] += 1
            log.error("%s refused %s %s for order %s: %s", self.name, row.op, row.key, row.order_id, sent.reason)
        if sent.status != "pending":
            self.settled(conn, row, sent, now)
        return True

    # -- the worker ----------------------------------------------------------------------------------

    def deliver_due(self, engine: sa.Engine, clock=utcnow, limit: int = 50) -> int:
        """Send the rows that are due, each claimed first so two workers do not both send it; return how
        many were handled."""
        now = clock()
        with engine.begin() as conn:
            due = conn.execute(sa.select(payment_ops).where(
                payment_ops.c.provider == self.name, payment_ops.c.status == "queued",
                payment_ops.c.next_try_at <= now).order_by(payment_ops.c.id).limit(limit)).all()
            mine = [op for op in due if conn.execute(payment_ops.update().where(
                payment_ops.c.id == op.id, payment_ops.c.status == "queued", payment_ops.c.attempts == op.attempts)
                .values(attempts=op.attempts + 1, next_try_at=now + timedelta(seconds=LEASE_S))).rowcount]
        down = ""
        for op in mine:
            sent, error = None, down
            if not down:  # once the platform did not answer, the rest of this round waits for the next
                try:
                    # Sent before and no answer came: ask before sending again.
                    sent = self.query(op) if op.attempts > 0 else None
                    if sent is None:
                        sent = self.send(op)
                except Unreachable as e:
                    error = down = str(e) or type(e).__name__
            with engine.begin() as conn:
                recorded = self._record_answer(conn, op, sent, error, clock())
            if recorded and op.op == "authorise" and sent is not None and sent.status != "pending":
                self._tell(op.order_id, sent)
        return len(mine)

    def _record_answer(self, conn, op, sent: Sent | None, error: str, now: datetime) -> bool:
        if sent is None:
            wait = min(MAX_BACKOFF_S, 2.0 ** min(op.attempts + 1, 16))
            conn.execute(payment_ops.update().where(payment_ops.c.id == op.id, payment_ops.c.status == "queued",
                                                    payment_ops.c.attempts == op.attempts + 1)
                         .values(next_try_at=now + timedelta(seconds=wait), reason=error[:200], updated_at=now))
            self.counts[f"{self.name}_unreachable"] += 1
            log.warning("%s: %s %s not delivered (try %d, next in %.0f s): %s", self.name, op.op, op.key,
                        op.attempts + 1, wait, error)
            return False
        if not self._settle_row(conn, op, sent, now):
            log.info("%s: %s %s changed while it was being sent; its answer (%s) is not recorded", self.name, op.op,
                     op.key, sent.status)
            return False
        log.info("%s: %s %s for order %s: %s", self.name, op.op, op.key, op.order_id, sent.status)
        return True

    def _tell(self, order_id: str, sent: Sent) -> None:
        if self.on_authorisation is not None:
            try:
                self.on_authorisation(order_id, sent.status == "succeeded", sent.reason)
            except Exception:  # noqa: BLE001 - the order's sweeper finds it if this fails
                log.exception("%s: moving order %s on after its authorisation failed", self.name, order_id)

    def tell(self, order_id: str, ok: bool, reason: str = "") -> None:
        """For a provider's return page: an authorisation it recorded (``record``) became final."""
        self._tell(order_id, Sent("succeeded" if ok else "declined", reason))

    def start(self, engine: sa.Engine) -> None:
        if not self.live:
            return

        def loop():
            while not self._stop.is_set():
                if self._kick.wait(POLL_S):
                    time.sleep(0.02)  # a kick from inside a transaction comes before its commit
                self._kick.clear()
                try:
                    while self.deliver_due(engine) and not self._stop.is_set():
                        pass
                except Exception:  # noqa: BLE001 - a database hiccup must not end the worker
                    log.exception("%s worker failed; will try again", self.name)
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()

    def kick(self) -> None:
        self._kick.set()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    answer_timeout_s = 10.0

    def answer(self, engine: sa.Engine, key: str) -> str | None:
        """The status of the request under ``key`` once the platform answered it, or "pending"."""
        if not self.live:
            return None
        self.kick()
        deadline = time.monotonic() + self.answer_timeout_s
        while True:
            with engine.connect() as conn:
                row = self._row(conn, key)
            if row is None:
                return None
            if row.status in FINAL or time.monotonic() >= deadline:
                return {"queued": "pending"}.get(row.status, row.status)
            time.sleep(0.05)

    def reported(self, conn: sa.Connection, lo: datetime | None = None, hi: datetime | None = None,
                 order_ids: list[str] | None = None) -> list:
        """The captures the platform confirmed: (key, order_id, amount, currency), for reconciliation."""
        return reported_by(self.name)(conn, lo, hi, order_ids)


class _RowLike:
    """A dict as a row (attribute access), for the answer of a row just written."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


def reported_by(name: str):
    """``ProviderSpec.reported`` for the provider ``name``: the captures and charges it confirmed, as
    (key prefixed "{name}:", order_id, amount, currency)."""

    def reported(conn: sa.Connection, lo: datetime | None = None, hi: datetime | None = None,
                 order_ids: list[str] | None = None) -> list:
        q = sa.select(payment_ops.c.key, payment_ops.c.order_id, payment_ops.c.amount, payment_ops.c.currency).where(
            payment_ops.c.provider == name, payment_ops.c.op.in_(("capture", "charge")),
            payment_ops.c.status == "succeeded")
        if order_ids is not None:
            q = q.where(payment_ops.c.order_id.in_(order_ids))
        if lo is not None:
            q = q.where(payment_ops.c.updated_at >= lo, payment_ops.c.updated_at < hi)
        return conn.execute(q).all()

    return reported
