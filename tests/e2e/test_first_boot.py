"""A first boot, rehearsed: a card made by ``vendctl provision`` boots a Debian arm64 root (Raspberry Pi OS's
release, run under qemu-user) with no network, and the controller it installs then sells.

The root stands in for Raspberry Pi OS Lite (see tests/e2e/pi_root.py for what it has and how it is cached).
The card is a real image file written by ``vendctl provision --pi-os bookworm --pi-arch arm64`` with its
offline wheelhouse for aarch64 CPython 3.11; its boot partition's files go where Raspberry Pi OS mounts
them, /boot/firmware, and cloud-init reads them from there through the NoCloud datasource, configured as
Raspberry Pi OS configures it (pi-gen's 99_raspberry-pi.cfg). cloud-init's four stages run as at boot, in a
namespace with no network at all. Then the installed controller runs inside the root, emulated, with the
host's network this time, against a cloud and Mosquitto on this computer, and a customer buys from it.

The card's hardware is a serial motor board on the header UART, a 1-wire thermometer and the framebuffer
screen: no pin library is needed from the OS (Raspberry Pi OS ships python3-lgpio; Debian does not). To sell
without a board, the controller runs on the simulated backend with the rest of the installed config as is.

Needs root, debootstrap and qemu-user-static with binfmt_misc; the first run on a computer needs the network
(Debian's mirror for the root, the package index for the wheelhouse) and takes minutes; later runs reuse both.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml

from tests.e2e import pi_root
from tests.e2e.harness import PRODUCTS, Cloud, Customer, running_broker, tail, wait_until
from tests.tools import need, need_index

pytestmark = pytest.mark.index  # the first run on a computer fetches the wheelhouse (and Debian's packages)
MIB = 1 << 20
MACHINE = "pi1"
PASSWORD_HASH = "$6$rounds=5000$saltsalt$" + "x" * 86  # the shape of openssl passwd -6's output
NTP = "ntp.example.org"
# A machine with a serial motor board on the Pi's header UART, a cabinet thermometer and the screen.
HARDWARE = """\
[hardware]
backend = serial
slots = A1, A2, B1, B2   ; the machine's four spirals
[serial]
port = /dev/serial0
motors = A1:0 A2:1 B1:2 B2:3
[thermometer]
w1_id = 28-0316a2794eff
[screen]
display = framebuffer
"""
# Raspberry Pi OS Bookworm Lite's boot partition as written from the image (abridged to what matters here).
CONFIG_TXT = """\
# For more options and information see
# http://rptl.io/configtxt
# Some settings may impact device functionality. See link above for details

# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on

# Enable audio (loads snd_bcm2835)
dtparam=audio=on

# Automatically load overlays for detected cameras
camera_auto_detect=1

# Automatically load overlays for detected DSI displays
display_auto_detect=1

# Automatically load initramfs files, if found
auto_initramfs=1

# Enable DRM VC4 V3D driver
dtoverlay=vc4-kms-v3d
max_framebuffers=2

# Don't have the firmware create an initial video= setting in cmdline.txt.
# Use the kernel's default instead.
disable_fw_kms_setup=1

# Run in 64-bit mode
arm_64bit=1

# Disable compensation for displays with overscan
disable_overscan=1

# Run as fast as firmware / board allows
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
# This line should be removed if the legacy DWC2 controller is required
# (e.g. for USB device mode) or if USB support is not required.
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[all]
"""
CMDLINE_TXT = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes "
               "rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n")
# How Raspberry Pi OS points cloud-init at its boot partition (pi-gen, stage2/04-cloud-init/files), but for
# the trailing slash: Debian bookworm's cloud-init 22.4 joins "file:///boot/firmware" and "meta-data" as is
# (newer ones, Raspberry Pi OS's, add the slash).
RASPBERRY_PI_CFG = """\
datasource_list: [ NoCloud, None ]
datasource:
  NoCloud:
    seedfrom: file:///boot/firmware/
"""
# Only for the rehearsal: the root is a folder on this computer's disk, not a card; cloud-init must not try
# to grow "/" (the host's file system).
REHEARSAL_CFG = """\
growpart:
  mode: "off"
