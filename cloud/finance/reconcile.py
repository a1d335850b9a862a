"""Reconciliation: what the providers captured, against what the machines' ledgers sold and what the journal
holds, for a period; every order where they disagree is listed with the kind of mismatch. Sales read off a
machine's DEX audit (``records.AUDIT_PREFIX``: coins, another cashless system) and a machine's prior
history (``records.PRIOR_PREFIX``) took no money through a provider of ours, so they are left out.

The orders looked at are those sold in the period (``sales`` rows with an amount above zero, by the
ledger's timestamp) and those captured in the period (journal captures, and the captures each provider
that keeps its own record confirmed: its ``ProviderSpec.reported``, see ``cloud/payments/registry.py``),
wherever the other side of each falls in time. Kinds (``KINDS``):

- ``captured_not_sold``: money taken for an order no ledger reports as sold;
- ``sold_not_captured``: a ledger sale the journal has no capture for;
- ``amounts_differ``: the sale's amount and the capture's differ;
- ``captured_twice``: more than one capture of one order in the journal;
- ``sold_twice``: more than one ledger sale of one order;
- ``refunded_more_than_captured``: refunds in the journal exceed what was captured;
- ``provider_not_in_journal``: a provider confirmed a capture the journal does not hold (or holds
  another amount of);
- ``journal_not_at_provider``: the journal holds a provider's capture (keyed ``{provider}:...``) the
  provider never confirmed;
- ``dropped_not_charged``: a ledger sale of a product that dropped for an order already closed (voided,
  expired, declined...), which its provider could not charge afresh (the sale's incident ``dropped_unpaid``);
- ``sold_no_such_order``: a ledger sale naming an order the machine was never sent: another machine's, or
  none (the sale's incident ``no_such_order``);
- ``statement_not_in_journal``, ``journal_not_in_statement``, ``statement_amount_differs``: a platform's
  imported statement (``cloud/payments/statement.py``) and the journal disagree on an order's capture or
  refund.

The last two come from the sales rows the ingest marked (``orders.INCIDENTS``), by the ledger's timestamp;
they are sales of 0, which the money comparison above never sees.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

import sqlalchemy as sa

from cloud.sales.records import UNPAID_HERE, sales
from cloud.accounts.journal import accounts, entries, txns
from cloud.payments import statement
from cloud.payments.registry import REGISTRY
from cloud.finance.ledger import bounds

KINDS = ("captured_not_sold", "sold_not_captured", "amounts_differ", "captured_twice", "sold_twice",
         "refunded_more_than_captured", "provider_not_in_journal", "journal_not_at_provider", "dropped_not_charged",
         "sold_no_such_order") + statement.KINDS
# A sale's incident -> the mismatch it is (a drop charged afresh is not one: its sale and capture agree).
INCIDENT_KINDS = {"dropped_unpaid": "dropped_not_charged", "no_such_order": "sold_no_such_order"}
CHUNK = 500



def _paid_here(s):
    """Sales whose money a provider of ours should have captured: not an audit's, not a machine's prior history."""
    return ~sa.or_(*(s.c.order_id.startswith(prefix) for prefix in UNPAID_HERE))

def _chunks(ids: list[str]):
    for i in range(0, len(ids), CHUNK):
        yield ids[i:i + CHUNK]


def _revenue_legs(conn, where) -> list:
    return conn.execute(sa.select(txns.c.order_id, txns.c.kind, txns.c.key, entries.c.amount, accounts.c.currency)
                        .join(entries, entries.c.txn_id == txns.c.id)
                        .join(accounts, accounts.c.id == entries.c.account_id)
                        .where(accounts.c.kind == "revenue", txns.c.kind.in_(("capture", "refund")), where)).all()


def _incidents(conn, start: date, end: date, captures: dict, refunds: dict, currency_of: dict) -> list[dict]:
    """The period's sales the ingest marked as drops no order paid for."""
    s = sales
    found = []
    for r in conn.execute(sa.select(s.c.machine_id, s.c.seq, s.c.order_id, s.c.slot, s.c.amount, s.c.currency,
                                    s.c.incident)
                          .where(s.c.incident.in_(INCIDENT_KINDS), s.c.ts >= start.isoformat(),
                                 s.c.ts < (end + timedelta(days=1)).isoformat())
                          .order_by(s.c.ts, s.c.machine_id, s.c.seq)):
        if r.incident == "dropped_unpaid":
            why = f"machine {r.machine_id} dropped slot {r.slot} (seq {r.seq}) after the order was closed; not charged"
        else:
            why = f"machine {r.machine_id} sold slot {r.slot} (seq {r.seq}) naming an order it was never sent"
        found.append({"kind": INCIDENT_KINDS[r.incident], "order_id": r.order_id,
                      "currency": currency_of.get(r.order_id, r.currency), "sold": r.amount,
                      "captured": sum(captures.get(r.order_id, [])), "refunded": refunds.get(r.order_id, 0),
                      "provider_captured": None, "detail": why})
    return found


