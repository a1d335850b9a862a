"""Helpers for the provisioning tests: the system tools they need, a Mosquitto run with the configuration the
cloud generates, and MQTT clients that report what the broker said to them.

A plain module (not a conftest), like cloud_fixtures: test files import what they use.
"""

from __future__ import annotations

import getpass
import os
import queue
import ssl
import subprocess
import sys
import threading
import time

import httpx

import paho.mqtt.client as mqtt

from tests.e2e.harness import Proc, free_port, tail, wait_until
from tests.tools import need

from cloud.provisioning.brokerfiles import CLOUD_USER, BrokerFiles, BrokerUser, Ports
from cloud.provisioning.ca import FleetCA

def require_tool(name: str) -> str:
    """The tool's path; see tests/tools.py for what a missing one does."""
    return need(name)


class Probe:
    """A paho MQTT 5 client that waits for the broker's answers and keeps what it receives."""

    def __init__(self, client_id: str):
        # No reconnecting: a client the broker throws out stays out, and the test sees it.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                  reconnect_on_failure=False)
        self.messages: queue.Queue = queue.Queue()
        self.connack = None
        self._connected = threading.Event()
        self.disconnected = threading.Event()
        self._subacks: queue.Queue = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_subscribe = lambda c, u, mid, codes, props: self._subacks.put(codes)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code
        self._connected.set()

    def connect(self, port: int, timeout: float = 10) -> "Probe":
        """Connect and wait for the CONNACK; ``connack`` then says whether the broker let us in."""
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise AssertionError(f"no CONNACK from the broker on port {port} in {timeout} s")
        return self

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, *topics: str) -> list:
        self.client.subscribe([(t, 1) for t in topics])
        return self._subacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes, retain: bool = False):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        return info

    def publish_refused(self, topic: str, payload: bytes) -> bool:
        """Publish where this client may not; True once Mosquitto has refused it, so the message was handled
        and dropped before anything sent later. With per-listener settings Mosquitto 2.0 answers an MQTT 5
        client with a PUBACK saying "Not authorized"; with global ones it closed the connection."""
        refused: set[int] = set()
        self.client.on_publish = lambda c, u, mid, reason, props: reason.is_failure and refused.add(mid)
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if info.mid in refused or self.disconnected.is_set():
                return True
            time.sleep(0.02)
        return False

    def received(self, until_topic: str, timeout: float = 10) -> list[tuple[str, bytes]]:
        """Everything received up to and including the first message on ``until_topic`` (a marker sent
        after the messages that must not arrive, so no test waits on a timer to prove an absence)."""
        got = []
        while True:
            topic, payload = self.messages.get(timeout=timeout)
            got.append((topic, payload))
            if topic == until_topic:
                return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Mosquitto:
    """Mosquitto running a generated mosquitto.conf, included the way Debian's own configuration includes
    /etc/mosquitto/conf.d/ (which keeps the pid file and persistence location)."""

    def __init__(self, workdir: str, generated_conf: str):
        tool = require_tool("mosquitto")
        self.workdir = workdir
        self.pid_file = os.path.join(workdir, "mosquitto.pid")
        include = os.path.join(workdir, "conf.d")
        os.makedirs(include, exist_ok=True)
        os.symlink(generated_conf, os.path.join(include, "vend.conf"))
        conf = os.path.join(workdir, "top.conf")
        with open(conf, "w") as f:
            # Started as root, Mosquitto would switch to the mosquitto user, which cannot read a test's
            # private folder: it stays the user who runs the tests.
            f.write(f"pid_file {self.pid_file}\npersistence_location {workdir}/\nuser {getpass.getuser()}\n"
                    f"log_dest stdout\ninclude_dir {include}\n")
        self.proc = Proc([tool, "-c", conf], os.path.join(workdir, "mosquitto.log"))

    def start(self) -> "Mosquitto":
        self.proc.start()
        wait_until(lambda: os.path.exists(self.pid_file) or not self.proc.alive(), 20, "mosquitto to start")
        if not self.proc.alive():
            raise AssertionError(f"mosquitto refused the generated configuration:\n{tail(self.proc.log_path)}")
        return self

    def stop(self) -> None:
        self.proc.stop()

    def log(self) -> str:
        return tail(self.proc.log_path, 200)


