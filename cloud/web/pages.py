"""The one Jinja environment every page renders through: the language, ``_``, and money, numbers and
times in the reader's locale; and the link that switches language (a plain link, so it works without
script)."""

from __future__ import annotations

import glob
import os
import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from cloud.web import i18n

HERE = os.path.dirname(__file__)
CLOUD = os.path.dirname(HERE)
# Every domain keeps its pages' templates in its own ``templates/`` folder; the base pages are this
# package's. Template names are unique across the cloud (a test checks it).
TEMPLATE_DIRS = [os.path.join(HERE, "templates")] + sorted(
    d for d in glob.glob(os.path.join(CLOUD, "*", "templates")) if os.path.dirname(d) != HERE)
templates = Jinja2Templates(directory=TEMPLATE_DIRS, context_processors=[i18n.context])
templates.env.filters["money"] = i18n.money_filter
templates.env.filters["number"] = i18n.number_filter
templates.env.filters["when"] = i18n.when_filter
templates.env.filters["day"] = i18n.day_filter
router = APIRouter(include_in_schema=False)
# The customer's pages carry their 2.5 KB of style inline: on a slow phone connection a stylesheet is one
# more round trip (400 ms on 3G) before the first page shows, which costs far more than the bytes.
with open(os.path.join(HERE, "static", "style.css"), encoding="utf-8") as _f:
    templates.env.globals["customer_css"] = Markup(_f.read())


def compile_all() -> int:
    """Compile every template now rather than on its page's first view (20–130 ms each); how many."""
    names = templates.env.list_templates(extensions=["html"])
    for name in names:
        templates.env.get_template(name)
    return len(names)


def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def problem(request: Request, status_code: int, title: str, message: str, action: tuple | None = None):
    """A page that says what went wrong and what to do next (``action``: a link's label and target)."""
    return page(request, "problem.html", status_code, title=title, message=message, action=action)


def valid_form_key(key: str) -> bool:
    """The idempotency key a form carries: what makes a double tap one order or one top-up."""
    return bool(re.fullmatch(r"[A-Za-z0-9_-]{8,64}", key or ""))


def menu_machine(target: str) -> str | None:
    """The machine whose menu ``target`` (a ``next`` page) is, or None."""
    found = re.fullmatch(r"/m/([A-Za-z0-9_.-]{1,64})", safe_next(target or "/").split("?", 1)[0])
    return found.group(1) if found else None


def safe_next(target: str) -> str:
    """Only a path on this site: never an open redirect."""
    if isinstance(target, str) and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/lang/{code}")
def switch_language(code: str, next: str = "/"):
    """Remember the reader's choice of language for a year and go back to the page they were on."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if code in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, code, max_age=365 * 86400, samesite="lax")
    return response


def translator(request: Request) -> i18n.Translator:
    """``_`` for text a route makes itself (a page title, an error) in the reader's language."""
    return i18n.Translator(i18n.language_of(request))


def printable(request: Request, name: str, **context) -> HTMLResponse:
    """A page to print (A4): like ``page``, but ``?lang=zh-CN`` or ``?lang=en`` may also choose its
    language, since a link printed by vendctl or sent in a mail reaches a browser without the cookie."""
    lang = request.query_params.get("lang")
    if lang not in i18n.LANGUAGES:
        return page(request, name, **context)
    chosen = {**i18n.context(request), "lang": lang, "_": i18n.Translator(lang)}
    return HTMLResponse(templates.get_template(name).render({"request": request, **context, **chosen}))


# Every page is served by the cloud itself, so the pages may load nothing from anywhere else; no page may
# be framed (a buy button under someone else's page), and no upload is read as another type than it is.
# Style may be inline (the customer pages carry theirs); script may not.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")


def csp_with_images(origin: str) -> str:
    """The content policy of a page that also shows pictures from ``origin`` (scheme://host[:port]: the
    fleet map's tile server); the policy itself when ``origin`` is empty."""
    if not origin:
        return CSP
    if any(c in origin for c in " ;'\"\n\r"):
        raise ValueError(f"not an origin: {origin!r}")
    return CSP.replace("img-src 'self' data:;", f"img-src 'self' data: {origin};", 1)


HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
           (b"x-frame-options", b"DENY")]


HSTS = (b"strict-transport-security", b"max-age=31536000")


def secure_cookie(header: bytes) -> bytes:
    """A Set-Cookie value with the Secure attribute: the browser then sends it only over https."""
    attributes = [a.strip().lower() for a in header.split(b";")[1:]]
    return header if b"secure" in attributes else header + b"; Secure"


class SecurityHeaders:
    """ASGI middleware (not Starlette's BaseHTTPMiddleware, which would hold back the order page's event
    stream): the headers above on every response, and the content policy on every HTML page except
    ``exempt`` (FastAPI's API docs page, which loads its viewer from a CDN).

    With ``https`` (the public URL is https: ``Gate.secure``) every cookie any route sets is made Secure
    here, in one place, so no cookie added later can forget it (the customer cookie is a three-year key to
    the wallet), and every response asks the browser to use https for a year (HSTS). Not under http: the
    demo on a laptop would then lose its cookies, and HSTS over http means nothing."""

    def __init__(self, app, exempt: tuple[str, ...] = (), https: bool = False):
        self.app = app
        self.exempt = exempt
        self.https = https

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in HEADERS if k not in present]
                html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                if html and scope["path"] not in self.exempt and b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", CSP.encode()))
                if self.https:
                    headers = [(k, secure_cookie(v) if k.lower() == b"set-cookie" else v) for k, v in headers]
                    if HSTS[0] not in present:
                        headers.append(HSTS)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
