"""The finance API under /api/v1: the journal and trial balance, reconciliation, supplier payments and
statements, settlement rules and statements per location (JSON, CSV or a printable A4 page). Who may call
what is the table in ``cloud/finance/__init__.py``; every change is audited in its own transaction."""

from __future__ import annotations

import csv
import logging
import io
from datetime import date, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, SkipValidation, StrictInt, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from cloud import people
from cloud.core.db import reader
from cloud.web.pages import printable
from cloud.people import Caller, require
from cloud.people.auth import Gate, gate
from cloud.finance import ledger, reconcile, settlement
from cloud.payments import statement
from cloud.payments.registry import REGISTRY
from cloud.people import audit
from cloud.finance.common import FinanceError, currency_of, month_span, span

from cloud.finance.posting import record_posting, record_rule, statement_for

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["finance"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Payment(Body):
    key: str
    amount: StrictInt
    currency: str = "CNY"
    paid_on: date
    reference: str = ""


class Rule(Body):
    """A settlement rule. ``settlement.add_rule`` checks every field and names the one that is wrong, as it
    did when the body was a dict: the types are the schema's, ``SkipValidation`` leaves the check to it."""

    kind: SkipValidation[str | None] = None  # percent_gross | percent_profit | flat_monthly | per_item
    percent: SkipValidation[float | str | None] = None  # 0-100, two decimals: 12.5 or "12.50"
    amount: SkipValidation[int | None] = None  # minor units
    currency: SkipValidation[str] = "CNY"
    valid_from: SkipValidation[str | None] = None  # a date like 2026-11-01
    valid_to: SkipValidation[str | None] = None  # inclusive; none: open

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        """An unknown field in the settlement functions' words: "{field}: is not a settlement rule field"."""
        if isinstance(data, dict):
            extra = sorted(set(data) - set(cls.model_fields))
            if extra:
                raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                    type=PydanticCustomError("extra_forbidden", "is not a settlement rule field"),
                    loc=(extra[0],), input=data[extra[0]])])
        return data


def this_month(g: Gate) -> tuple[date, date]:
    return month_span(g.now().astimezone(timezone.utc).strftime("%Y-%m"))


def period_from_query(g: Gate, start: str | None, end: str | None) -> tuple[date, date]:
    if start is None and end is None:
        return this_month(g)
    return span(start, end)


# -- the journal -------------------------------------------------------------------------------------

@router.get("/finance/journal")
def journal(account: str | None = None, owner: int = 0, currency: str = "CNY",
            limit: int = Query(100, ge=1, le=1000), caller: Caller = Depends(require(*people.FINANCE_READERS)),
            g: Gate = Depends(gate)):
    """Every account and its balance (credit positive; ``natural_balance`` on the account's own side); with
    ``account`` (a kind: revenue, inventory, cogs, supplier_payable, ...) that account's legs, newest first."""
    with g.engine.begin() as conn:
        ledger.catch_up(conn, g.now())
        rows = ledger.balances(conn, account)
        if account is None:
            return {"accounts": rows}
        found = [r for r in rows if r["owner"] == owner and r["currency"] == currency]
        if not found:
            raise HTTPException(404, f"account: no {account} account of owner {owner} in {currency}")
        return {"account": found[0], "legs": ledger.legs(conn, found[0]["account_id"], limit)}


@router.get("/finance/trial-balance")
def trial_balance(caller: Caller = Depends(require(*people.FINANCE_READERS)), g: Gate = Depends(gate)):
    """Every account's balance and their sum per currency, which is zero."""
    with g.engine.begin() as conn:
        ledger.catch_up(conn, g.now())
        return ledger.trial_balance(conn)


@router.get("/finance/reconciliation")
def reconciliation(start: str | None = Query(None, alias="from"), end: str | None = Query(None, alias="to"),
                   caller: Caller = Depends(require(*people.FINANCE_READERS)), g: Gate = Depends(gate)):
    """What the providers captured against what the ledgers sold and what the journal holds, for
    [from, to] (whole days, UTC; default this month): every mismatch, with its kind."""
    try:
        lo, hi = period_from_query(g, start, end)
    except FinanceError as e:
        raise e.http() from None
    with reader(g.engine).connect() as conn:
        return reconcile.reconcile(conn, lo, hi)


@router.post("/finance/statements")
async def import_statement(request: Request, provider: str = Query(..., max_length=20),
                           caller: Caller = Depends(require(*people.FINANCE_EDITORS)), g: Gate = Depends(gate)):
    """A payment platform's statement file (the request's body as it is: Stripe's balance transactions, the
    Alipay bill, the WeChat Pay trade bill), read by ``provider``'s reader, its lines stored once each and
    its fees posted; then reconciliation holds it against the journal. A file the reader refuses imports
    nothing (422, with the reason)."""
    spec = REGISTRY.get(provider)
    if spec is None or spec.statement is None:
        readers = ", ".join(s.name for s in REGISTRY if s.statement is not None) or "none"
        raise HTTPException(422, f"provider: {provider!r} has no statement to import (those that do: {readers})")
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > statement.MAX_BYTES:
            raise HTTPException(413, f"a statement file is at most {statement.MAX_BYTES // 2**20} MB")
    try:
        lines = spec.statement(request.app.state.cloud.settings, data)
        with g.engine.begin() as conn:
            result = statement.import_statement(conn, spec.name, spec.boundary, lines, data, g.now())
            audit.record(conn, caller, "statement.import", "provider", spec.name,
                         {"lines": result["lines"], "new": result["new"]}, g.now())
    except statement.StatementRefused as e:
        log.warning("%s statement refused (%d bytes): %s", provider, len(data), e)
        raise HTTPException(422, f"the {provider} statement was not imported: {e}") from None
    return result


