"""Who is calling: web sessions, API tokens, and ``require(role...)``, the dependency every router uses.

A web session is a random secret in a signed, HttpOnly, SameSite=Lax cookie; the server keeps only its
SHA-256 in a row that can be revoked and that expires. An API token is a random secret shown once; the
server keeps its SHA-256 (enough for a secret of 256 random bits: nobody can search that space). A
caller's role is read from their account on every request, so a disabled account or a changed role takes
effect at once, for sessions and tokens alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from cloud.core.db import UTCDateTime, metadata, reader, utcnow
from cloud.people import audit, staff
from cloud.people import customers
from cloud.people.customers import COOKIE, CookieSigner
from cloud.people.staff import ADMINISTRATOR, ROLES

SESSION_COOKIE = "vend_staff"
SESSION_TTL = timedelta(hours=12)
TOKEN_PREFIX = "vend_"
TOKEN_NAME_MAX = 80
BOOTSTRAP_USER, BOOTSTRAP_TOKEN = "admin", "bootstrap"
LAST_USED_EVERY = timedelta(minutes=1)  # a token's last use is written at most this often: reads stay reads

sessions = sa.Table(
    "staff_sessions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("staff.id"), nullable=False, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

api_tokens = sa.Table(
    "api_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("staff.id"), nullable=False, index=True),
    sa.Column("name", sa.String(TOKEN_NAME_MAX), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(12), nullable=False, server_default=""),  # to tell tokens apart in a list
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)


@dataclass(frozen=True)
class Caller:
    """A signed-in staff member, and how they proved it (``via``: session, token or system)."""

    user_id: int | None
    username: str
    role: str
    via: str
    credential_id: int | None
    supplier_id: int | None = None
    must_change_password: bool = False


SYSTEM = Caller(None, "system", ADMINISTRATOR, "system", None)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _caller(row, via: str, credential_id: int) -> Caller:
    return Caller(row.id, row.username, row.role, via, credential_id, row.supplier_id, row.must_change_password)


# -- sessions ----------------------------------------------------------------------------------------

def new_session(conn: sa.Connection, user_id: int, now: datetime) -> tuple[int, str]:
    """A session for a user who has just proved who they are: (id, the secret for the cookie)."""
    secret = secrets.token_urlsafe(32)
    session_id = conn.execute(sessions.insert().values(secret_hash=digest(secret), user_id=user_id,
                                                       created_at=now, expires_at=now + SESSION_TTL)
                              ).inserted_primary_key[0]
    return session_id, secret


def session_caller(conn: sa.Connection, secret: str, now: datetime) -> Caller | None:
    s, u = sessions, staff.staff
    row = conn.execute(sa.select(u, s.c.id.label("session_id")).join(s, s.c.user_id == u.c.id).where(
        s.c.secret_hash == digest(secret), s.c.revoked_at.is_(None), s.c.expires_at > now,
        u.c.disabled == sa.false())).first()
    return _caller(row, "session", row.session_id) if row is not None else None


def revoke_session(conn: sa.Connection, session_id: int, now: datetime) -> None:
    conn.execute(sessions.update().where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
                 .values(revoked_at=now))


def revoke_all(conn: sa.Connection, user_id: int, now: datetime, tokens: bool = True,
               keep_session: int | None = None) -> None:
    """End a user's sessions (but ``keep_session``) and, if ``tokens``, revoke their tokens."""
    q = sessions.update().where(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
    if keep_session is not None:
        q = q.where(sessions.c.id != keep_session)
    conn.execute(q.values(revoked_at=now))
    if tokens:
        conn.execute(api_tokens.update().where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
                     .values(revoked_at=now))


# -- tokens ------------------------------------------------------------------------------------------

def last_sign_ins(conn: sa.Connection) -> dict[int, datetime]:
    """Each staff member's latest web sign-in (the newest session made), for those who ever signed in."""
    return dict(conn.execute(sa.select(sessions.c.user_id, sa.func.max(sessions.c.created_at))
                             .group_by(sessions.c.user_id)).all())


def new_token(conn: sa.Connection, user_id: int, name, now: datetime, secret: str | None = None) -> tuple[int, str]:
    """A named API token for a user: (id, the token, to be shown once)."""
    name = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(name) <= TOKEN_NAME_MAX or not name.isprintable():
        raise staff.PeopleError(f"token name: 1 to {TOKEN_NAME_MAX} printable characters")
    prefix = ""
    if secret is None:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        prefix = secret[:len(TOKEN_PREFIX) + 4]
    token_id = conn.execute(api_tokens.insert().values(user_id=user_id, name=name, secret_hash=digest(secret),
                                                       prefix=prefix, created_at=now)).inserted_primary_key[0]
    return token_id, secret


def token_caller(engine: sa.Engine, secret: str, now: datetime) -> Caller | None:
    """The caller a token names, read without the write lock (``db.reader``); its last use is written only
    when it is ``LAST_USED_EVERY`` old, in a transaction of its own."""
    t, u = api_tokens, staff.staff
    with reader(engine).connect() as conn:
        row = conn.execute(sa.select(u, t.c.id.label("token_id"), t.c.last_used_at).join(t, t.c.user_id == u.c.id)
                           .where(t.c.secret_hash == digest(secret), t.c.revoked_at.is_(None),
                                  u.c.disabled == sa.false())).first()
    if row is None:
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        with engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == row.token_id).values(last_used_at=now))
    return _caller(row, "token", row.token_id)


