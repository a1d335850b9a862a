"""A customer signs in on a new phone with a one-time code (issue 13 #5): the code goes by text message or
e-mail (``cloud/people/senders/``), and the phone that types it back gets the customer's cookie.

Every answer to "send me a code" is the same page whether or not the number is a customer's, and a wrong
code for an unknown number reads as a wrong code: neither tells a stranger who is registered. The phone the
customer used before keeps its cookie: the cookie holds no state the server could revoke, and a customer who
signs in on a tablet would not expect the phone to be signed out. A lost phone's cookie is a gap written
down in docs/pages.md.
"""

from __future__ import annotations

import logging
from typing import Protocol

import sqlalchemy as sa
from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud import people
from cloud.core.db import utcnow
from cloud.people import codes, forms
from cloud.people.auth import Gate, gate
from cloud.people.senders import Sender, SendError
from cloud.web import i18n
from cloud.web.limits import guard
from cloud.web.pages import safe_next, translator

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
CUSTOMER_MAX_AGE = 3 * 365 * 86400


class SignInDesk(Protocol):
    """What sign-in asks of the running cloud (``cloud.service.Cloud`` is one)."""

    engine: sa.Engine
    senders: list[Sender]


def the_cloud(request: Request) -> SignInDesk:
    return request.app.state.cloud



def digits(phone: str) -> str:
    """A phone number by its digits alone, for the rate limits: "+86 138..." and "+86-138..." are one number."""
    return "".join(ch for ch in phone if ch.isdigit())[:20]


def set_customer_cookie(response, g: Gate, customer_id: int) -> None:
    """The phone's key to the customer's account and wallet."""
    response.set_cookie(people.COOKIE, g.customer_signer.sign(str(customer_id)), max_age=CUSTOMER_MAX_AGE,
                        httponly=True, samesite="lax", secure=g.secure)


def channels(senders: list[Sender]) -> str:
    """How codes travel from this cloud: what the page tells everyone, the same for every number."""
    names = {s.name for s in senders}
    return "both" if names >= {"sms", "email"} else next(iter(names), "")


def signin_page(request: Request, cloud: SignInDesk, step: str, next: str, status_code: int = 200,
                phone: str = "", error: str = "") -> HTMLResponse:
    return forms.page(request, "signin.html", status_code, step=step, next=safe_next(next), phone=phone,
                      error=error, by=channels(cloud.senders))


def send_code(senders: list[Sender], customer, code: str, lang: str) -> None:
    """Hand the code to every sender that can reach the customer; after the answer, so that a known
    number takes no longer to answer than an unknown one. Neither the code nor a secret is logged."""
    _ = i18n.Translator(lang)
    subject = _("Your sign-in code")
    text = _("Your sign-in code is {code}. It is good for 10 minutes. If you did not ask for it, ignore this "
             "message: nobody can sign in without it.", code=code)
    for sender in senders:
        if not sender.reaches(customer):
            continue
        try:
            sender.send(customer, subject, text)
            log.info("sign-in code for customer %s sent by %s", customer.id, sender.name)
        except SendError as e:
            log.warning("sign-in code for customer %s not sent by %s: %s", customer.id, sender.name, e)


def offer_code(request: Request, cloud: SignInDesk, phone: str, next: str, background: BackgroundTasks):
    """Send a code if the number is a customer's that a sender reaches, and say the same thing either way."""
    _ = translator(request)
    if not cloud.senders:
        return signin_page(request, cloud, "phone", next)
    try:
        phone = people.clean_phone(phone)
    except people.RegistrationError:
        return signin_page(request, cloud, "phone", next, 422, phone=phone, error=_(
            "Please give a phone number of 6 to 15 digits, optionally starting with +."))
    with cloud.engine.begin() as conn:
        customer = people.by_phone(conn, phone)
        reachable = customer is not None and any(s.reaches(customer) for s in cloud.senders)
        code = codes.issue(conn, customer.id, utcnow(), gate(request).code_key) if reachable else None
    if code is not None:
        background.add_task(send_code, cloud.senders, customer, code, i18n.language_of(request))
    return signin_page(request, cloud, "code", next, phone=phone)


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request, next: str = "/wallet", cloud: SignInDesk = Depends(the_cloud)):
    return signin_page(request, cloud, "phone", next)


@router.post("/signin", response_class=HTMLResponse, dependencies=[Depends(forms.guard)])
def ask_for_code(request: Request, background: BackgroundTasks, phone: str = Form(""), next: str = Form("/wallet"),
                 cloud: SignInDesk = Depends(the_cloud)):
    guard(request, "otp", phone=digits(phone))
    return offer_code(request, cloud, phone, next, background)


@router.get("/signin/code")
def code_again(next: str = "/wallet"):
    """The language link on the code page asks for it by GET: start the sign-in again."""
    return RedirectResponse(f"/signin?next={safe_next(next)}", status_code=303)


@router.post("/signin/code", response_class=HTMLResponse, dependencies=[Depends(forms.guard)])
def sign_in(request: Request, phone: str = Form(""), code: str = Form(""), next: str = Form("/wallet"),
            cloud: SignInDesk = Depends(the_cloud)):
    # Not rate-limited here: a code allows a few tries and then ends (cloud/people/codes.py); sending
    # codes is what the limits guard.
    _ = translator(request)
    g = gate(request)
    with cloud.engine.begin() as conn:
        customer = people.by_phone(conn, phone)
        ok = customer is not None and codes.redeem(conn, customer.id, codes.clean(code), utcnow(), g.code_key)
    if not ok:
        return signin_page(request, cloud, "code", next, 422, phone=phone, error=_(
            "That code is wrong or has expired. Check it, or ask for a new one."))
    log.info("customer %s signed in on a new phone with a code", customer.id)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_customer_cookie(response, g, customer.id)
    return response
