"""The controller daemon: one main loop that owns the ledger, the motors and the vend state machine.

Everything that happens (a message from the broker, a drop, the door, a technician's request) arrives in
one inbox; the main loop handles it and writes the facts to the ledger before acting on them. Start in
order: ledger, hardware, screen, link, service socket. Stop in reverse with the motors off first.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import urllib.request
from datetime import datetime, timezone

from hw import Hardware, HardwareError, open_hardware
from protocol import ProtocolError, topics
from protocol import token as qrtoken
from protocol.messages import (Ack, Command, CommandResult, Config, EventBatch, Status, Telemetry, decode,
                               parse_time)

from . import __version__
from .config import credentials_path, write_credentials
from .ledger import Ledger
from .link import Link
from .screen import Screen
from .sdnotify import Notifier
from .vend import Busy, Finished, Record, RunMotor, StopMotor, VendStateMachine

log = logging.getLogger(__name__)

STATUS_EVERY_S = 30.0
STATUS_MIN_GAP_S = 2.0
SERVICE_SCREEN_S = 120.0  # the service button shows the machine's state on its screen this long


class Controller:
    """The daemon's state and its main loop; ``run`` returns when ``stop`` is called."""

    def __init__(self, cfg: dict, hardware: Hardware | None = None, *, monotonic=time.monotonic,
                 wallclock=time.time):
        self.cfg = cfg
        self.machine_id = cfg["machine"]["id"]
        self.monotonic = monotonic
        self.wallclock = wallclock
        self.inbox: queue.Queue = queue.Queue()
        self.ledger = Ledger(cfg["ledger"]["path"])
        self.hardware = hardware
        self.vend = VendStateMachine(cfg["vend"]["drop_timeout_s"], cfg["vend"]["turns"])
        self.clock_offset: float | None = None  # cloud clock minus ours, from the last ack
        self.sent_upto = 0
        self.last_progress = 0.0
        self.next_status = 0.0
        self.status_head = 0
        self.rejected_messages = 0
        self.notifier = Notifier()
        self._stopping = threading.Event()
        self.link: Link | None = None
        self.screen: Screen | None = None
        self._service: ServiceSocket | None = None
        self.service_until = 0.0
        self._credentials_wake = threading.Event()
        self.temperature_c: float | None = None
        self.thermometer_failing = False
        self.planogram = self.ledger.planogram()
        self.pending_config: Config | None = None  # newer than the applied one, waiting for the vend to end
        self.ignored_configs = 0

    # -- clocks ---------------------------------------------------------------------------------------

    def cloud_now(self) -> float:
        """Our best idea of the cloud's clock: a Pi has no RTC, the cloud's ack carries the truth."""
        return self.wallclock() + (self.clock_offset or 0.0)

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.cloud_now(), timezone.utc)

    def record(self, kind: str, data: dict):
        event = self.ledger.append(kind, data, self.now_dt(), self.clock_offset is not None)
        log.info("ledger %d %s %s", event.seq, kind, json.dumps(data, separators=(",", ":")))
        return event

    # -- start and stop -------------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        self.ledger.start_boot()
        interrupted = self.ledger.interrupted_vend()
        if self.hardware is None:
            self.hardware = open_hardware(cfg)
        self.hardware.all_motors_off()
        self.record("boot", {"firmware": __version__, "slots": list(cfg["hardware"]["slots"])})
        if interrupted is not None:
            log.warning("vend of order %s was interrupted by a restart", interrupted.data["order_id"])
            self.execute(VendStateMachine.recover(interrupted))
        self.hardware.drop_sensor.when_drop = lambda t: self.inbox.put(("drop", t))
        self.hardware.door.when_changed = lambda is_open, t: self.inbox.put(("door", is_open, t))
        self.hardware.faults.listener = lambda code, device, what, t: self.inbox.put(("fault", code, device, what))
        if self.hardware.service_button is not None:
            self.hardware.service_button.when_pressed = lambda t: self.inbox.put(("service_button", t))
        self.screen = Screen(self.hardware.display, self.machine_id, cfg["machine"]["name"],
                             cfg["machine"]["secret"].encode(), cfg["cloud"]["url"], cfg["screen"]["rotate_s"],
                             cfg["screen"]["url_file"])
        self.screen.refresh(self.cloud_now(), "Connecting...")
        self.link = Link(cfg["mqtt"], self.machine_id, self.inbox)
        self.link.start()
        self._service = ServiceSocket(cfg["service"]["socket"], self.inbox)
        self._service.start()
        if self.hardware.thermometer is not None:
            threading.Thread(target=self._read_thermometer, name="thermometer", daemon=True).start()
        threading.Thread(target=self._watch_credentials, name="credentials", daemon=True).start()
        self.notifier.notify("READY=1\nSTATUS=selling")

    def _read_thermometer(self) -> None:
        """The thermometer's own thread: a DS18B20 read blocks for 750 ms, far too long for the main loop."""
        every = self.cfg["thermometer"]["read_every_s"]
        while not self._stopping.is_set():
            try:
                self.inbox.put(("temperature", self.hardware.thermometer.read_c(), ""))
            except HardwareError as e:
                self.inbox.put(("temperature", None, str(e)))
            self._stopping.wait(every)

    def _watch_credentials(self) -> None:
        """Its own thread: ask the cloud for this machine's secrets now and then (a slow or absent cloud must
        never hold up the main loop), and at once when woken (on connect, or when the cloud says so)."""
        every = self.cfg["cloud"]["credentials_check_s"]
        url = self.cfg["cloud"]["url"].rstrip("/") + "/api/v1/machine/credentials"
        while not self._stopping.is_set():
            self._credentials_wake.wait(every)
            self._credentials_wake.clear()
            if self._stopping.is_set():
                return
            header = qrtoken.sign_request(self.machine_id, self.cfg["machine"]["secret"].encode(), self.cloud_now(),
                                          "credentials")
            request = urllib.request.Request(url, headers={"Authorization": header})
            try:
                with urllib.request.urlopen(request, timeout=15) as response:
                    answer = json.loads(response.read())
                fetched = {k: answer[k] for k in ("secret", "mqtt_username", "mqtt_password")}
                if not all(isinstance(v, str) for v in fetched.values()):
                    raise ValueError("not text")
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("could not fetch credentials from %s: %s", url, e)
                continue
            self.inbox.put(("credentials", fetched))

    def on_credentials(self, fetched: dict) -> None:
        """Take up rotated secrets: keep them on disk first, then sign QR codes and log in with them."""
        mqtt = self.cfg["mqtt"]
        login_changes = bool(mqtt["username"]) and (fetched["mqtt_username"], fetched["mqtt_password"]) != (
            mqtt["username"], mqtt["password"])
        if fetched["secret"] == self.cfg["machine"]["secret"] and not login_changes:
            return
        if len(fetched["secret"]) < 16:
            log.error("the cloud sent a secret of %d characters; keeping the current one", len(fetched["secret"]))
            return
        username, password = ((fetched["mqtt_username"], fetched["mqtt_password"]) if mqtt["username"]
                              else ("", ""))
        write_credentials(credentials_path(self.cfg), fetched["secret"], username, password)
        self.cfg["machine"]["secret"] = fetched["secret"]
        self.screen.secret = fetched["secret"].encode()
        self.screen.next_nonce()
        log.info("took up a rotated QR secret%s", " and broker login " + username if login_changes else "")
        if login_changes:
            mqtt["username"], mqtt["password"] = username, password
            self.link.close()
            self.link = Link(mqtt, self.machine_id, self.inbox)
            self.link.start()

    def safe_state(self) -> None:
        """Every motor output off; callable from a signal handler or at exit, any number of times."""
        if self.hardware is not None:
            self.hardware.all_motors_off()

    def stop(self) -> None:
        self._stopping.set()
        self._credentials_wake.set()
        self.inbox.put(("wake",))

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

    def tick(self, now: float) -> None:
        self.execute(self.vend.timer_fired(now))
        self.apply_pending_config()
        if self.link is not None and self.link.connected:
            if self.sent_upto > self.ledger.acked and now - self.last_progress > self.cfg["mqtt"]["resend_after_s"]:
                log.warning("no ack for %d s; resending from %d", now - self.last_progress, self.ledger.acked + 1)
                self.sent_upto = self.ledger.acked
                self.last_progress = now
                self.pump()
            # A changed head is told within STATUS_MIN_GAP_S; an unchanged one every STATUS_EVERY_S.
            if now >= self.next_status or (self.ledger.head != self.status_head
                                           and now >= self.next_status - STATUS_EVERY_S + STATUS_MIN_GAP_S):
                self.publish_status()
        if not self.vend.busy:
            self.screen.refresh(self.cloud_now(), self.status_line())

    def on_temperature(self, value: float | None, error: str) -> None:
        """A reading from the thermometer's thread: a failing sensor is one fault per streak, never a number."""
        self.temperature_c = value
        if value is None:
            if not self.thermometer_failing:
                self.thermometer_failing = True
                self.record("fault", {"code": "thermometer.read", "detail": error, "device": "thermometer"})
                self.pump()
            return
        if self.thermometer_failing:
            self.thermometer_failing = False
            log.info("thermometer reads again: %.2f C", value)
        if self.link is not None and self.link.connected and -60 <= value <= 100:
            self.link.publish("telemetry", Telemetry(temperature_c=value,
                                                     door_open=self.hardware.door.is_open).encode())

    def status_line(self) -> str:
        if self.service_until and self.monotonic() < self.service_until:
            online = "online" if self.link is not None and self.link.connected else "OFFLINE"
            temperature = "" if self.temperature_c is None else f", {self.temperature_c:.1f} C"
            flagged = [s for s in self.hardware.motors if self.ledger.slot(s)[1]]
            return (f"Service: {online}, ledger {self.ledger.head}/{self.ledger.acked} acked{temperature}"
                    + (f", out of service: {' '.join(flagged)}" if flagged else ""))
        self.service_until = 0.0
        if self.link is None or not self.link.connected:
            return "Offline - reconnecting"
        return "Ready"

    def handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "message":
            self.on_message(item[1], item[2])
        elif kind == "drop":
            self.execute(self.vend.drop_seen(item[1]))
        elif kind == "door":
            self.record("door.opened" if item[1] else "door.closed", {})
        elif kind == "fault":
            _, code, device, what = item
            self.record("fault", {"code": code, "detail": f"{device}: {what}", "device": device})
            self.pump()
        elif kind == "credentials":
            self.on_credentials(item[1])
        elif kind == "temperature":
            self.on_temperature(item[1], item[2])
        elif kind == "service_button":
            self.service_until = 0.0 if self.service_until else self.monotonic() + SERVICE_SCREEN_S
            self.pump()
        elif kind == "connected":
            log.info("connected to broker; resending from %d", self.ledger.acked + 1)
            self._credentials_wake.set()
            self.sent_upto = self.ledger.acked
            self.last_progress = self.monotonic()
            self.publish_status()
            self.pump()
        elif kind == "disconnected":
            log.warning("disconnected from broker: %s", item[1])
        elif kind == "service":
            self.on_service(item[1], item[2])

    def publish_status(self) -> None:
        status = Status(online=True, firmware=__version__, ledger_head=self.ledger.head,
                        planogram_version=self.ledger.planogram_version, boot=self.ledger.boot_number)
        self.link.publish("status", status.encode(), retain=True)
        self.status_head = self.ledger.head
        self.next_status = self.monotonic() + STATUS_EVERY_S

    def pump(self) -> None:
        """Publish unacknowledged events in order, keeping at most ``window`` batches in flight."""
        if self.link is None or not self.link.connected:
            return
        mq = self.cfg["mqtt"]
        limit = mq["window"] * mq["batch_size"]
        acked = self.ledger.acked
        if self.sent_upto <= acked:
            self.last_progress = self.monotonic()
        while self.sent_upto < self.ledger.head and self.sent_upto - acked < limit:
            events = self.ledger.read(self.sent_upto + 1, mq["batch_size"])
            if not events or not self.link.publish("events", EventBatch(tuple(events)).encode()):
                return
            self.sent_upto = events[-1].seq

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            machine_id, kind = topics.parse(topic)
            if machine_id != self.machine_id or kind not in ("ack", "cmd", "config"):
                raise ProtocolError(f"topic {topic!r} is not for this machine")
            message = decode(kind, payload)
        except ProtocolError as e:
            self.rejected_messages += 1
            log.warning("dropped message on %s: %s", topic, e)
            return
        if kind == "ack":
            self.on_ack(message)
        elif kind == "config":
            self.on_config(message)
        else:
            self.on_command(message)

    def on_ack(self, ack: Ack) -> None:
        self.clock_offset = parse_time(ack.cloud_time, "cloud_time").timestamp() - self.wallclock()
        if ack.seq > self.ledger.head:
            log.error("cloud acks seq %d but the ledger ends at %d: is this the right ledger?", ack.seq,
                      self.ledger.head)
        if self.ledger.set_acked(ack.seq):
            self.last_progress = self.monotonic()
            self.pump()

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
        event = self.ledger.apply_planogram(config.version, config.slots, self.now_dt(), self.clock_offset is not None)
        self.planogram = self.ledger.planogram()
        log.info("ledger %d config.applied: planogram version %d, %d slots", event.seq, config.version,
                 len(config.slots))
        self.pump()

    def on_command(self, cmd: Command) -> None:
        if cmd.kind == "credentials":
            self._credentials_wake.set()
            return
        if cmd.kind == "resend":
            # The cloud found a gap; it may even ask for events it once acked (a restored backup).
            self.sent_upto = min(self.sent_upto, cmd.args["from_seq"] - 1)
            self.pump()
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
        self.screen.refresh(self.cloud_now(), f"Dropping {item.product if item else 'your product'} from "
                                              f"{cmd.args['slot']}...")

    def refusal(self, cmd: Command) -> str:
        """Why this vend command must not run, or '' if it may."""
        slot = cmd.args["slot"]
        if cmd.expired(self.now_dt()):
            return "expired"
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
        return ""

    def publish_result(self, result: CommandResult) -> None:
        if self.link is not None and self.link.connected:
            self.link.publish("cmd/result", result.encode())

    def execute(self, actions: list) -> None:
        """Carry out the state machine's actions in order; any failure leaves the motors off."""
        try:
            for action in actions:
                if isinstance(action, Record):
                    self.record(action.kind, action.data)
                    self.pump()
                elif isinstance(action, RunMotor):
                    try:
                        self.hardware.motors[action.slot].run()
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

    def on_service(self, request: dict, reply: queue.Queue) -> None:
        """A technician's request from the local socket."""
        try:
            op = request.get("op")
            if op == "status":
                reply.put({"ok": True, "machine": self.machine_id, "head": self.ledger.head,
                           "acked": self.ledger.acked, "online": bool(self.link and self.link.connected),
                           "rejected_messages": self.rejected_messages,
                           "url": self.screen.url,
                           "planogram": {"version": self.ledger.planogram_version,
                                         "waiting": self.pending_config.version if self.pending_config else None,
                                         "ignored": self.ignored_configs,
                                         "slots": {s: [p.product, p.price, p.currency, p.capacity, p.par]
                                                   for s, p in sorted(self.planogram.items())}},
                           "slots": {s: dict(zip(("count", "flagged"), self.ledger.slot(s)))
                                     for s in self.hardware.motors}})
            elif op == "restock":
                counts = request.get("counts")
                if not isinstance(counts, dict) or not counts:
                    raise ValueError("restock needs counts, like A1=8")
                for slot, count in counts.items():
                    if slot not in self.hardware.motors:
                        raise ValueError(f"no slot {slot!r} on this machine")
                    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1000:
                        raise ValueError(f"count for {slot} must be a whole number 0-1000, got {count!r}")
                for slot, count in counts.items():
                    self.record("restock", {"slot": slot, "count": count})
                self.pump()
                reply.put({"ok": True, "head": self.ledger.head})
            else:
                raise ValueError(f"unknown operation {op!r}; use status or restock")
        except ValueError as e:
            reply.put({"ok": False, "error": str(e)})


class ServiceSocket:
    """A Unix socket for the technician's tool on the machine; one JSON line each way."""

    def __init__(self, path: str, inbox: queue.Queue):
        self.path = path
        self.inbox = inbox
        self.sock: socket.socket | None = None

    def start(self) -> None:
        if os.path.dirname(self.path):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o660)
        self.sock.listen(4)
        threading.Thread(target=self._serve, name="service-socket", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    line = conn.makefile("rb").readline(65536)
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("request must be a JSON object")
                except (ValueError, OSError) as e:
                    conn.sendall(json.dumps({"ok": False, "error": f"bad request: {e}"}).encode() + b"\n")
                    continue
                reply: queue.Queue = queue.Queue()
                self.inbox.put(("service", request, reply))
                try:
                    answer = reply.get(timeout=10)
                except queue.Empty:
                    answer = {"ok": False, "error": "controller did not answer"}
                try:
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    pass

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass
