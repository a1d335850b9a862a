"""Settlement changes made by a person, each with its audit row in the same transaction: a rule added, a
statement posted once. What the API and the dashboard both call."""

from __future__ import annotations

from cloud import people
from cloud.finance import settlement
from cloud.finance.common import period_of
from cloud.people.auth import Caller, Gate


def record_rule(g: Gate, caller: Caller, location_id: int, body: dict) -> dict:
    """Add a settlement rule and its audit row in one transaction; FinanceError naming the field."""
    now = g.now()
    with g.engine.begin() as conn:
        rule = settlement.add_rule(conn, location_id, body, now, caller.user_id)
        people.audit.record(conn, caller, "settlement.rule.add", "location", location_id, rule, now)
    return rule


def statement_for(g: Gate, location_id: int, period: str, currency: str) -> dict:
    start, end = period_of(period)
    with g.engine.begin() as conn:
        return settlement.statement(conn, location_id, start, end, currency, g.now())


def record_posting(g: Gate, caller: Caller, location_id: int, period: str, currency: str) -> tuple[dict, bool]:
    """Post a statement once (audited when posted now): (the statement, whether it was posted now)."""
    now = g.now()
    start, end = period_of(period)
    with g.engine.begin() as conn:
        s, made = settlement.post_statement(conn, location_id, start, end, currency, now, caller.user_id)
        if made:
            people.audit.record(conn, caller, "statement.post", "location", location_id,
                                {"period": s["period"], "currency": s["currency"], "total": s["total_due"]}, now)
    return s, made
