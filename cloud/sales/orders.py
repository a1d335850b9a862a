"""Orders: one customer, one slot, one payment; settled only by what the machine's ledger says.

An order is authorised before the machine is asked to vend; with an external provider it waits in
``authorising`` until the provider's webhook confirms (``confirm``), and is declined if no word comes before
its deadline. The machine's ledger events move it on:
``vend.succeeded`` captures, ``vend.failed``, ``vend.unknown`` and ``command.rejected`` void, and an
order whose command expired without a word from the machine is voided by the sweeper. Every transition is
a conditional update in the same transaction as the money it moves, so no order is captured and voided.

A command is voided only when the machine can no longer run it (it refuses a command past its expiry):
never while it may still arrive. Should the machine drop a product for an order that is closed all the
same, the order becomes ``dropped_unpaid``, an incident the alerts and reconciliation show, and its
provider is asked to charge afresh (``dropped_charged`` when it did).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from protocol.messages import Command, format_time, parse_time

from cloud.fleet import machines
from cloud import people
from cloud.core.db import UTCDateTime, metadata
from cloud.payments import Outcome, PaymentError, Provider
from cloud.payments.mandates import MandateMissing
from cloud.sales import reports
from cloud.sales.records import PRIOR_PREFIX, sales

log = logging.getLogger(__name__)

orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("idem_key", sa.String(64), nullable=False),
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), nullable=False),
    sa.Column("slot", sa.String(3), nullable=False),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("cmd_id", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("customer_id", "idem_key", name="one_order_per_key"),
    sa.Index("orders_open", "status", "expires_at"),
    # The office's search walks these newest first, a page at a time (cloud/sales/office.py).
    sa.Index("orders_newest", "created_at", "id"),
    sa.Index("orders_by_machine", "machine_id", "created_at", "id"),
    sa.Index("orders_by_customer", "customer_id", "created_at", "id"),
)

WAITING = "authorising"  # for the provider to confirm the authorisation; no command sent yet
OPEN = ("authorised", "vending")
SETTLED = ("declined", "succeeded", "failed", "unknown", "rejected", "expired", "dropped_unpaid", "dropped_charged")


class OrderError(ValueError):
    """An order that cannot be placed; ``code`` says which page the customer should see."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def get(conn: sa.Connection, order_id: str):
    return conn.execute(sa.select(orders).where(orders.c.id == order_id)).first()


def place(conn: sa.Connection, provider: Provider, customer_id: int, machine_id: str, slot: str, idem_key: str,
          now: datetime, vend_timeout_s: float):
    """Create and authorise an order with the customer's payment method (or return the one this key made
    before). An authorisation the provider confirms later leaves the order ``authorising``."""
    existing = conn.execute(sa.select(orders).where(orders.c.customer_id == customer_id,
                                                    orders.c.idem_key == idem_key)).first()
    if existing is not None:
        return existing, False
    customer = people.get(conn, customer_id)
    if customer is None:
        raise OrderError("unknown_customer", f"There is no customer {customer_id}.")
    if customer.blocked_at is not None:
        raise OrderError("blocked", f"Customer {customer_id} is blocked from buying.")
    try:
        provider = provider.choose(customer.payment_method)
    except PaymentError:
        raise OrderError("payment_unavailable", f"Paying by {customer.payment_method} is not available right now.") \
            from None
    machine = machines.get(conn, machine_id)
    if machine.retired_at is not None:
        raise OrderError("retired", f"Machine {machine.name} is retired: it sells no more.")
    item = machines.slot_for_sale(conn, machine_id, slot)
    if item is None:
        raise OrderError("unknown_slot", f"Machine {machine.name} has no slot {slot}.")
    if item.flagged:
        raise OrderError("out_of_service", f"Slot {slot} is out of service.")
    if item.count <= 0:
        raise OrderError("sold_out", f"{item.name} in slot {slot} is sold out.")
    if not machine.online:
        raise OrderError("offline", f"Machine {machine.name} is offline right now.")
    if not provider.takes(item.currency):
        raise OrderError("currency", f"Paying by {provider.name} takes {', '.join(provider.currencies)} only; "
                                     f"{machine.name} sells in {item.currency}.")
    order_id = "o" + secrets.token_hex(10)
    try:
        with conn.begin_nested():
            conn.execute(orders.insert().values(
                id=order_id, customer_id=customer_id, idem_key=idem_key, machine_id=machine_id, slot=slot,
                product_id=item.product_id, amount=item.price, currency=item.currency, provider=provider.name,
                status="created", cmd_id=f"v-{order_id}", created_at=now,
                expires_at=now + timedelta(seconds=vend_timeout_s), updated_at=now))
    except sa.exc.IntegrityError:
        # The same key placed at the same moment (a double tap; PostgreSQL lets both transactions read "no
        # order yet" and the second insert waits on the first's key): the first one's order is the answer.
        existing = conn.execute(sa.select(orders).where(orders.c.customer_id == customer_id,
                                                        orders.c.idem_key == idem_key)).first()
        if existing is None:
            raise
        return existing, False
    order = get(conn, order_id)
    try:
        outcome = provider.authorise(conn, order, order_id, now)
    except MandateMissing as e:
        # Their card, agreement or openid is gone (withdrawn at the platform, never finished): the caller's
        # transaction rolls back, so no order is left, and the shop asks them to choose again.
        raise OrderError("no_mandate", str(e)) from None
    status, reason = ("authorised", "") if outcome.ok else ("declined", outcome.reason)
    values = dict(status=status, reason=reason, updated_at=now)
    if outcome.ok and outcome.pending:
        # The order's deadline is first the provider's: no word by then, and it is declined.
        values.update(status=WAITING, expires_at=now + timedelta(seconds=provider.confirm_timeout_s))
    conn.execute(orders.update().where(orders.c.id == order_id).values(**values))
    return get(conn, order_id), True


