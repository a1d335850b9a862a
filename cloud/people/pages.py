"""Dashboard: staff accounts (add, change role, disable, reset), suppliers and the audit trail; and the
pages every dashboard page falls back to (sign in first, change the password first, not for your role)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Protocol
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud import people
from cloud.fleet import machines
from cloud.people import audit, auth, forms, signin
from cloud.people import staff as accounts
from cloud.people.admin import create_person, create_supplier, update_person
from cloud.core.db import reader, utcnow
from cloud.core.settings import Settings
from cloud.people.auth import Caller, Gate, gate
from cloud.people.auth import staff_only as allowed
from cloud.people.staff import PeopleError
from cloud.payments.provider import Provider
from cloud.payments.registry import REGISTRY
from cloud.web.dashboard import add_page, dash
from cloud.web.limits import guard
from cloud.web.pages import menu_machine, safe_next, translator

router = APIRouter(include_in_schema=False)


class Methods(Protocol):
    """The payment methods a customer may choose (``cloud.payments.Payments`` is one)."""

    methods: tuple[str, ...]

    def methods_for(self, user_agent: str, currency: str | None = None) -> tuple[str, ...]: ...

    def choose(self, method: str) -> Provider: ...


class Counts(Protocol):
    counts: Counter


class CustomerDesk(signin.SignInDesk, Protocol):
    """What registration asks of the running cloud (``cloud.service.Cloud`` is one)."""

    engine: sa.Engine
    settings: Settings
    provider: Methods
    stats: Counts


def the_cloud(request: Request) -> CustomerDesk:
    return request.app.state.cloud
add_page("/staff/people", "People", people.PEOPLE_ADMINS, order=80)
add_page("/staff/suppliers", "Suppliers", people.SUPPLIER_EDITORS, order=90)


def _(message: str) -> str:
    """Marks a message for the catalog (gettext's ``N_``): translated where it is shown, in the reader's language."""
    return message


FIELD_LABELS = {"name": _("Name"), "contact": _("Contact"), "email": _("Email"), "phone": _("Phone"),
                "address": _("Address")}
CHANGES = ("role", "disable", "enable", "reset")


def utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def back(path: str, **query) -> RedirectResponse:
    return RedirectResponse(path + "?" + urlencode({k: v for k, v in query.items() if v}), status_code=303)


# -- what every dashboard page falls back to ----------------------------------------------------------

def sign_in_first(request: Request, exc: auth.SignInNeeded):
    return RedirectResponse("/staff/login?next=" + quote(exc.next, safe="/"), status_code=303)


def change_password_first(request: Request, exc: auth.PasswordChangeNeeded):
    return RedirectResponse("/staff/account", status_code=303)


def not_allowed(request: Request, exc: auth.NotAllowed):
    _ = translator(request)
    caller = auth.identify(request)
    return dash(request, caller, "dash_problem.html", 403, title=_("Not for your role"),
                message=_("This page is for: {roles}. You are signed in as {role}.",
                          roles=", ".join(_(r) for r in exc.roles), role=_(exc.role)))


HANDLERS = {auth.SignInNeeded: sign_in_first, auth.PasswordChangeNeeded: change_password_first,
            auth.NotAllowed: not_allowed, forms.ForeignForm: forms.refused}


def people_error(_, e: PeopleError) -> dict[str, str]:
    """A people error as {field: text for people}, by what the service's message is about."""
    text = str(e)
    if text.startswith("username:"):
        return {"username":
                _("Username: 2 to 40 lower-case letters, digits, '.', '_' or '-', first a letter or digit.")}
    if text.startswith("username "):
        return {"username": _("Username: this name is taken.")}
    if text.startswith("role"):
        return {"role": _("Role: choose one of the roles.")}
    if "supplier_id" in text or text.startswith("no supplier"):
        return {"supplier_id": _("Supplier: a supplier account needs its supplier, other roles have none.")}
    if text.startswith("password"):
        return {"password": _("Password: {problem}", problem=text.split(" ", 1)[1].lstrip(": "))}
    if text.startswith("this is the last active administrator"):
        return {"": _("This is the last active administrator: make another one first.")}
    if text.startswith("supplier lead_time_days"):
        return {"lead_time_days": _("Lead time: a whole number of days from 0 to 365.")}
    if text.startswith("supplier email"):
        return {"email": _("Email: an address like orders@example.com.")}
    if text.startswith("supplier name") or text.startswith("a supplier named"):
        return {"name": _("Name: 1 to 80 printable characters, not the name of another supplier.")}
    if text.startswith("supplier "):
        field = text.split(" ", 2)[1].rstrip(":")
        return {field: _("{field}: too long or not printable.", field=_(FIELD_LABELS.get(field, field)))}
    return {"": text}


def _people(request: Request, caller: Caller, g: Gate, status_code: int = 200, errors: dict | None = None,
            form: dict | None = None, notice: str = "", one_time: dict | None = None):
    with g.engine.begin() as conn:
        staff_rows = [accounts.public(r) for r in accounts.list_staff(conn)]
        suppliers = [accounts.supplier_public(r) for r in accounts.list_suppliers(conn)]
        last = auth.last_sign_ins(conn)
    return dash(request, caller, "dash_people.html", status_code, staff=staff_rows, suppliers=suppliers,
                last=last, roles=people.ROLES, errors=errors or {}, form=form or {}, notice=notice,
                one_time=one_time, supplier_names={s["id"]: s["name"] for s in suppliers})


@router.get("/staff/people", response_class=HTMLResponse)
def people_page(request: Request, done: str = "", caller: Caller = Depends(allowed(*people.PEOPLE_ADMINS)),
                g: Gate = Depends(gate)):
    _ = translator(request)
    return _people(request, caller, g, notice=_("The change is saved.") if done else "")


@router.post("/staff/people", response_class=HTMLResponse)
def add_person(request: Request, username: str = Form(""), role: str = Form(""), password: str = Form(""),
               supplier_id: str = Form(""), caller: Caller = Depends(allowed(*people.PEOPLE_ADMINS)),
               g: Gate = Depends(gate)):
    """Add a staff member; without a password the page shows their one-time password, this once only."""
    _ = translator(request)
    form = {"username": username, "role": role, "supplier_id": supplier_id}
    try:
        person, one_time = create_person(g, caller, username, role, password or None,
                                         int(supplier_id) if supplier_id.isdigit() else None)
    except PeopleError as e:
        return _people(request, caller, g, e.status, people_error(_, e), form)
    return _people(request, caller, g, 201, notice=_("{username} is added.", username=person["username"]),
                   one_time={"username": person["username"], "password": one_time} if one_time else None)


def _person(conn, user_id: int):
    row = accounts.get(conn, user_id)
    return None if row is None else accounts.public(row)


@router.get("/staff/people/{user_id}", response_class=HTMLResponse)
def person_page(request: Request, user_id: int, caller: Caller = Depends(allowed(*people.PEOPLE_ADMINS)),
                g: Gate = Depends(gate)):
    _ = translator(request)
    with g.engine.begin() as conn:
        person = _person(conn, user_id)
        suppliers = [accounts.supplier_public(r) for r in accounts.list_suppliers(conn)]
    if person is None:
        return dash(request, caller, "dash_problem.html", 404, title=_("No such person"),
                    message=_("There is no staff member {id}.", id=user_id))
    return dash(request, caller, "dash_people_person.html", person=person, roles=people.ROLES,
                suppliers=suppliers, errors={})


@router.post("/staff/people/{user_id}", response_class=HTMLResponse)
def change_person(request: Request, user_id: int, change: str = Form(""), role: str = Form(""),
                  supplier_id: str = Form(""), confirmed: str = Form(""),
                  caller: Caller = Depends(allowed(*people.PEOPLE_ADMINS)), g: Gate = Depends(gate)):
    """A change asks first (a page that says what will happen) and is made when that page is sent."""
    _ = translator(request)
    with g.engine.begin() as conn:
        person = _person(conn, user_id)
        suppliers = [accounts.supplier_public(r) for r in accounts.list_suppliers(conn)]
    if person is None or change not in CHANGES:
        return dash(request, caller, "dash_problem.html", 404, title=_("No such person"),
                    message=_("There is no staff member {id}.", id=user_id))
    supplier = int(supplier_id) if supplier_id.isdigit() else None
    if confirmed != "yes":
        return dash(request, caller, "dash_people_confirm.html", person=person, change=change, role=role,
                    supplier_id=supplier_id, supplier_names={s["id"]: s["name"] for s in suppliers})
    changes = {"role": {"role": role, "supplier_id": supplier}, "disable": {"disabled": True},
               "enable": {"disabled": False}, "reset": {}}[change]
    try:
        person, _diff, one_time = update_person(g, caller, user_id, changes, reset_password=change == "reset")
    except PeopleError as e:
        return dash(request, caller, "dash_people_person.html", e.status, person=person, roles=people.ROLES,
                    suppliers=suppliers, errors=people_error(_, e))
    if one_time:
        return _people(request, caller, g, notice=_("The password of {username} is reset.",
                                                    username=person["username"]),
                       one_time={"username": person["username"], "password": one_time})
    return back("/staff/people", done="1")


def _suppliers(request: Request, caller: Caller, g: Gate, status_code: int = 200, errors: dict | None = None,
               form: dict | None = None, notice: str = ""):
    with g.engine.begin() as conn:
        suppliers = [accounts.supplier_public(r) for r in accounts.list_suppliers(conn)]
    return dash(request, caller, "dash_people_suppliers.html", status_code, suppliers=suppliers,
                errors=errors or {}, form=form or {}, notice=notice)


@router.get("/staff/suppliers", response_class=HTMLResponse)
def suppliers_page(request: Request, done: str = "", caller: Caller = Depends(allowed(*people.SUPPLIER_EDITORS)),
                   g: Gate = Depends(gate)):
    _ = translator(request)
    return _suppliers(request, caller, g, notice=_("The supplier is added.") if done else "")


@router.post("/staff/suppliers", response_class=HTMLResponse)
def add_supplier(request: Request, name: str = Form(""), contact: str = Form(""), email: str = Form(""),
                 phone: str = Form(""), address: str = Form(""), lead_time_days: str = Form(""),
                 caller: Caller = Depends(allowed(*people.SUPPLIER_EDITORS)), g: Gate = Depends(gate)):
    _ = translator(request)
    form = {"name": name, "contact": contact, "email": email, "phone": phone, "address": address,
            "lead_time_days": lead_time_days}
    try:
        lead = lead_time_days.strip()
        if lead and not lead.isdigit():
            raise PeopleError("supplier lead_time_days: a whole number of days from 0 to 365")
        create_supplier(g, caller, name, contact, email=email, phone=phone, address=address,
                        lead_time_days=int(lead) if lead else None)
    except PeopleError as e:
        return _suppliers(request, caller, g, e.status, people_error(_, e), form)
    return back("/staff/suppliers", done="1")


@router.get("/staff/audit", response_class=HTMLResponse)
def audit_page(request: Request, user: str = "", action: str = "",
               caller: Caller = Depends(allowed(*people.PEOPLE_ADMINS)), g: Gate = Depends(gate)):
    with g.engine.begin() as conn:
        rows = audit.query(conn, int(user) if user.isdigit() else None, action or None, limit=100)
        actions = audit.actions(conn)
        names = {r.id: r.username for r in accounts.list_staff(conn)}
    for r in rows:
        r["at"] = utc(datetime.fromisoformat(r["at"]))
        r["change"] = json.dumps(r["change"], ensure_ascii=False, sort_keys=True)
    return dash(request, caller, "dash_people_audit.html", rows=rows, actions=actions, names=names, user=user,
                action=action)


# -- a customer registers (their first scan) ---------------------------------------------------------

def payment_choices(request: Request, methods: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, label in the reader's language) of ``methods``, in the order that fits the phone (inside
    WeChat, WeChat Pay first; inside Alipay, Alipay; elsewhere as the operator registered them)."""
    _ = translator(request)
    ordered = REGISTRY.in_order_for(methods, request.headers.get("user-agent", ""))
    return [(name, _(REGISTRY[name].label) if REGISTRY[name].label else name) for name in ordered]


def return_to(request: Request, cloud: CustomerDesk, next: str) -> str:
    """The absolute URL a payment platform sends the customer back to (then on to ``next``)."""
    base = (cloud.settings.public_url or str(request.base_url)).rstrip("/")
    return base + safe_next(next)


def enrolled(request: Request, cloud: CustomerDesk, conn, customer_id: int, method: str, next: str) -> str:
    """Where the customer goes once they chose ``method``: the platform's page to set up its mandate, or
    ``next`` when there is nothing to set up."""
    url = cloud.provider.choose(method).enrol(conn, customer_id, return_to(request, cloud, next), utcnow())
    return url or safe_next(next)


def offered(request: Request, cloud: CustomerDesk, next: str) -> tuple[str, ...]:
    """The ways to pay to offer: those that take the currency of the machine the customer came from (``next``:
    its menu), in the order that fits the phone; all of them if none does."""
    machine = menu_machine(next)
    with reader(cloud.engine).connect() as conn:
        currency = machines.currency_of(conn, machine) if machine else None
    return cloud.provider.methods_for(request.headers.get("user-agent", ""), currency) or tuple(cloud.provider.methods)


@router.get("/register", response_class=HTMLResponse)
def register_form(request: Request, next: str = "/", cloud: CustomerDesk = Depends(the_cloud)):
    if auth.current_customer(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)  # registered already: to the account
    return forms.page(request, "register.html", next=safe_next(next), errors={}, values={},
                      choices=payment_choices(request, offered(request, cloud, next)))

def registration_message(_, e: people.RegistrationError, methods: list[str]) -> str:
    """The service's complaint in the reader's language, by the field it names."""
    if e.field == "name":
        return _("Please give a name of 1 to 80 characters, without control characters.")
    if e.field == "phone":
        return _("Please give a phone number of 6 to 15 digits, optionally starting with +.")
    if e.field == "email":
        return _("Please give an e-mail address like ann@example.com, or leave it empty.")
    return _("Choose a payment method: {methods}.", methods=", ".join(methods))

@router.post("/register", response_class=HTMLResponse, dependencies=[Depends(forms.guard)])
def register(request: Request, background: BackgroundTasks, name: str = Form(""), phone: str = Form(""),
             email: str = Form(""), payment_method: str = Form(""), next: str = Form("/"),
             cloud: CustomerDesk = Depends(the_cloud)):
    """Register a new phone. A phone that is a customer's already keeps its cookie and goes to its account;
    a number that is someone's already gets the sign-in page's answer ("if it is registered, we sent a
    code"), never the account."""
    _ = translator(request)
    # Per phone by its digits alone: "+86 138..." and "+86-138..." are one number.
    guard(request, "register", phone="".join(ch for ch in phone if ch.isdigit())[:20])
    if auth.current_customer(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    # None chosen: the first the phone was offered.
    payment_method = payment_method or payment_choices(request, offered(request, cloud, next))[0][0]
    try:
        with cloud.engine.begin() as conn:
            customer_id = people.register(conn, name, phone, payment_method, utcnow(), methods=cloud.provider.methods,
                                          email=email)
            goto = enrolled(request, cloud, conn, customer_id, payment_method, next)
    except people.AlreadyRegistered:
        return signin.offer_code(request, cloud, phone, next, background)
    except people.RegistrationError as e:
        cloud.stats.counts["bad_registrations"] += 1
        return forms.page(request, "register.html", 422, next=safe_next(next),
                          errors={e.field: registration_message(_, e, cloud.provider.methods)},
                          values={"name": name, "phone": phone, "email": email, "payment_method": payment_method},
                          choices=payment_choices(request, offered(request, cloud, next)))
    response = RedirectResponse(goto, status_code=303)
    signin.set_customer_cookie(response, gate(request), customer_id)
    return response
