"""What a machine's SD card carries for its first boot: cloud-init's user-data, network-config and meta-data.

Raspberry Pi OS runs cloud-init on first boot with these files from the FAT boot partition. The user-data
makes the service user, writes /etc/vend/controller.ini (0600, the service user's) and a first-boot script
that installs the controller from the wheel on the boot partition into /opt/vend, enables its unit, and
then replaces the card's user-data with a copy without secrets.
"""

from __future__ import annotations

import configparser
import re
import shlex
from dataclasses import dataclass, field

import yaml

from controller.config import ConfigError, ini_parser, parse
from controller.words import FONT_PACKAGE, FONTS

SERVICE_USER = "vend"
SERVICE_GROUPS = ("gpio", "dialout", "video")  # GPIO lines, the serial motor board, the framebuffer
BOOT_FOLDER = "vend"  # on the boot partition: the wheel, and the user-data without secrets
WHEELS_FOLDER = f"{BOOT_FOLDER}/wheels"  # the offline card's wheelhouse
# The pin library each [gpio] pin_library takes, as Python imports it, and the Raspberry Pi OS package with it.
PIN_LIBRARY_PACKAGES = {"lgpio": ("lgpio", "python3-lgpio"), "rpigpio": ("RPi.GPIO", "python3-rpi-lgpio")}
AFTER_FIRST_BOOT = "user-data.after-first-boot"
HARDWARE_SECTIONS = ("hardware", "gpio", "serial", "thermometer", "screen")
CONFIG_PATH = "/etc/vend/controller.ini"
LEDGER_DIR = "/var/lib/vend"
DATA_LABEL = "vend-data"
# The ledger's partition is mounted by a systemd mount unit, not an /etc/fstab line. raspi-config's
# enable_overlayfs puts "overlayroot=tmpfs " at the start of cmdline.txt, and with that value overlayroot's
# initramfs script (overlayrootify_fstab, recurse defaulting to 1) rewrites every ext4 line of /etc/fstab into an
# overlay over RAM: the ledger would be written to RAM and lost at the next power cut. Spelling it
# "overlayroot=tmpfs:recurse=0" in cmdline.txt avoids that but breaks the servicing steps: disable_overlayfs
# removes only the exact text "overlayroot=tmpfs " and reports success with the overlay still on. A mount unit
# is not in fstab, so overlayroot leaves it alone, and raspi-config never edits it.
DATA_MOUNT_UNIT = "var-lib-vend.mount"
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
COUNTRY_RE = re.compile(r"^[A-Z]{2}\Z")
PSK_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}\Z")
# crypt(3) hashes a Debian login takes: yescrypt ($y$, Debian's default), SHA-512/256 ($6$, $5$), bcrypt ($2b$).
PASSWORD_HASH_RE = re.compile(r"^\$(y|gy|7|6|5|2[aby])\$[./A-Za-z0-9$=]{8,}\Z")
LOGIN_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
NTP_SERVER_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})\Z|^\[?[0-9A-Fa-f:.]+\]?\Z")


class CardError(ValueError):
    """Input that would make a card that cannot work; the text names the option and what is wrong."""


@dataclass(frozen=True)
class Wifi:
    """The Wi-Fi network a machine joins."""

    ssid: str
    password: str
    country: str

    def check(self) -> "Wifi":
        """Itself, if a Raspberry Pi can join with it; CardError naming the option otherwise."""
        if not 1 <= len(self.ssid.encode()) <= 32:
            raise CardError("--wifi-ssid: a Wi-Fi network name is 1-32 bytes")
        if not (PSK_HEX_RE.match(self.password) or (8 <= len(self.password) <= 63 and self.password.isascii()
                                                   and self.password.isprintable())):
            raise CardError(f"--wifi-password: a WPA2 passphrase is 8-63 printable ASCII characters (this one "
                            f"has {len(self.password)}), or 64 hex digits")
        if not COUNTRY_RE.match(self.country):
            raise CardError(f"--wifi-country {self.country!r}: give the two-letter country code (GB, DE, CN, "
                            "US...); a Raspberry Pi keeps Wi-Fi off until it knows its country")
        return self


