"""``vendctl provision``: make a Raspberry Pi OS card (an image file, or a card's mounted boot partition) into
one machine's card: its secrets from the cloud, its wiring from the technician's hardware file, the
controller wheel, and the cloud-init files that set it all up on first boot.

Everything is checked and rendered before the first byte is written; a bad option, an unknown machine or
a boot partition that cannot be written stops it with the card as it was.
"""

from __future__ import annotations

import configparser
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import replace

from cloud.provisioning import datapart, pisettings, wheelhouse
from cloud.provisioning.cloudinit import (AFTER_FIRST_BOOT, BOOT_FOLDER, WHEELS_FOLDER, Card, CardError, Wifi,
                                          check_hardware, check_hostname, check_login, check_ntp, controller_ini,
                                          meta_data, network_config, user_data, user_data_after_first_boot)
from controller.config import parse
from cloud.provisioning.sdcard import DirTarget, ImageTarget, TargetError

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What the wheel is built from: the packages and what setup.cfg names (README for the description, the unit).
SOURCE_FILES = ("setup.cfg", "pyproject.toml", "README.md", "systemd")


def source_parts(root: str) -> tuple[str, ...]:
    """What a wheel is built from: the files above and every top-level package setup.cfg lists (a package
    added there is in the wheel without a second list to keep in step: ``dex`` once was not)."""
    config = configparser.ConfigParser()
    config.read(os.path.join(root, "setup.cfg"))
    listed = config.get("options.packages.find", "include", fallback="").split()
    return SOURCE_FILES + tuple(sorted({name for name in listed if "." not in name and "*" not in name}))
UNIT_IN_WHEEL = "share/vend-fleet/systemd/vend-controller.service"


def add_arguments(sub) -> None:
    """The ``provision`` subcommand's options."""
    p = sub.add_parser("provision", help="write one machine's first-boot files onto a Raspberry Pi OS card",
                       description=__doc__)
    p.add_argument("--machine", required=True, help="the machine's id in the cloud (vendctl machines add)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", help="a Raspberry Pi OS .img file, written in place (no root, no mount)")
    where.add_argument("--boot-dir", help="the boot partition (bootfs) of a card already written and mounted")
    p.add_argument("--hardware", required=True, metavar="FILE",
                   help="the machine's wiring: an INI file with [hardware], [gpio], [serial], [thermometer], [screen]")
    p.add_argument("--hostname", help="the machine's host name (default: vend-ID)")
    p.add_argument("--wifi-ssid", help="the Wi-Fi network to join (Ethernet works without)")
    p.add_argument("--wifi-password", help="its WPA2 passphrase")
    p.add_argument("--wifi-country", help="two-letter country code, needed for Wi-Fi (GB, DE, CN, US...)")
    p.add_argument("--auth", choices=("password", "certificate"), default="password",
                   help="log in to the broker with a password (default) or a client certificate from the fleet CA")
    p.add_argument("--broker", help="HOST[:PORT] machines reach the broker at (default: what the cloud says)")
    p.add_argument("--read-only-root", action="store_true",
                   help="run from a read-only root (overlay in RAM); the ledger gets its own partition, added to "
                   "the --image now (the root is no longer grown over the card at first boot)")
    p.add_argument("--data-size", metavar="SIZE", default=None,
                   help="with --read-only-root: the ledger's partition; the image file grows by this much, so the "
                   "card must hold the image plus this (default 1G; at least 64M). The rest of a bigger card "
                   "stays unused")
    p.add_argument("--card-size", metavar="SIZE", default=None,
                   help="with --read-only-root: the size of the SD card it will be written to (e.g. 8G); refused "
                   "if the image with its data partition would not fit")
    p.add_argument("--ssh-key", metavar="FILE", help="public keys (a .pub file) for the recovery login over SSH")
    p.add_argument("--password-hash", metavar="HASH", default="",
                   help="the recovery login's password as a crypt hash (openssl passwd -6, or mkpasswd); this or "
                   "--ssh-key is required")
    p.add_argument("--login-user", default="tech", help="the recovery login's user name (default: %(default)s)")
    p.add_argument("--ntp", metavar="SERVER", action="append", default=[],
                   help="an NTP server the machine sets its clock from (repeat for more; default: the image's)")
    p.add_argument("--wheel", metavar="FILE", help="the controller wheel (default: built from this source tree)")
    p.add_argument("--pi-os", choices=sorted(wheelhouse.RELEASES), default="trixie",
                   help="the Raspberry Pi OS release of the image, for its Python (bookworm 3.11, trixie 3.13; "
                   "default trixie)")
    p.add_argument("--pi-arch", choices=sorted(wheelhouse.ARCHES), default="arm64",
                   help="the image's architecture: arm64 (64-bit, default) or armhf (32-bit)")
    p.add_argument("--wheelhouse", metavar="DIR", default=wheelhouse.DEFAULT_CACHE,
                   help="where the Pi's wheels are kept between cards; what is missing is fetched into it "
                   "(default: %(default)s)")
    p.add_argument("--wheel-index", metavar="URL", action="append", default=[],
                   help="one more package index the wheelhouse is filled from (repeatable), beside PyPI: for an "
                   f"armhf card, piwheels ({wheelhouse.PIWHEELS}), which builds the 32-bit ARM wheels PyPI lacks")
    p.add_argument("--no-download", action="store_true",
                   help="never reach the package index: the wheelhouse must hold every wheel already")
    p.add_argument("--online", action="store_true",
                   help="no wheels on the card: the first boot installs from apt and the package index (a site "
                   "with the internet)")
    p.add_argument("--show-secrets", action="store_true", help="print the machine's QR secret and broker password")


