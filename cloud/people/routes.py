"""The people API under /api/v1 (login, the caller's own account and tokens, staff, suppliers, the audit
trail) and the minimal staff sign-in pages. Who may call what is the table in ``cloud/people/__init__.py``."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, StrictBool

from cloud.web.dashboard import nav_for
from cloud.web.limits import guard
from cloud.web.pages import page, safe_next, translator
from cloud.people import audit, auth, staff
from cloud.people.admin import create_person, create_supplier, update_person
from cloud.people.auth import Caller, Gate, gate, require
from cloud.people.staff import ADMINISTRATOR, MANAGER, SUPPLIER, PeopleError

router = APIRouter(prefix="/api/v1", tags=["people"])
pages = APIRouter(include_in_schema=False)

LOGIN_FAILED = "wrong username or password"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(Body):
    username: str
    password: str


class PasswordBody(Body):
    current: str | None = None
    new: str


class NewStaff(Body):
    username: str
    role: str
    password: str | None = None  # none: a one-time password is made, returned once, to be changed at login
    supplier_id: int | None = None


class StaffChange(Body):
    role: str | None = None
    supplier_id: int | None = None
    disabled: StrictBool | None = None
    reset_password: StrictBool = False


class NewSupplier(Body):
    name: str
    contact: str = ""
    email: str = ""
    phone: str = ""
    address: str = ""
    lead_time_days: int | None = None


class SupplierChange(Body):
    name: str | None = None
    contact: str | None = None
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    lead_time_days: int | None = None


class NewToken(Body):
    name: str


def refused(e: PeopleError) -> HTTPException:
    return HTTPException(e.status, str(e))


def set_session_cookie(response, g: Gate, secret: str) -> None:
    response.set_cookie(auth.SESSION_COOKIE, g.signer.sign(secret), max_age=int(auth.SESSION_TTL.total_seconds()),
                        httponly=True, samesite="lax", secure=g.secure, path="/")


def me_of(g: Gate, caller: Caller) -> dict:
    with g.engine.begin() as conn:
        row = staff.get(conn, caller.user_id)
    return {**staff.public(row), "via": caller.via}


# -- the caller's own account ------------------------------------------------------------------------

@router.post("/login")
def login(request: Request, body: LoginBody, g: Gate = Depends(gate)):
    """Sign in with a username and password; the answer sets the session cookie for the web."""
    guard(request, "login", username=body.username.strip().lower()[:80])
    result = auth.login(g, body.username, body.password)
    if result.locked_for is not None:
        wait = max(1, int(result.locked_for.total_seconds()) + 1)
        raise HTTPException(429, f"too many failed logins for this username: try again in {wait} s",
                            headers={"Retry-After": str(wait)})
    if result.user is None:
        raise HTTPException(401, LOGIN_FAILED)
    response = JSONResponse({**staff.public(result.user), "via": "session"})
    set_session_cookie(response, g, result.session_secret)
    return response


@router.post("/logout")
def logout(caller: Caller = Depends(require(password_change_ok=True)), g: Gate = Depends(gate)):
    """End the web session this request came with."""
    if caller.via != "session":
        raise HTTPException(400, "a token is not a session: revoke it with DELETE /api/v1/tokens/{id}")
    now = g.now()
    with g.engine.begin() as conn:
        auth.revoke_session(conn, caller.credential_id, now)
        audit.record(conn, caller, "session.logout", "staff", caller.user_id, {"session": caller.credential_id}, now)
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


@router.get("/me")
def me(caller: Caller = Depends(require(password_change_ok=True)), g: Gate = Depends(gate)):
    """Who the caller is: account, role, and whether they came with a session or a token."""
    return me_of(g, caller)


def change_password(g: Gate, caller: Caller, current, new) -> None:
    with g.engine.begin() as conn:
        row = staff.get(conn, caller.user_id)
    if row.password_hash is not None and not staff.verify(row.password_hash, current or ""):
        raise HTTPException(403, "the current password is wrong")
    try:
        new_hash = staff.hash_password(staff.check_password(new, row.username))
    except PeopleError as e:
        raise refused(e) from None
    now = g.now()
    with g.engine.begin() as conn:
        staff.update_staff(conn, caller.user_id, {"password_hash": new_hash, "must_change_password": False})
        auth.revoke_all(conn, caller.user_id, now, tokens=False,
                        keep_session=caller.credential_id if caller.via == "session" else None)
        audit.record(conn, caller, "people.password", "staff", caller.user_id, {"password": "changed"}, now)


@router.post("/me/password")
def set_own_password(body: PasswordBody, caller: Caller = Depends(require(password_change_ok=True)),
                     g: Gate = Depends(gate)):
    """Change the caller's password (``current`` is needed when they have one); their other sessions end."""
    change_password(g, caller, body.current, body.new)
    return me_of(g, caller)