@dataclass(frozen=True)
class Card:
    """Everything one machine's card says: from the cloud (id, secrets, addresses) and from the technician."""

    machine_id: str
    name: str
    secret: str
    cloud_url: str
    mqtt_host: str
    mqtt_port: int
    hardware: str  # the [hardware], [gpio], ... sections, as the technician's file has them
    hostname: str
    wheel: str  # the wheel's file name in the boot partition's vend/ folder
    instance_id: str
    mqtt_username: str = ""
    mqtt_password: str = ""
    tls: bool = False
    ca_pem: str = ""
    cert_pem: str = ""
    key_pem: str = ""
    wifi: Wifi | None = None
    read_only_root: bool = False
    ssh_keys: tuple[str, ...] = field(default_factory=tuple)
    # The offline card: the wheel files in the boot partition's vend/wheels/ and the requirements installed from
    # them beside the controller's wheel; none: the first boot installs from apt and the package index.
    wheels: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    pi_release: str = ""  # the Raspberry Pi OS release the wheels are for (its Python), and its architecture
    pi_python: str = ""
    pi_arch: str = ""
    # The Pi's own settings (cloud/provisioning/pisettings.py) and the technician's way in.
    ntp_servers: tuple[str, ...] = ()
    login_user: str = "tech"
    password_hash: str = ""
    units_off: tuple[str, ...] = ()


def check_login(user: str, password_hash: str, ssh_keys: tuple[str, ...]) -> None:
    """The technician's recovery login: a password hash or an SSH key (the screen shows no console to log in at)."""
    if not password_hash and not ssh_keys:
        raise CardError("a recovery login is needed: --password-hash HASH (from: openssl passwd -6, or mkpasswd) "
                        "and/or --ssh-key FILE; the machine's screen shows the QR, not a console, so SSH is the "
                        "way in")
    if password_hash and not PASSWORD_HASH_RE.match(password_hash):
        raise CardError("--password-hash: give the hash, not the password (a crypt hash such as $6$... from "
                        "openssl passwd -6, or $y$... from mkpasswd)")
    if not LOGIN_USER_RE.match(user) or user in ("root", SERVICE_USER):
        raise CardError(f"--login-user {user!r}: use 1-32 of a-z, 0-9, '_' and '-', starting with a letter; not "
                        f"root or {SERVICE_USER}")


def check_ntp(servers: list[str]) -> tuple[str, ...]:
    """NTP servers as host names or addresses."""
    for server in servers:
        if not NTP_SERVER_RE.match(server):
            raise CardError(f"--ntp {server!r}: give a host name or an address")
    return tuple(servers)


def check_hostname(name: str) -> str:
    """The host name, if it is one label of a-z, 0-9 and '-'."""
    if not HOSTNAME_RE.match(name):
        raise CardError(f"--hostname {name!r}: use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'")
    return name


def check_hardware(text: str, path: str) -> str:
    """The technician's hardware file: only the sections that describe the machine's wiring."""
    parser = ini_parser()  # the controller's own reading, inline comments and all
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        raise CardError(f"--hardware {path}: {e}") from None
    for section in parser.sections():
        if section not in HARDWARE_SECTIONS:
            raise CardError(f"--hardware {path}: section [{section}] does not belong in a hardware file; it "
                            f"holds {', '.join(f'[{s}]' for s in HARDWARE_SECTIONS)}, and vendctl provision "
                            "writes [machine], [cloud], [mqtt] and [ledger] itself")
    if parser.has_option("hardware", "backend") and parser["hardware"]["backend"].strip() == "sim":
        raise CardError(f"--hardware {path}: [hardware] backend = sim would sell from simulated motors; a card "
                        "for a real machine needs gpio or serial")
    return text


def controller_ini(card: Card) -> str:
    """/etc/vend/controller.ini, checked against the controller's own schema."""
    mqtt = [f"host = {card.mqtt_host}", f"port = {card.mqtt_port}", "protocol = 5"]
    if card.mqtt_username:
        mqtt += [f"username = {card.mqtt_username}", f"password = {card.mqtt_password}"]
    if card.tls:
        mqtt += ["tls = yes", "ca_file = /etc/vend/ca.crt"]
    if card.cert_pem:
        mqtt += ["cert_file = /etc/vend/machine.crt", "key_file = /etc/vend/machine.key"]
    text = "\n".join([
        f"# Machine {card.machine_id}, written by vendctl provision. Keys: controller/config.py SCHEMA.",
        "[machine]", f"id = {card.machine_id}", f"name = {card.name}", f"secret = {card.secret}", "",
        "[cloud]", f"url = {card.cloud_url}", "",
        "[mqtt]", *mqtt, "",
        "[ledger]", f"path = {LEDGER_DIR}/ledger.db", "",
    ]) + "\n" + card.hardware.strip() + "\n"
    try:
        cfg = parse(text, "controller.ini (from the cloud and --hardware)")
    except ConfigError as e:
        raise CardError(str(e)) from None
    if cfg.machine.name != card.name:
        # " ;" and " #" start a comment in the controller's INI files: the machine would show a cut name.
        raise CardError(f"the machine's name {card.name!r} would read back as {cfg.machine.name!r} on the "
                        "machine (' ;' and ' #' start a comment in controller.ini); rename the machine")
    return text


