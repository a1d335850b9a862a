"""The catalogue's everyday jobs, shared by its API, its dashboard page and ``vendctl``: a page of products,
adding and changing one with its names in each language, and the CSV a spreadsheet reads and writes. Every
change is audited in the caller's transaction; any bad field or row raises ``StockError`` naming it before
the transaction commits, so nothing is half-written."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import sqlalchemy as sa

from cloud.catalog import names as names_
from cloud.catalog import products as catalog
from cloud.catalog.common import StockError
from cloud.core.money import EXPONENT, parse_amount, plain_amount
from cloud.people import audit

PAGE = 50
MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_CSV_ROWS = 10_000
REQUIRED = ("sku", "name", "cost", "price", "currency")
OPTIONAL = ("barcode", "shelf_life_days", "reorder_level")


def name_column(lang: str) -> str:
    """The CSV column of the name in ``lang``: ``name_zh-CN``."""
    return f"name_{lang}"


def columns() -> list[str]:
    """The CSV's columns, in the order an export writes them."""
    return [*REQUIRED, *OPTIONAL, *(name_column(lang) for lang in names_.other_languages())]


def public(conn: sa.Connection, row) -> dict:
    """A product as the API gives it, with its names in the other languages."""
    return {**catalog.public(row), "names": names_.names_of(conn, [row.id])[row.id]}


def page(conn: sa.Connection, search: str = "", after: str = "", limit: int = PAGE) -> tuple[list, str | None]:
    """Up to ``limit`` products by SKU after the SKU ``after``, matching ``search`` (part of a SKU or a
    name in any language, or a whole barcode); and the SKU to continue after, or None on the last page."""
    q = catalog._query().order_by(catalog.products.c.sku).limit(limit + 1)
    if search:
        like = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        p = catalog.products
        named = sa.select(names_.product_names.c.product_id).where(
            sa.func.lower(names_.product_names.c.name).like(like, escape="\\"))
        q = q.where(sa.or_(sa.func.lower(p.c.sku).like(like, escape="\\"),
                           sa.func.lower(p.c.name).like(like, escape="\\"),
                           p.c.id.in_(named), catalog.product_details.c.barcode == search.strip()))
    if after:
        q = q.where(catalog.products.c.sku > after)
    rows = list(conn.execute(q))
    return rows[:limit], rows[limit - 1].sku if len(rows) > limit else None


def add(conn: sa.Connection, caller, values: dict, names: dict, now: datetime) -> int:
    """A new product (``values``: the fields of ``catalog.add_product``) with its names; 409 if the SKU is taken."""
    names = names_.clean(names)
    product_id = catalog.add_product(conn, values.get("sku"), values.get("name"), values.get("cost"),
                                     values.get("price"), values.get("currency"), now, values.get("barcode"),
                                     values.get("shelf_life_days"), values.get("reorder_level", 0))
    names_.set_names(conn, product_id, names, now)
    audit.record(conn, caller, "product.add", "product", product_id, public(conn, catalog.get_product(conn, product_id)),
                 now)
    return product_id


def change(conn: sa.Connection, caller, product_id: int, changes: dict, names: dict, now: datetime) -> dict:
    """Change a product's fields and names; {field: [old, new]} of what changed (names as ``names.zh-CN``)."""
    names = names_.clean(names)
    diff = catalog.update_product(conn, product_id, changes, now) if changes else {}
    if not changes:
        catalog.get_product(conn, product_id)  # 404 for a product not there, as a change of fields says
    diff.update({f"names.{lang}": pair for lang, pair in names_.set_names(conn, product_id, names, now).items()})
    if diff:
        audit.record(conn, caller, "product.change", "product", product_id, diff, now)
    return diff


# -- CSV -------------------------------------------------------------------------------------------------

def export_csv(conn: sa.Connection) -> str:
    """Every product as the CSV ``import_csv`` reads back to the same catalogue: money as plain amounts
    (12.50), a product not described yet with its cost, price and currency empty."""
    rows = catalog.list_products(conn)
    named = names_.names_of(conn, [r.id for r in rows])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns())
    for r in rows:
        money = (lambda v, c=r.currency: plain_amount(v, c)) if r.currency else (lambda v: "")  # noqa: E731
        writer.writerow([r.sku, r.name, money(r.cost), money(r.price), r.currency or "", r.barcode or "",
                         r.shelf_life_days or "", r.reorder_level or 0,
                         *(named[r.id].get(lang, "") for lang in names_.other_languages())])
    return out.getvalue()


