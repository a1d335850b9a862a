"""Dashboard: sales over a period, per day, machine, product and hour of day, as charts with their data
in tables. Read from the rollups through ``reports.sales_report``, as the API's report is."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request

from cloud.web import i18n
from cloud.fleet import locations, machines
from cloud import people
from cloud.sales import reports
from cloud.people import Caller
from cloud.people.auth import Gate, gate
from cloud.web.pages import translator
from cloud.web import charts
from cloud.web.dashboard import add_page, dash
from cloud.people.auth import staff_only

router = APIRouter(include_in_schema=False)
add_page("/staff/sales", "Sales", people.SALES_READERS, order=20)

ZONES = ("UTC", "Asia/Shanghai", "Asia/Hong_Kong", "Asia/Singapore", "Asia/Tokyo", "Europe/London",
         "Europe/Berlin", "America/New_York", "America/Los_Angeles")
DEFAULT_DAYS = 30


class FormError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _period(_, form: dict, today: date) -> tuple[date, date]:
    """The form's dates, checked: (first day, last day), both inclusive as people read a period."""
    days = {}
    for field, label, default in (("to", _("To"), today), ("from", _("From"), None)):
        text = form[field].strip()
        if not text:
            days[field] = default
            continue
        try:
            days[field] = date.fromisoformat(text)
        except ValueError:
            raise FormError(field, _("{field}: “{value}” is not a date like 2026-11-01.", field=label,
                                     value=text)) from None
    end = days["to"]
    start = days["from"] or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise FormError("to", _("To: the last day must not be before the first day."))
    if (end - start).days >= reports.MAX_DAYS:
        raise FormError("to", _("To: a period covers at most {n} days.", n=reports.MAX_DAYS))
    return start, end


def _choices(conn: sa.Connection) -> dict:
    return {"machines": [(m.id, m.name or m.id) for m in machines.list_machines(conn)],
            "locations": [(str(loc["id"]), loc["name"]) for loc in locations.list_locations(conn)],
            "products": [(str(i), f"{sku} {name}") for i, sku, name in conn.execute(
                sa.select(machines.products.c.id, machines.products.c.sku, machines.products.c.name)
                .order_by(machines.products.c.sku))]}


def _charts(_, lang: str, results: dict, start: date, end: date) -> list[dict]:
    """Per currency sold in: the totals and four charts, each with the rows of its table."""
    out = []
    for total in results["day"]["totals"]:
        currency = total["currency"]

        def money(v, c=currency):
            return i18n.money(v, c, lang)

        rows = {by: [r for r in results[by]["rows"] if r["currency"] == currency] for by in results}
        by_day = {r["key"]: r for r in rows["day"]}
        days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
        day_rows = [(d.isoformat(), by_day.get(d.isoformat(), {}).get("count", 0),
                     by_day.get(d.isoformat(), {}).get("amount", 0)) for d in days]
        by_hour = {r["key"]: r for r in rows["hour"]}
        hour_rows = [(f"{h:02d}", by_hour.get(h, {}).get("count", 0), by_hour.get(h, {}).get("amount", 0))
                     for h in range(24)]
        machine_rows = [(r["name"] or r["key"], r["count"], r["amount"])
                        for r in sorted(rows["machine"], key=lambda r: -r["amount"])]
        product_rows = [(_("(unknown product)") if r["key"] == reports.NO_PRODUCT else r["name"] or str(r["key"]),
                         r["count"], r["amount"]) for r in sorted(rows["product"], key=lambda r: -r["amount"])]
        sections = []
        for key, heading, label, table, horizontal in (
                ("day", _("Sales per day"), _("Day"), day_rows, False),
                ("machine", _("Sales per machine"), _("Machine"), machine_rows, True),
                ("product", _("Sales per product"), _("Product"), product_rows, True),
                ("hour", _("Sales per hour of day"), _("Hour"), hour_rows, False)):
            bars = [charts.Bar(k, amount, k[5:] if key == "day" else None) for k, _count, amount in table]
            top = max(bars, key=lambda b: b.value, default=None)
            desc = _("Highest: {label}, {value}.", label=top.label, value=money(top.value)) if top else ""
            label_every = max(1, -(-len(bars) // 8)) if key == "day" else (3 if key == "hour" else 1)
            svg = charts.bar_chart(bars, f"{heading} ({currency})",
                                   desc or _("No sales in this period."), fmt=money, horizontal=horizontal,
                                   empty=_("No sales in this period."), label_every=label_every)
            sections.append({"key": key, "heading": heading, "label": label, "svg": svg, "rows": table})
        out.append({"currency": currency, "count": total["count"], "amount": total["amount"],
                    "sections": sections})
    return out


@router.get("/staff/sales")
def sales_page(request: Request, caller: Caller = Depends(staff_only(*people.SALES_READERS)), g: Gate = Depends(gate)):
    """The period form and, for a good period, the totals and the four charts."""
    _ = translator(request)
    q = request.query_params
    form = {k: q.get(k, "") for k in ("from", "to", "tz", "machine", "location", "product")}
    form["tz"] = form["tz"] or "UTC"
    error = field = None
    charts_ = []
    with g.engine.connect() as conn:
        choices = _choices(conn)
        try:
            try:
                tz = reports.zone(form["tz"])
            except reports.ReportError:
                raise FormError("tz", _("Time zone: “{value}” is not a time zone we know.", value=form["tz"])) \
                    from None
            start, end = _period(_, form, datetime.now(tz).date())
            form["from"], form["to"] = start.isoformat(), end.isoformat()
            results = {}
            for by in ("day", "machine", "product", "hour"):
                try:
                    results[by] = reports.sales_report(conn, reports.Query(
                        conn, by, start.isoformat(), (end + timedelta(days=1)).isoformat(), form["tz"],
                        form["machine"] or None, form["location"] or None, form["product"] or None))
                except reports.NotFound as e:
                    names = {"machine": _("Machine"), "location": _("Location"), "product": _("Product")}
                    raise FormError(e.param, _("{field}: there is no such one.", field=names[e.param])) from None
            charts_ = _charts(_, i18n.language_of(request), results, start, end)
        except FormError as e:
            error, field = str(e), e.field
    zones = ZONES if form["tz"] in ZONES else (*ZONES, form["tz"])
    return dash(request, caller, "dash_sales.html", 422 if error else 200, form=form, error=error,
                error_field=field, zones=zones, currencies=charts_, **choices)
