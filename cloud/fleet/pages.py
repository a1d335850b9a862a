"""Dashboard: the fleet (its takings today and this week, every machine with its state, alerts, today's sales
and fill, the sales of the last seven days, the machines needing a visit, and a map) and one
machine (its screen as the cloud renders it, its slots, ledger events, config and the planogram editor).

The editor makes a new planogram version exactly as ``PUT /api/v1/machines/{id}/slots`` does (the same
``SlotSpec`` checks, ``machines.set_slots``, the same audit row, then ``publish_config``), and one version
per form: the form's key goes into the audit row, and a second submit of the same form finds it there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import time
from datetime import date, datetime, timedelta
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from protocol import token as qrtoken
from protocol.messages import CURRENCY_RE, SLOT_RE

from cloud import alerts as alert_book
from cloud.alerts import occurrences
from cloud.fleet import locations, machines, planogram
from cloud.fleet import names as machine_names
from cloud.fleet import ledger
from cloud.sales import orders, reports
from cloud.stock import book
from cloud import people
from cloud.core.db import reader, utcnow
from cloud.core.money import EXPONENT, parse_amount
from cloud.web import charts, i18n
from cloud.web.pages import csp_with_images, translator
from cloud.people import audit, auth
from cloud.web.dashboard import add_page, dash
from cloud.people.auth import staff_only
from cloud.fleet.draw import MAP_H, MAP_W, project, screen_svg

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
add_page("/staff", "Fleet", people.FLEET_READERS, order=10)
READ = Depends(staff_only(*people.FLEET_READERS))
EDIT = Depends(staff_only(*people.FLEET_EDITORS))
EVENTS_SHOWN = 50
SCREEN_ROTATE_S = 5.0  # the controller's default [screen] rotate_s; the cloud does not know a machine's own
FORM_FIELDS = ("slot", "sku", "name", "price", "currency", "capacity", "par", "cabinet")
ALERT_NAMES = alert_book.NAMES
WEEK_DAYS = 7  # the sales per machine per day go back this many days, today included
EXPIRY_DAYS = 3  # a lot in a machine expiring within this many days (or expired) calls for a visit
EXPIRING_SHOWN = 3  # lots named per machine in the visit list
FLEET_PAGE = 50  # machines per page of the fleet page's tables (a fleet of 2,000 is 40 pages, searched by id or name)
SHORT_LIST = 20  # machines named in the fleet page's visit and offline lists; the rest are counted
SITE_NAMED = 5  # machines named per place under the map; the rest are on the location's page


def the_cloud(request: Request):
    return request.app.state.cloud


def _fill(slots) -> tuple[int, int]:
    return sum(s.count for s in slots), sum(s.capacity for s in slots)


def _today(cloud, now: datetime) -> date:
    """The fleet's day now, in its zone (``--time-zone``)."""
    return now.astimezone(reports.zone(cloud.settings.time_zone)).date()


def _sales_today(conn: sa.Connection, cloud, now: datetime, machine_id: str | None = None) -> dict[str, list]:
    """{machine id: [(currency, count, net)]} of the sales since midnight in the fleet's zone (net of the
    refunds booked since), read from the reports' rollups as every report is (never a GROUP BY over the sales
    themselves)."""
    today = _today(cloud, now)
    q = reports.Query(conn, "machine", today.isoformat(), (today + timedelta(days=1)).isoformat(),
                      cloud.settings.time_zone, machine=machine_id, today=today)
    out: dict[str, list] = {}
    for r in reports.sales_report(conn, q)["rows"]:
        out.setdefault(r["key"], []).append((r["currency"], r["count"], r["net"]))
    return out


def _sums(cells: dict, days) -> list[tuple[str, int, int]]:
    """[(currency, count, amount)] of {(day, currency): [count, amount]} over ``days``, by currency."""
    total: dict[str, list[int]] = {}
    for (day, currency), (n, amount) in cells.items():
        if day in days:
            t = total.setdefault(currency, [0, 0])
            t[0] += n
            t[1] += amount
    return [(c, n, a) for c, (n, a) in sorted(total.items())]


