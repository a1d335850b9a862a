"""The simulated machines of ``bench/fleet.py``: one asyncio loop per worker process, one MQTT connection each.

Each machine is the controller's link without the hardware: the controller's own publish window
(``controller.sync.Sync``) and heartbeat schedule (``controller.sync.Heartbeat``) over a ledger held in
memory, the controller's own paho client settings (``protocol.mqtt.make_client``: MQTT 5, a persistent
session, the last will "offline"), a vend command answered the way the controller answers it (vend.started,
a drop after ``DROP_S``, vend.succeeded, the command's result). paho runs without a thread of its own: its
sockets are watched by the asyncio loop (``loop_read``/``loop_write`` when they are ready, ``loop_misc`` for
keep-alives), so one process holds thousands of machines.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import random
import resource
import socket
import time
from datetime import datetime, timezone

import paho.mqtt.client as mqtt

from controller.sync import Heartbeat, Sync
from protocol import topics
from protocol.messages import GENESIS_HASH, Ack, Command, CommandResult, Event, Status, Telemetry, parse_time
from protocol.mqtt import connect_async, make_client, no_delay

DROP_S = 0.8  # motor start to the drop sensor, as a real spiral turns
TICK_S = 0.5  # how often the controller's main loop ticks when nothing arrives
FIRMWARE = "fleet-bench"
STALLED_S = 30.0  # a machine with events waiting and no ack for this long is stalled


class MemoryLedger:
    """The controller ledger's interface for ``Sync`` (head, acked, set_acked, read, ledger_id), in memory."""

    def __init__(self, ledger_id: str):
        self.ledger_id = ledger_id
        self.events: list[Event] = []
        self.written: list[float] = []  # monotonic time each event was appended
        self.acked = 0

    @property
    def head(self) -> int:
        return len(self.events)

    def set_acked(self, seq: int) -> bool:
        seq = min(seq, self.head)
        if seq <= self.acked:
            return False
        self.acked = seq
        return True

    def read(self, from_seq: int, limit: int) -> list[Event]:
        return self.events[from_seq - 1:from_seq - 1 + limit]

    def append(self, kind: str, data: dict, at: float, written: float) -> Event:
        prev = self.events[-1].hash if self.events else GENESIS_HASH
        event = Event.make(self.head + 1, datetime.fromtimestamp(at, timezone.utc), 1, True, kind, data, prev)
        self.events.append(event)
        self.written.append(written)
        return event


