"""What a person does to alerts, the same from the API and the dashboard: acknowledge or resolve one, save
or delete a rule; each change audited in its own transaction."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.alerts import occurrences, rules
from cloud.alerts.delivery import Channels, DeliveryError
from cloud.alerts.watch import KINDS, send_test
from cloud.core.db import utcnow
from cloud.people import audit


def change_alert(engine: sa.Engine, caller, alert_id: int, action: str) -> tuple[object, bool]:
    """Acknowledge or resolve one occurrence; (its row, whether it changed). A second time changes nothing."""
    step = occurrences.acknowledge if action == "acknowledge" else occurrences.resolve
    now = utcnow()
    with engine.begin() as conn:
        row, changed = step(conn, alert_id, caller.username, now)
        if changed:
            audit.record(conn, caller, f"alert.{action}", "alert", alert_id,
                         {"kind": row.kind, "machine": row.machine_id, "slot": row.slot}, now)
    return row, changed


def save_rule(engine: sa.Engine, channels: Channels, dashboard: str, caller, kinds, channel, target, note,
              test: bool = True, rule_id: int | None = None) -> rules.Rule:
    """Check, test (if asked) and save a rule. RuleError names each field at fault; then nothing is saved,
    and a test message that did not arrive is such a fault (of the address)."""
    if rule_id is not None:
        with engine.connect() as conn:
            rules.get(conn, rule_id)
    kinds, channel, target, note = rules.check(kinds, channel, target, note, KINDS)
    if test:
        try:
            send_test(channels, channel, target, dashboard)
        except DeliveryError as e:
            raise rules.RuleError({"target": ("not_delivered", f"the test message did not arrive: {e}")}) from None
    now = utcnow()
    with engine.begin() as conn:
        if rule_id is None:
            rule = rules.add(conn, kinds, channel, target, note, caller.username, now, KINDS)
        else:
            rule = rules.update(conn, rule_id, kinds, channel, target, note, now, KINDS)
        audit.record(conn, caller, "alert_rule.add" if rule_id is None else "alert_rule.change", "alert_rule",
                     rule.id, {"kinds": list(kinds), "channel": channel, "target": target, "note": note}, now)
    return rule


def delete_rule(engine: sa.Engine, caller, rule_id: int) -> rules.Rule:
    now = utcnow()
    with engine.begin() as conn:
        rule = rules.delete(conn, rule_id)
        audit.record(conn, caller, "alert_rule.delete", "alert_rule", rule_id, rule.public(), now)
    return rule
