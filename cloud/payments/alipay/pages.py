"""The customer's return from Alipay's agreement page: the signed parameters checked with Alipay's public key,
the agreement made the customer's mandate, and the customer sent on (or told it was not signed).

The agreement's notification (``dut_user_sign``, through the webhook route) does the same; whichever comes
first activates the mandate, the other changes nothing."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from cloud.core.db import reader, utcnow
from cloud.payments.alipay.client import NotificationRefused
from cloud.payments.alipay.provider import NAME, RETURN_PATH, SIGN_PATH
from cloud.people import auth
from cloud.web.pages import problem, safe_next, translator

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


@router.get(SIGN_PATH)
def agreement_sign(request: Request, next: str = "/"):
    """On the way to Alipay's agreement page: a page of ours that sends the phone there (a ``Refresh`` header,
    and a link for a browser that ignores it), since the registration form may not redirect to another site."""
    _ = translator(request)
    cloud = request.app.state.cloud
    provider = cloud.provider.configured(NAME)
    customer = auth.current_customer(request)
    if provider is None or customer is None:
        return RedirectResponse("/register?" + urlencode({"next": safe_next(next)}), status_code=303)
    with reader(cloud.engine).connect() as conn:
        url = provider.agreement_page(conn, customer.id, cloud.settings.public_url or str(request.base_url),
                                      safe_next(next))
    if url is None:  # signed already, or nothing to sign: on to where they were going
        return RedirectResponse(safe_next(next), status_code=303)
    response = problem(request, 200, _("Alipay"), _("Sign the Alipay agreement so that each purchase is paid "
                                                    "when your product drops."), (_("Continue to Alipay"), url))
    response.headers["Refresh"] = f"0; url={url}"
    return response


@router.get(RETURN_PATH)
def agreement_return(request: Request, next: str = "/"):
    _ = translator(request)
    cloud = request.app.state.cloud
    provider = cloud.provider.configured(NAME)
    if provider is None or provider.client is None:
        return problem(request, 404, _("Alipay"), _("This shop does not take Alipay."))
    params = {k: v for k, v in request.query_params.items() if k != "next"}
    again = ("/account/payment?" + urlencode({"why": "again", "next": safe_next(next)}))
    if "sign" not in params:  # the customer declined or closed Alipay's page: nothing was signed
        return problem(request, 200, _("Alipay"), _("The Alipay agreement was not signed, so you cannot pay by "
                                                    "Alipay yet."), (_("Choose how to pay"), again))
    try:
        fields = provider.client.verified(params)
    except NotificationRefused as e:
        log.warning("alipay: an agreement return refused (%s): %s", e.why, e)
        return problem(request, 400, _("Alipay"), _("Alipay's answer could not be checked; nothing was changed."),
                       (_("Choose how to pay"), again))
    with cloud.engine.begin() as conn:
        customer = provider.signed(conn, fields, utcnow())
    if customer is None:
        log.warning("alipay: an agreement return names no signing we are waiting for: %s",
                    fields.get("external_agreement_no", ""))
        return problem(request, 409, _("Alipay"), _("This Alipay agreement is not one we were waiting for."),
                       (_("Choose how to pay"), again))
    log.info("alipay: customer %s signed agreement %s (return page)", customer, fields.get("agreement_no"))
    return RedirectResponse(safe_next(next), status_code=303)
