"""``vendctl provision`` on a Pi-like disk image (MBR, FAT32 boot partition) and on a mounted boot folder,
read back with mtools and checked with cloud-init's own schema, against a real cloud and broker."""

import hashlib
import os
import subprocess

import pytest
import yaml

from cloud.provisioning.cli import build_wheel
from controller.config import parse
from tests.cloud.provisioning.fake_wheels import PILLOW, make_wheelhouse
from tests.fleet_fixtures import SecuredCloud, require_tool

MIB = 1 << 20
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=x rootfstype=ext4 fsck.repair=yes rootwait\n"
PASSWORD_HASH = "$6$rounds=5000$saltsalt$" + "x" * 86  # the shape of openssl passwd -6's output
BOOT_AT = MIB  # the FAT partition starts at sector 2048, as in Raspberry Pi OS images
HARDWARE = """\
[hardware]
backend = gpio
slots = A1, A2, B1, B2
[gpio]
pin_library = lgpio
motor_rows = A:20 B:21
motor_columns = 1:12 2:16
drop_pin = 17
door_pin = 27
[thermometer]
w1_id = 28-0316a2794eff
"""


def mtools_env():
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def make_image(path, fat=True, pi_files=True) -> str:
    """A 96 MiB sparse image: a 64 MiB FAT32 boot partition from sector 2048, then a Linux partition."""
    for tool in ("sfdisk", "mkfs.vfat", "mcopy"):
        require_tool(tool)
    with open(path, "wb") as f:
        f.truncate(96 * MIB)
        f.seek(80 * MIB)
        f.write(b"root file system" * 1000)  # something in partition 2 that must survive
    table = ("label: dos\nstart=2048, size=131072, type=c\nstart=133120, type=83\n" if fat
             else "label: dos\nstart=2048, type=83\n")
    subprocess.run(["sfdisk", "-q", str(path)], input=table, text=True, check=True)
    if fat:
        subprocess.run(["mkfs.vfat", "-F", "32", "--offset", "2048", str(path), "65536"], check=True,
                       capture_output=True)
        if pi_files:
            for name, text in (("config.txt", "arm_64bit=1\n"), ("cmdline.txt", CMDLINE)):
                local = os.path.join(os.path.dirname(path), name)
                with open(local, "w") as f:
                    f.write(text)
                subprocess.run(["mcopy", "-i", f"{path}@@{BOOT_AT}", local, f"::/{name}"], check=True,
                               env=mtools_env())
    return str(path)


def read_back(image, name) -> bytes:
    return subprocess.run(["mtype", "-i", f"{image}@@{BOOT_AT}", f"::/{name}"], capture_output=True, check=True,
                          env=mtools_env()).stdout


def listing(image, folder="::/") -> list[str]:
    out = subprocess.run(["mdir", "-b", "-i", f"{image}@@{BOOT_AT}", folder], capture_output=True, text=True,
                         check=True, env=mtools_env()).stdout
    return sorted(line.rstrip("/").rsplit("/", 1)[-1] for line in out.splitlines() if line.strip())


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cloud_init_schema(path) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("cloud-init"), "schema", "-c", str(path)], capture_output=True, text=True)


def write_file(tmp_path, name, text) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    c = SecuredCloud(str(tmp_path_factory.mktemp("fleet"))).start()
    assert c.vendctl("machines", "add", "m-pi", "--name", "Lobby").returncode == 0
    yield c
    c.stop()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(str(tmp_path_factory.mktemp("wheel")))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """A fake wheelhouse for 64-bit Raspberry Pi OS (Bookworm and Trixie): no test here reaches the index."""
    return make_wheelhouse(str(tmp_path_factory.mktemp("wheelhouse")))


@pytest.fixture
def provision(fleet, wheels):
    """vendctl provision with the fake wheelhouse, never downloading."""
    def run(*args):
        login = () if "--password-hash" in args or "--ssh-key" in args else ("--password-hash", PASSWORD_HASH)
        return fleet.vendctl("provision", *args, *login, "--wheelhouse", wheels, "--no-download")
    return run


