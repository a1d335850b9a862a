"""Staff and supplier changes made by a person, each with its audit row in the same transaction: what the
API and the dashboard both call, so both write the same trail."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.people import audit, auth, staff
from cloud.people.auth import Caller, Gate
from cloud.people.staff import PeopleError


def create_person(g: Gate, caller: Caller, username, role, password, supplier_id) -> tuple[dict, str | None]:
    """Add a staff account and its audit row: (the account, its one-time password when none was given).
    PeopleError for anything wrong, a taken username included (409)."""
    username = staff.clean_username(username)
    if role not in staff.ROLES:
        raise PeopleError(f"role must be one of: {', '.join(staff.ROLES)}")
    one_time = staff.one_time_password() if password is None else None
    password_hash = staff.hash_password(one_time or staff.check_password(password, username))
    now = g.now()
    try:
        with g.engine.begin() as conn:
            user_id = staff.add_staff(conn, username, role, now, password_hash, one_time is not None, supplier_id)
            audit.record(conn, caller, "people.add", "staff", user_id,
                         {"username": username, "role": role, "supplier_id": supplier_id}, now)
            row = staff.get(conn, user_id)
    except sa.exc.IntegrityError:
        raise PeopleError(f"username {username!r} is taken", 409) from None
    return staff.public(row), one_time


def update_person(g: Gate, caller: Caller, user_id: int, changes: dict,
                  reset_password: bool = False) -> tuple[dict, dict, str | None]:
    """Change a staff account (role, supplier_id, disabled) and audit it; a disabled account's sessions and
    tokens end at once, a reset gives a new one-time password and ends its sessions: (the account, the
    change as {field: [old, new]}, the one-time password if reset). PeopleError for anything wrong."""
    one_time = staff.one_time_password() if reset_password else None
    if one_time:
        changes = {**changes, "password_hash": staff.hash_password(one_time), "must_change_password": True}
    now = g.now()
    with g.engine.begin() as conn:
        diff = staff.update_staff(conn, user_id, changes)
        if diff.get("disabled") == [False, True]:
            auth.revoke_all(conn, user_id, now)
        elif one_time:
            auth.revoke_all(conn, user_id, now, tokens=False)
        if diff:
            audit.record(conn, caller, "people.change", "staff", user_id, diff, now)
        row = staff.get(conn, user_id)
    return staff.public(row), diff, one_time


def create_supplier(g: Gate, caller: Caller, name, contact="", **details) -> dict:
    """Add a supplier (``details``: email, phone, address, lead_time_days) and its audit row; PeopleError
    naming the field for anything wrong."""
    now = g.now()
    with g.engine.begin() as conn:
        supplier_id = staff.add_supplier(conn, name, contact, now, **details)
        row = staff.supplier_public(staff.get_supplier(conn, supplier_id))
        audit.record(conn, caller, "supplier.add", "supplier", supplier_id,
                     {k: v for k, v in row.items() if k not in ("id", "created_at")}, now)
    return row
