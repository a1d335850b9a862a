"""Dashboard: the product catalogue. A page of products found by SKU, name or barcode; a product's form (cost,
price, barcode, shelf life, reorder level, its name in each language, its picture); the catalogue as CSV
and a CSV imported all rows or none. The pages call the functions the API calls (``cloud/catalog/office.py``)
and audit every change the same way."""

from __future__ import annotations

from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from cloud import people
from cloud.catalog import names as names_
from cloud.catalog import office, pictures
from cloud.catalog import products as catalog
from cloud.catalog.common import StockError
from cloud.core.db import reader, utcnow
from cloud.core.money import plain_amount
from cloud.people import Caller
from cloud.people.auth import Gate, gate, staff_only
from cloud.web import i18n
from cloud.web.dashboard import add_page, dash
from cloud.web.pages import translator

router = APIRouter(include_in_schema=False)
add_page("/staff/products", "Products", people.CATALOG_READERS, order=35)
CURRENCIES = ("CNY", "HKD", "USD", "EUR", "GBP", "JPY", "SGD")
CLASH = "Someone changed the catalogue at the same moment; nothing was saved. Try again."
FIELDS = ("sku", "name", "currency", "cost", "price", "barcode", "shelf_life_days", "reorder_level")


def _labels(_) -> dict:
    labels = {"sku": _("SKU"), "name": _("Name"), "currency": _("Currency"), "cost": _("Cost"),
              "price": _("Price"), "barcode": _("Barcode"), "shelf_life_days": _("Shelf life (days)"),
              "reorder_level": _("Reorder level"), "picture": _("Picture"), "file": _("CSV file"),
              "product_id": _("Product")}
    for lang in names_.other_languages():
        labels[f"names.{lang}"] = _("Name in {language}", language=i18n.LANGUAGES[lang])
    return labels


def _message(_, e: StockError) -> str:
    """The error as the page says it: the field's label in the page's language, then what is wrong."""
    label = _labels(_).get(e.field, e.field)
    if e.field == "sku" and e.status == 409:
        return _("{field}: this SKU exists already; open that product from the list to change it.", field=label)
    return _("{field}: {problem}", field=label, problem=str(e).split(": ", 1)[-1])


def _said(_, e: StockError) -> str:
    return e.text if isinstance(e, Unreadable) else _message(_, e)


class Unreadable(StockError):
    """A form field a person typed that is not what it should be, said in the page's language."""

    def __init__(self, field: str, text: str):
        super().__init__(field, text)
        self.text = text


def _form_of(row=None, named: dict | None = None) -> dict:
    """The form's text fields for a product (empty for a new one)."""
    form = {k: "" for k in FIELDS}
    form["currency"] = "CNY"
    if row is not None:
        form.update(sku=row.sku, name=row.name, barcode=row.barcode or "",
                    shelf_life_days=str(row.shelf_life_days or ""), reorder_level=str(row.reorder_level or 0))
        if row.currency:
            form.update(currency=row.currency, cost=plain_amount(row.cost, row.currency),
                        price=plain_amount(row.price, row.currency))
    for lang in names_.other_languages():
        form[f"names.{lang}"] = (named or {}).get(lang, "")
    return form


def _values(_, form: dict, new: bool) -> tuple[dict, dict]:
    """The product's fields and names from the form's text, or Unreadable naming the field."""
    labels = _labels(_)
    currency = form["currency"].strip().upper()
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise Unreadable("currency", _("{field}: “{value}” is not a currency code like CNY.",
                                       field=labels["currency"], value=currency))
    values: dict = {"name": form["name"], "currency": currency, "barcode": form["barcode"].strip() or None}
    for field in ("cost", "price"):
        try:
            values[field] = office.minor_units(form[field], currency, field)
        except StockError:
            raise Unreadable(field, _("{field}: “{value}” is not an amount: write it like 10 or 10.50.",
                                      field=labels[field], value=form[field].strip())) from None
    for field, empty in (("shelf_life_days", None), ("reorder_level", 0)):
        text = form[field].strip()
        if text and not (text.isascii() and text.isdigit() and len(text) <= 6):
            raise Unreadable(field, _("{field}: “{value}” is not a whole number.", field=labels[field], value=text))
        values[field] = int(text) if text else empty
    if new:
        values["sku"] = form["sku"]
    names = {lang: form[f"names.{lang}"] for lang in names_.other_languages()}
    return values, names


