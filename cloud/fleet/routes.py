"""The fleet API under /api/v1: locations, one machine's details and cabinets, planograms (the alerts' own
routes are in ``cloud/alerts/routes.py``).

Who may call what is the table in ``cloud/people/__init__.py``: reading is for fleet readers, every change
for fleet editors, and every change writes its audit row in the change's own transaction.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from datetime import timedelta
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, SkipValidation, model_validator
from pydantic_core import PydanticCustomError

from protocol import ProtocolError
from protocol import token as qrtoken
from cloud.core.settings import Settings
from cloud.provisioning.brokerfiles import BrokerFiles
from cloud.provisioning.ca import FleetCA

from cloud.fleet import alerts, ledger, locations, machines, planogram
from cloud.fleet import names as machine_names
from cloud import people
from cloud.core.db import reader, utcnow
from cloud.people import Caller, require

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["fleet"])
READ = [Depends(require(*people.FLEET_READERS))]
EDIT = require(*people.FLEET_EDITORS)


class FleetCloud(Protocol):
    """What the fleet's routes ask of the running cloud (``cloud.service.Cloud`` is one)."""

    engine: sa.Engine
    settings: Settings
    alert_limits: alerts.Limits
    readings: alerts.Readings
    broker_files: BrokerFiles | None
    ca: FleetCA | None

    def publish_config(self, machine_id: str) -> bool: ...

    def refresh_broker(self) -> str | None: ...

    def tell_credentials_changed(self, machine_id: str) -> None: ...


def the_cloud(request: Request) -> FleetCloud:
    """The running cloud, as the fleet's routes see it."""
    return request.app.state.cloud


# -- request bodies ----------------------------------------------------------------------------------
# A field the fleet's functions check themselves is ``SkipValidation``: its type is in the schema, and the
# function's own check, with its message naming the field, decides (as when the bodies were dicts).

class Body(BaseModel):
    """A request body: an unknown field is refused (422)."""

    model_config = ConfigDict(extra="forbid")
    #: How an unknown field is refused, ``{field}`` naming it; None: pydantic's own words.
    unknown: ClassVar[str | None] = None

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        if cls.unknown is not None and isinstance(data, dict):
            extra = sorted(set(data) - set(cls.model_fields))
            if extra:
                raise PydanticCustomError("extra_forbidden", "{message}",
                                          {"message": cls.unknown.format(field=repr(extra[0]))})
        return data


def given(body: BaseModel) -> dict:
    """The fields the caller sent, as the dict the fleet's functions read (a field left out stays out)."""
    return {k: getattr(body, k) for k in body.model_fields_set}


class NewLocation(Body):
    unknown = "unknown field {field}: a location has name, names, address, latitude, longitude, tz"

    name: SkipValidation[str | None] = None  # in the default language (English)
    names: SkipValidation[dict[str, str] | None] = None  # in other languages: {"zh-CN": "..."}
    address: SkipValidation[str] = ""
    # Degrees, both or neither.
    latitude: SkipValidation[float | None] = None
    longitude: SkipValidation[float | None] = None
    tz: SkipValidation[str] = "UTC"  # IANA zone, like Asia/Shanghai


class LocationChange(Body):
    unknown = "unknown field {field}: a location has name, names, address, latitude, longitude, tz"

    name: SkipValidation[str | None] = None
    names: SkipValidation[dict[str, str | None] | None] = None  # a language set to "" or null drops its name
    address: SkipValidation[str | None] = None
    latitude: SkipValidation[float | None] = None
    longitude: SkipValidation[float | None] = None
    tz: SkipValidation[str | None] = None


class MachineNames(Body):
    unknown = "unknown field {field}: a machine's names are name and names"

    name: SkipValidation[str | None] = None  # in the default language (English)
    names: SkipValidation[dict[str, str | None] | None] = None  # {"zh-CN": "B座大堂"}; "" or null drops one


class Move(Body):
    unknown = "unknown field {field}: a move has location_id"

    location_id: SkipValidation[int | None] = None


class Placement(Body):
    location_id: SkipValidation[int | None]  # None: at no location

    @model_validator(mode="before")
    @classmethod
    def _only_location_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) != {"location_id"}:
            raise PydanticCustomError("placement", "{message}", {"message": 'the body is {"location_id": ID or null}'})
        return data