@pytest.fixture
def hardware(tmp_path):
    return write_file(tmp_path, "m-pi-hardware.ini", HARDWARE)


def card_config(user_data: dict, path: str) -> dict:
    return next(f for f in user_data["write_files"] if f["path"] == path)


def test_an_image_provisioned_reads_back_as_a_complete_first_boot(fleet, provision, tmp_path, hardware):
    image = make_image(tmp_path / "raspios.img")
    with open(image, "rb") as f:
        f.seek(BOOT_AT + 64 * MIB)
        root_before = hashlib.sha256(f.read()).hexdigest()
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware,
                    "--wifi-ssid", "Shop Floor", "--wifi-password", "correct horse", "--wifi-country", "GB")
    assert out.returncode == 0, out.stderr
    creds = fleet.api("GET", "/api/v1/machines/m-pi/credentials").json()
    assert creds["secret"] not in out.stdout + out.stderr
    assert creds["mqtt"]["password"] not in out.stdout + out.stderr
    assert "provisioned" in out.stdout and "--show-secrets" in out.stdout

    assert listing(image) == sorted(["cmdline.txt", "config.txt", "meta-data", "network-config", "user-data",
                                     "vend"])
    wheels = [n for n in listing(image, "::/vend") if n.endswith(".whl")]
    assert wheels == ["vend_fleet-0.1.0-py3-none-any.whl"]
    # The offline card: the wheels for Trixie on arm64 (the defaults), and no other platform's.
    assert listing(image, "::/vend/wheels") == sorted([
        "gpiozero-2.0.1-py3-none-any.whl", "paho_mqtt-2.2.0-py3-none-any.whl", "pyserial-3.5-py3-none-any.whl",
        "qrcode-8.2-py3-none-any.whl", "sqlite_utils-4.2.1-py3-none-any.whl",
        f"pillow-{PILLOW}-cp313-cp313-manylinux_2_28_aarch64.whl"])
    assert "first boot installs offline: 6 wheels" in out.stdout and "trixie arm64" in out.stdout
    with open(image, "rb") as f:
        f.seek(BOOT_AT + 64 * MIB)
        assert hashlib.sha256(f.read()).hexdigest() == root_before, "the root partition was touched"

    (tmp_path / "user-data").write_bytes(read_back(image, "user-data"))
    schema = cloud_init_schema(tmp_path / "user-data")
    assert schema.returncode == 0 and "Valid cloud-config" in schema.stdout, schema.stdout + schema.stderr
    ud_text = (tmp_path / "user-data").read_text()
    assert ud_text.startswith("#cloud-config\n")
    ud = yaml.safe_load(ud_text)
    assert ud["hostname"] == "vend-m-pi"
    vend_user = next(u for u in ud["users"] if isinstance(u, dict))
    assert vend_user["name"] == "vend" and vend_user["system"] is True
    assert set(vend_user["groups"]) == {"gpio", "dialout", "video"}

    ini = card_config(ud, "/etc/vend/controller.ini")
    assert (ini["permissions"], ini["owner"], ini["defer"]) == ("0600", "vend:vend", True)
    cfg = parse(ini["content"])
    assert cfg["machine"]["id"] == "m-pi" and cfg["machine"]["name"] == "Lobby"
    assert cfg["machine"]["secret"] == creds["secret"]
    assert cfg["cloud"]["url"] == "https://vend.example.com"
    assert (cfg["mqtt"]["host"], cfg["mqtt"]["port"]) == ("localhost", fleet.ports.password)
    assert (cfg["mqtt"]["username"], cfg["mqtt"]["password"]) == ("m-pi.1", creds["mqtt"]["password"])
    assert cfg["mqtt"]["tls"] is True and cfg["mqtt"]["ca_file"] == "/etc/vend/ca.crt"
    assert cfg["gpio"]["drop_pin"] == 17 and cfg["hardware"]["slots"] == ("A1", "A2", "B1", "B2")
    assert card_config(ud, "/etc/vend/ca.crt")["content"] == open(fleet.ca_file).read()

    script = card_config(ud, "/usr/local/sbin/vend-firstboot")
    assert script["permissions"] == "0755"
    (tmp_path / "firstboot").write_text(script["content"])
    syntax = subprocess.run(["sh", "-n", str(tmp_path / "firstboot")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    body = script["content"]
    assert ('/opt/vend/bin/pip install --no-index --find-links "$boot/vend/wheels" --no-cache-dir '
            f'"$boot/vend/{wheels[0]}[controller]" \'gpiozero>=2.0\'') in body
    assert "apt-get" not in body and "retry" not in body.split("python3 -m venv")[1], "the offline card needs no network"
    assert "python3 -m venv --system-site-packages /opt/vend" in body  # the pin libraries are the OS's
    assert "python3 -c 'import lgpio' || fail" in body  # pin_library = lgpio, from python3-lgpio
    assert '[ "$arch" = arm64 ] || fail' in body and '[ "$python" = 3.13 ] || fail' in body
    assert "systemctl enable vend-controller.service\nsystemctl start vend-controller.service" in body
    assert "/usr/local/sbin/vend-firstboot" in ud["runcmd"][0][2]
    # The card's secrets go first, before anything that can fail.
    assert body.index('cp "$boot/vend/user-data.after-first-boot" "$boot/user-data"') < body.index("python3 -m venv")
    after = yaml.safe_load(read_back(image, "vend/user-data.after-first-boot"))
    assert after == {"hostname": "vend-m-pi", "preserve_hostname": False, "manage_etc_hosts": True}

    net = yaml.safe_load(read_back(image, "network-config"))["network"]
    wlan = net["wifis"]["wlan0"]
    assert wlan["access-points"] == {"Shop Floor": {"password": "correct horse"}}
    assert wlan["regulatory-domain"] == "GB" and net["ethernets"]["eth0"]["dhcp4"] is True
    meta = yaml.safe_load(read_back(image, "meta-data"))
    assert meta["local-hostname"] == "vend-m-pi" and meta["instance-id"].startswith("vend-m-pi-")

    # What the card says works against the real broker: its user, its password, its CA.
    (tmp_path / "card-ca.crt").write_text(card_config(ud, "/etc/vend/ca.crt")["content"])
    c = fleet.client("m-pi", cfg["mqtt"]["username"], cfg["mqtt"]["password"], port=cfg["mqtt"]["port"],
                     ca=str(tmp_path / "card-ca.crt"))
    assert c.accepted
    c.close()


def test_provisioning_again_makes_a_new_instance_and_the_wheel_is_the_one_given(fleet, provision, tmp_path, hardware, wheel):
    image = make_image(tmp_path / "raspios.img")
    ids = []
    for _ in range(2):
        out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel)
        assert out.returncode == 0, out.stderr
        ids.append(yaml.safe_load(read_back(image, "meta-data"))["instance-id"])
    assert ids[0] != ids[1]
    assert read_back(image, "vend/vend_fleet-0.1.0-py3-none-any.whl") == open(wheel, "rb").read()
    assert "wifis" not in yaml.safe_load(read_back(image, "network-config"))["network"]


def test_a_card_for_bookworm_replaces_the_trixie_wheels(fleet, provision, tmp_path, hardware, wheel):
    image = make_image(tmp_path / "raspios.img")
    assert provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel).returncode == 0
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel,
                    "--pi-os", "bookworm")
    assert out.returncode == 0, out.stderr
    pillow = [n for n in listing(image, "::/vend/wheels") if n.startswith("pillow")]
    assert pillow == [f"pillow-{PILLOW}-cp311-cp311-manylinux_2_28_aarch64.whl"]
    script = card_config(yaml.safe_load(read_back(image, "user-data")), "/usr/local/sbin/vend-firstboot")["content"]
    assert '[ "$python" = 3.11 ] || fail' in script


