"""The payments API: refunds by a manager, a customer's wallet for staff, and each registered provider's
webhook (``POST /api/v1/payments/webhook/{name}``, for those whose ``ProviderSpec.webhook`` is set).

Refunds and wallets need a staff role (``people.REFUNDERS``, ``people.WALLET_READERS``); a refund is
written to the audit trail in its own transaction. A webhook is public: its signature is the credential.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Protocol

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from cloud.sales import office, orders
from cloud import people
from cloud.core.db import reader, utcnow
from cloud.core.money import parse_amount
from cloud.people import Caller, require
from cloud.core.settings import Settings
from cloud.payments import MAX_TOPUP, Payments, webhook
from cloud.payments.registry import REGISTRY
from cloud.sync.ingest import Stats
from cloud.accounts.journal import IdempotencyConflict

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


class PaymentsCloud(Protocol):
    """What the payments routes ask of the running cloud (``cloud.service.Cloud`` is one)."""

    engine: sa.Engine
    settings: Settings
    provider: Payments
    stats: Stats

    def send_vend(self, order: sa.Row) -> None: ...


def the_cloud(request: Request) -> PaymentsCloud:
    """The running cloud, as the payments routes see it."""
    return request.app.state.cloud


router = APIRouter(tags=["payments"])


@router.post("/api/v1/orders/{order_id}/refund")
def refund(order_id: str, body: RefundBody, caller: Caller = Depends(require(*people.REFUNDERS)),
           cloud: PaymentsCloud = Depends(the_cloud)):
    """Refund a sale, in full or the ``amount`` given, with a reason; the same ``key`` again returns
    the first refund and moves nothing. More than was captured is refused."""
    engine, payments = cloud.engine, cloud.provider
    try:
        done = office.refund(engine, payments, caller, order_id, body.amount, body.key, body.reason, utcnow())
    except office.OfficeError as e:
        raise HTTPException(e.status, str(e)) from None
    order, outcome, reason = done.order, done.outcome, done.reason
    status = "succeeded" if outcome.ok and not outcome.pending else "pending" if outcome.ok else "failed"
    if outcome.pending:
        # A provider that answers refunds at once (not by webhook): wait for that answer.
        status = payments.of(order).answer(engine, f"refund:{body.key}") or status
    with reader(engine).connect() as conn:
        captured, refunded = payments.refunded(conn, order)
    if outcome.created:
        log.info("order %s: refund of %d %s by %s (%s): %s", order_id, outcome.amount, order.currency,
                 caller.username, reason, status)
    return {"order_id": order_id, "key": body.key, "amount": outcome.amount, "currency": order.currency,
            "status": status, "created": outcome.created, "provider": order.provider, "captured": captured,
            "refunded": refunded}


def find_customer(conn, customer: str):
    """The customer named by id or by phone number with its +; 422 or 404 otherwise."""
    if customer.isdigit() and len(customer) <= 9:
        row = people.get(conn, int(customer))
    elif customer.startswith("+"):
        row = people.by_phone(conn, customer)
    else:
        raise HTTPException(422, "customer: an id, or a phone number starting with +")
    if row is None:
        raise HTTPException(404, f"no customer {customer}")
    return row


@router.get("/api/v1/customers/{customer}/wallet")
def wallet(customer: str, currency: str = "CNY", limit: int = Query(50, ge=1, le=1000),
           caller: Caller = Depends(require(*people.WALLET_READERS)), cloud: PaymentsCloud = Depends(the_cloud)):
    """A customer's wallet balance and history; ``customer`` is the id, or the phone number with its +."""
    if not CURRENCY_RE.match(currency):
        raise HTTPException(422, "currency: three capital letters, e.g. CNY")
    with reader(cloud.engine).connect() as conn:
        row = find_customer(conn, customer)
        balance = cloud.provider.balance(conn, row.id, currency)
        history = cloud.provider.history(conn, row.id, currency, limit)
    return {"customer": {"id": row.id, "name": row.name, "phone": row.phone,
                         "payment_method": row.payment_method},
            "currency": currency, "balance": balance,
            "history": [{"at": h.created_at.isoformat(), "kind": h.kind, "order_id": h.order_id,
                         "amount": h.amount} for h in history]}


class CreditBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: StrictStr
    key: StrictStr
    # Minor units (2000), or the amount as written in the currency ("20.00"); checked by ``credit_amount``.
    amount: Any
    currency: StrictStr = "CNY"


def credit_amount(amount, currency: str) -> int:
    """A credit's amount in minor units, more than zero and at most MAX_TOPUP; 422 naming the field."""
    if isinstance(amount, str):
        try:
            amount = parse_amount(amount, currency)
        except ValueError:
            amount = None
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_TOPUP:
        raise HTTPException(422, f"amount: a whole number of minor units from 1 to {MAX_TOPUP} (2000), or the amount "
                                 "as written in the currency (\"20.00\")")
    return amount


