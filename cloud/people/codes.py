"""One-time sign-in codes: how a customer proves a phone number is theirs on a new phone.

Six digits, good for ``CODE_TTL``, ``MAX_ATTEMPTS`` tries, once. Only a keyed hash is stored, so a copy of
the database holds no usable code. A new code ends the customer's older ones, and at most ``MAX_PER_HOUR``
are made for a customer in an hour: a guesser gets ``MAX_PER_HOUR * MAX_ATTEMPTS`` tries an hour out of a
million codes, and nobody can make the cloud send a phone a stream of messages. Time is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata
from cloud.people.customers import customers

CODE_TTL = timedelta(minutes=10)
MAX_ATTEMPTS = 5
MAX_PER_HOUR = 5
DIGITS = 6

customer_codes = sa.Table(
    "customer_codes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey(customers.c.id), nullable=False, index=True),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ended_at", UTCDateTime, nullable=True),  # used, replaced by a newer code, or out of tries
)


def _digest(key: bytes, customer_id: int, code: str) -> str:
    return hmac.new(key, f"{customer_id}:{code}".encode(), hashlib.sha256).hexdigest()


def clean(raw: str | None) -> str | None:
    """The code as typed (spaces and dashes allowed), or None if it cannot be one."""
    code = re.sub(r"[\s-]", "", raw or "")
    return code if re.fullmatch(rf"[0-9]{{{DIGITS}}}", code) else None


def issue(conn: sa.Connection, customer_id: int, now: datetime, key: bytes) -> str | None:
    """A new code for the customer (to be sent, never stored in clear), or None when this hour's are used."""
    c = customer_codes
    recent = conn.execute(sa.select(sa.func.count()).select_from(c).where(
        c.c.customer_id == customer_id, c.c.created_at > now - timedelta(hours=1))).scalar()
    if recent >= MAX_PER_HOUR:
        return None
    conn.execute(c.update().where(c.c.customer_id == customer_id, c.c.ended_at.is_(None)).values(ended_at=now))
    code = f"{secrets.randbelow(10 ** DIGITS):0{DIGITS}d}"
    conn.execute(c.insert().values(customer_id=customer_id, code_hash=_digest(key, customer_id, code),
                                   created_at=now, expires_at=now + CODE_TTL))
    return code


def redeem(conn: sa.Connection, customer_id: int, code: str | None, now: datetime, key: bytes) -> bool:
    """True once for the customer's live code; a wrong one uses up a try."""
    c = customer_codes
    row = conn.execute(sa.select(c).where(c.c.customer_id == customer_id, c.c.ended_at.is_(None),
                                          c.c.expires_at > now, c.c.attempts < MAX_ATTEMPTS)
                       .order_by(c.c.id.desc()).limit(1)).first()
    if row is None:
        return False
    if code is not None and hmac.compare_digest(row.code_hash, _digest(key, customer_id, code)):
        # Conditional, so that two phones sending the same code at once cannot both get in.
        return conn.execute(c.update().where(c.c.id == row.id, c.c.ended_at.is_(None))
                            .values(ended_at=now)).rowcount == 1
    tries = row.attempts + 1
    conn.execute(c.update().where(c.c.id == row.id).values(
        attempts=c.c.attempts + 1, ended_at=now if tries >= MAX_ATTEMPTS else None))
    return False