resize_rootfs: false
"""
HARDWARE_SECTIONS = ("hardware", "serial", "gpio", "thermometer", "screen", "sim", "service")
STAGES = ("init --local", "init", "modules --mode config", "modules --mode final")


def make_image(path: str) -> str:
    """A Raspberry Pi OS-like card image: MBR, a FAT32 boot partition at 1 MiB with config.txt and cmdline.txt,
    then a root partition (left empty: the root is the debootstrapped one)."""
    with open(path, "wb") as f:
        f.truncate(160 * MIB)
    subprocess.run([need("sfdisk"), "-q", path], input="2048,262144,c\n264192,,83\n", text=True, check=True)
    subprocess.run([need("mkfs.vfat"), "-F", "32", "-n", "bootfs", "--offset", "2048", path, "131072"],
                   check=True, capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for name, text in (("config.txt", CONFIG_TXT), ("cmdline.txt", CMDLINE_TXT)):
        local = os.path.join(os.path.dirname(path), name)
        with open(local, "w") as f:
            f.write(text)
        subprocess.run([need("mcopy"), "-i", f"{path}@@{MIB}", local, f"::/{name}"], check=True, env=env)
    return path


def unpack_boot(image: str, dest: str) -> None:
    """The boot partition's files, as the Pi mounts them at /boot/firmware."""
    os.makedirs(dest, exist_ok=True)
    subprocess.run([need("mcopy"), "-s", "-n", "-i", f"{image}@@{MIB}", "::/*", dest], check=True,
                   env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}, capture_output=True)


def root_file(root: str, path: str) -> str:
    with open(os.path.join(root, path.lstrip("/")), errors="replace") as f:
        return f.read()


@pytest.fixture(scope="module")
def arm64_root(request, tmp_path_factory):
    """A throwaway copy of the cached Debian bookworm arm64 root."""
    pi_root.need_emulation("arm64")
    for tool in ("sfdisk", "mkfs.vfat", "mcopy"):
        need(tool)
    started = time.monotonic()
    cached = pi_root.cached_root("bookworm", "arm64")
    print(f"\ncached root {cached}: {time.monotonic() - started:.0f} s")
    root = pi_root.copy_root(cached, str(tmp_path_factory.mktemp("pi") / "root"))
    failed = request.session.testsfailed
    yield root
    if request.session.testsfailed == failed:  # kept to look into when something failed
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Mosquitto and the cloud on this computer, as in the other end-to-end tests (SQLite)."""
    work = str(tmp_path_factory.mktemp("host"))
    broker_run = running_broker(os.path.join(work, "broker"))
    broker = next(broker_run)
    cloud = Cloud(broker, work)
    cloud.start()
    cloud.api("POST", "/api/v1/machines", {"id": MACHINE, "name": "Station hall"})
    cloud.api("PUT", f"/api/v1/machines/{MACHINE}/slots", [
        {"slot": s, "sku": sku, "name": n, "price": p, "currency": "CNY", "capacity": 10} for s, sku, n, p in PRODUCTS])
    yield SimpleNamespace(broker=broker, cloud=cloud, work=work)
    cloud.stop()
    broker_run.close()


@pytest.fixture(scope="module")
def card(host, tmp_path_factory):
    """The machine's card image, written by vendctl provision for Raspberry Pi OS Bookworm arm64."""
    wheelhouse = os.path.join(pi_root.CACHE, "wheelhouse")
    if not os.path.isdir(wheelhouse):
        need_index()  # the wheelhouse is fetched once per computer, then reused
    work = tmp_path_factory.mktemp("card")
    image = make_image(str(work / "raspios.img"))
    hardware = work / "pi1-hardware.ini"
    hardware.write_text(HARDWARE)
    out = subprocess.run([sys.executable, "-m", "cloud.cli", "provision", "--machine", MACHINE, "--image", image,
                          "--hardware", str(hardware), "--broker", f"127.0.0.1:{host.broker.port}",
                          "--pi-os", "bookworm", "--pi-arch", "arm64", "--password-hash", PASSWORD_HASH,
                          "--ntp", NTP, "--wheelhouse", wheelhouse],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "VEND_CLOUD_URL": host.cloud.url, "VEND_TOKEN": host.cloud.token})
    assert out.returncode == 0, out.stderr
    assert "for Raspberry Pi OS bookworm arm64 (Python 3.11); no package index, no apt" in out.stdout, out.stdout
    return image


@pytest.fixture(scope="module")
def booted(arm64_root, card, tmp_path_factory):
    """The card's first boot: cloud-init's stages, one after the other as systemd runs them, with no network."""
    root = arm64_root
    unpack_boot(card, os.path.join(root, "boot/firmware"))
    for name, text in (("etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg", RASPBERRY_PI_CFG),
                       ("etc/cloud/cloud.cfg.d/98_rehearsal.cfg", REHEARSAL_CFG),
                       # Raspberry Pi OS's image has its locale set (pi-gen); a minbase root has none, and
                       # cloud-init would then set en_US.UTF-8, which is not generated here.
                       ("etc/default/locale", "LANG=C.UTF-8\n")):
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
    # Proof the namespace has no way out: a connection to the host's own cloud fails before cloud-init starts.
    probe = "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 9), 3)\" 2>&1 | tail -n 1; "
    # Each stage whatever the one before did, as systemd runs them; each one's exit status is printed.
    stages = "; ".join(f"echo '== cloud-init {s}'; cloud-init {s}; echo \"== exit $?\"" for s in STAGES)
    started = time.monotonic()
    run = pi_root.run_in(root, probe + stages, network=False, timeout=1800)
    took = time.monotonic() - started
    log = tmp_path_factory.mktemp("logs")
    (log / "cloud-init-stages.log").write_text(run.stdout + run.stderr)
    for name in ("var/log/cloud-init.log", "var/log/cloud-init-output.log", "var/log/vend-firstboot.log"):
        if os.path.exists(os.path.join(root, name)):
            shutil.copy(os.path.join(root, name), log / os.path.basename(name))
    print(f"first boot (cloud-init, 4 stages, emulated): {took:.0f} s; logs in {log}")
    return SimpleNamespace(root=root, run=run, logs=str(log), seconds=took)


