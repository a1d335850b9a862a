"""Real controllers (simulated hardware) reach the cloud through the secured broker: over TLS with a password,
and with a client certificate; the ACL lets through everything a machine and the cloud must say."""

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.fleet_fixtures import SecuredCloud
from tests.e2e.harness import Proc, tail, wait_until


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    c = SecuredCloud(str(tmp_path_factory.mktemp("fleet"))).start()
    yield c
    c.stop()


def start_controller(fleet, home, machine_id: str, mqtt_lines: list[str]) -> Proc:
    os.makedirs(home, exist_ok=True)
    config = os.path.join(home, "controller.ini")
    secret = fleet.api("GET", f"/api/v1/machines/{machine_id}/credentials").json()["secret"]
    with open(config, "w") as f:
        f.write("\n".join([
            "[machine]", f"id = {machine_id}", f"secret = {secret}",
            "[cloud]", f"url = {fleet.url}",
            "[mqtt]", "host = localhost", "protocol = 5", "tls = yes", f"ca_file = {fleet.ca_file}",
            "keepalive_s = 10", *mqtt_lines,
            "[ledger]", f"path = {home}/ledger.db",
            "[hardware]", "backend = sim", "slots = A1, A2",
            "[sim]", f"display_path = {home}/screen.png",
            "[screen]", "rotate_s = 2", f"url_file = {home}/screen.url", "selftest_show_s = 0",
            "[service]", f"socket = {home}/control.sock", ""]))
    proc = Proc([sys.executable, "-m", "controller", "--config", config], os.path.join(home, "controller.log"))
    proc.start()
    return proc


def machine(fleet, machine_id):
    return next(m for m in fleet.api("GET", "/api/v1/machines").json() if m["id"] == machine_id)


def restock(home) -> dict:
    out = subprocess.run([sys.executable, "-m", "controller", "--config", os.path.join(home, "controller.ini"),
                          "service", "restock", "A1=5"], capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)


@pytest.mark.parametrize("auth", ["password", "certificate"])
def test_a_controller_comes_online_and_syncs_through_the_secured_broker(fleet, tmp_path, auth):
    machine_id = f"m-{auth[:4]}"
    assert fleet.vendctl("machines", "add", machine_id).returncode == 0
    if auth == "password":
        mqtt = fleet.api("GET", f"/api/v1/machines/{machine_id}/credentials").json()["mqtt"]
        lines = [f"port = {fleet.ports.password}", f"username = {mqtt['username']}", f"password = {mqtt['password']}"]
    else:
        issued = fleet.api("POST", f"/api/v1/machines/{machine_id}/certificate").json()
        (tmp_path / "machine.crt").write_text(issued["cert_pem"])
        (tmp_path / "machine.key").write_text(issued["key_pem"])
        lines = [f"port = {issued['port']}", f"cert_file = {tmp_path}/machine.crt",
                 f"key_file = {tmp_path}/machine.key"]
    home = str(tmp_path / "machine")
    proc = start_controller(fleet, home, machine_id, lines)
    try:
        wait_until(lambda: machine(fleet, machine_id)["online"] or not proc.alive(), 30,
                   f"{machine_id} to come online")
        assert proc.alive(), tail(proc.log_path)
        assert restock(home)["ok"]
        wait_until(lambda: (m := machine(fleet, machine_id))["cloud_head"] == m["machine_head"] > 0, 30,
                   f"{machine_id}'s ledger to reach the cloud")
        assert "refused the connection" not in tail(proc.log_path, 200)
    finally:
        proc.stop()
    wait_until(lambda: not machine(fleet, machine_id)["online"], 20, f"{machine_id} to say it is offline")


def test_a_rotation_reaches_the_running_machine_which_sells_on_after_the_overlap(fleet, tmp_path):
    machine_id = "m-turn"
    assert fleet.vendctl("machines", "add", machine_id).returncode == 0
    mqtt = fleet.api("GET", f"/api/v1/machines/{machine_id}/credentials").json()["mqtt"]
    home = str(tmp_path / "machine")
    proc = start_controller(fleet, home, machine_id, [f"port = {fleet.ports.password}",
                                                      f"username = {mqtt['username']}", f"password = {mqtt['password']}"])
    try:
        wait_until(lambda: machine(fleet, machine_id)["online"] or not proc.alive(), 30, f"{machine_id} online")
        assert fleet.vendctl("machines", "rotate-secret", machine_id, "--overlap", "8s").returncode == 0
        new = fleet.api("GET", f"/api/v1/machines/{machine_id}/credentials").json()
        # The cloud's command makes the machine fetch its new secrets at once and log in as the new user.
        wait_until(lambda: f"broker login {machine_id}.2" in tail(proc.log_path, 200), 20,
                   "the machine to take up its new credentials")
        kept = os.path.join(home, "credentials.ini")
        assert os.stat(kept).st_mode & 0o777 == 0o600
        assert f"secret = {new['secret']}" in open(kept).read()
        time.sleep(9)  # past the overlap: the old broker user and QR secret are gone
        assert restock(home)["ok"]
        wait_until(lambda: (m := machine(fleet, machine_id))["online"] and m["cloud_head"] == m["machine_head"], 30,
                   f"{machine_id} to sync on its new login after the overlap")
        time.sleep(2.5)  # the screen's next code, signed with the new secret
        with open(os.path.join(home, "screen.url")) as f:
            url = f.read().strip()
        assert httpx.get(url, timeout=10).status_code == 303  # a customer's scan still opens the menu
    finally:
        proc.stop()
    # A restart reads the kept credentials: it comes back online without anyone editing controller.ini.
    proc = Proc([sys.executable, "-m", "controller", "--config", os.path.join(home, "controller.ini")],
                os.path.join(home, "controller-2.log"))
    proc.start()
    try:
        wait_until(lambda: machine(fleet, machine_id)["online"] or not proc.alive(), 30, "the restarted machine")
        assert proc.alive(), tail(proc.log_path)
    finally:
        proc.stop()
