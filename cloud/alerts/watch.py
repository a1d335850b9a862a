"""The alerts worker: looks for alerts at once after the ingest stores events (and every ``--alert-check``
seconds for those that come with time: offline, door open, temperature), keeps them as occurrences, and
delivers them. Two threads, so that a slow SMTP server never delays raising an alert, and neither ever
holds up the ingest: the ingest only sets an event (``kick``).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from types import SimpleNamespace
from datetime import datetime, timedelta

import sqlalchemy as sa

from cloud.core import db
from cloud.core.db import utcnow
from cloud.core.mail import Mailer
from cloud.core.secrets import read_secret_bytes
from cloud.core.settings import Settings, read_or_create
from cloud.fleet import alerts as fleet_alerts
from cloud.payments import failures
from cloud.sales import orders
from cloud.alerts import delivery, occurrences
from cloud.alerts.delivery import Channels, DeliveryError
from cloud.alerts.occurrences import Condition

log = logging.getLogger(__name__)

# The most of its process's time the alert watcher may take: it rests after each look in proportion to its cost,
# and LOOK_GAP_S at least (the ingest kicks a look after nearly every group it stores; a jam is seen within it).
WATCH_SHARE = 0.1
LOOK_GAP_S = 1.0

KINDS = fleet_alerts.KINDS + ("payment_failed",)
# What each kind is called on a page, in a message and in the rules form (English; pages translate it).
NAMES = {"offline": "Offline", "out_of_service": "Slot out of service", "vend_failures": "Failed vends",
         "low_stock": "Low stock", "temperature": "Temperature", "door_open": "Door open",
         "not_synced": "Not synced", "late_drop": "Dropped, order closed", "unknown_order": "Sold, no such order",
         "payment_failed": "Payment failed"}


def webhook_secret(settings: Settings) -> bytes:
    """The secret alert webhooks are signed with: ``--alert-webhook-secret-file``, or one made on first start
    in <var>/alert-webhook-secret (mode 0600; give the receiver a copy)."""
    path = settings.alert_webhook_secret_file
    if not path:
        os.makedirs(settings.var, exist_ok=True)
        path = os.path.join(settings.var, "alert-webhook-secret")
        read_or_create(path, lambda: secrets.token_urlsafe(32))
    return read_secret_bytes("--alert-webhook-secret-file", path).strip()


def payment_conditions(conn: sa.Connection, now: datetime, window_s: float) -> list[Condition]:
    """One condition per machine whose orders had a capture, void, refund or charge fail within the window."""
    by_machine: dict[str, list] = {}
    for f in failures.failed_since(conn, now - timedelta(seconds=window_s)):
        order = orders.get(conn, f.order_id)
        by_machine.setdefault(order.machine_id if order else "", []).append(f)
    found = []
    for machine_id, group in sorted(by_machine.items()):
        newest = group[-1]
        detail = (f"{len(group)} payment request(s) refused for good in the last {window_s / 3600:g} h; newest: "
                  f"{newest.op} of order {newest.order_id} by {newest.provider}: {newest.reason or 'no reason given'}")
        found.append(Condition("payment_failed", machine_id, "", group[0].at, detail, len(group), newest.at))
    return found


class Alerter:
    """Owns the alerts' two threads; ``refresh`` and ``deliver_due`` also run alone (tests, an idle cloud)."""

    def __init__(self, engine: sa.Engine, settings: Settings, limits: fleet_alerts.Limits,
                 readings: fleet_alerts.Readings, channels: Channels):
        self.engine, self.settings, self.limits, self.readings = engine, settings, limits, readings
        self.channels = channels
        self._kick = threading.Event()
        self._deliver = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.last_refresh = 0.0

    @classmethod
    def from_settings(cls, engine, settings: Settings, limits, readings) -> "Alerter":
        channels = Channels(Mailer.from_settings(settings), webhook_secret(settings), settings.alert_send_timeout_s)
        return cls(engine, settings, limits, readings, channels)

    @property
    def elsewhere(self) -> bool:
        """Another process looks for alerts, where the machines' readings arrive: this one runs with
        ``--no-ingest``."""
        return not self.settings.ingest

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        for target, name in ((self._watch_loop, "alerts"), (self._deliver_loop, "alert-delivery")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._deliver.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self._threads = []

    def kick(self) -> None:
        """Look for alerts now (the ingest has stored something); returns at once."""
        self._kick.set()

    def conditions(self, conn: sa.Connection, now: datetime) -> tuple[list[Condition], set[str]]:
        """What is wrong now, and the machines whose temperature this process knows."""
        readings = self.readings.snapshot()
        found = [Condition(a.kind, a.machine_id, a.slot or "", a.since, a.detail,
                           float(a.value) if a.value is not None else None, a.latest)
                 for a in fleet_alerts.compute(conn, now, self.limits, readings)]
        return found + payment_conditions(conn, now, self.limits.incident_window_s), set(readings)

    def refresh(self, now: datetime | None = None) -> list[int]:
        """Raise, update and resolve occurrences, queue the deliveries of those raised; the ids raised."""
        now = now or utcnow()
        # Read first, then write: on SQLite a look at ten thousand machines inside the write transaction held
        # the ingest's writer for as long as it took (bench/fleet.py, issue 16).
        with db.reader(self.engine).connect() as conn:
            found, known = self.conditions(conn, now)
        with self.engine.begin() as conn:
            raised = occurrences.refresh(conn, found, lambda kind, m: kind != "temperature" or m in known, now)
            queued = delivery.enqueue(conn, raised, now) if raised else 0
        self.last_refresh = time.monotonic()
        if raised:
            log.warning("%d alert(s) raised (ids %s%s); %d deliveries queued", len(raised),
                        ", ".join(map(str, raised[:10])), ", ..." if len(raised) > 10 else "", queued)
        if queued:
            self._deliver.set()
        return raised

    def refresh_if_idle(self) -> None:
        """For a page or an API read of a cloud whose worker is not running (a test's, a tool's): look now,
        unless this process looked within ``--alert-check``. With the worker running, or running in another
        process (this one has ``--no-ingest``), reads never wait."""
        if self.running or self.elsewhere:
            return
        if time.monotonic() - self.last_refresh > self.settings.alert_check_s:
            self.refresh()

    def deliver_due(self, now: datetime | None = None) -> dict[str, int]:
        """Send every delivery that is due; {status: count} of what happened."""
        done: dict[str, int] = {}
        while True:
            now = now or utcnow()
            with self.engine.begin() as conn:
                claimed = delivery.claim_due(conn, now)
            if not claimed:
                return done
            for d in claimed:
                error = None
                try:
                    self.channels.send(d.channel, d.target, delivery.message(d, NAMES, self.settings.public_url, d.id),
                                       d.id)
                except DeliveryError as e:
                    error = str(e)
                except Exception as e:  # noqa: BLE001 - recorded and retried; one address never stops the others
                    log.exception("alert delivery %d to %s failed unexpectedly", d.id, d.channel)
                    error = f"{type(e).__name__}: {e}"
                with self.engine.begin() as conn:
                    status = delivery.record(conn, d, error, utcnow(), self.settings.alert_retry_s,
                                             self.settings.alert_attempts)
                done[status] = done.get(status, 0) + 1
                if error:
                    log.warning("alert %d to %s %s: try %d failed (%s): %s", d.occurrence_id, d.channel, d.target,
                                d.attempts + 1, status, error)
            now = None

    def _watch_loop(self) -> None:
        db.background_writer()
        while not self._stop.is_set():
            self._kick.wait(self.settings.alert_check_s)
            self._kick.clear()
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the worker outlives any one look; logged, tried again
                log.exception("looking for alerts failed; will try again")
            # The ingest kicks a look after every group it stores, and a look slows the groups that run beside
            # it (bench/fleet.py, docs/scaling.md): after each, rest so that looking takes at most WATCH_SHARE
            # of the time, LOOK_GAP_S at least, and never longer than --alert-check.
            spent = time.monotonic() - started
            self._stop.wait(min(self.settings.alert_check_s, max(LOOK_GAP_S, spent * (1 / WATCH_SHARE - 1))))

    def _deliver_loop(self) -> None:
        # A failed delivery is due again after --alert-retry at the soonest: polling at that pace (at most
        # every second) finds it in time, and a new one wakes the loop at once.
        poll = min(max(self.settings.alert_retry_s / 2, 0.05), 1.0)
        db.background_writer()
        while not self._stop.is_set():
            self._deliver.wait(poll)
            self._deliver.clear()
            if self._stop.is_set():
                return
            try:
                self.deliver_due()
            except Exception:  # noqa: BLE001 - as above
                log.exception("delivering alerts failed; will try again")


def send_test(channels: Channels, channel: str, target: str, dashboard: str) -> None:
    """A test message to a rule's address, before the rule is saved; raises DeliveryError."""
    now = utcnow()
    row = SimpleNamespace(kind="out_of_service", machine_id="test-machine", slot="A1", since=now, raised_at=now,
                          detail="This is a test message: nothing is wrong.", value=None, occurrence_id=None)
    channels.send(channel, target, delivery.message(row, NAMES, dashboard, test=True))