def list_tokens(conn: sa.Connection, user_id: int) -> list[dict]:
    t = api_tokens
    rows = conn.execute(sa.select(t).where(t.c.user_id == user_id, t.c.revoked_at.is_(None)).order_by(t.c.id))
    return [{"id": r.id, "name": r.name, "prefix": r.prefix, "created_at": r.created_at.isoformat(),
             "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None} for r in rows]


def revoke_token(conn: sa.Connection, user_id: int, token_id: int, now: datetime) -> None:
    """Revoke one of the user's own active tokens; someone else's is as unknown as a missing one."""
    t = api_tokens
    done = conn.execute(t.update().where(t.c.id == token_id, t.c.user_id == user_id, t.c.revoked_at.is_(None))
                        .values(revoked_at=now)).rowcount
    if not done:
        raise staff.PeopleError(f"no active token {token_id} of yours", 404)


def bootstrap(conn: sa.Connection, token: str, now: datetime) -> int:
    """Make the built-in administrator on first start and let ``token`` (from <var>/admin-token or
    VEND_ADMIN_TOKEN) act as them; a different token than last time replaces the old one. A token that
    was revoked stays revoked. Returns the administrator's id."""
    admin = staff.builtin_admin(conn)
    if admin is None:
        name = BOOTSTRAP_USER
        if staff.get_by_name(conn, name) is not None:
            name = f"{BOOTSTRAP_USER}-{secrets.token_hex(3)}"
        admin_id = staff.add_staff(conn, name, ADMINISTRATOR, now, None, False, builtin=True)
        audit.record(conn, SYSTEM, "people.bootstrap", "staff", admin_id, {"username": name}, now)
    else:
        admin_id = admin.id
    t = api_tokens
    if conn.execute(sa.select(t.c.id).where(t.c.secret_hash == digest(token))).first() is not None:
        return admin_id
    conn.execute(t.update().where(t.c.user_id == admin_id, t.c.name == BOOTSTRAP_TOKEN, t.c.revoked_at.is_(None))
                 .values(revoked_at=now))
    token_id, _ = new_token(conn, admin_id, BOOTSTRAP_TOKEN, now, secret=token)
    audit.record(conn, SYSTEM, "token.bootstrap", "token", token_id, {"user_id": admin_id}, now)
    return admin_id


# -- the gate ----------------------------------------------------------------------------------------

class Gate:
    """What the dependencies need from the app: its engine, the session cookie's signer, its clock."""

    def __init__(self, engine: sa.Engine, cookie_secret: bytes, public_url: str = ""):
        self.engine = engine
        # A key of its own, so that no other cookie the cloud signs can pass for a session.
        self.signer = CookieSigner(hmac.new(cookie_secret, b"staff-session", hashlib.sha256).digest())
        # The customer's cookie (their phone's key to their account) and the scan's visit cookie.
        self.customer_signer = CookieSigner(cookie_secret)
        # Keys of their own for the customer forms' anti-forgery token and for hashing sign-in codes.
        self.form_key = hmac.new(cookie_secret, b"customer-form", hashlib.sha256).digest()
        self.code_key = hmac.new(cookie_secret, b"customer-code", hashlib.sha256).digest()
        self.public_url = public_url
        self.secure = public_url.startswith("https:")
        self.clock = utcnow

    def now(self) -> datetime:
        return self.clock()

    def session_secret(self, request: Request) -> str | None:
        return self.signer.unsign(request.cookies.get(SESSION_COOKIE))

    def same_origin(self, request: Request) -> bool:
        """A browser's Origin on a state-changing request with a session cookie: this site, or none."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        allowed = {request.headers.get("host"), urlsplit(self.public_url).netloc}
        return urlsplit(origin).netloc in allowed


def gate(request: Request) -> Gate:
    return request.app.state.people


def current_customer(request: Request):
    """The customer whose signed cookie this phone carries, or None."""
    g = gate(request)
    value = g.customer_signer.unsign(request.cookies.get(COOKIE))
    if value is None or not value.isdigit():
        return None
    with g.engine.connect() as conn:
        return customers.get(conn, int(value))


bearer = HTTPBearer(auto_error=False, description="an API token (`vendctl tokens create`), or the "
                                                  "bootstrap token in <var>/admin-token")
cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="a web session from POST /api/v1/login")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def identify(request: Request) -> Caller | None:
    """The caller of this request, or None. A token in the Authorization header wins over a cookie; a
    header that is there but not a valid token is not a fall-back to the cookie."""
    g = gate(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        return token_caller(g.engine, secret.strip(), g.now())
    secret = g.session_secret(request)
    if secret is None:
        return None
    with reader(g.engine).connect() as conn:  # no write lock: a page must not queue behind the ingest
        caller = session_caller(conn, secret, g.now())
    if caller is not None and request.method in UNSAFE and not g.same_origin(request):
        raise HTTPException(403, "a request from another site with this site's session cookie is refused")
    return caller


def require(*roles: str, password_change_ok: bool = False):
    """A FastAPI dependency giving the ``Caller``: 401 without valid credentials, 403 for a role not in
    ``roles`` (no roles: any staff member). Until a one-time password is changed, only the routes made
    with ``password_change_ok`` answer."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    allowed = roles or ROLES

    def dependency(request: Request, _bearer: HTTPAuthorizationCredentials | None = Depends(bearer),
                   _cookie: str | None = Depends(cookie)) -> Caller:
        caller = identify(request)
        if caller is None:
            raise HTTPException(401, "sign in: send Authorization: Bearer <token>, or the session cookie from "
                                     "POST /api/v1/login", headers={"WWW-Authenticate": "Bearer"})
        if caller.must_change_password and not password_change_ok:
            raise HTTPException(403, "change your one-time password first: POST /api/v1/me/password")
        if caller.role not in allowed:
            raise HTTPException(403, f"this needs the role {' or '.join(allowed)}; you are {caller.role}")
        return caller

    return dependency


@dataclass
class LoginResult:
    user: object | None
    session_secret: str | None
    locked_for: timedelta | None


def login(g: Gate, username, password) -> LoginResult:
    """Check a username and password and open a session; the hash is verified outside any transaction."""
    with g.engine.begin() as conn:
        state = staff.login_state(conn, username, g.now())
    verdict = staff.check_login(state, password, g.now())
    now = g.now()
    with g.engine.begin() as conn:
        staff.note_login(conn, state, verdict, now)
        if not verdict.ok:
            return LoginResult(None, None, verdict.locked_for)
        session_id, secret = new_session(conn, state.user.id, now)
        audit.record(conn, _caller(state.user, "session", session_id), "session.login", "staff", state.user.id,
                     {"session": session_id}, now)
    return LoginResult(state.user, secret, None)


# -- the dashboard's check ------------------------------------------------------------------------------

@dataclass
class SignInNeeded(Exception):
    """A dashboard page asked for without a session: the app sends the browser to sign in."""

    next: str


@dataclass
class NotAllowed(Exception):
    """A dashboard page asked for by a role it is not for: the app shows a page saying so."""

    roles: tuple[str, ...]
    role: str


@dataclass
class PasswordChangeNeeded(Exception):
    """The caller signed in with a one-time password and must choose their own first."""


def staff_only(*roles: str):
    """A dependency for a dashboard page: the signed-in ``Caller`` with one of ``roles`` (none: any staff)."""
    allowed = roles or ROLES

    def dependency(request: Request) -> Caller:
        caller = identify(request)
        if caller is None:
            raise SignInNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if caller.must_change_password:
            raise PasswordChangeNeeded()
        if caller.role not in allowed:
            raise NotAllowed(tuple(allowed), caller.role)
        return caller

    return dependency
