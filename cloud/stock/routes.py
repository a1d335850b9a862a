"""The stock API under /api/v1: products, purchase orders, the warehouse, movements, stock takes, routes,
pick lists and alerts. Who may call what is the table in ``cloud/stock/__init__.py``; every change is
audited in its own transaction."""

from __future__ import annotations

from datetime import date, datetime, timezone

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt

from cloud import people
from cloud.web.pages import printable
from cloud.people import Caller, require
from cloud.people.auth import Gate, gate
from cloud.stock import book, picking, purchasing, takes
from cloud.catalog import names as catalog_names
from cloud.catalog import office as catalog_office
from cloud.catalog import products as catalog
from cloud.catalog.common import StockError

from cloud.stock.office import own_supplier, record_confirmation, today_of

router = APIRouter(prefix="/api/v1", tags=["stock"])

SUPPLIER = people.SUPPLIER


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewProduct(Body):
    sku: str
    name: str
    cost: StrictInt
    price: StrictInt
    currency: str
    barcode: str | None = None
    shelf_life_days: StrictInt | None = None
    reorder_level: StrictInt = 0
    names: dict[str, str] = {}  # the name in other languages: {"zh-CN": "可乐"}


class ProductChange(Body):
    name: str | None = None
    barcode: str | None = None
    cost: StrictInt | None = None
    price: StrictInt | None = None
    currency: str | None = None
    shelf_life_days: StrictInt | None = None
    reorder_level: StrictInt | None = None
    names: dict[str, str] | None = None  # only the languages given change; "" removes a name


class NewOrder(Body):
    supplier_id: StrictInt
    currency: str
    lines: list[dict]
    expected_on: date | None = None
    note: str = ""


class Receipt(Body):
    key: str
    lines: list[dict]
    allow_over: StrictBool = False
    note: str = ""


class Cancel(Body):
    reason: str


class Confirm(Body):
    expected_on: date | None = None


class NewTake(Body):
    key: str
    reason: str
    lines: list[dict]


class NewRoute(Body):
    name: str
    machines: list[str]
    weekdays: str | list[int] = picking.ALL_WEEK  # ISO days driven: "135" or [1, 3, 5]


class RouteChange(Body):
    name: str | None = None
    machines: list[str] | None = None
    weekdays: str | list[int] | None = None


def as_utc(t: datetime | None) -> datetime | None:
    return None if t is None else t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


# -- products ----------------------------------------------------------------------------------------

@router.get("/products")
def products(search: str | None = None, caller: Caller = Depends(require(*people.CATALOG_READERS)),
             g: Gate = Depends(gate)):
    """Every product, by SKU; ``search`` matches SKU or name (any case) or a whole barcode. ``names``: the
    product's name in each other language it has one in."""
    with g.engine.begin() as conn:
        rows = catalog.list_products(conn, search)
        named = catalog_names.names_of(conn, [r.id for r in rows])
        return [{**catalog.public(r), "names": named[r.id]} for r in rows]


