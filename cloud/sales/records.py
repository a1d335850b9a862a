"""Sales: one row per product dropped, written from the machine's ``vend.succeeded`` as its ledger is stored.

A drop that was not a plain sale keeps its incident (``orders.INCIDENTS``): dropped for an order already
closed (``dropped_unpaid``, or ``dropped_charged`` once charged afresh), or naming no order of this machine
(``no_such_order``); reconciliation lists the unpaid ones.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.core.db import metadata

sales = sa.Table(
    "sales", metadata,
    sa.Column("machine_id", sa.String(32), sa.ForeignKey("machines.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("slot", sa.String(3), nullable=False),
    sa.Column("product_id", sa.Integer, nullable=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("incident", sa.String(20), nullable=False, server_default=""),  # "" for a plain sale
    sa.Index("sales_by_time", "ts"),
    sqlite_with_rowid=False,
)

# Sales read off a machine's EVA-DTS audit (cloud/audits/imports.py), not its ledger: their order id is
# "audit:{audit id}:{selection}:{payment device}" and their seq is negative. They took money no provider of
# ours captured (coins, another cashless system), so reconciliation leaves them out.
AUDIT_PREFIX = "audit:"
# Sales a machine's ledger records that no order of this cloud paid for, by design: the history a machine
# brings from before it sold through this cloud (``make demo`` writes 90 days of it). Their order id is
# "prior:{anything}"; they are valued at the slot's price in the cloud when stored, are no incident, and,
# like audit sales, reconciliation leaves them out (no provider of ours took that money).
PRIOR_PREFIX = "prior:"
UNPAID_HERE = (AUDIT_PREFIX, PRIOR_PREFIX)  # sales whose money no provider of ours captured

SALE_COLUMNS = ("machine_id", "seq", "ts", "order_id", "slot", "product_id", "amount", "currency")
INCIDENT_COLUMNS = SALE_COLUMNS + ("incident",)  # what ingest writes; the reports read SALE_COLUMNS' first eight


def source(order_id: str) -> str:
    """Where a sale's record came from: a DEX audit, a machine's prior history, or its ledger's paid order."""
    return "audit" if order_id.startswith(AUDIT_PREFIX) else "prior" if order_id.startswith(PRIOR_PREFIX) \
        else "ledger"


def recent(conn: sa.Connection, machine: str | None, limit: int) -> dict:
    """The newest ``limit`` sales (of one machine, or all), and the totals per currency."""
    q = sa.select(sales).order_by(sales.c.ts.desc(), sales.c.seq.desc()).limit(limit)
    totals = sa.select(sales.c.currency, sa.func.count(), sa.func.sum(sales.c.amount)).group_by(sales.c.currency)
    if machine:
        q, totals = q.where(sales.c.machine_id == machine), totals.where(sales.c.machine_id == machine)
    rows = conn.execute(q).all()
    sums = conn.execute(totals).all()
    return {"sales": [{"machine_id": r.machine_id, "seq": r.seq, "ts": r.ts, "order_id": r.order_id,
                       "slot": r.slot, "amount": r.amount, "currency": r.currency, "incident": r.incident,
                       "source": source(r.order_id)} for r in rows],
            "totals": [{"currency": c, "count": n, "amount": int(a)} for c, n, a in sums]}