def firstboot_script(card: Card) -> str:
    """The script cloud-init runs once: packages, the controller from the wheel, the unit, then the clean-up."""
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        f"# First boot of vending machine {card.machine_id}, written by vendctl provision. cloud-init runs it",
        "# once; its output is in /var/log/vend-firstboot.log.",
        "set -eu",
        'step() { echo "vend-firstboot: $*"; }',
        "# The network may take a while (Wi-Fi, DHCP): try for five minutes before giving up.",
        'retry() { n=0; until "$@"; do n=$((n + 1)); [ $n -lt 30 ] || return 1; step "again in 10 s: $*"; '
        "sleep 10; done; }",
        "boot=/boot/firmware",
        f'[ -d "$boot/{BOOT_FOLDER}" ] || boot=/boot',
        # cloud-init has applied the card's user-data by now (write_files, users): its copy can go at once,
        # whatever happens below.
        'step "the card\'s user-data without secrets (cloud-init keeps its own copy, for root only)"',
        f'cp "$boot/{BOOT_FOLDER}/{AFTER_FIRST_BOOT}" "$boot/user-data"',
        "sync",
    ]
    if card.wifi:
        lines += ["# A Pi keeps Wi-Fi off until it knows its country.",
                  "command -v raspi-config >/dev/null && raspi-config nonint do_wifi_country "
                  f"{q(card.wifi.country)} || true"]
    lines += _offline_install(card) if card.wheels else _online_install(card)
    lines += [
        "read_only=no",
    ]
    if card.read_only_root:
        lines += [
            f'step "read-only root: the ledger on its own partition, {DATA_LABEL} (made by vendctl provision)"',
            f"if blkid -L {DATA_LABEL} >/dev/null 2>&1; then",
            "  systemctl daemon-reload",
            f"  systemctl enable {DATA_MOUNT_UNIT} && systemctl start {DATA_MOUNT_UNIT} && read_only=yes",
            "fi",
            '[ "$read_only" = yes ] || step "NO partition labelled ' + DATA_LABEL + ' (or it does not mount): the root '
            'file system stays writable"',
        ]
    lines += [
        f"install -d -o {SERVICE_USER} -g {SERVICE_USER} -m 0750 {LEDGER_DIR}",
        'step "the vend-controller unit"',
        "install -m 0644 /opt/vend/share/vend-fleet/systemd/vend-controller.service /etc/systemd/system/",
        "systemctl daemon-reload",
        f"/opt/vend/bin/vend-controller --config {CONFIG_PATH} check",
        *(f"systemctl mask {q(unit)} && {{ systemctl stop {q(unit)} 2>/dev/null || true; }}"
          for unit in card.units_off),
        # enable, then start: the same as `enable --now` on the Pi, and, unlike it, also right in a chroot (an
        # image build, tests/e2e/test_first_boot.py), where systemctl edits the links and skips the start.
        "systemctl enable vend-controller.service",
        "systemctl start vend-controller.service",
    ]
    lines += ["systemctl enable ssh && systemctl start ssh  # the recovery login"]
    if card.read_only_root:
        lines += [
            'if [ "$read_only" = yes ]; then',
            '  step "overlay root: / in RAM over a read-only card; reboot to start it"',
            "  raspi-config nonint enable_overlayfs",
            "  # cmdline.txt as raspi-config wrote it, untouched: its disable_overlayfs removes exactly that text (see",
            "  # DATA_MOUNT_UNIT in vendctl's cloudinit.py). raspi-config installs overlayroot with apt when the image",
            "  # lacks it and goes on if that fails, leaving a token nothing reads: the root would stay writable.",
            "  if dpkg-query -W -f='${Status}' overlayroot 2>/dev/null | grep -q 'ok installed' &&",
            '    grep -q "overlayroot=tmpfs " "$boot/cmdline.txt"; then',
            "    touch /run/vend-reboot",
            "  else",
            '    step "NO overlay: the overlayroot package is not installed (raspi-config fetches it with apt, which '
            'needs the network once): the root file system stays writable"',
            "    raspi-config nonint disable_overlayfs || true",
            "  fi",
            "fi",
        ]
    lines += ['step "done: vend-controller is running"']
    return "\n".join(lines) + "\n"