def confirm(conn: sa.Connection, order_id: str, ok: bool, reason: str, now: datetime, vend_timeout_s: float):
    """The provider's word on an authorisation it was asked for: the order if it moved (to ``authorised``,
    to be vended now, or to ``declined``), else None (it stopped waiting, or never did)."""
    values = dict(status="authorised", reason="", expires_at=now + timedelta(seconds=vend_timeout_s)) if ok else \
        dict(status="declined", reason=(reason or "declined by the payment provider")[:200])
    moved = conn.execute(orders.update().where(orders.c.id == order_id, orders.c.status == WAITING)
                         .values(updated_at=now, **values)).rowcount
    return get(conn, order_id) if moved else None


REFUNDABLE = ("succeeded", "dropped_charged")


def refund(conn: sa.Connection, provider: Provider, order_id: str, amount: int | None, key: str,
           now: datetime) -> tuple[object, Outcome]:
    """Refund part or all of a sale through its provider, idempotent under ``key``; (order, outcome)."""
    query = sa.select(orders).where(orders.c.id == order_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # one refund of an order at a time
    order = conn.execute(query).first()
    if order is None:
        raise OrderError("unknown_order", f"There is no order {order_id}.")
    if order.status not in REFUNDABLE:
        raise OrderError("not_captured", f"Order {order_id} is {order.status}: only a sale whose product dropped "
                                         "was charged, so only that can be refunded.")
    return order, provider.refund(conn, order, amount, key, now)


def vend_command(order) -> Command:
    return Command(order.cmd_id, "vend", format_time(order.created_at), format_time(order.expires_at),
                   {"order_id": order.id, "slot": order.slot})


def move(conn, order_id: str, machine_id: str, from_states: tuple, to: str, now: datetime, reason: str = ""):
    """Move an order between states if it is in one of ``from_states``; return the order if it moved."""
    moved = conn.execute(orders.update().where(
        orders.c.id == order_id, orders.c.machine_id == machine_id, orders.c.status.in_(from_states))
        .values(status=to, reason=reason[:200], updated_at=now)).rowcount
    return get(conn, order_id) if moved else None


OUTCOMES = {
    # event kind -> (new status, capture?)
    "vend.succeeded": ("succeeded", True),
    "vend.failed": ("failed", False),
    "vend.unknown": ("unknown", False),
    "command.rejected": ("rejected", False),
}
EVENT_KINDS = ("vend.started", *OUTCOMES)


class StaleOrders(RuntimeError):
    """An order changed under us (another process settled it first); the caller retries."""


# What a ``vend.succeeded`` that is not a plain sale is (the sales row keeps it, reconciliation and the
# alerts show it): a drop for an order no longer open, charged afresh or not; a drop naming an order this
# cloud never sent this machine.
DROPPED_UNPAID = "dropped_unpaid"
DROPPED_CHARGED = "dropped_charged"
NO_SUCH_ORDER = "no_such_order"
INCIDENTS = (DROPPED_UNPAID, DROPPED_CHARGED, NO_SUCH_ORDER)
CAPTURED = ("succeeded", DROPPED_CHARGED)


@dataclass(frozen=True)
class Sold:
    """What one ``vend.succeeded`` came to: its order (None: none of this machine's), the money it took
    (0 if none), and the incident when it was not a plain sale."""

    order: object | None
    amount: int
    incident: str = ""


def late_charge_key(order_id: str) -> str:
    """The idempotency key of the fresh charge for a product that dropped after its order was closed: one
    per order, so a drop stored twice (two cloud processes, a retried transaction) charges once."""
    return f"{order_id}:dropped"


def follow(conn: sa.Connection, provider: Provider, machine_id: str, events: list, now: datetime) -> dict:
    """``follow_many`` for one machine's events: {seq: Sold}."""
    return follow_many(conn, provider, {machine_id: events}, now).get(machine_id, {})


def follow_many(conn: sa.Connection, provider: Provider, events_of: dict[str, list], now: datetime) -> dict:
    """Move the orders named by batches of machines' ledger events, and settle their money.

    Works on all the batches at once (``events_of``: {machine id: its events}): one read of the orders, one
    conditional update per kind of move, one settlement, whatever the number of machines and events. Returns
    {machine id: {seq: Sold}} for every ``vend.succeeded``. An order counts as a machine's only if the cloud
    sent it to that machine.

    A ``vend.succeeded`` for an order that is not open (voided, failed, expired, rejected, declined...) is
    a product the machine gave away: the order becomes ``dropped_unpaid``, an incident, and the customer's
    provider is asked to charge afresh (``Provider.charge``; the wallet can, ``dropped_charged``).
    """
    named = {(m, e.data["order_id"]) for m, evs in events_of.items() for e in evs
             if isinstance(e.data.get("order_id"), str)}
    if not named:
        return {}
    ids = sorted({i for _m, i in named if not i.startswith(PRIOR_PREFIX)})
    o = orders.c
    rows: dict[tuple[str, str], object] = {}  # (machine id, order id) -> the order
    for n in range(0, len(ids), 1000):
        rows.update(((r.machine_id, r.id), r) for r in conn.execute(
            sa.select(o.id, o.machine_id, o.status, o.customer_id, o.amount, o.currency, o.product_id, o.provider)
            .where(o.id.in_(ids[n:n + 1000]))))
    mm = machines.machines.c
    joined = dict(conn.execute(sa.select(mm.id, mm.created_at).where(mm.id.in_(sorted(events_of)))).all())
    moves: dict[tuple[str, str, str], list[str]] = {}  # (old, new, reason) -> order ids
    capture, void, late = [], [], []
    sold: dict[str, dict[int, Sold]] = {}
    rows_of: dict[str, dict] = {}
    for (m, i), r in rows.items():
        rows_of.setdefault(m, {})[i] = r
    for machine_id in sorted(events_of):
        sold[machine_id] = _follow_machine(machine_id, events_of[machine_id], rows_of.get(machine_id, {}),
                                           joined.get(machine_id), moves, capture, void, late)
    # One conditional update per kind of move (nearly always just authorised -> succeeded).
    for (old, new, reason), group in moves.items():
        for i in range(0, len(group), 1000):
            chunk = group[i:i + 1000]
            # coalesce() keeps SQLite's planner off the (status, expires_at) index, which it would otherwise
            # prefer to the primary key and then scan every open order of the fleet.
            moved = conn.execute(orders.update().where(o.id.in_(chunk), sa.func.coalesce(o.status, "") == old)
                                 .values(status=new, reason=reason, updated_at=now)).rowcount
            if moved != len(chunk):
                raise StaleOrders(", ".join(sorted(events_of))[:200])
    if capture or void:
        provider.settle(conn, [(r, "capture") for r in capture] + [(r, "void") for r in void], now)
    for machine_id, seq, row in late:
        sold[machine_id][seq] = _charge_dropped(conn, provider, machine_id, row, now)
    return sold


def _follow_machine(machine_id: str, events: list, rows: dict, joined: datetime | None, moves: dict,
                    capture: list, void: list, late: list) -> dict[int, Sold]:
    """One machine's part of ``follow_many``: what its events do to its orders (``rows``, by id), added to
    ``moves``, ``capture``, ``void`` and ``late``; returns {seq: Sold} for its drops."""
    state = {order_id: row.status for order_id, row in rows.items()}
    reasons: dict[str, str] = {}
    strangers = []
    sold: dict[int, Sold] = {}
    for e in events:
        order_id = e.data.get("order_id")
        if order_id is None:
            continue  # a command.rejected that names no order: a refused planogram, say
        if order_id.startswith(PRIOR_PREFIX) and joined is not None and parse_time(e.ts, "ts") < joined:
            continue  # the machine's history from before this cloud: no order, no money of ours (records.py)
        # (one dated after the machine joined is no history: a sale no order of ours paid for, below)
        current = state.get(order_id)
        if current is None:
            strangers.append(order_id)
            if e.kind == "vend.succeeded":
                sold[e.seq] = Sold(None, 0, NO_SUCH_ORDER)
            continue
        if e.kind == "vend.started":
            if current == "authorised":
                state[order_id] = "vending"
            continue
        status, captures = OUTCOMES[e.kind]
        if current in OPEN:
            state[order_id] = status
            reasons[order_id] = str(e.data.get("reason", ""))[:200]
            (capture if captures else void).append(rows[order_id])
            if captures:
                sold[e.seq] = Sold(rows[order_id], rows[order_id].amount)
        elif captures and current in CAPTURED + (DROPPED_UNPAID,):
            # A second drop for one order (the machine runs a command once, so a faulty or forged ledger):
            # the order was charged once at most, and this product is not paid for.
            sold[e.seq] = Sold(rows[order_id], 0, DROPPED_UNPAID)
            log.error("machine %s dropped order %s again (it is %s); the second product is not paid for",
                      machine_id, order_id, current)
        elif captures:
            # The machine dropped after the cloud had closed the order (voided its hold, or never held):
            # paho delivered a command the cloud had given up on, or the machine's clock let a stale one by.
            state[order_id] = DROPPED_UNPAID
            reasons[order_id] = f"dropped after the order was {current}"[:200]
            late.append((machine_id, e.seq, rows[order_id]))
            log.error("machine %s dropped order %s after it was %s; charging it afresh", machine_id, order_id,
                      current)
    if strangers:
        log.error("machine %s: %d events name orders this cloud never sent it (first: %s)", machine_id,
                  len(strangers), strangers[0])
    for order_id, new in state.items():
        if new != rows[order_id].status:
            moves.setdefault((rows[order_id].status, new, reasons.get(order_id, "")), []).append(order_id)
    return sold


def _charge_dropped(conn: sa.Connection, provider: Provider, machine_id: str, order, now: datetime) -> Sold:
    """Ask the order's provider for a fresh charge of a product that dropped after the order was closed;
    the order stays ``dropped_unpaid`` (its reason says why) unless the money was taken."""
    try:
        outcome = provider.charge(conn, order, late_charge_key(order.id), now)
    except PaymentError as e:
        outcome = Outcome(False, str(e))
    if outcome.ok and not outcome.pending:
        move(conn, order.id, machine_id, (DROPPED_UNPAID,), DROPPED_CHARGED, now,
             "dropped after the order was closed; charged afresh")
        log.warning("order %s: charged %d %s afresh for the product machine %s dropped", order.id, order.amount,
                    order.currency, machine_id)
        return Sold(order, order.amount, DROPPED_CHARGED)
    why = "a charge was asked for, not confirmed yet" if outcome.ok else outcome.reason
    conn.execute(orders.update().where(orders.c.id == order.id, orders.c.status == DROPPED_UNPAID)
                 .values(reason=f"dropped after the order was closed; not charged: {why}"[:200], updated_at=now))
    log.error("order %s: product dropped on machine %s after the order was closed, not charged: %s", order.id,
              machine_id, why)
    return Sold(order, 0, DROPPED_UNPAID)


LATE_CHARGE_WATCH = timedelta(days=2)  # how long a dropped, unpaid order is watched for its fresh charge


def settle_late_charges(conn: sa.Connection, provider: Provider, now: datetime, limit: int = 200) -> int:
    """Orders left ``dropped_unpaid`` while their fresh charge was on its way (an external platform answers
    later): those whose provider has now taken the money become ``dropped_charged``, and their sale gets
    its amount; return how many."""
    rows = conn.execute(sa.select(orders).where(orders.c.status == DROPPED_UNPAID,
                                                orders.c.updated_at >= now - LATE_CHARGE_WATCH)
                        .order_by(orders.c.updated_at).limit(limit)).all()
    moved = 0
    for order in rows:
        try:
            taken = provider.refunded(conn, order)[0]
        except PaymentError:
            continue  # a provider this cloud no longer knows: the order stays for a person
        if taken < order.amount:
            continue
        if move(conn, order.id, order.machine_id, (DROPPED_UNPAID,), DROPPED_CHARGED, now,
                "dropped after the order was closed; charged afresh") is None:
            continue
        sale = conn.execute(sa.select(sales).where(sales.c.order_id == order.id, sales.c.incident == DROPPED_UNPAID)
                            .limit(1)).first()
        if sale is not None:
            conn.execute(sales.update().where(sales.c.machine_id == sale.machine_id, sales.c.seq == sale.seq)
                         .values(amount=order.amount, incident=DROPPED_CHARGED))
            reports.add_amount(conn, sale.machine_id, sale.ts, sale.product_id, order.currency, order.amount)
        log.warning("order %s: the fresh charge of %d %s for its late drop was taken", order.id, order.amount,
                    order.currency)
        moved += 1
    return moved


def expire_due(conn: sa.Connection, provider: Provider, now: datetime, grace_s: float) -> int:
    """Void orders whose vend command expired with no word from the machine, and decline those whose
    provider never confirmed the authorisation; return how many."""
    grace = timedelta(seconds=grace_s)
    due = conn.execute(sa.select(orders.c.id, orders.c.machine_id, orders.c.status, orders.c.expires_at).where(
        orders.c.status.in_(("authorised", WAITING)), orders.c.expires_at < now)).all()
    expired = 0
    for order_id, machine_id, status, expires_at in due:
        if status == WAITING:
            order = move(conn, order_id, machine_id, (WAITING,), "declined", now,
                         "the payment provider did not confirm in time")
        elif expires_at < now - grace:
            order = move(conn, order_id, machine_id, ("authorised",), "expired", now,
                         "the machine did not answer in time")
        else:
            continue
        if order is not None:
            provider.void(conn, order, order.id, now)
            expired += 1
    return expired


def close_replaced(conn: sa.Connection, provider: Provider, machine_id: str, now: datetime) -> int:
    """The machine started a new ledger (a new card): a vend its old ledger had started and never told the end
    of never will (the card that knew is gone, and the new ledger does not know the order). Such an order is
    closed as ``unknown``, as the machine itself does after a restart mid-vend, and its hold is released: no
    drop proven, no charge. Left ``vending``, a wallet's hold would stay taken for ever. Returns how many."""
    stuck = conn.execute(sa.select(orders.c.id).where(orders.c.machine_id == machine_id,
                                                      orders.c.status == "vending")).scalars().all()
    closed = 0
    for order_id in stuck:
        order = move(conn, order_id, machine_id, ("vending",), "unknown", now,
                     "the machine's ledger was replaced during the vend: its end is not known")
        if order is not None:
            provider.settle(conn, [(order, "void")], now)
            log.warning("order %s: machine %s started a new ledger during its vend; closed as unknown, hold "
                        "released", order_id, machine_id)
            closed += 1
    return closed


def for_customer(conn: sa.Connection, customer_id: int, limit: int = 20) -> list:
    return list(conn.execute(sa.select(orders).where(orders.c.customer_id == customer_id)
                             .order_by(orders.c.created_at.desc()).limit(limit)))


def status_text(_, status: str, refunded: int = 0, amount: int = 0) -> str:
    """What the order page says in each state: what the machine is doing, and whether money moved; a
    refunded order says so first, whatever dropped."""
    if refunded and refunded >= amount:
        return _("Refunded in full: this order costs you nothing in the end.")
    if refunded:
        return _("Partly refunded: see the receipt for what you paid in the end.")
    return {
        "created": _("Placing your order..."),
        "authorising": _("Waiting for your payment to be confirmed..."),
        "authorised": _("Paid. Waiting for the machine..."),
        "vending": _("The machine is dropping your product..."),
        "succeeded": _("Take your product!"),
        "failed": _("The product did not drop. You have not been charged."),
        "unknown": _("The machine restarted during your purchase. You have not been charged."),
        "rejected": _("The machine could not serve this order. You have not been charged."),
        "expired": _("The machine did not answer in time. You have not been charged."),
        "declined": _("Payment declined. You have not been charged."),
        "dropped_unpaid": _("Your product dropped after this order had been called off. You have not been "
                            "charged for it; the operator has been told."),
        "dropped_charged": _("Take your product! It dropped after this order had been called off, so you "
                             "have been charged for it now."),
    }.get(status, status)
