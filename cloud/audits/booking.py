"""An audit's sales in the double-entry journal: revenue against where the money came in.

The money a legacy machine took never passed through a payment provider of ours: it sits in the machine's
cash box, or a cashless system of someone else's took it. Each audit that made sales books them once, per
payment device and currency, under the key ``audit:{audit id}:{device}:{currency}`` (txn kind
``audit_sale``, order id ``audit:{audit id}``): revenue credited, the device's boundary account debited
(``DEVICE_ACCOUNTS``; registered with ``journal.add_boundary``, so they run negative, like a provider's).
What is booked is read back from the audit's own ``sales`` rows, so the journal and the sales reports
cannot disagree: a baseline and a board swap made no sales and book nothing; a counter reset books the
sales it made (what the machine counted since the reset), never anything for the counters going back.
Reconciliation does not look at these: its kinds are ``capture`` and ``refund``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import sqlalchemy as sa

from cloud.accounts.journal import account, add_boundary, post, txns
from cloud.sales.records import AUDIT_PREFIX, sales

TXN_KIND = "audit_sale"
# PA7's payment device (dex.model.DEVICES) -> the journal account its money came in through; '?' is a sale
# the file does not attribute to a device (PA2 with no PA7, or VA1 beyond CA2/DA2/DB2).
DEVICE_ACCOUNTS = {"CA": "dex_cash", "DA": "dex_cashless1", "DB": "dex_cashless2", "TA": "dex_tokens",
                   "?": "dex_unattributed"}


def _(message: str) -> str:
    """Marks a message for the catalog (gettext's ``N_``): translated where it is shown."""
    return message


# Names for people, English msgids (Chinese in cloud/web/locale/zh_CN/audits.po).
ACCOUNT_NAMES = {"dex_cash": _("Cash in legacy machines' cash boxes (DEX)"),
                 "dex_cashless1": _("Legacy machines' cashless device 1 (DEX)"),
                 "dex_cashless2": _("Legacy machines' cashless device 2 (DEX)"),
                 "dex_tokens": _("Tokens in legacy machines (DEX)"),
                 "dex_unattributed": _("Legacy machines' takings, payment device not stated (DEX)")}
for _kind in DEVICE_ACCOUNTS.values():
    add_boundary(_kind, ACCOUNT_NAMES[_kind])


def _order_of(audit_id: int) -> str:
    return f"{AUDIT_PREFIX}{audit_id}"


def booked(audit_id_column) -> sa.Exists:
    """Whether the journal holds the audit (whose id is this column) as booked: for a catch-up's query."""
    return sa.exists(sa.select(txns.c.id).where(
        txns.c.kind == TXN_KIND, txns.c.order_id == sa.literal(AUDIT_PREFIX) + sa.cast(audit_id_column, sa.String)))


def book(conn: sa.Connection, audit_id: int, when: datetime) -> int:
    """Book one audit's sales (dated ``when``, the read's time); how many transactions were new."""
    by: dict[tuple[str, str], int] = defaultdict(int)
    for order_id, amount, currency in conn.execute(
            sa.select(sales.c.order_id, sales.c.amount, sales.c.currency)
            .where(sales.c.order_id.startswith(f"{_order_of(audit_id)}:"))):
        device = order_id.rsplit(":", 1)[1]
        by[(device if device in DEVICE_ACCOUNTS else "?", currency)] += amount
    done = 0
    for (device, currency), value in sorted(by.items()):
        if value <= 0:
            continue
        outside = account(conn, DEVICE_ACCOUNTS[device], 0, currency)
        revenue = account(conn, "revenue", 0, currency)
        done += post(conn, f"{_order_of(audit_id)}:{device}:{currency}", TXN_KIND,
                     [(outside, -value), (revenue, value)], when, order_id=_order_of(audit_id))
    return done