def run(args, client, error) -> int:
    """Provision one card; ``error`` is the exception class vendctl reports to the user."""
    try:
        return _run(args, client, error)
    except (CardError, TargetError) as e:
        raise error(f"{e}. Nothing was written.") from None


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CardError(f"{what} {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CardError(f"{what} {path} is not a text file") from None


def _run(args, client, error) -> int:
    wifi_args = (args.wifi_ssid, args.wifi_password, args.wifi_country)
    wifi = None
    if any(a is not None for a in wifi_args):
        if any(a is None for a in wifi_args):
            raise CardError("Wi-Fi needs all three of --wifi-ssid, --wifi-password and --wifi-country")
        wifi = Wifi(*wifi_args).check()
    hostname = check_hostname(args.hostname or f"vend-{args.machine}"[:63])
    hardware = check_hardware(_read(args.hardware, "--hardware"), args.hardware)
    ssh_keys = tuple(line.strip() for line in _read(args.ssh_key, "--ssh-key").splitlines()
                     if line.strip()) if args.ssh_key else ()
    if args.ssh_key and not all(k.startswith(("ssh-", "ecdsa-", "sk-")) for k in ssh_keys):
        raise CardError(f"--ssh-key {args.ssh_key}: not an OpenSSH public key (the .pub file)")
    check_login(args.login_user, args.password_hash, ssh_keys)
    ntp = check_ntp(args.ntp)
    indexes = wheelhouse.check_indexes(args.wheel_index)
    data_size = datapart.parse_size(args.data_size, "--data-size") if args.data_size else datapart.DEFAULT_SIZE
    card_size = datapart.parse_size(args.card_size, "--card-size") if args.card_size else None
    if (args.data_size or args.card_size) and not args.read_only_root:
        raise CardError("--data-size and --card-size are for the ledger's partition of --read-only-root")
    if args.read_only_root and not args.image:
        raise CardError("--read-only-root needs --image: the ledger's partition is added to the image before it is "
                        "written to the card (a card's root would be grown over its free space at first boot)")
    target = ImageTarget(args.image) if args.image else DirTarget(args.boot_dir)
    target.check()
    data = datapart.DataPartition.plan(args.image, data_size, card_size) if args.read_only_root else None
    boot_files = {}
    for name in ("config.txt", "cmdline.txt"):
        boot_files[name] = target.read(name)
        if boot_files[name] is None:
            raise TargetError(f"{target.describe()} has no {name}: it is not a Raspberry Pi OS boot partition as "
                              "written from the image")

    try:
        creds = client.call("GET", f"/api/v1/machines/{args.machine}/credentials")
    except error as e:
        if " 404 " in str(e):
            raise CardError(f"no machine {args.machine!r} in the cloud at {client.url}: create it first with "
                            f"vendctl machines add {args.machine}") from None
        raise
    mqtt = creds["mqtt"]
    host, port = _broker(args.broker, mqtt)
    cert = key = ""
    if args.auth == "certificate":
        issued = client.call("POST", f"/api/v1/machines/{args.machine}/certificate")
        cert, key, port = issued["cert_pem"], issued["key_pem"], port or issued["port"]
    port = port or mqtt["port"]
    with tempfile.TemporaryDirectory(prefix="vend-wheel-") as tmp:
        wheel = args.wheel or build_wheel(tmp)
        check_wheel(wheel)
        with open(wheel, "rb") as f:
            wheel_bytes = f.read()
        target_pi = wheelhouse.Target(args.pi_os, args.pi_arch)
        wheels = {} if args.online else {
            os.path.basename(path): path
            for path in wheelhouse.wheels_for(args.wheelhouse, wheel, target_pi, fetch=not args.no_download,
                                              indexes=indexes)}
        requirements = tuple(wheelhouse.requirements(wheel)[1:])
    wheel_files = {}
    for name, path in wheels.items():
        with open(path, "rb") as f:
            wheel_files[f"{WHEELS_FOLDER}/{name}"] = f.read()
    card = Card(machine_id=args.machine, name=creds["name"], secret=creds["secret"], cloud_url=creds["cloud_url"],
                mqtt_host=host, mqtt_port=port, hardware=hardware, hostname=hostname,
                wheel=os.path.basename(wheel), instance_id=f"vend-{args.machine}-{secrets.token_hex(4)}",
                mqtt_username="" if cert else mqtt["username"], mqtt_password="" if cert else mqtt["password"],
                tls=mqtt["tls"], ca_pem=mqtt["ca_pem"], cert_pem=cert, key_pem=key, wifi=wifi,
                read_only_root=args.read_only_root, ssh_keys=ssh_keys, wheels=tuple(sorted(wheels)),
                requirements=requirements if wheels else (), pi_release=args.pi_os, pi_python=target_pi.python,
                pi_arch=args.pi_arch, ntp_servers=ntp, login_user=args.login_user,
                password_hash=args.password_hash)
    cfg = parse(controller_ini(card))
    card = replace(card, units_off=pisettings.units_off(cfg))
    try:
        edited = {"config.txt": pisettings.config_txt(boot_files["config.txt"], card.machine_id, cfg),
                  "cmdline.txt": pisettings.cmdline_txt(boot_files["cmdline.txt"], cfg,
                                                        keep_root_size=args.read_only_root)}
    except pisettings.BootFileError as e:
        raise TargetError(f"{target.describe()}: {e}") from None
    files = {"user-data": user_data(card).encode(), "network-config": network_config(card).encode(),
             "meta-data": meta_data(card).encode(),
             f"{BOOT_FOLDER}/{AFTER_FIRST_BOOT}": user_data_after_first_boot(card).encode(),
             f"{BOOT_FOLDER}/{card.wheel}": wheel_bytes, **wheel_files,
             **{name: text.encode() for name, text in edited.items()}}
    if data is None:
        target.write(files, clear=(WHEELS_FOLDER,))
    else:
        folder = os.path.dirname(os.path.abspath(args.image))
        with tempfile.TemporaryDirectory(prefix=".vend-data-", dir=folder) as tmp:
            data.build(tmp)
            data.apply()
            try:
                target.write(files, clear=(WHEELS_FOLDER,))
            except BaseException:
                data.undo()
                raise
    _summary(card, target, args.show_secrets, data)
    return 0


def _broker(option: str | None, mqtt: dict) -> tuple[str, int | None]:
    """The broker's host, and its port if --broker gave one (else the listener for the way of logging in)."""
    if option:
        host, _, port = option.partition(":")
        if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise CardError(f"--broker {option!r}: use HOST or HOST:PORT")
        return host, int(port) if port else None
    if not mqtt["host"]:
        raise CardError("the cloud does not say where machines reach the broker: start vend-cloud with "
                        "--machine-broker HOST, or pass --broker HOST[:PORT]")
    return mqtt["host"], None


def build_wheel(dest: str) -> str:
    """Build the vend-fleet wheel from a clean copy of this source tree (no stale build/ folder in it)."""
    if not os.path.exists(os.path.join(SOURCE_ROOT, "setup.cfg")):
        raise CardError("this vendctl is not running from a source tree: pass --wheel FILE "
                        "(made with: pip wheel --no-deps -w dist .)")
    src = os.path.join(dest, "src")
    os.makedirs(src)
    for part in source_parts(SOURCE_ROOT):
        path = os.path.join(SOURCE_ROOT, part)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(src, part), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dest, src],
                         capture_output=True, text=True)
    wheels = [n for n in os.listdir(dest) if n.endswith(".whl")]
    if out.returncode != 0 or len(wheels) != 1:
        raise CardError(f"building the controller wheel failed: {out.stderr.strip()[-500:]}")
    return os.path.join(dest, wheels[0])