class NewCabinet(Body):
    number: SkipValidation[int | None] = None
    name: SkipValidation[str] = ""


class NewPlanogram(Body):
    unknown = "unknown field {field}: a planogram has slots and note"

    # Slot objects: slot, sku, price, currency, capacity, par_level, cabinet (``planogram.parse`` checks them).
    slots: SkipValidation[list[dict] | None] = None
    note: SkipValidation[str] = ""


class NewMachine(Body):
    id: SkipValidation[str] = ""
    name: SkipValidation[str] = ""
    location: SkipValidation[str] = ""
    location_id: SkipValidation[int | None] = None  # the location it stands at from the start; none: none
    secret: SkipValidation[str | None] = None  # none: one is made


class Rotation(Body):
    overlap_s: SkipValidation[float] = 24 * 3600  # how long the previous secret keeps working


class SlotChange(Body):
    """One slot of ``PUT .../slots``; ``machines.SlotSpec.from_obj`` checks it, naming what is missing."""

    slot: SkipValidation[str | None] = None
    sku: SkipValidation[str | None] = None
    name: SkipValidation[str | None] = None
    price: SkipValidation[int | None] = None
    currency: SkipValidation[str | None] = None
    capacity: SkipValidation[int | None] = None
    par_level: SkipValidation[int | None] = None
    cabinet: SkipValidation[int | None] = None

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        if not isinstance(data, (dict, SlotChange)):
            raise PydanticCustomError("model_type", "each slot must be an object")
        return data


def refused(e: machines.FleetError) -> HTTPException:
    missing = isinstance(e, (machines.NoSuchMachine, locations.NoSuchLocation))
    return HTTPException(404 if missing else 409 if isinstance(e, machines.Retired) else 422, str(e))


# -- locations ---------------------------------------------------------------------------------------

@router.get("/locations", dependencies=READ)
def list_locations(cloud: FleetCloud = Depends(the_cloud)):
    """Every location, with the machines standing at it."""
    with reader(cloud.engine).connect() as conn:
        return locations.list_locations(conn)


@router.post("/locations", status_code=201)
def add_location(body: NewLocation, caller: Caller = Depends(EDIT), cloud: FleetCloud = Depends(the_cloud)):
    """A new location: name, address, and latitude and longitude in degrees (both or neither)."""
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            location_id = locations.add(conn, body.name, body.address, body.latitude, body.longitude, now=now,
                                        tz=body.tz, names=body.names)
            found = locations.public(locations.get(conn, location_id), [], locations.names_of(conn, location_id))
            people.audit.record(conn, caller, "location.add", "location", location_id,
                                {k: v for k, v in found.items() if k not in ("id", "created_at", "machines")}, now)
    except machines.FleetError as e:
        raise refused(e) from None
    return found


@router.get("/locations/{location_id}", dependencies=READ)
def one_location(location_id: int, cloud: FleetCloud = Depends(the_cloud)):
    """A location, the machines at it now, and every stay of a machine there (newest first)."""
    try:
        with reader(cloud.engine).connect() as conn:
            row = locations.get(conn, location_id)
            here = [x for x in locations.list_locations(conn) if x["id"] == location_id][0]["machines"]
            return {**locations.public(row, here, locations.names_of(conn, location_id)),
                    "history": locations.history(conn, location_id=location_id)}
    except machines.FleetError as e:
        raise refused(e) from None


@router.patch("/locations/{location_id}")
def edit_location(location_id: int, body: LocationChange, caller: Caller = Depends(EDIT),
                  cloud: FleetCloud = Depends(the_cloud)):
    """Change a location's name, names per language, address, coordinates (both, or both null) or time zone;
    all of it or nothing. Answers the location and the fields that changed."""
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            diff = locations.edit(conn, location_id, given(body))
            if diff:
                people.audit.record(conn, caller, "location.edit", "location", location_id, diff, now)
            found = locations.public(locations.get(conn, location_id), None, locations.names_of(conn, location_id))
    except machines.FleetError as e:
        raise refused(e) from None
    return {**found, "changed": sorted(diff)}


