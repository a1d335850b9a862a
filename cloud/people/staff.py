"""Staff accounts and suppliers: roles, the password rules, argon2 hashes, and a login that tells nothing.

Hashing costs tens of milliseconds on purpose. SQLite's write lock is taken at the start of every
transaction here (``BEGIN IMMEDIATE``), so no hash is ever computed inside one: callers hash first
(``hash_password``), then write; a login reads (``login_state``), verifies (``check_login``), then writes
what it learned (``note_login``).
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from cloud.core.db import MAX_ID, UTCDateTime, metadata

ADMINISTRATOR, MANAGER, TECHNICIAN, SUPPLIER = "administrator", "manager", "technician", "supplier"
ROLES = (ADMINISTRATOR, MANAGER, TECHNICIAN, SUPPLIER)

suppliers = sa.Table(
    "suppliers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(80), nullable=False, unique=True),
    sa.Column("contact", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # What purchasing needs to reach a supplier and plan around it (migration 0004, the stock module's).
    sa.Column("email", sa.String(200), nullable=False, server_default=""),
    sa.Column("phone", sa.String(40), nullable=False, server_default=""),
    sa.Column("address", sa.String(300), nullable=False, server_default=""),
    sa.Column("lead_time_days", sa.Integer, nullable=True),  # from order sent to goods at the door
)

staff = sa.Table(
    "staff", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(40), nullable=False, unique=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("supplier_id", sa.Integer, sa.ForeignKey("suppliers.id"), nullable=True),
    sa.Column("password_hash", sa.String(200), nullable=True),  # none yet: token only (the built-in admin)
    sa.Column("must_change_password", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("builtin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Failed logins are counted per username whether or not that user exists, so that the lockout itself
# does not tell an attacker which names are real.
login_failures = sa.Table(
    "login_failures", metadata,
    sa.Column("username", sa.String(40), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_failed_at", UTCDateTime, nullable=False),
    sa.Column("locked_until", UTCDateTime, nullable=True),
)

USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,39}\Z")
PASSWORD_MIN, PASSWORD_MAX = 10, 256
MIN_SCORE = 2  # zxcvbn's 0-4: 2 is "somewhat guessable", enough behind argon2 and a lockout
ZXCVBN_MAX = 72  # zxcvbn refuses longer input; the rest of a longer password only adds to its strength
FREE_FAILURES = 5  # failed logins in a row before the backoff starts
LOCK_BASE = timedelta(seconds=30)  # doubled with each further failure...
LOCK_MAX = timedelta(hours=1)  # ...up to this
FORGET_AFTER = timedelta(days=1)  # failures older than this no longer count

# argon2id with RFC 9106's second recommended parameters (t=3, 64 MiB, p=4). A module attribute so that
# tests can use cheaper ones; a hash made with other parameters is redone at its next login.
hasher = PasswordHasher()
_dummy: tuple[PasswordHasher, str] | None = None


class PeopleError(ValueError):
    """Bad input to a people function; ``status`` is the HTTP status that fits (404, 409 or 422)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def clean_username(raw) -> str:
    name = raw.strip().lower() if isinstance(raw, str) else ""
    if not USERNAME_RE.match(name):
        raise PeopleError("username: 2 to 40 characters, lower-case letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return name


def check_password(password, username: str = "") -> str:
    """The password as it will be hashed (NFC), or PeopleError naming the rule it breaks."""
    if not isinstance(password, str):
        raise PeopleError("password: must be text")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in password):
        raise PeopleError("password: control characters and unpaired surrogates are not allowed "
                          "(rule: printable text)")
    password = unicodedata.normalize("NFC", password)
    if len(password) < PASSWORD_MIN:
        raise PeopleError(f"password too short: at least {PASSWORD_MIN} characters (rule: length)")
    if len(password) > PASSWORD_MAX:
        raise PeopleError(f"password too long: at most {PASSWORD_MAX} characters (rule: length)")
    if len(username) >= 3 and username.casefold() in password.casefold():
        raise PeopleError("password contains the username (rule: not based on the username)")
    result = zxcvbn(password[:ZXCVBN_MAX], user_inputs=[username] if username else [])
    if result["score"] < MIN_SCORE:
        why = result["feedback"]["warning"] or "it is made of common words, names or patterns"
        raise PeopleError(f"password too common or too easy to guess: {why.rstrip('.')} "
                          f"(rule: a zxcvbn strength of at least {MIN_SCORE} of 4)")
    return password


def hash_password(password: str) -> str:
    """An argon2id hash of a password that passed ``check_password``."""
    return hasher.hash(password)


def one_time_password() -> str:
    return secrets.token_urlsafe(12)


def _as_bytes(password) -> bytes:
    # Login takes whatever arrives: an unpaired surrogate must make a wrong password, not an error.
    text = unicodedata.normalize("NFC", password) if isinstance(password, str) else ""
    return text.encode("utf-8", "surrogatepass")


def dummy_hash() -> str:
    """A hash with today's parameters, verified when there is no real one, so that a login for a name that
    does not exist costs what one for a real name does."""
    global _dummy
    if _dummy is None or _dummy[0] is not hasher:
        _dummy = (hasher, hasher.hash(secrets.token_hex(16)))
    return _dummy[1]