def _read(data: bytes) -> list[dict]:
    if len(data) > MAX_CSV_BYTES:
        raise StockError("file", f"a CSV of at most {MAX_CSV_BYTES // 1024 // 1024} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise StockError("file", f"not UTF-8 text (byte {e.start + 1}): save the sheet as CSV UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in reader.fieldnames or []]
    except csv.Error as e:
        raise StockError("line 1", f"is not CSV: {e}") from None
    if not header:
        raise StockError("file", "is empty: the first line names the columns, " + ", ".join(columns()))
    unknown = [h for h in header if h not in columns()]
    if unknown:
        raise StockError("file", f"unknown column {unknown[0]!r}: the columns are " + ", ".join(columns()))
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise StockError("file", "needs the columns " + ", ".join(missing))
    if len(set(header)) != len(header):
        raise StockError("file", "names a column twice")
    reader.fieldnames = header
    rows = []
    try:
        for row in reader:
            if None in row:
                raise StockError(f"line {reader.line_num}", "has more cells than the header has columns")
            if any((v or "").strip() for v in row.values()):
                rows.append((reader.line_num, row))
            if len(rows) > MAX_CSV_ROWS:
                raise StockError("file", f"at most {MAX_CSV_ROWS} products in one import")
    except csv.Error as e:
        raise StockError(f"line {reader.line_num}", f"is not CSV: {e}") from None
    return rows


def _row(line: int, row: dict) -> tuple[str, dict, dict]:
    """(sku, fields, names) of one CSV row, or StockError naming its line and column."""
    def cell(column):
        return (row.get(column) or "").strip()

    def fail(column, message):
        return StockError(f"line {line}, {column}", message)

    sku, fields = cell("sku"), {"name": cell("name")}
    if not sku:
        raise fail("sku", "is empty")
    currency = cell("currency")
    if currency or cell("cost") or cell("price"):
        fields["currency"] = currency
        if len(currency) != 3 or not currency.isupper() or not currency.isalpha():
            raise fail("currency", f"{currency!r} is not an ISO 4217 code like CNY")
        for column in ("cost", "price"):
            try:
                fields[column] = parse_amount(cell(column), currency, zero=True)
            except ValueError as e:
                raise fail(column, str(e)) from None
    if "barcode" in row:
        fields["barcode"] = cell("barcode") or None
    for column, empty in (("shelf_life_days", None), ("reorder_level", 0)):
        if column in row:
            value = cell(column)
            if value and not (value.isascii() and value.isdigit() and len(value) <= 6):
                raise fail(column, f"{value!r} is not a whole number of "
                                   + ("days" if column == "shelf_life_days" else "units"))
            fields[column] = int(value) if value else empty
    if "currency" not in fields:  # a product not described yet, as an export writes it: only its names
        fields = {k: v for k, v in fields.items() if k == "name" or v not in (None, 0)}
    names = {lang: cell(name_column(lang)) for lang in names_.other_languages() if name_column(lang) in row}
    return sku, fields, names


def import_csv(conn: sa.Connection, caller, data: bytes, now: datetime) -> dict:
    """Add the products a CSV names and change those it changes, all or none; a row that matches the
    catalogue already changes nothing, so importing the same file twice is safe. A bad cell raises
    StockError naming its line and column (the transaction then rolls back)."""
    rows = _read(data)
    seen: dict[str, int] = {}
    added, updated, unchanged = [], [], 0
    for line, row in rows:
        sku, fields, names = _row(line, row)
        if sku in seen:
            raise StockError(f"line {line}, sku", f"{sku!r} is on line {seen[sku]} already")
        seen[sku] = line
        try:
            existing = conn.execute(sa.select(catalog.products.c.id).where(catalog.products.c.sku == sku)).scalar()
            if existing is None:
                if "cost" not in fields:
                    raise StockError("cost", "needed for a new product (with price and currency)")
                add(conn, caller, {"sku": sku, **fields}, names, now)
                added.append(sku)
            elif change(conn, caller, existing, fields, names, now):
                updated.append(sku)
            else:
                unchanged += 1
        except StockError as e:
            field = e.field if not e.field.startswith("names.") else name_column(e.field[6:])
            raise StockError(f"line {line}, {field}", str(e).split(": ", 1)[-1], e.status) from None
    return {"products": len(rows), "added": len(added), "updated": len(updated), "unchanged": unchanged,
            "added_skus": added, "updated_skus": updated}


def minor_units(text: str, currency: str, field: str) -> int:
    """An amount a person typed (12.50) in the currency's minor units (1250), or StockError naming ``field``."""
    if currency not in EXPONENT and not (len(currency) == 3 and currency.isalpha() and currency.isupper()):
        raise StockError("currency", f"{currency!r} is not an ISO 4217 code like CNY")
    try:
        return parse_amount(text, currency, zero=True)
    except ValueError as e:
        raise StockError(field, str(e)) from None
