"""The sales API under /api/v1: the newest sales, and the manager reports (sales by day, machine, product,
location or hour; stock across the fleet). A new report is a function in ``reports.py`` and a route here."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Query as Query_

from cloud import people
from cloud.people import require
from cloud.sales import records
from cloud.sales.reports import Query, ReportError, sales_report, stock_report

router = APIRouter(prefix="/api/v1", tags=["reports"])


def _engine(request: Request) -> sa.Engine:
    """The running cloud's engine."""
    return request.app.state.cloud.engine


def _refused(e: ReportError) -> HTTPException:
    return HTTPException(e.status, str(e))


@router.get("/reports/sales", dependencies=[Depends(require(*people.SALES_READERS))])
def api_sales(by: str = "day", start: str | None = Query_(None, alias="from"), to: str | None = None,
              tz: str | None = None, machine: str | None = None, location: str | None = None,
              product: str | None = None, engine: sa.Engine = Depends(_engine)):
    """Sales by day, machine, product, location or hour of day, per currency, over [from, to) in local days
    of ``tz`` (UTC by default); count and amount in minor units."""
    try:
        with engine.connect() as conn:
            return sales_report(conn, Query(conn, by, start, to, tz, machine, location, product))
    except ReportError as e:
        raise _refused(e) from None


@router.get("/reports/stock", dependencies=[Depends(require(*people.FLEET_READERS))])
def api_stock(machine: str | None = None, location: str | None = None, product: str | None = None,
              engine: sa.Engine = Depends(_engine)):
    """Every slot across the fleet with its count, capacity and fill level, emptiest first."""
    try:
        with engine.connect() as conn:
            return stock_report(conn, machine, location, product)
    except ReportError as e:
        raise _refused(e) from None


@router.get("/sales", dependencies=[Depends(require(*people.SALES_READERS))])
def recent_sales(machine: str | None = None, limit: int = 100, engine: sa.Engine = Depends(_engine)):
    """The newest sales, of one machine or all, with the totals per currency."""
    if not 1 <= limit <= 10000:
        raise HTTPException(422, "limit must be 1-10000")
    with engine.connect() as conn:
        return records.recent(conn, machine, limit)
