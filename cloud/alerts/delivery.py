"""Delivering an alert to a person: by e-mail through the cloud's SMTP server, or by a signed webhook; each
delivery a row, tried again with backoff until it is delivered or ``--alert-attempts`` are spent.

A delivery row is written in the transaction that raises its alert (one per rule that wants the kind), so
an alert raised is never an alert forgotten; the delivery worker (``cloud/alerts/watch.py``) sends it
afterwards, outside any transaction, and records the answer. A worker claims a row by moving its
``next_try_at`` a lease ahead with a conditional update, so two cloud processes never send one row at once.

The webhook is signed as ``cloud/payments/webhook.py`` checks a platform's: HMAC-SHA256 over
``{timestamp}.{raw body}`` under the secret in ``--alert-webhook-secret-file``, the timestamp and the hex
signature in the ``X-Vend-Timestamp`` and ``X-Vend-Signature`` headers; ``X-Vend-Delivery`` is the delivery's
id, the same on every retry, for the receiver to drop a repeat. docs/alerts.md shows a receiver's check.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa

from cloud.core.db import UTCDateTime, insert_ignore, metadata
from cloud.core.mail import Mailer, MailError
from cloud.payments.webhook import sign
from cloud.alerts import rules as alert_rules_
from cloud.alerts.occurrences import alert_occurrences

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Vend-Timestamp"
SIGNATURE_HEADER = "X-Vend-Signature"
DELIVERY_HEADER = "X-Vend-Delivery"
LEASE_S = 120.0  # a delivery claimed by a worker that died is tried again after this
MAX_BACKOFF_S = 3600.0
ERROR_MAX = 300

alert_deliveries = sa.Table(
    "alert_deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("occurrence_id", sa.Integer, sa.ForeignKey("alert_occurrences.id"), nullable=False),
    sa.Column("rule_id", sa.Integer, nullable=False),  # the rule may be deleted since: the address is kept here
    sa.Column("channel", sa.String(10), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),  # queued, delivered, failed (attempts spent)
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_try_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.String(ERROR_MAX), nullable=False, server_default=""),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("occurrence_id", "rule_id", name="alert_deliveries_once"),
    sa.Index("alert_deliveries_due", "status", "next_try_at"),
)


class DeliveryError(Exception):
    """A delivery that did not arrive: the text says why (never a secret)."""


@dataclass(frozen=True)
class Message:
    """One alert as it is sent: a subject and a text for e-mail, a JSON body for a webhook."""

    subject: str
    text: str
    body: bytes


def enqueue(conn: sa.Connection, occurrence_ids: list[int], now: datetime) -> int:
    """A delivery row for each new occurrence and each rule that wants its kind; how many were written."""
    written = 0
    for row in conn.execute(sa.select(alert_occurrences.c.id, alert_occurrences.c.kind)
                            .where(alert_occurrences.c.id.in_(occurrence_ids))):
        for rule in alert_rules_.for_kind(conn, row.kind):
            written += conn.execute(insert_ignore(conn, alert_deliveries).values(
                occurrence_id=row.id, rule_id=rule.id, channel=rule.channel, target=rule.target, status="queued",
                next_try_at=now, created_at=now)).rowcount
    return written


def claim_due(conn: sa.Connection, now: datetime, limit: int = 20) -> list:
    """Claim up to ``limit`` deliveries that are due, each with its occurrence (rows joined)."""
    d, o = alert_deliveries, alert_occurrences
    due = conn.execute(sa.select(d.c.id, d.c.next_try_at).where(d.c.status == "queued", d.c.next_try_at <= now)
                       .order_by(d.c.next_try_at, d.c.id).limit(limit)).all()
    claimed = [r.id for r in due if conn.execute(
        d.update().where(d.c.id == r.id, d.c.status == "queued", d.c.next_try_at == r.next_try_at)
        .values(next_try_at=now + timedelta(seconds=LEASE_S))).rowcount]
    if not claimed:
        return []
    return conn.execute(sa.select(d, o.c.kind, o.c.machine_id, o.c.slot, o.c.since, o.c.raised_at, o.c.detail,
                                  o.c.value).join(o, o.c.id == d.c.occurrence_id)
                        .where(d.c.id.in_(claimed)).order_by(d.c.id)).all()


def record(conn: sa.Connection, delivery, error: str | None, now: datetime, retry_s: float, attempts: int) -> str:
    """Write a try's outcome (``error`` None: delivered); the delivery's status after it."""
    tried = delivery.attempts + 1
    if error is None:
        values = {"status": "delivered", "delivered_at": now, "last_error": ""}
    else:
        wait = min(retry_s * 2 ** (tried - 1), MAX_BACKOFF_S)
        values = {"status": "failed" if tried >= attempts else "queued", "last_error": error[:ERROR_MAX],
                  "next_try_at": now + timedelta(seconds=wait)}
    conn.execute(alert_deliveries.update().where(alert_deliveries.c.id == delivery.id)
                 .values(attempts=tried, **values))
    return values["status"]


def of_occurrences(conn: sa.Connection, occurrence_ids: list[int]) -> dict[int, list]:
    """Each occurrence's deliveries, oldest first."""
    found: dict[int, list] = {}
    if occurrence_ids:
        for r in conn.execute(sa.select(alert_deliveries).where(alert_deliveries.c.occurrence_id.in_(occurrence_ids))
                              .order_by(alert_deliveries.c.id)):
            found.setdefault(r.occurrence_id, []).append(r)
    return found