def overview(cloud, conn: sa.Connection, now: datetime, rows, alerted: dict[str, int], shown: set[str]) -> dict:
    """The fleet page's figures: takings today and this week (since Monday) per currency, sales per machine
    on each of the last seven days (of the machines ``shown``), machines on line, open alerts, and the
    machines needing a visit (empty or low slots, lots expiring within ``EXPIRY_DAYS``). The sales come from
    the rollups (``reports.days_by_machine`` and the fleet's day report: items sold, money net of the refunds
    booked each day), expiry from the stock book. A retired machine's sales stay in the takings; it is
    neither online, offline nor to visit."""
    today = _today(cloud, now)
    days = [today - timedelta(days=i) for i in range(WEEK_DAYS - 1, -1, -1)]
    week = {d for d in days if d >= today - timedelta(days=today.weekday())}
    daily = reports.days_by_machine(conn, cloud.settings.time_zone, today, WEEK_DAYS, sorted(shown))
    short = machines.shortfalls(conn, cloud.settings.alert_low_stock_fraction)
    expiring = book.expiring_in_machines(conn, today, today + timedelta(days=EXPIRY_DAYS))
    # The fleet's days from the fleet's own totals (the day report), not by adding up every machine's.
    fleet_days = reports.sales_report(conn, reports.Query(conn, "day", days[0].isoformat(),
                                                          (today + timedelta(days=1)).isoformat(),
                                                          cloud.settings.time_zone, today=today))
    everything = {(date.fromisoformat(r["key"]), r["currency"]): [r["count"], r["net"]]
                  for r in fleet_days["rows"]}
    per_machine = []
    for m in rows:
        cells = daily.get(m.id, {})
        if m.id not in shown:
            continue
        counts = dict.fromkeys(days, 0)
        for (d, _c), (n, _a) in cells.items():
            counts[d] = counts.get(d, 0) + n
        per_machine.append({"m": m, "days": [counts[d] for d in days], "total": _sums(cells, set(days))})
    visits = []
    working = [m for m in rows if m.retired_at is None]
    for m in working:
        s = short.get(m.id, {})
        soon = expiring.get(m.id, [])
        if s.get("empty") or s.get("low") or soon:
            visits.append({"m": m, "empty": s.get("empty", 0), "low": s.get("low", 0),
                           "missing": s.get("missing", 0), "expiring": soon[:EXPIRING_SHOWN],
                           "more": max(0, len(soon) - EXPIRING_SHOWN)})
    visits.sort(key=lambda v: (-v["empty"], -len(v["expiring"]), -v["low"], v["m"].id))
    by_day = [(day, _sums(everything, {day})) for day in days]
    return {"today": _sums(everything, {today}), "week": _sums(everything, week), "week_from": min(week),
            "days": days, "today_day": today, "per_machine": per_machine, "by_day": by_day,
            "online": sum(1 for m in working if m.online), "offline": sum(1 for m in working if not m.online),
            "in_service": len(working), "retired": len(rows) - len(working),
            "alerts": sum(alerted.values()), "visits": visits, "fills": short,
            "sold": {m.id: [(c, n, a) for (d, c), (n, a) in sorted(daily.get(m.id, {}).items()) if d == today]
                     for m in rows if m.id in shown}}


def _day_chart(_, figures: dict, lang: str) -> list:
    """One column chart of the fleet's takings on each of the last seven days, per currency."""
    currencies = sorted({c for _day, sums in figures["by_day"] for c, _n, _a in sums})
    out = []
    for currency in currencies:
        bars = [charts.Bar(i18n.day_label(day, lang), next((a for c, _n, a in sums if c == currency), 0),
                           i18n.day_label(day, lang))
                for day, sums in figures["by_day"]]
        out.append(charts.bar_chart(bars, _("Takings per day ({currency})", currency=currency),
                                    _("The fleet's takings, net of refunds, on each of the last seven days, in {currency}.",
                                      currency=currency), fmt=lambda v, c=currency: i18n.money(int(v), c, lang)))
    return out


def _page_number(text: str) -> int:
    """The ``page`` query parameter: a page from 1; anything else is the first page."""
    return int(text) if text.isdigit() and 0 < len(text) < 6 and int(text) > 0 else 1


def _matches(m, q: str, offline: bool, named: set[str]) -> bool:
    """A machine the fleet table shows under the search ``q`` (in its id or its name in any language, any
    case; ``named``: the machines a name in another language matches); ``offline``: only a machine in service
    not on line (a retired machine is not offline)."""
    if offline and (m.online or m.retired_at is not None):
        return False
    return not q or m.id in named or any(q in (text or "").casefold() for text in (m.id, m.name, m.default_name))


