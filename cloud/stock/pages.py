"""Dashboard: the warehouse and its alerts, pick lists, and purchase orders from draft to received. The
pages call the service functions the stock API calls (``cloud/stock/routes.py``) and audit every change
the same way, each in its own transaction."""

from __future__ import annotations

import os
import re
from datetime import date
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse

from cloud.web import i18n
from cloud.fleet import machines
from cloud.core import money
from cloud import people
from cloud.people import Caller, staff as staff_
from cloud.people.auth import Gate, gate
from cloud.web.pages import translator
from cloud.stock import book, picking, purchasing
from cloud.catalog import products as catalog
from cloud.catalog.common import StockError
from cloud.stock.office import own_supplier, record_confirmation, today_of
from cloud.web import charts
from cloud.web.dashboard import CHOICES_MAX, add_page, dash
from cloud.people.auth import staff_only

router = APIRouter(include_in_schema=False)
add_page("/staff/stock", "Stock", people.STOCK_READERS, order=30)
add_page("/staff/pick-lists", "Pick lists", people.PICKERS, order=40)
add_page("/staff/purchase-orders", "Purchase orders", people.PO_READERS, order=50)
# What a purchase order's state is called on the page (the code stays in the class, for styling and tests).
STATUS_NAMES = {purchasing.DRAFT: "Draft", purchasing.SENT: "Sent", purchasing.PARTLY: "Partly received",
                purchasing.RECEIVED: "Received", purchasing.CANCELLED: "Cancelled"}
MACHINES_PAGE = 50  # machines per page of the stock page's fill chart and slots (2,000 machines: 40 pages)
SHORT_LIST = 20  # slots named under "slots under a quarter of par"; the rest are counted (the pick lists have them)
LINES = 5  # empty line rows on the new-order form; a row left empty is skipped