# -- tokens ------------------------------------------------------------------------------------------

@router.get("/tokens")
def tokens(caller: Caller = Depends(require()), g: Gate = Depends(gate)):
    """The caller's active API tokens (never the tokens themselves)."""
    with g.engine.begin() as conn:
        return auth.list_tokens(conn, caller.user_id)


@router.post("/tokens", status_code=201)
def create_token(body: NewToken, caller: Caller = Depends(require()), g: Gate = Depends(gate)):
    """A new API token acting as the caller, with the caller's role; shown in this answer only."""
    now = g.now()
    try:
        with g.engine.begin() as conn:
            token_id, secret = auth.new_token(conn, caller.user_id, body.name, now)
            audit.record(conn, caller, "token.create", "token", token_id, {"name": body.name.strip()}, now)
    except PeopleError as e:
        raise refused(e) from None
    return {"id": token_id, "name": body.name.strip(), "token": secret, "prefix": secret[:len(auth.TOKEN_PREFIX) + 4]}


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: int, caller: Caller = Depends(require()), g: Gate = Depends(gate)):
    """Revoke one of the caller's tokens."""
    now = g.now()
    try:
        with g.engine.begin() as conn:
            auth.revoke_token(conn, caller.user_id, token_id, now)
            audit.record(conn, caller, "token.revoke", "token", token_id, {}, now)
    except PeopleError as e:
        raise refused(e) from None
    return {"id": token_id, "revoked": True}


# -- staff and suppliers -----------------------------------------------------------------------------

@router.get("/people")
def people(caller: Caller = Depends(require(ADMINISTRATOR)), g: Gate = Depends(gate)):
    """Every staff account."""
    with g.engine.begin() as conn:
        return [staff.public(r) for r in staff.list_staff(conn)]


@router.post("/people", status_code=201)
def add_person(body: NewStaff, caller: Caller = Depends(require(ADMINISTRATOR)), g: Gate = Depends(gate)):
    """A new staff account. Without a password, a one-time password is returned (once) and must be
    changed at the first sign-in."""
    try:
        person, one_time = create_person(g, caller, body.username, body.role, body.password, body.supplier_id)
    except PeopleError as e:
        raise refused(e) from None
    return {**person, **({"one_time_password": one_time} if one_time else {})}


@router.patch("/people/{user_id}")
def change_person(user_id: int, body: StaffChange, caller: Caller = Depends(require(ADMINISTRATOR)),
                  g: Gate = Depends(gate)):
    """Change a staff member's role or supplier, disable or enable them (a disabled account's sessions
    and tokens stop at once, and its tokens are revoked), or give them a new one-time password."""
    changes = {k: getattr(body, k) for k in body.model_fields_set if k != "reset_password"}
    if not changes and not body.reset_password:
        raise HTTPException(422, "nothing to change: give role, supplier_id, disabled or reset_password")
    if changes.get("disabled", False) is None:
        raise HTTPException(422, "disabled: true or false")
    try:
        person, diff, one_time = update_person(g, caller, user_id, changes, body.reset_password)
    except PeopleError as e:
        raise refused(e) from None
    return {**person, "changed": sorted(diff), **({"one_time_password": one_time} if one_time else {})}


@router.get("/suppliers")
def suppliers(caller: Caller = Depends(require(ADMINISTRATOR, MANAGER)), g: Gate = Depends(gate)):
    """Every supplier."""
    with g.engine.begin() as conn:
        return [staff.supplier_public(r) for r in staff.list_suppliers(conn)]


@router.post("/suppliers", status_code=201)
def add_supplier(body: NewSupplier, caller: Caller = Depends(require(ADMINISTRATOR, MANAGER)),
                 g: Gate = Depends(gate)):
    """A new supplier, which supplier accounts can then be linked to."""
    try:
        return create_supplier(g, caller, body.name, body.contact, email=body.email, phone=body.phone,
                               address=body.address, lead_time_days=body.lead_time_days)
    except PeopleError as e:
        raise refused(e) from None


@router.get("/suppliers/{supplier_id}")
def supplier(supplier_id: int, caller: Caller = Depends(require(ADMINISTRATOR, MANAGER, SUPPLIER)),
             g: Gate = Depends(gate)):
    """One supplier; a supplier's account sees only its own."""
    with g.engine.begin() as conn:
        row = staff.get_supplier(conn, supplier_id)
    if row is None or (caller.role == SUPPLIER and caller.supplier_id != supplier_id):
        raise HTTPException(404, f"no supplier {supplier_id}")
    return staff.supplier_public(row)