async def _form(request: Request) -> dict:
    data = await request.form()
    keys = [*FIELDS, *(f"names.{lang}" for lang in names_.other_languages())]
    return {k: str(data.get(k, ""))[:200] for k in keys}


@router.get("/staff/products")
def products_page(request: Request, caller: Caller = Depends(staff_only(*people.CATALOG_READERS)),
                  g: Gate = Depends(gate)):
    """Products by SKU, 50 a page, found by part of a SKU or name (in any language) or a whole barcode."""
    q = request.query_params.get("q", "")[:80]
    after = request.query_params.get("after", "")[:40]
    notice = request.query_params.get("imported")
    return _list(request, caller, g, q, after, notice=notice)


def _list(request, caller, g, q="", after="", status_code=200, error=None, notice=None):
    _ = translator(request)
    lang = i18n.language_of(request)
    with reader(g.engine).connect() as conn:
        rows, next_after = office.page(conn, q, after)
        named = names_.names_of(conn, [r.id for r in rows])
    shown = [(r, named[r.id].get(lang, "")) for r in rows]
    nxt = "/staff/products?" + urlencode({"q": q, "after": next_after}) if next_after else None
    if notice:
        parts = notice.split("-")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            notice = _("Imported: {added} added, {updated} changed, {unchanged} unchanged.",
                       added=parts[0], updated=parts[1], unchanged=parts[2])
        else:
            notice = None
    return dash(request, caller, "dash_products.html", status_code, q=q, rows=shown, next_url=nxt, error=error,
                notice=notice, may_edit=caller.role in people.STOCK_EDITORS)


