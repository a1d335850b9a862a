"""``vendctl machines add``, ``rotate-secret`` and ``retire`` against a real cloud and the Mosquitto that reads
its files."""

import time

import httpx
import pytest

from tests.fleet_fixtures import SecuredCloud
from tests.e2e.harness import wait_until
from protocol import token as qrtoken


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    c = SecuredCloud(str(tmp_path_factory.mktemp("fleet"))).start()
    yield c
    c.stop()


def credentials(fleet, machine_id: str) -> dict:
    r = fleet.api("GET", f"/api/v1/machines/{machine_id}/credentials")
    assert r.status_code == 200, r.text
    return r.json()


def scan(fleet, machine_id: str, secret: str) -> httpx.Response:
    return httpx.get(f"{fleet.url}/q/{qrtoken.make(machine_id, secret.encode(), time.time(), 5)}", timeout=10)


def test_a_new_machine_can_log_in_to_the_broker_at_once_and_no_secret_is_printed(fleet):
    out = fleet.vendctl("machines", "add", "m-new", "--name", "Lobby")
    assert out.returncode == 0, out.stderr
    creds = credentials(fleet, "m-new")
    assert creds["secret"] not in out.stdout + out.stderr
    assert creds["mqtt"]["password"] not in out.stdout + out.stderr
    assert "machine m-new created (broker user m-new.1)" in out.stdout and "--show-secrets" in out.stdout
    assert "broker: Mosquitto (pid" in out.stdout and "reloaded" in out.stdout
    c = fleet.client("m-new", "m-new.1", creds["mqtt"]["password"], port=fleet.ports.password, ca=fleet.ca_file)
    assert c.accepted
    c.close()


def test_secrets_are_printed_when_asked(fleet):
    out = fleet.vendctl("machines", "add", "m-shown", "--show-secrets")
    assert out.returncode == 0, out.stderr
    creds = credentials(fleet, "m-shown")
    assert f"QR secret: {creds['secret']}" in out.stdout
    assert f"broker password: {creds['mqtt']['password']}" in out.stdout


def test_after_a_rotation_the_old_secret_and_password_work_for_the_overlap_and_not_after(fleet):
    assert fleet.vendctl("machines", "add", "m-rot").returncode == 0
    old = credentials(fleet, "m-rot")
    on_old = fleet.client("m-rot", "m-rot.1", old["mqtt"]["password"], port=fleet.ports.password, ca=fleet.ca_file)
    assert on_old.accepted

    out = fleet.vendctl("machines", "rotate-secret", "m-rot", "--overlap", "4s")
    assert out.returncode == 0, out.stderr
    new = credentials(fleet, "m-rot")
    assert "new QR secret and broker password (broker user m-rot.2)" in out.stdout
    assert "the previous ones (m-rot.1) keep working until" in out.stdout
    assert new["secret"] not in out.stdout and new["mqtt"]["password"] not in out.stdout
    assert new["mqtt"]["username"] == "m-rot.2"

    # During the overlap: the machine still on its old credentials sells on, and the new ones work too.
    assert scan(fleet, "m-rot", old["secret"]).status_code == 303
    assert scan(fleet, "m-rot", new["secret"]).status_code == 303
    assert not on_old.disconnected.is_set()
    # A new login with the old credentials works too. The broker makes a machine login's user name its
    # client id, so it takes over the first connection of that user (one connection per login).
    again = fleet.client("m-rot-2", "m-rot.1", old["mqtt"]["password"], port=fleet.ports.password, ca=fleet.ca_file)
    assert again.accepted
    assert on_old.disconnected.wait(10)
    on_new = fleet.client("m-rot", "m-rot.2", new["mqtt"]["password"], port=fleet.ports.password, ca=fleet.ca_file)
    assert on_new.accepted
    assert not again.disconnected.is_set()

    # After it: the cloud's sweeper drops the old user from the password file and reloads Mosquitto.
    assert again.disconnected.wait(20), "the old credentials' connection outlived the overlap"
    again.close()

    def old_refused():
        c = fleet.client("m-rot-3", "m-rot.1", old["mqtt"]["password"], port=fleet.ports.password,
                         ca=fleet.ca_file)
        c.close()
        return not c.accepted

    wait_until(old_refused, 20, "the old broker password to stop working")
    refused = scan(fleet, "m-rot", old["secret"])
    assert refused.status_code == 400 and "QR code not recognised" in refused.text
    assert scan(fleet, "m-rot", new["secret"]).status_code == 303
    assert fleet.broker_connected()
    on_new.close()


