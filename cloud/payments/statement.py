"""A payment platform's own statement, imported and held against the journal.

Each platform with a statement reader (``ProviderSpec.statement``: Stripe's balance transactions, the
Alipay bill, the WeChat Pay trade bill) turns its file into ``StatementLine``s, or refuses it with
``StatementRefused`` naming why (truncated, the wrong format, another merchant's). ``import_statement``
stores the lines, once each (by the platform's id and kind: importing a file again, or an overlapping one,
changes nothing), and posts each fee the platform kept to the journal (``payment_fees`` against the
provider's boundary account, under ``"{provider}:fee:{platform_id}"``). ``compare`` then holds what the
statement says was captured and refunded, order by order, against what the journal holds for that provider:
reconciliation (``cloud/finance/reconcile.py``) lists what disagrees under three kinds (``KINDS``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from cloud.core.db import UTCDateTime, insert_ignore, metadata
from cloud.accounts.journal import DEBIT_KINDS, account, accounts, entries, post, txns

LINE_KINDS = ("capture", "refund", "fee", "other")
FEES = "payment_fees"  # the expense account of what platforms keep
if FEES not in DEBIT_KINDS:
    DEBIT_KINDS.append(FEES)
MAX_BYTES = 20 * 1024 * 1024
KINDS = ("statement_not_in_journal", "journal_not_in_statement", "statement_amount_differs")

statement_lines = sa.Table(
    "statement_lines", metadata,
    sa.Column("provider", sa.String(20), primary_key=True),
    sa.Column("platform_id", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(10), primary_key=True),
    sa.Column("order_id", sa.String(64), nullable=True, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("fee", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("file_sha256", sa.String(64), nullable=False),
    sa.Column("imported_at", UTCDateTime, nullable=False),
    sa.Index("statement_lines_at", "provider", "at"),
)


class StatementRefused(ValueError):
    """A statement file that is not one (truncated, another format, another merchant's): nothing imported."""


@dataclass(frozen=True)
class StatementLine:
    platform_id: str  # the platform's id of the line (a balance transaction, a trade number...)
    kind: str  # capture, refund, fee or other
    order_id: str | None  # ours, as the platform carried it (metadata, out_trade_no)
    amount: int  # minor units, above zero (a refund's too: the kind says which way)
    currency: str
    at: datetime  # UTC
    fee: int = 0  # what the platform kept of it, minor units, zero or more

    def check(self) -> None:
        """Raise StatementRefused naming what is wrong with this line."""
        if not self.platform_id or len(self.platform_id) > 100:
            raise StatementRefused(f"a line's id must be 1 to 100 characters, not {self.platform_id!r}")
        if self.kind not in LINE_KINDS:
            raise StatementRefused(f"line {self.platform_id}: kind {self.kind!r} is not one of {', '.join(LINE_KINDS)}")
        for what, value in (("amount", self.amount), ("fee", self.fee)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise StatementRefused(f"line {self.platform_id}: the {what} must be whole minor units, not {value!r}")
        if not (isinstance(self.currency, str) and len(self.currency) == 3 and self.currency.isalpha()):
            raise StatementRefused(f"line {self.platform_id}: {self.currency!r} is not a currency")
        if self.order_id is not None and not 1 <= len(self.order_id) <= 64:
            raise StatementRefused(f"line {self.platform_id}: {self.order_id!r} cannot be an order id")
        if self.at.tzinfo is None:
            raise StatementRefused(f"line {self.platform_id}: its time has no zone")


def import_statement(conn: sa.Connection, provider: str, boundary: str, lines: list[StatementLine], data: bytes,
                     now: datetime) -> dict:
    """Store the lines (each once) and post their fees; every line is checked first, so a file with one
    bad line imports nothing. Returns {lines, new, fees: {currency: minor units}}."""
    if not lines:
        raise StatementRefused("the statement has no lines")
    for line in lines:
        line.check()
    digest = hashlib.sha256(data).hexdigest()
    new, fees = 0, defaultdict(int)
    for line in lines:
        stored = conn.execute(insert_ignore(conn, statement_lines).values(
            provider=provider, platform_id=line.platform_id, kind=line.kind, order_id=line.order_id,
            amount=line.amount, fee=line.fee, currency=line.currency.upper(), at=line.at.astimezone(timezone.utc),
            file_sha256=digest, imported_at=now).returning(statement_lines.c.platform_id)).first()
        if stored is None:
            continue
        new += 1
        fee = line.amount if line.kind == "fee" else line.fee
        if fee:
            currency = line.currency.upper()
            legs = [(account(conn, FEES, 0, currency), -fee), (account(conn, boundary, 0, currency), fee)]
            post(conn, f"{provider}:fee:{line.platform_id}", "fee", legs, now, line.order_id)
            fees[currency] += fee
    return {"provider": provider, "lines": len(lines), "new": new, "fees": dict(fees)}


def _journal(conn, provider: str, kind: str, where, currencies: dict[str, str]) -> dict[str, int]:
    """The journal's revenue movements of ``kind`` (capture or refund) posted by ``provider``, by order."""
    found: dict[str, int] = defaultdict(int)
    for r in conn.execute(sa.select(txns.c.order_id, entries.c.amount, accounts.c.currency)
                          .join(entries, entries.c.txn_id == txns.c.id)
                          .join(accounts, accounts.c.id == entries.c.account_id)
                          .where(accounts.c.kind == "revenue", txns.c.kind == kind,
                                 txns.c.key.like(f"{provider}:%"), where)):
        found[r.order_id] += abs(r.amount)
        currencies[r.order_id] = r.currency
    return found


def compare(conn: sa.Connection, provider: str, lo: datetime, hi: datetime) -> list[dict]:
    """Every order whose captures or refunds in the statement lines of [lo, hi) and in the journal differ:
    {kind, order_id, provider, currency, statement, journal, detail}."""
    s = statement_lines
    lines = conn.execute(sa.select(s).where(s.c.provider == provider, s.c.at >= lo, s.c.at < hi,
                                            s.c.kind.in_(("capture", "refund")))).all()
    if not lines:
        return []
    said: dict[tuple[str, str], int] = defaultdict(int)
    currencies: dict[str, str] = {}
    for line in lines:
        said[(line.kind, line.order_id or f"?{line.platform_id}")] += line.amount
        currencies[line.order_id or f"?{line.platform_id}"] = line.currency
    # The journal over the span the statement covers (the journal posts when the platform answered, the
    # statement when it settled: a line near an edge may fall either side, so its order is read whole).
    first, last = min(line.at for line in lines), max(line.at for line in lines)
    orders = sorted({order for _, order in said if not order.startswith("?")})
    held: dict[tuple[str, str], int] = {}
    for kind in ("capture", "refund"):
        span = _journal(conn, provider, kind, sa.and_(txns.c.created_at >= first, txns.c.created_at <= last),
                        currencies)
        named = _journal(conn, provider, kind, txns.c.order_id.in_(orders), currencies) if orders else {}
        for order_id, amount in {**span, **named}.items():
            held[(kind, order_id)] = amount
    out = []
    for (kind, order_id) in sorted(set(said) | set(held)):
        statement, journal = said.get((kind, order_id), 0), held.get((kind, order_id), 0)
        row = {"provider": provider, "order_id": order_id, "currency": currencies.get(order_id, ""),
               "statement": statement, "journal": journal}
        if statement and not journal:
            out.append({"kind": "statement_not_in_journal", **row,
                        "detail": f"the {provider} statement has a {kind} of {statement} the journal does not hold"})
        elif journal and not statement:
            out.append({"kind": "journal_not_in_statement", **row,
                        "detail": f"the journal holds a {provider} {kind} of {journal} the statement does not list"})
        elif statement != journal:
            out.append({"kind": "statement_amount_differs", **row,
                        "detail": f"{kind}: the {provider} statement says {statement}, the journal {journal}"})
    return out


def providers_with_lines(conn: sa.Connection, lo: datetime, hi: datetime) -> list[str]:
    return list(conn.execute(sa.select(statement_lines.c.provider).distinct().where(
        statement_lines.c.at >= lo, statement_lines.c.at < hi)).scalars())