@router.get("/products/export", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "the catalogue as CSV"}})
def export_products(caller: Caller = Depends(require(*people.CATALOG_READERS)), g: Gate = Depends(gate)):
    """The catalogue as CSV (sku, name, cost, price, currency, barcode, shelf_life_days, reorder_level and
    name_LANG per other language; money as plain amounts like 3.50): what ``POST /products/import`` reads."""
    with g.engine.begin() as conn:
        text = catalog_office.export_csv(conn)
    return Response(text.encode(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="products.csv"'})


@router.post("/products/import", openapi_extra={"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}}}}})
async def import_products(request: Request, caller: Caller = Depends(require(*people.STOCK_EDITORS)),
                          g: Gate = Depends(gate)):
    """Add or change products from a CSV (the body, as ``GET /products/export`` writes it), all rows or none:
    a bad cell is a 422 naming its line and column. Rows that match the catalogue change nothing, so the
    same file imported twice changes nothing the second time."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > catalog_office.MAX_CSV_BYTES:
            raise HTTPException(413, f"file: a CSV of at most {catalog_office.MAX_CSV_BYTES // 1024 // 1024} MB")
    return await run_in_threadpool(_import, g, caller, bytes(data))


def _import(g: Gate, caller: Caller, data: bytes) -> dict:
    now = g.now()
    try:
        with g.engine.begin() as conn:
            return catalog_office.import_csv(conn, caller, data, now)
    except StockError as e:
        raise e.http() from None
    except sa.exc.IntegrityError:  # another import or add made one of these SKUs or barcodes at the same moment
        raise HTTPException(409, "file: the catalogue changed while this file was imported; nothing was "
                                 "written: import it again") from None


@router.post("/products", status_code=201)
def add_product(body: NewProduct, caller: Caller = Depends(require(*people.STOCK_EDITORS)), g: Gate = Depends(gate)):
    """A new product. Money is in the currency's smallest unit; a barcode is EAN-13 or UPC-A; a SKU that
    exists already is a 409 (change it with PATCH)."""
    now = g.now()
    values = body.model_dump(exclude={"names"})
    try:
        with g.engine.begin() as conn:
            product_id = catalog_office.add(conn, caller, values, body.names, now)
            return catalog_office.public(conn, catalog.get_product(conn, product_id))
    except StockError as e:
        raise e.http() from None


@router.get("/products/{product_id}")
def product(product_id: int, caller: Caller = Depends(require(*people.CATALOG_READERS)), g: Gate = Depends(gate)):
    try:
        with g.engine.begin() as conn:
            return catalog_office.public(conn, catalog.get_product(conn, product_id))
    except StockError as e:
        raise e.http() from None


@router.patch("/products/{product_id}")
def change_product(product_id: int, body: ProductChange, caller: Caller = Depends(require(*people.STOCK_EDITORS)),
                   g: Gate = Depends(gate)):
    """Change a product's name, names in other languages or details (not its SKU); a product a planogram
    made gets its details here."""
    changes = {k: getattr(body, k) for k in body.model_fields_set if k != "names"}
    names = body.names or {}
    if not changes and not names:
        raise HTTPException(422, "nothing to change: give name, names, barcode, cost, price, currency, "
                                 "shelf_life_days or reorder_level")
    now = g.now()
    try:
        with g.engine.begin() as conn:
            diff = catalog_office.change(conn, caller, product_id, changes, names, now)
            row = catalog_office.public(conn, catalog.get_product(conn, product_id))
    except StockError as e:
        raise e.http() from None
    return {**row, "changed": sorted(diff)}


# -- purchase orders ---------------------------------------------------------------------------------

@router.get("/purchase-orders")
def purchase_orders(status: str | None = None, limit: int = Query(100, ge=1, le=1000),
                    caller: Caller = Depends(require(*people.PO_READERS)), g: Gate = Depends(gate)):
    """Purchase orders, newest first; a supplier sees only those addressed to it."""
    try:
        with g.engine.begin() as conn:
            return purchasing.list_orders(conn, own_supplier(caller), status, limit)
    except StockError as e:
        raise e.http() from None


@router.post("/purchase-orders", status_code=201)
def create_order(body: NewOrder, caller: Caller = Depends(require(*people.STOCK_EDITORS)), g: Gate = Depends(gate)):
    """A draft purchase order: lines of {product_id, quantity, unit_cost (default: the product's cost)}."""
    now = g.now()
    try:
        with g.engine.begin() as conn:
            po_id = purchasing.create(conn, body.supplier_id, body.currency, body.lines, now, caller.user_id,
                                      body.expected_on, body.note)
            po = purchasing.get(conn, po_id)
            people.audit.record(conn, caller, "po.create", "purchase_order", po_id,
                                {"supplier_id": body.supplier_id, "lines": body.lines, "total": po["total"]}, now)
    except StockError as e:
        raise e.http() from None
    return po


@router.get("/purchase-orders/{po_id}")
def purchase_order(po_id: int, caller: Caller = Depends(require(*people.PO_READERS)), g: Gate = Depends(gate)):
    try:
        with g.engine.begin() as conn:
            return purchasing.get(conn, po_id, own_supplier(caller))
    except StockError as e:
        raise e.http() from None


def _transition(g: Gate, caller: Caller, po_id: int, action: str, change: dict, apply) -> dict:
    now = g.now()
    try:
        with g.engine.begin() as conn:
            before = purchasing.get(conn, po_id)["status"]
            apply(conn, now)
            po = purchasing.get(conn, po_id)
            people.audit.record(conn, caller, action, "purchase_order", po_id,
                                {"status": [before, po["status"]], **change}, now)
    except StockError as e:
        raise e.http() from None
    return po


@router.post("/purchase-orders/{po_id}/send")
def send_order(po_id: int, caller: Caller = Depends(require(*people.STOCK_EDITORS)), g: Gate = Depends(gate)):
    """Draft to sent; the lines cannot change after this."""
    return _transition(g, caller, po_id, "po.send", {}, lambda conn, now: purchasing.send(conn, po_id, now))


@router.post("/purchase-orders/{po_id}/cancel")
def cancel_order(po_id: int, body: Cancel, caller: Caller = Depends(require(*people.STOCK_EDITORS)),
                 g: Gate = Depends(gate)):
    """Cancel an order not yet received in full (a partly received one is closed short), with a reason."""
    return _transition(g, caller, po_id, "po.cancel", {"reason": body.reason},
                       lambda conn, now: purchasing.cancel(conn, po_id, body.reason, now))


@router.post("/purchase-orders/{po_id}/confirm")
def confirm_order(po_id: int, body: Confirm | None = None, caller: Caller = Depends(require(*people.PO_CONFIRMERS)),
                  g: Gate = Depends(gate)):
    """The supplier confirms a sent order, optionally with the delivery date it promises (staff may record
    a confirmation given by phone). Confirming again changes nothing."""
    expected_on = body.expected_on if body is not None else None
    now = g.now()
    try:
        with g.engine.begin() as conn:
            changed = record_confirmation(conn, caller, po_id, now, expected_on)
            po = purchasing.get(conn, po_id)
    except StockError as e:
        raise e.http() from None
    return {**po, "changed": changed}


@router.post("/purchase-orders/{po_id}/receive")
def receive_order(po_id: int, body: Receipt, caller: Caller = Depends(require(*people.STOCK_EDITORS)),
                  g: Gate = Depends(gate)):
    """Goods received into the warehouse as lots, once per ``key``: lines of {line_id or product_id,
    quantity, expires_on (default: today plus the shelf life), unit_cost (default: the order's)}. More
    than is due on a line is refused unless ``allow_over``."""
    now = g.now()
    try:
        with g.engine.begin() as conn:
            before = purchasing.get(conn, po_id)["status"]
            receipt_id, applied = purchasing.receive(conn, po_id, body.key, body.lines, now, caller.user_id,
                                                     body.allow_over, body.note)
            lots = purchasing.receipt_lots(conn, receipt_id)
            po = purchasing.get(conn, po_id)
            if applied:
                people.audit.record(conn, caller, "po.receive", "purchase_order", po_id,
                                    {"key": body.key, "status": [before, po["status"]], "lots": lots}, now)
    except StockError as e:
        raise e.http() from None
    return {"receipt_id": receipt_id, "applied": applied, "lots": lots, "purchase_order": po}


# -- the warehouse -----------------------------------------------------------------------------------

@router.get("/stock")
def stock(caller: Caller = Depends(require(*people.STOCK_READERS)), g: Gate = Depends(gate)):
    """The warehouse, valued at moving average cost, with lots FEFO; totals per currency; and what the
    book says is in the machines."""
    with g.engine.begin() as conn:
        rows = book.warehouse(conn, today_of(g))
        machines_ = book.in_machines(conn)
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["currency"]] = totals.get(r["currency"], 0) + r["value"]
    return {"warehouse": rows, "totals": [{"currency": c, "value": v} for c, v in sorted(totals.items())],
            "in_machines": machines_}


@router.get("/stock/movements")
def movements(product_id: int | None = None, kind: str | None = None, machine_id: str | None = None,
              since: datetime | None = None, until: datetime | None = None,
              before: int | None = Query(None, description="only rows with a smaller id: the next page"),
              limit: int = Query(100, ge=1, le=1000),
              caller: Caller = Depends(require(*people.STOCK_READERS)), g: Gate = Depends(gate)):
    """Stock movements, newest first; ``since`` inclusive, ``until`` exclusive (UTC when no zone is given)."""
    since, until = as_utc(since), as_utc(until)
    if since is not None and until is not None and since >= until:
        raise HTTPException(422, "until: must be after since")
    if kind is not None and kind not in book.KINDS:
        raise HTTPException(422, f"kind: must be one of {', '.join(book.KINDS)}")
    with g.engine.begin() as conn:
        return book.list_movements(conn, product_id, kind, machine_id, since, until, before, limit)


@router.get("/stock/takes")
def stock_takes(limit: int = Query(50, ge=1, le=500), caller: Caller = Depends(require(*people.STOCK_READERS)),
                g: Gate = Depends(gate)):
    """Stock takes, newest first, each with its counts and variances."""
    with g.engine.begin() as conn:
        return takes.list_takes(conn, limit)


@router.post("/stock/takes", status_code=201)
def stock_take(body: NewTake, caller: Caller = Depends(require(*people.STOCK_EDITORS)), g: Gate = Depends(gate)):
    """Counted quantities in the warehouse, lines of {product_id, lot_id (optional), counted}; the variance
    against the book is applied as adjustments with the reason, once per ``key``."""
    now = g.now()
    try:
        with g.engine.begin() as conn:
            take_id, applied = takes.record(conn, body.key, body.lines, body.reason, now, caller.user_id)
            take = takes.get(conn, take_id)
            if applied:
                people.audit.record(conn, caller, "stock.take", "stock_take", take_id,
                                    {"key": body.key, "reason": take["reason"], "lines": take["lines"]}, now)
    except StockError as e:
        raise e.http() from None
    return {**take, "applied": applied}


@router.get("/stock/alerts")
def stock_alerts(slot_fraction: float = Query(0.25, gt=0, le=1), expiry_days: int = Query(7, ge=0, le=3650),
                 caller: Caller = Depends(require(*people.PICKERS)), g: Gate = Depends(gate)):
    """Slots under ``slot_fraction`` of par, products under their reorder level, lots expiring within
    ``expiry_days``."""
    with g.engine.begin() as conn:
        return picking.alerts(conn, today_of(g), slot_fraction, expiry_days)


# -- routes and pick lists ---------------------------------------------------------------------------

@router.get("/routes")
def routes_(caller: Caller = Depends(require(*people.PICKERS)), g: Gate = Depends(gate)):
    with g.engine.begin() as conn:
        return picking.list_routes(conn)


@router.post("/routes", status_code=201)
def add_route(body: NewRoute, caller: Caller = Depends(require(*people.STOCK_EDITORS)), g: Gate = Depends(gate)):
    """A route: a name and the machines in visiting order."""
    now = g.now()
    try:
        with g.engine.begin() as conn:
            route_id = picking.add_route(conn, body.name, body.machines, now, body.weekdays)
            route = picking.get_route(conn, route_id)
            people.audit.record(conn, caller, "route.add", "route", route_id,
                                {"name": route["name"], "machines": route["machines"],
                                 "weekdays": route["weekdays"]}, now)
    except StockError as e:
        raise e.http() from None
    return route


@router.put("/routes/{route_id}")
def change_route(route_id: int, body: RouteChange, caller: Caller = Depends(require(*people.STOCK_EDITORS)),
                 g: Gate = Depends(gate)):
    """Rename a route, replace its list of machines (in visiting order) or its weekdays; all or nothing."""
    now = g.now()
    try:
        with g.engine.begin() as conn:
            diff = picking.change_route(conn, route_id, body.name, body.machines, body.weekdays)
            if diff:
                people.audit.record(conn, caller, "route.change", "route", route_id, diff, now)
            route = picking.get_route(conn, route_id)
    except StockError as e:
        raise e.http() from None
    return {**route, "changed": sorted(diff)}


@router.get("/routes/today")
def day_routes(day: str = "", caller: Caller = Depends(require(*people.PICKERS)), g: Gate = Depends(gate)):
    """The routes driven on a day (``day``: 2026-12-07; today, UTC, by default), each with its stops in
    visiting order; what the pick list's Route menu offers first."""
    try:
        when = date.fromisoformat(day) if day else today_of(g)
    except ValueError:
        raise HTTPException(422, f"day: {day!r} is not a date like 2026-12-07") from None
    with g.engine.begin() as conn:
        return picking.day_routes(conn, when)


@router.get("/routes/{route_id}")
def one_route(route_id: int, caller: Caller = Depends(require(*people.PICKERS)), g: Gate = Depends(gate)):
    """One route: its name, weekdays and machines in visiting order."""
    try:
        with g.engine.begin() as conn:
            return picking.get_route(conn, route_id)
    except StockError as e:
        raise e.http() from None


HTML = {200: {"content": {"application/json": {}, "text/html": {}}}}


@router.get("/routes/{route_id}/pick-list", responses=HTML)
def route_pick_list(request: Request, route_id: int, format: str = Query("json", pattern="^(json|html)$"),
                    caller: Caller = Depends(require(*people.PICKERS)), g: Gate = Depends(gate)):
    """What to load on the van and into each slot along the route; ``format=html`` gives a page to print
    (A4), in the reader's language or the one ``lang`` names (en, zh-CN)."""
    try:
        with g.engine.begin() as conn:
            result = picking.route_pick_list(conn, route_id, today_of(g))
    except StockError as e:
        raise e.http() from None
    if format == "html":
        return printable(request, "pick_list.html", p=result, title=result["route"]["name"])
    return result


@router.get("/machines/{machine_id}/pick-list", responses=HTML)
def machine_pick_list(request: Request, machine_id: str, format: str = Query("json", pattern="^(json|html)$"),
                      caller: Caller = Depends(require(*people.PICKERS)), g: Gate = Depends(gate)):
    """What to load into each slot of one machine."""
    try:
        with g.engine.begin() as conn:
            result = picking.pick_list(conn, [machine_id], today_of(g))
    except StockError as e:
        raise e.http() from None
    if format == "html":
        return printable(request, "pick_list.html", p=result, machine_id=machine_id)
    return result
