"""What the stock API and the stock dashboard pages both call: the day by the cloud's clock, a supplier
account's own supplier, and a purchase order's confirmation with its audit row."""

from __future__ import annotations

from datetime import date, timezone

from cloud import people
from cloud.people import SUPPLIER, Caller, Gate
from cloud.stock import purchasing


def today_of(g: Gate) -> date:
    return g.now().astimezone(timezone.utc).date()


def own_supplier(caller: Caller) -> int | None:
    """The supplier a supplier's account acts for (it sees only that supplier's orders); None for staff."""
    return caller.supplier_id if caller.role == SUPPLIER else None


def record_confirmation(conn, caller: Caller, po_id: int, now, expected_on) -> bool:
    """Confirm a sent order (``expected_on``: a date, its ISO text, or None) and audit it when that changed
    something; the API and the dashboard both confirm through here."""
    changed = purchasing.confirm(conn, po_id, now, caller.user_id, expected_on, own_supplier(caller))
    if changed:
        promised = date.fromisoformat(str(expected_on)) if expected_on is not None else None
        people.audit.record(conn, caller, "po.confirm", "purchase_order", po_id, {"expected_on": promised}, now)
    return changed
