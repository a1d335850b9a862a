"""deploy/install-server.sh (make install-server) run into a throwaway root (DESTDIR), its result read back: the
user, the venv from the wheel that really runs, the settings file, the units enabled, Mosquitto's link, Caddy's
configuration accepted by caddy itself; bad input refused before anything is written."""

import os
import pwd
import stat
import subprocess

import pytest

from cloud.provisioning.cli import build_wheel
from tests.tools import REPO, need, need_index

SCRIPT = str(REPO / "deploy" / "install-server.sh")
ARGS = ["--domain", "vend.example.org", "--email", "ops@example.org", "--machine-broker", "mqtt.example.org"]


def make_root(path) -> str:
    """The /etc files useradd and the script read, as a fresh Debian with mosquitto and caddy installed has them."""
    etc = path / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nmosquitto:x:101:103::/var/lib/mosquitto:"
                                "/usr/sbin/nologin\ncaddy:x:102:104:Caddy web server:/var/lib/caddy:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nmosquitto:x:103:\ncaddy:x:104:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\nmosquitto:!:19000::::::\ncaddy:!:19000::::::\n")
    (etc / "gshadow").write_text("root:*::\nmosquitto:!::\ncaddy:!::\n")
    for name in ("shadow", "gshadow"):
        os.chmod(etc / name, 0o640)
    return str(path)


def install(root, *args, wheel="") -> subprocess.CompletedProcess:
    env = {**os.environ, "DESTDIR": root}
    return subprocess.run(["sh", SCRIPT, *args, *([wheel] if wheel else [])], capture_output=True, text=True,
                          env=env, timeout=900)


