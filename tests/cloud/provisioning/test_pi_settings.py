"""The Raspberry Pi's own settings on a provisioned card (issue 17 item 2), read back from the image with mtools:
config.txt and cmdline.txt from the hardware file, the NTP servers, the recovery login, the console off the
screen."""

import subprocess

import yaml

from tests.cloud.provisioning.test_provision import (  # noqa: F401  (fixtures: one cloud for this module too)
    CMDLINE, HARDWARE, PASSWORD_HASH, card_config, cloud_init_schema, fleet, make_image, provision, read_back, wheel,
    wheels, write_file)

SERIAL = """\
[hardware]
backend = serial
slots = A1, A2
[serial]
port = /dev/serial0
"""
BLOCK_START = "# vend-fleet: begin."


def user_data(image, tmp_path):
    path = tmp_path / "user-data"
    path.write_bytes(read_back(image, "user-data"))
    schema = cloud_init_schema(path)
    assert schema.returncode == 0 and "Valid cloud-config" in schema.stdout, schema.stdout + schema.stderr
    return yaml.safe_load(path.read_text())


def block(config_txt: str) -> list[str]:
    """The lines of the card's own block in config.txt, comments left out."""
    start = config_txt.index(BLOCK_START)
    return [line for line in config_txt[start:].splitlines() if line and not line.startswith("#")]


def test_a_gpio_machine_gets_its_1wire_bus_motor_pins_low_clock_and_login(fleet, provision, tmp_path, wheel):
    image = make_image(tmp_path / "raspios.img")
    hardware = write_file(tmp_path, "hw.ini", HARDWARE + "w1_pin = 22\n")
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel,
                    "--ntp", "ntp1.example.net", "--ntp", "10.0.0.1", "--login-user", "fixer")
    assert out.returncode == 0, out.stderr
    assert "recovery login: fixer by password over SSH; clock from ntp1.example.net, 10.0.0.1" in out.stdout

    config = read_back(image, "config.txt").decode()
    assert config.startswith("arm_64bit=1\n"), "the image's own settings stay"
    # Motors (rows 20, 21, columns 12, 16) driven low by the firmware from power-on; 1-wire on its pin; no UART.
    assert block(config) == ["[all]", "gpio=20,21,12,16=op,dl", "dtoverlay=w1-gpio,gpiopin=22", "[all]"]
    assert "enable_uart" not in config
    # The GPIO machine's cmdline keeps the serial console (no UART in use), and the screen loses its console.
    assert read_back(image, "cmdline.txt").decode() == CMDLINE.strip() + " fbcon=map:9 vt.global_cursor_default=0\n"

    ud = user_data(image, tmp_path)
    assert ud["ntp"] == {"enabled": True, "ntp_client": "systemd-timesyncd",
                         "servers": ["ntp1.example.net", "10.0.0.1"]}
    login = next(u for u in ud["users"] if isinstance(u, dict) and u["name"] == "fixer")
    assert login["hashed_passwd"] == PASSWORD_HASH and login["lock_passwd"] is False
    assert "sudo" in login["groups"] and login["sudo"] == "ALL=(ALL) ALL"
    assert ud["ssh_pwauth"] is True
    script = card_config(ud, "/usr/local/sbin/vend-firstboot")["content"]
    assert "systemctl mask getty@tty1.service && { systemctl stop getty@tty1.service" in script
    assert "hciuart" not in script
    assert script.index("mask getty@tty1") < script.index("systemctl enable vend-controller")
    assert "systemctl enable ssh && systemctl start ssh" in script


def test_a_serial_board_on_the_headers_uart_gets_the_uart_free(fleet, provision, tmp_path, wheel):
    image = make_image(tmp_path / "raspios.img")
    hardware = write_file(tmp_path, "hw.ini", SERIAL)
    key = write_file(tmp_path, "id.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 tech@laptop\n")
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel,
                    "--ssh-key", key)
    assert out.returncode == 0, out.stderr
    config = read_back(image, "config.txt").decode()
    assert block(config) == ["[all]", "enable_uart=1", "[pi0w]", "dtoverlay=disable-bt", "[pi02]",
                             "dtoverlay=disable-bt", "[pi3]", "dtoverlay=disable-bt", "[pi4]", "dtoverlay=disable-bt",
                             "[pi5]", "dtparam=uart0=on", "[all]"]
    cmdline = read_back(image, "cmdline.txt").decode()
    assert cmdline == ("console=tty1 root=PARTUUID=x rootfstype=ext4 fsck.repair=yes rootwait fbcon=map:9 "
                       "vt.global_cursor_default=0\n"), "no login console left on the motor board's UART"
    ud = user_data(image, tmp_path)
    login = next(u for u in ud["users"] if isinstance(u, dict) and u["name"] == "tech")
    assert login["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 tech@laptop"]
    assert login["lock_passwd"] is True and login["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and ud["ssh_pwauth"] is False
    script = card_config(ud, "/usr/local/sbin/vend-firstboot")["content"]
    assert "systemctl mask hciuart.service && { systemctl stop hciuart.service 2>/dev/null || true; }" in script


def test_provisioning_again_replaces_the_block_and_the_words(fleet, provision, tmp_path, wheel):
    image = make_image(tmp_path / "raspios.img")
    gpio = write_file(tmp_path, "gpio.ini", HARDWARE)
    serial = write_file(tmp_path, "serial.ini", SERIAL)
    for hardware in (serial, gpio, gpio):
        out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel)
        assert out.returncode == 0, out.stderr
    config = read_back(image, "config.txt").decode()
    assert config.count(BLOCK_START) == 1 and "enable_uart" not in config
    assert block(config) == ["[all]", "gpio=20,21,12,16=op,dl", "dtoverlay=w1-gpio,gpiopin=4", "[all]"]
    cmdline = read_back(image, "cmdline.txt").decode()
    assert cmdline.count("fbcon=") == 1 and cmdline.count("vt.global_cursor_default") == 1


def test_no_recovery_login_is_refused_and_nothing_written(fleet, tmp_path, wheel, wheels):
    image = make_image(tmp_path / "raspios.img")
    before = open(image, "rb").read()
    out = fleet.vendctl("provision", "--machine", "m-pi", "--image", image, "--wheel", wheel,
                        "--hardware", write_file(tmp_path, "hw.ini", HARDWARE), "--wheelhouse", wheels, "--no-download")
    assert out.returncode == 1
    assert "a recovery login is needed: --password-hash HASH" in out.stderr and "Nothing was written" in out.stderr
    assert open(image, "rb").read() == before


def test_a_boot_partition_without_cmdline_txt_is_refused(fleet, provision, tmp_path, wheel):
    image = make_image(tmp_path / "raspios.img")
    subprocess.run(["mdel", "-i", f"{image}@@{1 << 20}", "::/cmdline.txt"], check=True,
                   env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    before = open(image, "rb").read()
    out = provision("--machine", "m-pi", "--image", image, "--wheel", wheel,
                    "--hardware", write_file(tmp_path, "hw.ini", HARDWARE))
    assert out.returncode == 1 and "has no cmdline.txt" in out.stderr, out.stderr
    assert open(image, "rb").read() == before
