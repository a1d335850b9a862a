"""The controller's background readers: each blocks on its own thread and only puts what it learnt in the inbox.

A DS18B20 read takes 750 ms and a cloud that is slow or away can take seconds: neither may hold up the
main loop, which owns the ledger and the motors.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request

from hw import HardwareError, Thermometer
from protocol import token as qrtoken

from .inbox import CredentialsFetched, Temperature

log = logging.getLogger(__name__)


class ThermometerReader:
    """Reads the cabinet's thermometer every ``every_s`` seconds until stopped."""

    def __init__(self, thermometer: Thermometer, every_s: float, inbox: queue.Queue, stopping: threading.Event):
        self.thermometer = thermometer
        self.every_s = every_s
        self.inbox = inbox
        self.stopping = stopping

    def start(self) -> None:
        threading.Thread(target=self._run, name="thermometer", daemon=True).start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.inbox.put(Temperature(self.thermometer.read_c()))
            except HardwareError as e:
                self.inbox.put(Temperature(None, str(e)))
            self.stopping.wait(self.every_s)


class CredentialsFetcher:
    """Asks the cloud for this machine's secrets now and then, and at once when woken (on connect, or when
    the cloud says so); signs each request with the current secret and the cloud's clock."""

    def __init__(self, machine_id: str, cloud_url: str, every_s: float, inbox: queue.Queue,
                 stopping: threading.Event, secret, cloud_now):
        self.machine_id = machine_id
        self.url = cloud_url.rstrip("/") + "/api/v1/machine/credentials"
        self.every_s = every_s
        self.inbox = inbox
        self.stopping = stopping
        self.secret = secret  # a callable: the secret changes when a rotation is taken up
        self.cloud_now = cloud_now
        self._wake = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="credentials", daemon=True).start()

    def wake(self) -> None:
        """Ask now rather than at the next interval; also how ``stop`` is noticed at once."""
        self._wake.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self._wake.wait(self.every_s)
            self._wake.clear()
            if self.stopping.is_set():
                return
            fetched = self.fetch()
            if fetched is not None:
                self.inbox.put(CredentialsFetched(fetched))

    def fetch(self) -> dict | None:
        """The secrets as the cloud has them, or None (logged) when it cannot be asked."""
        header = qrtoken.sign_request(self.machine_id, self.secret().encode(), self.cloud_now(), "credentials")
        request = urllib.request.Request(self.url, headers={"Authorization": header})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                answer = json.loads(response.read())
            fetched = {k: answer[k] for k in ("secret", "mqtt_username", "mqtt_password")}
            if not all(isinstance(v, str) for v in fetched.values()):
                raise ValueError("not text")
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("could not fetch credentials from %s: %s", self.url, e)
            return None
        return fetched
