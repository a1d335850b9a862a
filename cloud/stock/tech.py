"""The technician's phone view (``/tech``) and its API: today's routes with each machine's pick list and a
"loaded" button; at a machine, "restocked" with the counts (refused while the cloud last heard the service
door shut, or the machine offline) and the machine's open alerts with a "cleared" button.

Server-rendered, no script: each action is a plain form with an idempotency key drawn when the page was
made, so Back and a double tap send the same key and record once. A staff form from another site is
refused by the session check (``cloud/people/auth.py``: ``same_origin``), as on every staff page.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime, timezone

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict

from cloud import people
from cloud.alerts import NAMES, actions as alert_actions, occurrences
from cloud.fleet import locations
from cloud.people import Caller, audit, require
from cloud.people.auth import staff_only
from cloud.fleet import machines
from cloud.stock import picking, visits
from cloud.web import i18n
from cloud.web.dashboard import add_page, dash
from cloud.web.pages import translator

api = APIRouter(prefix="/api/v1", tags=["technician"])
router = APIRouter(include_in_schema=False)
add_page("/tech", "Today's route", people.PICKERS, order=12)
PAGE = Depends(staff_only(*people.PICKERS))
API = Depends(require(*people.PICKERS))


def _(message: str) -> str:
    """Marks a message for the catalog: translated where it is shown, in the reader's language."""
    return message


# Why a load or restock was refused, by VisitError's code, in the reader's language.
REFUSALS = {"door_shut": _("The service door is shut. Open the service door first: the machine must see you restock."),
            "offline": _("The machine is offline, so the cloud cannot see its service door. Open the service door "
                         "first: the machine must see you restock."),
            "no_counts": _("Give the units you put in at least one slot."),
            "slot": _("A slot named in the form is not on this machine."),
            "count": _("Each count is a whole number from 0 to 1000."),
            "key": _("The form was damaged; load the page again."),
            "key_used": _("The form was damaged; load the page again."),
            "machine": _("There is no such machine."),
            "retired": _("This machine is retired.")}
DONE = {"loaded": _("Marked as loaded."), "restocked": _("The restock is recorded."),
        "acknowledge": _("The alert is acknowledged."), "resolve": _("The alert is cleared."),
        "unchanged": _("Nothing changed: it was done already.")}
DOOR = {"open": _("Service door open"), "shut": _("Service door shut"), "offline": _("Machine offline")}


def the_cloud(request: Request):
    return request.app.state.cloud


def _today(request: Request) -> date:
    return request.app.state.people.now().astimezone(timezone.utc).date()


def _now(request: Request) -> datetime:
    return request.app.state.people.now()


def _zones(conn, cloud) -> tuple[dict[str, str], str]:
    """The zone each machine's times are shown in: its location's ({machine id: zone}), else the fleet's."""
    return locations.zones(conn), cloud.settings.time_zone or "UTC"


def day_plan(conn, day: date, lang: str | None = None) -> list[dict]:
    """The day's routes, each stop with its pick lines (slot, product, count to load) and whether it is loaded;
    each machine named in ``lang`` where it has a name in it."""
    loaded = visits.loads(conn, day)
    out = []
    for route in picking.day_routes(conn, day, lang):
        live = [s["machine_id"] for s in route["stops"] if not s["retired"]]
        picks = {m["machine_id"]: m for m in picking.pick_list(conn, live, day)["machines"]} if live else {}
        stops = []
        for s in route["stops"]:
            if s["retired"]:
                continue
            lines = [{"slot": line["slot"], "sku": line["sku"], "name": line["name"], "need": line["need"],
                      "pick": line["pick"],
                      "short": line["short"]} for line in picks[s["machine_id"]]["lines"]]
            row = loaded.get(s["machine_id"])
            stops.append({"position": s["position"], "machine_id": s["machine_id"], "name": s["name"], "lines": lines,
                          "pick": sum(line["pick"] for line in lines),
                          "loaded": visits.load_public(row) if row is not None else None})
        out.append({"id": route["id"], "name": route["name"], "day": day.isoformat(), "stops": stops})
    return out