class SimMachine:
    """One machine: its ledger, its sync window, its heartbeat, its MQTT client on the worker's loop."""

    def __init__(self, worker: "Worker", machine_id: str, orders: list[str], rng: random.Random):
        self.w, self.id, self.orders, self.rng = worker, machine_id, orders, rng
        opts = worker.opts
        self.ledger = MemoryLedger(f"bench-{machine_id}")
        self.sync = Sync(self.ledger, batch_size=opts["batch_size"], window=opts["window"],
                         resend_after_s=opts["resend_after_s"], **worker.sync_options(rng))
        self.heartbeat = Heartbeat(**worker.heartbeat_options())
        self.online = False
        self.offline_until = 0.0  # in a storm: the connection stays down until then
        self.next_sale = 0.0
        self.next_telemetry = 0.0
        self.max_sent = 0  # the highest seq ever handed to the broker: a seq at or below it again is a resend
        self.last_progress = 0.0
        self.storm_head = 0
        self.storm_drained_at: float | None = None
        self.client = make_client(machine_id, "5", persistent=True)
        self.client._create_socket_connection = self._start_connecting  # see _start_connecting
        self.client.will_set(topics.topic(machine_id, "status"), Status(online=False).encode(), qos=1, retain=True)
        self.client.on_connect = self.on_connect
        self.client.on_disconnect = self.on_disconnect
        self.client.on_message = self.on_message
        loop = worker.loop
        self.client.on_socket_open = self._socket_open
        self.client.on_socket_close = lambda c, u, sock: loop.remove_reader(sock)
        self.client.on_socket_register_write = lambda c, u, sock: loop.add_writer(sock, self._write)
        self.client.on_socket_unregister_write = lambda c, u, sock: loop.remove_writer(sock)

    def _start_connecting(self) -> socket.socket:
        """paho's own connect (``socket.create_connection``) blocks until the TCP handshake is done: in a storm
        Mosquitto's listen queue overflows, a SYN is dropped and retried a second later, and the whole loop
        (every machine of the worker, their acks) stopped with it: the machines heard acks seconds after a
        bystander did (``--watch-acks``). A controller has a process of its own, so its blocking connect holds
        up no other machine. Here the connect only starts; paho sends CONNECT when the socket is writable."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", self.w.opts["port"]))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, os.strerror(err))
        return sock

    def _socket_open(self, client, userdata, sock) -> None:
        no_delay(client, userdata, sock)  # what make_client's own callback does for the controller
        self.w.loop.add_reader(sock, self._read)

    def _read(self) -> None:
        self.client.loop_read()

    def _write(self) -> None:
        self.client.loop_write()

    # -- the link ------------------------------------------------------------------------------------

    def connect(self) -> None:
        try:
            connect_async(self.client, "127.0.0.1", self.w.opts["port"], 30, persistent=True)
            self.client.reconnect()
        except OSError:
            self.w.counts["connect_failures"] += 1

    def cut(self, until: float) -> None:
        """The network goes: no DISCONNECT, so the broker sends the last will when it sees the socket close."""
        self.offline_until = until
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.client.loop_read()  # paho sees the closed socket and calls on_disconnect

    def on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.w.counts["refused"] += 1
            return
        client.subscribe([(topics.topic(self.id, kind), 1) for kind in ("ack", "cmd", "config")])
        self.online = True
        now = time.monotonic()
        self.w.counts["connects"] += 1
        batches = self.sync.connected(now)
        self.publish_status(now)
        self.publish(batches)

    def on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.online = False
        self.w.counts["disconnects"] += 1
        if not self.offline_until and not self.w.ending:  # not a storm's cut: back as paho's own delay would
            self.offline_until = time.monotonic() + self.rng.uniform(1.0, 2.0)

    def on_message(self, client, userdata, message) -> None:
        now = time.monotonic()
        kind = message.topic.rsplit("/", 1)[1]
        if kind == "ack":
            ack = Ack.decode(message.payload)
            before = self.ledger.acked
            wall = time.time()
            cloud_time = parse_time(ack.cloud_time, "cloud_time").timestamp()
            self.publish(self.sync.ack(ack.seq, cloud_time, now, wall))
            # The cloud writes its clock into an ack after the commit, just before publishing it (one box, one
            # clock): this is the ack's way back alone, the cloud's MQTT client, the broker and this loop.
            self.w.ack_ways.append((wall, wall - cloud_time, ack.seq > 0))
            if self.ledger.acked > before:
                self.on_acked(before, self.ledger.acked, now)
            if ack.busy and self.w.opts["honours_busy"]:
                self.w.counts["busy_notices"] += 1
                self.sync.cloud_busy(now, ack.wait_s)
        elif kind == "cmd":
            cmd = Command.decode(message.payload)
            if cmd.kind == "resend":
                self.w.counts["resend_commands"] += 1
                self.publish(self.sync.resend_from(cmd.args["from_seq"], now))
            elif cmd.kind == "vend":
                self.vend(cmd, now)

    def on_acked(self, before: int, acked: int, now: float) -> None:
        self.last_progress = now
        written = self.ledger.written
        w = self.w
        for seq in range(before + 1, acked + 1):
            if seq > self.storm_head or w.storm_at is None:
                w.ack_samples.append((written[seq - 1], now - written[seq - 1]))
        if self.storm_head and self.storm_drained_at is None and acked >= self.storm_head:
            self.storm_drained_at = now

    def stalled(self, now: float) -> bool:
        """Events waiting and no ack progress for STALLED_S since the older of the last progress and the oldest
        waiting event's write."""
        acked = self.ledger.acked
        if acked >= self.ledger.head:
            return False
        return now - max(self.last_progress, self.ledger.written[acked]) > STALLED_S

    def publish(self, batches) -> None:
        for batch in batches:
            info = self.client.publish(topics.topic(self.id, "events"), batch.encode(), qos=1) if self.online else None
            if info is None or info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.sync.not_sent(batch)
                return
            first, last = batch.events[0].seq, batch.events[-1].seq
            w = self.w
            w.counts["batches_sent"] += 1
            if first <= self.max_sent:
                w.counts["events_resent"] += min(last, self.max_sent) - first + 1
            w.counts["events_sent_first"] += max(0, last - max(first - 1, self.max_sent))
            self.max_sent = max(self.max_sent, last)

    def publish_status(self, now: float) -> None:
        status = Status(online=True, firmware=FIRMWARE, ledger_head=self.ledger.head, boot=1)
        self.client.publish(topics.topic(self.id, "status"), status.encode(), qos=1, retain=True)
        self.heartbeat.sent(self.ledger.head, now)
        self.w.counts["status_sent"] += 1

    def record(self, kind: str, data: dict, now: float) -> None:
        self.ledger.append(kind, data, time.time(), now)
        if self.online:
            self.publish(self.sync.due(now))

    # -- what happens at the machine -----------------------------------------------------------------

    def sell(self, now: float) -> None:
        """A sale of a seeded order: vend.started now, vend.succeeded when the product drops."""
        if not self.orders:
            self.w.counts["sales_without_order"] += 1
            return
        order = self.orders.pop()
        self.w.counts["sales"] += 1
        self.record("vend.started", {"order_id": order, "cmd_id": f"v-{order}", "slot": "A1"}, now)
        self.w.loop.call_later(DROP_S, self._dropped, order, "A1", None)

    def vend(self, cmd: Command, now: float) -> None:
        """A real order from the cloud: the motor starts now (its wall time is the pay-to-motor end)."""
        if cmd.id in self.w.seen_commands:
            return
        self.w.seen_commands.add(cmd.id)
        self.w.motor_started[cmd.args["order_id"]] = time.time()
        self.record("vend.started", {"order_id": cmd.args["order_id"], "cmd_id": cmd.id, "slot": cmd.args["slot"]},
                    now)
        self.w.loop.call_later(DROP_S, self._dropped, cmd.args["order_id"], cmd.args["slot"], cmd.id)

    def _dropped(self, order: str, slot: str, cmd_id: str | None) -> None:
        now = time.monotonic()
        self.record("vend.succeeded", {"order_id": order, "cmd_id": cmd_id or f"v-{order}", "slot": slot,
                                       "turns": 1, "ms": int(DROP_S * 1000)}, now)
        if cmd_id and self.online:
            self.client.publish(topics.topic(self.id, "cmd/result"),
                                CommandResult(cmd_id, "succeeded", "", self.ledger.head).encode(), qos=1)

    def backlog(self, sales: int, now: float) -> None:
        """An hour offline: the sales it made meanwhile, written at once (the ledger does not care when)."""
        for _ in range(sales):
            if not self.orders:
                break
            order = self.orders.pop()
            self.w.counts["backlog_sales"] += 1
            for kind in ("vend.started", "vend.succeeded"):
                data = {"order_id": order, "cmd_id": f"v-{order}", "slot": "A1"}
                if kind == "vend.succeeded":
                    data.update(turns=1, ms=int(DROP_S * 1000))
                self.ledger.append(kind, data, time.time(), now)
        self.storm_head = self.ledger.head

    def tick(self, now: float, selling: bool, sale_gap) -> None:
        """What the controller's loop does each turn: sell (the simulation), resend, heartbeat, keep-alive."""
        if not self.online:
            if self.offline_until and now >= self.offline_until:
                self.offline_until = 0.0
                self.connect()
            return
        self.client.loop_misc()
        if selling:
            if not self.next_sale:
                self.next_sale = now + sale_gap(self.rng)
            elif now >= self.next_sale:
                self.next_sale = now + sale_gap(self.rng)
                self.sell(now)
        self.publish(self.sync.tick(now))
        if self.heartbeat.due(self.ledger.head, now):
            self.publish_status(now)
        if now >= self.next_telemetry:
            if self.next_telemetry:
                self.client.publish(topics.topic(self.id, "telemetry"),
                                    Telemetry(temperature_c=round(4 + self.rng.random(), 2), door_open=False).encode(),
                                    qos=0)
                self.w.counts["telemetry_sent"] += 1
            self.next_telemetry = now + self.w.opts["telemetry_s"] * (1 if self.next_telemetry else self.rng.random())