def firstboot_log(booted) -> str:
    return root_file(booted.root, "/var/log/vend-firstboot.log")


def test_cloud_init_ran_every_stage_from_the_card_without_a_network(booted):
    out = booted.run.stdout + booted.run.stderr
    assert re.findall(r"^== exit (\d+)$", out, re.M) == ["0"] * 4, \
        f"{out[-3000:]}\n--- firstboot:\n{tail(os.path.join(booted.logs, 'vend-firstboot.log'))}"
    assert "Network is unreachable" in out.splitlines()[0], out.splitlines()[0]
    result = yaml.safe_load(root_file(booted.root, "/var/lib/cloud/data/result.json"))["v1"]
    assert result["datasource"].startswith("DataSourceNoCloud"), result
    assert "/boot/firmware" in result["datasource"], result
    assert result["errors"] == [], result["errors"]
    status = yaml.safe_load(root_file(booted.root, "/var/lib/cloud/data/status.json"))["v1"]
    assert all(status[stage]["errors"] == [] for stage in ("init-local", "init", "modules-config", "modules-final")), \
        status


def test_the_controller_was_installed_from_the_cards_wheelhouse_alone(booted):
    log = firstboot_log(booted)
    assert log.rstrip().endswith("vend-firstboot: done: vend-controller is running"), log[-2000:]
    assert "this card's wheels are for Raspberry Pi OS bookworm arm64, Python 3.11" in log
    installed = re.findall(r"^Processing (\S+)", log, re.M)
    assert any(p.startswith("/boot/firmware/vend/wheels/pillow-") and "cp311-cp311-manylinux" in p
               and p.endswith("aarch64.whl") for p in installed), installed
    assert any(p.startswith("/boot/firmware/vend/vend_fleet-") for p in installed), installed
    assert not re.search(r"Downloading|Collecting .*http|https?://", log), log
    python = os.path.join(booted.root, "opt/vend/lib/python3.11/site-packages")
    # (pyserial may come from the OS instead: Debian's cloud-init depends on python3-serial, seen by the venv)
    for package in ("PIL", "paho", "qrcode", "gpiozero", "sqlite_utils", "controller", "hw"):
        assert os.path.isdir(os.path.join(python, package)), package
    # The venv sees the OS's own packages (where Raspberry Pi OS's pin libraries are).
    assert "include-system-site-packages = true" in root_file(booted.root, "/opt/vend/pyvenv.cfg")


def test_the_unit_is_enabled_and_what_would_take_the_uart_or_the_screen_is_masked(booted):
    root = booted.root
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants/vend-controller.service")
    assert os.readlink(wants) == "/etc/systemd/system/vend-controller.service"
    unit = root_file(root, "/etc/systemd/system/vend-controller.service")
    assert "ExecStart=/opt/vend/bin/vend-controller --config /etc/vend/controller.ini" in unit
    for masked in ("getty@tty1.service", "hciuart.service"):
        assert os.readlink(os.path.join(root, "etc/systemd/system", masked)) == "/dev/null", masked
    assert os.path.islink(os.path.join(root, "etc/systemd/system/multi-user.target.wants/ssh.service"))


def test_the_installed_config_is_the_service_users_and_passes_its_check(booted):
    root = booted.root
    st = os.stat(os.path.join(root, "etc/vend/controller.ini"))
    passwd = {line.split(":")[0]: line.split(":") for line in root_file(root, "/etc/passwd").splitlines()}
    assert "vend" in passwd and "tech" in passwd
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (int(passwd["vend"][2]), "0o600")
    check = pi_root.run_in(root, "/opt/vend/bin/vend-controller --config /etc/vend/controller.ini check",
                           user="vend", timeout=300)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == f"/etc/vend/controller.ini: ok (machine {MACHINE}, 4 slots)"
    groups = root_file(root, "/etc/group")
    for group in ("gpio", "dialout", "video"):
        assert re.search(rf"^{group}:[^:]*:\d+:(.*,)?vend(,|$)", groups, re.M), group


