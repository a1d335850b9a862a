"""The cloud aggregator: ingest of machine ledgers and the management modules."""

__version__ = "0.1.0"