def test_an_online_card_installs_from_apt_and_the_index(fleet, provision, tmp_path, hardware, wheel):
    image = make_image(tmp_path / "raspios.img")
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel, "--online",
                    "--wifi-ssid", "Shop", "--wifi-password", "long enough", "--wifi-country", "GB")
    assert out.returncode == 0, out.stderr
    assert "installs from apt and the package index (--online)" in out.stdout
    assert "wheels" not in listing(image, "::/vend")
    body = card_config(yaml.safe_load(read_back(image, "user-data")), "/usr/local/sbin/vend-firstboot")["content"]
    assert f'retry /opt/vend/bin/pip install --no-cache-dir "$boot/vend/{os.path.basename(wheel)}[controller]"' in body
    # The card's secrets go first, before anything that can fail; Wi-Fi's country before the network is needed.
    assert body.index('cp "$boot/vend/user-data.after-first-boot" "$boot/user-data"') < body.index("apt-get")
    assert body.index("do_wifi_country GB") < body.index("apt-get")
    # The font of the screen's Chinese ([screen] languages = zh_CN), from Raspberry Pi OS's own packages.
    assert "apt-get install -y -q --no-install-recommends fonts-wqy-microhei" in body


def test_an_offline_card_for_a_chinese_screen_says_when_the_image_has_no_chinese_font(fleet, provision, tmp_path,
                                                                                     wheel):
    image = make_image(tmp_path / "raspios.img")
    hardware = write_file(tmp_path, "zh-hardware.ini", HARDWARE + "[screen]\nlanguages = zh_CN, en\n")
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel)
    assert out.returncode == 0, out.stderr
    ud = yaml.safe_load(read_back(image, "user-data"))
    assert "languages = zh_CN, en" in card_config(ud, "/etc/vend/controller.ini")["content"]
    body = card_config(ud, "/usr/local/sbin/vend-firstboot")["content"]
    assert "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc" in body
    assert "install fonts-wqy-microhei, or make an --online card; until then the screen shows English only" in body
    assert "apt-get" not in body


