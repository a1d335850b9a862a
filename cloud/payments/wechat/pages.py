"""WeChat Pay's customer pages: where WeChat's OAuth sends the phone back (the openid becomes the
customer's mandate), and the JSAPI payment page a purchase sends the phone to ("Confirm the payment"),
which asks WeChat (``WeixinJSBridge``) to show its payment sheet and, when the customer is back, asks
WeChat Pay itself whether they paid."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Protocol
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud.core.db import reader, utcnow
from cloud.payments import Payments, mandates
from cloud.payments.wechat import client as wx
from cloud.payments.wechat.provider import NAME, WeChat
from cloud.people import auth
from cloud.web.pages import page, problem, safe_next, translator

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


class WeChatDesk(Protocol):
    """What these pages ask of the running cloud (``cloud.service.Cloud`` is one)."""

    engine: sa.Engine
    provider: Payments


def the_cloud(request: Request) -> WeChatDesk:
    return request.app.state.cloud


def wechat_of(cloud: WeChatDesk) -> WeChat | None:
    provider = cloud.provider.configured(NAME)
    return provider if isinstance(provider, WeChat) and provider.client is not None else None


def not_here(request: Request):
    _ = translator(request)
    return problem(request, 404, _("WeChat Pay"), _("This cloud does not take WeChat Pay."))


@router.get("/pay/wechat/enrol", response_class=HTMLResponse)
def enrol(request: Request, cloud: WeChatDesk = Depends(the_cloud)):
    """Registration chose WeChat Pay: on to WeChat's OAuth page (a page of ours that moves on by itself: a
    form's redirect to another site is refused by the content policy)."""
    provider, customer = wechat_of(cloud), auth.current_customer(request)
    if provider is None:
        return not_here(request)
    if customer is None:
        return RedirectResponse("/register", status_code=303)
    with reader(cloud.engine).connect() as conn:
        mandate = mandates.get(conn, customer.id, NAME)
    if mandate is None or mandate.status != "pending":
        return RedirectResponse("/", status_code=303)
    return page(request, "wechat_enrol.html", url=provider.oauth_url(mandate))


@router.get("/pay/wechat/oauth", response_class=HTMLResponse)
async def oauth_return(request: Request, code: str = "", state: str = "", cloud: WeChatDesk = Depends(the_cloud)):
    """WeChat's OAuth came back: the code gives the customer's openid, their mandate from now on."""
    _ = translator(request)
    provider, customer = wechat_of(cloud), auth.current_customer(request)
    if provider is None:
        return not_here(request)
    if customer is None:
        return RedirectResponse("/register", status_code=303)
    with reader(cloud.engine).connect() as conn:
        mandate = mandates.get(conn, customer.id, NAME)
    again = (_("Choose how to pay"), "/account/payment")
    if mandate is not None and mandate.status == "active":
        return RedirectResponse("/", status_code=303)
    expected = str((mandate.detail if mandate else {}).get("state", ""))
    if not code or not expected or not hmac.compare_digest(expected.encode(), state.encode()):
        log.warning("wechat: OAuth return for customer %s with a state that is not the one sent", customer.id)
        return problem(request, 400, _("WeChat Pay"), _("This link is not the one WeChat was given. Please try "
                                                        "again."), again)
    try:
        openid = await run_in_threadpool(provider.client.openid, code)
    except (wx.Refused, wx.Unreachable) as e:
        log.warning("wechat: OAuth code for customer %s not exchanged: %s", customer.id, e)
        return problem(request, 502, _("WeChat Pay"), _("WeChat did not confirm who you are. Please try again."),
                       again)
    with cloud.engine.begin() as conn:
        mandates.activate(conn, customer.id, NAME, openid, utcnow(), {"next": mandate.detail.get("next", "")})
    log.info("wechat: customer %s pays by WeChat Pay from now on", customer.id)
    back = urlsplit(str(mandate.detail.get("next", "")))
    return RedirectResponse(safe_next(back.path + (f"?{back.query}" if back.query else "")), status_code=303)


@router.get("/pay/wechat/{order_id}", response_class=HTMLResponse)
def pay_page(request: Request, order_id: str, cloud: WeChatDesk = Depends(the_cloud)):
    """The customer confirms their JSAPI payment: the amount, that it is taken now and refunded in full if
    nothing drops, and the button that opens WeChat's payment sheet."""
    provider, customer = wechat_of(cloud), auth.current_customer(request)
    if provider is None:
        return not_here(request)
    if customer is None:
        return RedirectResponse("/register", status_code=303)
    with reader(cloud.engine).connect() as conn:
        shown = provider.payment_page(conn, order_id, customer.id)
    if shown is None:
        _ = translator(request)
        return problem(request, 404, _("WeChat Pay"), _("No such order."))
    if shown["status"] not in ("queued", "pending"):
        return RedirectResponse(f"/orders/{order_id}", status_code=303)
    return page(request, "wechat_pay.html", shown=shown, params=json.dumps(shown["params"] or {}))


@router.get("/pay/wechat/{order_id}/done")
async def paid(request: Request, order_id: str, result: str = "", cloud: WeChatDesk = Depends(the_cloud)):
    """Back from WeChat's payment sheet: what the page says is no proof, so WeChat Pay is asked, and the
    order page follows."""
    provider, customer = wechat_of(cloud), auth.current_customer(request)
    if provider is None:
        return not_here(request)
    if customer is not None and result == "ok":
        with reader(cloud.engine).connect() as conn:
            mine = provider.owns(conn, order_id, customer.id)
        if mine:
            await run_in_threadpool(provider.check_paid, cloud.engine, order_id, utcnow())
    return RedirectResponse(f"/orders/{order_id}", status_code=303)