def client(ports: Ports, client_id: str, username: str | None = None, password: str | None = None, *,
           port: int | None = None, ca: str | None = None, cert: tuple[str, str] | None = None,
           timeout: float = 10) -> Probe:
    """A connected client; ``ca``: verify the server with this CA file ("system" for the OS's own)."""
    probe = Probe(client_id)
    if username is not None:
        probe.client.username_pw_set(username, password)
    if ca is not None:
        probe.client.tls_set(ca_certs=None if ca == "system" else ca, certfile=cert and cert[0],
                             keyfile=cert and cert[1], cert_reqs=ssl.CERT_REQUIRED)
    return probe.connect(port or ports.local, timeout)


class SecuredBroker:
    """Mosquitto with a configuration, password file, ACL and TLS files written as the cloud writes them."""

    def __init__(self, workdir: str, users: list[BrokerUser], machine_ids: list[str]):
        self.ports = Ports(free_port(), free_port(), free_port())
        self.ca = FleetCA(os.path.join(workdir, "ca")).ensure()
        self.files = BrokerFiles(os.path.join(workdir, "broker"), self.ports)
        self.files.write_config()
        self.files.write_tls(self.ca, ["localhost", "127.0.0.1"])
        self.files.write_users(lambda: (users, machine_ids))
        self.mosquitto = Mosquitto(workdir, self.files.path("mosquitto.conf"))
        self.files.pid_file = self.mosquitto.pid_file  # from now on, rewriting the users signals the broker

    def start(self) -> "SecuredBroker":
        self.mosquitto.start()
        return self

    def stop(self) -> None:
        self.mosquitto.stop()

    def client(self, *args, **kwargs) -> Probe:
        return client(self.ports, *args, **kwargs)


class SecuredCloud:
    """A real ``vend-cloud`` process that manages its broker's files, and the Mosquitto that reads them;
    ``vendctl`` runs as a process against it."""

    TOKEN = "fleet-admin-token"

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.ports = Ports(free_port(), free_port(), free_port())
        self.var = os.path.join(workdir, "cloud")
        self.broker_dir = os.path.join(workdir, "broker")
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.mosquitto = Mosquitto(os.path.join(workdir, "mosquitto"), os.path.join(self.broker_dir,
                                                                                     "mosquitto.conf"))
        self.proc = Proc([sys.executable, "-m", "cloud", "--var", self.var, "--http", f"127.0.0.1:{self.http_port}",
                          "--broker", f"127.0.0.1:{self.ports.local}", "--mqtt-protocol", "5",
                          "--client-id", f"vend_cloud-{self.http_port}", "--public-url", "https://vend.example.com",
                          "--broker-files", self.broker_dir, "--broker-pid-file", self.mosquitto.pid_file,
                          "--broker-ports", f"{self.ports.local},{self.ports.password},{self.ports.certificate}",
                          "--machine-broker", "localhost"],
                         os.path.join(workdir, "cloud.log"), env={"VEND_ADMIN_TOKEN": self.TOKEN})

    def start(self) -> "SecuredCloud":
        self.proc.start()
        wait_until(lambda: os.path.exists(os.path.join(self.broker_dir, "acl")) or not self.proc.alive(), 60,
                   "the cloud to write the broker's files")
        if not self.proc.alive():
            raise AssertionError(f"the cloud exited:\n{tail(self.proc.log_path)}")
        self.mosquitto.start()
        wait_until(self.broker_connected, 30, "the cloud to log in to its broker")
        return self

    def stop(self) -> None:
        self.proc.stop()
        self.mosquitto.stop()

    def health(self) -> dict:
        return httpx.get(self.url + "/api/v1/health", timeout=5).json()

    def broker_connected(self) -> bool:
        try:
            return self.health()["broker_connected"]
        except (httpx.HTTPError, ValueError):
            return False

    def api(self, method: str, path: str, body=None) -> httpx.Response:
        return httpx.request(method, self.url + path, json=body, timeout=10,
                             headers={"Authorization": f"Bearer {self.TOKEN}"})

    def vendctl(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
        """``vendctl`` as a technician runs it: its exit code, what it printed and what it complained."""
        env = {**os.environ, "VEND_CLOUD_URL": self.url, "VEND_TOKEN": token or self.TOKEN}
        return subprocess.run([sys.executable, "-m", "cloud.cli", *args], capture_output=True, text=True,
                              env=env, timeout=180)

    def client(self, *args, **kwargs) -> Probe:
        return client(self.ports, *args, **kwargs)

    @property
    def ca_file(self) -> str:
        return os.path.join(self.broker_dir, "ca.crt")


def cloud_user(password: str = "cloud-password-123") -> BrokerUser:
    """The cloud's broker user, as the cloud writes it into the password file."""
    return BrokerUser(CLOUD_USER, password, None)