@router.put("/machines/{machine_id}/location")
def place_machine(machine_id: str, body: Placement, caller: Caller = Depends(EDIT),
                  cloud: FleetCloud = Depends(the_cloud)):
    """Put a machine at a location: ``{"location_id": 3}``, or ``null`` for none."""
    location_id = body.location_id
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            before = locations.place(conn, machine_id, location_id, now)
            if before != location_id:
                people.audit.record(conn, caller, "machine.location", "machine", machine_id,
                                    {"location_id": [before, location_id]}, now)
    except machines.FleetError as e:
        raise refused(e) from None
    return {"machine": machine_id, "location_id": location_id, "changed": before != location_id}


@router.post("/machines/{machine_id}/move")
def move_machine(machine_id: str, body: Move, caller: Caller = Depends(EDIT), cloud: FleetCloud = Depends(the_cloud)):
    """Move a machine to another location (``{"location_id": 3}``; null: to the warehouse). Its stay where it
    was ends now and one at the new place begins: settlements count each sale where the machine stood."""
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            if body.location_id is not None:
                locations.get(conn, body.location_id)  # a location that does not exist is named first
            before = locations.place(conn, machine_id, body.location_id, now)
            if before != body.location_id:
                people.audit.record(conn, caller, "machine.move", "machine", machine_id,
                                    {"location_id": [before, body.location_id]}, now)
            stays = locations.history(conn, machine_id)
    except machines.FleetError as e:
        raise refused(e) from None
    return {"machine": machine_id, "from_location_id": before, "location_id": body.location_id,
            "changed": before != body.location_id, "history": stays}


@router.post("/machines/{machine_id}/retire")
def retire_machine(machine_id: str, caller: Caller = Depends(EDIT), cloud: FleetCloud = Depends(the_cloud)):
    """Retire a machine: it sells no more (its QR codes are refused with a page that says so), it leaves its
    location, and its broker login and topics are taken away (the broker reloads and drops its connection);
    its sales, ledger and stays are kept. Retiring it again is refused (409)."""
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            left = locations.retire(conn, machine_id, now)
            people.audit.record(conn, caller, "machine.retire", "machine", machine_id, {"location_id": left}, now)
    except machines.FleetError as e:
        raise refused(e) from None
    log.info("machine %s retired", machine_id)
    return {"machine": machine_id, "retired_at": now.isoformat(), "left_location_id": left,
            "broker": broker_note(cloud)}


@router.get("/machines/{machine_id}/locations", dependencies=READ)
def machine_stays(machine_id: str, cloud: FleetCloud = Depends(the_cloud)):
    """Where the machine stood when: its stays, newest first (``from`` null: since its beginning)."""
    try:
        with reader(cloud.engine).connect() as conn:
            machines.get(conn, machine_id)
            return locations.history(conn, machine_id)
    except machines.FleetError as e:
        raise refused(e) from None


# -- one machine -------------------------------------------------------------------------------------

@router.get("/machines/{machine_id}", dependencies=READ)
def machine_detail(machine_id: str, cloud: FleetCloud = Depends(the_cloud)):
    """A machine: where it stands, its cabinets, status, planogram desired against applied, its alerts."""
    try:
        with reader(cloud.engine).connect() as conn:
            m = machines.get(conn, machine_id)
            where = locations.location_of(conn, machine_id)
            location = locations.public(locations.get(conn, where)) if where is not None else None
            cabinets = [{"number": c.number, "name": c.name} for c in machines.cabinets_of(conn, machine_id)]
            config = planogram.status(conn, machine_id)
            found = alerts.compute(conn, utcnow(), cloud.alert_limits, cloud.readings.snapshot(), machine_id)
            changes = ledger.changes(conn, machine_id)
            selftest = ledger.last_selftest(conn, machine_id)
            named = machine_names.names_of(conn, [machine_id])[machine_id]
    except machines.FleetError as e:
        raise refused(e) from None
    return {"id": m.id, "name": m.name, "names": named, "location": location, "cabinets": cabinets,
            "online": m.online, "retired_at": m.retired_at.isoformat() if m.retired_at else None,
            "last_seen": m.last_seen.isoformat() if m.last_seen else None, "firmware": m.firmware,
            "machine_head": m.machine_head, "cloud_head": m.cloud_head, "planogram": config,
            "alerts": [a.public() for a in found], "ledger_id": m.ledger_id,
            "ledger_changes": [ledger_change(c) for c in changes], "selftest": selftest}


