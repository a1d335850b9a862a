"""``vendctl provision --read-only-root``: the ledger's partition made in the image at provisioning time (read back
with sfdisk, blkid and dumpe2fs), the root no longer grown by Raspberry Pi OS, and the README's servicing steps
(raspi-config's disable_overlayfs, an update, enable_overlayfs) replayed on the card's files."""

import json
import os
import re
import subprocess

import pytest
import yaml

from cloud.provisioning.cloudinit import data_mount_unit
from cloud.provisioning.datapart import DataPartition
from tests.cloud.provisioning.test_provision import (BOOT_AT, MIB, card_config, fleet, hardware,  # noqa: F401
                                                     make_image, mtools_env, provision, read_back, sha256, wheel,
                                                     wheels)
from tests.cloud.provisioning.test_systemd import copy_with_stub_programs, verify
from tests.fleet_fixtures import require_tool

GIB = 1 << 30
ROOT_DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "..")
# cmdline.txt as Raspberry Pi OS images have it: Bookworm's first-boot init and Trixie's ``resize`` grow the root.
PI_CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait "
              "quiet init=/usr/lib/raspberrypi-sys-mods/firstboot resize cfg80211.ieee80211_regdom=GB\n")


def pi_image(tmp_path) -> str:
    image = make_image(tmp_path / "raspios.img")
    local = tmp_path / "cmdline.txt"
    local.write_text(PI_CMDLINE)
    subprocess.run(["mcopy", "-o", "-i", f"{image}@@{BOOT_AT}", str(local), "::/cmdline.txt"], check=True,
                   env=mtools_env())
    return image


def partitions(image) -> list[dict]:
    out = subprocess.run([require_tool("sfdisk"), "--json", image], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["partitiontable"]["partitions"]


def probe(image, offset) -> dict:
    """blkid's low-level probe of what is at ``offset`` in the image."""
    out = subprocess.run([require_tool("blkid"), "-p", "-O", str(offset), "-o", "export", image],
                         capture_output=True, text=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def superblock(image, offset) -> dict:
    out = subprocess.run([require_tool("dumpe2fs"), "-h", f"{image}?offset={offset}"], capture_output=True,
                         text=True, check=True)
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.stdout.splitlines()) if v}


