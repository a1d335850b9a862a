"""Every table of the cloud, collected from the domains that declare them, for Alembic and the schema test."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.core.db import metadata
from cloud.finance import ledger, settlement  # noqa: F401  (each import declares that module's tables)
from cloud.fleet import alerts, locations, machines, planogram  # noqa: F401
from cloud.payments import sandbox, wallet, webhook  # noqa: F401
from cloud.people import audit, auth, customers, staff  # noqa: F401
from cloud.sales import orders, reports  # noqa: F401
from cloud.stock import book, picking, purchasing, takes  # noqa: F401
from cloud.accounts import journal  # noqa: F401
from cloud.catalog import products  # noqa: F401
from cloud.sync import ingest  # noqa: F401


def load_tables() -> sa.MetaData:
    """The metadata with every domain's tables on it."""
    return metadata