@router.patch("/machines/{machine_id}")
def rename_machine(machine_id: str, body: MachineNames, caller: Caller = Depends(EDIT),
                   cloud: FleetCloud = Depends(the_cloud)):
    """Change a machine's name (in English, the default language) and its names in the pages' other
    languages: ``{"name": "Lobby B", "names": {"zh-CN": "B座大堂"}}``; all of it or nothing, audited. Answers
    the names and the fields that changed."""
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            diff = machine_names.rename(conn, machine_id, given(body), now)
            if diff:
                people.audit.record(conn, caller, "machine.rename", "machine", machine_id, diff, now)
            found = machine_names.public(conn, machine_id)
    except machines.FleetError as e:
        raise refused(e) from None
    return {**found, "changed": sorted(diff)}


def ledger_change(c) -> dict:
    """One ledger change of a machine, as the API shows it."""
    return {"number": c.number, "at": c.at.isoformat(), "old_ledger": c.old_ledger, "old_head": c.old_head,
            "new_ledger": c.new_ledger, "stored_from_seq": c.base + 1}


@router.post("/machines/{machine_id}/cabinets", status_code=201)
def add_cabinet(machine_id: str, body: NewCabinet, caller: Caller = Depends(EDIT),
                cloud: FleetCloud = Depends(the_cloud)):
    """Another cabinet for a machine: ``{"number": 2, "name": "chilled"}``."""
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            machines.add_cabinet(conn, machine_id, body.number, body.name)
            people.audit.record(conn, caller, "machine.cabinet", "machine", machine_id,
                                {"number": body.number, "name": body.name}, now)
    except machines.FleetError as e:
        raise refused(e) from None
    return {"machine": machine_id, "number": body.number, "name": body.name.strip()}


# -- planograms --------------------------------------------------------------------------------------

@router.get("/machines/{machine_id}/planogram", dependencies=READ)
def get_planogram(machine_id: str, version: int | None = None, cloud: FleetCloud = Depends(the_cloud)):
    """A planogram version's slots (the newest by default), and the machine's desired against applied."""
    try:
        with reader(cloud.engine).connect() as conn:
            config = planogram.status(conn, machine_id)
            shown = version if version is not None else config["desired_version"]
            if version is not None and not 1 <= version <= config["desired_version"]:
                raise HTTPException(404, f"machine {machine_id} has no planogram version {version}")
            rows = planogram.slots_of(conn, machine_id, shown) if shown else []
    except machines.FleetError as e:
        raise refused(e) from None
    return {"machine": machine_id, "version": shown, **config, "slots": [planogram.slot_dict(r) for r in rows]}


@router.post("/machines/{machine_id}/planogram", status_code=201)
def set_planogram(machine_id: str, body: NewPlanogram, caller: Caller = Depends(EDIT),
                  cloud: FleetCloud = Depends(the_cloud)):
    """A new planogram version, whole: ``{"slots": [{slot, sku, price, currency, capacity, par_level,
    cabinet}], "note": "..."}``; sent to the machine at once, retained, so it arrives even after a stop."""
    try:
        slots, note = planogram.parse(given(body))
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
def planogram_versions(machine_id: str, cloud: FleetCloud = Depends(the_cloud)):
    """Every planogram version of a machine, newest first; who made each is in the audit trail too."""
    try:
        with reader(cloud.engine).connect() as conn:
            return planogram.versions(conn, machine_id)
    except machines.FleetError as e:
        raise refused(e) from None


# -- machines: add, secrets, credentials, slots ------------------------------------------------------

