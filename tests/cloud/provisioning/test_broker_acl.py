"""The broker configuration the cloud writes, run in a real Mosquitto with real clients: who may say what."""

import os
import queue
import socket
import ssl
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.provisioning.brokerfiles import CLOUD_USER, QUEUED_BYTES, BrokerUser, mosquitto_hash, password_username
from tests.fleet_fixtures import SecuredBroker, cloud_user, require_tool

A, B = "m-a", "m-b"
PW_A, PW_B, PW_CLOUD = "password-of-a-0123", "password-of-b-4567", "password-of-cloud-89"
USER_A, USER_B = password_username(A, 1), password_username(B, 1)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    users = [cloud_user(PW_CLOUD), BrokerUser(USER_A, PW_A, A), BrokerUser(USER_B, PW_B, B)]
    b = SecuredBroker(str(tmp_path_factory.mktemp("secured")), users, [A, B]).start()
    yield b
    b.stop()


@pytest.fixture
def clients(broker):
    """Clients as they log in: the cloud on its own loopback listener, anyone else on the machines' password
    listener (TLS with the fleet CA), unless a test names the port."""
    made = []

    def make(client_id, username=None, password=None, **kwargs):
        if "port" not in kwargs and username != CLOUD_USER:
            kwargs.update(port=broker.ports.password, ca=broker.files.path("ca.crt"))
        made.append(broker.client(client_id, username, password, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_the_hash_is_what_mosquitto_passwd_makes(tmp_path):
    tool = require_tool("mosquitto_passwd")
    path = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(path), "u", "a-password"], check=True)
    _, salt_b64, _ = path.read_text().strip().split("$")[-3:]
    import base64
    assert f"u:{mosquitto_hash('a-password', base64.b64decode(salt_b64))}" == path.read_text().strip()


@pytest.mark.parametrize("topic", [f"vend/v1/{B}/events", f"vend/v1/{B}/status", f"vend/v1/{B}/cmd/result",
                                   f"vend/v1/{B}/telemetry", f"vend/v1/{A}/cmd", f"vend/v1/{A}/ack",
                                   f"vend/v1/{A}/config", f"vend/v1/{B}/cmd", "vend/v1/other", "elsewhere"])
def test_a_machine_cannot_publish_outside_its_own_reports(broker, clients, topic):
    cloud = clients("cloud", "vend_cloud", PW_CLOUD)
    cloud.subscribe("#")
    a = clients(A, USER_A, PW_A)
    assert a.accepted
    assert a.publish_refused(topic, b"forged by a"), "the broker did not drop the client"
    # The marker comes after the refused message was handled: had that one been passed on, it would be first.
    clients(A, USER_A, PW_A).publish(f"vend/v1/{A}/events", b"a's own events")
    assert cloud.received(f"vend/v1/{A}/events") == [(f"vend/v1/{A}/events", b"a's own events")]


def test_a_machine_cannot_read_another_machines_messages(broker, clients):
    a = clients(A, USER_A, PW_A)
    # Mosquitto 2.0 grants every subscription and applies the ACL to each message it would deliver.
    a.subscribe(f"vend/v1/{B}/cmd", f"vend/v1/{B}/config", f"vend/v1/{B}/ack", "vend/v1/+/cmd",
                f"vend/v1/{B}/events", f"vend/v1/{A}/cmd", f"vend/v1/{A}/ack", f"vend/v1/{A}/config")
    b = clients(B, USER_B, PW_B)
    b.subscribe(f"vend/v1/{B}/cmd")
    cloud = clients("cloud", "vend_cloud", PW_CLOUD)
    cloud.publish(f"vend/v1/{B}/cmd", b"for b only")
    cloud.publish(f"vend/v1/{B}/config", b"b's credentials")
    cloud.publish(f"vend/v1/{B}/ack", b"b's ack")
    clients(B, USER_B, PW_B).publish(f"vend/v1/{B}/events", b"b's events")
    cloud.publish(f"vend/v1/{A}/cmd", b"for a")
    assert a.received(f"vend/v1/{A}/cmd") == [(f"vend/v1/{A}/cmd", b"for a")]
    assert b.received(f"vend/v1/{B}/cmd") == [(f"vend/v1/{B}/cmd", b"for b only")]