def _loaded(conn, caller: Caller, day: date, machine_id: str, key, now: datetime):
    """``visits.mark_loaded``, audited when it records something."""
    row, made = visits.mark_loaded(conn, day, machine_id, key, caller.username, now)
    if made:
        audit.record(conn, caller, "visit.loaded", "machine", machine_id, {"day": day.isoformat()}, now)
    return row, made


def _restocked(conn, caller: Caller, machine_id: str, counts, key, now: datetime):
    """``visits.report_restock``, audited when it records something."""
    row, made = visits.report_restock(conn, machine_id, counts, key, caller.username, now)
    if made:
        audit.record(conn, caller, "visit.restocked", "machine", machine_id, visits.report_public(row)["counts"], now)
    return row, made


# -- the API -----------------------------------------------------------------------------------------

class LoadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    day: str = ""


class RestockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    counts: dict[str, int]


def _day(day: str, request: Request) -> date:
    try:
        return date.fromisoformat(day) if day else _today(request)
    except ValueError:
        raise HTTPException(422, f"day: {day!r} is not a date like 2026-12-07") from None


@api.get("/tech/today")
def tech_today(request: Request, day: str = "", caller: Caller = API, cloud=Depends(the_cloud)):
    """The routes driven on a day (today, UTC, by default): each machine in visiting order with what to
    load in each slot and whether it is loaded."""
    when = _day(day, request)
    with cloud.engine.begin() as conn:
        return day_plan(conn, when)


@api.post("/machines/{machine_id}/loaded", status_code=201)
def loaded(machine_id: str, body: LoadBody, request: Request, caller: Caller = API, cloud=Depends(the_cloud)):
    """Say a machine's load for the day is in the van. Under an idempotency key: the same key, or the same
    machine and day again, answers 200 with the first record."""
    when = _day(body.day, request)
    try:
        with cloud.engine.begin() as conn:
            row, made = _loaded(conn, caller, when, machine_id, body.key, _now(request))
    except visits.VisitError as e:
        raise e.http() from None
    return JSONResponse(visits.load_public(row), status_code=201 if made else 200)


@api.post("/machines/{machine_id}/restocked", status_code=201)
def restocked(machine_id: str, body: RestockBody, request: Request, caller: Caller = API, cloud=Depends(the_cloud)):
    """The technician's restock of a machine: units put in each slot. Refused (409) unless the cloud last
    heard the machine's service door open; the same key again answers 200 with the first report."""
    try:
        with cloud.engine.begin() as conn:
            row, made = _restocked(conn, caller, machine_id, body.counts, body.key, _now(request))
    except visits.VisitError as e:
        raise e.http() from None
    return JSONResponse(visits.report_public(row), status_code=201 if made else 200)


@api.get("/machines/{machine_id}/door")
def machine_door(machine_id: str, caller: Caller = API, cloud=Depends(the_cloud)):
    """The cloud's last word on the machine's service door: open (since when), shut, or offline."""
    try:
        with cloud.engine.begin() as conn:
            state, since = visits.door(conn, machine_id)
    except visits.VisitError as e:
        raise e.http() from None
    return {"machine_id": machine_id, "door": state, "since": since.isoformat() if since else None}


# -- the pages ---------------------------------------------------------------------------------------

@router.get("/tech")
def today_page(request: Request, done: str = "", caller: Caller = PAGE, cloud=Depends(the_cloud)):
    when = _today(request)
    with cloud.engine.begin() as conn:
        plan = day_plan(conn, when, i18n.language_of(request))
        zones, fleet_zone = _zones(conn, cloud)
    for route in plan:
        for stop in route["stops"]:
            if stop["loaded"]:
                stop["loaded"]["at"] = datetime.fromisoformat(stop["loaded"]["loaded_at"])
            stop["tz"] = zones.get(stop["machine_id"], fleet_zone)
    return dash(request, caller, "tech_today.html", plan=plan, day=when, done=DONE.get(done, ""),
                key=secrets.token_urlsafe(16))


@router.post("/tech/{machine_id}/loaded")
async def loaded_form(request: Request, machine_id: str, caller: Caller = PAGE, cloud=Depends(the_cloud)):
    form = await request.form()
    try:
        with cloud.engine.begin() as conn:
            _row, made = _loaded(conn, caller, _today(request), machine_id, str(form.get("key", "")), _now(request))
    except visits.VisitError as e:
        _t = translator(request)
        return dash(request, caller, "dash_problem.html", e.status, title=_t("Not recorded"),
                    message=_t(REFUSALS.get(e.code, REFUSALS["key"])))
    return RedirectResponse(f"/tech?done={'loaded' if made else 'unchanged'}#stop-{machine_id}", status_code=303)