@router.get("/machines", dependencies=[Depends(require(*people.FLEET_READERS))])
def api_machines(cloud: FleetCloud = Depends(the_cloud)):
    with reader(cloud.engine).connect() as conn:
        rows = machines.list_machines(conn)
        configs = planogram.statuses(conn)
        sites = locations.by_machine(conn)
        changed = Counter(c.machine_id for c in ledger.changes(conn))
        named = machine_names.names_of(conn)
    none = planogram.status_of_none()
    return [{"id": m.id, "name": m.name, "names": named.get(m.id, {}), "location": m.location, "online": m.online,
             "retired_at": m.retired_at.isoformat() if m.retired_at else None,
             "last_seen": m.last_seen.isoformat() if m.last_seen else None, "firmware": m.firmware,
             "machine_head": m.machine_head, "cloud_head": m.cloud_head, "ledger_changes": changed[m.id],
             "location_id": sites.get(m.id, {}).get("id"), "location_name": sites.get(m.id, {}).get("name"),
             "planogram": configs.get(m.id, none)} for m in rows]

def broker_note(cloud: "FleetCloud") -> str | None:
    """Rewrite the broker's users after a change; what happened, for the caller to see."""
    try:
        return cloud.refresh_broker()
    except OSError as e:
        log.error("could not rewrite the broker's files: %s", e)
        return f"broker files NOT rewritten: {e}"

def fleet_error(e: machines.FleetError) -> HTTPException:
    return HTTPException(404 if isinstance(e, machines.NoSuchMachine) else 422, str(e))

@router.post("/machines", status_code=201)
def api_add_machine(body: NewMachine, caller: Caller = Depends(require(*people.FLEET_EDITORS)),
                    cloud: FleetCloud = Depends(the_cloud)):
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            if body.location_id is not None:
                locations.get(conn, body.location_id)  # named before anything is written
            secret = machines.add_machine(conn, body.id, body.name, body.location, now, body.secret)
            if body.location_id is not None:
                locations.place(conn, body.id, body.location_id, now)
            creds = machines.credentials(conn, body.id, now)
            people.audit.record(conn, caller, "machine.add", "machine", body.id,
                                {"name": body.name, "location": body.location,
                                 **({"location_id": body.location_id} if body.location_id is not None else {})}, now)
    except machines.FleetError as e:
        raise refused(e) from None
    return {"id": body.id, "secret": secret, "mqtt_username": creds.mqtt_username,
            "mqtt_password": creds.mqtt_password, "broker": broker_note(cloud)}

@router.post("/machines/{machine_id}/rotate-secret")
def api_rotate_secret(machine_id: str, body: Rotation, caller: Caller = Depends(require(*people.SECRET_ADMINS)),
                      cloud: FleetCloud = Depends(the_cloud)):
    overlap = body.overlap_s
    longest = machines.MAX_OVERLAP.total_seconds()
    if not isinstance(overlap, (int, float)) or isinstance(overlap, bool) or not 0 <= overlap <= longest:
        raise HTTPException(422, f"overlap_s must be a number of seconds from 0 to {longest:.0f}")
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            creds = machines.rotate(conn, machine_id, now, timedelta(seconds=overlap))
            people.audit.record(conn, caller, "machine.rotate_secret", "machine", machine_id,
                                {"overlap_s": overlap}, now)
    except machines.FleetError as e:
        raise refused(e) from None
    log.info("machine %s: secret rotated (previous valid until %s)", machine_id, creds.previous_until)
    cloud.tell_credentials_changed(machine_id)
    return {**creds.public(), "secret": creds.secret, "mqtt_password": creds.mqtt_password,
            "broker": broker_note(cloud)}

@router.get("/machine/credentials")
def api_machine_fetches_credentials(request: Request, cloud: FleetCloud = Depends(the_cloud)):
    """A machine, signing with its secret (the previous one too, during a rotation's overlap), takes up
    its current QR secret and broker login, so a rotation never stops it selling."""
    header = request.headers.get("authorization", "")
    try:
        with reader(cloud.engine).connect() as conn:
            now = utcnow()
            machine_id = qrtoken.request_machine(header)
            qrtoken.verify_request(header, machines.secrets_of(conn, machine_id, now), now.timestamp(),
                                   "credentials")
            machines.in_service(conn, machine_id)  # a retired machine gets no login back
            creds = machines.credentials(conn, machine_id, now)
    except (ProtocolError, machines.FleetError) as e:
        # The same answer for an unknown machine and a bad signature: nothing to learn by asking.
        log.warning("refused a machine's credentials request: %s", e)
        raise HTTPException(401, "not a machine of this cloud, or a bad or stale signature",
                            headers={"WWW-Authenticate": "VendMachine"}) from None
    log.info("machine %s fetched its credentials", machine_id)
    return {"id": machine_id, "secret": creds.secret, "mqtt_username": creds.mqtt_username,
            "mqtt_password": creds.mqtt_password}