class Worker:
    """The machines of one process, their loop and what they measured."""

    def __init__(self, opts: dict, machines: list[tuple[str, list[str]]]):
        self.opts = opts
        self.loop = asyncio.new_event_loop()
        self.rng = random.Random(opts["seed"])
        self.counts: dict[str, int] = {k: 0 for k in (
            "connects", "disconnects", "refused", "connect_failures", "batches_sent", "events_resent",
            "events_sent_first", "status_sent", "telemetry_sent", "sales", "backlog_sales", "sales_without_order",
            "resend_commands", "busy_notices")}
        self.ack_samples: list[tuple[float, float]] = []  # (written at, seconds to the ack)
        self.ack_ways: list[tuple[float, float, bool]] = []  # (received at, seconds since the cloud sent it, acks events)
        self.motor_started: dict[str, float] = {}
        self.seen_commands: set[str] = set()
        self.storm_at: float | None = None
        self.ending = False  # the run is over: a disconnect now is ours
        self.machines = [SimMachine(self, machine_id, list(orders), random.Random(self.rng.random()))
                         for machine_id, orders in machines]

    def sync_options(self, rng: random.Random) -> dict:
        return dict(self.opts["sync_options"], rng=rng)

    def heartbeat_options(self) -> dict:
        return dict(self.opts["heartbeat_options"])

    def run(self) -> dict:
        return self.loop.run_until_complete(self.main())

    async def main(self) -> dict:
        o = self.opts
        mono0, wall0 = time.monotonic(), time.time()

        def mono(wall: float) -> float:
            return mono0 + wall - wall0

        # Connect in a ramp: a real fleet is connected already, and a burst of SYNs overflows the listen queue.
        per_step = max(1, len(self.machines) // max(1, int(o["connect_s"] / 0.05)))
        for i in range(0, len(self.machines), per_step):
            for m in self.machines[i:i + per_step]:
                m.connect()
            await asyncio.sleep(0.05)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        mean_gap = 86400.0 / o["sales_per_day"] if o["sales_per_day"] else 0

        def sale_gap(rng):
            return rng.expovariate(1 / mean_gap)

        load_from, end = mono(o["load_at"]), mono(o["end_at"])
        storm_at = mono(o["storm_at"]) if o["storm_at"] else None
        slices = max(1, int(TICK_S / 0.05))
        step = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if storm_at is not None and self.storm_at is None and now >= storm_at:
                self.storm_at = now
                for m in self.machines:
                    m.cut(now + self.rng.uniform(1.0, o["storm_back_within_s"]))
                    m.backlog(o["storm_backlog_sales"], now)
            selling = now >= load_from and bool(mean_gap)
            for m in self.machines[step % slices::slices]:
                m.tick(now, selling, sale_gap)
            step += 1
            await asyncio.sleep(0.05)
        now = time.monotonic()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        unacked = sum(m.ledger.head - m.ledger.acked for m in self.machines)
        stalled = sum(1 for m in self.machines if m.stalled(now))
        drained = [m.storm_drained_at for m in self.machines if m.storm_head]
        result = {
            "counts": self.counts,
            "cpu_s": usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024,
            "unacked": unacked,
            "stalled": stalled,
            "heads": sum(m.ledger.head for m in self.machines),
            # times as wall clock, for the parent to line up with the other workers
            "ack_samples": [(wall0 + t - mono0, d) for t, d in self.ack_samples],
            "ack_ways": self.ack_ways,
            "motor_started": self.motor_started,
            "storm_at": None if self.storm_at is None else wall0 + self.storm_at - mono0,
            "storm_drained": sum(1 for d in drained if d is not None),
            "storm_machines": len(drained),
            "storm_drained_at": None if not drained or None in drained else wall0 + max(drained) - mono0,
        }
        self.ending = True
        for m in self.machines:
            if m.online:
                m.client.disconnect()
        await asyncio.sleep(0.5)
        return result


def run_worker(opts: dict, machines: list, out) -> None:
    """A worker process's body: make the machines, say ready, take the times, run, and send what they measured
    through ``out`` (a duplex Pipe end)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    except (ValueError, OSError):
        pass
    # The controller's sync warns of each resend; thousands of machines would drown the figures. Counted instead.
    logging.getLogger("controller.sync").setLevel(logging.ERROR)
    try:
        worker = Worker(opts, machines)
        out.send(json.dumps({"ready": len(worker.machines)}))
        worker.opts.update(json.loads(out.recv()))  # when to start the load, the storm and the end
        out.send(json.dumps(worker.run()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which prints it
        out.send(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        raise
    finally:
        out.close()


def run_ack_watcher(port: int, end_at: float, out) -> None:
    """A bystander in its own process: subscribes to every machine's acks (QoS 0) and notes how long each took
    from the cloud's clock in it to here. Beside the machines' own figure it tells the broker's share of the
    way back from the simulator's: a watcher that hears an ack at once while the machine hears it late means
    the machine's loop was slow."""
    ways: list[tuple[float, float]] = []

    def on_message(client, userdata, message):
        try:
            ack = Ack.decode(message.payload)
        except Exception:  # noqa: BLE001 - a bystander: anything unreadable is not its business
            return
        if ack.seq > 0:
            wall = time.time()
            ways.append((wall, wall - parse_time(ack.cloud_time, "cloud_time").timestamp()))

    client = make_client("fleet-bench-ack-watcher", "5", persistent=False)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.subscription("ack"), 0)
    client.on_message = on_message
    connect_async(client, "127.0.0.1", port, 30, persistent=False)
    client.loop_start()
    time.sleep(max(0.0, end_at - time.time()))
    client.loop_stop()
    out.send(json.dumps(ways))
    out.close()
