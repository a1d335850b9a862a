"""The technician's ways in on the machine: the local service socket, its requests, and the service button's
screen."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading

from .inbox import ServiceRequest

SERVICE_SCREEN_S = 120.0  # the service button shows the machine's state on its screen this long


class ServiceMode:
    """The service button toggles a screen that shows the machine's state, for ``SERVICE_SCREEN_S``."""

    def __init__(self):
        self.until = 0.0

    def toggle(self, now: float) -> None:
        """A press enters service mode, or leaves it if it was on."""
        self.until = 0.0 if self.until else now + SERVICE_SCREEN_S

    def active(self, now: float) -> bool:
        """Whether the service screen shows at ``now``; it ends on its own."""
        if self.until and now < self.until:
            return True
        self.until = 0.0
        return False


def restock_counts(request: dict, slots) -> dict[str, int]:
    """The counts of a restock request, checked against the machine's slots; ValueError says what is wrong."""
    counts = request.get("counts")
    if not isinstance(counts, dict) or not counts:
        raise ValueError("restock needs counts, like A1=8")
    for slot, count in counts.items():
        if slot not in slots:
            raise ValueError(f"no slot {slot!r} on this machine")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1000:
            raise ValueError(f"count for {slot} must be a whole number 0-1000, got {count!r}")
    return counts


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
                self.inbox.put(ServiceRequest(request, reply))
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


def answer(c, request: dict) -> dict:
    """The answer to a technician's status or restock request to controller ``c``; ValueError for a bad one."""
    op = request.get("op")
    if op == "status":
        return {"ok": True, "machine": c.machine_id, "head": c.ledger.head,
                "acked": c.ledger.acked, "online": c.online,
                # What judges a command's expiry: "cloud" (heard since the start), "ntp", or "unset" (vends
                # are refused until one of them has set it).
                "clock": "cloud" if c.clock_fresh else "ntp" if c.clock_trusted() else "unset",
                "rejected_messages": c.rejected_messages,
                "url": c.screen.url,
                "planogram": {"version": c.ledger.planogram_version,
                              "waiting": c.pending_config.version if c.pending_config else None,
                              "ignored": c.ignored_configs,
                              "slots": {s: [p.product, p.price, p.currency, p.capacity, p.par]
                                        for s, p in sorted(c.planogram.items())}},
                "slots": {s: dict(zip(("count", "flagged"), c.ledger.slot(s)))
                          for s in c.hardware.motors}}
    if op == "restock":
        counts = restock_counts(request, c.hardware.motors)
        for slot, count in counts.items():
            c.record("restock", {"slot": slot, "count": count})
        c.pump()
        return {"ok": True, "head": c.ledger.head}
    raise ValueError(f"unknown operation {op!r}; use status or restock")
