"""Payment requests a platform refused for good (status ``failed``), from every provider's outbox: a
capture, void, refund or charge that did not happen needs a person (money kept, held or owed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from cloud.payments.outbox import payment_ops
from cloud.payments.sandbox.provider import ops as sandbox_ops

# An authorisation that fails is the customer's decline, answered on their page: not an operator's alert.
WATCHED = ("capture", "void", "refund", "charge")


@dataclass(frozen=True)
class Failed:
    provider: str
    op: str
    order_id: str
    reason: str
    at: datetime


def failed_since(conn: sa.Connection, since: datetime) -> list[Failed]:
    """The watched requests that failed at or after ``since``, oldest first."""
    found = [Failed(r.provider, r.op, r.order_id, r.reason, r.updated_at) for r in conn.execute(
        sa.select(payment_ops.c.provider, payment_ops.c.op, payment_ops.c.order_id, payment_ops.c.reason,
                  payment_ops.c.updated_at)
        .where(payment_ops.c.status == "failed", payment_ops.c.op.in_(WATCHED), payment_ops.c.updated_at >= since))]
    found += [Failed("sandbox", r.op, r.order_id, r.reason, r.updated_at) for r in conn.execute(
        sa.select(sandbox_ops.c.op, sandbox_ops.c.order_id, sandbox_ops.c.reason, sandbox_ops.c.updated_at)
        .where(sandbox_ops.c.status == "failed", sandbox_ops.c.op.in_(WATCHED), sandbox_ops.c.updated_at >= since))]
    return sorted(found, key=lambda f: f.at)