def verify(encoded: str, password) -> bool:
    try:
        return hasher.verify(encoded, _as_bytes(password))
    except (VerificationError, InvalidHashError):
        return False


# -- suppliers ---------------------------------------------------------------------------------------

SUPPLIER_TEXT = {"contact": 200, "email": 200, "phone": 40, "address": 300}
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")


def _supplier_values(changes: dict) -> dict:
    """Supplier fields checked and cleaned; PeopleError naming the field that is wrong."""
    out = {}
    for key, value in changes.items():
        if key == "name":
            name = unicodedata.normalize("NFC", value.strip()) if isinstance(value, str) else ""
            if not 1 <= len(name) <= 80 or any(unicodedata.category(ch).startswith("C") for ch in name):
                raise PeopleError("supplier name: 1 to 80 printable characters")
            out[key] = name
        elif key in SUPPLIER_TEXT:
            text = value.strip() if isinstance(value, str) else None
            if text is None or len(text) > SUPPLIER_TEXT[key] or any(unicodedata.category(ch) in ("Cc", "Cs")
                                                                     for ch in text):
                raise PeopleError(f"supplier {key}: at most {SUPPLIER_TEXT[key]} printable characters")
            if key == "email" and text and not EMAIL_RE.match(text):
                raise PeopleError("supplier email: an address like orders@example.com")
            out[key] = text
        elif key == "lead_time_days":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 365):
                raise PeopleError("supplier lead_time_days: a whole number of days from 0 to 365")
            out[key] = value
        else:
            raise PeopleError(f"supplier {key}: not a supplier field")
    return out


def add_supplier(conn: sa.Connection, name, contact, now: datetime, **details) -> int:
    """A new supplier; ``details``: email, phone, address, lead_time_days."""
    values = _supplier_values({"name": name, "contact": contact if isinstance(contact, str) else "", **details})
    if conn.execute(sa.select(suppliers.c.id).where(suppliers.c.name == values["name"])).first() is not None:
        raise PeopleError(f"a supplier named {values['name']!r} exists already", 409)
    return conn.execute(suppliers.insert().values(created_at=now, **values)).inserted_primary_key[0]


def update_supplier(conn: sa.Connection, supplier_id: int, changes: dict) -> dict:
    """Change a supplier's fields; {field: [old, new]} of what changed."""
    row = get_supplier(conn, supplier_id)
    if row is None:
        raise PeopleError(f"no supplier {supplier_id}", 404)
    values = _supplier_values(changes)
    if "name" in values and conn.execute(sa.select(suppliers.c.id).where(
            suppliers.c.name == values["name"], suppliers.c.id != supplier_id)).first() is not None:
        raise PeopleError(f"a supplier named {values['name']!r} exists already", 409)
    diff = {k: [getattr(row, k), v] for k, v in values.items() if getattr(row, k) != v}
    if diff:
        conn.execute(suppliers.update().where(suppliers.c.id == supplier_id).values(**values))
    return diff


def supplier_public(row) -> dict:
    return {"id": row.id, "name": row.name, "contact": row.contact, "email": row.email, "phone": row.phone,
            "address": row.address, "lead_time_days": row.lead_time_days, "created_at": row.created_at.isoformat()}


def list_suppliers(conn: sa.Connection) -> list:
    return conn.execute(sa.select(suppliers).order_by(suppliers.c.id)).all()


def get_supplier(conn: sa.Connection, supplier_id: int):
    if not isinstance(supplier_id, int) or not 0 < supplier_id <= MAX_ID:
        return None  # SQLite cannot even bind an id past 64 bits: no such supplier
    return conn.execute(sa.select(suppliers).where(suppliers.c.id == supplier_id)).first()


# -- staff -------------------------------------------------------------------------------------------

def _check_role(conn: sa.Connection, role, supplier_id) -> None:
    if role not in ROLES:
        raise PeopleError(f"role must be one of: {', '.join(ROLES)}")
    if role == SUPPLIER:
        if supplier_id is None:
            raise PeopleError("a supplier account needs supplier_id: the supplier it acts for")
        if get_supplier(conn, supplier_id) is None:
            raise PeopleError(f"no supplier {supplier_id}", 404)
    elif supplier_id is not None:
        raise PeopleError("only a supplier account is linked to a supplier (supplier_id)")


def add_staff(conn: sa.Connection, username: str, role: str, now: datetime, password_hash: str | None,
              must_change_password: bool, supplier_id: int | None = None, builtin: bool = False) -> int:
    """Create a staff account; ``username`` already cleaned, ``password_hash`` from ``hash_password``."""
    _check_role(conn, role, supplier_id)
    if get_by_name(conn, username) is not None:
        raise PeopleError(f"username {username!r} is taken", 409)
    return conn.execute(staff.insert().values(
        username=username, role=role, supplier_id=supplier_id, password_hash=password_hash,
        must_change_password=must_change_password, builtin=builtin, created_at=now)).inserted_primary_key[0]