def test_the_image_gets_the_ledgers_partition_and_the_root_is_not_grown(provision, tmp_path, hardware, wheel):
    image = pi_image(tmp_path)
    with open(image, "rb") as f:
        f.seek(133120 * 512)
        root_before = f.read()
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel,
                    "--read-only-root")
    assert out.returncode == 0, out.stderr
    assert "the ledger on partition 3 (ext4, vend-data, 1 GiB, new)" in out.stdout
    parts = partitions(image)
    assert [(p["start"], p["type"]) for p in parts[:2]] == [(2048, "c"), (133120, "83")]
    data = parts[2]
    assert (data["start"], data["size"], data["type"]) == (96 * MIB // 512, GIB // 512, "83")
    assert os.path.getsize(image) == 96 * MIB + GIB
    offset = data["start"] * 512
    found = probe(image, offset)
    assert (found["TYPE"], found["LABEL"]) == ("ext4", "vend-data"), found
    sb = superblock(image, offset)
    assert sb["Filesystem volume name"] == "vend-data" and sb["Filesystem state"] == "clean"
    assert int(sb["Block count"]) * int(sb["Block size"]) == GIB
    check = subprocess.run([require_tool("e2fsck"), "-fn", f"{image}?offset={offset}"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    with open(image, "rb") as f:
        f.seek(133120 * 512)
        assert f.read(len(root_before)) == root_before  # the root file system is as it was

    # Nothing on the card grows the root over the partition any more; the rest of the line is kept.
    cmdline = read_back(image, "cmdline.txt").decode()
    words = cmdline.split()
    assert "resize" not in words and not any(w.startswith("init=") for w in words), cmdline
    for kept in ("root=PARTUUID=4e639091-02", "rootwait", "fsck.repair=yes", "cfg80211.ieee80211_regdom=GB"):
        assert kept in words

    ud = yaml.safe_load(read_back(image, "user-data"))
    assert ud["growpart"] == {"mode": "off"} and ud["resize_rootfs"] is False
    unit = card_config(ud, "/etc/systemd/system/var-lib-vend.mount")["content"]
    assert "What=/dev/disk/by-label/vend-data" in unit and "Where=/var/lib/vend" in unit
    script = card_config(ud, "/usr/local/sbin/vend-firstboot")["content"]
    (tmp_path / "firstboot").write_text(script)
    assert subprocess.run(["sh", "-n", str(tmp_path / "firstboot")]).returncode == 0
    # The first boot makes no partition (there is no room on a grown card) and writes no fstab line for it.
    for gone in ("sfdisk", "mkfs", "/etc/fstab", "recurse=0"):
        assert gone not in script, gone
    assert script.index("systemctl start var-lib-vend.mount") < script.index("nonint enable_overlayfs")
    # An image without the overlayroot package keeps a writable root, and says so, rather than a token nothing reads.
    assert "dpkg-query -W -f='${Status}' overlayroot" in script and "NO overlay" in script

    # Provisioned again: the same partition, file system and all (a ledger is never formatted away).
    uuid = found["UUID"]
    again = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel,
                      "--read-only-root")
    assert again.returncode == 0, again.stderr
    assert "kept as it was" in again.stdout
    assert partitions(image) == parts and os.path.getsize(image) == 96 * MIB + GIB
    assert probe(image, offset)["UUID"] == uuid


def test_the_data_size_is_the_technicians(provision, tmp_path, hardware, wheel):
    image = pi_image(tmp_path)
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel,
                    "--read-only-root", "--data-size", "256M", "--card-size", "4G")
    assert out.returncode == 0, out.stderr
    assert partitions(image)[2]["size"] == 256 * MIB // 512
    assert probe(image, 96 * MIB)["LABEL"] == "vend-data"


# --- the servicing steps, with raspi-config's own edits -----------------------------------------------------------
#
# raspi-config (RPi-Distro/raspi-config) as Raspberry Pi OS Bookworm and Trixie ship it: do_overlayfs calls
# enable_overlayfs, which puts "overlayroot=tmpfs " in front of cmdline.txt's line (sed "s/^/overlayroot=tmpfs /"),
# and disable_overlayfs, which removes exactly that text (sed "s/\(.*\)overlayroot=tmpfs \(.*\)/\1\2/");
# get_overlay_conf reports the overlay as set while cmdline.txt holds "overlayroot=". Its older form (the copy of
# the script in the public code index, before overlayroot) used "boot=overlay " the same way and deleted every
# config.txt line containing "initramfs" (sed "/initramfs.*/d") before adding its own "initramfs" line.

def enable_overlayfs(cmdline: str, config: str, token="overlayroot=tmpfs") -> tuple[str, str]:
    if token == "boot=overlay":
        config = "".join(line for line in config.splitlines(True) if "initramfs" not in line)
        config += "initramfs initrd.img-6.1.21-v8+-overlay\n"
        if "boot=overlay" in cmdline:
            return cmdline, config
    return f"{token} {cmdline}", config


def disable_overlayfs(cmdline: str, config: str, token="overlayroot=tmpfs") -> tuple[str, str]:
    if token == "boot=overlay":
        config = "".join(line for line in config.splitlines(True) if "initramfs" not in line)
    return re.sub(rf"^(.*){re.escape(token)} (.*)$", r"\1\2", cmdline, flags=re.M), config


def overlay_set(cmdline: str, token="overlayroot=tmpfs") -> bool:
    return token.split("=")[0] + "=" in cmdline


def fstab_lines_overlaid(fstab: str) -> list[str]:
    """What overlayroot's overlayrootify_fstab (recurse=1, the default with "overlayroot=tmpfs") turns into an
    overlay over RAM: every line but comments, swap, vfat and virtual file systems."""
    wrapped = []
    for line in fstab.splitlines():
        fields = line.split()
        if len(fields) < 6 or line.lstrip().startswith("#") or fields[2] in ("vfat", "fat", "swap", "proc", "sysfs",
                                                                            "tmpfs", "devpts"):
            continue
        wrapped.append(fields[1])
    return wrapped


@pytest.mark.parametrize("token", ["overlayroot=tmpfs", "boot=overlay"])
def test_the_readmes_servicing_steps_with_raspi_configs_edits(provision, tmp_path, hardware, wheel, token):
    image = pi_image(tmp_path)
    out = provision("--machine", "m-pi", "--image", image, "--hardware", hardware, "--wheel", wheel,
                    "--read-only-root")
    assert out.returncode == 0, out.stderr
    cmdline, config = read_back(image, "cmdline.txt").decode(), read_back(image, "config.txt").decode()
    ud = yaml.safe_load(read_back(image, "user-data"))
    script = card_config(ud, "/usr/local/sbin/vend-firstboot")["content"]
    unit = card_config(ud, "/etc/systemd/system/var-lib-vend.mount")["content"]

    # The first boot: raspi-config nonint enable_overlayfs, and nothing of ours edits what it wrote.
    assert "raspi-config nonint enable_overlayfs" in script
    after_script = script[script.index("raspi-config nonint enable_overlayfs"):]
    commands = [line.strip() for line in after_script.splitlines()[1:] if not line.strip().startswith("#")]
    assert not any("sed " in c or ("cmdline.txt" in c and not c.startswith("grep -q")) for c in commands), commands
    on = enable_overlayfs(cmdline, config, token)
    assert overlay_set(on[0], token) and on[0].count(token.split("=")[0] + "=") == 1

    # The ledger's partition is not an fstab line, so the overlay leaves it the real, writable ext4.
    pi_fstab = "proc /proc proc defaults 0 0\nPARTUUID=4e639091-01 /boot/firmware vfat defaults 0 2\n" \
               "PARTUUID=4e639091-02 / ext4 defaults,noatime 0 1\n"
    assert "/var/lib/vend" not in fstab_lines_overlaid(pi_fstab)
    mount = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert (mount["Type"], mount["Where"], mount["Options"].split(",")[0]) == ("ext4", "/var/lib/vend", "rw")
    assert mount["What"] == "/dev/disk/by-label/vend-data" and probe(image, 96 * MIB)["LABEL"] == "vend-data"

    # Servicing: disable_overlayfs, reboot, update, enable_overlayfs, reboot.
    off = disable_overlayfs(*on, token=token)
    assert not overlay_set(off[0], token), off[0]
    assert off[0] == cmdline  # exactly the card as provisioned: writable, and still no resize
    assert "# vend-fleet: begin" in off[1] and "# vend-fleet: end" in off[1]  # our config.txt block survives
    again = enable_overlayfs(*off, token=token)
    assert again == on
    # The mount unit is untouched by either (raspi-config edits only cmdline.txt, config.txt and fstab's /boot).
    assert "overlayroot" not in unit and "ro," not in unit

    # The README says these steps, in this order.
    with open(os.path.join(ROOT_DOCS, "docs", "deploying.md")) as f:
        docs = f.read()
    steps = [docs.index(s) for s in ("sudo raspi-config nonint disable_overlayfs", "sudo reboot",
                                     "sudo raspi-config nonint enable_overlayfs")]
    assert steps == sorted(steps)


def test_the_old_recurse_spelling_would_have_left_the_overlay_on():
    """Why the card keeps raspi-config's own spelling: with ":recurse=0" appended, disable_overlayfs finds no
    "overlayroot=tmpfs " to remove and the overlay stays on."""
    on, _ = enable_overlayfs(PI_CMDLINE, "")
    patched = on.replace("overlayroot=tmpfs ", "overlayroot=tmpfs:recurse=0 ")
    assert overlay_set(disable_overlayfs(patched, "")[0])


def _image_unchanged_after(provision, tmp_path, hardware, wheel, *args):
    image = pi_image(tmp_path)
    before = sha256(image), os.path.getsize(image)
    out = provision("--machine", "m-pi", "--hardware", hardware, "--wheel", wheel, "--image", image,
                    "--read-only-root", *args)
    assert out.returncode == 1 and out.stdout == "", out.stdout
    assert (sha256(image), os.path.getsize(image)) == before
    assert "Nothing was written" in out.stderr
    return out.stderr


def test_a_card_too_small_is_refused_naming_the_sizes(provision, tmp_path, hardware, wheel):
    err = _image_unchanged_after(provision, tmp_path, hardware, wheel, "--card-size", "512M")
    assert ("the card (512 MiB, --card-size) is too small: the image takes 96 MiB and the ledger's partition "
            "1 GiB (--data-size), 1.1 GiB in all") in err


def test_a_data_partition_too_small_is_refused(provision, tmp_path, hardware, wheel):
    err = _image_unchanged_after(provision, tmp_path, hardware, wheel, "--data-size", "16M")
    assert "--data-size 16 MiB is too small: the ledger's partition needs at least 64 MiB" in err


def test_a_size_that_is_not_one_is_refused(provision, tmp_path, hardware, wheel):
    err = _image_unchanged_after(provision, tmp_path, hardware, wheel, "--data-size", "lots")
    assert "--data-size 'lots': give a size such as 1G, 512M or 32GB" in err


def test_a_mounted_boot_folder_cannot_have_a_read_only_root(provision, tmp_path, hardware, wheel):
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text(PI_CMDLINE)
    out = provision("--machine", "m-pi", "--boot-dir", str(boot), "--hardware", hardware, "--wheel", wheel,
                    "--read-only-root")
    assert out.returncode == 1 and "--read-only-root needs --image" in out.stderr
    assert os.listdir(boot) == ["cmdline.txt"] and (boot / "cmdline.txt").read_text() == PI_CMDLINE


def test_undo_puts_the_image_back_byte_for_byte(tmp_path):
    """What vendctl does when writing the boot partition fails after the data partition was added."""
    image = pi_image(tmp_path)
    before = sha256(image), os.path.getsize(image)
    data = DataPartition.plan(image, 64 * MIB)
    data.build(str(tmp_path))
    data.apply()
    assert len(partitions(image)) == 3 and probe(image, data.start)["LABEL"] == "vend-data"
    data.undo()
    assert (sha256(image), os.path.getsize(image)) == before


def test_the_data_partitions_mount_unit_passes_systemd_analyze_verify(tmp_path):
    (tmp_path / "var-lib-vend.mount").write_text(data_mount_unit())
    copy_with_stub_programs(tmp_path, "vend-controller.service")
    out = verify(tmp_path, ["var-lib-vend.mount", "vend-controller.service"])
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr
    # A mistake is seen: the unit's name must match the folder it mounts.
    (tmp_path / "var-lib-other.mount").write_text(data_mount_unit())
    assert verify(tmp_path, ["var-lib-other.mount"]).returncode != 0