def test_the_cloud_sees_every_machine(broker, clients):
    cloud = clients("cloud", "vend_cloud", PW_CLOUD)
    cloud.subscribe("vend/v1/#")
    a, b = clients(A, USER_A, PW_A), clients(B, USER_B, PW_B)
    for kind in ("status", "events", "cmd/result", "telemetry"):
        a.publish(f"vend/v1/{A}/{kind}", kind.encode())
    b.publish(f"vend/v1/{B}/events", b"b")
    got = cloud.received(f"vend/v1/{B}/events")
    assert [t for t, _ in got] == [f"vend/v1/{A}/{k}" for k in ("status", "events", "cmd/result", "telemetry")] \
        + [f"vend/v1/{B}/events"]


@pytest.mark.parametrize("username, password", [(USER_A, "not-the-password"), (USER_A, PW_B), ("m-z.1", PW_A),
                                                (A, PW_A), (None, None)])
def test_wrong_credentials_are_refused(broker, clients, username, password):
    c = clients("intruder", username, password)
    assert not c.accepted
    assert c.connack.getName() in ("Bad user name or password", "Not authorized")


def test_tls_with_the_fleet_ca_works_and_without_it_is_refused(broker, clients):
    ca = broker.files.path("ca.crt")
    a = clients(A, USER_A, PW_A, port=broker.ports.password, ca=ca)
    assert a.accepted
    with pytest.raises(ssl.SSLCertVerificationError):
        clients("no-ca", USER_A, PW_A, port=broker.ports.password, ca="system")
    # Plain MQTT on the TLS port: the broker never answers with a CONNACK.
    with pytest.raises(AssertionError, match="no CONNACK"):
        clients("plain", USER_A, PW_A, port=broker.ports.password, timeout=3)


def test_a_machine_certificate_is_its_identity(broker, clients, tmp_path):
    ca = broker.files.path("ca.crt")
    cert, key = broker.ca.issue_client(A)
    (tmp_path / "a.crt").write_text(cert)
    (tmp_path / "a.key").write_text(key)
    pair = (str(tmp_path / "a.crt"), str(tmp_path / "a.key"))
    cloud = clients("cloud", "vend_cloud", PW_CLOUD)
    cloud.subscribe("vend/v1/+/events")
    # A user name given with a certificate is ignored: the certificate's CN is who the client is.
    a = clients(A, "vend_cloud", "anything", port=broker.ports.certificate, ca=ca, cert=pair)
    assert a.accepted
    a.publish(f"vend/v1/{A}/events", b"a by certificate")
    assert cloud.received(f"vend/v1/{A}/events") == [(f"vend/v1/{A}/events", b"a by certificate")]
    assert a.publish_refused(f"vend/v1/{B}/events", b"forged with a's certificate")
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError, OSError)):
        clients("no-cert", USER_A, PW_A, port=broker.ports.certificate, ca=ca)


def test_the_files_mosquitto_reads_are_not_world_readable(broker):
    for name in ("passwd", "acl", "server.key"):
        assert os.stat(broker.files.path(name)).st_mode & 0o777 == 0o640, name
    assert os.stat(broker.ca.key_path).st_mode & 0o777 == 0o600
    assert PW_A not in open(broker.files.path("passwd")).read()


def test_a_machine_login_cannot_take_the_clouds_client_id(broker, clients, tmp_path):
    cloud = clients("cloud", CLOUD_USER, PW_CLOUD)
    cloud.subscribe("vend/v1/+/events")
    # Each machine listener makes the login's user name its client id, whatever id the client asked for.
    a = clients("cloud", USER_A, PW_A)
    assert a.accepted
    cert, key = broker.ca.issue_client(B)
    (tmp_path / "b.crt").write_text(cert)
    (tmp_path / "b.key").write_text(key)
    b = clients("cloud", port=broker.ports.certificate, ca=broker.files.path("ca.crt"),
                cert=(str(tmp_path / "b.crt"), str(tmp_path / "b.key")))
    assert b.accepted
    a.publish(f"vend/v1/{A}/events", b"a")
    b.publish(f"vend/v1/{B}/events", b"b")
    # Had either login taken the id "cloud", the broker would have closed the cloud's connection and
    # nothing more would reach it.
    assert cloud.received(f"vend/v1/{B}/events") == [(f"vend/v1/{A}/events", b"a"), (f"vend/v1/{B}/events", b"b")]
    assert not cloud.disconnected.is_set()
    assert not a.disconnected.is_set() and not b.disconnected.is_set()


