"""Dashboard: the alerts page (open, acknowledged, resolved; who and when; each one's deliveries), its
acknowledge and resolve buttons, and the rules of who is told of which kinds. The buttons and the rules
form call the functions the API calls (``cloud/alerts/actions.py``), so they audit the same way; a staff
form from another site is refused by the session check (``cloud/people/auth.py``: ``same_origin``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse

from cloud import people
from cloud.core.db import reader
from cloud.alerts import KINDS, NAMES, actions, delivery, occurrences, rules
from cloud.people.auth import Caller, staff_only
from cloud.web.dashboard import add_page, dash
from cloud.web.pages import translator

router = APIRouter(include_in_schema=False)
add_page("/staff/alerts", "Alerts", people.FLEET_READERS, order=15)
READ = Depends(staff_only(*people.FLEET_READERS))
EDIT = Depends(staff_only(*people.FLEET_EDITORS))
RESOLVED_SHOWN = 50
FILTERS = ("current", "open", "acknowledged", "resolved")


def _(message: str) -> str:
    """Marks a message for the catalog: translated where it is shown, in the reader's language."""
    return message


DONE = {"acknowledge": _("The alert is acknowledged."), "resolve": _("The alert is resolved."),
        "unchanged": _("Nothing changed: someone did it already."), "rule": _("The rule is saved."),
        "deleted": _("The rule is deleted.")}
CHANNEL_NAMES = {"email": _("E-mail"), "webhook": _("Webhook")}
DELIVERY_STATES = {"queued": _("waiting to be sent"), "delivered": _("delivered"), "failed": _("gave up")}
# What is wrong with a rule's field, by RuleError's code, in the reader's language.
RULE_ERRORS = {"no_kinds": _("Choose at least one kind of alert."),
               "unknown_kind": _("Choose among the kinds listed."),
               "channel": _("Choose e-mail or webhook."),
               "not_email": _("This is not an e-mail address (like name@example.com)."),
               "not_url": _("A webhook address is an http:// or https:// URL, with no password in it."),
               "note_long": _("The note is at most 80 characters."),
               "not_delivered": _("The test message did not arrive, so the rule was not saved: {reason}"),
               "no_rule": _("There is no such rule; it may have been deleted.")}


def the_cloud(request: Request):
    return request.app.state.cloud


def _alerts_page(request: Request, caller: Caller, cloud, show: str = "current", status_code: int = 200,
                 form: dict | None = None, errors: dict | None = None, done: str = ""):
    cloud.alerter.refresh_if_idle()
    states = {"current": ("open", "acknowledged"), "open": ("open",), "acknowledged": ("acknowledged",),
              "resolved": ()}[show if show in FILTERS else "current"]
    can_edit = caller.role in people.FLEET_EDITORS
    with reader(cloud.engine).connect() as conn:
        current = occurrences.listing(conn, states) if states else []
        resolved = occurrences.listing(conn, ("resolved",), limit=RESOLVED_SHOWN) if show in ("current", "resolved") \
            else []
        sent = delivery.of_occurrences(conn, [r.id for r in current + resolved])
        counts = occurrences.counts(conn)
        rule_list = rules.list_rules(conn) if can_edit else []
    if form is None:
        form = {"rule_id": "", "kinds": list(KINDS), "channel": "email", "target": "", "note": "", "test": True}
        edit = request.query_params.get("edit", "")
        match = next((r for r in rule_list if str(r.id) == edit), None)
        if match is not None:
            form = {"rule_id": str(match.id), "kinds": list(match.kinds), "channel": match.channel,
                    "target": match.target, "note": match.note, "test": False}
    return dash(request, caller, "dash_alerts.html", status_code, current=current, resolved=resolved, sent=sent,
                counts=counts, show=show if show in FILTERS else "current", names=NAMES, kinds=KINDS,
                state_of=occurrences.state_of, rules=rule_list, can_edit=can_edit, form=form, errors=errors or {},
                done=DONE.get(done, ""), channels=CHANNEL_NAMES, delivery_states=DELIVERY_STATES)


@router.get("/staff/alerts")
def alerts_page(request: Request, show: str = "current", done: str = "", caller: Caller = READ,
                cloud=Depends(the_cloud)):
    return _alerts_page(request, caller, cloud, show, done=done)


@router.post("/staff/alerts/{alert_id}/{action}")
def change_alert(request: Request, alert_id: int, action: str, caller: Caller = READ, cloud=Depends(the_cloud)):
    """The acknowledge and resolve buttons."""
    _ = translator(request)
    if action not in ("acknowledge", "resolve"):
        return dash(request, caller, "dash_problem.html", 404, title=_("Not found"),
                    message=_("There is no such page."))
    try:
        _row, changed = actions.change_alert(cloud.engine, caller, alert_id, action)
    except occurrences.AlertError:
        return dash(request, caller, "dash_problem.html", 404, title=_("Unknown alert"),
                    message=_("There is no alert {id}.", id=alert_id))
    return RedirectResponse(f"/staff/alerts?done={action if changed else 'unchanged'}#alert-{alert_id}",
                            status_code=303)


@router.post("/staff/alert-rules")
async def save_rule(request: Request, caller: Caller = EDIT, cloud=Depends(the_cloud)):
    """Add or change a rule; a test message goes first if asked, and the rule is saved only if it arrived.
    A refused form comes back as typed, with each error next to its field."""
    _ = translator(request)
    data = await request.form()
    form = {"rule_id": str(data.get("rule_id", "")).strip(), "kinds": [str(k) for k in data.getlist("kinds")],
            "channel": str(data.get("channel", "")), "target": str(data.get("target", "")),
            "note": str(data.get("note", "")), "test": data.get("test") == "yes"}
    rule_id = int(form["rule_id"]) if form["rule_id"].isdigit() else None
    try:
        actions.save_rule(cloud.engine, cloud.alerter.channels, cloud.settings.public_url, caller, form["kinds"],
                          form["channel"], form["target"], form["note"], form["test"], rule_id)
    except rules.RuleError as e:
        errors = {}
        for field, code in e.codes.items():
            reason = e.errors[field].removeprefix("the test message did not arrive: ")
            errors[field] = _(RULE_ERRORS[code], reason=reason)
        return _alerts_page(request, caller, cloud, status_code=e.status if e.status != 404 else 422, form=form,
                            errors=errors)
    return RedirectResponse("/staff/alerts?done=rule#rules", status_code=303)


@router.post("/staff/alert-rules/{rule_id}/delete")
def delete_rule(request: Request, rule_id: int, caller: Caller = EDIT, cloud=Depends(the_cloud)):
    try:
        actions.delete_rule(cloud.engine, caller, rule_id)
    except rules.RuleError:
        pass  # deleted already (a second click): the page shows the rules as they are
    return RedirectResponse("/staff/alerts?done=deleted#rules", status_code=303)
