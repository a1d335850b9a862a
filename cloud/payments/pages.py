"""The customer's wallet: its balance, its history with what each payment bought, and, only on the demo's
cloud (``--demo-topups``), a form that tops it up with free demo money. Anywhere else money comes in only
through a payment provider or an administrator's credit, and ``POST /wallet/topup`` is not there (404)."""

from __future__ import annotations

import secrets
from typing import Protocol

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from protocol.messages import utcnow
from cloud.core.db import reader
from cloud.core.money import parse_amount
from cloud.core.settings import Settings
from cloud import people
from cloud.fleet import machines
from cloud.payments import IdempotencyConflict, Payments, PaymentError, mandates
from cloud.payments.registry import REGISTRY
from cloud.payments.wallet import DEMO_CURRENCY, MAX_TOPUP
from cloud.people import auth, forms
from cloud.sales import receipts
from cloud.web import i18n
from cloud.web.limits import guard
from cloud.web.pages import menu_machine, problem, safe_next, translator, valid_form_key

router = APIRouter(include_in_schema=False)


class WalletDesk(Protocol):
    """What the wallet's pages ask of the running cloud (``cloud.service.Cloud`` is one)."""

    engine: sa.Engine
    settings: Settings
    provider: Payments


def the_cloud(request: Request) -> WalletDesk:
    return request.app.state.cloud


def wallet_page(cloud: "WalletDesk", request: Request, customer, next: str, error: str = "", status_code: int = 200,
                amount: str = "20"):
    with reader(cloud.engine).connect() as conn:
        balance = cloud.provider.balance(conn, customer.id, DEMO_CURRENCY)
        history = cloud.provider.history(conn, customer.id, DEMO_CURRENCY)
        bought = receipts.products_of(conn, [row.order_id for row in history if row.order_id],
                                       i18n.language_of(request))
    return forms.page(request, "wallet.html", status_code, customer=customer, balance=balance, history=history,
                bought=bought, currency=DEMO_CURRENCY, key=secrets.token_urlsafe(16),
                demo_topups=cloud.settings.demo_topups,
                next=safe_next(next) if next else "", error=error, amount=amount)

# -- customer pages -----------------------------------------------------------------------------



@router.get("/wallet", response_class=HTMLResponse)
def wallet(request: Request, next: str = "", cloud: WalletDesk = Depends(the_cloud)):
    customer = auth.current_customer(request)
    if customer is None:
        return RedirectResponse("/register?next=/wallet", status_code=303)
    return wallet_page(cloud, request, customer, next)

@router.get("/wallet/topup")
def topup_again(next: str = ""):
    return RedirectResponse(f"/wallet?next={safe_next(next)}" if next else "/wallet", status_code=303)

@router.post("/wallet/topup", response_class=HTMLResponse, dependencies=[Depends(forms.guard)])
def topup(request: Request, amount: str = Form(""), key: str = Form(""), next: str = Form(""),
          cloud: WalletDesk = Depends(the_cloud)):
    _ = translator(request)
    if not cloud.settings.demo_topups:
        # Free money would make the goods free: only the demo's cloud offers it.
        return problem(request, 404, _("No top-ups here"),
                       _("A wallet cannot be topped up from this page. Nothing was added. Pay another way, or "
                         "ask the operator."), (_("Wallet"), "/wallet"))
    customer = auth.current_customer(request)
    if customer is None:
        return RedirectResponse("/register?next=/wallet", status_code=303)
    guard(request, "topup", phone=customer.phone)
    lang = i18n.language_of(request)
    try:
        if not valid_form_key(key):
            raise PaymentError(_("The form was incomplete: reload the page."))
        try:
            minor = parse_amount(amount, DEMO_CURRENCY)
        except ValueError:
            raise PaymentError(_("Amount: “{amount}” is not an amount more than zero: write it like 10 or "
                                 "10.50.", amount=amount)) from None
        if minor > MAX_TOPUP:
            raise PaymentError(_("Amount: a top-up is {most} at most.",
                                 most=i18n.money(MAX_TOPUP, DEMO_CURRENCY, lang)))
        with cloud.engine.begin() as conn:
            cloud.provider.topup(conn, customer.id, minor, DEMO_CURRENCY, f"{customer.id}:{key}", utcnow())
    except IdempotencyConflict:
        # An old form (the back button) sent again with another amount: its top-up was done already.
        return wallet_page(cloud, request, customer, next, status_code=409, amount=amount, error=_(
            "That top-up was done already, for another amount. Nothing more was added: check the balance, then "
            "top up again here."))
    except PaymentError as e:
        return wallet_page(cloud, request, customer, next, error=str(e), status_code=422, amount=amount)
    return RedirectResponse(safe_next(next) if next else "/wallet", status_code=303)

