"""Dashboard: the office's pages: settlement with site owners, reconciliation, the journal's balances, staff and suppliers, and the
audit trail. Every change goes through the function its API route calls, so it writes the same audit row."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from babel.numbers import get_currency_precision
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud.core.db import reader
from cloud.fleet import locations
from cloud import people
from cloud.finance import ledger, reconcile, settlement
from cloud.finance.common import FinanceError, currency_of, month_span, span
from cloud.finance.posting import record_posting, record_rule
from cloud.web.pages import translator
from cloud.people.auth import Caller, Gate, gate
from cloud.web.dashboard import add_page, dash
from cloud.people.auth import staff_only as allowed

router = APIRouter(include_in_schema=False)
add_page("/staff/settlements", "Settlements", people.FINANCE_READERS, order=60)
add_page("/staff/reconcile", "Reconciliation", people.FINANCE_READERS, order=70)
add_page("/staff/journal", "Journal", people.FINANCE_READERS, order=75)

def _(message: str) -> str:
    """Marks a message for the catalog (gettext's ``N_``): translated where it is shown, in the reader's language."""
    return message


KIND_LABELS = {settlement.PERCENT_GROSS: _("Percent of gross"), settlement.PERCENT_PROFIT: _("Percent of profit"),
               settlement.FLAT_MONTHLY: _("Flat monthly fee"), settlement.PER_ITEM: _("Per item sold")}
MISMATCH_LABELS = {
    "captured_not_sold": _("Money taken, no sale in any ledger"),
    "sold_not_captured": _("Sold, no money taken"),
    "amounts_differ": _("Sale and payment amounts differ"),
    "captured_twice": _("Money taken twice"),
    "sold_twice": _("Sold twice"),
    "refunded_more_than_captured": _("Refunded more than was taken"),
    "provider_not_in_journal": _("Taken at the provider, not in the journal"),
    "journal_not_at_provider": _("In the journal, never confirmed by the provider"),
    "dropped_not_charged": _("Dropped after the order was closed, not charged"),
    "sold_no_such_order": _("Sold, no such order for this machine"),
    "statement_not_in_journal": _("In the platform's statement, not in the journal"),
    "journal_not_in_statement": _("In the journal, not in the platform's statement"),
    "statement_amount_differs": _("The platform's statement and the journal differ"),
}
assert set(MISMATCH_LABELS) == set(reconcile.KINDS) and set(KIND_LABELS) == set(settlement.KINDS)
FIELD_LABELS = {"kind": _("Kind"), "percent": _("Percent"), "amount": _("Amount"), "currency": _("Currency"),
                "valid_from": _("Valid from"), "valid_to": _("Valid to"), "location_id": _("Location"),
                "month": _("Month"), "from": _("From"), "to": _("To"), "name": _("Name"), "contact": _("Contact"),
                "email": _("Email"), "phone": _("Phone"), "address": _("Address")}
DONE = {"rule": _("The rule is added."), "posted": _("The statement is posted."),
        "already": _("This statement was posted before: nothing changed.")}


def this_month(g: Gate) -> str:
    return g.now().astimezone(timezone.utc).strftime("%Y-%m")


def finance_error(_, e: FinanceError) -> dict[str, str]:
    """A finance error as {field: text for people}: the field's label and the problem. The services write
    problems in English; the common ones have their translation in the catalog, the rest stay English."""
    problem = str(e).split(": ", 1)[1] if ": " in str(e) else str(e)
    return {e.field: _("{field}: {problem}", field=_(FIELD_LABELS.get(e.field, e.field)), problem=_(problem))}


def minor_units(text: str, currency: str) -> int:
    """An amount typed in the currency's major unit ('12.50') as minor units (1250)."""
    try:
        d = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        raise FinanceError("amount", "must be an amount like 12.50") from None
    if not d.is_finite() or d < 0:
        raise FinanceError("amount", "must be an amount like 12.50")
    minor = d.scaleb(get_currency_precision(currency))
    if minor != minor.to_integral_value():
        raise FinanceError("amount", "has more decimals than the currency has")
    return int(minor)


def utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def back(path: str, **query) -> RedirectResponse:
    return RedirectResponse(path + "?" + urlencode({k: v for k, v in query.items() if v}), status_code=303)


# -- settlements -------------------------------------------------------------------------------------

def _settlements(request: Request, caller: Caller, g: Gate, month: str, currency: str, status_code: int = 200,
                 errors: dict | None = None, form: dict | None = None, done: str = ""):
    _ = translator(request)
    errors = dict(errors or {})
    try:
        start, end = month_span(month)
    except FinanceError as e:
        errors.update(finance_error(_, e))
        month, status_code = this_month(g), 422
        start, end = month_span(month)
    try:
        currency = currency_of(currency.strip().upper())
    except FinanceError as e:
        errors.update(finance_error(_, e))
        currency, status_code = "CNY", 422
    rows = []
    with g.engine.begin() as conn:
        for loc in locations.list_locations(conn):
            rows.append({"location": loc, "rules": settlement.rules(conn, loc["id"]),
                         "s": settlement.statement(conn, loc["id"], start, end, currency, g.now())})
    # A month still running cannot be posted (settlement.post_statement): say from when it can be instead.
    ended = end < g.now().astimezone(timezone.utc).date()
    return dash(request, caller, "dash_settle.html", status_code, rows=rows, month=month, currency=currency,
                errors=errors, form=form or {}, notice=_(DONE[done]) if done in DONE else "", kinds=KIND_LABELS,
                can_edit=caller.role in people.FINANCE_EDITORS, post_key=secrets.token_hex(8), ended=ended,
                postable_from=(end + timedelta(days=1)).isoformat())


@router.get("/staff/settlements", response_class=HTMLResponse)
def settlements_page(request: Request, month: str = "", currency: str = "CNY", done: str = "",
                     caller: Caller = Depends(allowed(*people.FINANCE_READERS)), g: Gate = Depends(gate)):
    return _settlements(request, caller, g, month or this_month(g), currency, done=done)


@router.post("/staff/settlements/rules", response_class=HTMLResponse)
def add_rule(request: Request, location_id: str = Form(""), kind: str = Form(""), percent: str = Form(""),
             amount: str = Form(""), currency: str = Form("CNY"), valid_from: str = Form(""),
             valid_to: str = Form(""), month: str = Form(""),
             caller: Caller = Depends(allowed(*people.FINANCE_EDITORS)), g: Gate = Depends(gate)):
    _ = translator(request)
    form = {"location_id": location_id, "kind": kind, "percent": percent, "amount": amount, "currency": currency,
            "valid_from": valid_from, "valid_to": valid_to}
    try:
        if not location_id.isdigit():
            raise FinanceError("location_id", "choose a location")
        body = {"kind": kind, "currency": currency.strip().upper(), "valid_from": valid_from.strip() or None,
                "valid_to": valid_to.strip() or None}
        if kind in settlement.PERCENT_KINDS:
            body["percent"] = percent.strip()
        elif kind in settlement.KINDS:
            body["amount"] = minor_units(amount, currency_of(body["currency"]))
        if body["valid_from"] is None:
            raise FinanceError("valid_from", "is needed: a date like 2026-11-30")
        record_rule(g, caller, int(location_id), body)
    except FinanceError as e:
        return _settlements(request, caller, g, month or this_month(g), currency or "CNY",
                            e.status if e.status != 404 else 422, finance_error(_, e), form)
    return back("/staff/settlements", month=month, currency=currency.strip().upper(), done="rule")


@router.post("/staff/settlements/post", response_class=HTMLResponse)
def post_statement(request: Request, location_id: int = Form(...), month: str = Form(...),
                   currency: str = Form("CNY"), key: str = Form(""),
                   caller: Caller = Depends(allowed(*people.FINANCE_EDITORS)), g: Gate = Depends(gate)):
    """Posting is once per location, month and currency, so a form sent twice (the key is only a nonce
    from the page) posts once and answers 'posted before' the second time."""
    _ = translator(request)
    try:
        _s, made = record_posting(g, caller, location_id, month, currency)
    except FinanceError as e:
        return _settlements(request, caller, g, this_month(g), "CNY", 422, finance_error(_, e))
    return back("/staff/settlements", month=month, currency=currency, done="posted" if made else "already")


# -- reconciliation ----------------------------------------------------------------------------------

@router.get("/staff/reconcile", response_class=HTMLResponse)
def reconcile_page(request: Request, start: str = "", end: str = "",
                   caller: Caller = Depends(allowed(*people.FINANCE_READERS)), g: Gate = Depends(gate)):
    _ = translator(request)
    errors, status_code = {}, 200
    default = month_span(this_month(g))
    try:
        lo, hi = span(start or default[0].isoformat(), end or default[1].isoformat(), "from", "to")
    except FinanceError as e:
        errors, status_code = finance_error(_, e), 422
        lo, hi = default
    with reader(g.engine).connect() as conn:
        report = reconcile.reconcile(conn, lo, hi)
    by_kind = {k: [m for m in report["mismatches"] if m["kind"] == k] for k in reconcile.KINDS}
    return dash(request, caller, "dash_reconcile.html", status_code, report=report, by_kind=by_kind,
                labels=MISMATCH_LABELS, errors=errors, start=start or lo.isoformat(),
                end=end or hi.isoformat())


# -- the journal -------------------------------------------------------------------------------------

@router.get("/staff/journal", response_class=HTMLResponse)
def journal_page(request: Request, caller: Caller = Depends(allowed(*people.FINANCE_READERS)),
                 g: Gate = Depends(gate)):
    """Every account's balance on its own side, by currency, and the trial balance's sums."""
    with g.engine.begin() as conn:
        ledger.catch_up(conn, g.now())
        tb = ledger.trial_balance(conn)
    return dash(request, caller, "dash_journal.html", 200, accounts=tb["accounts"], totals=tb["totals"],
                balanced=tb["balanced"])
