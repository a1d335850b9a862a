"""Helpers for the provisioning tests: the system tools they need, a Mosquitto run with the configuration the
cloud generates, and MQTT clients that report what the broker said to them.

A plain module (not a conftest), like cloud_fixtures: test files import what they use.
"""

from __future__ import annotations

import getpass
import os
import queue
import shutil
import ssl
import threading

import paho.mqtt.client as mqtt
import pytest

from harness import Proc, free_port, tail, wait_until

from cloud.brokerfiles import CLOUD_USER, BrokerFiles, BrokerUser, Ports
from cloud.ca import FleetCA

# The Debian package each tool comes from, for the message when one is missing.
TOOLS = {
    "mosquitto": "mosquitto", "mosquitto_passwd": "mosquitto", "sfdisk": "fdisk", "mkfs.vfat": "dosfstools",
    "mcopy": "mtools", "mdir": "mtools", "mtype": "mtools", "cloud-init": "cloud-init",
    "systemd-analyze": "systemd", "openssl": "openssl",
}


def require_tool(name: str) -> str:
    """The tool's path; a missing tool fails the test (never skips it) and names the package to install."""
    for folder in ("/usr/sbin", "/sbin"):
        if folder not in os.environ["PATH"].split(os.pathsep):
            os.environ["PATH"] += os.pathsep + folder
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {TOOLS.get(name, name)} (.ci/run installs it)")
    return path


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
        """Publish where this client may not; True once Mosquitto has thrown the client out for it (what it
        does after a refused publish), so the message was handled and dropped before anything sent later."""
        self.client.publish(topic, payload, qos=1)
        return self.disconnected.wait(10)

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


class SecuredBroker:
    """Mosquitto run with the configuration, password file, ACL and TLS files the cloud writes."""

    def __init__(self, workdir: str, users: list[BrokerUser], machine_ids: list[str]):
        require_tool("mosquitto")
        self.workdir = workdir
        self.ports = Ports(free_port(), free_port(), free_port())
        self.ca = FleetCA(os.path.join(workdir, "ca")).ensure()
        self.pid_file = os.path.join(workdir, "mosquitto.pid")
        self.files = BrokerFiles(os.path.join(workdir, "broker"), self.ports)
        self.files.write_config()
        self.files.write_tls(self.ca, ["localhost", "127.0.0.1"])
        self.files.write_users(users, machine_ids)
        self.files.pid_file = self.pid_file  # from now on, rewriting the users signals the running broker
        # What Debian's /etc/mosquitto/mosquitto.conf provides around the included file. Started as root,
        # Mosquitto would switch to the mosquitto user, which cannot read a test's private folder.
        include = os.path.join(workdir, "conf.d")
        os.makedirs(include, exist_ok=True)
        os.symlink(self.files.path("mosquitto.conf"), os.path.join(include, "vend.conf"))
        self.conf = os.path.join(workdir, "top.conf")
        with open(self.conf, "w") as f:
            f.write(f"pid_file {self.pid_file}\npersistence_location {workdir}/\nuser {getpass.getuser()}\n"
                    f"log_dest stdout\ninclude_dir {include}\n")
        self.proc = Proc([require_tool("mosquitto"), "-c", self.conf], os.path.join(workdir, "mosquitto.log"))

    def start(self) -> "SecuredBroker":
        self.proc.start()
        wait_until(lambda: os.path.exists(self.pid_file) or not self.proc.alive(), 20, "mosquitto to start")
        if not self.proc.alive():
            raise AssertionError(f"mosquitto refused the generated configuration:\n{tail(self.proc.log_path)}")
        return self

    def stop(self) -> None:
        self.proc.stop()

    def log(self) -> str:
        return tail(self.proc.log_path, 200)

    def client(self, client_id: str, username: str | None = None, password: str | None = None, *,
               port: int | None = None, ca: str | None = None, cert: tuple[str, str] | None = None,
               timeout: float = 10) -> Probe:
        """A client of this broker; ``ca``: verify the server with this CA file ("system" for the OS's)."""
        probe = Probe(client_id)
        if username is not None:
            probe.client.username_pw_set(username, password)
        if ca is not None:
            probe.client.tls_set(ca_certs=None if ca == "system" else ca, certfile=cert and cert[0],
                                 keyfile=cert and cert[1], cert_reqs=ssl.CERT_REQUIRED)
        return probe.connect(port or self.ports.local, timeout)


def cloud_user(password: str = "cloud-password-123") -> BrokerUser:
    return BrokerUser(CLOUD_USER, password, None)