def data_mount_unit() -> str:
    """The systemd mount unit of the ledger's partition (see DATA_MOUNT_UNIT for why not fstab)."""
    return (f"# The ledger's own partition, written by vendctl provision: kept out of the overlay root.\n"
            "[Unit]\nDescription=The vending ledger's partition\n"
            f"Before=vend-controller.service\n\n[Mount]\nWhat=/dev/disk/by-label/{DATA_LABEL}\n"
            f"Where={LEDGER_DIR}\nType=ext4\nOptions=rw,noatime\n\n"
            "[Install]\nWantedBy=local-fs.target\n# The controller never writes its ledger into RAM instead.\n"
            "RequiredBy=vend-controller.service\n")


def _online_install(card: Card) -> list[str]:
    """Python and the controller from apt and the package index: a card for a site with the internet."""
    return [
        "export DEBIAN_FRONTEND=noninteractive",
        'step "packages: Python, and the Pi\'s own builds of pillow, gpiozero and pyserial"',
        "retry apt-get update -q",
        "apt-get install -y -q --no-install-recommends python3-venv python3-pil python3-gpiozero python3-serial",
        "# lgpio drives a Pi 5's GPIO; a Pi 1-4 does not need it, and an older release may not have it.",
        'apt-get install -y -q --no-install-recommends python3-lgpio || step "no python3-lgpio (only a Pi 5 needs it)"',
        "# The screen's Chinese ([screen] languages = zh_CN): pillow's own font has no CJK glyphs.",
        f'apt-get install -y -q --no-install-recommends {FONT_PACKAGE} || step "no {FONT_PACKAGE}: the screen '
        'shows no Chinese"',
        'step "the controller, from the wheel on the boot partition, into /opt/vend"',
        "python3 -m venv --system-site-packages /opt/vend",
        f'retry /opt/vend/bin/pip install --no-cache-dir "$boot/{BOOT_FOLDER}/{card.wheel}[controller]"',
    ]


def _offline_install(card: Card) -> list[str]:
    """The controller from the wheels on the card: no package index, no apt, no network needed."""
    q = shlex.quote
    fail = 'fail() { step "FAILED: $*"; exit 1; }'
    lines = [
        fail,
        f'step "this card\'s wheels are for Raspberry Pi OS {card.pi_release} {card.pi_arch}, Python {card.pi_python}"',
        'arch=$(dpkg --print-architecture)',
        f'[ "$arch" = {card.pi_arch} ] || fail "this Raspberry Pi OS is $arch; provision the card again with '
        '--pi-arch $arch"',
        "python=$(python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])')",
        f'[ "$python" = {card.pi_python} ] || fail "this Raspberry Pi OS has Python $python, the card\'s wheels are '
        f'for {card.pi_python}; provision the card again with the --pi-os of this image"',
    ]
    machine_cfg = parse(controller_ini(card))
    pin_library = machine_cfg["gpio"]["pin_library"]
    wide = sorted({path for lang in machine_cfg.screen.languages for path in FONTS.get(lang, ())})
    if wide and not machine_cfg.screen.font:
        # Without a package index the card cannot install the font; a screen without it shows English.
        lines += [f"ls {' '.join(wide)} >/dev/null 2>&1 || step \"no font for the screen's Chinese on this image: "
                  f"install {FONT_PACKAGE}, or make an --online card; until then the screen shows English only\""]
    if pin_library in PIN_LIBRARY_PACKAGES:
        module, package = PIN_LIBRARY_PACKAGES[pin_library]
        lines += ["# The pin library comes from the OS (PyPI has no ARM wheel of lgpio), seen through the venv.",
                  f"python3 -c 'import {module}' || fail \"pin_library = {pin_library} needs "
                  f"{package}, which Raspberry Pi OS Lite ships; install it, or make an --online card\""]
    lines += [
        'step "the controller, from the wheels on the boot partition (no package index, no apt), into /opt/vend"',
        "python3 -m venv --system-site-packages /opt/vend || fail \"python3 -m venv failed: the image needs "
        "python3-venv (Raspberry Pi OS has it), or make an --online card\"",
        f'/opt/vend/bin/pip install --no-index --find-links "$boot/{WHEELS_FOLDER}" --no-cache-dir '
        f'"$boot/{BOOT_FOLDER}/{card.wheel}[controller]" {" ".join(q(r) for r in card.requirements)}',
    ]
    return lines


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line text as literal blocks, so a technician can read the user-data."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def _yaml(header: str, obj: dict) -> str:
    return header + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096,
                              allow_unicode=True)


