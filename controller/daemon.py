"""The controller daemon: one main loop that owns the ledger, the motors and the vend state machine.

Everything that happens (a message from the broker, a drop, the door, a technician's request) arrives in
one inbox as a typed message (``controller/inbox.py``); the main loop handles it and writes the facts to the
ledger before acting on them. The duties it hands off are plain parts: the vend state machine
(``vend.py``), the publish window and resends (``sync.py``), the screen (``screen.py``), the background
readers (``watchers.py``) and the technician's socket (``service.py``). Start in order: ledger, hardware,
screen, link, service socket, readers. Stop in reverse with the motors off first.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import threading
import time
from datetime import datetime, timezone

from hw import Hardware, HardwareError, open_display, open_hardware
from hw.w1 import ThermometerSettings
from protocol import ProtocolError, topics
from protocol.messages import (Ack, Command, CommandResult, Config, EventBatch, Status, Telemetry, decode,
                               parse_time)

from . import __version__
from .config import Config as ControllerConfig
from .config import credentials_path, write_credentials
from .inbox import (Connected, CredentialsFetched, Disconnected, DoorChanged, Drop, HardwareFault, MqttMessage,
                    NoDrop, ServiceButtonPressed, ServiceRequest, Temperature, Wake)
from .ledger import Ledger
from .link import Link
from .screen import Screen
from .selftest import NTP_SYNCED_FLAG, SelfTest, hardware_checks, hardware_failed
from .sdnotify import Notifier
from .service import ServiceMode, ServiceSocket, answer
from .sync import Heartbeat, Sync
from .vend import Busy, Finished, Record, RunMotor, StopMotor, VendStateMachine
from .watchers import CredentialsFetcher, ThermometerReader
from .words import Said, said

log = logging.getLogger(__name__)


class Controller:
    """The daemon's state and its main loop; ``run`` returns when ``stop`` is called."""

    def __init__(self, cfg: ControllerConfig, hardware: Hardware | None = None, *, monotonic=time.monotonic,
                 wallclock=time.time, ntp_flag: str = NTP_SYNCED_FLAG):
        self.cfg = cfg
        self.machine_id = cfg.machine.id
        self.monotonic = monotonic
        self.wallclock = wallclock
        self.inbox: queue.Queue = queue.Queue()
        self.ledger = Ledger(cfg.ledger.path)
        self.hardware = hardware
        self.vend = VendStateMachine(cfg.vend.drop_timeout_s, cfg.vend.turns)
        self.sync = Sync(self.ledger, batch_size=cfg.mqtt.batch_size, window=cfg.mqtt.window,
                         resend_after_s=cfg.mqtt.resend_after_s, resend_max_s=cfg.mqtt.resend_max_s)
        self.heartbeat = Heartbeat(every_s=cfg.mqtt.status_every_s, on_new_head=False)
        self.rejected_messages = 0
        self.last_rejected: dict[str, bytes] = {}  # topic -> the last payload refused on it
        self.notifier = Notifier()
        self._stopping = threading.Event()
        self.link: Link | None = None
        self.screen: Screen | None = None
        self._service: ServiceSocket | None = None
        self.service_mode = ServiceMode()
        self.credentials = CredentialsFetcher(self.machine_id, cfg.cloud.url, cfg.cloud.credentials_check_s,
                                              self.inbox, self._stopping, lambda: self.cfg.machine.secret,
                                              self.cloud_now)
        self.temperature_c: float | None = None
        self.thermometer_failing = False
        self.planogram = self.ledger.planogram()
        self.pending_config: Config | None = None  # newer than the applied one, waiting for the vend to end
        self.ignored_configs = 0
        self.ntp_flag = ntp_flag
        self.started_mono = monotonic()  # when this process began, on the clock no NTP step moves
        self.boot_seq = self.ledger.head + 1  # this process's boot event; an ack of it is fresh
        self.clock_fresh = False  # such an ack has told us the cloud's time
        self.selftest: SelfTest | None = None  # made at start; shown on the screen until settled and seen
        self.selftest_until = 0.0

    # -- clocks ---------------------------------------------------------------------------------------

    def cloud_now(self) -> float:
        """Our best idea of the cloud's clock: a Pi has no RTC, the cloud's ack carries the truth."""
        return self.sync.cloud_now(self.wallclock(), self.monotonic())

    def now_dt(self) -> datetime:
        """The cloud's clock as a UTC datetime, for the ledger's timestamps."""
        return datetime.fromtimestamp(self.cloud_now(), timezone.utc)

    def record(self, kind: str, data: dict):
        """Append one fact to the ledger, durably, before anything acts on it or reports it."""
        event = self.ledger.append(kind, data, self.now_dt(), self.sync.clock_synced)
        log.info("ledger %d %s %s", event.seq, kind, json.dumps(data, separators=(",", ":")))
        return event

    # -- start and stop -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring the parts up in order: ledger, hardware (motors off), screen, link, service socket, readers."""
        cfg = self.cfg
        self.ledger.start_boot()
        interrupted = self.ledger.interrupted_vend()
        if self.hardware is None:
            try:
                self.hardware = open_hardware(cfg)
            except HardwareError as e:
                self._show_hardware_failure(e)
                raise
        self.hardware.all_motors_off()
        if self.hardware.turn_timeout_s is not None:
            # A backend whose machine reports its own outcome (hw/mdb.py) says how long a vend may take.
            self.vend = VendStateMachine(self.hardware.turn_timeout_s, self.hardware.turns or cfg.vend.turns)
        self.boot_seq = self.record("boot", {"firmware": __version__, "slots": list(cfg.hardware.slots)}).seq
        if interrupted is not None:
            log.warning("vend of order %s was interrupted by a restart", interrupted.data["order_id"])
            self.execute(VendStateMachine.recover(interrupted))
        self._listen_to_hardware()
        self.screen = Screen(self.hardware.display, self.machine_id, cfg.machine.name, cfg.machine.secret.encode(),
                             cfg.cloud.url, cfg.screen.rotate_s, cfg.screen.url_file, cfg.screen.languages,
                             cfg.screen.font)
        self.selftest = SelfTest(self.monotonic(), cfg.screen.selftest_wait_s, hardware_checks(self.hardware),
                                 f"{cfg.mqtt.host}:{cfg.mqtt.port}", self.ntp_flag)
        self.screen.show_checks(self.selftest.lines(), said("Self-test: checking..."))
        self.link = Link(cfg.mqtt, self.machine_id, self.inbox)
        self.link.start()
        self._service = ServiceSocket(cfg.service.socket, self.inbox)
        self._service.start()
        if self.hardware.thermometer is not None:
            ThermometerReader(self.hardware.thermometer, cfg.section(ThermometerSettings).read_every_s, self.inbox,
                              self._stopping).start()
        self.credentials.start()
        self.notifier.notify("READY=1\nSTATUS=selling")

    def _show_hardware_failure(self, error: HardwareError) -> None:
        """The self-test of hardware that did not open, on the screen alone, before the daemon exits with it."""
        log.error("self-test: pins FAILED: %s", error)
        try:
            with open_display(self.cfg) as display:
                Screen(display, self.machine_id, self.cfg.machine.name, b"", self.cfg.cloud.url, 1.0,
                       languages=self.cfg.screen.languages, font=self.cfg.screen.font).show_checks(
                    hardware_failed(error), said("Self-test FAILED: this machine cannot sell"))
        except Exception:
            log.exception("could not show the self-test on the screen either")

    def advance_selftest(self, now: float) -> bool:
        """Settle the self-test as the broker and the clock answer; record it once settled. True while the
        screen is still the self-test's."""
        test = self.selftest
        if test is None:
            return False
        if not test.done:
            link_error = self.link.last_error if self.link is not None else ""
            if test.update(now, self.online, self.sync.clock_synced, link_error):
                for check in test.lines():
                    (log.info if check.ok else log.warning)("self-test: %s %s: %s", check.name,
                                                            "ok" if check.ok else "FAILED", check.detail)
                self.record("selftest", test.event_data())
                self.pump()
                self.selftest_until = now + self.cfg.screen.selftest_show_s
            heading = ("Self-test: checking..." if not test.done else "Self-test: all passed" if test.passed
                       else "Self-test: FAILED - see the lines in red")
            self.screen.show_checks(test.lines(), said(heading))
            return True
        return now < self.selftest_until

    def _listen_to_hardware(self) -> None:
        """The drivers' threads only put what they saw in the inbox."""
        put, hardware = self.inbox.put, self.hardware
        hardware.drop_sensor.when_drop = lambda t: put(Drop(t))
        hardware.drop_sensor.when_no_drop = lambda reason, slot_ok, t: put(NoDrop(reason, slot_ok, t))
        hardware.door.when_changed = lambda is_open, t: put(DoorChanged(is_open, t))
        hardware.faults.listener = lambda code, device, what, t: put(HardwareFault(code, device, what))
        if hardware.service_button is not None:
            hardware.service_button.when_pressed = lambda t: put(ServiceButtonPressed(t))

    def safe_state(self) -> None:
        """Every motor output off; callable from a signal handler or at exit, any number of times."""
        if self.hardware is not None:
            self.hardware.all_motors_off()

    def stop(self) -> None:
        """Ask the main loop to end; safe from a signal handler."""
        self._stopping.set()
        self.credentials.wake()
        self.inbox.put(Wake())

    def shutdown(self) -> None:
        """Safe state first: motors off, then the ledger closed, then "offline" said, then close."""
        self.notifier.notify("STOPPING=1")
        if self.hardware is not None:
            self.hardware.all_motors_off()
        if self._service is not None:
            self._service.close()
        head, planogram_version = self.ledger.head, self.ledger.planogram_version
        self.ledger.close()
        log.info("stopping: motors off, ledger closed at seq %d", head)
        if self.link is not None:
            self.link.stop(Status(online=False, firmware=__version__, ledger_head=head,
                                  planogram_version=planogram_version, boot=self.ledger.boot_number))
        if self.hardware is not None:
            self.hardware.close()
        log.info("stopped")

    def run(self) -> None:
        """Start, loop until stopped, and always leave the machine in its safe state."""
        try:
            self.start()
            watchdog_at = self.monotonic()
            while not self._stopping.is_set():
                now = self.monotonic()
                deadline = self.vend.deadline
                timeout = 0.5 if deadline is None else max(0.0, min(0.5, deadline - now))
                try:
                    item = self.inbox.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if item is not None:
                    self.handle(item)
                self.tick(self.monotonic())
                if self.notifier.watchdog_interval and self.monotonic() >= watchdog_at:
                    self.notifier.notify("WATCHDOG=1")
                    watchdog_at = self.monotonic() + self.notifier.watchdog_interval
        finally:
            self.shutdown()

    # -- the loop's work -----------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        """Whether the link to the broker is up."""
        return self.link is not None and self.link.connected

    def tick(self, now: float) -> None:
        """Time passes: the vend's timer, a waiting planogram, resends, the status and the screen."""
        self.execute(self.vend.timer_fired(now))
        self.sync.check_clock(self.wallclock(), now)
        self.apply_pending_config()
        if self.online:
            self.publish(self.sync.tick(now))
            if self.heartbeat.due(self.ledger.head, now):
                self.publish_status()
        if self.advance_selftest(now):
            return
        if not self.vend.busy:
            self.screen.refresh(self.cloud_now(), self.status_line())

    def status_line(self) -> str | Said:
        """The screen's line under the QR: ready, offline (both said in the screen's languages), or the service
        screen's state of the machine (for the technician: English)."""
        if self.service_mode.active(self.monotonic()):
            online = "online" if self.online else "OFFLINE"
            temperature = "" if self.temperature_c is None else f", {self.temperature_c:.1f} C"
            flagged = [s for s in self.hardware.motors if self.ledger.slot(s)[1]]
            return (f"Service: {online}, ledger {self.ledger.head}/{self.ledger.acked} acked{temperature}"
                    + (f", out of service: {' '.join(flagged)}" if flagged else ""))
        if not self.online:
            return said("Offline - reconnecting")
        return said("Ready")

    @functools.singledispatchmethod
    def handle(self, item) -> None:
        """Handle one message from the inbox, by its type."""
        raise TypeError(f"no handler for {type(item).__name__} in the inbox")

    @handle.register
    def on_wake(self, item: Wake) -> None:
        """Nothing to do: the loop looks at its stop flag next."""

    @handle.register
    def on_drop(self, item: Drop) -> None:
        """A product fell: the vend in progress succeeded, or it is an unexpected drop."""
        self.execute(self.vend.drop_seen(item.t))

    @handle.register
    def on_no_drop(self, item: NoDrop) -> None:
        """The machine says nothing fell: the vend in progress failed, for its reason."""
        self.execute(self.vend.not_dropped(item.t, item.reason, slot_ok=item.slot_ok))

    @handle.register
    def on_door(self, item: DoorChanged) -> None:
        """The door is a fact for the ledger, sent at once (the cloud refuses a technician's restock while it
        last heard the door shut); an open door also refuses vends (``refusal``)."""
        self.record("door.opened" if item.is_open else "door.closed", {})
        self.pump()

    @handle.register
    def on_fault(self, item: HardwareFault) -> None:
        """A driver's fault, recorded and sent."""
        self.record("fault", {"code": item.code, "detail": f"{item.device}: {item.what}", "device": item.device})
        self.pump()

    @handle.register
    def on_service_button(self, item: ServiceButtonPressed) -> None:
        """Enter or leave the service screen."""
        self.service_mode.toggle(self.monotonic())
        self.pump()

    @handle.register
    def on_connected(self, item: Connected) -> None:
        """Online again: check the credentials, say the status, send everything unacked again."""
        self.credentials.wake()
        batches = self.sync.connected(self.monotonic())
        self.publish_status()
        self.publish(batches)

    @handle.register
    def on_disconnected(self, item: Disconnected) -> None:
        """Offline: selling goes on; the events wait in the ledger."""
        log.warning("disconnected from broker: %s", item.reason)

    @handle.register
    def on_temperature(self, item: Temperature) -> None:
        """A reading from the thermometer's thread: a failing sensor is one fault per streak, never a number."""
        value = self.temperature_c = item.value
        if value is None:
            if not self.thermometer_failing:
                self.thermometer_failing = True
                self.record("fault", {"code": "thermometer.read", "detail": item.error, "device": "thermometer"})
                self.pump()
            return
        if self.thermometer_failing:
            self.thermometer_failing = False
            log.info("thermometer reads again: %.2f C", value)
        if self.online and -60 <= value <= 100:
            self.link.publish("telemetry", Telemetry(temperature_c=value,
                                                     door_open=self.hardware.door.is_open).encode())

    @handle.register
    def on_credentials(self, item: CredentialsFetched) -> None:
        """Take up rotated secrets: keep them on disk first, then sign QR codes and log in with them."""
        fetched, mqtt, machine = item.fetched, self.cfg.mqtt, self.cfg.machine
        login_changes = bool(mqtt.username) and (fetched["mqtt_username"], fetched["mqtt_password"]) != (
            mqtt.username, mqtt.password)
        if fetched["secret"] == machine.secret and not login_changes:
            return
        if len(fetched["secret"]) < 16:
            log.error("the cloud sent a secret of %d characters; keeping the current one", len(fetched["secret"]))
            return
        username, password = ((fetched["mqtt_username"], fetched["mqtt_password"]) if mqtt.username
                              else ("", ""))
        write_credentials(credentials_path(self.cfg), fetched["secret"], username, password)
        machine.secret = fetched["secret"]
        self.screen.secret = fetched["secret"].encode()
        self.screen.next_nonce()
        log.info("took up a rotated QR secret%s", " and broker login " + username if login_changes else "")
        if login_changes:
            mqtt.username, mqtt.password = username, password
            self.link.close()
            self.link = Link(mqtt, self.machine_id, self.inbox)
            self.link.start()

    @handle.register
    def on_mqtt_message(self, item: MqttMessage) -> None:
        """Decode and check a message from the broker; a bad one is logged, counted and dropped."""
        try:
            machine_id, kind = topics.parse(item.topic)
            if machine_id != self.machine_id or kind not in ("ack", "cmd", "config"):
                raise ProtocolError(f"topic {item.topic!r} is not for this machine")
            message = decode(kind, item.payload)
        except ProtocolError as e:
            self.rejected_messages += 1
            # A retained message comes back on every connect: the same bad payload is logged once per topic.
            if self.last_rejected.get(item.topic) != item.payload:
                self.last_rejected[item.topic] = item.payload
                log.warning("dropped message on %s: %s", item.topic, e)
            return
        if kind == "ack":
            self.on_ack(message)
        elif kind == "config":
            self.on_config(message)
        else:
            self.on_command(message)

    @handle.register
    def on_service(self, item: ServiceRequest) -> None:
        """A technician's request from the local socket."""
        try:
            item.reply.put(answer(self, item.request))
        except ValueError as e:
            item.reply.put({"ok": False, "error": str(e)})

    # -- sync ------------------------------------------------------------------------------------------

    def publish_status(self) -> None:
        """The retained status: online, firmware, ledger head, planogram version."""
        status = Status(online=True, firmware=__version__, ledger_head=self.ledger.head,
                        planogram_version=self.ledger.planogram_version, boot=self.ledger.boot_number)
        self.link.publish("status", status.encode(), retain=True)
        self.heartbeat.sent(self.ledger.head, self.monotonic())

    def publish(self, batches: list[EventBatch]) -> None:
        """Hand the sync's batches to the link in order; the first one not taken (and all after it) waits."""
        for batch in batches:
            if not (self.online and self.link.publish("events", batch.encode())):
                self.sync.not_sent(batch)
                return

    def pump(self) -> None:
        """Publish unacknowledged events in order, within the sync's window, when online."""
        if self.online:
            self.publish(self.sync.due(self.monotonic()))

    def on_ack(self, ack: Ack) -> None:
        """The cloud's ack: move the mark, learn its clock, and send what the window now allows."""
        cloud_time = parse_time(ack.cloud_time, "cloud_time").timestamp()
        self.publish(self.sync.ack(ack.seq, cloud_time, self.monotonic(), self.wallclock(), ack.ledger))
        if not self.clock_fresh and ack.ledger == self.ledger.ledger_id and ack.seq >= self.boot_seq:
            # The cloud stored our boot event: this ack left it after we started, and so did its clock. A
            # new ledger takes commands issued from then on only (see ``refusal``).
            self.clock_fresh = True
            self.ledger.pin_commands_from(cloud_time)
        if ack.busy:
            self.sync.cloud_busy(self.monotonic(), ack.wait_s)

    # -- planograms and commands -----------------------------------------------------------------------

    def on_config(self, config: Config) -> None:
        """A planogram from the cloud. The broker keeps the newest one and hands it over on every connect,
        so the same version arriving again is the normal case: it changes nothing, as does an older one.

        A config naming a slot this machine has no motor for is refused whole (a partial planogram would
        sell from a cabinet the cloud does not describe) and recorded once as ``command.rejected`` with
        ``cmd_id`` ``config-{version}``: the ledger's commands table then remembers it, so the retained
        copy arriving on each reconnect is not recorded again, and the cloud shows the version as rejected.
        """
        newest = max(self.ledger.planogram_version, self.pending_config.version if self.pending_config else 0)
        if config.version <= newest:
            self.ignored_configs += 1
            log.debug("planogram version %d ignored: version %d is applied or waiting", config.version, newest)
            return
        unknown = [s.code for s in config.slots if s.code not in self.hardware.motors]
        if unknown:
            cmd_id = f"config-{config.version}"
            if self.ledger.command(cmd_id) is None:
                reason = f"no slot {' '.join(unknown)} on this machine"
                log.error("planogram version %d refused: %s", config.version, reason)
                self.record("command.rejected", {"cmd_id": cmd_id, "reason": reason, "version": config.version})
                self.pump()
            return
        self.pending_config = config
        self.apply_pending_config()

    def apply_pending_config(self) -> None:
        """Apply the waiting planogram, unless a vend is running: prices and slots never change under one."""
        if self.pending_config is None or self.vend.busy:
            return
        config, self.pending_config = self.pending_config, None
        event = self.ledger.apply_planogram(config.version, config.slots, self.now_dt(), self.sync.clock_synced)
        self.planogram = self.ledger.planogram()
        log.info("ledger %d config.applied: planogram version %d, %d slots", event.seq, config.version,
                 len(config.slots))
        self.pump()

    def on_command(self, cmd: Command) -> None:
        """A command from the cloud: fetch credentials, resend from a seq, or vend (at most once per id)."""
        if cmd.kind == "credentials":
            self.credentials.wake()
            return
        if cmd.kind == "resend":
            self.publish(self.sync.resend_from(cmd.args["from_seq"], self.monotonic()))
            return
        seen = self.ledger.command(cmd.id)
        if seen is not None:
            status, reason, seq = seen
            log.info("command %s seen before (%s): not run again", cmd.id, status)
            self.publish_result(CommandResult(cmd.id, status if status != "started" else "done", reason, seq))
            return
        reason = self.refusal(cmd)
        if reason:
            event = self.record("command.rejected", {"cmd_id": cmd.id, "reason": reason,
                                                     "order_id": cmd.args["order_id"], "slot": cmd.args["slot"]})
            self.pump()
            self.publish_result(CommandResult(cmd.id, "rejected", reason, event.seq))
            return
        try:
            actions = self.vend.start(cmd.id, cmd.args["order_id"], cmd.args["slot"], self.monotonic())
        except Busy as e:
            log.error("vend refused: %s", e)
            return
        self.execute(actions)
        # Drawn after the motor has started, so the customer at the machine sees it without delaying it.
        item = self.planogram.get(cmd.args["slot"])
        template, fields = self.hardware.vend_prompt_parts(cmd.args["slot"],
                                                           item.product if item else said("your product"))
        self.screen.refresh(self.cloud_now(), said(template, **fields))

    def refusal(self, cmd: Command) -> str:
        """Why this vend command must not run, or '' if it may."""
        slot = cmd.args["slot"]
        if not self.clock_trusted():
            # A fresh card (or any start) with its wall clock unset cannot tell a replayed command from a new
            # one: its ledger does not know the id, and the expiry is judged by a clock that may be days off.
            return "clock not set: no word from the cloud or NTP since the start"
        if cmd.expired(self.now_dt()):
            return "expired"
        # A new ledger (a new card) pins the time its first process started: a command issued before then
        # may have been run by the card it replaced, and the new ledger has no record of it.
        began = self.ledger.commands_from or self.ledger.pin_commands_from(
            self.cloud_now() - (self.monotonic() - self.started_mono))
        if parse_time(cmd.issued_at, "issued_at").timestamp() < began:
            return "issued before this ledger began: the card it replaced may have run it"
        if slot not in self.hardware.motors:
            return f"no slot {slot} on this machine"
        if self.planogram and slot not in self.planogram:
            return f"slot {slot} is not in planogram version {self.ledger.planogram_version}"
        count, flagged = self.ledger.slot(slot)
        if flagged:
            return f"slot {slot} is out of service after a failed vend"
        if count <= 0:
            return f"slot {slot} is sold out"
        if self.vend.busy:
            return "busy with another vend"
        if self.hardware.door.is_open:
            return "service door is open"
        return self.hardware.refusal()

    def clock_trusted(self) -> bool:
        """Whether the clock that judges a command's expiry is known to be right: NTP has set ours, or the
        cloud has told us its time in an ack that must have been sent after this process started (it
        acks our boot event). Any other ack may be one queued in the broker long ago: its time is not proof."""
        return self.clock_fresh or os.path.exists(self.ntp_flag)

    def publish_result(self, result: CommandResult) -> None:
        """Tell the cloud a command's outcome, when online (a redelivered command is answered again)."""
        if self.online:
            self.link.publish("cmd/result", result.encode())

    def execute(self, actions: list) -> None:
        """Carry out the state machine's actions in order; any failure leaves the motors off."""
        try:
            for action in actions:
                if isinstance(action, Record):
                    self.record(action.kind, action.data)
                    self.pump()
                elif isinstance(action, RunMotor):
                    item = self.planogram.get(action.slot)
                    try:
                        self.hardware.motors[action.slot].vend(item.price if item else None)
                    except HardwareError as e:
                        # A board that refuses or does not answer: no turn, so no drop; the vend's timer
                        # makes it a retry, then a failed vend that is not charged.
                        self.hardware.all_motors_off()
                        self.record("fault", {"code": "motor.run", "detail": str(e), "device": f"motor {action.slot}"})
                        self.pump()
                elif isinstance(action, StopMotor):
                    self.hardware.motors[action.slot].stop()
                elif isinstance(action, Finished):
                    ev_seq = self.ledger.head
                    self.publish_result(CommandResult(action.cmd_id, action.outcome, "", ev_seq))
                    self.screen.next_nonce()
        except Exception:
            self.hardware.all_motors_off()
            raise