def get(conn: sa.Connection, user_id: int):
    return conn.execute(sa.select(staff).where(staff.c.id == user_id)).first()


def get_by_name(conn: sa.Connection, username: str):
    return conn.execute(sa.select(staff).where(staff.c.username == username)).first()


def builtin_admin(conn: sa.Connection):
    return conn.execute(sa.select(staff).where(staff.c.builtin == sa.true())).first()


def list_staff(conn: sa.Connection) -> list:
    return conn.execute(sa.select(staff).order_by(staff.c.id)).all()


def public(row) -> dict:
    """A staff row as the API shows it: never the hash."""
    return {"id": row.id, "username": row.username, "role": row.role, "supplier_id": row.supplier_id,
            "disabled": row.disabled, "builtin": row.builtin, "has_password": row.password_hash is not None,
            "must_change_password": row.must_change_password, "created_at": row.created_at.isoformat()}


def update_staff(conn: sa.Connection, user_id: int, changes: dict) -> dict:
    """Apply ``changes`` (role, supplier_id, disabled, password_hash, must_change_password) to a user;
    return what changed as {field: [old, new]} (the hash only as "changed"). Refuses to leave the fleet
    without an active administrator."""
    row = get(conn, user_id)
    if row is None:
        raise PeopleError(f"no staff member {user_id}", 404)
    role = changes.get("role", row.role)
    supplier_id = changes.get("supplier_id", row.supplier_id if role == SUPPLIER else None)
    if "role" in changes or "supplier_id" in changes:
        _check_role(conn, role, supplier_id)
    disabled = changes.get("disabled", row.disabled)
    if row.role == ADMINISTRATOR and not row.disabled and (role != ADMINISTRATOR or disabled):
        others = conn.execute(sa.select(sa.func.count()).select_from(staff).where(
            staff.c.role == ADMINISTRATOR, staff.c.disabled == sa.false(), staff.c.id != user_id)).scalar()
        if not others:
            raise PeopleError("this is the last active administrator: make another one first", 409)
    values = {"role": role, "supplier_id": supplier_id, "disabled": disabled}
    for key in ("password_hash", "must_change_password"):
        if key in changes:
            values[key] = changes[key]
    diff = {k: [getattr(row, k), v] for k, v in values.items() if getattr(row, k) != v}
    if "password_hash" in diff:
        diff["password_hash"] = "changed"
    if diff:
        conn.execute(staff.update().where(staff.c.id == user_id).values(**values))
    return diff


# -- login -------------------------------------------------------------------------------------------

@dataclass
class LoginState:
    """What a login attempt found before the password is checked."""

    username: str  # cleaned; '' when the name cannot exist
    user: object  # the staff row, or None
    locked_until: datetime | None


@dataclass
class LoginVerdict:
    ok: bool  # the password matched an enabled account and no lock holds
    locked_for: timedelta | None  # refused because of the backoff
    new_hash: str | None  # the password rehashed with today's parameters


def login_state(conn: sa.Connection, username, now: datetime) -> LoginState:
    try:
        name = clean_username(username)
    except PeopleError:
        return LoginState("", None, None)
    lock = conn.execute(sa.select(login_failures.c.locked_until)
                        .where(login_failures.c.username == name)).scalar()
    return LoginState(name, get_by_name(conn, name), lock if lock is not None and lock > now else None)


def check_login(state: LoginState, password, now: datetime) -> LoginVerdict:
    """Verify the password: exactly one argon2 verification on every path, real user or not."""
    user = state.user
    encoded = user.password_hash if user is not None and user.password_hash else dummy_hash()
    matched = verify(encoded, password) and user is not None and user.password_hash is not None
    if state.locked_until is not None:
        return LoginVerdict(False, state.locked_until - now, None)
    ok = matched and not user.disabled
    new_hash = None
    if ok and hasher.check_needs_rehash(user.password_hash):
        new_hash = hasher.hash(unicodedata.normalize("NFC", password))
    return LoginVerdict(ok, None, new_hash)


def note_login(conn: sa.Connection, state: LoginState, verdict: LoginVerdict, now: datetime) -> None:
    """Record the outcome: clear the failures after a success, count one after a failure."""
    if not state.username or verdict.locked_for is not None:
        return
    f = login_failures
    if verdict.ok:
        conn.execute(f.delete().where(f.c.username == state.username))
        if verdict.new_hash:
            conn.execute(staff.update().where(staff.c.id == state.user.id).values(password_hash=verdict.new_hash))
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stale = f.c.last_failed_at < now - FORGET_AFTER
    conn.execute(insert(f).values(username=state.username, failures=1, last_failed_at=now, locked_until=None)
                 .on_conflict_do_update(index_elements=[f.c.username], set_={
                     "failures": sa.case((stale, 1), else_=f.c.failures + 1), "last_failed_at": now}))
    failures = conn.execute(sa.select(f.c.failures).where(f.c.username == state.username)).scalar()
    if failures >= FREE_FAILURES:
        lock = min(LOCK_BASE * 2 ** min(failures - FREE_FAILURES, 16), LOCK_MAX)
        conn.execute(f.update().where(f.c.username == state.username).values(locked_until=now + lock))
