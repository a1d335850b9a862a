"""Every table of the cloud, collected from the domains that declare them, for Alembic and the schema test."""

from __future__ import annotations

import sqlalchemy as sa

# Each import declares that module's tables on the one metadata.
import cloud.accounts.journal
import cloud.audits.imports
import cloud.alerts.delivery
import cloud.alerts.occurrences
import cloud.alerts.rules
import cloud.catalog.names
import cloud.catalog.products
import cloud.finance.ledger
import cloud.finance.settlement
import cloud.fleet.alerts
import cloud.fleet.ledger
import cloud.fleet.locations
import cloud.fleet.machines
import cloud.fleet.planogram
import cloud.payments.mandates
import cloud.payments.outbox
import cloud.payments.sandbox
import cloud.payments.statement
import cloud.payments.wallet
import cloud.payments.webhook
import cloud.people.audit
import cloud.people.auth
import cloud.people.codes
import cloud.people.customers
import cloud.people.staff
import cloud.sales.orders
import cloud.sales.records
import cloud.sales.reports
import cloud.sales.rollups
import cloud.stock.book
import cloud.stock.picking
import cloud.stock.purchasing
import cloud.stock.takes
import cloud.stock.visits  # noqa: F401
from cloud.core.db import metadata


def load_tables() -> sa.MetaData:
    """The metadata with every domain's tables on it."""
    return metadata
