"""The cloud's running parts: the MQTT bus, the ingest worker, the order sweeper and the alerts worker.

paho's network thread only queues what arrives; one worker thread drains the queue, applies many batches
in one database transaction (each in its own savepoint, so one bad batch spoils nothing else), commits,
and only then publishes the acks.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import paho.mqtt.client as mqtt
import sqlalchemy as sa

from protocol import ProtocolError, topics
from protocol.messages import MAX_WAIT_S, Ack, Command, EventBatch, decode, format_time, parse_time, utcnow
from protocol.mqtt import connect_async, make_client

from cloud.alerts import Alerter
from cloud.fleet import alerts, machines, planogram
from cloud.core import db
from cloud.sync import ingest
from cloud.sales import orders, reports
from cloud.provisioning.brokerfiles import CLOUD_USER, BrokerFiles, BrokerUser, Ports
from cloud.provisioning.ca import FleetCA
from cloud.payments import Payments
from cloud.people import senders
from cloud.core.settings import Settings, read_or_create
from cloud.stock import book as inventory

log = logging.getLogger(__name__)

DRAIN_MAX = 256  # messages applied in one transaction at most
# ... and payload bytes: a storm's batches of hundreds of events each would make one transaction of 256 of
# them take seconds, and every ack in it wait for the last. Not much less: each transaction ends in an fsync,
# and at 256 KB (four or five storm batches) a 1,000-machine storm drained slower than before (bench/fleet.py).
DRAIN_MAX_BYTES = 2 * 1024 * 1024
# A cloud whose queue holds this many seconds of work tells a machine sending events that they reached it
# and how long they will wait (an ack of seq 0 with busy and wait_s), at most once per BUSY_NOTICE_EVERY_S
# per machine: the machine holds its resend that long. Each message told, not one in five seconds: a batch
# untold was resent when its timer ran out behind a storm's queue (bench/fleet.py, issue 16).
BUSY_AFTER_S = 2.0
BUSY_NOTICE_EVERY_S = 1.0
RESEND_DEBOUNCE_S = 2.0
LATE_CHARGE_CHECK_S = 10.0  # how often the sweeper looks for late drops whose fresh charge was taken
UNSENT_VEND_RESEND_S = 3.0  # how often a vend command the broker did not take is published again
PARK_S = 2.0  # how long a batch that arrived before its predecessor waits with no progress on that machine
PARK_MAX_S = 30.0
PARK_RETRY_S = 0.05


MERGE_MAX_EVENTS = 2000


def merge_batches(decoded: list[tuple]) -> list[tuple]:
    """Join each machine's consecutive event batches into one, so a drained group costs a few statements.

    A controller keeps several batches in flight, so a drain often holds batches n, n+1, n+2 of the same
    machine; they join only where the sequence and the hash chain continue exactly. A batch that repeats
    events of the one before it (a resend after a reconnect, or the same batch twice) joins with its new
    events only, and a batch that repeats it whole is dropped, where the repeated events' hashes are the
    same (each event's hash covers the one before it, so the last repeated one vouches for all of them). A
    batch that differs stays apart, for ``ingest.store_batch`` to refuse.
    """
    merged: list[tuple] = []
    open_batch: dict[str, int] = {}  # machine -> index in merged of its last events batch
    for item in decoded:
        topic, machine_id, kind, message = item
        if kind == "events" and machine_id in open_batch:
            i = open_batch[machine_id]
            prev = merged[i][3]
            new = _beyond(prev, message)
            if new is not None and len(prev.events) + len(new) <= MERGE_MAX_EVENTS:
                if new:
                    merged[i] = (topic, machine_id, kind, EventBatch(prev.events + new, prev.ledger))
                continue
        if kind == "events":
            open_batch[machine_id] = len(merged)
        merged.append(item)
    return merged


def _beyond(prev: EventBatch, message: EventBatch) -> tuple | None:
    """The events of ``message`` that continue ``prev`` (none if it repeats events of ``prev`` only), or
    None if it does not continue it: a gap, another ledger, or events that differ from those of ``prev``."""
    first, last = prev.events[0].seq, prev.events[-1].seq
    start = message.events[0].seq
    if message.ledger != prev.ledger or not first <= start <= last + 1:
        return None
    if start == last + 1:
        return message.events if message.events[0].prev_hash == prev.events[-1].hash else None
    repeated = min(message.events[-1].seq, last)  # the last event both hold
    if message.events[repeated - start].hash != prev.events[repeated - first].hash:
        return None
    return message.events[last - start + 1:]


@dataclass
class Parked:
    """Batches of one machine waiting for the batch before them, and when that machine last moved."""

    since: float
    head: int
    batches: list
    first: float  # when the first of them was parked: nothing waits longer than PARK_MAX_S


class Bus:
    """The cloud's MQTT client: subscribes to the whole fleet, publishes acks and commands."""

    def __init__(self, settings: Settings, inbox: queue.Queue, password: str = ""):
        self.settings = settings
        self.inbox = inbox
        self.connected = threading.Event()
        self.client = make_client(settings.client_id, settings.mqtt_protocol, persistent=True)
        if password:
            self.client.username_pw_set(CLOUD_USER, password)
        # No cap on acks and commands in flight to the broker. With paho's default (20), every PUBACK makes
        # paho walk its whole outgoing queue for the next message to send (paho 2.2, _update_inflight), so
        # once a fleet's acks queue up (a storm: tens of thousands) each PUBACK costs more. bench/fleet.py
        # saw a storm's stored events wait tens of seconds for their acks with the cap; its effect alone
        # was not measured (issue 16, docs/scaling.md).
        self.client.max_inflight_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.seconds_per_message = 0.0  # the ingest worker's recent cost of one message
        self.lag_s = 0.0  # how old the freshest batch of the last drained group was
        self._busy_told: dict[str, float] = {}  # machine -> when it was last told its events wait in the queue
        self.busy_notices = 0

    def start(self) -> None:
        host, port = self.settings.broker_address
        connect_async(self.client, host, port, 30, persistent=True)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the cloud: %s", reason_code)
            return
        if not self.settings.ingest:
            self.connected.set()  # to publish vend commands and planograms; the machines' messages go elsewhere
            log.info("cloud connected to the broker (no ingest: another process stores the machines' messages)")
            return
        group = "ingest" if self.settings.shared_ingest else None
        client.subscribe([(topics.subscription("events", group), 1), (topics.subscription("status"), 1),
                          (topics.subscription("cmd/result"), 1), (topics.subscription("telemetry"), 0)])
        self.connected.set()
        log.info("cloud connected to the broker (shared ingest: %s)", bool(group))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        log.warning("cloud lost the broker: %s", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        self.inbox.put((message.topic, message.payload))
        if message.topic.endswith("/events") and self.behind_s() > BUSY_AFTER_S:
            self._tell_busy(message.topic)

    def behind_s(self) -> float:
        """How far behind the ingest is: the work waiting in our queue, or, when the queue is in the broker
        (a cloud starved of CPU reads its socket late), how old the freshest batch of the last group was."""
        return max(self.inbox.qsize() * self.seconds_per_message, self.lag_s)

    def note_lag(self, now: datetime, batches: list) -> None:
        """The age of the freshest batch in a drained group, from its newest event's time (machines write it
        with the cloud's clock, learned from acks); 0 if no batch in it has a synchronised clock. The freshest,
        so a machine draining last week's backlog does not count as the cloud being behind."""
        ages = [(now - parse_time(b.events[-1].ts, "ts")).total_seconds() for b in batches
                if b.events[-1].clock_synced]
        self.lag_s = max(0.0, min(ages)) if ages else 0.0

    def _tell_busy(self, topic: str) -> None:
        """The events just queued will wait: say so at once, so the machine does not send them again meanwhile.
        On paho's network thread, so nothing here touches the database or decodes the payload."""
        try:
            machine_id, _ = topics.parse(topic)
        except ProtocolError:
            return
        now = time.monotonic()
        if now - self._busy_told.get(machine_id, 0.0) < BUSY_NOTICE_EVERY_S:
            return
        self._busy_told[machine_id] = now
        self.busy_notices += 1
        wait_s = min(MAX_WAIT_S, self.behind_s())
        self.publish(machine_id, "ack", Ack(0, format_time(utcnow()), busy=True, wait_s=wait_s).encode())

    def publish(self, machine_id: str, kind: str, payload: bytes) -> bool:
        qos, retain = topics.KINDS[kind]
        info = self.client.publish(topics.topic(machine_id, kind), payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish %s to %s not accepted: %s", kind, machine_id, mqtt.error_string(info.rc))
            return False
        return True


STOCK_BOOKING_IDLE = 500  # counts per transaction when no events wait
STOCK_BOOKING_BUSY = 20  # ... and per sweep while they do
STOCK_BOOKING_QUIET_S = 2.0  # events stored this recently: machines are still draining


class Cloud:
    """Owns the engine, the bus, the worker threads and (for the demo) the embedded broker."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = db.make_engine(settings.db)
        self.stats = ingest.Stats()
        try:
            self.alert_limits = alerts.Limits.from_settings(settings)
        except ValueError as e:
            raise SystemExit(f"--alert-*: {e}") from None
        self.readings = alerts.Readings(self.alert_limits)
        self.alerter = Alerter.from_settings(self.engine, settings, self.alert_limits, self.readings)
        self.provider = Payments.from_settings(settings, self.stats.counts)
        self.provider.listen(self.authorisation_settled)
        self._unsent_lock = threading.Lock()
        self._unsent_vends: dict = {}  # order id -> order whose vend command the broker did not take
        self.senders = senders.configured(settings)  # how customers get a sign-in code on a new phone
        self.inbox: queue.Queue = queue.Queue()
        self.last_ingest = 0.0
        self.broker_files: BrokerFiles | None = None
        self.ca: FleetCA | None = None
        self.broker_password = ""
        if settings.broker_files:
            try:
                ports = Ports.parse(settings.broker_ports)
            except ValueError as e:
                raise SystemExit(f"--broker-ports: {e}") from None
            self.broker_files = BrokerFiles(settings.broker_files, ports, settings.broker_pid_file)
            self.ca = FleetCA(os.path.join(settings.var, "ca"))
            os.makedirs(settings.var, exist_ok=True)
            self.broker_password = read_or_create(os.path.join(settings.var, "mqtt-password"),
                                                  lambda: secrets.token_urlsafe(24))
        self.bus = Bus(settings, self.inbox, self.broker_password)
        self.broker = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_resend: dict[str, float] = {}
        self._parked: dict[str, Parked] = {}

    def start(self) -> None:
        db.migrate(self.engine)
        if self.broker_files is not None:
            self.ca.ensure()
            self.broker_files.write_config()
            self.broker_files.write_tls(self.ca, self.broker_names())
            log.info("broker files in %s: %s", self.broker_files.folder, self.refresh_broker())
        if self.settings.broker == "embedded":
            from cloud.sync.broker import EmbeddedBroker  # amqtt: loaded only when the demo embeds the broker

            self.broker = EmbeddedBroker(*self.settings.broker_address)
            self.broker.start()
        self.bus.start()
        self.provider.start(self.engine)
        workers = [(self._ingest_loop, "ingest"), (self._sweep_loop, "sweeper")]
        for target, name in workers if self.settings.ingest else workers[1:]:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self.alerter.elsewhere:
            self.alerter.start()

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self.alerter.stop()
        self.provider.stop()
        self.bus.stop()
        if self.broker is not None:
            self.broker.stop()
        self.engine.dispose()

    # -- the broker's users --------------------------------------------------------------------------

    def broker_names(self) -> list[str]:
        """The names in the broker's certificate: the one machines use, and the loopback the cloud uses."""
        names = [self.settings.machine_broker] if self.settings.machine_broker else []
        return names + [n for n in ("localhost", "127.0.0.1") if n not in names]

    def refresh_broker(self) -> str | None:
        """Rewrite the broker's password file and ACL from the machines table; None if no broker is managed."""
        if self.broker_files is None:
            return None

        def users():
            with self.engine.connect() as conn:
                machine_users, ids = machines.broker_users(conn, utcnow())
            return [BrokerUser(CLOUD_USER, self.broker_password, None)] + machine_users, ids

        return self.broker_files.write_users(users)

    # -- ingest -------------------------------------------------------------------------------------

    def _ingest_loop(self) -> None:
        db.background_writer()  # a purchase's transaction goes before the next group's
        while not self._stop.is_set():
            try:
                items = [self.inbox.get(timeout=PARK_RETRY_S if self._parked else None)]
            except queue.Empty:
                items = []  # nothing new: time to retry the parked batches
            size = sum(len(i[1]) for i in items if i is not None)
            while len(items) < DRAIN_MAX and size < DRAIN_MAX_BYTES:
                try:
                    items.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
                if items[-1] is not None:
                    size += len(items[-1][1])
            items = [i for i in items if i is not None]
            if items or self._parked:
                started = time.monotonic()
                self.apply_all(items)
                if items:  # how long a message takes, for the bus to tell how far behind the queue is
                    per = (time.monotonic() - started) / len(items)
                    self.bus.seconds_per_message += 0.2 * (per - self.bus.seconds_per_message)

    def apply_all(self, items: list[tuple[str, bytes]]) -> None:
        """Apply a drained group; if its transaction fails, apply each message alone, so that one message
        the database refuses cannot hold up every other machine's."""
        self.last_ingest = time.monotonic()
        try:
            self.apply(items)
            return
        except Exception:
            log.exception("ingest transaction of %d messages failed; applying them one by one", len(items))
        for topic, payload in items:
            try:
                self.apply([(topic, payload)])
            except Exception as e:  # noqa: BLE001 - counted and logged; the machine will resend it
                self.stats.reject(topic, f"not stored: {type(e).__name__}: {str(e)[:200]}")

    def apply(self, items: list[tuple[str, bytes]]) -> None:
        """Apply a group of messages in one transaction, then publish the acks it earned."""
        acks: dict[str, dict[str, int]] = {}  # machine -> {ledger: head}: each ack names its ledger
        resends: dict[str, int] = {}
        configs: dict = {}
        heartbeats: set[str] = set()  # machines whose status earned an ack of the clock alone
        now = utcnow()
        decoded = []
        for topic, payload in items:
            try:
                machine_id, kind = topics.parse(topic)
                decoded.append((topic, machine_id, kind, decode(kind, payload)))
            except ProtocolError as e:
                self.stats.reject(topic, str(e))
        self.bus.note_lag(now, [m for _, _, kind, m in decoded if kind == "events"])
        parked, self._parked = self._parked, {}
        for machine_id, p in parked.items():
            decoded += [(topic, machine_id, "events", batch) for topic, batch in p.batches]
        # Machines in id order, so that two cloud processes lock machine rows in the same order and never
        # deadlock; each machine's batches in sequence order, as a shared subscription may reorder them.
        decoded.sort(key=lambda d: (d[1], d[2] == "events", d[3].events[0].seq if d[2] == "events" else 0))
        # Status and telemetry are most of a fleet's messages and only their newest value counts: one per
        # machine per group (the sort kept arrival order within a machine), written in a few statements.
        statuses: dict = {}
        readings: dict = {}
        rest = []
        for item in decoded:
            topic, machine_id, kind, message = item
            if kind == "status":
                statuses[machine_id] = (topic, message)
            elif kind == "telemetry":
                readings[machine_id] = message
            else:
                rest.append(item)
        self.stats.counts["status"] += sum(1 for d in decoded if d[2] == "status")
        self.stats.counts["telemetry"] += sum(1 for d in decoded if d[2] == "telemetry")
        with self.engine.begin() as conn:
            machines.lock(conn, statuses.keys() | {machine_id for _t, machine_id, kind, _m in rest if kind == "events"})
            if statuses:
                newest = {machine_id: message for machine_id, (topic, message) in statuses.items()}
                known = machines.apply_statuses(conn, newest, now)
                for machine_id in sorted(statuses.keys() - known):
                    self.stats.reject(statuses[machine_id][0], f"unknown machine {machine_id!r}")
                newest = {m: newest[m] for m in known}
                alerts.note_statuses(conn, newest, now)
                heartbeats.update(m for m, status in newest.items() if status.online)
                wanted = planogram.wanted_by_many(conn, {m: newest[m].planogram_version for m in heartbeats})
                configs.update((m, (config, newest[m].planogram_version)) for m, config in wanted.items())
            for machine_id, message in readings.items():
                self.readings.note(machine_id, message.temperature_c, now)
            merged = merge_batches(rest)
            grouped = self._store_together(conn, merged, now)
            for topic, machine_id, kind, message in merged:
                if kind == "events" and machine_id in grouped:
                    self._stored(machine_id, topic, message, grouped[machine_id], acks, resends, None)
                elif kind == "events":
                    self._apply_events(conn, topic, machine_id, message, now, acks, resends,
                                       parked.get(machine_id))
                elif kind == "cmd/result":
                    log.info("machine %s: command %s %s %s", machine_id, message.id, message.status, message.reason)
                elif kind == "config":
                    pass  # our own retained planograms: the embedded broker hands them to every subscriber
                else:
                    self.stats.reject(topic, f"{kind} is not a topic the cloud consumes")
        if acks or heartbeats:
            self.alerter.kick()  # a jam, a door, a restock just stored: looked for now, or when the watcher has rested
        cloud_time = format_time(utcnow())
        for machine_id, heads in acks.items():
            for ledger, seq in heads.items():
                self.bus.publish(machine_id, "ack", Ack(seq, cloud_time, ledger).encode())
        # An idle machine writes no events and so earns no ack, but its clock may be stepped under it (NTP);
        # every status it sends (on connect, on a new head, every 30 s) is answered with the cloud's clock.
        # Seq 0 says nothing about events, so it can never move or confuse the machine's acked mark.
        for machine_id in heartbeats - acks.keys():
            self.bus.publish(machine_id, "ack", Ack(0, cloud_time).encode())
        for machine_id, from_seq in resends.items():
            self.request_resend(machine_id, from_seq)
        for machine_id, (config, reported) in configs.items():
            # The machine is online without the newest planogram: the broker may have lost the retained copy.
            log.info("machine %s reports planogram version %d; sending version %d again", machine_id, reported,
                     config.version)
            self.bus.publish(machine_id, "config", config.encode())

    # -- planograms ---------------------------------------------------------------------------------

    def publish_config(self, machine_id: str) -> bool:
        """Publish a machine's newest planogram, retained, after the transaction that made it committed."""
        with self.engine.connect() as conn:
            config = planogram.config_message(conn, machine_id)
        if config is None:
            return False
        return self.bus.publish(machine_id, "config", config.encode())

    def _apply_events(self, conn, topic, machine_id, batch: EventBatch, now, acks, resends,
                      before: "Parked | None") -> None:
        try:
            with conn.begin_nested():
                result = ingest.store_batch(conn, self.provider, machine_id, batch, now)
        except ingest.Rejected as e:
            self.stats.reject(topic, str(e))
            return
        except ingest.Conflict:
            # Another cloud process moved this machine's head first: try again shortly (for PARK_S at most:
            # past that, the message is counted and the machine's own resend brings it back).
            since = before.since if before else time.monotonic()
            if time.monotonic() - since < PARK_S:
                self._park(machine_id, topic, batch, since, before.head if before else 0, before)
            else:
                self.stats.reject(topic, "kept conflicting with another cloud process")
            return
        self._stored(machine_id, topic, batch, result, acks, resends, before)

    def _store_together(self, conn, merged: list[tuple], now) -> dict[str, ingest.Result]:
        """Store in one go the events batches of the group that simply continue their machine's chain (a
        machine with one batch in the group; ``ingest.store_batches``): {machine id: result}. The rest, and
        all of them if that fails, are stored a batch at a time."""
        once = Counter(m for _t, m, kind, _msg in merged if kind == "events")
        batches = [(m, msg) for _t, m, kind, msg in merged if kind == "events" and once[m] == 1]
        if len(batches) < 2:
            return {}
        try:
            with conn.begin_nested():
                done, _rest = ingest.store_batches(conn, self.provider, batches, now)
        except ingest.Conflict as e:
            log.info("another cloud process moved a machine of the group first (%s); storing its batches one "
                     "at a time", e)
            return {}
        except Exception:
            log.exception("storing %d machines' batches together failed; storing them one at a time",
                          len(batches))
            return {}
        self.stats.counts["batches_together"] += len(done)  # how many took the cheap way (bench/fleet.py)
        return done

    def _stored(self, machine_id, topic, batch, result: ingest.Result, acks, resends, before: "Parked | None"):
        """Count a stored (or redelivered, or early) batch, and earn its machine an ack or a resend."""
        self.stats.counts["events"] += result.stored
        self.stats.counts["batches"] += 1
        heads = acks.setdefault(machine_id, {})
        heads[result.ledger] = max(heads.get(result.ledger, 0), result.head)
        if result.resend_from is not None:
            # Likely the batch before it is being stored by another cloud process, or is still on its way.
            # Wait while the machine's head keeps moving; a gap with no progress for PARK_S needs a resend.
            now_m = time.monotonic()
            if before is None or result.head > before.head:
                since = now_m
            else:
                since = before.since
            waited = now_m - (before.first if before else now_m)
            if now_m - since < PARK_S and waited < PARK_MAX_S:
                self._park(machine_id, topic, batch, since, result.head, before)
            else:
                self.stats.counts["gaps"] += 1
                resends[machine_id] = result.resend_from

    def _park(self, machine_id: str, topic: str, batch: EventBatch, since: float, head: int,
              before: "Parked | None") -> None:
        first = before.first if before else time.monotonic()
        p = self._parked.setdefault(machine_id, Parked(since, head, [], first))
        p.since, p.head, p.first = max(p.since, since), max(p.head, head), min(p.first, first)
        p.batches.append((topic, batch))

    def request_resend(self, machine_id: str, from_seq: int) -> None:
        now = time.monotonic()
        if now - self._last_resend.get(machine_id, 0.0) < RESEND_DEBOUNCE_S:
            return
        self._last_resend[machine_id] = now
        issued = utcnow()
        cmd = Command(f"r-{secrets.token_hex(8)}", "resend", format_time(issued),
                      format_time(datetime.fromtimestamp(issued.timestamp() + 60, issued.tzinfo)),
                      {"from_seq": from_seq})
        log.info("gap from machine %s: asking for a resend from %d", machine_id, from_seq)
        self.bus.publish(machine_id, "cmd", cmd.encode())

    # -- orders -------------------------------------------------------------------------------------

    def tell_credentials_changed(self, machine_id: str) -> None:
        """Ask a machine to fetch its rotated secrets now (it also checks hourly and on every connect)."""
        issued = utcnow()
        cmd = Command(f"c-{secrets.token_hex(8)}", "credentials", format_time(issued),
                      format_time(issued + timedelta(hours=1)), {})
        if not self.bus.publish(machine_id, "cmd", cmd.encode()):
            log.warning("machine %s: could not tell it of its new credentials; it will find them itself",
                        machine_id)

    def send_vend(self, order) -> None:
        """Ask the machine to vend an authorised order.

        A publish paho does not accept leaves the order authorised: paho keeps a QoS 1 message it could not
        send ("not connected") in its session and sends it on reconnect, so the machine may still vend it.
        Voiding now gave that product away (issue 13). The machine refuses the command past its expiry,
        and the sweeper (``orders.expire_due``) voids the order then, as it does any unanswered order.
        """
        if not self.bus.publish(order.machine_id, "cmd", orders.vend_command(order).encode()):
            log.warning("order %s: the vend command is not with the broker yet; the order stays authorised "
                        "until it expires at %s", order.id, format_time(order.expires_at))
            with self._unsent_lock:
                self._unsent_vends[order.id] = order

    def resend_unsent_vends(self, now: datetime) -> int:
        """Publish again, every ``UNSENT_VEND_RESEND_S``, the vend commands the broker did not take, while
        their order is authorised and unexpired; return how many went.

        paho sends a kept QoS 1 message once, on its reconnect; a broker restarted without its sessions
        passes it to no one if the machine has not subscribed again yet (the machine logs in after the cloud
        when it must fetch its credentials first). The machine runs a command id at most once and answers a
        repeat with its first result, so sending it again until the machine answers costs nothing."""
        with self._unsent_lock:
            pending = list(self._unsent_vends.values())
        if not pending or not self.bus.connected.is_set():
            return 0
        sent = 0
        with self.engine.connect() as conn:
            current = {o.id: o for o in (orders.get(conn, p.id) for p in pending) if o is not None}
        for order in pending:
            now_order = current.get(order.id)
            if now_order is None or now_order.status != "authorised" or now_order.expires_at <= now:
                with self._unsent_lock:
                    self._unsent_vends.pop(order.id, None)
                continue
            if self.bus.publish(order.machine_id, "cmd", orders.vend_command(now_order).encode()):
                sent += 1
        return sent

    def authorisation_settled(self, order_id: str, ok: bool, reason: str) -> None:
        """A provider settled an authorisation outside a webhook (its worker had the platform's answer, or
        the customer came back from the platform's page): move the order on and send the vend; an
        authorisation that succeeded after its order gave up waiting is released."""
        now = utcnow()
        with self.engine.begin() as conn:
            moved = orders.confirm(conn, order_id, ok, reason, now, self.settings.vend_timeout_s)
            current = moved or orders.get(conn, order_id)
            late = ok and moved is None and current is not None and current.status == "declined"
            if late:
                self.provider.of(current).void_late(conn, current, "gave-up", now)
        if moved is not None and moved.status == "authorised":
            self.send_vend(moved)
        if late:
            self.provider.kick()

    def book_stock(self) -> None:
        """Book restock counts into the stock book. A count costs a dozen statements, so while machines'
        events wait to be stored (a fleet draining after an outage) only a few are booked per sweep: the
        acks come first, and the book catches up once the burst is stored. A cloud that stores no events
        leaves the book to one that does, which knows when they wait."""
        if not self.settings.ingest:
            return
        for _ in range(10):
            busy = self.inbox.qsize() > 0 or time.monotonic() - self.last_ingest < STOCK_BOOKING_QUIET_S
            limit = STOCK_BOOKING_BUSY if busy else STOCK_BOOKING_IDLE
            with self.engine.begin() as conn:
                booked = inventory.book_pending(conn, utcnow(), limit)
            if busy or booked < limit:
                return

    def _sweep_loop(self) -> None:
        db.background_writer()
        broker_stale = False
        next_late_check = 0.0
        next_unsent = 0.0
        while not self._stop.wait(1.0):
            try:
                if time.monotonic() >= next_unsent:
                    self.resend_unsent_vends(utcnow())
                    next_unsent = time.monotonic() + UNSENT_VEND_RESEND_S
                with self.engine.begin() as conn:
                    orders.expire_due(conn, self.provider, utcnow(), self.settings.expiry_grace_s)
                    if time.monotonic() >= next_late_check:  # fresh charges of late drops, taken since
                        orders.settle_late_charges(conn, self.provider, utcnow())
                        next_late_check = time.monotonic() + LATE_CHARGE_CHECK_S
                    ended = machines.expire_rotations(conn, utcnow())
                    reports.fold(conn)
                self.book_stock()
                if ended or broker_stale:
                    # The old users leave the password file now; Mosquitto drops their connections on reload.
                    broker_stale = True
                    log.info("%d machine(s) finished a secret rotation: %s", ended, self.refresh_broker())
                    broker_stale = False
            except sa.exc.SQLAlchemyError:
                log.exception("order sweeper failed; will try again")
            except OSError:
                log.exception("could not rewrite the broker's files; will try again")