def _identity(card: Card) -> dict:
    return {"hostname": card.hostname, "preserve_hostname": False, "manage_etc_hosts": True}


def user_data(card: Card) -> str:
    """The cloud-config for the first boot (it holds the machine's secrets)."""
    files = [{"path": CONFIG_PATH, "owner": f"{SERVICE_USER}:{SERVICE_USER}", "permissions": "0600",
              "defer": True, "content": controller_ini(card)}]
    if card.ca_pem:
        files.append({"path": "/etc/vend/ca.crt", "permissions": "0644", "content": card.ca_pem})
    if card.cert_pem:
        files += [{"path": "/etc/vend/machine.crt", "owner": f"{SERVICE_USER}:{SERVICE_USER}",
                   "permissions": "0644", "defer": True, "content": card.cert_pem},
                  {"path": "/etc/vend/machine.key", "owner": f"{SERVICE_USER}:{SERVICE_USER}",
                   "permissions": "0600", "defer": True, "content": card.key_pem}]
    files.append({"path": "/usr/local/sbin/vend-firstboot", "permissions": "0755",
                  "content": firstboot_script(card)})
    login = {"name": card.login_user, "gecos": "Technician's recovery login", "shell": "/bin/bash",
             "groups": ["sudo", "adm", "systemd-journal", *SERVICE_GROUPS], "lock_passwd": not card.password_hash,
             # sudo asks for the password when there is one; a key-only login has none to ask for.
             "sudo": "ALL=(ALL) ALL" if card.password_hash else "ALL=(ALL) NOPASSWD:ALL"}
    if card.password_hash:
        login["hashed_passwd"] = card.password_hash
    if card.ssh_keys:
        login["ssh_authorized_keys"] = list(card.ssh_keys)
    config = {**_identity(card), "users": ["default", {
        "name": SERVICE_USER, "gecos": "Vending machine controller", "system": True, "no_create_home": True,
        "homedir": LEDGER_DIR, "shell": "/usr/sbin/nologin", "lock_passwd": True, "groups": list(SERVICE_GROUPS)},
        login], "ssh_pwauth": bool(card.password_hash)}
    if card.ntp_servers:
        # timesyncd is Raspberry Pi OS's own client: cloud-init's default choice would install chrony, from apt.
        config["ntp"] = {"enabled": True, "ntp_client": "systemd-timesyncd", "servers": list(card.ntp_servers)}
    if card.read_only_root:
        # The ledger's partition is on the card after the root: the root must not be grown over it.
        config.update(growpart={"mode": "off"}, resize_rootfs=False)
        files.insert(-1, {"path": f"/etc/systemd/system/{DATA_MOUNT_UNIT}", "permissions": "0644",
                          "content": data_mount_unit()})
    config["write_files"] = files
    config["runcmd"] = [["bash", "-c", "set -o pipefail; /usr/local/sbin/vend-firstboot 2>&1 | "
                         "tee -a /var/log/vend-firstboot.log"]]
    if card.read_only_root:
        config["power_state"] = {"mode": "reboot", "condition": "test -e /run/vend-reboot",
                                 "message": "rebooting into the read-only root"}
    header = (f"#cloud-config\n# Vending machine {card.machine_id}, written by vendctl provision. It holds the "
              "machine's secrets;\n# the first boot replaces it with a copy without them.\n")
    return _yaml(header, config)


def user_data_after_first_boot(card: Card) -> str:
    """What the card's user-data becomes once applied: the host name only (cloud-init sets it every boot)."""
    return _yaml(f"#cloud-config\n# Vending machine {card.machine_id}: applied on its first boot; secrets removed.\n",
                 _identity(card))


def network_config(card: Card) -> str:
    """Netplan v2: Ethernet by DHCP, and the Wi-Fi network when one was given."""
    net: dict = {"version": 2, "ethernets": {"eth0": {"dhcp4": True, "optional": True}}}
    if card.wifi:
        net["wifis"] = {"wlan0": {"dhcp4": True, "optional": True, "regulatory-domain": card.wifi.country,
                                  "access-points": {card.wifi.ssid: {"password": card.wifi.password}}}}
    return _yaml(f"# Machine {card.machine_id}'s network, written by vendctl provision.\n", {"network": net})


def meta_data(card: Card) -> str:
    """A new instance id each time a card is provisioned, so cloud-init runs the first boot again."""
    return _yaml("", {"instance-id": card.instance_id, "local-hostname": card.hostname})