def reconcile(conn: sa.Connection, start: date, end: date) -> dict:
    """The period's figures and every mismatch: {kind, order_id, sold, captured, refunded, provider}."""
    lo, hi = bounds(start, end)
    s = sales
    sold: dict[str, list] = defaultdict(list)
    for r in conn.execute(sa.select(s.c.order_id, s.c.amount, s.c.currency, s.c.machine_id).where(
            s.c.amount > 0, _paid_here(s), s.c.ts >= start.isoformat(), s.c.ts < (end + timedelta(days=1)).isoformat())):
        sold[r.order_id].append(r)
    legs = {(r.key, r.order_id): r for r in _revenue_legs(conn, sa.and_(txns.c.kind == "capture",
                                                                        txns.c.created_at >= lo,
                                                                        txns.c.created_at < hi))}
    # What each provider that keeps its own record says it captured: (provider, its key) -> row.
    reporting = [spec for spec in REGISTRY if spec.reported is not None]
    provider = {(spec.name, r.key): r for spec in reporting for r in spec.reported(conn, lo, hi, None)}
    name_of = {}
    orders = set(sold) | {o for _, o in legs} | {r.order_id for r in provider.values()}
    ordered = sorted(orders)
    # The other side of each order, wherever it falls in time.
    for part in _chunks(ordered):
        for r in _revenue_legs(conn, txns.c.order_id.in_(part)):
            legs[(r.key, r.order_id)] = r
        for spec in reporting:
            for r in spec.reported(conn, None, None, part):
                provider[(spec.name, r.key)] = r
        missing = [o for o in part if o not in sold]
        if missing:
            for r in conn.execute(sa.select(s.c.order_id, s.c.amount, s.c.currency, s.c.machine_id)
                                  .where(s.c.amount > 0, _paid_here(s), s.c.order_id.in_(missing))):
                sold[r.order_id].append(r)
    captures: dict[str, list] = defaultdict(list)
    refunds: dict[str, int] = defaultdict(int)
    in_journal: dict[str, int] = defaultdict(int)  # an order's captures posted by a reporting provider
    # An order is in one currency; the sale says which, else the journal's revenue account, else the provider.
    currency_of: dict[str, str] = {r.order_id: r.currency for r in provider.values() if getattr(r, "currency", None)}
    currency_of.update({order_id: r.currency for (_, order_id), r in legs.items()})
    currency_of.update({order_id: rows[0].currency for order_id, rows in sold.items() if rows})
    for (key, order_id), r in legs.items():
        if r.kind == "capture":
            captures[order_id].append(r.amount)
            name = key.split(":", 1)[0]
            if any(spec.name == name for spec in reporting):
                in_journal[order_id] += r.amount
                name_of[order_id] = name
        else:
            refunds[order_id] += -r.amount
    at_provider: dict[str, int] = defaultdict(int)
    for (name, _), r in provider.items():
        at_provider[r.order_id] += r.amount
        name_of[r.order_id] = name
    mismatches = []
    totals = {"sold": 0, "captured": 0, "refunded": 0, "orders": len(ordered)}
    by_currency: dict[str, dict] = {}
    for order_id in ordered:
        sold_amounts = [r.amount for r in sold.get(order_id, [])]
        captured = sum(captures.get(order_id, []))
        refunded = refunds.get(order_id, 0)
        currency = currency_of.get(order_id, "")
        sums = by_currency.setdefault(currency, {"currency": currency, "sold": 0, "captured": 0, "refunded": 0,
                                                 "orders": 0})
        for figures in (totals, sums):
            figures["sold"] += sum(sold_amounts)
            figures["captured"] += captured
            figures["refunded"] += refunded
        sums["orders"] += 1
        row = {"order_id": order_id, "currency": currency, "sold": sum(sold_amounts), "captured": captured,
               "refunded": refunded, "provider_captured": at_provider.get(order_id)}

        def flag(kind: str, why: str) -> None:
            mismatches.append({"kind": kind, **row, "detail": why})

        if captured and not sold_amounts:
            flag("captured_not_sold", f"{captured} captured, no ledger sale")
        if sold_amounts and not captures.get(order_id):
            flag("sold_not_captured", f"sold for {sum(sold_amounts)}, nothing captured")
        if len(sold_amounts) > 1:
            flag("sold_twice", f"{len(sold_amounts)} ledger sales")
        if len(captures.get(order_id, [])) > 1:
            flag("captured_twice", f"{len(captures[order_id])} captures")
        if sold_amounts and captures.get(order_id) and sum(sold_amounts) != captured:
            flag("amounts_differ", f"sold for {sum(sold_amounts)}, captured {captured}")
        if refunded > captured:
            flag("refunded_more_than_captured", f"refunded {refunded} of {captured} captured")
        name = name_of.get(order_id, "")
        if order_id in at_provider and at_provider[order_id] != in_journal.get(order_id, 0):
            flag("provider_not_in_journal", f"the {name} captured {at_provider[order_id]}, the journal holds "
                                            f"{in_journal.get(order_id, 0)}")
        if in_journal.get(order_id) and order_id not in at_provider:
            flag("journal_not_at_provider", f"the journal holds a {name} capture of {in_journal[order_id]} "
                                            f"the {name} never confirmed")
    mismatches += _incidents(conn, start, end, captures, refunds, currency_of)
    # The platforms' own statements, where one was imported for the period (``vendctl reconcile --statement``).
    for name in statement.providers_with_lines(conn, lo, hi):
        for m in statement.compare(conn, name, lo, hi):
            mismatches.append({"kind": m["kind"], "order_id": m["order_id"], "currency": m["currency"] or currency_of.get(m["order_id"], ""),
                               "sold": None, "captured": m["journal"], "refunded": None,
                               "provider_captured": m["statement"], "detail": m["detail"]})
    counts = {k: sum(1 for m in mismatches if m["kind"] == k) for k in KINDS}
    # ``totals`` adds all currencies together (right for a fleet selling in one); ``by_currency`` keeps them apart.
    return {"from": start.isoformat(), "to": end.isoformat(), "totals": totals,
            "by_currency": [by_currency[c] for c in sorted(by_currency)], "counts": counts,
            "mismatches": mismatches, "clear": not mismatches}