def check_wheel(path: str) -> None:
    """A vend-fleet wheel with the controller and its unit in it."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile) as e:
        raise CardError(f"--wheel {path}: not a wheel ({e})") from None
    if "controller/__main__.py" not in names or not any(n.endswith(UNIT_IN_WHEEL) for n in names):
        raise CardError(f"--wheel {path}: not a vend-fleet wheel with the controller and its systemd unit")


def _summary(card: Card, target, show_secrets: bool, data=None) -> None:
    auth = "client certificate" if card.cert_pem else (f"user {card.mqtt_username}" if card.mqtt_username
                                                       else "no login")
    wifi = f'Wi-Fi "{card.wifi.ssid}" ({card.wifi.country}) and Ethernet' if card.wifi else "Ethernet (DHCP)"
    print(f"provisioned {target.describe()} for machine {card.machine_id}")
    print(f"  host name {card.hostname}; network: {wifi}")
    print(f"  broker {card.mqtt_host}:{card.mqtt_port}, {auth}, {'TLS with the fleet CA' if card.tls else 'no TLS'}")
    if data is None:
        print("  root file system: writable")
    else:
        state = "kept as it was" if data.existing else "new"
        print(f"  root file system: read-only (overlay) after the first boot; the ledger on partition {data.number()} "
              f"(ext4, {datapart.DATA_LABEL}, {datapart.human(data.size)}, {state}); the image is now "
              f"{datapart.human(os.path.getsize(data.image))}, and the root is not grown over the card")
    print(f"  files: user-data, network-config, meta-data, {BOOT_FOLDER}/{card.wheel}; config.txt and "
          "cmdline.txt edited (the hardware's buses, motor pins low from power-on, no console on the screen)")
    login = " and ".join(w for w, on in (("password", card.password_hash), ("SSH key", card.ssh_keys)) if on)
    clock = ", ".join(card.ntp_servers) if card.ntp_servers else "the image's NTP servers"
    print(f"  recovery login: {card.login_user} by {login} over SSH; clock from {clock}")
    if card.wheels:
        print(f"  first boot installs offline: {len(card.wheels)} wheels in {WHEELS_FOLDER}/ for Raspberry Pi OS "
              f"{card.pi_release} {card.pi_arch} (Python {card.pi_python}); no package index, no apt")
    else:
        print("  first boot installs from apt and the package index (--online): the machine needs the internet")
    if show_secrets:
        print(f"QR secret: {card.secret}")
        if card.mqtt_password:
            print(f"broker password: {card.mqtt_password}")
    else:
        print("  the QR secret and broker credentials are on the card, not shown (--show-secrets shows them)")
    print("next: write it to the card, put the card in the machine and power on; the first boot installs the "
          f"controller (a few minutes), then `vendctl machines` shows {card.machine_id} online")