@router.get("/machines/{machine_id}/credentials")
def api_credentials(machine_id: str, caller: Caller = Depends(require(*people.PROVISIONERS)),
                    cloud: FleetCloud = Depends(the_cloud)):
    """What an SD card needs: the QR secret, the cloud's address, and how to reach the broker."""
    try:
        with cloud.engine.begin() as conn:
            now = utcnow()
            creds = machines.credentials(conn, machine_id, now)
            name = machines.get(conn, machine_id).name
            # Reading a machine's secrets is worth a trace: who wrote which card, when.
            people.audit.record(conn, caller, "machine.credentials_read", "machine", machine_id, {}, now)
    except machines.FleetError as e:
        raise refused(e) from None
    files = cloud.broker_files
    mqtt = {"host": cloud.settings.machine_broker, "username": "", "password": "", "tls": False, "ca_pem": "",
            "port": cloud.settings.broker_address[1], "certificate_port": None}
    if files is not None:
        mqtt.update(username=creds.mqtt_username, password=creds.mqtt_password, tls=True,
                    ca_pem=cloud.ca.ensure().cert_pem, port=files.ports.password,
                    certificate_port=files.ports.certificate)
    return {"id": machine_id, "name": name, "secret": creds.secret, "cloud_url": cloud.settings.public_url,
            "mqtt": mqtt}

@router.post("/machines/{machine_id}/certificate")
def api_certificate(machine_id: str, caller: Caller = Depends(require(*people.PROVISIONERS)),
                    cloud: FleetCloud = Depends(the_cloud)):
    """A new client certificate and key for a machine, signed by the fleet CA (the key is not kept)."""
    try:
        with cloud.engine.begin() as conn:
            machines.in_service(conn, machine_id)  # a retired machine's certificate would reach no topic
            if cloud.ca is None:
                raise HTTPException(409, "this cloud keeps no CA: start it with --broker-files")
            cert, key = cloud.ca.ensure().issue_client(machine_id)
            people.audit.record(conn, caller, "machine.certificate", "machine", machine_id, {}, utcnow())
    except machines.FleetError as e:
        raise refused(e) from None
    log.info("machine %s: client certificate issued", machine_id)
    return {"id": machine_id, "cert_pem": cert, "key_pem": key, "ca_pem": cloud.ca.cert_pem,
            "port": cloud.broker_files.ports.certificate if cloud.broker_files else None}

@router.put("/machines/{machine_id}/slots")
def api_set_slots(machine_id: str, body: list[SlotChange], caller: Caller = Depends(require(*people.FLEET_EDITORS)),
                  cloud: FleetCloud = Depends(the_cloud)):
    """Change some slots: a new planogram version with these slots changed, sent to the machine."""
    try:
        specs = [machines.SlotSpec.from_obj(given(item)) for item in body]
        with cloud.engine.begin() as conn:
            now = utcnow()
            version = planogram.set_slots(conn, machine_id, specs, now, caller.user_id)
            people.audit.record(conn, caller, "machine.slots", "machine", machine_id,
                                {"slots": [dataclasses.asdict(s) for s in specs], "version": version}, now)
    except machines.FleetError as e:
        raise HTTPException(422, str(e)) from None
    return {"machine": machine_id, "slots": len(specs), "version": version,
            "published": cloud.publish_config(machine_id)}

@router.get("/machines/{machine_id}/slots", dependencies=[Depends(require(*people.FLEET_READERS))])
def api_slots(machine_id: str, cloud: FleetCloud = Depends(the_cloud)):
    with reader(cloud.engine).connect() as conn:
        return [{"slot": r.slot, "sku": r.sku, "name": r.name, "price": r.price, "currency": r.currency,
                 "count": r.count, "capacity": r.capacity, "par_level": r.par_level, "cabinet": r.cabinet,
                 "flagged": r.flagged}
                for r in machines.menu(conn, machine_id)]