# -- suppliers ---------------------------------------------------------------------------------------

@router.post("/suppliers/{supplier_id}/payments", status_code=201)
def pay_supplier(supplier_id: int, body: Payment, caller: Caller = Depends(require(*people.FINANCE_EDITORS)),
                 g: Gate = Depends(gate)):
    """A payment to a supplier, once per ``key``: the same key again changes nothing."""
    now = g.now()
    try:
        with g.engine.begin() as conn:
            ledger.catch_up(conn, now)
            payment, made = ledger.pay_supplier(conn, supplier_id, body.key, body.amount, body.currency,
                                                body.paid_on, body.reference, now, caller.user_id)
            if made:
                people.audit.record(conn, caller, "supplier.payment", "supplier", supplier_id, payment, now)
    except FinanceError as e:
        raise e.http() from None
    return {**payment, "created": made}


@router.get("/suppliers/{supplier_id}/statement")
def supplier_statement(request: Request, supplier_id: int, start: str | None = Query(None, alias="from"),
                       end: str | None = Query(None, alias="to"), currency: str = "CNY",
                       format: str = Query("json", pattern="^(json|csv|html)$"),
                       caller: Caller = Depends(require(*people.SUPPLIER_STATEMENT_READERS)),
                       g: Gate = Depends(gate)):
    """Purchases received, payments and the balance owed to a supplier for [from, to] (default this month);
    a supplier's account sees only its own; ``format`` csv or html (A4, in the reader's language or the one
    ``lang`` names)."""
    if caller.role == people.SUPPLIER and caller.supplier_id != supplier_id:
        raise HTTPException(404, f"no supplier {supplier_id}")
    try:
        lo, hi = period_from_query(g, start, end)
        with g.engine.begin() as conn:
            ledger.catch_up(conn, g.now())
            s = ledger.supplier_statement(conn, supplier_id, lo, hi, currency_of(currency))
    except FinanceError as e:
        raise e.http() from None
    if format == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["supplier", "currency", "from", "to"])
        w.writerow([s["supplier"], s["currency"], s["from"], s["to"]])
        w.writerow(["at", "kind", "key", "amount"])
        w.writerows([x["at"], x["kind"], x["key"], x["amount"]] for x in s["lines"])
        w.writerow(["opening_balance", "purchases", "payments", "closing_balance"])
        w.writerow([s["opening_balance"], s["purchases"], s["payments"], s["closing_balance"]])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="supplier-{supplier_id}-{s["from"]}-{s["to"]}.csv"'})
    if format == "html":
        return printable(request, "supplier_statement.html", s=s)
    return s


# -- settlement per location -------------------------------------------------------------------------

@router.get("/locations/{location_id}/settlement-rules")
def list_rules(location_id: int, caller: Caller = Depends(require(*people.FINANCE_READERS)),
               g: Gate = Depends(gate)):
    """A location's settlement rules, by kind and date."""
    try:
        with reader(g.engine).connect() as conn:
            return settlement.rules(conn, location_id)
    except FinanceError as e:
        raise e.http() from None


@router.post("/locations/{location_id}/settlement-rules", status_code=201)
def add_rule(location_id: int, body: Rule, caller: Caller = Depends(require(*people.FINANCE_EDITORS)),
             g: Gate = Depends(gate)):
    """A settlement rule: {kind: percent_gross | percent_profit | flat_monthly | per_item, percent (0-100,
    two decimals) or amount (minor units), currency, valid_from, valid_to (inclusive, optional)}. A rule
    overlapping another of the same kind is refused (409)."""
    try:
        # Only the fields sent: a percent rule given an amount (or the other way round) is refused.
        return record_rule(g, caller, location_id, {k: getattr(body, k) for k in body.model_fields_set})
    except FinanceError as e:
        raise e.http() from None


@router.get("/locations/{location_id}/statements/{period}")
def location_statement(request: Request, location_id: int, period: str, currency: str = "CNY",
                       format: str = Query("json", pattern="^(json|csv|html)$"),
                       caller: Caller = Depends(require(*people.FINANCE_READERS)), g: Gate = Depends(gate)):
    """A location's settlement statement for a month (2026-11) or days (2026-11-03..2026-11-17): sales,
    refunds, cost of goods sold, each rule's commission and the total due; ``format`` csv or html (A4, in
    the reader's language or the one ``lang`` names)."""
    try:
        s = statement_for(g, location_id, period, currency)
    except FinanceError as e:
        raise e.http() from None
    name = f"statement-{location_id}-{s['period']}-{s['currency']}"
    if format == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(settlement.csv_rows(s))
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    if format == "html":
        return printable(request, "statement.html", s=s)
    return s


@router.post("/locations/{location_id}/statements/{period}/post")
def post_statement(location_id: int, period: str, currency: str = "CNY",
                   caller: Caller = Depends(require(*people.FINANCE_EDITORS)), g: Gate = Depends(gate)):
    """Book a statement's total as commission owed to the location, once per location, period and
    currency: posting again changes nothing and answers with the first posting."""
    try:
        s, made = record_posting(g, caller, location_id, period, currency)
    except FinanceError as e:
        raise e.http() from None
    return {**s, "created": made}
