"""A machine's name in each language the pages speak, stored as a product's is (``cloud/catalog/names.py``):
``machines.name`` is the name in the default language (the one on its SD card, in the API's reports and on
a page in a language it has no name in), ``machine_names`` one row per other language that has a name. A
language added to ``cloud/web/i18n.py`` gets a field on the machine's form and a name on its pages with no
change here. ``machines.get``, ``list_machines`` and ``search`` take the page's language and answer each
machine's ``name`` in it."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from cloud.fleet.machines import FleetError, get, machine_names, machines
from cloud.web.i18n import DEFAULT, LANGUAGES

MAX_NAME = 80
EDITABLE = ("name", "names")


def other_languages() -> list[str]:
    """The languages a machine may be named in besides the default one, in the pages' order."""
    return [lang for lang in LANGUAGES if lang != DEFAULT]


def check_name(name, field: str = "name") -> str:
    """A machine's name: printable text of 1-80 characters, stripped."""
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_NAME or not name.strip().isprintable():
        raise FleetError("{field} must be 1-{most} printable characters", field=field, most=MAX_NAME)
    return name.strip()


def check_names(names) -> dict[str, str]:
    """{language: name} checked: languages of the pages other than the default one; an empty name (or null)
    means "none in this language" and is kept as ""."""
    if not isinstance(names, dict):
        raise FleetError("names must be an object like {example}", example='{"zh-CN": "..."}')
    out = {}
    for lang, name in names.items():
        if lang not in other_languages():
            raise FleetError("names: {lang!r} is not a language of these pages: use one of {languages} ({default} "
                             "is the name itself)", lang=lang, languages=", ".join(other_languages()),
                             default=DEFAULT)
        out[lang] = "" if name is None or (isinstance(name, str) and not name.strip()) else \
            check_name(name, f"names.{lang}")
    return out


def names_of(conn: sa.Connection, machine_ids=None) -> dict[str, dict[str, str]]:
    """machine id -> {language: name} of the names it has besides the default one (every machine's if
    ``machine_ids`` is None)."""
    q = sa.select(machine_names.c.machine_id, machine_names.c.lang, machine_names.c.name)
    if machine_ids is not None:
        ids = sorted(set(machine_ids))
        q = q.where(machine_names.c.machine_id.in_(ids))
    out: dict[str, dict[str, str]] = {i: {} for i in (machine_ids or ())}
    for machine_id, lang, name in conn.execute(q):
        out.setdefault(machine_id, {})[lang] = name
    return out


def rename(conn: sa.Connection, machine_id: str, changes: dict, now: datetime) -> dict:
    """Change a machine's name and its names per language (``EDITABLE``; a language set to "" or null loses
    its name); {field: [old, new]} of what changed (``names`` per language). FleetError naming the field;
    nothing is written unless all of it is right."""
    if not isinstance(changes, dict):
        raise FleetError("the body must be an object with name and names")
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise FleetError("unknown field {field!r}: a machine's names are {fields}", field=unknown[0],
                         fields=", ".join(EDITABLE))
    row = get(conn, machine_id)
    name = check_name(changes["name"]) if changes.get("name") is not None else row.name
    names = check_names(changes["names"]) if changes.get("names") is not None else {}
    diff = {}
    if name != row.name:
        conn.execute(machines.update().where(machines.c.id == machine_id).values(name=name))
        diff["name"] = [row.name, name]
    before = names_of(conn, [machine_id])[machine_id]
    for lang, new in sorted(names.items()):
        old = before.get(lang, "")
        if old == new:
            continue
        diff[f"names.{lang}"] = [old, new]
        where = sa.and_(machine_names.c.machine_id == machine_id, machine_names.c.lang == lang)
        if not new:
            conn.execute(machine_names.delete().where(where))
        elif old:
            conn.execute(machine_names.update().where(where).values(name=new, updated_at=now))
        else:
            conn.execute(machine_names.insert().values(machine_id=machine_id, lang=lang, name=new, updated_at=now))
    return diff


def public(conn: sa.Connection, machine_id: str) -> dict:
    """The machine's names as the API shows them: ``name`` (the default) and ``names`` per language."""
    return {"id": machine_id, "name": get(conn, machine_id).name, "names": names_of(conn, [machine_id])[machine_id]}
