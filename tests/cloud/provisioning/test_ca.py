"""The fleet CA, checked by OpenSSL itself; and the controller config keys for a client certificate."""

import os
import subprocess

import pytest

from cloud.provisioning.ca import FleetCA
from controller.config import ConfigError, parse
from tests.fleet_fixtures import require_tool

BASE = "[machine]\nid = m-1\nsecret = " + "s" * 20 + "\n[cloud]\nurl = https://x\n[hardware]\nbackend = sim\nslots = A1\n"


def openssl(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("openssl"), *args], capture_output=True, text=True, input=input)


def write(tmp_path, name, text) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def test_a_machine_certificate_verifies_against_the_ca_as_a_client_only(tmp_path):
    ca = FleetCA(str(tmp_path / "ca")).ensure()
    cert, key = ca.issue_client("m-7")
    path = write(tmp_path, "m-7.crt", cert)
    ok = openssl("verify", "-CAfile", ca.cert_path, "-purpose", "sslclient", path)
    assert ok.returncode == 0 and f"{path}: OK" in ok.stdout, ok.stderr
    as_server = openssl("verify", "-CAfile", ca.cert_path, "-purpose", "sslserver", path)
    assert as_server.returncode != 0
    subject = openssl("x509", "-noout", "-subject", "-in", path)
    assert subject.stdout.strip() == "subject=CN = m-7"
    # The key is the certificate's own.
    pub_of_key = openssl("pkey", "-pubout", input=key).stdout
    pub_of_cert = openssl("x509", "-noout", "-pubkey", "-in", path).stdout
    assert pub_of_key == pub_of_cert


def test_a_certificate_from_another_ca_does_not_verify(tmp_path):
    ours = FleetCA(str(tmp_path / "ours")).ensure()
    theirs = FleetCA(str(tmp_path / "theirs")).ensure()
    path = write(tmp_path, "m-7.crt", theirs.issue_client("m-7")[0])
    assert openssl("verify", "-CAfile", ours.cert_path, path).returncode != 0


def test_the_ca_is_made_once_and_its_key_is_private(tmp_path):
    folder = str(tmp_path / "ca")
    first = FleetCA(folder).ensure().cert_pem
    assert FleetCA(folder).ensure().cert_pem == first
    assert os.stat(os.path.join(folder, "ca.key")).st_mode & 0o777 == 0o600
    assert os.stat(folder).st_mode & 0o777 == 0o700


def test_the_server_certificate_names_the_broker_and_is_made_again_when_the_name_changes(tmp_path):
    ca = FleetCA(str(tmp_path / "ca")).ensure()
    names = ["mqtt.example.com", "localhost", "127.0.0.1"]
    cert, _ = ca.issue_server(names)
    path = write(tmp_path, "server.crt", cert)
    assert openssl("verify", "-CAfile", ca.cert_path, "-purpose", "sslserver", path).returncode == 0
    for name in ("mqtt.example.com", "localhost"):
        assert openssl("x509", "-noout", "-checkhost", name, "-in", path).stdout.strip().endswith("does match certificate")
    assert "does match" in openssl("x509", "-noout", "-checkip", "127.0.0.1", "-in", path).stdout
    assert "NOT match" in openssl("x509", "-noout", "-checkhost", "evil.example.com", "-in", path).stdout
    assert ca.server_cert_current(path, names)
    assert not ca.server_cert_current(path, ["mqtt2.example.com", "localhost", "127.0.0.1"])
    assert not FleetCA(str(tmp_path / "other")).ensure().server_cert_current(path, names)


@pytest.mark.parametrize("lines, error", [
    ("cert_file = /etc/vend/machine.crt", "cert_file and key_file go together"),
    ("key_file = /etc/vend/machine.key", "cert_file and key_file go together"),
    ("cert_file = /etc/vend/machine.crt\nkey_file = /etc/vend/machine.key", "cert_file needs tls = yes"),
])
def test_the_controller_config_refuses_half_a_certificate(lines, error):
    with pytest.raises(ConfigError, match=error):
        parse(BASE + "[mqtt]\n" + lines + "\n")


def test_the_controller_config_takes_a_certificate_over_tls():
    cfg = parse(BASE + "[mqtt]\ntls = yes\ncert_file = /etc/vend/machine.crt\nkey_file = /etc/vend/machine.key\n")
    assert (cfg["mqtt"]["cert_file"], cfg["mqtt"]["key_file"]) == ("/etc/vend/machine.crt", "/etc/vend/machine.key")
