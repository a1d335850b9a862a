"""The audit trail: who changed what, and when.

Every state-changing API call, in any module, calls ``record`` on the connection that makes the change,
so the row commits with the change or not at all. A change is a small JSON object of what was set (for
an update, ``{field: [old, new]}``); never a password, a token or a machine secret.
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("staff.id"), nullable=True, index=True),  # none: the system
    sa.Column("via", sa.String(10), nullable=False),  # session, token or system
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("object_kind", sa.String(40), nullable=False),
    sa.Column("object_id", sa.String(80), nullable=False),
    sa.Column("change", sa.Text, nullable=False),
    sa.Index("audit_by_object", "object_kind", "object_id"),
)

LIMIT_MAX = 1000


def record(conn: sa.Connection, caller, action: str, object_kind: str, object_id, change: dict,
           now: datetime) -> int:
    """Write one audit row for ``caller`` (a ``Caller``) on ``conn``, inside the change's transaction."""
    return conn.execute(audit_log.insert().values(
        at=now, user_id=caller.user_id, via=caller.via, action=action, object_kind=object_kind,
        object_id=str(object_id), change=json.dumps(change, sort_keys=True, default=str),
    )).inserted_primary_key[0]


def query(conn: sa.Connection, user_id: int | None = None, action: str | None = None,
          object_kind: str | None = None, object_id: str | None = None, since: datetime | None = None,
          until: datetime | None = None, before_id: int | None = None, limit: int = 100) -> list[dict]:
    """Audit rows, newest first, narrowed by whichever filters are given; ``until`` is exclusive."""
    a = audit_log
    q = sa.select(a).order_by(a.c.id.desc()).limit(limit)
    for column, value in ((a.c.user_id, user_id), (a.c.action, action), (a.c.object_kind, object_kind),
                          (a.c.object_id, object_id)):
        if value is not None:
            q = q.where(column == value)
    if since is not None:
        q = q.where(a.c.at >= since)
    if until is not None:
        q = q.where(a.c.at < until)
    if before_id is not None:
        q = q.where(a.c.id < before_id)
    return [{"id": r.id, "at": r.at.isoformat(), "user_id": r.user_id, "via": r.via, "action": r.action,
             "object_kind": r.object_kind, "object_id": r.object_id, "change": json.loads(r.change)}
            for r in conn.execute(q)]


def actions(conn: sa.Connection) -> list[str]:
    """Every action the trail holds, for a filter to choose from."""
    return list(conn.execute(sa.select(audit_log.c.action).distinct().order_by(audit_log.c.action)).scalars())
