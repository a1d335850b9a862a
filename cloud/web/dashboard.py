"""The manager's dashboard: server-rendered pages under /staff, for staff signed in with a web session.

Each area is a module with its own router (``fleet``: the fleet and a machine; ``sales``: the charts;
``stock``: stock, pick lists and purchase orders; ``office``: settlements, reconciliation, people and the
account). They call the same service functions the API does and check roles with ``staff(...)``, which
sends a browser without a session to the sign-in page and shows a page (not JSON) for a wrong role.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from cloud import people
from cloud.web.pages import page, translator
from cloud.people import auth

# The navigation: (path, English label, roles that see it). A page's own check is what protects it.
NAV = [
    ("/staff", "Fleet", people.FLEET_READERS),
    ("/staff/sales", "Sales", people.SALES_READERS),
    ("/staff/stock", "Stock", people.STOCK_READERS),
    ("/staff/pick-lists", "Pick lists", people.PICKERS),
    ("/staff/purchase-orders", "Purchase orders", people.PO_READERS),
    ("/staff/settlements", "Settlements", people.FINANCE_READERS),
    ("/staff/reconcile", "Reconciliation", people.FINANCE_READERS),
    ("/staff/people", "People", people.PEOPLE_ADMINS),
    ("/staff/suppliers", "Suppliers", people.SUPPLIER_EDITORS),
]


@dataclass
class SignInNeeded(Exception):
    next: str


@dataclass
class NotAllowed(Exception):
    roles: tuple[str, ...]
    role: str


@dataclass
class PasswordChangeNeeded(Exception):
    pass


def staff(*roles: str):
    """A dependency for a dashboard page: the signed-in ``Caller`` with one of ``roles`` (none: any staff)."""
    allowed = roles or people.ROLES

    def dependency(request: Request) -> auth.Caller:
        caller = auth.identify(request)
        if caller is None:
            raise SignInNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if caller.must_change_password:
            raise PasswordChangeNeeded()
        if caller.role not in allowed:
            raise NotAllowed(tuple(allowed), caller.role)
        return caller

    return dependency


def nav_for(caller: auth.Caller | None) -> list[tuple[str, str]]:
    return [(path, label) for path, label, roles in NAV if caller is not None and caller.role in roles]


def dash(request: Request, caller: auth.Caller, name: str, status_code: int = 200, **context):
    """A dashboard page: the template gets ``me`` (the caller), ``nav`` and ``active`` (this page's path)."""
    return page(request, name, status_code, me=caller, nav=nav_for(caller), active=request.url.path, **context)


def install(app: FastAPI) -> None:
    from cloud.fleet import pages as fleet
    from cloud.finance import pages as office
    from cloud.sales import pages as sales
    from cloud.stock import pages as stock

    for module in (fleet, sales, stock, office):
        app.include_router(module.router)

    @app.exception_handler(SignInNeeded)
    def sign_in_first(request: Request, exc: SignInNeeded):
        return RedirectResponse("/staff/login?next=" + quote(exc.next, safe="/"), status_code=303)

    @app.exception_handler(PasswordChangeNeeded)
    def change_password_first(request: Request, exc: PasswordChangeNeeded):
        return RedirectResponse("/staff/account", status_code=303)

    @app.exception_handler(NotAllowed)
    def not_allowed(request: Request, exc: NotAllowed):
        _ = translator(request)
        caller = auth.identify(request)
        return dash(request, caller, "dash_problem.html", 403, title=_("Not for your role"),
                    message=_("This page is for: {roles}. You are signed in as {role}.",
                              roles=", ".join(_(r) for r in exc.roles), role=_(exc.role)))
