"""A product's name in each language the pages speak: ``products.name`` is the name in the default language
(and the one every machine, ledger and report knows), ``product_names`` holds one row per other language
that has a name. A language added to ``cloud/web/i18n.py`` gets a column in the CSV, a field on the form and
a name on the menu with no change here; a product with no name in it shows its default name."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

import sqlalchemy as sa

from cloud.catalog.common import StockError, text
from cloud.catalog.products import products
from cloud.core.db import UTCDateTime, metadata
from cloud.web.i18n import DEFAULT, LANGUAGES

product_names = sa.Table(
    "product_names", metadata,
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), primary_key=True, autoincrement=False),
    sa.Column("lang", sa.String(16), primary_key=True),  # a tag of i18n.LANGUAGES, like "zh-CN"
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

MAX_NAME = 80


def other_languages() -> list[str]:
    """The languages a product may be named in besides the default one, in the pages' order."""
    return [lang for lang in LANGUAGES if lang != DEFAULT]


def clean(names, field: str = "names") -> dict[str, str]:
    """{language: name} checked: known languages other than the default, printable names of 1-80
    characters; an empty name ("") means "none in this language" and is kept as ""."""
    if not isinstance(names, dict):
        raise StockError(field, "must be an object of language: name")
    out = {}
    for lang, name in names.items():
        if lang not in other_languages():
            raise StockError(f"{field}.{lang}", "is not a language of these pages: use one of "
                                                + ", ".join(other_languages()) + f" ({DEFAULT} is the name itself)")
        if name is None or (isinstance(name, str) and not name.strip()):
            out[lang] = ""
        else:
            out[lang] = text(name, f"{field}.{lang}", MAX_NAME, 1)
    return out


def names_of(conn: sa.Connection, product_ids) -> dict[int, dict[str, str]]:
    """product id -> {language: name} of the names it has besides the default one."""
    ids = sorted(set(product_ids))
    out: dict[int, dict[str, str]] = {i: {} for i in ids}
    if not ids:
        return out
    q = sa.select(product_names.c.product_id, product_names.c.lang, product_names.c.name)
    for chunk in range(0, len(ids), 500):
        for pid, lang, name in conn.execute(q.where(product_names.c.product_id.in_(ids[chunk:chunk + 500]))):
            out[pid][lang] = name
    return out


def set_names(conn: sa.Connection, product_id: int, names: dict[str, str], now: datetime) -> dict:
    """Write the names given (already ``clean``), "" removing one; {language: [old, new]} of what changed."""
    before = names_of(conn, [product_id])[product_id]
    diff = {}
    for lang, name in names.items():
        old = before.get(lang, "")
        if old == name:
            continue
        diff[lang] = [old, name]
        where = sa.and_(product_names.c.product_id == product_id, product_names.c.lang == lang)
        if not name:
            conn.execute(product_names.delete().where(where))
        elif old:
            conn.execute(product_names.update().where(where).values(name=name, updated_at=now))
        else:
            conn.execute(product_names.insert().values(product_id=product_id, lang=lang, name=name, updated_at=now))
    return diff


def name_in(lang: str | None):
    """A column for a query that joins ``products``: the product's name in ``lang``, or its default name
    where it has none in that language (join with ``join_names(lang)``)."""
    if not lang or lang == DEFAULT or lang not in LANGUAGES:
        return products.c.name.label("name")
    return sa.func.coalesce(_alias(lang).c.name, products.c.name).label("name")


def join_names(selectable, lang: str | None):
    """``selectable`` (which contains ``products``) outer-joined to the names in ``lang``, for ``name_in``."""
    if not lang or lang == DEFAULT or lang not in LANGUAGES:
        return selectable
    alias = _alias(lang)
    return selectable.outerjoin(alias, sa.and_(alias.c.product_id == products.c.id, alias.c.lang == lang))


@lru_cache(maxsize=None)  # one alias object per language, so the column and the join name the same one
def _alias(lang: str):
    return product_names.alias("name_in_" + lang.replace("-", "_").lower())