def listing(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


def entry(root, name, file="passwd") -> list[str]:
    for line in open(os.path.join(root, "etc", file)):
        if line.startswith(name + ":"):
            return line.rstrip("\n").split(":")
    raise AssertionError(f"no {name} in {file}")


@pytest.mark.index
def test_install_server_makes_a_complete_server_in_a_throwaway_root(tmp_path):
    need("useradd")
    need("caddy")
    need_index()
    wheel = build_wheel(str(tmp_path / "wheel"))
    root = make_root(tmp_path / "root")
    out = install(root, *ARGS, wheel=wheel)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done under" in out.stdout

    user = entry(root, "vend-cloud")
    assert (user[5], user[6]) == ("/var/lib/vend-cloud", "/usr/sbin/nologin") and int(user[2]) < 1000
    assert entry(root, "vend-cloud", "group")[2] == user[3]
    assert not any(line.startswith("vend-cloud:") for line in open("/etc/passwd")), "the host was changed"

    # The venv from the wheel, with the cloud's dependencies: vend-cloud runs.
    help_out = subprocess.run([os.path.join(root, "opt/vend-cloud/bin/vend-cloud"), "--help"], capture_output=True,
                              text=True, timeout=120)
    assert help_out.returncode == 0 and "--trusted-proxy" in help_out.stdout, help_out.stderr

    env_file = os.path.join(root, "etc/vend-cloud/env")
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
    settings = dict(line.split("=", 1) for line in open(env_file).read().splitlines() if not line.startswith("#"))
    assert settings == {"VEND_PUBLIC_URL": "https://vend.example.org", "VEND_TRUSTED_PROXY": "127.0.0.1",
                        "VEND_MACHINE_BROKER": "mqtt.example.org"}

    units = os.path.join(root, "etc/systemd/system")
    for name in ("vend-cloud.service", "vend-broker-reload.path", "vend-broker-reload.service"):
        assert open(os.path.join(units, name)).read() == open(REPO / "systemd" / name).read()
    for name in ("vend-cloud.service", "vend-broker-reload.path"):
        assert os.readlink(os.path.join(units, "multi-user.target.wants", name)) == f"/etc/systemd/system/{name}"

    # The installed units pass systemd-analyze verify, their program the venv's own (the root's /opt, here).
    verified = tmp_path / "verify"
    verified.mkdir()
    names = ("vend-cloud.service", "vend-broker-reload.path", "vend-broker-reload.service")
    for name in names:
        text = open(os.path.join(units, name)).read()
        (verified / name).write_text(text.replace("/opt/vend-cloud/", os.path.join(root, "opt/vend-cloud/")))
    check = subprocess.run([need("systemd-analyze"), "verify", "--man=no", *names], capture_output=True, text=True,
                           cwd=verified)
    assert check.returncode == 0 and check.stdout + check.stderr == "", check.stdout + check.stderr

    broker = os.stat(os.path.join(root, "var/lib/vend-broker"))
    assert (broker.st_uid, broker.st_gid, stat.S_IMODE(broker.st_mode)) == (int(user[2]), 103, 0o2750)
    assert os.readlink(os.path.join(root, "etc/mosquitto/conf.d/vend.conf")) == "/var/lib/vend-broker/mosquitto.conf"

    caddyfile = os.path.join(root, "etc/caddy/Caddyfile")
    text = open(caddyfile).read()
    assert "vend.example.org {" in text and "email ops@example.org" in text and "example.com" not in text
    valid = subprocess.run([need("caddy"), "validate", "--adapter", "caddyfile", "--config", caddyfile],
                           capture_output=True, text=True)
    assert valid.returncode == 0 and "Valid configuration" in valid.stdout + valid.stderr

    # Again, with the settings edited by hand: they are kept; the rest is brought up to date.
    with open(env_file, "a") as f:
        f.write("VEND_DB=postgresql+psycopg://vend:secret@localhost/vend\n")
    before = open(env_file).read()
    again = install(root, *ARGS, wheel=wheel)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "kept: " in again.stdout and open(env_file).read() == before
    assert [line for line in open(os.path.join(root, "etc/passwd")) if line.startswith("vend-cloud:")] == [
        ":".join(user) + "\n"]


@pytest.mark.parametrize("args, error", [
    ([], "--domain is needed"),
    (["--domain", "localhost", "--email", "ops@example.org"], "--domain localhost: give a DNS name"),
    (["--domain", "vend.example.org"], "--email '': give the address"),
    (["--domain", "vend.example.org", "--email", "ops@example.org", "--db", "mysql://x"], "--db mysql://x"),
    (["--domain", "vend.example.org", "--email", "ops@example.org", "/nowhere/vend.whl"], "no wheel /nowhere/vend.whl"),
    (["--domain", "vend.example.org", "--email", "ops@example.org", "--colour", "red"], "unknown option --colour"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, args, error):
    root = make_root(tmp_path / "root")
    before = listing(root)
    out = install(root, *args)
    assert out.returncode != 0 and error in out.stderr, out.stderr
    assert listing(root) == before


def test_a_root_without_the_packages_groups_is_refused(tmp_path):
    root = make_root(tmp_path / "root")
    (tmp_path / "root" / "etc" / "group").write_text("root:x:0:\n")
    wheel = tmp_path / "vend_fleet-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    out = install(root, *ARGS, wheel=str(wheel))
    assert out.returncode == 1 and "no group mosquitto" in out.stderr
    assert not os.path.exists(os.path.join(root, "opt"))
    assert pwd.getpwnam("root").pw_uid == 0


def test_the_wheel_holds_every_package_setup_cfg_lists(tmp_path):
    # The server's wheel once had no dex/ (the wheel's sources were a list of their own): vend-cloud could
    # not start on a server installed from it.
    import configparser
    import zipfile

    wheel = build_wheel(str(tmp_path / "wheel"))
    names = set(zipfile.ZipFile(wheel).namelist())
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    packages = [p for p in config.get("options.packages.find", "include").split() if "*" not in p and "." not in p]
    assert "dex" in packages
    for package in packages:
        assert f"{package}/__init__.py" in names, f"{package} is not in the wheel"
    assert "cloud/audits/imports.py" in names and "controller/__main__.py" in names
