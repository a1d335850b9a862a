"""The payments API: refunds by a manager, a customer's wallet for staff, and the sandbox's webhook.

Refunds and wallets need a staff role (``people.REFUNDERS``, ``people.WALLET_READERS``); a refund is
written to the audit trail in its own transaction. The webhook is public: its signature is the credential.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from cloud.sales import orders
from cloud import people
from cloud.core.db import utcnow
from cloud.core.money import parse_amount
from cloud.people import Caller, require
from cloud.payments import webhook
from cloud.accounts.journal import IdempotencyConflict, PaymentError

log = logging.getLogger(__name__)

KEY_RE = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")
CURRENCY_RE = re.compile(r"[A-Z]{3}\Z")


class RefundBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: StrictStr
    key: StrictStr
    # Minor units (350), or the amount as written in the order's currency ("3.50"); none: all that is left.
    amount: StrictInt | StrictStr | None = None


def clean_reason(text: str) -> str:
    reason = unicodedata.normalize("NFC", text.strip())
    if not 1 <= len(reason) <= 200 or any(unicodedata.category(ch).startswith("C") for ch in reason):
        raise HTTPException(422, "reason: say why, in 1 to 200 characters without control characters")
    return reason


def install(app: FastAPI, cloud) -> None:
    """Add the payments routes to ``app``; ``cloud`` is the running ``service.Cloud``."""
    engine, settings, payments = cloud.engine, cloud.settings, cloud.provider

    @app.post("/api/v1/orders/{order_id}/refund", tags=["payments"])
    def refund(order_id: str, body: RefundBody, caller: Caller = Depends(require(*people.REFUNDERS))):
        """Refund a sale, in full or the ``amount`` given, with a reason; the same ``key`` again returns
        the first refund and moves nothing. More than was captured is refused."""
        reason = clean_reason(body.reason)
        if not KEY_RE.match(body.key):
            raise HTTPException(422, "key: 8 to 64 letters, digits, - or _ (the same key makes a retry safe)")
        if isinstance(body.amount, int) and body.amount <= 0:
            raise HTTPException(422, "amount must be more than zero")
        now = utcnow()
        try:
            with engine.begin() as conn:
                found = orders.get(conn, order_id)
                amount = body.amount
                if isinstance(amount, str) and found is not None:
                    amount = parse_amount(amount, found.currency)
                order, outcome = orders.refund(conn, payments, order_id, amount, body.key, now)
                if outcome.created:
                    people.audit.record(conn, caller, "order.refund", "order", order_id, {
                        "amount": outcome.amount, "currency": order.currency, "reason": reason, "key": body.key,
                        "provider": order.provider}, now)
        except ValueError as e:
            if isinstance(e, orders.OrderError):
                raise HTTPException(404 if e.code == "unknown_order" else 409, str(e)) from None
            if isinstance(e, IdempotencyConflict):
                raise HTTPException(409, str(e)) from None
            raise HTTPException(409 if isinstance(e, PaymentError) else 422, str(e)) from None
        status = "succeeded" if outcome.ok and not outcome.pending else "pending" if outcome.ok else "failed"
        provider = payments.of(order)
        if outcome.pending and getattr(provider, "client", None) is not None:
            # The sandbox answers refunds at once: wait for that answer (or report it is on its way).
            payments.kick()
            row = provider.wait(engine, f"refund:{body.key}",
                                settings.sandbox_timeout_s * (settings.sandbox_retries + 1) + 1)
            status = {"queued": "pending"}.get(row.status, row.status)
        with engine.connect() as conn:
            captured, refunded = payments.refunded(conn, order)
        if outcome.created:
            log.info("order %s: refund of %d %s by %s (%s): %s", order_id, outcome.amount, order.currency,
                     caller.username, reason, status)
        return {"order_id": order_id, "key": body.key, "amount": outcome.amount, "currency": order.currency,
                "status": status, "created": outcome.created, "provider": order.provider, "captured": captured,
                "refunded": refunded}

    @app.get("/api/v1/customers/{customer}/wallet", tags=["payments"])
    def wallet(customer: str, currency: str = "CNY", limit: int = Query(50, ge=1, le=1000),
               caller: Caller = Depends(require(*people.WALLET_READERS))):
        """A customer's wallet balance and history; ``customer`` is the id, or the phone number with its +."""
        if not CURRENCY_RE.match(currency):
            raise HTTPException(422, "currency: three capital letters, e.g. CNY")
        with engine.connect() as conn:
            if customer.isdigit() and len(customer) <= 9:
                row = people.get(conn, int(customer))
            elif customer.startswith("+"):
                row = people.by_phone(conn, customer)
            else:
                raise HTTPException(422, "customer: an id, or a phone number starting with +")
            if row is None:
                raise HTTPException(404, f"no customer {customer}")
            balance = payments.balance(conn, row.id, currency)
            history = payments.history(conn, row.id, currency, limit)
        return {"customer": {"id": row.id, "name": row.name, "phone": row.phone,
                             "payment_method": row.payment_method},
                "currency": currency, "balance": balance,
                "history": [{"at": h.created_at.isoformat(), "kind": h.kind, "order_id": h.order_id,
                             "amount": h.amount} for h in history]}

    @app.post("/api/v1/payments/webhook/sandbox", tags=["payments"])
    async def sandbox_webhook(request: Request):
        """Where the sandbox provider confirms or declines an authorisation. Signed: see
        ``cloud/payments/webhook.py``; a bad or stale signature gets 401, and a second delivery of an
        event changes nothing."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > webhook.MAX_BODY:
                raise HTTPException(413, f"a webhook body is at most {webhook.MAX_BODY} bytes")
        return await run_in_threadpool(on_webhook, body, request.headers.get(webhook.TIMESTAMP_HEADER),
                                       request.headers.get(webhook.SIGNATURE_HEADER),
                                       request.client.host if request.client else "?")

    def on_webhook(body: bytes, timestamp: str | None, signature: str | None, sender: str) -> dict:
        counts = cloud.stats.counts
        sandbox = payments.sandbox
        if sandbox is None:
            raise HTTPException(404, "this cloud has no sandbox provider (--sandbox-url)")
        try:
            webhook.verify(settings.sandbox_secret.encode(), timestamp, signature, body, time.time(),
                           settings.sandbox_tolerance_s)
            event = webhook.parse(body)
        except webhook.WebhookRefused as e:
            counts[f"webhook_refused_{e.why}"] += 1
            log.warning("sandbox webhook from %s refused (%s): %s", sender, e.why, e)
            raise HTTPException(400 if e.why == "malformed" else 401, str(e)) from None
        now = utcnow()
        late = False
        with engine.begin() as conn:
            if not webhook.first_delivery(conn, "sandbox", event, now):
                counts["webhook_duplicates"] += 1
                log.info("sandbox webhook %s delivered again: nothing to do", event.id)
                return {"ok": True, "event": event.id, "duplicate": True}
            order = orders.get(conn, event.order_id)
            if order is None or order.provider != sandbox.name or \
                    (order.amount, order.currency) != (event.amount, event.currency):
                counts["webhook_unmatched"] += 1
                log.warning("sandbox webhook %s names no sandbox order of ours: %s %d %s", event.id,
                            event.order_id, event.amount, event.currency)
                return {"ok": True, "event": event.id, "ignored": "no such order"}
            moved = None
            if sandbox.confirm(conn, event, now):
                moved = orders.confirm(conn, order.id, event.succeeded, event.reason, now, settings.vend_timeout_s)
            current = moved or orders.get(conn, order.id)
            if event.succeeded and moved is None and current.status == "declined":
                # Confirmed after the order gave up waiting: the customer must not be left with a hold.
                sandbox.void_late(conn, current, event.id, now)
                late = True
        counts["webhooks"] += 1
        if moved is not None and moved.status == "authorised":
            cloud.send_vend(moved)
        if late:
            payments.kick()
        return {"ok": True, "event": event.id, "order": current.id, "status": current.status}