def test_a_mounted_boot_folder_gets_the_files_with_mode_0600(fleet, provision, tmp_path, hardware, wheel):
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    (boot / "cmdline.txt").write_text("console=serial0,115200 console=tty1 root=PARTUUID=x rootwait\n")
    out = provision("--machine", "m-pi", "--boot-dir", str(boot), "--hardware", hardware,
                        "--wheel", wheel, "--hostname", "lobby-7", "--show-secrets")
    assert out.returncode == 0, out.stderr
    creds = fleet.api("GET", "/api/v1/machines/m-pi/credentials").json()
    assert f"QR secret: {creds['secret']}" in out.stdout
    assert f"broker password: {creds['mqtt']['password']}" in out.stdout
    for name in ("user-data", "network-config", "meta-data"):
        assert (boot / name).stat().st_mode & 0o777 == 0o600, name
    assert sorted(os.listdir(boot)) == ["cmdline.txt", "config.txt", "meta-data", "network-config", "user-data",
                                        "vend"]
    schema = cloud_init_schema(boot / "user-data")
    assert schema.returncode == 0, schema.stdout + schema.stderr
    assert yaml.safe_load((boot / "user-data").read_text())["hostname"] == "lobby-7"


def test_read_only_root_puts_the_ledger_on_its_own_partition(fleet, provision, tmp_path, hardware, wheel):
    image = make_image(tmp_path / "raspios.img")
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware,
                        "--wheel", wheel, "--read-only-root")
    assert out.returncode == 0, out.stderr
    (tmp_path / "user-data").write_bytes(read_back(image, "user-data"))
    assert cloud_init_schema(tmp_path / "user-data").returncode == 0
    ud = yaml.safe_load((tmp_path / "user-data").read_text())
    assert ud["growpart"] == {"mode": "off"} and ud["resize_rootfs"] is False
    assert ud["power_state"]["mode"] == "reboot"
    script = card_config(ud, "/usr/local/sbin/vend-firstboot")["content"]
    (tmp_path / "firstboot").write_text(script)
    assert subprocess.run(["sh", "-n", str(tmp_path / "firstboot")]).returncode == 0
    for expected in ("blkid -L vend-data", "systemctl start var-lib-vend.mount",
                     "raspi-config nonint enable_overlayfs"):
        assert expected in script
    # The overlay comes only after the ledger's partition is mounted, and after the controller is set up.
    assert script.index("var-lib-vend.mount") < script.index("enable_overlayfs")