def test_a_retired_machine_can_no_longer_log_in_to_the_broker_nor_publish(fleet, tmp_path):
    # Issue 15: retiring a machine left its broker login and ACL in place, so its controller kept selling
    # its reports into the cloud.
    assert fleet.vendctl("machines", "add", "m-gone").returncode == 0
    creds = credentials(fleet, "m-gone")
    password = creds["mqtt"]["password"]
    issued = fleet.api("POST", "/api/v1/machines/m-gone/certificate")
    assert issued.status_code == 200, issued.text
    (tmp_path / "m.crt").write_text(issued.json()["cert_pem"])
    (tmp_path / "m.key").write_text(issued.json()["key_pem"])
    pair = (str(tmp_path / "m.crt"), str(tmp_path / "m.key"))
    by_password = fleet.client("m-gone", "m-gone.1", password, port=fleet.ports.password, ca=fleet.ca_file)
    by_cert = fleet.client("m-gone", port=fleet.ports.certificate, ca=fleet.ca_file, cert=pair)
    assert by_password.accepted and by_cert.accepted
    assert not by_cert.publish_refused("vend/v1/m-gone/telemetry", b"{}"), "in service, it may publish"

    out = fleet.vendctl("machines", "retire", "m-gone")
    assert out.returncode == 0, out.stderr
    assert "machine m-gone retired" in out.stdout and "broker: Mosquitto (pid" in out.stdout, out.stdout

    # The broker reloads its files: the password login is thrown out and refused from then on.
    assert by_password.disconnected.wait(20), "the retired machine's broker login outlived its retirement"
    again = fleet.client("m-gone-2", "m-gone.1", password, port=fleet.ports.password, ca=fleet.ca_file)
    assert not again.accepted
    again.close()
    # Its certificate still passes TLS (the fleet CA keeps no revocation list), but no topic is its own now.
    assert by_cert.publish_refused("vend/v1/m-gone/events", b"after retirement"), "the certificate still publishes"
    late = fleet.client("m-gone", port=fleet.ports.certificate, ca=fleet.ca_file, cert=pair)
    assert late.publish_refused("vend/v1/m-gone/status", b"{}")
    late.close()
    by_cert.close()
    by_password.close()
    # And it gets no new login: no certificate, no rotation.
    assert fleet.api("POST", "/api/v1/machines/m-gone/certificate").status_code == 409
    rotated = fleet.vendctl("machines", "rotate-secret", "m-gone", "--overlap", "0s")
    assert rotated.returncode != 0 and "409" in rotated.stderr and "retired" in rotated.stderr, rotated.stderr
    assert fleet.broker_connected()


@pytest.mark.parametrize("args, error", [
    (("machines", "rotate-secret", "ghost"), "404 no machine 'ghost'"),
    (("machines", "rotate-secret", "m-new", "--overlap", "forever"), "not a duration like 24h"),
    (("machines", "rotate-secret", "m-new", "--overlap", "40d"), "from 0 to 2592000"),
    (("machines", "add", "Bad Id"), "machine id 'Bad Id' is not valid"),
])
def test_vendctl_says_what_is_wrong(fleet, args, error):
    if not fleet.api("GET", "/api/v1/machines/m-new/credentials").is_success:
        fleet.vendctl("machines", "add", "m-new")
    out = fleet.vendctl(*args)
    assert out.returncode != 0 and error in out.stderr, out.stderr
    assert credentials(fleet, "m-new")["mqtt"]["username"] == "m-new.1"


def test_a_wrong_admin_token_is_refused(fleet):
    out = fleet.vendctl("machines", "add", "m-intruder", token="not-the-token")
    assert out.returncode == 1 and "401" in out.stderr
    assert fleet.api("GET", "/api/v1/machines/m-intruder/credentials").status_code == 404


def fetch(fleet, machine_id: str, secret: str, at: float | None = None) -> httpx.Response:
    header = qrtoken.sign_request(machine_id, secret.encode(), time.time() if at is None else at, "credentials")
    return httpx.get(f"{fleet.url}/api/v1/machine/credentials", headers={"Authorization": header}, timeout=10)


def test_a_machine_fetches_its_rotated_credentials_with_either_secret_during_the_overlap(fleet):
    assert fleet.vendctl("machines", "add", "m-fetch").returncode == 0
    old = credentials(fleet, "m-fetch")
    r = fetch(fleet, "m-fetch", old["secret"])
    assert r.status_code == 200 and r.json()["secret"] == old["secret"]
    assert fleet.vendctl("machines", "rotate-secret", "m-fetch", "--overlap", "3s").returncode == 0
    new = credentials(fleet, "m-fetch")
    got = fetch(fleet, "m-fetch", old["secret"]).json()  # the machine still holds only its old secret
    assert (got["secret"], got["mqtt_username"], got["mqtt_password"]) == (
        new["secret"], "m-fetch.2", new["mqtt"]["password"])
    wait_until(lambda: fetch(fleet, "m-fetch", old["secret"]).status_code == 401, 20, "the overlap to end")
    assert fetch(fleet, "m-fetch", new["secret"]).status_code == 200


@pytest.mark.parametrize("case", ["stale", "forged", "unknown machine", "not ours"])
def test_a_credentials_request_that_is_not_a_machines_own_is_refused_alike(fleet, case):
    assert fleet.vendctl("machines", "add", "m-probe").returncode in (0, 1)  # once for all cases
    secret = credentials(fleet, "m-probe")["secret"]
    if case == "stale":
        r = fetch(fleet, "m-probe", secret, at=time.time() - 3600)
    elif case == "forged":
        r = fetch(fleet, "m-probe", "a-secret-guessed-by-someone")
    elif case == "unknown machine":
        r = fetch(fleet, "m-nobody", secret)
    else:
        r = httpx.get(f"{fleet.url}/api/v1/machine/credentials", headers={"Authorization": "Bearer x"}, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"] == "not a machine of this cloud, or a bad or stale signature"
    assert secret not in r.text