def _machine_page(request: Request, caller: Caller, cloud, machine_id: str, status_code: int = 200,
                  typed: dict | None = None, error: str = "", done: str = "", key: str = ""):
    when = _today(request)
    with cloud.engine.begin() as conn:
        try:
            state, since = visits.door(conn, machine_id)
        except visits.VisitError:
            _t = translator(request)
            return dash(request, caller, "dash_problem.html", 404, title=_t("Unknown machine"),
                        message=_t("There is no such machine."))
        lines = picking.pick_list(conn, [machine_id], when)["machines"][0]["lines"]
        name = machines.get(conn, machine_id, i18n.language_of(request)).name
        alerts = occurrences.listing(conn, ("open", "acknowledged"), machine_id=machine_id)
        done_today = visits.reports(conn, machine_id, datetime.combine(when, datetime.min.time(), timezone.utc))
        zones, fleet_zone = _zones(conn, cloud)
    counts = typed if typed is not None else {line["slot"]: str(line["pick"]) for line in lines}
    return dash(request, caller, "tech_machine.html", status_code, machine_id=machine_id, machine_name=name,
                zone=zones.get(machine_id, fleet_zone), door=state,
                door_since=since, door_names=DOOR, lines=lines, counts=counts, alerts=alerts, names=NAMES,
                state_of=occurrences.state_of, error=error, done=DONE.get(done, ""),
                reports=[{**visits.report_public(r), "reported_at": r.reported_at} for r in done_today],
                key=key or secrets.token_urlsafe(16))


@router.get("/tech/{machine_id}")
def machine_page(request: Request, machine_id: str, done: str = "", caller: Caller = PAGE, cloud=Depends(the_cloud)):
    return _machine_page(request, caller, cloud, machine_id, done=done)


@router.post("/tech/{machine_id}/restocked")
async def restocked_form(request: Request, machine_id: str, caller: Caller = PAGE, cloud=Depends(the_cloud)):
    """The restock form: a count per slot, prefilled from the pick list. A refused form comes back as typed,
    with the reason at the top, under the same key (so a later tap, door open, records it once)."""
    form = await request.form()
    key = str(form.get("key", ""))
    typed = {k.removeprefix("count-"): str(v).strip() for k, v in form.items() if k.startswith("count-")}
    counts, bad = {}, False
    for slot, value in typed.items():
        if value == "":
            continue
        if not value.isdigit():
            bad = True
            continue
        counts[slot] = int(value)
    try:
        if bad:
            raise visits.VisitError("count", "counts", "not a whole number")
        with cloud.engine.begin() as conn:
            _row, made = _restocked(conn, caller, machine_id, counts, key, _now(request))
    except visits.VisitError as e:
        _t = translator(request)
        return _machine_page(request, caller, cloud, machine_id, e.status if e.status != 404 else 422, typed,
                             _t(REFUSALS.get(e.code, REFUSALS["key"])), key=key)
    return RedirectResponse(f"/tech/{machine_id}?done={'restocked' if made else 'unchanged'}", status_code=303)


@router.post("/tech/{machine_id}/alerts/{alert_id}/{action}")
def clear_alert(request: Request, machine_id: str, alert_id: int, action: str, caller: Caller = PAGE,
                cloud=Depends(the_cloud)):
    """"Seen" (acknowledge) and "cleared" (resolve) on a machine's alert; a second tap changes nothing."""
    _t = translator(request)
    if action not in ("acknowledge", "resolve"):
        return dash(request, caller, "dash_problem.html", 404, title=_t("Not found"),
                    message=_t("There is no such page."))
    try:
        _row, changed = alert_actions.change_alert(cloud.engine, caller, alert_id, action)
    except occurrences.AlertError:
        return dash(request, caller, "dash_problem.html", 404, title=_t("Unknown alert"),
                    message=_t("There is no alert {id}.", id=alert_id))
    return RedirectResponse(f"/tech/{machine_id}?done={action if changed else 'unchanged'}#faults", status_code=303)

