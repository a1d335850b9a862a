"""Who is told of which alerts: rules, each a set of alert kinds and one address (an e-mail address, or a
webhook URL for a chat bot or an SMS gateway). An alert raised is delivered once to every rule that names
its kind (``cloud/alerts/delivery.py``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, metadata

CHANNELS = ("email", "webhook")
TARGET_MAX = 300
NOTE_MAX = 80
EMAIL_RE = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\".]+\Z")

alert_rules = sa.Table(
    "alert_rules", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kinds", sa.String(300), nullable=False),  # comma-separated alert kinds
    sa.Column("channel", sa.String(10), nullable=False),
    sa.Column("target", sa.String(TARGET_MAX), nullable=False),
    sa.Column("note", sa.String(NOTE_MAX), nullable=False, server_default=""),
    sa.Column("created_by", sa.String(80), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


class RuleError(ValueError):
    """A rule refused. ``errors`` maps each field at fault (kinds, channel, target, note) to what is wrong,
    in English; ``codes`` maps it to a code, for a page to say it in the reader's language."""

    def __init__(self, errors: dict[str, tuple[str, str]], status: int = 422):
        self.errors = {field: text for field, (_code, text) in errors.items()}
        self.codes = {field: code for field, (code, _text) in errors.items()}
        super().__init__("; ".join(f"{field}: {text}" for field, text in self.errors.items()))
        self.status = status


@dataclass(frozen=True)
class Rule:
    id: int
    kinds: tuple[str, ...]
    channel: str
    target: str
    note: str
    created_by: str
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict:
        return {"id": self.id, "kinds": list(self.kinds), "channel": self.channel, "target": self.target,
                "note": self.note, "created_by": self.created_by, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


def _rule(row) -> Rule:
    return Rule(row.id, tuple(k for k in row.kinds.split(",") if k), row.channel, row.target, row.note,
                row.created_by, row.created_at, row.updated_at)


def check(kinds, channel, target, note, known: tuple[str, ...]) -> tuple[tuple[str, ...], str, str, str]:
    """The rule's fields cleaned, or RuleError naming every field that is wrong (English; the pages say it
    in the reader's language from the same field names)."""
    errors = {}
    if not isinstance(kinds, (list, tuple)) or not kinds or not all(isinstance(k, str) for k in kinds):
        errors["kinds"] = ("no_kinds", "choose at least one kind of alert")
        kinds = ()
    else:
        unknown = sorted(set(kinds) - set(known))
        if unknown:
            errors["kinds"] = ("unknown_kind", f"no alert kind {unknown[0]!r}; the kinds are {', '.join(known)}")
    if channel not in CHANNELS:
        errors["channel"] = ("channel", "the channel is email or webhook")
    target = target.strip() if isinstance(target, str) else ""
    if channel == "email" and not (len(target) <= 254 and EMAIL_RE.match(target)):
        errors["target"] = ("not_email", f"{target!r} is not an e-mail address")
    elif channel == "webhook":
        problem = webhook_problem(target)
        if problem:
            errors["target"] = ("not_url", problem)
    if not isinstance(note, str) or len(note.strip()) > NOTE_MAX:
        errors["note"] = ("note_long", f"the note is at most {NOTE_MAX} characters")
    if errors:
        raise RuleError(errors)
    ordered = tuple(k for k in known if k in set(kinds))
    return ordered, channel, target, note.strip()


def webhook_problem(url: str) -> str:
    """What is wrong with a webhook URL, or ''."""
    if len(url) > TARGET_MAX:
        return f"the URL is longer than {TARGET_MAX} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    if parts.username or parts.password:
        return "put no password in the URL: the delivery is signed instead"
    return ""


def list_rules(conn: sa.Connection) -> list[Rule]:
    return [_rule(r) for r in conn.execute(sa.select(alert_rules).order_by(alert_rules.c.id))]


def get(conn: sa.Connection, rule_id: int) -> Rule:
    row = conn.execute(sa.select(alert_rules).where(alert_rules.c.id == rule_id)).first()
    if row is None:
        raise RuleError({"rule": ("no_rule", f"there is no rule {rule_id}")}, 404)
    return _rule(row)


def add(conn: sa.Connection, kinds, channel, target, note, who: str, now: datetime, known) -> Rule:
    kinds, channel, target, note = check(kinds, channel, target, note, known)
    rule_id = conn.execute(alert_rules.insert().values(kinds=",".join(kinds), channel=channel, target=target,
                                                       note=note, created_by=who, created_at=now, updated_at=now)
                           .returning(alert_rules.c.id)).scalar_one()
    return get(conn, rule_id)


def update(conn: sa.Connection, rule_id: int, kinds, channel, target, note, now: datetime, known) -> Rule:
    get(conn, rule_id)
    kinds, channel, target, note = check(kinds, channel, target, note, known)
    conn.execute(alert_rules.update().where(alert_rules.c.id == rule_id).values(
        kinds=",".join(kinds), channel=channel, target=target, note=note, updated_at=now))
    return get(conn, rule_id)


def delete(conn: sa.Connection, rule_id: int) -> Rule:
    rule = get(conn, rule_id)
    conn.execute(alert_rules.delete().where(alert_rules.c.id == rule_id))
    return rule


def for_kind(conn: sa.Connection, kind: str) -> list[Rule]:
    """The rules that want alerts of ``kind``."""
    return [r for r in list_rules(conn) if kind in r.kinds]
