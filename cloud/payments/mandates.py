"""Mandates: a customer's standing permission, at their own payment platform, to be charged by us.

A card saved through Stripe Checkout, an Alipay withholding agreement, a WeChat openid: registration
sends the customer to the platform's page (``Provider.enrol``) and records a ``pending`` mandate; the
platform's answer (its return page or its signed notification) makes it ``active`` with the platform's
reference; the platform telling us the customer withdrew it makes it ``revoked``. A purchase by a provider
that needs one (``Provider.needs_mandate``) and finds none active raises ``MandateMissing``: the shop asks
the customer to choose again, and nothing is charged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, insert_ignore, metadata
from cloud.accounts.journal import PaymentError

STATUSES = ("pending", "active", "revoked")

mandates = sa.Table(
    "mandates", metadata,
    sa.Column("customer_id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(20), primary_key=True),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("reference", sa.String(200), nullable=False, server_default=""),  # the platform's id for it
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),  # JSON: what else the provider keeps
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("mandates_reference", "provider", "reference"),
)


class MandateMissing(PaymentError):
    """The customer has no active mandate with the provider their order would be paid by."""


@dataclass(frozen=True)
class Mandate:
    customer_id: int
    provider: str
    status: str
    reference: str
    detail: dict


def _mandate(row) -> Mandate:
    return Mandate(row.customer_id, row.provider, row.status, row.reference, json.loads(row.detail or "{}"))


def start(conn: sa.Connection, customer_id: int, provider: str, now: datetime, detail: dict | None = None) -> None:
    """Record that the customer was sent to set one up. An active mandate stays active until the new one
    is confirmed (a customer who abandons the platform's page keeps what worked)."""
    text = json.dumps(detail or {}, sort_keys=True)
    if conn.execute(insert_ignore(conn, mandates).values(
            customer_id=customer_id, provider=provider, status="pending", reference="", detail=text,
            created_at=now, updated_at=now).returning(mandates.c.customer_id)).first() is None:
        conn.execute(mandates.update().where(mandates.c.customer_id == customer_id, mandates.c.provider == provider,
                                             mandates.c.status != "active")
                     .values(status="pending", detail=text, updated_at=now))


def activate(conn: sa.Connection, customer_id: int, provider: str, reference: str, now: datetime,
             detail: dict | None = None) -> bool:
    """The platform confirmed the mandate; False if the customer never started one with this provider
    (a confirmation for someone we did not send), which changes nothing."""
    if not reference or len(reference) > 200:
        raise PaymentError(f"a {provider} mandate needs the platform's reference (1 to 200 characters)")
    values = dict(status="active", reference=reference, updated_at=now)
    if detail is not None:
        values["detail"] = json.dumps(detail, sort_keys=True)
    return conn.execute(mandates.update().where(mandates.c.customer_id == customer_id,
                                                mandates.c.provider == provider).values(**values)).rowcount == 1


def revoke(conn: sa.Connection, provider: str, reference: str, now: datetime) -> int | None:
    """The platform says the customer withdrew the mandate ``reference``: the customer's id, or None if no
    active mandate has that reference."""
    row = conn.execute(sa.select(mandates.c.customer_id).where(
        mandates.c.provider == provider, mandates.c.reference == reference, mandates.c.status == "active")).first()
    if row is None:
        return None
    conn.execute(mandates.update().where(mandates.c.customer_id == row.customer_id, mandates.c.provider == provider)
                 .values(status="revoked", updated_at=now))
    return row.customer_id


def get(conn: sa.Connection, customer_id: int, provider: str) -> Mandate | None:
    row = conn.execute(sa.select(mandates).where(mandates.c.customer_id == customer_id,
                                                 mandates.c.provider == provider)).first()
    return None if row is None else _mandate(row)


def active(conn: sa.Connection, customer_id: int, provider: str) -> Mandate | None:
    """The customer's active mandate with ``provider``, or None."""
    found = get(conn, customer_id, provider)
    return found if found is not None and found.status == "active" else None


def require(conn: sa.Connection, customer_id: int, provider: str) -> Mandate:
    """The active mandate, or MandateMissing saying what the customer's state is."""
    found = get(conn, customer_id, provider)
    if found is None or found.status == "pending":
        raise MandateMissing(f"customer {customer_id} has not finished setting up paying by {provider}")
    if found.status == "revoked":
        raise MandateMissing(f"customer {customer_id} withdrew their permission to be charged by {provider}")
    return found
