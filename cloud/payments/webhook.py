"""Signed webhooks from an external provider: the signature, the replay window, and each event once.

The provider signs ``{timestamp}.{raw body}`` with HMAC-SHA256 under the secret both sides share, and
sends the timestamp and the hex signature in two headers (the scheme of Stripe's ``Stripe-Signature``,
split in two). The timestamp is inside the signature, so an old delivery cannot be given a new one; a
delivery older than the tolerance is refused, and one inside it that comes again is found by its event id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, insert_ignore, metadata

TIMESTAMP_HEADER = "X-Sandbox-Timestamp"
SIGNATURE_HEADER = "X-Sandbox-Signature"
MAX_BODY = 64 * 1024
# The events the webhook route moves orders by; any other type goes to the provider's ``notified``.
EVENT_TYPES = ("authorisation.succeeded", "authorisation.declined")
EVENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

webhook_events = sa.Table(
    "webhook_events", metadata,
    sa.Column("provider", sa.String(20), primary_key=True),
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
)


class WebhookRefused(ValueError):
    """A delivery that changes nothing; ``why`` is signature, stale or malformed."""

    def __init__(self, why: str, message: str):
        super().__init__(message)
        self.why = why


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    order_id: str
    amount: int
    currency: str
    reason: str
    # What else a platform's notification says (an event that is not an authorisation's: a mandate set
    # up or withdrawn, a refund confirmed...), for the provider's ``notified``.
    data: dict | None = None

    @property
    def succeeded(self) -> bool:
        return self.type == "authorisation.succeeded"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str | None, signature: str | None, body: bytes, now: float,
           tolerance_s: float) -> None:
    """Raise WebhookRefused unless ``signature`` is ours over ``timestamp`` and ``body``, and fresh."""
    if not timestamp or not re.fullmatch(r"[0-9]{1,12}", timestamp):
        raise WebhookRefused("signature", f"no valid {TIMESTAMP_HEADER} header")
    expected = sign(secret, int(timestamp), body)
    # compare_digest: how long the comparison takes says nothing about how much of a forgery was right.
    if not signature or not hmac.compare_digest(expected.encode(), signature.strip().encode("ascii", "replace")):
        raise WebhookRefused("signature", "the signature does not match")
    age = now - int(timestamp)
    if abs(age) > tolerance_s:
        raise WebhookRefused("stale", f"the delivery is {age:.0f} s old; more than {tolerance_s:.0f} s is refused")


def parse(body: bytes) -> Event:
    """The event in a verified body."""
    try:
        obj = json.loads(body)
        data = obj["data"]
        event = Event(obj["id"], obj["type"], data["reference"], data["amount"], data["currency"],
                      str(data.get("reason", ""))[:200])
    except (ValueError, KeyError, TypeError) as e:
        raise WebhookRefused("malformed", f"not an event: {type(e).__name__} {e}") from None
    if not isinstance(event.id, str) or not EVENT_ID_RE.match(event.id):
        raise WebhookRefused("malformed", "the event id must be 1 to 64 letters, digits, - or _")
    if event.type not in EVENT_TYPES:
        raise WebhookRefused("malformed", f"unknown event type {event.type!r}")
    if not isinstance(event.order_id, str) or not 1 <= len(event.order_id) <= 64:
        raise WebhookRefused("malformed", "data.reference must be an order id")
    if not isinstance(event.amount, int) or isinstance(event.amount, bool) or event.amount <= 0 \
            or not isinstance(event.currency, str) or len(event.currency) != 3:
        raise WebhookRefused("malformed", "data.amount and data.currency must be an amount and a currency")
    return event


def first_delivery(conn: sa.Connection, provider: str, event: Event, now: datetime) -> bool:
    """Record the event; False if it was recorded before (a redelivery or a replay: it changes nothing)."""
    return conn.execute(insert_ignore(conn, webhook_events).values(
        provider=provider, event_id=event.id, kind=event.type, order_id=event.order_id, received_at=now)
        .returning(webhook_events.c.event_id)).first() is not None
