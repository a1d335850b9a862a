"""The alerts API under /api/v1: the occurrences (open, acknowledged, resolved), acknowledging and resolving
one, and the rules of who is told of which kinds. Reading and acknowledging is for fleet readers (a
technician clears faults); the rules, which hold people's addresses, are for fleet editors. Every change
writes its audit row in its own transaction."""

from __future__ import annotations

from typing import Protocol

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from cloud import people
from cloud.core.db import reader
from cloud.alerts import KINDS, Alerter
from cloud.alerts import actions, delivery, occurrences, rules
from cloud.core.settings import Settings
from cloud.fleet import machines
from cloud.people import Caller, require

router = APIRouter(prefix="/api/v1", tags=["alerts"])
READ = require(*people.FLEET_READERS)
EDIT = require(*people.FLEET_EDITORS)


class AlertsCloud(Protocol):
    """What the alerts' routes ask of the running cloud (``cloud.service.Cloud`` is one)."""

    engine: sa.Engine
    settings: Settings
    alerter: Alerter


def the_cloud(request: Request) -> AlertsCloud:
    return request.app.state.cloud


class RuleBody(BaseModel):
    """A rule: which kinds of alert go to one address. ``test`` sends a test message first and saves the
    rule only if it arrives."""

    model_config = ConfigDict(extra="forbid")
    kinds: list[str] = Field(description=f"alert kinds: {', '.join(KINDS)}")
    channel: str = Field(description="email or webhook")
    target: str = Field(description="an e-mail address, or the http(s) URL of a webhook receiver")
    note: str = ""
    test: bool = True


def _states(state: str) -> tuple[str, ...]:
    wanted = tuple(s for s in state.split(",") if s)
    if state == "all":
        return occurrences.STATES
    if not wanted or set(wanted) - set(occurrences.STATES):
        raise HTTPException(422, f"state is a comma-separated list of {', '.join(occurrences.STATES)}, or all")
    return wanted


def _with_deliveries(conn, rows) -> list[dict]:
    sent = delivery.of_occurrences(conn, [r.id for r in rows])
    return [dict(occurrences.public(r), deliveries=[delivery.public(d) for d in sent.get(r.id, [])]) for r in rows]


@router.get("/alerts")
def list_alerts(state: str = Query("open,acknowledged", description="open, acknowledged, resolved (comma-"
                                   "separated), or all"),
                machine: str | None = None, limit: int = Query(200, ge=1, le=1000),
                caller: Caller = Depends(READ), cloud: AlertsCloud = Depends(the_cloud)):
    """The alerts kept, newest first (by default those not resolved), each with its deliveries."""
    states = _states(state)  # a refused request writes nothing: checked before looking for alerts
    cloud.alerter.refresh_if_idle()
    with reader(cloud.engine).connect() as conn:
        return _with_deliveries(conn, occurrences.listing(conn, states, machine, limit))


@router.get("/machines/{machine_id}/alerts")
def machine_alerts(machine_id: str, state: str = "open,acknowledged", caller: Caller = Depends(READ),
                   cloud: AlertsCloud = Depends(the_cloud)):
    """One machine's alerts (by default those not resolved)."""
    states = _states(state)
    with reader(cloud.engine).connect() as conn:
        try:
            machines.get(conn, machine_id)
        except machines.NoSuchMachine as e:
            raise HTTPException(404, str(e)) from None
    cloud.alerter.refresh_if_idle()
    with reader(cloud.engine).connect() as conn:
        return _with_deliveries(conn, occurrences.listing(conn, states, machine_id))


@router.get("/alerts/{alert_id}")
def one_alert(alert_id: int, caller: Caller = Depends(READ), cloud: AlertsCloud = Depends(the_cloud)):
    with reader(cloud.engine).connect() as conn:
        try:
            return _with_deliveries(conn, [occurrences.get(conn, alert_id)])[0]
        except occurrences.AlertError as e:
            raise HTTPException(e.status, str(e)) from None


def change_alert(cloud: AlertsCloud, caller: Caller, alert_id: int, action: str) -> dict:
    try:
        row, changed = actions.change_alert(cloud.engine, caller, alert_id, action)
    except occurrences.AlertError as e:
        raise HTTPException(e.status, str(e)) from None
    return dict(occurrences.public(row), changed=changed)


@router.post("/alerts/{alert_id}/ack")
def acknowledge(alert_id: int, caller: Caller = Depends(READ), cloud: AlertsCloud = Depends(the_cloud)):
    """Say someone is on it: the alert stays until its condition clears or it is resolved."""
    return change_alert(cloud, caller, alert_id, "acknowledge")


@router.post("/alerts/{alert_id}/resolve")
def resolve(alert_id: int, caller: Caller = Depends(READ), cloud: AlertsCloud = Depends(the_cloud)):
    """End the alert by hand; while its condition lasts it is not raised again."""
    return change_alert(cloud, caller, alert_id, "resolve")


# -- rules --------------------------------------------------------------------------------------------

def rule_refused(e: rules.RuleError) -> HTTPException:
    return HTTPException(e.status, str(e))


@router.get("/alert-rules")
def list_rules(caller: Caller = Depends(EDIT), cloud: AlertsCloud = Depends(the_cloud)):
    with reader(cloud.engine).connect() as conn:
        return [r.public() for r in rules.list_rules(conn)]


@router.post("/alert-rules", status_code=201)
def add_rule(body: RuleBody, caller: Caller = Depends(EDIT), cloud: AlertsCloud = Depends(the_cloud)):
    """A new rule, after its test message arrived (unless ``test`` is false)."""
    try:
        return actions.save_rule(cloud.engine, cloud.alerter.channels, cloud.settings.public_url, caller, body.kinds,
                                 body.channel, body.target, body.note, body.test).public()
    except rules.RuleError as e:
        raise rule_refused(e) from None


@router.put("/alert-rules/{rule_id}")
def change_rule(rule_id: int, body: RuleBody, caller: Caller = Depends(EDIT), cloud: AlertsCloud = Depends(the_cloud)):
    try:
        return actions.save_rule(cloud.engine, cloud.alerter.channels, cloud.settings.public_url, caller, body.kinds,
                                 body.channel, body.target, body.note, body.test, rule_id).public()
    except rules.RuleError as e:
        raise rule_refused(e) from None


@router.delete("/alert-rules/{rule_id}")
def delete_rule(rule_id: int, caller: Caller = Depends(EDIT), cloud: AlertsCloud = Depends(the_cloud)):
    try:
        return actions.delete_rule(cloud.engine, caller, rule_id).public()
    except rules.RuleError as e:
        raise rule_refused(e) from None