@router.get("/staff/products/export.csv")
def export_page(caller: Caller = Depends(staff_only(*people.CATALOG_READERS)), g: Gate = Depends(gate)):
    """The catalogue as the CSV the import reads (the API's ``GET /api/v1/products/export``)."""
    with reader(g.engine).connect() as conn:
        text = office.export_csv(conn)
    return Response(text.encode(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="products.csv"'})


@router.post("/staff/products/import")
async def import_page(request: Request, file: UploadFile | None = File(None),
                      caller: Caller = Depends(staff_only(*people.STOCK_EDITORS)), g: Gate = Depends(gate)):
    """A CSV from the page, imported all rows or none; a bad row is named above the list."""
    _ = translator(request)
    data = await file.read(office.MAX_CSV_BYTES + 1) if file is not None else b""
    try:
        if not data:
            raise StockError("file", "choose a CSV file")
        with g.engine.begin() as conn:
            done = office.import_csv(conn, caller, data, utcnow())
    except StockError as e:
        return _list(request, caller, g, status_code=e.status, error=_message(_, e))
    except sa.exc.IntegrityError:  # someone else added one of its SKUs or barcodes at the same moment
        return _list(request, caller, g, status_code=409, error=_(CLASH))
    return RedirectResponse(f"/staff/products?imported={done['added']}-{done['updated']}-{done['unchanged']}",
                            status_code=303)


def _product_page(request, caller, g, product_id: int | None, form: dict | None = None, errors=None,
                  status_code=200, notice=None):
    _ = translator(request)
    row = None
    if product_id is not None:
        with reader(g.engine).connect() as conn:
            try:
                row = catalog.get_product(conn, product_id)
            except StockError:
                return dash(request, caller, "dash_problem.html", 404, title=_("No such product"),
                            message=_("There is no product {id}.", id=product_id))
            named = names_.names_of(conn, [product_id])[product_id]
        form = form or _form_of(row, named)
    languages = [(lang, i18n.LANGUAGES[lang]) for lang in names_.other_languages()]
    currencies = CURRENCIES if (form or {}).get("currency", "CNY") in CURRENCIES else (*CURRENCIES, form["currency"])
    return dash(request, caller, "dash_product.html", status_code, row=row, form=form or _form_of(),
                errors=errors or {}, notice=notice, name_languages=languages, currencies=currencies,
                may_edit=caller.role in people.STOCK_EDITORS, max_kb=pictures.MAX_BYTES // 1024)


@router.get("/staff/products/new")
def new_product_page(request: Request, caller: Caller = Depends(staff_only(*people.STOCK_EDITORS)),
                     g: Gate = Depends(gate)):
    return _product_page(request, caller, g, None)


@router.post("/staff/products/new")
async def add_product(request: Request, caller: Caller = Depends(staff_only(*people.STOCK_EDITORS)),
                      g: Gate = Depends(gate)):
    """A new product from the form; a SKU or barcode that exists already is answered next to its field."""
    _ = translator(request)
    form = await _form(request)
    try:
        values, names = _values(_, form, new=True)
        with g.engine.begin() as conn:
            product_id = office.add(conn, caller, values, names, utcnow())
    except StockError as e:
        return _product_page(request, caller, g, None, form, {e.field: _said(_, e)}, e.status)
    except sa.exc.IntegrityError:
        return _product_page(request, caller, g, None, form, {"form": _(CLASH)}, 409)
    return RedirectResponse(f"/staff/products/{product_id}?saved=1", status_code=303)


@router.get("/staff/products/{product_id}")
def product_page(request: Request, product_id: int, caller: Caller = Depends(staff_only(*people.CATALOG_READERS)),
                 g: Gate = Depends(gate)):
    """One product's form (read only for a role that may not change it)."""
    _ = translator(request)
    notice = _("Saved.") if request.query_params.get("saved") else None
    return _product_page(request, caller, g, product_id, notice=notice)


@router.post("/staff/products/{product_id}")
async def save_product(request: Request, product_id: int,
                       caller: Caller = Depends(staff_only(*people.STOCK_EDITORS)), g: Gate = Depends(gate)):
    """The form saved: every field and name in one transaction, or nothing with the error at its field."""
    _ = translator(request)
    form = await _form(request)
    try:
        values, names = _values(_, form, new=False)
        with g.engine.begin() as conn:
            office.change(conn, caller, product_id, values, names, utcnow())
    except sa.exc.IntegrityError:
        return _product_page(request, caller, g, product_id, form, {"form": _(CLASH)}, 409)
    except StockError as e:
        if e.status == 404:
            return _product_page(request, caller, g, product_id)
        return _product_page(request, caller, g, product_id, form, {e.field: _said(_, e)}, e.status)
    return RedirectResponse(f"/staff/products/{product_id}?saved=1", status_code=303)


@router.post("/staff/products/{product_id}/picture")
async def upload_picture(request: Request, product_id: int, picture: UploadFile | None = File(None),
                         caller: Caller = Depends(staff_only(*people.STOCK_EDITORS)), g: Gate = Depends(gate)):
    """The product's picture for the menu: PNG, JPEG or WebP, judged by its first bytes."""
    _ = translator(request)
    data = await picture.read(pictures.MAX_BYTES + 1) if picture is not None else b""
    problem = None
    if not data:
        problem = _("Picture: choose a file.")
    elif len(data) > pictures.MAX_BYTES:
        problem = _("Picture: at most {n} KB.", n=pictures.MAX_BYTES // 1024)
    elif pictures.kind_of(data) is None:
        problem = _("Picture: not a PNG, JPEG or WebP picture.")
    with reader(g.engine).connect() as conn:
        try:
            sku = catalog.get_product(conn, product_id).sku
        except StockError:
            return _product_page(request, caller, g, product_id)
    if problem:
        return _product_page(request, caller, g, product_id, errors={"picture": problem}, status_code=422)
    pictures.store(request.app.state.cloud.settings.var, sku, data)
    with g.engine.begin() as conn:
        people.audit.record(conn, caller, "product.picture", "product", sku, {"bytes": len(data)}, utcnow())
    return RedirectResponse(f"/staff/products/{product_id}?saved=1", status_code=303)
