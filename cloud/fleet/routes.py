"""The fleet API under /api/v1: locations, one machine's details and cabinets, planograms, alerts.

Who may call what is the table in ``cloud/people/__init__.py``: reading is for fleet readers, every change
for fleet editors, and every change writes its audit row in the change's own transaction.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Request

from cloud.fleet import alerts, locations, machines, planogram
from cloud import people
from cloud.core.db import utcnow
from cloud.people import Caller, require

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["fleet"])
READ = [Depends(require(*people.FLEET_READERS))]
EDIT = require(*people.FLEET_EDITORS)


def the_cloud(request: Request):
    """The running ``cloud.service.Cloud`` (engine, bus, settings, readings)."""
    return request.app.state.cloud


def refused(e: machines.FleetError) -> HTTPException:
    missing = isinstance(e, (machines.NoSuchMachine, locations.NoSuchLocation))
    return HTTPException(404 if missing else 422, str(e))


# -- locations ---------------------------------------------------------------------------------------

@router.get("/locations", dependencies=READ)
def list_locations(cloud=Depends(the_cloud)):
    """Every location, with the machines standing at it."""
    with cloud.engine.connect() as conn:
        return locations.list_locations(conn)


@router.post("/locations", status_code=201)
def add_location(body: dict, caller: Caller = Depends(EDIT), cloud=Depends(the_cloud)):
    """A new location: name, address, and latitude and longitude in degrees (both or neither)."""
    unknown = sorted(set(body) - {"name", "address", "latitude", "longitude"})
    if unknown:
        raise HTTPException(422, f"unknown field {unknown[0]!r}: a location has name, address, latitude, longitude")
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            location_id = locations.add(conn, body.get("name"), body.get("address", ""), body.get("latitude"),
                                        body.get("longitude"), now=now)
            row = locations.get(conn, location_id)
            people.audit.record(conn, caller, "location.add", "location", location_id,
                                {k: v for k, v in locations.public(row).items() if k not in ("id", "created_at")},
                                now)
    except machines.FleetError as e:
        raise refused(e) from None
    return locations.public(row, [])


@router.put("/machines/{machine_id}/location")
def place_machine(machine_id: str, body: dict, caller: Caller = Depends(EDIT), cloud=Depends(the_cloud)):
    """Put a machine at a location: ``{"location_id": 3}``, or ``null`` for none."""
    if set(body) != {"location_id"}:
        raise HTTPException(422, "the body is {\"location_id\": ID or null}")
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            before = locations.place(conn, machine_id, body["location_id"], now)
            if before != body["location_id"]:
                people.audit.record(conn, caller, "machine.location", "machine", machine_id,
                                    {"location_id": [before, body["location_id"]]}, now)
    except machines.FleetError as e:
        raise refused(e) from None
    return {"machine": machine_id, "location_id": body["location_id"], "changed": before != body["location_id"]}


# -- one machine -------------------------------------------------------------------------------------

@router.get("/machines/{machine_id}", dependencies=READ)
def machine_detail(machine_id: str, cloud=Depends(the_cloud)):
    """A machine: where it stands, its cabinets, status, planogram desired against applied, its alerts."""
    try:
        with cloud.engine.connect() as conn:
            m = machines.get(conn, machine_id)
            where = locations.location_of(conn, machine_id)
            location = locations.public(locations.get(conn, where)) if where is not None else None
            cabinets = [{"number": c.number, "name": c.name} for c in machines.cabinets_of(conn, machine_id)]
            config = planogram.status(conn, machine_id)
            found = alerts.compute(conn, utcnow(), cloud.alert_limits, cloud.readings.snapshot(), machine_id)
    except machines.FleetError as e:
        raise refused(e) from None
    return {"id": m.id, "name": m.name, "location": location, "cabinets": cabinets, "online": m.online,
            "last_seen": m.last_seen.isoformat() if m.last_seen else None, "firmware": m.firmware,
            "machine_head": m.machine_head, "cloud_head": m.cloud_head, "planogram": config,
            "alerts": [a.public() for a in found]}


@router.post("/machines/{machine_id}/cabinets", status_code=201)
def add_cabinet(machine_id: str, body: dict, caller: Caller = Depends(EDIT), cloud=Depends(the_cloud)):
    """Another cabinet for a machine: ``{"number": 2, "name": "chilled"}``."""
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            machines.add_cabinet(conn, machine_id, body.get("number"), body.get("name", ""))
            people.audit.record(conn, caller, "machine.cabinet", "machine", machine_id,
                                {"number": body.get("number"), "name": body.get("name", "")}, now)
    except machines.FleetError as e:
        raise refused(e) from None
    return {"machine": machine_id, "number": body["number"], "name": body.get("name", "").strip()}


# -- planograms --------------------------------------------------------------------------------------

@router.get("/machines/{machine_id}/planogram", dependencies=READ)
def get_planogram(machine_id: str, version: int | None = None, cloud=Depends(the_cloud)):
    """A planogram version's slots (the newest by default), and the machine's desired against applied."""
    try:
        with cloud.engine.connect() as conn:
            config = planogram.status(conn, machine_id)
            shown = version if version is not None else config["desired_version"]
            if version is not None and not 1 <= version <= config["desired_version"]:
                raise HTTPException(404, f"machine {machine_id} has no planogram version {version}")
            rows = planogram.slots_of(conn, machine_id, shown) if shown else []
    except machines.FleetError as e:
        raise refused(e) from None
    return {"machine": machine_id, "version": shown, **config, "slots": [planogram.slot_dict(r) for r in rows]}


@router.post("/machines/{machine_id}/planogram", status_code=201)
def set_planogram(machine_id: str, body: dict, caller: Caller = Depends(EDIT), cloud=Depends(the_cloud)):
    """A new planogram version, whole: ``{"slots": [{slot, sku, price, currency, capacity, par_level,
    cabinet}], "note": "..."}``; sent to the machine at once, retained, so it arrives even after a stop."""
    try:
        slots, note = planogram.parse(body)
        with cloud.engine.begin() as conn:
            now = utcnow()
            version = planogram.create(conn, machine_id, slots, now, caller.user_id, note)
            people.audit.record(conn, caller, "machine.planogram", "machine", machine_id,
                                planogram.audit_change(version, slots, note), now)
    except machines.FleetError as e:
        raise refused(e) from None
    published = cloud.publish_config(machine_id)
    log.info("machine %s: planogram version %d made (%d slots), %s", machine_id, version, len(slots),
             "published" if published else "NOT published: it goes out when the machine next reports")
    return {"machine": machine_id, "version": version, "slots": len(slots), "published": published}


@router.get("/machines/{machine_id}/planogram/versions", dependencies=READ)
def planogram_versions(machine_id: str, cloud=Depends(the_cloud)):
    """Every planogram version of a machine, newest first; who made each is in the audit trail too."""
    try:
        with cloud.engine.connect() as conn:
            return planogram.versions(conn, machine_id)
    except machines.FleetError as e:
        raise refused(e) from None


# -- alerts ------------------------------------------------------------------------------------------

@router.get("/alerts", dependencies=READ)
def fleet_alerts(cloud=Depends(the_cloud)):
    """Every alert of the fleet now, by machine."""
    with cloud.engine.connect() as conn:
        found = alerts.compute(conn, utcnow(), cloud.alert_limits, cloud.readings.snapshot())
    return [a.public() for a in found]


@router.get("/machines/{machine_id}/alerts", dependencies=READ)
def machine_alerts(machine_id: str, cloud=Depends(the_cloud)):
    """One machine's alerts now."""
    try:
        with cloud.engine.connect() as conn:
            found = alerts.compute(conn, utcnow(), cloud.alert_limits, cloud.readings.snapshot(), machine_id)
    except machines.FleetError as e:
        raise refused(e) from None
    return [a.public() for a in found]
