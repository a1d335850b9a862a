"""The customer's steps to and from Stripe: on to Checkout to save a card (``/pay/stripe/checkout``), back
from it (``/pay/stripe/saved``), and back from the bank's authentication page (``/pay/stripe/return/
{order}``). None believes the address it was called with: each asks Stripe.

Why a page before Checkout: registration is a form, and the pages' content policy (``form-action
'self'``) lets a form's answer redirect the browser only within this cloud; Chromium stops a redirect
chain that leaves for Stripe. This page is a fresh navigation, which may.
"""

from __future__ import annotations

import logging
import re

import stripe
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from protocol.messages import utcnow
from cloud.accounts.journal import PaymentError
from cloud.payments.outbox import Unreachable
from cloud.payments.stripe.provider import CHECKOUT_PATH, NAME, RETURN_PATH, SAVED_PATH, Card
from cloud.web.pages import page, problem, safe_next, translator

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
SESSION_RE = re.compile(r"cs_[A-Za-z0-9_]{1,200}\Z")
ORDER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def card(request: Request) -> Card | None:
    return request.app.state.cloud.provider.configured(NAME)


def _checkout(request: Request, provider: Card, session_id: str):
    _ = translator(request)
    try:
        status, url = provider.platform.session_page(session_id)
    except Unreachable:
        return problem(request, 503, _("Card not confirmed yet"), _(
            "Stripe could not be reached to confirm your card. Reload this page in a minute."), None)
    except stripe.StripeError as e:
        log.info("stripe: the way to Checkout named session %s, which Stripe refused: %s", session_id, e)
        return problem(request, 404, _("No such card setup"), _("This link does not name a card setup."),
                       (_("Choose how to pay"), "/account/payment"))
    if status == "complete":
        return RedirectResponse(f"{SAVED_PATH}?session_id={session_id}", status_code=303)
    if status != "open" or not url.startswith(("https://", "http://")):
        return problem(request, 409, _("Card not saved"), _(
            "Your card was not saved. Nothing was charged. Try again, or choose another way to pay."),
                       (_("Choose how to pay"), "/account/payment"))
    return page(request, "stripe_checkout.html", url=url)


@router.get(CHECKOUT_PATH)
async def checkout(request: Request, session_id: str = ""):
    """On to Stripe's Checkout page, where the customer saves a card (by itself, or with the button)."""
    _ = translator(request)
    provider = card(request)
    if provider is None or provider.platform is None:
        return problem(request, 404, _("Not available"), _("Paying by card is not available here."), None)
    if not SESSION_RE.match(session_id):
        return problem(request, 422, _("No such card setup"), _("This link does not name a card setup."),
                       (_("Choose how to pay"), "/account/payment"))
    return await run_in_threadpool(_checkout, request, provider, session_id)


def _saved(request: Request, provider: Card, session_id: str):
    _ = translator(request)
    engine = request.app.state.cloud.engine
    try:
        owner, mandate = provider.platform.session_mandate(session_id)
    except Unreachable:
        return problem(request, 503, _("Card not confirmed yet"), _(
            "Stripe could not be reached to confirm your card. Reload this page in a minute."), None)
    except stripe.StripeError as e:  # a session Stripe does not know (a made-up address): the reader's mistake
        log.info("stripe: a return from Checkout named session %s, which Stripe refused: %s", session_id, e)
        return problem(request, 404, _("No such card setup"), _("This link does not name a card setup."),
                       (_("Choose how to pay"), "/account/payment"))
    if mandate is None or not owner.isdigit():
        return problem(request, 409, _("Card not saved"), _(
            "Your card was not saved. Nothing was charged. Try again, or choose another way to pay."),
                       (_("Choose how to pay"), "/account/payment"))
    with engine.begin() as conn:
        provider.saved(conn, int(owner), mandate, utcnow())
        found = provider.mandate_of(conn, int(owner))
    return RedirectResponse(safe_next(found.detail.get("next", "/") if found is not None else "/"), status_code=303)


@router.get(SAVED_PATH)
async def saved(request: Request, session_id: str = ""):
    """Back from Stripe Checkout: the card saved is the customer's mandate, then on to where they were."""
    _ = translator(request)
    provider = card(request)
    if provider is None or provider.platform is None:
        return problem(request, 404, _("Not available"), _("Paying by card is not available here."), None)
    if not SESSION_RE.match(session_id):
        return problem(request, 422, _("No such card setup"), _("This link does not name a card setup."),
                       (_("Choose how to pay"), "/account/payment"))
    return await run_in_threadpool(_saved, request, provider, session_id)


@router.get(RETURN_PATH + "/{order_id}")
async def returned(request: Request, order_id: str):
    """Back from the bank's authentication page: Stripe is asked how the payment stands, the order moves
    on, and the customer sees their order."""
    _ = translator(request)
    provider = card(request)
    if provider is None or not ORDER_RE.match(order_id):
        return problem(request, 404, _("No such order"), _("This link does not name an order."), None)
    try:
        await run_in_threadpool(provider.returned, request.app.state.cloud.engine, order_id, utcnow())
    except PaymentError as e:
        log.warning("stripe: order %s: the customer's return could not be recorded: %s", order_id, e)
    return RedirectResponse(f"/orders/{order_id}", status_code=303)