# -- API ----------------------------------------------------------------------------------------



# -- how a customer pays: choose (again) ---------------------------------------------------------

def payment_page(cloud: "WalletDesk", request: Request, customer, next: str, why: str = "", error: str = "",
                 status_code: int = 200):
    _ = translator(request)
    current = customer.payment_method
    with reader(cloud.engine).connect() as conn:
        mandate = mandates.get(conn, customer.id, current)
    # Only the ways that take the currency of the machine the customer came from (``next``: its menu).
    machine = menu_machine(next)
    with reader(cloud.engine).connect() as conn:
        currency = machines.currency_of(conn, machine) if machine else None
    offered = cloud.provider.methods_for(request.headers.get("user-agent", ""), currency) \
        or REGISTRY.in_order_for(cloud.provider.methods, request.headers.get("user-agent", ""))
    choices = [(name, _(REGISTRY[name].label) if REGISTRY[name].label else name) for name in offered]
    label = dict(choices).get(current, current)
    if why == "again" and mandate is not None and mandate.status == "revoked":
        notice = _("You withdrew your permission for {method} to be charged, so nothing was charged. Choose how "
                   "to pay, and set it up again.", method=label)
    elif why == "again":
        notice = _("Paying by {method} is not set up yet, so nothing was charged. Choose how to pay, and finish "
                   "setting it up.", method=label)
    else:
        notice = ""
    return forms.page(request, "payment_method.html", status_code, customer=customer, choices=choices,
                      current=current, notice=notice, error=error, next=safe_next(next) if next else "/wallet")


@router.get("/account/payment", response_class=HTMLResponse)
def payment_method(request: Request, next: str = "", why: str = "", cloud: WalletDesk = Depends(the_cloud)):
    """How this customer pays, and the way to choose again (a withdrawn card or agreement sends them here)."""
    customer = auth.current_customer(request)
    if customer is None:
        return RedirectResponse(f"/register?next={safe_next(next or '/account/payment')}", status_code=303)
    return payment_page(cloud, request, customer, next, why)


@router.post("/account/payment", response_class=HTMLResponse, dependencies=[Depends(forms.guard)])
def choose_payment(request: Request, payment_method: str = Form(""), next: str = Form(""),
                   cloud: WalletDesk = Depends(the_cloud)):
    _ = translator(request)
    customer = auth.current_customer(request)
    if customer is None:
        return RedirectResponse("/register?next=/account/payment", status_code=303)
    base = (cloud.settings.public_url or str(request.base_url)).rstrip("/")
    try:
        with cloud.engine.begin() as conn:
            people.set_payment_method(conn, customer.id, payment_method, methods=cloud.provider.methods)
            goto = cloud.provider.choose(payment_method).enrol(conn, customer.id, base + safe_next(next or "/wallet"),
                                                              utcnow())
    except people.RegistrationError:
        return payment_page(cloud, request, customer, next, status_code=422,
                            error=_("Choose one of the ways to pay listed here."))
    return RedirectResponse(goto or safe_next(next or "/wallet"), status_code=303)