def test_a_client_certificate_instead_of_a_password(fleet, provision, tmp_path, hardware, wheel):
    image = make_image(tmp_path / "raspios.img")
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware,
                        "--wheel", wheel, "--auth", "certificate")
    assert out.returncode == 0, out.stderr
    assert "BEGIN PRIVATE KEY" not in out.stdout
    (tmp_path / "user-data").write_bytes(read_back(image, "user-data"))
    assert cloud_init_schema(tmp_path / "user-data").returncode == 0
    ud = yaml.safe_load((tmp_path / "user-data").read_text())
    cfg = parse(card_config(ud, "/etc/vend/controller.ini")["content"])
    assert (cfg["mqtt"]["username"], cfg["mqtt"]["password"]) == ("", "")
    assert cfg["mqtt"]["port"] == fleet.ports.certificate
    assert (cfg["mqtt"]["cert_file"], cfg["mqtt"]["key_file"]) == ("/etc/vend/machine.crt", "/etc/vend/machine.key")
    key = card_config(ud, "/etc/vend/machine.key")
    assert (key["permissions"], key["owner"]) == ("0600", "vend:vend")
    for name in ("ca.crt", "machine.crt", "machine.key"):
        (tmp_path / name).write_text(card_config(ud, f"/etc/vend/{name}")["content"])
    cloud = fleet.client("cloud-watch", "vend_cloud", open(os.path.join(fleet.var, "mqtt-password")).read().strip())
    cloud.subscribe("vend/v1/+/status")
    c = fleet.client("m-pi", port=cfg["mqtt"]["port"], ca=str(tmp_path / "ca.crt"),
                     cert=(str(tmp_path / "machine.crt"), str(tmp_path / "machine.key")))
    assert c.accepted
    c.publish("vend/v1/m-pi/status", b"online by certificate")
    assert cloud.received("vend/v1/m-pi/status") == [("vend/v1/m-pi/status", b"online by certificate")]
    assert c.publish_refused("vend/v1/m-new/status", b"someone else")
    cloud.close()


def _no_fat(tmp_path):
    return make_image(tmp_path / "linux-only.img", fat=False)


def _not_an_image(tmp_path):
    path = tmp_path / "notes.img"
    path.write_bytes(os.urandom(4096))
    return str(path)


def _xz(tmp_path):
    path = tmp_path / "raspios.img.xz"
    path.write_bytes(b"\xfd7zXZ\x00" + os.urandom(4096))
    return str(path)


def _no_pi_files(tmp_path):
    return make_image(tmp_path / "blank-fat.img", pi_files=False)


def _read_only(tmp_path):
    path = make_image(tmp_path / "raspios.img")
    os.chmod(path, 0o444)
    return path