@router.post("/api/v1/customers/{customer}/wallet/credit")
def credit(customer: str, body: CreditBody, caller: Caller = Depends(require(*people.WALLET_CREDITORS)),
           cloud: PaymentsCloud = Depends(the_cloud)):
    """Grant a customer money in their wallet (goodwill, a payment taken outside, a correction), with a
    reason, in the audit trail; posted to the journal like a top-up. The same ``key`` again credits once."""
    reason = clean_reason(body.reason)
    if not KEY_RE.match(body.key):
        raise HTTPException(422, "key: 8 to 64 letters, digits, - or _ (the same key makes a retry safe)")
    if not CURRENCY_RE.match(body.currency):
        raise HTTPException(422, "currency: three capital letters, e.g. CNY")
    amount = credit_amount(body.amount, body.currency)
    now = utcnow()
    try:
        with cloud.engine.begin() as conn:
            row = find_customer(conn, customer)
            outcome = cloud.provider.credit(conn, row.id, amount, body.currency, body.key, now)
            if outcome.created:
                people.audit.record(conn, caller, "wallet.credit", "customer", row.id, {
                    "amount": amount, "currency": body.currency, "reason": reason, "key": body.key}, now)
            balance = cloud.provider.balance(conn, row.id, body.currency)
    except IdempotencyConflict as e:
        raise HTTPException(409, f"key: used before for another credit ({e})") from None
    if outcome.created:
        log.info("customer %s: wallet credit of %d %s by %s (%s)", row.id, amount, body.currency, caller.username,
                 reason)
    return {"customer_id": row.id, "amount": amount, "currency": body.currency, "key": body.key,
            "created": outcome.created, "balance": balance}


def add_webhook(name: str) -> None:
    """``POST /api/v1/payments/webhook/{name}``: where the provider ``name`` confirms or declines an
    authorisation, by signed notification."""

    async def provider_webhook(request: Request, cloud: PaymentsCloud = Depends(the_cloud)):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > webhook.MAX_BODY:
                raise HTTPException(413, f"a webhook body is at most {webhook.MAX_BODY} bytes")
        sender = request.client.host if request.client else "?"
        reply = REGISTRY[name].reply
        if reply is None:
            return await run_in_threadpool(on_webhook, cloud, name, body, request.headers, sender)
        # The platform wants its own answer ("success", {"code": "SUCCESS"}), and a refusal in its words.
        try:
            await run_in_threadpool(on_webhook, cloud, name, body, request.headers, sender)
            code, media, text = reply(True, "")
        except HTTPException as e:
            code, media, text = reply(False, str(e.detail))
            code = code if code >= 400 else e.status_code
        return Response(text, status_code=code, media_type=media)

    provider_webhook.__name__ = f"{name}_webhook"
    provider_webhook.__doc__ = (f"Where the {name} provider confirms or declines an authorisation. Signed: see "
                                "``cloud/payments/webhook.py``; a bad or stale signature gets 401, and a second "
                                "delivery of an event changes nothing.")
    router.add_api_route(f"/api/v1/payments/webhook/{name}", provider_webhook, methods=["POST"])


def on_webhook(cloud: PaymentsCloud, name: str, body: bytes, headers: Mapping[str, str], sender: str) -> dict:
    """One notification from provider ``name``: checked, recorded once, and the order moved on."""
    spec, counts, engine = REGISTRY[name], cloud.stats.counts, cloud.engine
    provider = cloud.provider.configured(name)
    if provider is None:
        raise HTTPException(404, f"this cloud has no {name} provider ({spec.missing or 'not configured'})")
    try:
        event = spec.webhook(cloud.settings, headers, body)
    except webhook.WebhookRefused as e:
        counts[f"webhook_refused_{e.why}"] += 1
        log.warning("%s webhook from %s refused (%s): %s", name, sender, e.why, e)
        raise HTTPException(400 if e.why == "malformed" else 401, str(e)) from None
    now = utcnow()
    late = False
    with engine.begin() as conn:
        if not webhook.first_delivery(conn, name, event, now):
            counts["webhook_duplicates"] += 1
            log.info("%s webhook %s delivered again: nothing to do", name, event.id)
            return {"ok": True, "event": event.id, "duplicate": True}
        if event.type not in webhook.EVENT_TYPES:
            # Not an authorisation's: a mandate, a refund's answer... the provider's own business.
            did = provider.notified(conn, event, now)
            log.info("%s webhook %s (%s): %s", name, event.id, event.type, did)
            counts["webhooks"] += 1
            return {"ok": True, "event": event.id, "did": did}
        order = orders.get(conn, event.order_id)
        if order is None or order.provider != provider.name or \
                (order.amount, order.currency) != (event.amount, event.currency):
            counts["webhook_unmatched"] += 1
            log.warning("%s webhook %s names no %s order of ours: %s %d %s", name, event.id, name,
                        event.order_id, event.amount, event.currency)
            return {"ok": True, "event": event.id, "ignored": "no such order"}
        moved = None
        if provider.confirm(conn, event, now):
            moved = orders.confirm(conn, order.id, event.succeeded, event.reason, now, cloud.settings.vend_timeout_s)
        current = moved or orders.get(conn, order.id)
        if event.succeeded and moved is None and current.status == "declined":
            # Confirmed after the order gave up waiting: the customer must not be left with a hold.
            provider.void_late(conn, current, event.id, now)
            late = True
    counts["webhooks"] += 1
    if moved is not None and moved.status == "authorised":
        cloud.send_vend(moved)
    if late:
        cloud.provider.kick()
    return {"ok": True, "event": event.id, "order": current.id, "status": current.status}


for _spec in REGISTRY:
    if _spec.webhook is not None:
        add_webhook(_spec.name)