@router.patch("/suppliers/{supplier_id}")
def change_supplier(supplier_id: int, body: SupplierChange, caller: Caller = Depends(require(ADMINISTRATOR, MANAGER)),
                    g: Gate = Depends(gate)):
    """Change a supplier's name, contact, email, phone, address or lead time (days)."""
    changes = {k: getattr(body, k) for k in body.model_fields_set}
    if not changes:
        raise HTTPException(422, "nothing to change: give name, contact, email, phone, address or lead_time_days")
    now = g.now()
    try:
        with g.engine.begin() as conn:
            diff = staff.update_supplier(conn, supplier_id, changes)
            if diff:
                audit.record(conn, caller, "supplier.change", "supplier", supplier_id, diff, now)
            row = staff.get_supplier(conn, supplier_id)
    except PeopleError as e:
        raise refused(e) from None
    return {**staff.supplier_public(row), "changed": sorted(diff)}


# -- the audit trail ---------------------------------------------------------------------------------

def as_utc(t: datetime | None) -> datetime | None:
    return None if t is None else t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


@router.get("/audit")
def audit_trail(user: int | None = None, action: str | None = None, kind: str | None = None,
                object_id: str | None = Query(None, alias="object"), since: datetime | None = None, until: datetime | None = None,
                before: int | None = Query(None, description="only rows with a smaller id: the next page"),
                limit: int = Query(100, ge=1, le=audit.LIMIT_MAX),
                caller: Caller = Depends(require(ADMINISTRATOR)), g: Gate = Depends(gate)):
    """Who changed what and when, newest first; ``since`` is inclusive, ``until`` exclusive (UTC when no
    zone is given)."""
    since, until = as_utc(since), as_utc(until)
    if since is not None and until is not None and since >= until:
        raise HTTPException(422, "since must be before until")
    with g.engine.begin() as conn:
        return audit.query(conn, user, action, kind, object_id, since, until, before, limit)


# -- sign-in pages -----------------------------------------------------------------------------------

def _sign_in_page(request: Request, status_code: int = 200, error: str = "", username: str = "", next: str = "/staff"):
    return page(request, "staff_login.html", status_code, error=error, username=username, next=safe_next(next))


@pages.get("/staff/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/staff"):
    return _sign_in_page(request, next=next)


@pages.post("/staff/login", response_class=HTMLResponse)
def login_submit(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/staff"),
                 g: Gate = Depends(gate)):
    _ = translator(request)
    guard(request, "login", username=username.strip().lower()[:80])
    result = auth.login(g, username, password)
    if result.user is None:
        locked = result.locked_for is not None
        error = _("Too many failed sign-ins: wait a while and try again.") if locked else \
            _("Wrong username or password.")
        return _sign_in_page(request, 429 if locked else 401, error, username, next)
    response = RedirectResponse(safe_next(next) if next.startswith("/staff") else "/staff", status_code=303)
    set_session_cookie(response, g, result.session_secret)
    return response


def _account_page(request: Request, g: Gate, caller: Caller, status_code: int = 200, error: str = ""):
    return page(request, "staff_account.html", status_code, me=caller, account=me_of(g, caller),
                nav=nav_for(caller) if not caller.must_change_password else [], active=request.url.path,
                error=error)


@pages.get("/staff/account", response_class=HTMLResponse)
def staff_account(request: Request, g: Gate = Depends(gate)):
    caller = auth.identify(request)
    if caller is None:
        return RedirectResponse("/staff/login?next=/staff/account", status_code=303)
    return _account_page(request, g, caller)


@pages.post("/staff/password", response_class=HTMLResponse)
def staff_password(request: Request, current: str = Form(""), new: str = Form(""), g: Gate = Depends(gate)):
    caller = auth.identify(request)
    if caller is None:
        return RedirectResponse("/staff/login?next=/staff/account", status_code=303)
    try:
        change_password(g, caller, current, new)
    except HTTPException as e:
        return _account_page(request, g, caller, e.status_code, e.detail)
    return RedirectResponse("/staff", status_code=303)


@pages.post("/staff/logout")
def staff_logout(request: Request, g: Gate = Depends(gate)):
    caller = auth.identify(request)
    if caller is not None and caller.via == "session":
        now = g.now()
        with g.engine.begin() as conn:
            auth.revoke_session(conn, caller.credential_id, now)
            audit.record(conn, caller, "session.logout", "staff", caller.user_id, {"session": caller.credential_id},
                         now)
    response = RedirectResponse("/staff/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response