def public(row) -> dict:
    return {"id": row.id, "rule_id": row.rule_id, "channel": row.channel, "target": row.target,
            "status": row.status, "attempts": row.attempts, "last_error": row.last_error,
            "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
            "next_try_at": row.next_try_at.isoformat() if row.status == "queued" else None}


def message(alert, names: dict[str, str], dashboard: str, delivery_id: int | None = None,
            test: bool = False) -> Message:
    """What is sent for an occurrence (a row with kind, machine_id, slot, since, raised_at, detail, value)."""
    label = names.get(alert.kind, alert.kind)
    where = alert.machine_id + (f" slot {alert.slot}" if alert.slot else "")
    subject = ("[vend] test: " if test else "[vend] ") + f"{label}: {where}"
    link = f"{dashboard.rstrip('/')}/staff/alerts"
    text = "\n".join([
        "This is a test of an alert rule; nothing is wrong." if test else f"{label} on machine {where}.",
        "", alert.detail, "", f"Since: {alert.since.isoformat()} (UTC)", f"Raised: {alert.raised_at.isoformat()} (UTC)",
        "", f"Acknowledge or resolve it at {link}" if not test else f"The alerts are at {link}"])
    body = json.dumps({"type": "alert.test" if test else "alert.raised", "delivery": delivery_id,
                       "alert": {"id": getattr(alert, "occurrence_id", None), "kind": alert.kind, "label": label,
                                 "machine_id": alert.machine_id, "slot": alert.slot or None,
                                 "since": alert.since.isoformat(), "raised_at": alert.raised_at.isoformat(),
                                 "detail": alert.detail, "value": alert.value},
                       "url": link}, separators=(",", ":"), sort_keys=True).encode()
    return Message(subject, text, body)


class Channels:
    """How deliveries leave: the cloud's ``Mailer`` (None without ``--smtp-host``) and the webhook secret."""

    def __init__(self, mailer: Mailer | None, secret: bytes, timeout_s: float, clock=time.time):
        self.mailer, self._secret, self.timeout_s, self.clock = mailer, secret, timeout_s, clock

    def __repr__(self) -> str:  # never the secret
        return f"Channels({self.mailer!r}, webhook timeout {self.timeout_s} s)"

    def send(self, channel: str, target: str, msg: Message, delivery_id: int | None = None) -> None:
        """Deliver ``msg`` or raise DeliveryError."""
        if channel == "email":
            if self.mailer is None:
                raise DeliveryError("no SMTP server: start the cloud with --smtp-host and --smtp-from")
            try:
                self.mailer.send(target, msg.subject, msg.text)
            except MailError as e:
                raise DeliveryError(str(e)) from None
            return
        timestamp = int(self.clock())
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
                   SIGNATURE_HEADER: sign(self._secret, timestamp, msg.body)}
        if delivery_id is not None:
            headers[DELIVERY_HEADER] = str(delivery_id)
        try:
            r = httpx.post(target, content=msg.body, headers=headers, timeout=self.timeout_s)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as e:  # InvalidURL: a URL httpx cannot send to
            raise DeliveryError(f"webhook {target}: {type(e).__name__}: {e}"[:ERROR_MAX]) from None
        if not r.is_success:
            raise DeliveryError(f"webhook {target}: answered {r.status_code}")
