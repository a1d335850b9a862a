"""The broker configuration the cloud writes, run in a real Mosquitto with real clients: who may say what."""

import os
import ssl
import subprocess

import pytest

from cloud.provisioning.brokerfiles import BrokerUser, mosquitto_hash, password_username
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
    made = []

    def make(*args, **kwargs):
        made.append(broker.client(*args, **kwargs))
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