@pytest.mark.parametrize("make, extra, error", [
    (_no_fat, (), "has no FAT partition (partitions: 1 (type 0x83))"),
    (_not_an_image, (), "has no partition table"),
    (_xz, (), "is compressed with xz"),
    (_no_pi_files, (), "has no config.txt or cmdline.txt"),
    (_read_only, (), "is read-only (mode 0444)"),
    (None, ("--machine", "ghost"), "no machine 'ghost' in the cloud"),
    (None, ("--wifi-ssid", "Shop", "--wifi-password", "short", "--wifi-country", "GB"),
     "8-63 printable ASCII characters (this one has 5)"),
    (None, ("--wifi-ssid", "Shop", "--wifi-password", "long enough"), "needs all three"),
    (None, ("--wifi-ssid", "Shop", "--wifi-password", "long enough", "--wifi-country", "uk"),
     "two-letter country code"),
    (None, ("--hostname", "Bad_Host"), "--hostname 'Bad_Host': use 1-63 of a-z"),
    (None, ("--broker", "host:99999"), "use HOST or HOST:PORT"),
    (None, ("--hardware", "[mqtt]\nhost = evil\n"), "section [mqtt] does not belong"),
    (None, ("--hardware", HARDWARE.replace("door_pin = 27", "door_pin = 20")),
     "GPIO 20 is used twice: by motor_rows A and by door_pin"),
    (None, ("--hardware", "[hardware]\nbackend = sim\nslots = A1\n"), "backend = sim would sell"),
    (None, ("--hardware", HARDWARE.replace("drop_pin = 17\n", "")), "drop_pin is required"),
    (None, ("--ssh-key", "not a key"), "not an OpenSSH public key"),
    (None, ("--password-hash", "hunter2hunter2"), "--password-hash: give the hash, not the password"),
    (None, ("--ntp", "time server"), "--ntp 'time server': give a host name or an address"),
    (None, ("--hardware", HARDWARE.replace("door_pin = 27", "door_pin = 4")),
     "door_pin: GPIO 4 is taken by the 1-wire bus of [thermometer] w1_id"),
    (None, ("--pi-arch", "armhf"), "has no wheel of pillow>=10.1 (from vend-fleet[controller]) for Raspberry Pi OS "
     "trixie armhf (CPython 3.13, armv7l)"),
])
def test_bad_input_is_named_and_the_image_is_left_as_it_was(fleet, provision, tmp_path, hardware, wheel, make, extra, error):
    image = make(tmp_path) if make else make_image(tmp_path / "raspios.img")
    before = sha256(image)
    args = {"--machine": "m-pi", "--hardware": hardware}
    rest = []
    it = iter(extra)
    for option in it:
        value = next(it)
        if option in ("--hardware", "--ssh-key"):
            value = write_file(tmp_path, option.strip("-") + ".txt", value)
        if option in args:
            args[option] = value
        else:
            rest += [option, value]
    argv = [a for pair in args.items() for a in pair] + rest
    out = provision("--image", image, "--wheel", wheel, *argv)
    assert out.returncode == 1, out.stdout
    assert error in out.stderr and "Nothing was written" in out.stderr, out.stderr
    assert out.stdout == ""
    assert sha256(image) == before


def test_a_read_only_boot_folder_is_refused_and_left_as_it_was(fleet, provision, tmp_path, hardware, wheel):
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    boot.chmod(0o555)
    try:
        out = provision("--machine", "m-pi", "--boot-dir", str(boot), "--hardware", hardware,
                            "--wheel", wheel)
    finally:
        boot.chmod(0o755)
    assert out.returncode == 1 and "boot folder" in out.stderr and "is read-only (mode 0555)" in out.stderr
    assert os.listdir(boot) == ["config.txt"]


def test_a_folder_that_is_not_a_boot_partition_is_refused(fleet, provision, tmp_path, hardware, wheel):
    out = provision("--machine", "m-pi", "--boot-dir", str(tmp_path), "--hardware", hardware,
                        "--wheel", wheel)
    assert out.returncode == 1 and "is not a Raspberry Pi OS boot partition" in out.stderr
    assert sorted(os.listdir(tmp_path)) == ["m-pi-hardware.ini"]
