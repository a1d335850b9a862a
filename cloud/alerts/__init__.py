"""Alerts that reach a person: what is wrong (``cloud/fleet/alerts.py`` computes it, with the payments'
failed requests) kept as occurrences the moment it is seen (``occurrences.py``), sent by the rules of who
wants which kinds (``rules.py``) by e-mail or a signed webhook, each delivery retried and recorded
(``delivery.py``), by a worker the cloud starts (``watch.py``). The dashboard's alerts page, the API and
``vendctl alerts`` read and acknowledge them (``pages.py``, ``routes.py``, ``cli.py``)."""

from __future__ import annotations

from cloud.alerts.delivery import Channels, DeliveryError, alert_deliveries
from cloud.alerts.occurrences import AlertError, alert_occurrences
from cloud.alerts.rules import RuleError, alert_rules
from cloud.alerts.watch import KINDS, NAMES, Alerter, send_test

__all__ = ["KINDS", "NAMES", "AlertError", "Alerter", "Channels", "DeliveryError", "RuleError", "alert_deliveries",
           "alert_occurrences", "alert_rules", "send_test"]
