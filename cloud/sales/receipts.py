"""What a customer's receipt and wallet history say about their orders: the product and machine of each
order, and the refunds paid back on it (whichever provider took the money)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import sqlalchemy as sa

from cloud.catalog.names import join_names, name_in
from cloud.fleet.machines import join_machine_names, machine_name_in, machines, products
from cloud.sales.orders import orders
from cloud.accounts.journal import entries, txns


@dataclasses.dataclass(frozen=True)
class Bought:
    product: str
    machine: str
    status: str


@dataclasses.dataclass(frozen=True)
class Refund:
    at: datetime
    amount: int


def products_of(conn: sa.Connection, order_ids: list[str], lang: str | None = None) -> dict[str, Bought]:
    """order id -> what was bought where, for the orders named; the product named in ``lang`` if it can be."""
    ids = sorted(set(order_ids))
    if not ids:
        return {}
    joined = join_names(orders.join(products, products.c.id == orders.c.product_id), lang)
    q = (sa.select(orders.c.id, orders.c.status, name_in(lang), machine_name_in(lang, "machine"))
         .select_from(join_machine_names(joined.join(machines, machines.c.id == orders.c.machine_id), lang))
         .where(orders.c.id.in_(ids)))
    return {r.id: Bought(r.name, r.machine, r.status) for r in conn.execute(q)}


def refunds_of(conn: sa.Connection, order_id: str) -> list[Refund]:
    """Each refund of an order, oldest first; a refund's amount is what its balanced legs moved."""
    q = (sa.select(txns.c.created_at, sa.func.sum(entries.c.amount).label("amount"))
         .join(entries, entries.c.txn_id == txns.c.id)
         .where(txns.c.order_id == order_id, txns.c.kind == "refund", entries.c.amount > 0)
         .group_by(txns.c.id, txns.c.created_at).order_by(txns.c.id))
    return [Refund(r.created_at, int(r.amount)) for r in conn.execute(q)]
