"""People: customers who register from a machine's QR page, and how a phone is recognised again.

A registered phone carries a signed cookie naming the customer; the signature uses the cloud's own secret,
so a cookie cannot be forged or moved to another customer id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata

customers = sa.Table(
    "customers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("phone", sa.String(20), nullable=False, unique=True),
    sa.Column("payment_method", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Optional: where a sign-in code for a new phone can go when no text message can be sent.
    sa.Column("email", sa.String(254), nullable=True),
    # Set while the operator has blocked the customer from buying (fraud, a dispute); null: may buy.
    sa.Column("blocked_at", UTCDateTime, nullable=True),
    sa.Column("blocked_reason", sa.String(200), nullable=False, server_default=""),
)

PHONE_RE = re.compile(r"^\+?[0-9]{6,15}\Z")
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}\Z")
COOKIE = "vend_customer"


class RegistrationError(ValueError):
    """A registration form with something wrong in it; ``field`` names which input."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def clean_name(raw: str) -> str:
    name = unicodedata.normalize("NFC", (raw or "").strip())
    if not 1 <= len(name) <= 80:
        raise RegistrationError("name", "Please give a name of 1 to 80 characters.")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise RegistrationError("name", "The name contains control characters.")
    return name


def clean_phone(raw: str) -> str:
    phone = re.sub(r"[\s\-().]", "", raw or "")
    if not PHONE_RE.match(phone):
        raise RegistrationError("phone", "Please give a phone number of 6 to 15 digits, optionally starting with +.")
    return phone


def clean_email(raw: str | None) -> str | None:
    """An optional e-mail address: None when left empty."""
    address = (raw or "").strip()
    if not address:
        return None
    if len(address) > 254 or not EMAIL_RE.match(address):
        raise RegistrationError("email", "Please give an e-mail address like ann@example.com, or leave it empty.")
    return address


class AlreadyRegistered(RegistrationError):
    """The phone number is a customer's: the caller may sign in with a code, never take the account."""

    def __init__(self, customer_id: int):
        super().__init__("phone", "This phone number is already registered.")
        self.customer_id = customer_id


def register(conn: sa.Connection, name: str, phone: str, payment_method: str, now: datetime, *,
             methods: Sequence[str], email: str | None = None) -> int:
    """Create a customer; raise RegistrationError on bad input or a phone number already registered.

    ``methods`` are the payment methods this cloud offers (``cloud.payments.Payments.methods``: the
    providers registered in ``cloud/payments/registry.py`` that are configured).
    """
    name, phone, email = clean_name(name), clean_phone(phone), clean_email(email)
    if payment_method not in methods:
        raise RegistrationError("payment_method", f"Choose a payment method: {', '.join(methods)}.")
    existing = conn.execute(sa.select(customers.c.id).where(customers.c.phone == phone)).scalar()
    if existing is not None:
        # Knowing a phone number must not open someone's wallet: a new phone proves it is theirs with a
        # one-time code (cloud/people/codes.py).
        raise AlreadyRegistered(existing)
    return conn.execute(customers.insert().values(name=name, phone=phone, payment_method=payment_method,
                                                  email=email, created_at=now)).inserted_primary_key[0]


def set_payment_method(conn: sa.Connection, customer_id: int, payment_method: str, *, methods: Sequence[str]) -> None:
    """Change how a customer pays (one of ``methods``, those this cloud offers); RegistrationError if not."""
    if payment_method not in methods:
        raise RegistrationError("payment_method", f"Choose a payment method: {', '.join(methods)}.")
    conn.execute(customers.update().where(customers.c.id == customer_id).values(payment_method=payment_method))


def get(conn: sa.Connection, customer_id: int):
    return conn.execute(sa.select(customers).where(customers.c.id == customer_id)).first()


def set_blocked(conn: sa.Connection, customer_id: int, blocked: bool, reason: str, now: datetime) -> bool:
    """Block a customer from buying (with the reason) or let them buy again; True if that changed anything."""
    c = customers.c
    if blocked:
        query = customers.update().where(c.id == customer_id, c.blocked_at.is_(None)).values(
            blocked_at=now, blocked_reason=reason[:200])
    else:
        query = customers.update().where(c.id == customer_id, c.blocked_at.is_not(None)).values(
            blocked_at=None, blocked_reason="")
    return conn.execute(query).rowcount == 1


def search(conn: sa.Connection, text: str, after: int | None = None, limit: int = 50) -> list:
    """Customers whose name or phone holds ``text`` (all when empty), by id, ``limit`` after id ``after``."""
    c = customers.c
    query = sa.select(customers).order_by(c.id).limit(limit)
    text = text.strip()
    if text:
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(sa.or_(c.name.ilike(like, escape="\\"), c.phone.like(like, escape="\\")))
    if after is not None:
        query = query.where(c.id > after)
    return list(conn.execute(query))


def by_phone(conn: sa.Connection, phone: str):
    """The customer registered with this number (as cleaned at registration), or None."""
    try:
        phone = clean_phone(phone)
    except RegistrationError:
        return None
    return conn.execute(sa.select(customers).where(customers.c.phone == phone)).first()


class CookieSigner:
    """Signs small values for cookies with the cloud's secret."""

    def __init__(self, secret: bytes):
        self.secret = secret

    def sign(self, value: str) -> str:
        mac = hmac.new(self.secret, value.encode(), hashlib.sha256).digest()[:18]
        return f"{value}.{base64.urlsafe_b64encode(mac).decode()}"

    def unsign(self, signed: str | None) -> str | None:
        if not signed or "." not in signed:
            return None
        value, _, _sig = signed.rpartition(".")
        return value if hmac.compare_digest(self.sign(value), signed) else None


def new_secret() -> bytes:
    return secrets.token_bytes(32)
