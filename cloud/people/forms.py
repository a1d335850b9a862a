"""The customer's forms cannot be sent from another site (issue 13 #5): registration, sign-in, buying and
topping up all carry a token, and a POST without the right one, or that a browser says came from elsewhere,
is refused with a page saying so before anything changes.

Two checks, each enough against a browser that does its part. The token is a signed double submit: the
phone keeps a random seed in an HttpOnly cookie, and each form carries the seed's HMAC under the cloud's
key; another site can read neither, so it cannot write the form field. And the browser's own word: an
Origin, a Referer or a ``Sec-Fetch-Site`` naming another site is refused, as the staff side does with
``Gate.same_origin``. The customer cookie is SameSite=Lax as well, but that alone did not help: a new
registration needs no cookie, and its answer set one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from urllib.parse import urlsplit

from fastapi import Form, Request
from fastapi.responses import HTMLResponse

from cloud.people.auth import Gate, gate
from cloud.web.pages import page as render
from cloud.web.pages import problem, translator

FORM_COOKIE = "vend_form"
FIELD = "csrf"
SEED_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
SEED_MAX_AGE = 3 * 365 * 86400  # as long as the customer cookie: a form left open for days still works


class ForeignForm(Exception):
    """A customer's form that did not come from this site's own page."""


def token_for(g: Gate, seed: str) -> str:
    mac = hmac.new(g.form_key, seed.encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(mac).decode()


def from_this_site(g: Gate, request: Request) -> bool:
    """What the browser says about where the form was sent from: this site, or nothing said."""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return False
    ours = {request.headers.get("host"), urlsplit(g.public_url).netloc} - {None, ""}
    origin = request.headers.get("origin")
    if origin is not None:  # "null" too: a sandboxed frame or a redirect from elsewhere
        return urlsplit(origin).netloc in ours
    referer = request.headers.get("referer")
    return not referer or urlsplit(referer).netloc in ours


def genuine(request: Request, token: str) -> bool:
    g = gate(request)
    seed = request.cookies.get(FORM_COOKIE) or ""
    return (from_this_site(g, request) and bool(SEED_RE.fullmatch(seed))
            and hmac.compare_digest(token.encode(), token_for(g, seed).encode()))


def guard(request: Request, csrf: str = Form("")) -> None:
    """A dependency for every customer POST: raises ForeignForm (answered by ``refused``) unless genuine."""
    if not genuine(request, csrf):
        raise ForeignForm()


def refused(request: Request, exc: ForeignForm) -> HTMLResponse:
    _ = translator(request)
    return problem(request, 403, _("This form came from another site"),
                   _("Nothing was changed. A form sent from another site, or from a page opened long ago, is "
                     "refused to keep your account safe. Open this site again and use its own page."),
                   (_("Start again"), "/"))


def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    """A customer page with a form: ``csrf`` for the template, and the seed cookie if the phone has none."""
    g = gate(request)
    seed = request.cookies.get(FORM_COOKIE) or ""
    fresh = not SEED_RE.fullmatch(seed)
    if fresh:
        seed = secrets.token_urlsafe(24)
    response = render(request, name, status_code, csrf=token_for(g, seed), **context)
    if fresh:
        response.set_cookie(FORM_COOKIE, seed, max_age=SEED_MAX_AGE, httponly=True, samesite="lax",
                            secure=g.secure)
    return response