@router.get("/staff")
def fleet_page(request: Request, caller: auth.Caller = READ, cloud=Depends(the_cloud)):
    """The fleet's figures, the machines needing a visit and those offline, then a page of the machines
    (``FLEET_PAGE`` at a time, searched by id or name) with where, state, alerts, today's sales, fill and the
    week's sales, and the map of the known places (on street tiles when the browser can load them). Whatever
    the size of the fleet, the page lists at most a page of machines and ``SHORT_LIST`` of each short list."""
    _ = translator(request)
    lang = i18n.language_of(request)
    now = utcnow()
    q = request.query_params.get("q", "")[:80].strip()
    offline = request.query_params.get("offline", "") == "1"
    cloud.alerter.refresh_if_idle()
    reports.count_new_refunds(cloud.engine)  # the refunds booked since the sweeper last looked
    with reader(cloud.engine).connect() as conn:
        rows = machines.list_machines(conn, lang)
        sites = locations.by_machine(conn)
        alerted = occurrences.unresolved_by_machine(conn)
        places = locations.list_locations(conn)
        named = machines.named_like(conn, q) if q else set()
        chosen = [m for m in rows if _matches(m, q.casefold(), offline, named)]
        pages = max(1, -(-len(chosen) // FLEET_PAGE))
        page = min(_page_number(request.query_params.get("page", "")), pages)
        shown = chosen[(page - 1) * FLEET_PAGE:page * FLEET_PAGE]
        ids = {m.id for m in shown}
        figures = overview(cloud, conn, now, rows, alerted, ids)
        found = occurrences.listing(conn, limit=100000, machine_ids=sorted(ids & alerted.keys()))
    by_machine: dict[str, list] = {}
    for a in found:
        by_machine.setdefault(a.machine_id, []).append(a)
    names = {m.id: m.name for m in rows}
    mapped = [dict(p, machines=[(i, names.get(i, i)) for i in p["machines"]],
                   fault=any(i in alerted for i in p["machines"])) for p in places if p["latitude"] is not None]
    placed = {i for p in mapped for i, _n in p["machines"]}
    fills = figures["fills"]
    site_names = {p["id"]: locations.name_in(p, lang) for p in places}
    for p in mapped:
        p["name"] = site_names[p["id"]]
    fleet = [{"m": m, "site": site_names.get(sites.get(m.id, {}).get("id")) or m.location,
              "alerts": by_machine.get(m.id, []),
              "sold": figures["sold"].get(m.id, []),
              "fill": (fills.get(m.id, {}).get("count", 0), fills.get(m.id, {}).get("capacity", 0))} for m in shown]
    week = figures["per_machine"]

    def link(n: int) -> str | None:
        if not 1 <= n <= pages or n == page:
            return None
        return "/staff?" + urlencode({k: v for k, v in (("q", q), ("offline", "1" if offline else ""),
                                                          ("page", n if n > 1 else "")) if v}) + "#machines"

    settings = cloud.settings
    response = dash(request, caller, "dash_fleet.html", fleet=fleet, week_rows=week, total=len(rows),
                    matched=len(chosen), page=page, pages=pages, prev_url=link(page - 1), next_url=link(page + 1),
                    q=q, offline_only=offline, offline=[m for m in rows if not m.online and m.retired_at is None],
                    short_list=SHORT_LIST, site_named=SITE_NAMED, site_ids=[p["id"] for p in mapped],
                    dots=project(mapped), map_w=MAP_W,
                    map_h=MAP_H, unplaced=sum(1 for m in rows if m.id not in placed and m.retired_at is None),
                    alert_names=ALERT_NAMES, figures=figures, day_charts=_day_chart(_, figures, lang),
                    expiry_days=EXPIRY_DAYS, tiles=settings.map_tiles, attribution=settings.map_attribution)
    response.headers["content-security-policy"] = csp_with_images(settings.map_tile_origin)
    return response


# -- one machine ---------------------------------------------------------------------------------------

def _current_vend(conn: sa.Connection, machine_id: str):
    """The order the machine is vending now, if any (read-only: orders has no query for it)."""
    o = orders.orders
    return conn.execute(sa.select(o.c.slot, o.c.status).where(o.c.machine_id == machine_id, o.c.status == "vending")
                        .order_by(o.c.updated_at.desc()).limit(1)).first()


def _recent_events(conn: sa.Connection, machine_id: str) -> list[dict]:
    rows = ledger.recent(conn, machine_id, EVENTS_SHOWN)
    return [{"seq": r.seq, "ts": _time(r.ts), "kind": r.kind, "data": _short(r.data)} for r in rows]


def _time(ts: str) -> datetime | None:
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def _short(data: str, limit: int = 80) -> str:
    try:
        obj = json.loads(data)
    except ValueError:
        return data[:limit]
    text = ", ".join(f"{k}={v}" for k, v in obj.items()) if isinstance(obj, dict) else str(obj)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def state_line(machine, vend, menu) -> str:
    """The screen's state line from what the cloud knows (the machine draws its own from its own state)."""
    if not machine.online:
        return "Offline - reconnecting"
    if vend is not None:
        item = next((s for s in menu if s.slot == vend.slot), None)
        return f"Dropping {item.name if item else 'your product'} from {vend.slot}..."
    flagged = [s.slot for s in menu if s.flagged]
    return "Ready" + (f" (out of service: {' '.join(flagged)})" if flagged else "")


def _editor_rows(menu) -> list[dict]:
    return [{"slot": s.slot, "sku": s.sku, "name": s.name, "price": _major(s.price, s.currency),
             "currency": s.currency, "capacity": str(s.capacity), "par": str(s.par_level),
             "cabinet": str(s.cabinet), "count": s.count} for s in menu]


def _major(amount: int, currency: str) -> str:
    """An amount as a person types it (3.50), without a currency sign or grouping."""
    exp = EXPONENT.get(currency, 2)
    major, minor = divmod(amount, 10**exp)
    return f"{major}.{minor:0{exp}d}" if exp else str(major)


def machine_page(request: Request, caller: auth.Caller, cloud, machine_id: str, status_code: int = 200,
                 form: list[dict] | None = None, errors: dict | None = None, saved: str = "",
                 names_form: dict | None = None, names_errors: dict | None = None, names_saved: bool = False):
    _ = translator(request)
    lang = i18n.language_of(request)
    now = utcnow()
    cloud.alerter.refresh_if_idle()
    reports.count_new_refunds(cloud.engine)  # today's sales are net of the refunds booked since the sweeper looked
    try:
        with reader(cloud.engine).connect() as conn:
            m = machines.get(conn, machine_id, lang)
            menu = machines.menu(conn, machine_id)
            where = locations.location_of(conn, machine_id)
            site = locations.public(locations.get(conn, where), names=locations.names_of(conn, where)) \
                if where is not None else None
            named = machine_names.names_of(conn, [machine_id])[machine_id]
            cabinets = machines.cabinets_of(conn, machine_id)
            config = planogram.status(conn, machine_id)
            found = occurrences.listing(conn, machine_id=machine_id)
            events = _recent_events(conn, machine_id)
            changes = ledger.changes(conn, machine_id)
            sold = _sales_today(conn, cloud, now, machine_id).get(machine_id, [])
    except machines.NoSuchMachine:
        return dash(request, caller, "dash_problem.html", 404, title=_("Unknown machine"),
                    message=_("There is no machine {id}.", id=machine_id))
    default_currency = menu[0].currency if menu else "CNY"
    rows = form if form is not None else _editor_rows(menu)
    if form is None:
        rows.append({"slot": "", "sku": "", "name": "", "price": "", "currency": default_currency, "capacity": "",
                     "par": "", "cabinet": str(cabinets[0].number if cabinets else 1), "count": None})
    applied_at = datetime.fromisoformat(config["applied_at"]) if config["applied_at"] else None
    grid = [(c, [s for s in menu if s.cabinet == c.number]) for c in cabinets]
    if names_form is None:
        names_form = {"name": m.default_name, **{"name_" + c: named.get(c, "") for c, _n in other_languages()}}
    return dash(request, caller, "dash_machine.html", status_code, m=m, grid=grid,
                site_name=locations.name_in(site, lang) if site else None, names_form=names_form,
                names_errors=names_errors or {}, languages_other=other_languages(), names_saved=names_saved,
                many_cabinets=len(cabinets) > 1, cabinets=cabinets, config=config, applied_at=applied_at, alerts=found,
                alert_names=ALERT_NAMES, events=events, ledger_changes=changes, sold=sold, fill=_fill(menu), rows=rows,
                errors=errors or {}, key=secrets.token_urlsafe(16),
                can_edit=caller.role in people.FLEET_EDITORS, saved=saved)


@router.get("/staff/machines/{machine_id}")
def machine_view(request: Request, machine_id: str, saved: str = "", named: str = "", caller: auth.Caller = READ,
                 cloud=Depends(the_cloud)):
    return machine_page(request, caller, cloud, machine_id, saved=saved if saved.isdigit() else "",
                        names_saved=named == "1")


@router.post("/staff/machines/{machine_id}/names")
async def machine_names_page(request: Request, machine_id: str, caller: auth.Caller = EDIT,
                             cloud=Depends(the_cloud)):
    """Save the machine's name and its names per language (``PATCH /api/v1/machines/{id}``), audited; the
    form kept with the error, in the page's language, if it is wrong."""
    _ = translator(request)
    raw = await request.form()
    form = {k: str(raw.get(k, ""))[:100].strip() for k in ("name", *("name_" + c for c, _n in other_languages()))}
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            diff = machine_names.rename(conn, machine_id[:32], {
                "name": form["name"], "names": {c: form["name_" + c] for c, _n in other_languages()}}, now)
            if diff:
                audit.record(conn, caller, "machine.rename", "machine", machine_id, diff, now)
    except machines.NoSuchMachine:
        return machine_page(request, caller, cloud, machine_id[:32])
    except machines.FleetError as e:
        field = _field_of(str(e), form)
        return machine_page(request, caller, cloud, machine_id[:32], 422, names_form=form,
                            names_errors={field if field in form else "name": e.said(_)})
    return RedirectResponse(f"/staff/machines/{quote(machine_id, safe='')}?named=1#names-form", status_code=303)


@router.get("/staff/machines/{machine_id}/screen.svg")
def machine_screen(request: Request, machine_id: str, caller: auth.Caller = READ, cloud=Depends(the_cloud)):
    """The machine's screen as the cloud draws it: the QR is a real token signed with the machine's secret."""
    _ = translator(request)
    with reader(cloud.engine).connect() as conn:
        try:
            m = machines.get(conn, machine_id)
        except machines.NoSuchMachine:
            return Response(status_code=404)
        vend = _current_vend(conn, machine_id)
        menu = machines.menu(conn, machine_id)
    token = qrtoken.make(m.id, m.secret.encode(), time.time(), SCREEN_ROTATE_S, qrtoken.MIRROR_NONCE)
    url = f"{cloud.settings.public_url.rstrip('/')}/q/{token}"
    svg = screen_svg(m.name, url, state_line(m, vend, menu), _("Screen of {name}", name=m.name))
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


# -- the planogram editor --------------------------------------------------------------------------------

def _whole(text: str) -> int | None:
    text = (text or "").strip()
    return int(text) if re.fullmatch(r"[0-9]{1,7}", text) else None


def read_form(form, _) -> tuple[list[dict], list[machines.SlotSpec], dict]:
    """The editor's rows as typed, the slot specs they make, and {field name: error} for what is wrong.
    A row left wholly blank (the spare row for a new slot) is no slot."""
    rows, specs, errors = [], [], {}
    count = _whole(form.get("rows", "")) or 0
    for i in range(min(count, planogram.MAX_CONFIG_SLOTS + 1)):
        row = {f: str(form.get(f"{f}-{i}", "")).strip() for f in FORM_FIELDS}
        row["count"] = None
        rows.append(row)
        if not any(row[f] for f in ("slot", "sku", "name", "price", "capacity", "par")):
            continue

        wrong = {}
        if not SLOT_RE.match(row["slot"]):
            wrong["slot"] = _("A slot code is a capital letter and 1-2 digits, like A1.")
        if not 1 <= len(row["sku"]) <= 40:
            wrong["sku"] = _("The SKU must be 1-40 characters.")
        if not 1 <= len(row["name"]) <= 80:
            wrong["name"] = _("The name must be 1-80 characters.")
        if not CURRENCY_RE.match(row["currency"]):
            wrong["currency"] = _("A currency is a three-letter code like CNY.")
        price = None
        try:
            price = parse_amount(row["price"], row["currency"]) if CURRENCY_RE.match(row["currency"]) else None
        except ValueError:
            wrong["price"] = _("Write the price like 3.50: a number above zero, at most two decimals.")
        capacity = _whole(row["capacity"])
        if capacity is None or not 1 <= capacity <= 1000:
            wrong["capacity"] = _("The capacity must be a whole number from 1 to 1000.")
        par = _whole(row["par"]) if row["par"] else None
        if row["par"] and (par is None or (capacity is not None and par > capacity)):
            wrong["par"] = _("The par level must be a whole number from 0 to the capacity.")
        cabinet = _whole(row["cabinet"]) if row["cabinet"] else None
        if row["cabinet"] and not cabinet:
            wrong["cabinet"] = _("Choose a cabinet.")
        if wrong:
            errors.update({f"{field}-{i}": message for field, message in wrong.items()})
            continue
        try:
            specs.append(machines.SlotSpec.from_obj({"slot": row["slot"], "sku": row["sku"], "name": row["name"],
                                                     "price": price, "currency": row["currency"],
                                                     "capacity": capacity, "par_level": par, "cabinet": cabinet}))
        except machines.FleetError as e:
            errors[f"slot-{i}"] = str(e)
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row["slot"] and row["slot"] in seen and f"slot-{i}" not in errors:
            errors[f"slot-{i}"] = _("Slot {slot} is in the form twice.", slot=row["slot"])
        seen.setdefault(row["slot"], i)
    if not specs and not errors:
        errors["form"] = _("Give at least one slot.")
    return rows, specs, errors


def _done_by_form(conn: sa.Connection, machine_id: str, key: str) -> int | None:
    """The version a form with this key made already, if it did (a second submit of the same form)."""
    for row in audit.query(conn, action="machine.slots", object_kind="machine", object_id=machine_id, limit=50):
        if row["change"].get("form_key") == key:
            return row["change"].get("version")
    return None


@router.post("/staff/machines/{machine_id}/slots")
async def machine_edit(request: Request, machine_id: str, caller: auth.Caller = EDIT, cloud=Depends(the_cloud)):
    """Save the planogram editor: one new version (as the API makes it), sent to the machine."""
    _ = translator(request)
    form = await request.form()
    key = str(form.get("key", ""))
    rows, specs, errors = read_form(form, _)
    if not re.fullmatch(r"[A-Za-z0-9_-]{8,64}", key):
        errors["form"] = _("The form was incomplete: reload the page and try again.")
    if errors:
        return machine_page(request, caller, cloud, machine_id, 422, form=rows, errors=errors)
    try:
        with cloud.engine.begin() as conn:
            lock = sa.select(machines.machines.c.id).where(machines.machines.c.id == machine_id)
            # Two submits of one form at once: the second waits here, then finds the first's audit row.
            if conn.dialect.name == "postgresql":
                lock = lock.with_for_update()
            if conn.execute(lock).first() is None:
                raise machines.NoSuchMachine(machine_id)
            version = _done_by_form(conn, machine_id, key)
            if version is None:
                now = utcnow()
                version = planogram.set_slots(conn, machine_id, specs, now, caller.user_id)
                audit.record(conn, caller, "machine.slots", "machine", machine_id,
                             {"slots": [dataclasses.asdict(s) for s in specs], "version": version, "form_key": key},
                             now)
    except machines.NoSuchMachine:
        return dash(request, caller, "dash_problem.html", 404, title=_("Unknown machine"),
                    message=_("There is no machine {id}.", id=machine_id))
    except machines.FleetError as e:
        return machine_page(request, caller, cloud, machine_id, 422, form=rows,
                            errors={"form": _("The planogram was not saved: {reason}", reason=str(e))})
    cloud.publish_config(machine_id)
    return RedirectResponse(f"/staff/machines/{machine_id}?saved={version}#planogram", status_code=303)


# -- machines and locations: add, move, retire; places with their names per language -----------------------
add_page("/staff/machines", "Machines", people.FLEET_READERS, order=11)
add_page("/staff/locations", "Locations", people.FLEET_READERS, order=12)
PAGE_SIZE = 50
LOCATION_FIELDS = ("name", "address", "latitude", "longitude", "tz")
ZONES = ("UTC", "Asia/Shanghai", "Asia/Hong_Kong", "Asia/Singapore", "Asia/Tokyo", "Europe/London",
         "Europe/Berlin", "America/New_York", "America/Los_Angeles")


def other_languages() -> list[tuple[str, str]]:
    """The languages a location's name is asked in besides the default one, as (code, name): a third
    language in ``i18n.LANGUAGES`` gets its field with no change here."""
    return [(code, name) for code, name in i18n.LANGUAGES.items() if code != locations.DEFAULT_LANGUAGE]


def _field_of(message: str, fields) -> str:
    """Which form field a domain error is about (it starts with the field's name), else 'form'."""
    head = message.split(" ", 1)[0].rstrip(":")
    if head.startswith("names"):
        return "name_" + head.partition(".")[2] if "." in head else "name"
    return head if head in fields else "name" if "named" in message else "form"


def _machines_page(request: Request, caller, cloud, status_code: int = 200, errors: dict | None = None,
                   form: dict | None = None, created: dict | None = None):
    q = request.query_params.get("q", "")[:80].strip()
    after = request.query_params.get("after", "")[:32] or None
    lang = i18n.language_of(request)
    with reader(cloud.engine).connect() as conn:
        rows, next_after = machines.search(conn, q, after, PAGE_SIZE, lang)
        sites = locations.by_machine(conn)
        places = locations.list_locations(conn)
    names = {p["id"]: locations.name_in(p, lang) for p in places}
    listed = [{"m": m, "site": names.get(sites.get(m.id, {}).get("id"))} for m in rows]
    nxt = "/staff/machines?" + urlencode({"q": q, "after": next_after}) if next_after else None
    response = dash(request, caller, "dash_machines.html", status_code, rows=listed, q=q, next_url=nxt,
                    places=[(p["id"], names[p["id"]]) for p in places], errors=errors or {},
                    form=form or {"id": "", "name": "", "location": ""}, created=created,
                    may_edit=caller.role in people.FLEET_EDITORS)
    if created:
        response.headers["Cache-Control"] = "no-store"  # the secrets are shown once: never from a cache
    return response


@router.get("/staff/machines")
def machines_page(request: Request, caller: auth.Caller = READ, cloud=Depends(the_cloud)):
    """Machines by id, a page at a time, searched by id or name; the form to add one."""
    return _machines_page(request, caller, cloud)


@router.post("/staff/machines")
async def add_machine_page(request: Request, caller: auth.Caller = EDIT, cloud=Depends(the_cloud)):
    """A new machine with its QR secret and broker password, made as ``vendctl machines add`` makes them
    (``POST /api/v1/machines``), placed at the chosen location; the secrets are shown on this answer only."""
    _ = translator(request)
    raw = await request.form()
    form = {k: str(raw.get(k, ""))[:100].strip() for k in ("id", "name", "location")}
    errors = {}
    where = None
    if form["location"]:
        where = int(form["location"]) if form["location"].isdigit() and len(form["location"]) < 10 else -1
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            if where is not None:
                try:
                    locations.get(conn, where)
                except machines.FleetError:
                    errors["location"] = _("Location: there is no such location.")
                    raise
            try:
                secret = machines.add_machine(conn, form["id"], form["name"], "", now)
            except machines.FleetError as e:
                errors["id"] = _("Machine id: {problem}", problem=e.said(_))
                raise
            if where is not None:
                locations.place(conn, form["id"], where, now)
            creds = machines.credentials(conn, form["id"], now)
            audit.record(conn, caller, "machine.add", "machine", form["id"],
                         {"name": form["name"], "location_id": where}, now)
    except machines.FleetError:
        return _machines_page(request, caller, cloud, 422, errors, form)
    try:
        broker = cloud.refresh_broker()
    except OSError as e:
        broker = f"broker files NOT rewritten: {e}"
    created = {"id": form["id"], "secret": secret, "mqtt_username": creds.mqtt_username,
               "mqtt_password": creds.mqtt_password, "broker": broker}
    return _machines_page(request, caller, cloud, 201, created=created)


def _place_page(request: Request, caller, cloud, machine_id: str, status_code: int = 200,
                errors: dict | None = None, notice: str | None = None):
    _ = translator(request)
    lang = i18n.language_of(request)
    with reader(cloud.engine).connect() as conn:
        try:
            m = machines.get(conn, machine_id, lang)
        except machines.FleetError:
            return dash(request, caller, "dash_problem.html", 404, title=_("No such machine"),
                        message=_("There is no machine {id}.", id=machine_id))
        places = locations.list_locations(conn)
        here = locations.location_of(conn, machine_id)
        stays = locations.history(conn, machine_id)
    by_id = {p["id"]: p for p in places}
    for s in stays:
        p = by_id[s["location_id"]]
        s.update(name=locations.name_in(p, lang), tz=p["tz"],
                 start=datetime.fromisoformat(s["from"]) if s["from"] else None,
                 end=datetime.fromisoformat(s["to"]) if s["to"] else None)
    return dash(request, caller, "dash_machine_place.html", status_code, m=m, stays=stays, errors=errors or {},
                at=by_id.get(here), here_name=locations.name_in(by_id[here], lang) if here in by_id else None,
                places=[(p["id"], locations.name_in(p, lang)) for p in places], notice=notice,
                may_edit=caller.role in people.FLEET_EDITORS)


@router.get("/staff/machines/{machine_id}/place")
def machine_place(request: Request, machine_id: str, caller: auth.Caller = READ, cloud=Depends(the_cloud)):
    """Where a machine stands, where it stood when, and the forms to move or retire it."""
    _ = translator(request)
    notice = {"moved": _("The machine was moved."), "retired": _("The machine is retired.")}.get(
        request.query_params.get("done", ""))
    return _place_page(request, caller, cloud, machine_id[:32], notice=notice)


@router.post("/staff/machines/{machine_id}/move")
async def machine_move(request: Request, machine_id: str, caller: auth.Caller = EDIT, cloud=Depends(the_cloud)):
    """Move the machine (``POST /api/v1/machines/{id}/move``): its stay where it was ends now."""
    _ = translator(request)
    text = str((await request.form()).get("location", ""))[:12]
    where = None if text == "none" else int(text) if text.isdigit() else -1
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            if where is not None:
                locations.get(conn, where)
            before = locations.place(conn, machine_id[:32], where, now)
            if before != where:
                audit.record(conn, caller, "machine.move", "machine", machine_id, {"location_id": [before, where]},
                             now)
    except locations.NoSuchLocation:
        return _place_page(request, caller, cloud, machine_id[:32], 422,
                           {"location": _("Location: there is no such location.")})
    except machines.Retired:
        return _place_page(request, caller, cloud, machine_id[:32], 409,
                           {"location": _("This machine is retired: it cannot be moved.")})
    except machines.FleetError:
        return _place_page(request, caller, cloud, machine_id[:32], 404)
    return RedirectResponse(f"/staff/machines/{quote(machine_id, safe='')}/place?done=moved", status_code=303)


@router.post("/staff/machines/{machine_id}/retire")
async def machine_retire(request: Request, machine_id: str, caller: auth.Caller = EDIT, cloud=Depends(the_cloud)):
    """Retire the machine (``POST /api/v1/machines/{id}/retire``), once the box saying so is ticked."""
    _ = translator(request)
    if (await request.form()).get("sure") != "yes":
        return _place_page(request, caller, cloud, machine_id[:32], 422,
                           {"sure": _("Tick the box to say the machine is leaving service for good.")})
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            left = locations.retire(conn, machine_id[:32], now)
            audit.record(conn, caller, "machine.retire", "machine", machine_id, {"location_id": left}, now)
    except machines.Retired:
        return _place_page(request, caller, cloud, machine_id[:32], 409,
                           {"sure": _("This machine was retired already.")})
    except machines.FleetError:
        return _place_page(request, caller, cloud, machine_id[:32], 404)
    try:  # its broker login goes with it
        cloud.refresh_broker()
    except OSError as e:
        log.error("machine %s retired, but the broker's files were NOT rewritten: %s", machine_id, e)
    return RedirectResponse(f"/staff/machines/{quote(machine_id, safe='')}/place?done=retired", status_code=303)


def _location_form(raw) -> tuple[dict, dict]:
    """The location form as typed, and the changes it asks for (coordinates as numbers where they are)."""
    form = {k: str(raw.get(k, ""))[:200].strip() for k in LOCATION_FIELDS}
    for code, _name in other_languages():
        form["name_" + code] = str(raw.get("name_" + code, ""))[:100].strip()
    values = {"name": form["name"], "address": form["address"], "tz": form["tz"] or "UTC",
              "names": {code: form["name_" + code] for code, _name in other_languages()},
              "latitude": None, "longitude": None}
    for k in ("latitude", "longitude"):
        if form[k]:
            try:
                values[k] = float(form[k])
            except ValueError:
                values[k] = form[k]  # the domain's check names it
    return form, values


def _locations_page(request: Request, caller, cloud, status_code: int = 200, errors: dict | None = None,
                    form: dict | None = None):
    lang = i18n.language_of(request)
    with reader(cloud.engine).connect() as conn:
        places = locations.list_locations(conn)
    for p in places:
        p["shown"] = locations.name_in(p, lang)
    blank = {k: "" for k in LOCATION_FIELDS} | {"name_" + c: "" for c, _n in other_languages()} | {"tz": "UTC"}
    return dash(request, caller, "dash_locations.html", status_code, places=places, errors=errors or {},
                form=form or blank, languages_other=other_languages(), zones=ZONES,
                may_edit=caller.role in people.FLEET_EDITORS)


@router.get("/staff/locations")
def locations_page(request: Request, caller: auth.Caller = READ, cloud=Depends(the_cloud)):
    """Every location: its name in the page's language, address, time zone, machines; the form to add one."""
    return _locations_page(request, caller, cloud)


def _location_error(_, e: machines.FleetError) -> dict:
    fields = (*LOCATION_FIELDS, *("name_" + c for c, _n in other_languages()))
    field = _field_of(str(e), fields)
    return {field if field in fields else "name": e.said(_)}  # the domain's message names the field


@router.post("/staff/locations")
async def add_location_page(request: Request, caller: auth.Caller = EDIT, cloud=Depends(the_cloud)):
    """A new location (``POST /api/v1/locations``), audited; the form kept with the error if it is wrong."""
    _ = translator(request)
    form, values = _location_form(await request.form())
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            location_id = locations.add(conn, values["name"], values["address"], values["latitude"],
                                        values["longitude"], now=now, tz=values["tz"], names=values["names"])
            audit.record(conn, caller, "location.add", "location", location_id,
                         {k: v for k, v in values.items()}, now)
    except machines.FleetError as e:
        return _locations_page(request, caller, cloud, 422, _location_error(_, e), form)
    return RedirectResponse(f"/staff/locations/{location_id}?saved=1", status_code=303)


def _location_page(request: Request, caller, cloud, location_id: str, status_code: int = 200,
                   errors: dict | None = None, form: dict | None = None, notice: str | None = None):
    _ = translator(request)
    with reader(cloud.engine).connect() as conn:
        try:
            row = locations.get(conn, int(location_id) if location_id.isdigit() and len(location_id) < 10 else -1)
        except machines.FleetError:
            return dash(request, caller, "dash_problem.html", 404, title=_("No such location"),
                        message=_("There is no location {id}.", id=location_id))
        found = locations.public(row, None, locations.names_of(conn, row.id))
        stays = locations.history(conn, location_id=row.id)
    for s in stays:
        s.update(start=datetime.fromisoformat(s["from"]) if s["from"] else None,
                 end=datetime.fromisoformat(s["to"]) if s["to"] else None)
    if form is None:
        form = {"name": found["name"], "address": found["address"], "tz": found["tz"],
                "latitude": "" if found["latitude"] is None else repr(found["latitude"]),
                "longitude": "" if found["longitude"] is None else repr(found["longitude"])}
        form.update({"name_" + c: found["names"].get(c, "") for c, _n in other_languages()})
    return dash(request, caller, "dash_location.html", status_code, loc=found, stays=stays, errors=errors or {},
                form=form, languages_other=other_languages(), zones=ZONES if found["tz"] in ZONES else
                (*ZONES, found["tz"]), notice=notice, may_edit=caller.role in people.FLEET_EDITORS)


@router.get("/staff/locations/{location_id}")
def location_page(request: Request, location_id: str, caller: auth.Caller = READ, cloud=Depends(the_cloud)):
    """One location: the form to edit it, and which machine stood there when."""
    _ = translator(request)
    notice = _("Saved.") if request.query_params.get("saved") else None
    return _location_page(request, caller, cloud, location_id[:12], notice=notice)


@router.post("/staff/locations/{location_id}")
async def edit_location_page(request: Request, location_id: str, caller: auth.Caller = EDIT,
                             cloud=Depends(the_cloud)):
    """Save the location's form (``PATCH /api/v1/locations/{id}``): all of it or nothing, audited."""
    _ = translator(request)
    form, values = _location_form(await request.form())
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            which = int(location_id) if location_id.isdigit() and len(location_id) < 10 else -1
            diff = locations.edit(conn, which, values)
            if diff:
                audit.record(conn, caller, "location.edit", "location", which, diff, now)
    except locations.NoSuchLocation:
        return _location_page(request, caller, cloud, location_id[:12])
    except machines.FleetError as e:
        return _location_page(request, caller, cloud, location_id[:12], 422, _location_error(_, e), form)
    return RedirectResponse(f"/staff/locations/{which}?saved=1", status_code=303)
