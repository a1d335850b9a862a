"""Dashboard: sales over a period, per day, machine, product and hour of day, as charts with their data
in tables. Read from the rollups through ``reports.sales_report``, as the API's report is."""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse

from cloud.web import i18n
from cloud.fleet import locations, machines
from cloud import people
from cloud.core.db import reader, utcnow
from cloud.sales import office, reports
from cloud.people import Caller
from cloud.people.auth import Gate, gate
from cloud.web.pages import translator
from cloud.web import charts
from cloud.web.dashboard import CHOICES_MAX, add_page, dash
from cloud.people.auth import staff_only

router = APIRouter(include_in_schema=False)
add_page("/staff/sales", "Sales", people.SALES_READERS, order=20)

ZONES = ("UTC", "Asia/Shanghai", "Asia/Hong_Kong", "Asia/Singapore", "Asia/Tokyo", "Europe/London",
         "Europe/Berlin", "America/New_York", "America/Los_Angeles")
DEFAULT_DAYS = 30
MACHINES_SHOWN = 20  # machines by takings in the chart and table per machine; the others are summed in one row


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


def _choices(conn: sa.Connection, lang: str | None = None) -> dict:
    """The filters' options, the machines named in ``lang``; past ``CHOICES_MAX`` machines the machine is
    typed (its id), not chosen from a list that would weigh more than the report."""
    fleet = machines.list_machines(conn, lang)
    return {"machines": [(m.id, m.name or m.id) for m in fleet] if len(fleet) <= CHOICES_MAX else None,
            "locations": [(str(loc["id"]), loc["name"]) for loc in locations.list_locations(conn)],
            "products": [(str(i), f"{sku} {name}") for i, sku, name in conn.execute(
                sa.select(machines.products.c.id, machines.products.c.sku, machines.products.c.name)
                .order_by(machines.products.c.sku))]}


def _names_in(conn: sa.Connection, lang: str) -> dict[str, str]:
    """The machines' names in ``lang`` where they have one there (the report carries the default names)."""
    named = machines.machine_names
    return dict(conn.execute(sa.select(named.c.machine_id, named.c.name).where(named.c.lang == lang)).all())