def test_the_pis_own_settings_are_written_and_the_cards_secrets_removed(booted):
    root = booted.root
    config_txt = root_file(root, "/boot/firmware/config.txt")
    assert config_txt.startswith(CONFIG_TXT)  # the image's own settings kept
    block = config_txt[len(CONFIG_TXT):]
    for line in ("enable_uart=1", "dtoverlay=disable-bt", "dtoverlay=w1-gpio,gpiopin=4"):
        assert line in block.splitlines(), block
    cmdline = root_file(root, "/boot/firmware/cmdline.txt")
    assert len(cmdline.splitlines()) == 1
    words = cmdline.split()
    assert not any(w.startswith("console=serial0") for w in words), cmdline
    assert {"console=tty1", "fbcon=map:9", "vt.global_cursor_default=0", "rootwait"} <= set(words), cmdline
    assert NTP in root_file(root, "/etc/systemd/timesyncd.conf.d/cloud-init.conf")
    user_data = root_file(root, "/boot/firmware/user-data")
    assert "secret =" not in user_data and "controller.ini" not in user_data and "$6$" not in user_data, user_data
    assert f"hostname: vend-{MACHINE}" in user_data
    assert root_file(root, "/etc/hostname").strip() == f"vend-{MACHINE}"


def selling_config(installed: str) -> str:
    """The installed config with the simulated machine in place of the serial board and the screen (no board,
    no framebuffer here); the machine, the cloud, the broker login and the ledger as the card wrote them."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(installed)
    for section in HARDWARE_SECTIONS:
        parser.remove_section(section)
    parser.read_dict({
        "hardware": {"backend": "sim", "slots": " ".join(s for s, *_ in PRODUCTS)},
        "sim": {"drop_delay_s": "0.2", "display_path": "/var/lib/vend/screen.png"},
        "screen": {"display": "png", "rotate_s": "2", "url_file": "/var/lib/vend/screen.url",
                   "selftest_wait_s": "5", "selftest_show_s": "0"},
        "service": {"socket": "/var/lib/vend/control.sock"},
    })
    lines = []
    for section in parser.sections():
        lines += [f"[{section}]", *(f"{k} = {v}" for k, v in parser[section].items()), ""]
    return "\n".join(lines)


def test_the_installed_controller_sells_to_a_customer(booted, host, tmp_path):
    root, cloud = booted.root, host.cloud
    config = os.path.join(root, "etc/vend/selling.ini")
    with open(config, "w") as f:
        f.write(selling_config(root_file(root, "/etc/vend/controller.ini")))
    st = os.stat(os.path.join(root, "etc/vend/controller.ini"))
    os.chown(config, st.st_uid, st.st_gid)
    os.chmod(config, 0o600)
    controller = pi_root.Running(root, "exec /opt/vend/bin/vend-controller --config /etc/vend/selling.ini",
                                 str(tmp_path / "controller.log"), network=True, user="vend")
    try:
        url_file = os.path.join(root, "var/lib/vend/screen.url")
        wait_until(lambda: os.path.exists(url_file) or not controller.alive(), 180, "the controller's QR")
        assert controller.alive(), tail(controller.log_path)
        wait_until(lambda: cloud.machine(MACHINE)["online"], 60, f"{MACHINE} online in the cloud")
        restock = pi_root.run_in(root, "/opt/vend/bin/vend-controller --config /etc/vend/selling.ini service restock "
                                 + " ".join(f"{s}=10" for s, *_ in PRODUCTS), user="vend", timeout=120)
        assert restock.returncode == 0, restock.stdout + restock.stderr
        machine = SimpleNamespace(id=MACHINE, url_file=url_file)
        customer = Customer(cloud, "First Customer", "+8613900000001")
        r = customer.scan(machine)
        assert r.status_code == 303 and r.headers["location"].startswith("/register"), r.text
        assert customer.register(f"/m/{MACHINE}").status_code == 303
        assert customer.topup("20").status_code == 303
        bought = customer.buy(machine, "A2")
        assert bought.status_code == 303 and bought.headers["location"].startswith("/orders/"), bought.text
        order_id = bought.headers["location"].rsplit("/", 1)[1]
        status = customer.wait_settled(order_id, timeout=120)
        assert status["status"] == "succeeded", (status, tail(controller.log_path))
        assert "Take your product" in customer.http.get(f"/orders/{order_id}").text
        assert customer.balance() == "CN¥16.50"
        sales = cloud.api("GET", f"/api/v1/sales?machine={MACHINE}")["sales"]
        assert [s["amount"] for s in sales if s["order_id"] == order_id] == [350]
    finally:
        controller.stop()