@router.get("/staff/stock")
def stock_page(request: Request, caller: Caller = Depends(staff_only(*people.STOCK_READERS)), g: Gate = Depends(gate)):
    """The warehouse valued at cost with its lots, the alerts (``SHORT_LIST`` slots named, the rest counted),
    and how full the machines are, ``MACHINES_PAGE`` machines a page with their slots."""
    _ = translator(request)
    today = today_of(g)
    with g.engine.begin() as conn:
        warehouse = book.warehouse(conn, today)
        alerts = picking.alerts(conn, today)
        per_machine = machines.shortfalls(conn, 1.0)  # the units and room of each machine, summed in SQL
        pages = max(1, -(-len(per_machine) // MACHINES_PAGE))
        text = request.query_params.get("page", "")
        page = min(int(text) if text.isdigit() and 0 < len(text) < 6 and int(text) > 0 else 1, pages)
        fill = [(m, f["count"], f["capacity"], round(100 * f["count"] / f["capacity"]) if f["capacity"] else 0)
                for m, f in sorted(per_machine.items())][(page - 1) * MACHINES_PAGE:page * MACHINES_PAGE]
        menus = machines.menus(conn, [m for m, *_rest in fill])
    totals: dict[str, int] = {}
    for r in warehouse:
        totals[r["currency"]] = totals.get(r["currency"], 0) + r["value"]
    slots = sorted(({"machine_id": m, "slot": r.slot, "name": r.name, "count": r.count, "capacity": r.capacity}
                    for m, menu in menus.items() for r in menu),
                   key=lambda s: (s["count"] / s["capacity"] if s["capacity"] else 0.0, s["machine_id"], s["slot"]))
    lang = i18n.language_of(request)
    svg = charts.bar_chart([charts.Bar(m, pct) for m, _u, _r, pct in fill], _("Fill per machine"),
                           _("Units in the slots as a share of their capacity."),
                           fmt=lambda v: f"{i18n.number(v, lang)}%", horizontal=True, empty=_("No machines."))
    return dash(request, caller, "dash_stock.html", warehouse=warehouse, totals=sorted(totals.items()),
                alerts=alerts, slots=slots, fill=fill, fill_svg=svg, today=today, page=page, pages=pages,
                short_list=SHORT_LIST, machines=len(per_machine),
                prev_url=f"/staff/stock?page={page - 1}#fill" if page > 1 else None,
                next_url=f"/staff/stock?page={page + 1}#fill" if page < pages else None)


@router.get("/staff/pick-lists")
def pick_lists_page(request: Request, route: str = "", machine: str = "",
                    caller: Caller = Depends(staff_only(*people.PICKERS)), g: Gate = Depends(gate)):
    """Choose a route or a machine; see what to pick, with a link to the page to print."""
    _ = translator(request)
    error = field = None
    result = printable = title = None
    with g.engine.begin() as conn:
        today_routes = picking.day_routes(conn, today_of(g), i18n.language_of(request))  # first in the menu
        driven = {r["id"] for r in today_routes}
        routes = [r for r in picking.list_routes(conn) if r["id"] not in driven]
        fleet = [(m.id, m.name or m.id) for m in machines.list_machines(conn, i18n.language_of(request))
                 if m.retired_at is None]
        fleet = fleet if len(fleet) <= CHOICES_MAX else None  # typed, not chosen from a list
        try:
            if route:
                if not route.isdigit():
                    raise StockError("route", "not a route")
                result = picking.route_pick_list(conn, int(route), today_of(g))
                printable = f"/api/v1/routes/{int(route)}/pick-list?format=html"
                title = _("Route {name}", name=result["route"]["name"])
            elif machine:
                result = picking.pick_list(conn, [machine], today_of(g))
                printable = f"/api/v1/machines/{quote(machine, safe='')}/pick-list?format=html"
                title = _("Machine {id}", id=machine)
        except StockError:
            field = "route" if route else "machine"
            error = _("Route: there is no such route.") if route else _("Machine: there is no such machine.")
    return dash(request, caller, "dash_pick.html", 404 if error else 200, routes=routes, machines=fleet,
                today_routes=today_routes,
                form={"route": route, "machine": machine}, error=error, error_field=field, p=result,
                printable=printable, title=title)


# -- purchase orders ---------------------------------------------------------------------------------

def _order_form(g: Gate) -> dict:
    with g.engine.begin() as conn:
        every = catalog.list_products(conn)
        # A product with no cost yet cannot be ordered; the form says how many and where to give them one.
        return {"suppliers": [(s.id, s.name) for s in staff_.list_suppliers(conn)],
                "products": [p for p in every if p.currency is not None],
                "uncosted": sum(1 for p in every if p.currency is None)}


def _orders_page(request: Request, caller: Caller, g: Gate, status_code: int = 200, error: str | None = None,
                 field: str | None = None, form: dict | None = None):
    with g.engine.begin() as conn:
        orders = purchasing.list_orders(conn, own_supplier(caller))
    can_edit = caller.role in people.STOCK_EDITORS
    form = form or {"supplier": "", "currency": "CNY", "expected_on": "", "note": "",
                    "lines": [{"product": "", "quantity": "", "unit_cost": ""} for _ in range(LINES)]}
    return dash(request, caller, "dash_po_list.html", status_code, status_names=STATUS_NAMES, orders=orders,
                can_edit=can_edit, form=form, error=error, error_field=field, **(_order_form(g) if can_edit else {}))


@router.get("/staff/purchase-orders")
def orders_page(request: Request, caller: Caller = Depends(staff_only(*people.PO_READERS)), g: Gate = Depends(gate)):
    """Purchase orders, newest first (a supplier: its own), and the form for a new one."""
    return _orders_page(request, caller, g)


@router.post("/staff/purchase-orders")
async def create_order(request: Request, caller: Caller = Depends(staff_only(*people.STOCK_EDITORS)),
                       g: Gate = Depends(gate)):
    """A draft order from the form; bad input: the form again with the field named and the values kept."""
    _ = translator(request)
    data = await request.form()
    form = {k: str(data.get(k, "")).strip() for k in ("supplier", "currency", "expected_on", "note")}
    form["lines"] = [{k: str(data.get(f"{k}_{i}", "")).strip() for k in ("product", "quantity", "unit_cost")}
                     for i in range(LINES)]
    try:
        supplier_id, lines = _parse_order(_, form)
        now = g.now()
        with g.engine.begin() as conn:
            po_id = purchasing.create(conn, supplier_id, form["currency"], lines, now, caller.user_id,
                                      form["expected_on"] or None, form["note"])
            po = purchasing.get(conn, po_id)
            people.audit.record(conn, caller, "po.create", "purchase_order", po_id,
                                {"supplier_id": supplier_id, "lines": lines, "total": po["total"]}, now)
    except StockError as e:
        return _orders_page(request, caller, g, e.status if e.status != 404 else 422, _field_error(_, e),
                            e.field, form)
    return RedirectResponse(f"/staff/purchase-orders/{po_id}?done=created", status_code=303)


def _parse_order(_, form: dict) -> tuple[int, list[dict]]:
    """The supplier and lines typed in the form, as ``purchasing.create`` takes them (money in minor units)."""
    if not form["supplier"].isdigit():
        raise StockError("supplier", _("choose one"))
    lines = []
    for i, line in enumerate(form["lines"]):
        if not any(line.values()):
            continue
        if not line["product"].isdigit():
            raise StockError(f"product_{i}", _("choose one"))
        if not line["quantity"].isdigit():
            raise StockError(f"quantity_{i}", _("must be a whole number of units"))
        out = {"product_id": int(line["product"]), "quantity": int(line["quantity"])}
        if line["unit_cost"]:
            try:
                out["unit_cost"] = money.parse_amount(line["unit_cost"], form["currency"])
            except ValueError:
                raise StockError(f"unit_cost_{i}", _("write it like 10 or 10.50")) from None
        lines.append(out)
    if not lines:
        raise StockError("product_0", _("give at least one line"))
    return int(form["supplier"]), lines


def _field_error(_, e: StockError) -> str:
    """What went wrong, in the reader's language, naming the field; the service's own words after it."""
    index = ""
    if e.field.startswith("lines."):
        parts = e.field.split(".")
        index, name = parts[1], parts[2] if len(parts) > 2 else "lines"
        name = {"product_id": "product", "line_id": "quantity"}.get(name, name)
        e.field = f"{name}_{index}"
    else:
        match = re.fullmatch(r"(.*)_(\d+)", e.field)
        name, index = match.groups() if match else (e.field, "")
    labels = {"supplier": _("Supplier"), "supplier_id": _("Supplier"), "currency": _("Currency"),
              "expected_on": _("Expected on"), "note": _("Note"), "product": _("Product"),
              "quantity": _("Quantity"), "unit_cost": _("Unit cost"), "reason": _("Reason"),
              "key": _("Receipt", context="goods"), "status": _("Status"), "lines": _("Lines"),
              "expires_on": _("Expires on")}
    label = labels.get(name, name)
    if index != "":
        label = _("{field} on line {n}", field=label, n=int(index) + 1)
    detail = str(e).partition(": ")[2]
    return _("{field}: {problem}", field=label, problem=detail)


def _order_page(request: Request, caller: Caller, g: Gate, po_id: int, status_code: int = 200,
                error: str | None = None, field: str | None = None, done: str = ""):
    _ = translator(request)
    try:
        with g.engine.begin() as conn:
            po = purchasing.get(conn, po_id, own_supplier(caller))
    except StockError:
        return dash(request, caller, "dash_problem.html", 404, title=_("No such purchase order"),
                    message=_("There is no purchase order {id}.", id=po_id))
    editor = caller.role in people.STOCK_EDITORS
    status = po["status"]
    nexts = purchasing.TRANSITIONS[status]
    actions = {"send": editor and purchasing.SENT in nexts and status == purchasing.DRAFT,
               "confirm": caller.role in people.PO_CONFIRMERS and status == purchasing.SENT
               and po["confirmed_at"] is None,
               "cancel": editor and purchasing.CANCELLED in nexts,
               "receive": editor and status in (purchasing.SENT, purchasing.PARTLY)}
    return dash(request, caller, "dash_po.html", status_code, status_names=STATUS_NAMES, po=po, actions=actions,
                error=error, error_field=field, done=done, key=os.urandom(12).hex())


@router.get("/staff/purchase-orders/{po_id}")
def order_page(request: Request, po_id: int, done: str = "", caller: Caller = Depends(staff_only(*people.PO_READERS)),
               g: Gate = Depends(gate)):
    """One order: its lines, what came, and the buttons for the steps it may take next."""
    return _order_page(request, caller, g, po_id, done=done)


def _step(request: Request, caller: Caller, g: Gate, po_id: int, action: str, change: dict, apply, done: str):
    """A transition as the API's ``_transition`` makes it: applied and audited in one transaction."""
    _ = translator(request)
    now = g.now()
    try:
        with g.engine.begin() as conn:
            before = purchasing.get(conn, po_id, own_supplier(caller))["status"]
            result = apply(conn, now)
            po = purchasing.get(conn, po_id)
            if result is not False:
                people.audit.record(conn, caller, action, "purchase_order", po_id,
                                    {"status": [before, po["status"]], **change}, now)
    except StockError as e:
        return _order_page(request, caller, g, po_id, e.status, _field_error(_, e), e.field)
    return RedirectResponse(f"/staff/purchase-orders/{po_id}?done={done}", status_code=303)


@router.post("/staff/purchase-orders/{po_id}/send")
def send_order(request: Request, po_id: int, caller: Caller = Depends(staff_only(*people.STOCK_EDITORS)),
               g: Gate = Depends(gate)):
    return _step(request, caller, g, po_id, "po.send", {}, lambda conn, now: purchasing.send(conn, po_id, now),
                 "sent")


@router.post("/staff/purchase-orders/{po_id}/cancel")
def cancel_order(request: Request, po_id: int, reason: str = Form(""),
                 caller: Caller = Depends(staff_only(*people.STOCK_EDITORS)), g: Gate = Depends(gate)):
    return _step(request, caller, g, po_id, "po.cancel", {"reason": reason},
                 lambda conn, now: purchasing.cancel(conn, po_id, reason, now), "cancelled")


@router.post("/staff/purchase-orders/{po_id}/confirm")
def confirm_order(request: Request, po_id: int, expected_on: str = Form(""),
                  caller: Caller = Depends(staff_only(*people.PO_CONFIRMERS)), g: Gate = Depends(gate)):
    _ = translator(request)
    expected = expected_on.strip() or None
    now = g.now()
    try:
        with g.engine.begin() as conn:
            record_confirmation(conn, caller, po_id, now, expected)
    except StockError as e:
        return _order_page(request, caller, g, po_id, e.status, _field_error(_, e), e.field)
    return RedirectResponse(f"/staff/purchase-orders/{po_id}?done=confirmed", status_code=303)


@router.post("/staff/purchase-orders/{po_id}/receive")
async def receive_order(request: Request, po_id: int, caller: Caller = Depends(staff_only(*people.STOCK_EDITORS)),
                        g: Gate = Depends(gate)):
    """Goods received once per the form's key: reloading or sending the form twice receives them once."""
    _ = translator(request)
    data = await request.form()
    key = str(data.get("key", ""))
    lines, positions = [], []
    try:
        with g.engine.begin() as conn:
            po = purchasing.get(conn, po_id)
        for i, line in enumerate(po["lines"]):
            qty = str(data.get(f"quantity_{line['line_id']}", "")).strip()
            if not qty or qty == "0":
                continue
            positions.append(i)
            if not qty.isdigit():
                raise StockError(f"lines.{len(lines)}.quantity", _("must be a whole number of units"))
            out = {"line_id": line["line_id"], "quantity": int(qty)}
            expires = str(data.get(f"expires_on_{line['line_id']}", "")).strip()
            if expires:
                out["expires_on"] = expires
            lines.append(out)
        if not lines:
            raise StockError("lines", _("give a quantity on at least one line"))
        now = g.now()
        with g.engine.begin() as conn:
            before = purchasing.get(conn, po_id)["status"]
            receipt_id, applied = purchasing.receive(conn, po_id, key, lines, now, caller.user_id,
                                                   data.get("allow_over") == "1", str(data.get("note", "")))
            lots = purchasing.receipt_lots(conn, receipt_id)
            after = purchasing.get(conn, po_id)
            if applied:
                people.audit.record(conn, caller, "po.receive", "purchase_order", po_id,
                                    {"key": key, "status": [before, after["status"]], "lots": lots}, now)
    except StockError as e:
        if e.field.startswith("lines.") and e.field.split(".")[1].isdigit() and positions:
            k = int(e.field.split(".")[1])
            e.field = ".".join(["lines", str(positions[k] if k < len(positions) else k), *e.field.split(".")[2:]])
        return _order_page(request, caller, g, po_id, e.status, _field_error(_, e), e.field)
    return RedirectResponse(f"/staff/purchase-orders/{po_id}?done={'received' if applied else 'already'}",
                            status_code=303)


# -- routes: machines in visiting order, the days driven, the day's routes ----------------------------------
add_page("/staff/routes", "Routes", people.PICKERS, order=41)
ROUTE_EDIT = people.STOCK_EDITORS
DAYS = (("1", "Mon"), ("2", "Tue"), ("3", "Wed"), ("4", "Thu"), ("5", "Fri"), ("6", "Sat"), ("7", "Sun"))


def _route_error(_, e: StockError) -> tuple[str, str]:
    """(form field, message) of a route the domain refused; a stop's error names its machine."""
    field = e.field.split(".")[0] if e.field.startswith("machines") else e.field
    return field, str(e).partition(": ")[2]  # the message without the API's field prefix


def _routes_page(request: Request, caller: Caller, g: Gate, status_code: int = 200, errors: dict | None = None,
                 form: dict | None = None):
    with g.engine.begin() as conn:
        routes = picking.list_routes(conn)
        fleet = [(m.id, m.name or m.id) for m in machines.list_machines(conn, i18n.language_of(request))
                 if m.retired_at is None]
    fleet = fleet if len(fleet) <= CHOICES_MAX else None  # typed, not chosen from a list
    return dash(request, caller, "dash_routes.html", status_code, routes=routes, machines=fleet, days=DAYS,
                errors=errors or {}, form=form or {"name": "", "machine": "", "weekdays": "1234567"},
                may_edit=caller.role in ROUTE_EDIT)


@router.get("/staff/routes")
def routes_page(request: Request, caller: Caller = Depends(staff_only(*people.PICKERS)), g: Gate = Depends(gate)):
    """Every route with its days and stops; the form to start a new one."""
    return _routes_page(request, caller, g)


@router.post("/staff/routes")
async def add_route_page(request: Request, caller: Caller = Depends(staff_only(*ROUTE_EDIT)),
                         g: Gate = Depends(gate)):
    """A new route (``POST /api/v1/routes``) with its first stop; the rest are added on its page."""
    _ = translator(request)
    raw = await request.form()
    form = {"name": str(raw.get("name", ""))[:100], "machine": str(raw.get("machine", ""))[:32],
            "weekdays": "".join(d for d, _n in DAYS if d in raw.getlist("day"))}
    now = g.now()
    try:
        if not form["weekdays"]:
            raise StockError("weekdays", _("Days: tick at least one day the route is driven."))
        if not form["machine"]:
            raise StockError("machines", _("First machine: choose one."))
        with g.engine.begin() as conn:
            route_id = picking.add_route(conn, form["name"], [form["machine"]], now, form["weekdays"])
            route = picking.get_route(conn, route_id)
            people.audit.record(conn, caller, "route.add", "route", route_id,
                                {"name": route["name"], "machines": route["machines"],
                                 "weekdays": route["weekdays"]}, now)
    except StockError as e:
        field, message = _route_error(_, e)
        return _routes_page(request, caller, g, e.status, {field: message}, form)
    return RedirectResponse(f"/staff/routes/{route_id}", status_code=303)


def _route_page(request: Request, caller: Caller, g: Gate, route_id: str, status_code: int = 200,
                errors: dict | None = None, notice: str | None = None):
    _ = translator(request)
    with g.engine.begin() as conn:
        try:
            route = picking.get_route(conn, int(route_id) if route_id.isdigit() and len(route_id) < 10 else -1)
        except StockError:
            return dash(request, caller, "dash_problem.html", 404, title=_("No such route"),
                        message=_("There is no route {id}.", id=route_id))
        every = machines.list_machines(conn, i18n.language_of(request))
    names = {m.id: m for m in every}
    stops = [{"id": m, "name": names[m].name if m in names else m,
              "retired": m in names and names[m].retired_at is not None} for m in route["machines"]]
    others = [(m.id, m.name or m.id) for m in every if m.retired_at is None and m.id not in route["machines"]]
    others = others if len(others) <= CHOICES_MAX else None  # typed, not chosen from a list
    return dash(request, caller, "dash_route.html", status_code, route=route, stops=stops, others=others,
                days=DAYS, errors=errors or {}, notice=notice, may_edit=caller.role in ROUTE_EDIT)


@router.get("/staff/routes/today")
def day_route_page(request: Request, day: str = "", caller: Caller = Depends(staff_only(*people.PICKERS)),
                   g: Gate = Depends(gate)):
    """The day's routes (today by default), each stop in order with a link to its pick list: the view a
    technician opens on the phone in the morning."""
    _ = translator(request)
    error = None
    when = today_of(g)
    if day:
        try:
            when = date.fromisoformat(day[:10])
        except ValueError:
            error = _("Day: “{value}” is not a date like 2026-12-07.", value=day[:20])
    with g.engine.begin() as conn:
        found = picking.day_routes(conn, when, i18n.language_of(request))
    return dash(request, caller, "dash_day_route.html", 422 if error else 200, routes=found, day=when,
                error=error, days=dict(DAYS))


@router.get("/staff/routes/{route_id}")
def route_page(request: Request, route_id: str, caller: Caller = Depends(staff_only(*people.PICKERS)),
               g: Gate = Depends(gate)):
    """One route: its stops in order, with up, down and remove buttons (no dragging: they work on a
    phone), a machine to add, its name and days."""
    return _route_page(request, caller, g, route_id[:12])


@router.post("/staff/routes/{route_id}")
async def edit_route_page(request: Request, route_id: str, caller: Caller = Depends(staff_only(*ROUTE_EDIT)),
                          g: Gate = Depends(gate)):
    """One change to a route (``PUT /api/v1/routes/{id}``), saved at once and audited: ``op`` is up:N,
    down:N, remove:N (N the stop's position from 0), add (the chosen ``machine`` at the end), or save (the
    name and days)."""
    _ = translator(request)
    raw = await request.form()
    op = str(raw.get("op", ""))[:20]
    which = int(route_id) if route_id.isdigit() and len(route_id) < 10 else -1
    now = g.now()
    try:
        with g.engine.begin() as conn:
            route = picking.get_route(conn, which)
            stops = list(route["machines"])
            name = weekdays = None
            verb, _sep, arg = op.partition(":")
            n = int(arg) if arg.isdigit() and int(arg) < len(stops) else None
            if verb in ("up", "down", "remove") and n is None:
                raise StockError("op", _("That stop is not on the route any more: reload the page."))
            if verb == "up" and n > 0:
                stops[n - 1], stops[n] = stops[n], stops[n - 1]
            elif verb == "down" and n < len(stops) - 1:
                stops[n + 1], stops[n] = stops[n], stops[n + 1]
            elif verb == "remove":
                if len(stops) == 1:
                    raise StockError("op", _("A route keeps at least one machine."))
                stops.pop(n)
            elif verb == "add":
                machine = str(raw.get("machine", ""))[:32]
                if not machine:
                    raise StockError("machine", _("Machine: choose one to add."))
                stops.append(machine)
            elif verb == "save":
                name = str(raw.get("name", ""))[:100]
                weekdays = "".join(d for d, _n in DAYS if d in raw.getlist("day"))
                if not weekdays:
                    raise StockError("weekdays", _("Days: tick at least one day the route is driven."))
            elif verb not in ("up", "down"):
                raise StockError("op", _("Use the page's buttons."))
            diff = picking.change_route(conn, which, name, stops if stops != route["machines"] else None, weekdays)
            if diff:
                people.audit.record(conn, caller, "route.change", "route", which, diff, now)
    except StockError as e:
        if e.status == 404 and e.field == "id":
            return _route_page(request, caller, g, route_id[:12])
        field, message = _route_error(_, e)
        field = "machine" if field == "machines" else field
        return _route_page(request, caller, g, route_id[:12], e.status, {field: message})
    return RedirectResponse(f"/staff/routes/{which}#stops", status_code=303)