def _charts(_, lang: str, results: dict, start: date, end: date, names: dict[str, str]) -> list[dict]:
    """Per currency sold in: the totals and four charts, each with the rows of its table (the machines named
    by ``names`` where they have a name in the page's language)."""
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
        machine_rows = [(names.get(r["key"]) or r["name"] or r["key"], r["count"], r["amount"])
                        for r in sorted(rows["machine"], key=lambda r: (-r["amount"], r["key"]))]
        if len(machine_rows) > MACHINES_SHOWN:
            rest = machine_rows[MACHINES_SHOWN:]
            machine_rows = machine_rows[:MACHINES_SHOWN] + [(
                _("The other {n} machines", n=i18n.number(len(rest), lang)), sum(r[1] for r in rest),
                sum(r[2] for r in rest))]
        product_rows = [(_("(unknown product)") if r["key"] == reports.NO_PRODUCT else r["name"] or str(r["key"]),
                         r["count"], r["amount"]) for r in sorted(rows["product"], key=lambda r: -r["amount"])]
        sections = []
        for key, heading, label, table, horizontal in (
                ("day", _("Sales per day"), _("Day"), day_rows, False),
                ("machine", _("Sales per machine"), _("Machine"), machine_rows, True),
                ("product", _("Sales per product"), _("Product"), product_rows, True),
                ("hour", _("Sales per hour of day"), _("Hour"), hour_rows, False)):
            # The other machines' sum is a row of the table, not a bar beside single machines.
            bars = [charts.Bar(k, amount, k[5:] if key == "day" else None)
                    for k, _count, amount in (table[:MACHINES_SHOWN] if key == "machine" else table)]
            top = max(bars, key=lambda b: b.value, default=None)
            desc = _("Highest: {label}, {value}.", label=top.label, value=money(top.value)) if top else ""
            label_every = max(1, -(-len(bars) // 8)) if key == "day" else (3 if key == "hour" else 1)
            svg = charts.bar_chart(bars, f"{heading} ({currency})",
                                   desc or _("No sales in this period."), fmt=money, horizontal=horizontal,
                                   empty=_("No sales in this period."), label_every=label_every)
            sections.append({"key": key, "heading": heading, "label": label, "svg": svg, "rows": table})
        out.append({"currency": currency, "count": total["count"], "amount": total["amount"],
                    "refunds": total["refunds"], "net": total["net"], "sections": sections})
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
    reports.count_new_refunds(g.engine)  # the refunds booked since the sweeper last looked
    with reader(g.engine).connect() as conn:
        choices = _choices(conn, i18n.language_of(request))
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
            lang = i18n.language_of(request)
            charts_ = _charts(_, lang, results, start, end, _names_in(conn, lang))
        except FormError as e:
            error, field = str(e), e.field
    zones = ZONES if form["tz"] in ZONES else (*ZONES, form["tz"])
    return dash(request, caller, "dash_sales.html", 422 if error else 200, form=form, error=error,
                error_field=field, zones=zones, currencies=charts_, **choices)


# Orders and customers: search, one order's money story and its refund, one customer and their block.
add_page("/staff/orders", "Orders", people.SALES_READERS, order=21)
add_page("/staff/customers", "Customers", people.WALLET_READERS, order=22)
ORDER_FIELDS = ("machine", "customer", "from", "to", "status", "tz", "after")


def _office_error(_, e: office.OfficeError) -> str:
    names = {"machine": _("Machine"), "customer": _("Customer"), "from": _("From"), "to": _("To"),
             "status": _("State"), "tz": _("Time zone"), "after": _("Page"), "limit": _("Page"),
             "amount": _("Amount"), "reason": _("Reason"), "key": _("Form"), "order": _("Order")}
    return _("{field}: {problem}", field=names.get(e.field, e.field), problem=_(e.template, **e.fields))


@router.get("/staff/orders")
def orders_page(request: Request, caller: Caller = Depends(staff_only(*people.SALES_READERS)),
                g: Gate = Depends(gate)):
    """The order search: filters, a page of orders newest first, and the link to the next page."""
    _ = translator(request)
    form = {k: request.query_params.get(k, "")[:100] for k in ORDER_FIELDS}
    error = field = next_after = None
    rows = []
    with reader(g.engine).connect() as conn:
        choices = _choices(conn, i18n.language_of(request))
        try:
            rows, next_after = office.search(conn, office.filters(
                conn, form["machine"], form["customer"], form["from"], form["to"], form["status"], form["tz"],
                form["after"]))
        except office.OfficeError as e:
            error, field = _office_error(_, e), e.field
    nxt = None
    if next_after:
        nxt = "/staff/orders?" + urlencode({**{k: v for k, v in form.items() if v}, "after": next_after})
    return dash(request, caller, "dash_orders.html", 422 if error else 200, form=form, error=error,
                error_field=field, rows=rows, next_url=nxt, states=office.STATES, zones=ZONES,
                machines=choices["machines"])


def _order_page(request: Request, caller: Caller, g: Gate, order_id: str, status_code: int = 200,
                errors: dict | None = None, form: dict | None = None, notice: str | None = None):
    _ = translator(request)
    with reader(g.engine).connect() as conn:
        found = office.detail(conn, request.app.state.cloud.provider, order_id, i18n.language_of(request))
    if found is None:
        return dash(request, caller, "dash_problem.html", 404, title=_("No such order"),
                    message=_("There is no order {id}.", id=order_id))
    may_refund = caller.role in people.REFUNDERS and found["refundable"] > 0
    return dash(request, caller, "dash_order.html", status_code, order=found, errors=errors or {},
                form=form or {"amount": "", "reason": ""}, key=secrets.token_hex(12), may_refund=may_refund,
                notice=notice)


@router.get("/staff/orders/{order_id}")
def order_page(request: Request, order_id: str, caller: Caller = Depends(staff_only(*people.SALES_READERS)),
               g: Gate = Depends(gate)):
    """One order: who, what, where, and every movement of its money; a refund form for those who may."""
    _ = translator(request)
    done = request.query_params.get("refunded")
    return _order_page(request, caller, g, order_id[:64], notice=_("The refund is recorded.") if done else None)


@router.post("/staff/orders/{order_id}/refund")
def refund_order(request: Request, order_id: str, amount: str = Form(""), reason: str = Form(""),
                 key: str = Form(""), caller: Caller = Depends(staff_only(*people.REFUNDERS)),
                 g: Gate = Depends(gate)):
    """A refund from the order's page, idempotent under the form's key (sent twice, it refunds once)."""
    _ = translator(request)
    try:
        office.refund(g.engine, request.app.state.cloud.provider, caller, order_id[:64], amount, key, reason,
                      utcnow())
    except office.OfficeError as e:
        return _order_page(request, caller, g, order_id[:64], e.status, {e.field: _office_error(_, e)},
                           {"amount": amount, "reason": reason})
    return RedirectResponse(f"/staff/orders/{quote(order_id, safe='')}?refunded=1", status_code=303)


@router.get("/staff/customers")
def customers_page(request: Request, caller: Caller = Depends(staff_only(*people.WALLET_READERS)),
                   g: Gate = Depends(gate)):
    """Customers by name or phone, a page at a time."""
    _ = translator(request)
    q, after = request.query_params.get("q", "")[:80], request.query_params.get("after", "")
    error = None
    rows = []
    if after and not (after.isdigit() and len(after) <= 9):
        error = _("Page: not a position this list gave (use its next link).")
    else:
        with reader(g.engine).connect() as conn:
            rows = people.search(conn, q, int(after) if after else None, 51)
    nxt = "/staff/customers?" + urlencode({"q": q, "after": rows[49].id}) if len(rows) > 50 else None
    return dash(request, caller, "dash_customers.html", 422 if error else 200, q=q, rows=rows[:50], error=error,
                next_url=nxt)


def _customer_page(request: Request, caller: Caller, g: Gate, customer_id: str, status_code: int = 200,
                   errors: dict | None = None, notice: str | None = None):
    _ = translator(request)
    with reader(g.engine).connect() as conn:
        try:
            found = office.customer_detail(conn, request.app.state.cloud.provider,
                                           office.find_customer(conn, customer_id))
        except office.OfficeError:
            found = None
    if found is None:
        return dash(request, caller, "dash_problem.html", 404, title=_("No such customer"),
                    message=_("There is no customer {id}.", id=customer_id))
    return dash(request, caller, "dash_customer.html", status_code, c=found, errors=errors or {}, notice=notice,
                may_block=caller.role in people.CUSTOMER_BLOCKERS)


@router.get("/staff/customers/{customer_id}")
def customer_page(request: Request, customer_id: str, caller: Caller = Depends(staff_only(*people.WALLET_READERS)),
                  g: Gate = Depends(gate)):
    """One customer: blocked or not, their orders, wallet and payment method."""
    return _customer_page(request, caller, g, customer_id[:20])


@router.post("/staff/customers/{customer_id}/block")
def block_customer(request: Request, customer_id: str, change: str = Form(""), reason: str = Form(""),
                   caller: Caller = Depends(staff_only(*people.CUSTOMER_BLOCKERS)), g: Gate = Depends(gate)):
    """Block (with a reason) or unblock a customer; audited."""
    _ = translator(request)
    if change not in ("block", "unblock"):
        return _customer_page(request, caller, g, customer_id[:20], 422, {"change": _("Choose block or unblock.")})
    try:
        office.set_blocked(g.engine, caller, customer_id[:20], change == "block", reason, utcnow())
    except office.OfficeError as e:
        if e.status == 404:
            return _customer_page(request, caller, g, customer_id[:20])
        return _customer_page(request, caller, g, customer_id[:20], e.status, {e.field: _office_error(_, e)})
    return RedirectResponse(f"/staff/customers/{quote(customer_id, safe='')}", status_code=303)