def test_the_clouds_login_is_refused_on_the_machine_listener(broker, clients):
    outside = clients("cloud-from-outside", CLOUD_USER, PW_CLOUD, port=broker.ports.password,
                      ca=broker.files.path("ca.crt"))
    assert not outside.accepted
    assert outside.connack.getName() in ("Bad user name or password", "Not authorized")
    assert clients("cloud", CLOUD_USER, PW_CLOUD).accepted  # on its own loopback listener


def test_a_machines_login_is_refused_on_the_clouds_listener(broker, clients):
    assert not clients(A, USER_A, PW_A, port=broker.ports.local).accepted


class Session:
    """The cloud's persistent MQTT 5 session, as cloud/service.py keeps it: QoS 1, an hour's expiry."""

    def __init__(self, broker, client_id: str):
        self.broker, self.client_id = broker, client_id
        self.got: list[bytes] = []
        self.connected = threading.Event()

    def connect(self, clean: bool) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(CLOUD_USER, PW_CLOUD)
        c.on_connect = lambda *args: self.connected.set()
        c.on_message = lambda cl, u, m: self.got.append(m.payload)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.connected.clear()
        c.connect("127.0.0.1", self.broker.ports.local, 30, clean_start=clean, properties=props)
        c.loop_start()
        assert self.connected.wait(10)
        return c


def test_the_queue_for_an_offline_cloud_is_bounded(broker, clients):
    session = Session(broker, "cloud-queue")
    c = session.connect(clean=True)
    c.subscribe(f"vend/v1/{A}/telemetry", qos=1)
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()
    a = clients(A, USER_A, PW_A)
    size = 64 * 1024
    count = QUEUED_BYTES // size + 100  # 100 messages more than the bound holds
    for i in range(count):
        a.client.publish(f"vend/v1/{A}/telemetry", i.to_bytes(4, "big") + bytes(size - 4), qos=1)
    a.publish(f"vend/v1/{A}/telemetry", b"last").wait_for_publish(60)
    c = session.connect(clean=False)
    deadline = time.monotonic() + 60
    previous = -1
    while time.monotonic() < deadline:  # until nothing more arrives for a second
        time.sleep(1)
        if len(session.got) == previous:
            break
        previous = len(session.got)
    c.disconnect()
    c.loop_stop()
    kept = [int.from_bytes(p[:4], "big") for p in session.got]
    # The first messages are kept in order, up to the bound (plus the 20 in flight); the rest were dropped.
    assert kept == list(range(len(kept)))
    assert QUEUED_BYTES // size <= len(kept) <= QUEUED_BYTES // size + 21, len(kept)


def test_the_cloud_and_a_machine_send_each_small_packet_at_once(broker, tmp_path):
    """Nagle's algorithm holds a small packet until the peer acknowledges the one before (up to 40 ms on
    Linux): every ack, vend command and event is one. The broker has it off for its clients
    (``set_tcp_nodelay``); the cloud's and the machine's own sockets must too. On PostgreSQL it was most of
    the acks' latency in bench/fleet.py's storm (issue 16)."""
    from cloud.core.settings import Settings
    from cloud.service import Bus
    from controller.config import MqttSettings
    from controller.link import Link

    assert "set_tcp_nodelay true" in open(broker.files.path("mosquitto.conf")).read().splitlines()
    bus = Bus(Settings(var=str(tmp_path), broker=f"127.0.0.1:{broker.ports.local}").resolve(), queue.Queue(),
              PW_CLOUD)
    link = Link(MqttSettings(host="127.0.0.1", port=broker.ports.password, username=USER_A, password=PW_A, tls=True,
                             ca_file=broker.files.path("ca.crt")), A, queue.Queue())
    bus.start()
    link.start()
    try:
        deadline = time.monotonic() + 10
        while not (bus.connected.is_set() and link.connected) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bus.connected.is_set() and link.connected, link.last_error
        for client in (bus.client, link.client):
            assert client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        link.client.disconnect()
        link.client.loop_stop()
        bus.stop()
