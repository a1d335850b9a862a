"""The unit files under systemd/: accepted by ``systemd-analyze verify`` without a single warning, and saying
what the machine and the cloud depend on."""

import configparser
import os
import re
import subprocess

import pytest

from cloud.provisioning import brokerfiles, cloudinit
from controller.config import SCHEMA
from tests.fleet_fixtures import require_tool
from tests.tools import REPO

UNITS_DIR = str(REPO / "systemd")
UNITS = ["vend-controller.service", "vend-cloud.service", "vend-cloud-web.service", "vend-broker-reload.path",
         "vend-broker-reload.service"]


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read(os.path.join(UNITS_DIR, name))
    return parser


def verify(folder, names) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("systemd-analyze"), "verify", "--man=no", *names], capture_output=True,
                          text=True, cwd=folder)


def copy_with_stub_programs(tmp_path, name: str) -> None:
    """The unit as shipped, but for the programs that exist only on a machine or the cloud's server (/opt):
    systemd-analyze checks that every ExecStart program is there."""
    stub = tmp_path / "stub"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    with open(os.path.join(UNITS_DIR, name)) as f:
        text = re.sub(r"/opt/vend(-cloud)?/bin/[a-z-]+", str(stub), f.read())
    (tmp_path / name).write_text(text)


def test_every_unit_passes_systemd_analyze_verify_without_a_word(tmp_path):
    for name in UNITS:
        copy_with_stub_programs(tmp_path, name)
    out = verify(tmp_path, UNITS)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr


def test_the_check_would_catch_a_mistake(tmp_path):
    copy_with_stub_programs(tmp_path, "vend-controller.service")
    path = tmp_path / "vend-controller.service"
    path.write_text(path.read_text().replace("ProtectSystem=strict", "ProtectSystem=strickt"))
    assert "Failed to parse protect system value" in verify(tmp_path, ["vend-controller.service"]).stderr


def test_the_controller_unit_is_what_the_issue_and_the_card_expect():
    svc = unit("vend-controller.service")["Service"]
    assert (svc["Type"], svc["Restart"], svc["User"]) == ("notify", "always", "vend")
    assert int(svc["WatchdogSec"]) > 0
    assert svc["ExecStart"] == f"/opt/vend/bin/vend-controller --config {cloudinit.CONFIG_PATH}"
    assert set(svc["SupplementaryGroups"].split()) == set(cloudinit.SERVICE_GROUPS)
    assert (svc["ProtectSystem"], svc["PrivateTmp"], svc["NoNewPrivileges"]) == ("strict", "yes", "yes")
    ledger_dir = os.path.dirname(SCHEMA["ledger"]["path"].default)
    assert ledger_dir == cloudinit.LEDGER_DIR == "/var/lib/" + svc["StateDirectory"]
    assert svc["ReadWritePaths"] == ledger_dir
    assert unit("vend-controller.service")["Unit"]["StartLimitIntervalSec"] == "0"


def test_the_reload_path_unit_watches_what_the_cloud_rewrites():
    with open(os.path.join(UNITS_DIR, "vend-cloud.service")) as f:
        env = dict(kv.split("=", 1) for line in f if line.startswith("Environment=")
                   for kv in line[len("Environment="):].split())
    watched = unit("vend-broker-reload.path")["Path"]["PathChanged"]
    assert watched == os.path.join(env["VEND_BROKER_FILES"], brokerfiles.RELOAD_REQUEST)
    assert unit("vend-broker-reload.service")["Service"]["ExecStart"] == "/bin/systemctl reload mosquitto.service"


@pytest.mark.parametrize("name", UNITS)
def test_every_unit_says_why_it_exists(name):
    with open(os.path.join(UNITS_DIR, name)) as f:
        assert f.readline().startswith("# ")


def test_the_controller_unit_drives_the_motor_outputs_off_after_any_end():
    # ExecStopPost runs after every end of the main process: a clean stop, a SIGKILL, the OOM killer, a
    # watchdog abort, a failed start. The daemon's own safe state covers only the first.
    svc = unit("vend-controller.service")["Service"]
    assert svc["ExecStopPost"] == f"/opt/vend/bin/vend-controller --config {cloudinit.CONFIG_PATH} safe-pins"
    # pinctrl writes /dev/gpiomem (group gpio) as the service user: no privilege the daemon lacks.
    assert "gpio" in svc["SupplementaryGroups"].split() and "PrivateDevices" not in svc


def test_the_web_unit_is_the_cloud_unit_answering_people_only():
    """A big fleet's second process (docs/deploying.md): the same program, user, folders and protections,
    with the ingest off and Caddy's address; nothing else may differ, or the two drift apart."""
    def environment(name):
        with open(os.path.join(UNITS_DIR, name)) as f:
            return dict(kv.split("=", 1) for line in f if line.startswith("Environment=")
                        for kv in line[len("Environment="):].split())

    cloud, web = environment("vend-cloud.service"), environment("vend-cloud-web.service")
    assert web == {**cloud, "VEND_INGEST": "0"}
    assert web["VEND_HTTP"] == "127.0.0.1:8000"
    assert dict(unit("vend-cloud-web.service")["Service"]) == dict(unit("vend-cloud.service")["Service"]) | {
        "Environment": "VEND_HTTP=127.0.0.1:8000 VEND_INGEST=0"}
    assert "vend-cloud.service" in unit("vend-cloud-web.service")["Unit"]["After"].split()
