"""The sales API under /api/v1: the newest sales, and the manager reports (sales by day, machine, product,
location or hour; stock across the fleet). A new report is a function in ``reports.py`` and a route here."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Query as Query_

from cloud import people
from pydantic import BaseModel, ConfigDict, StrictStr

from cloud.core.db import reader, utcnow
from cloud.people import Caller, require
from cloud.sales import office, paging, records
from cloud.sales.reports import Query, ReportError, count_new_refunds, sales_report, stock_report

router = APIRouter(prefix="/api/v1", tags=["reports"])


def _engine(request: Request) -> sa.Engine:
    """The running cloud's engine."""
    return request.app.state.cloud.engine


def _refused(e: ReportError) -> HTTPException:
    return HTTPException(e.status, str(e))


@router.get("/reports/sales", dependencies=[Depends(require(*people.SALES_READERS))])
def api_sales(by: str = "day", start: str | None = Query_(None, alias="from"), to: str | None = None,
              tz: str | None = None, machine: str | None = None, location: str | None = None,
              product: str | None = None, after: str = "", limit: str = "", engine: sa.Engine = Depends(_engine)):
    """Sales by day, machine, product, location or hour of day, per currency, over [from, to) in local days
    of ``tz`` (UTC by default); count and amount (gross), refund_count, refunds and net, in minor units.
    ``limit`` rows at a time (500 unless given, at most 5000): ``next`` is the ``after`` of the following
    page (null on the last); ``totals`` are always the whole report's."""
    try:
        count_new_refunds(engine)  # the refunds booked since the sweeper last looked
        with reader(engine).connect() as conn:
            q = Query(conn, by, start, to, tz, machine, location, product)
            position, size = paging.sales_position(q.by, after), paging.limit_of(limit)
            return paging.sales_page(sales_report(conn, q), position, size)
    except ReportError as e:
        raise _refused(e) from None


@router.get("/reports/stock", dependencies=[Depends(require(*people.FLEET_READERS))])
def api_stock(machine: str | None = None, location: str | None = None, product: str | None = None,
              after: str = "", limit: str = "", engine: sa.Engine = Depends(_engine)):
    """Every slot across the fleet with its count, capacity and fill level, emptiest first, ``limit`` slots at
    a time (500 unless given, at most 5000): ``next`` is the ``after`` of the following page (null on the
    last); ``summary`` is always over every slot."""
    try:
        size = paging.limit_of(limit)
        with reader(engine).connect() as conn:
            return stock_report(conn, machine, location, product, after or None, size)
    except ReportError as e:
        raise _refused(e) from None


@router.get("/sales", dependencies=[Depends(require(*people.SALES_READERS))])
def recent_sales(machine: str | None = None, limit: int = 100, engine: sa.Engine = Depends(_engine)):
    """The newest sales, of one machine or all, with the totals per currency."""
    if not 1 <= limit <= 10000:
        raise HTTPException(422, "limit must be 1-10000")
    with reader(engine).connect() as conn:
        return records.recent(conn, machine, limit)


def _office_refused(e: office.OfficeError) -> HTTPException:
    return HTTPException(e.status, str(e))


@router.get("/orders", dependencies=[Depends(require(*people.SALES_READERS))], tags=["orders"])
def list_orders(machine: str = "", customer: str = "", start: str = Query_("", alias="from"), to: str = "",
                status: str = "", tz: str = "", after: str = "", limit: str = "50",
                engine: sa.Engine = Depends(_engine)):
    """Orders newest first, by machine, customer (id or +phone), local days [from, to] of ``tz`` and state;
    a page at a time: ``next`` is the ``after`` of the following page (null on the last)."""
    try:
        with reader(engine).connect() as conn:
            rows, more = office.search(conn, office.filters(conn, machine, customer, start, to, status, tz, after,
                                                            limit))
    except office.OfficeError as e:
        raise _office_refused(e) from None
    return {"orders": [office.public(r) for r in rows], "next": more}


@router.get("/orders/{order_id}/details", dependencies=[Depends(require(*people.SALES_READERS))], tags=["orders"])
def show_order(order_id: str, request: Request, engine: sa.Engine = Depends(_engine)):
    """One order: its customer, product, machine, and its money story (authorised, captured, voided,
    refunded, each with its provider's status), with what is left to refund."""
    with reader(engine).connect() as conn:
        found = office.detail(conn, request.app.state.cloud.provider, order_id)
    if found is None:
        raise HTTPException(404, f"no order {order_id}")
    return found


@router.get("/customers", dependencies=[Depends(require(*people.WALLET_READERS))], tags=["customers"])
def list_customers(q: str = "", after: str = "", limit: int = Query_(50, ge=1, le=200),
                   engine: sa.Engine = Depends(_engine)):
    """Customers whose name or phone holds ``q``, by id; ``next`` is the ``after`` of the following page."""
    if after and not (after.isdigit() and len(after) <= 9):
        raise HTTPException(422, "after: a customer id (use the next this list gave)")
    if len(q) > 80:
        raise HTTPException(422, "q: at most 80 characters")
    with reader(engine).connect() as conn:
        rows = people.search(conn, q, int(after) if after else None, limit + 1)
    return {"customers": [office.customer_public(r) for r in rows[:limit]],
            "next": str(rows[limit - 1].id) if len(rows) > limit else None}


@router.get("/customers/{customer}", dependencies=[Depends(require(*people.WALLET_READERS))], tags=["customers"])
def show_customer(customer: str, request: Request, engine: sa.Engine = Depends(_engine)):
    """A customer (id or +phone): blocked or not, their newest orders, wallet and payment mandate."""
    try:
        with reader(engine).connect() as conn:
            return office.customer_detail(conn, request.app.state.cloud.provider, office.find_customer(conn, customer))
    except office.OfficeError as e:
        raise _office_refused(e) from None


class BlockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: StrictStr = ""


def _block(customer: str, body: BlockBody, caller: Caller, engine: sa.Engine, blocked: bool) -> dict:
    try:
        row, changed = office.set_blocked(engine, caller, customer, blocked, body.reason, utcnow())
    except office.OfficeError as e:
        raise _office_refused(e) from None
    return {**office.customer_public(row), "changed": changed}


@router.post("/customers/{customer}/block", tags=["customers"])
def block_customer(customer: str, body: BlockBody, caller: Caller = Depends(require(*people.CUSTOMER_BLOCKERS)),
                   engine: sa.Engine = Depends(_engine)):
    """Block a customer from buying, with a reason (audited); their next purchase is refused."""
    return _block(customer, body, caller, engine, True)


@router.post("/customers/{customer}/unblock", tags=["customers"])
def unblock_customer(customer: str, body: BlockBody, caller: Caller = Depends(require(*people.CUSTOMER_BLOCKERS)),
                     engine: sa.Engine = Depends(_engine)):
    """Let a blocked customer buy again (audited)."""
    return _block(customer, body, caller, engine, False)
