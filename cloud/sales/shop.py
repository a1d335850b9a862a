"""The customer's shop: the QR landing, the machine's menu, buying, and the order's page, its live status
and its receipt. Plain server-rendered forms that work on any phone, with script or without.

A scan proves the customer stands at the machine: it leaves a signed cookie that opens that machine's menu
for ``VISIT_S``. A purchase carries the form's idempotency key, so a double tap is one order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Protocol

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from protocol import ProtocolError
from protocol import token as qrtoken
from protocol.messages import utcnow
from cloud.core.db import in_transaction, reader
from cloud.core.settings import Settings
from cloud.fleet import machines
from cloud.payments import Payments
from cloud.payments.wallet import DEMO_CURRENCY, NAME as WALLET
from cloud.people import auth, forms
from cloud.people.auth import gate
from cloud.sales import orders, receipts
from cloud.sync.ingest import Stats
from cloud.web import i18n
from cloud.web.limits import guard
from cloud.web.pages import page, problem, translator, valid_form_key

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
VISIT_COOKIE = "vend_visit"
VISIT_S = 15 * 60  # after a scan, the menu stays open this long
EVENTS_POLL_S = 0.5
EVENTS_LONGEST_S = 90  # then the stream ends and the browser reconnects: no connection held for ever


class ShopCloud(Protocol):
    """What the shop asks of the running cloud (``cloud.service.Cloud`` is one)."""

    engine: sa.Engine
    settings: Settings
    provider: Payments
    stats: Stats

    def send_vend(self, order: sa.Row) -> None: ...


def the_cloud(request: Request) -> ShopCloud:
    """The running cloud, as the shop sees it."""
    return request.app.state.cloud


def visiting(request: Request, machine_id: str) -> bool:
    value = gate(request).customer_signer.unsign(request.cookies.get(VISIT_COOKIE))
    if not value:
        return False
    visited, _, until = value.partition("|")
    return visited == machine_id and until.isdigit() and int(until) > time.time()

def not_scanned(request: Request):
    _ = translator(request)
    return problem(request, 403, _("Scan the machine first"),
                   _("To buy, scan the QR code on the machine's screen with this phone: it shows you are standing "
                     "at the machine. The menu then stays open for 15 minutes."))

def retired_machine(request: Request, machine):
    _ = translator(request)
    return problem(request, 410, _("This machine is no longer in service"),
                   _("{machine} has been taken out of service, so it cannot sell. You have not been charged. "
                     "Please use another machine.", machine=machine.name or machine.id))


def unknown_machine(request: Request, machine_id: str):
    _ = translator(request)
    return problem(request, 404, _("Unknown machine"),
                   _("There is no machine {machine}. Scan the QR code on the machine's screen again.",
                     machine=machine_id))



@router.get("/", response_class=HTMLResponse)
def home(request: Request, cloud: ShopCloud = Depends(the_cloud)):
    _ = translator(request)
    return problem(request, 200, _("Scan a machine"), _("Scan the QR code on a vending machine's screen to buy."))

@router.get("/q/{tok}", response_class=HTMLResponse)
def landing(request: Request, tok: str, cloud: ShopCloud = Depends(the_cloud)):
    _ = translator(request)
    guard(request, "landing")
    try:
        machine_id = qrtoken.machine_of(tok)
        with reader(cloud.engine).connect() as conn:
            secrets_now = machines.secrets_of(conn, machine_id, utcnow())
        if not secrets_now:
            raise ProtocolError("this QR code names a machine we do not know")
        scanned = qrtoken.verify(tok, secrets_now, time.time(), cloud.settings.token_ttl_s, cloud.settings.token_skew_s)
    except qrtoken.TokenExpired as e:
        log.info("expired QR code: %s", e)
        return problem(request, 410, _("This QR code has expired"),
                       _("The code on the machine's screen changes every few seconds, and this one is old "
                         "(perhaps a photo, or a page opened again later). Scan the code showing now."))
    except ProtocolError as e:
        log.info("QR code refused: %s", e)
        cloud.stats.counts["bad_tokens"] += 1
        return problem(request, 400, _("QR code not recognised"),
                       _("This code does not come from one of our machines, or it was misread. Scan the code on "
                         "the machine's screen again."))
    with reader(cloud.engine).connect() as conn:
        machine = machines.get(conn, machine_id, i18n.language_of(request))  # its secret verified the code
    if machine.retired_at is not None:
        log.info("QR code of retired machine %s refused", machine_id)
        return retired_machine(request, machine)
    if scanned.nonce == qrtoken.MIRROR_NONCE:
        return problem(request, 403, _("This is a copy of the machine's screen"),
                       _("This code comes from the dashboard's copy of the screen, not from the machine. To buy, "
                         "scan the code on the machine's own screen."))
    target = f"/m/{machine_id}"
    if auth.current_customer(request) is None:
        target = f"/register?next={target}"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(VISIT_COOKIE, gate(request).customer_signer.sign(f"{machine_id}|{int(time.time()) + VISIT_S}"),
                        max_age=VISIT_S, httponly=True, samesite="lax", secure=gate(request).secure)
    return response



@router.get("/m/{machine_id}", response_class=HTMLResponse)
def menu(request: Request, machine_id: str, cloud: ShopCloud = Depends(the_cloud)):
    customer = auth.current_customer(request)
    if customer is None:
        return RedirectResponse(f"/register?next=/m/{machine_id}", status_code=303)
    with reader(cloud.engine).connect() as conn:
        try:
            machine = machines.get(conn, machine_id, i18n.language_of(request))
        except machines.FleetError:
            return unknown_machine(request, machine_id)
        if machine.retired_at is not None:
            return retired_machine(request, machine)
        if not visiting(request, machine_id):
            return not_scanned(request)
        items = machines.menu(conn, machine_id, i18n.language_of(request))
        balance = cloud.provider.balance(conn, customer.id, DEMO_CURRENCY)
    response = forms.page(request, "menu.html", machine=machine, items=items, customer=customer, balance=balance,
                          currency=DEMO_CURRENCY, key=secrets.token_urlsafe(16),
                          demo_topups=cloud.settings.demo_topups)
    # Back to the menu must not show a cached copy whose order key was spent: each visit gets a new key.
    response.headers["Cache-Control"] = "no-store"
    return response

def cannot_buy(cloud: "ShopCloud", request: Request, e: orders.OrderError, machine_id: str, slot: str):
    """Why this order could not be placed, and what to do instead."""
    _ = translator(request)
    with reader(cloud.engine).connect() as conn:
        machine = machines.get(conn, machine_id, i18n.language_of(request))
        item = machines.slot_for_sale(conn, machine_id, slot, i18n.language_of(request))
    product = item.name if item else slot
    title, message = {
        "sold_out": (_("Sold out"), _("{product} (slot {slot}) is sold out. Choose something else from the menu. "
                                      "You have not been charged.", product=product, slot=slot)),
        "offline": (_("Machine offline"), _("{machine} is offline right now, so it cannot sell. You have not been "
                                            "charged. Try again in a few minutes, or use another machine.",
                                            machine=machine.name)),
        "out_of_service": (_("Out of service"), _("Slot {slot} is out of service. Choose something else from the "
                                                  "menu. You have not been charged.", slot=slot)),
        "unknown_slot": (_("Cannot buy this"), _("{machine} has no slot {slot}. Choose from the menu.",
                                                 machine=machine.name, slot=slot)),
        "retired": (_("This machine is no longer in service"),
                    _("{machine} has been taken out of service, so it cannot sell. You have not been charged. "
                      "Please use another machine.", machine=machine.name)),
        "blocked": (_("You cannot buy here"), _("Your account is blocked from buying at these machines. You have "
                                                "not been charged. Please contact the operator.")),
        "payment_unavailable": (_("Cannot buy this"), _("This way of paying is not available right now. Try again "
                                                        "later.")),
    }.get(e.code, (_("Cannot buy this"), _("This order could not be placed. Go back to the menu and try again.")))
    if e.code == "currency":  # this machine's prices are in a currency the customer's way to pay does not take
        return problem(request, 409, _("Choose another way to pay"),
                       _("Your way of paying cannot pay prices in {currency}, which this machine sells in. You have "
                         "not been charged. Choose another way to pay.", currency=item.currency if item else ""),
                       (_("Choose how to pay"), f"/account/payment?next=/m/{machine_id}"))
    return problem(request, 409, title, message, (_("Back to the menu"), f"/m/{machine_id}"))

def declined(cloud: "ShopCloud", request: Request, order, customer):
    _ = translator(request)
    back = f"/m/{order.machine_id}"
    if order.provider != WALLET:  # only the wallet declines for want of a balance the customer can top up
        return problem(request, 402, _("Payment declined"),
                       _("The payment provider declined this payment. You have not been charged. Try again, or "
                         "choose another way to pay."), (_("Back to the menu"), back))
    with reader(cloud.engine).connect() as conn:
        balance = cloud.provider.balance(conn, customer.id, order.currency)
        item = machines.slot_for_sale(conn, order.machine_id, order.slot, i18n.language_of(request))
    amounts = dict(balance=i18n.money(balance, order.currency, i18n.language_of(request)),
                   product=item.name if item else order.slot,
                   price=i18n.money(order.amount, order.currency, i18n.language_of(request)))
    if not cloud.settings.demo_topups:  # no top-up form on this cloud: do not send the customer to one
        return problem(request, 402, _("Payment declined"),
                       _("Your wallet holds {balance}, and {product} costs {price}. You have not been charged.",
                         **amounts), (_("Back to the menu"), back))
    return problem(request, 402, _("Payment declined"),
                   _("Your wallet holds {balance}, and {product} costs {price}. You have not been charged. Top up "
                     "your wallet, then buy again.", **amounts),
                   (_("Top up"), f"/wallet?next={back}"))

@router.get("/m/{machine_id}/buy")
def buy_again(machine_id: str):
    """The language link on a page a purchase answered (sold out, declined...) asks for it again by GET."""
    return RedirectResponse(f"/m/{machine_id}", status_code=303)

@router.post("/m/{machine_id}/buy", response_class=HTMLResponse, dependencies=[Depends(forms.guard)])
def buy(request: Request, machine_id: str, slot: str = Form(""), key: str = Form(""), cloud: ShopCloud = Depends(the_cloud)):
    _ = translator(request)
    customer = auth.current_customer(request)
    if customer is None:
        return RedirectResponse(f"/register?next=/m/{machine_id}", status_code=303)
    if not visiting(request, machine_id):
        return not_scanned(request)
    if not valid_form_key(key):
        return problem(request, 400, _("Please try again"), _("The order form was incomplete: reload the menu."),
                       (_("Back to the menu"), f"/m/{machine_id}"))
    try:
        # A deadlock with the ingest (PostgreSQL, several cloud processes) undoes the whole purchase: again.
        order, created = in_transaction(cloud.engine, lambda conn: orders.place(
            conn, cloud.provider, customer.id, machine_id, slot, key, utcnow(), cloud.settings.vend_timeout_s))
    except orders.OrderError as e:
        if e.code == "no_mandate":  # set up again (or choose another way to pay), then back to this menu
            return RedirectResponse(f"/account/payment?why=again&next=/m/{machine_id}", status_code=303)
        return cannot_buy(cloud, request, e, machine_id, slot)
    except machines.FleetError:
        return unknown_machine(request, machine_id)
    if order.status == "declined":
        return declined(cloud, request, order, customer)
    if created and order.status == "authorised":
        cloud.send_vend(order)
    elif created and order.status == orders.WAITING:
        cloud.provider.kick()
    return RedirectResponse(f"/orders/{order.id}", status_code=303)



def own_order(cloud: "ShopCloud", request: Request, order_id: str):
    """The order if it is this phone's customer's, else None (someone else's looks like no order)."""
    customer = auth.current_customer(request)
    with reader(cloud.engine).connect() as conn:
        order = orders.get(conn, order_id)
    if order is None or customer is None or order.customer_id != customer.id:
        return None
    return order

def no_order(request: Request):
    _ = translator(request)
    return problem(request, 404, _("No such order"), _("This order does not exist or is not yours. Your orders "
                                                       "are listed in your wallet."),
                   (_("Wallet"), "/wallet"))

@router.get("/orders/{order_id}", response_class=HTMLResponse)
def order_page(request: Request, order_id: str, cloud: ShopCloud = Depends(the_cloud)):
    order = own_order(cloud, request, order_id)
    if order is None:
        return no_order(request)
    with reader(cloud.engine).connect() as conn:
        item = machines.slot_for_sale(conn, order.machine_id, order.slot, i18n.language_of(request))
        balance = cloud.provider.balance(conn, order.customer_id, order.currency)
        refunded = cloud.provider.refunded(conn, order)[1] if order.status in orders.REFUNDABLE else 0
        action = cloud.provider.of(order).action_url(conn, order) if order.status == orders.WAITING else None
    return page(request, "order.html", order=order, item=item,
                text=orders.status_text(translator(request), order.status, refunded, order.amount),
                settled=order.status in orders.SETTLED, balance=balance, refunded=refunded, action=action)

def order_event(cloud: "ShopCloud", request: Request, order_id: str, customer_id: int) -> dict | None:
    with reader(cloud.engine).connect() as conn:
        order = orders.get(conn, order_id)
        if order is None or order.customer_id != customer_id:
            return None
        settled = order.status in orders.SETTLED
        balance = cloud.provider.balance(conn, customer_id, order.currency) if settled else None
        # The platform asks the customer to confirm (3-D Secure, a JSAPI payment): they are standing there.
        action = cloud.provider.of(order).action_url(conn, order) if order.status == orders.WAITING else None
    lang = i18n.language_of(request)
    return {"status": order.status, "settled": settled, "action": action,
            "text": orders.status_text(translator(request), order.status),
            "balance": i18n.money(balance, order.currency, lang) if balance is not None else None}

@router.get("/orders/{order_id}/events")
async def order_events(request: Request, order_id: str, cloud: ShopCloud = Depends(the_cloud)):
    """The order's status as server-sent events: one when it changes, ending when it settles (or after
    EVENTS_LONGEST_S, when the browser reconnects). The database is polled in the threadpool: cheap, and
    the same whether or not the cloud that takes the machine's answer is this process."""
    customer = await run_in_threadpool(auth.current_customer, request)
    first = await run_in_threadpool(order_event, cloud, request, order_id, customer.id) if customer else None
    if first is None:
        return JSONResponse({"error": "no such order"}, status_code=404)

    async def stream():
        yield "retry: 2000\n\n"
        event, last, until = first, None, time.monotonic() + EVENTS_LONGEST_S
        while event is not None:
            if event != last:
                yield f"event: status\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
                last = event
            if event["settled"] or time.monotonic() > until or await request.is_disconnected():
                break
            await asyncio.sleep(EVENTS_POLL_S)
            event = await run_in_threadpool(order_event, cloud, request, order_id, customer.id)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

@router.get("/orders/{order_id}/receipt", response_class=HTMLResponse)
def receipt(request: Request, order_id: str, cloud: ShopCloud = Depends(the_cloud)):
    order = own_order(cloud, request, order_id)
    if order is None:
        return no_order(request)
    with reader(cloud.engine).connect() as conn:
        machine = machines.get(conn, order.machine_id, i18n.language_of(request))
        item = machines.slot_for_sale(conn, order.machine_id, order.slot, i18n.language_of(request))
        refunds = receipts.refunds_of(conn, order.id)
    return page(request, "customer_receipt.html", order=order, machine=machine, item=item, refunds=refunds,
                refunded=sum(r.amount for r in refunds),
                text=orders.status_text(translator(request), order.status, sum(r.amount for r in refunds),
                                        order.amount))



@router.get("/api/v1/orders/{order_id}")
def order_json(request: Request, order_id: str, cloud: ShopCloud = Depends(the_cloud)):
    customer = auth.current_customer(request)
    with reader(cloud.engine).connect() as conn:
        order = orders.get(conn, order_id)
        if order is None or customer is None or order.customer_id != customer.id:
            raise HTTPException(404, "no such order")
        action = cloud.provider.of(order).action_url(conn, order) if order.status == orders.WAITING else None
    return {"id": order.id, "status": order.status, "settled": order.status in orders.SETTLED,
            "text": orders.status_text(translator(request), order.status), "amount": order.amount,
            "currency": order.currency, "action": action}

