"""System tools some tests need (zbarimg, mtools, cloud-init...): CI installs them all and sets
VEND_REQUIRE_TOOLS=1, which turns a missing one into a failure; on a developer's machine the test is
skipped with the package to install, and the report header lists what was missing."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]  # the repository's root, whatever folder a test is in

PACKAGES = {  # tool -> the Debian package that has it
    "zbarimg": "zbar-tools", "mosquitto": "mosquitto", "mosquitto_passwd": "mosquitto", "sfdisk": "fdisk",
    "mkfs.vfat": "dosfstools", "mcopy": "mtools", "mdir": "mtools", "mtype": "mtools",
    "cloud-init": "cloud-init", "systemd-analyze": "systemd", "openssl": "openssl", "caddy": "caddy",
    "useradd": "passwd", "debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static",
    "unshare": "util-linux", "mount": "mount", "chroot": "coreutils",
}
missing: set[str] = set()


def need(tool: str) -> str:
    """The tool's path; or fail (in CI) or skip (elsewhere) naming the package to install."""
    for folder in ("/usr/sbin", "/sbin"):  # mosquitto and sfdisk live there; a user's PATH may lack them
        if folder not in os.environ["PATH"].split(os.pathsep):
            os.environ["PATH"] += os.pathsep + folder
    path = shutil.which(tool)
    if path:
        return path
    missing.add(tool)
    message = f"{tool} is not installed (sudo apt install {PACKAGES.get(tool, tool)})"
    if os.environ.get("VEND_REQUIRE_TOOLS") == "1":
        pytest.fail(message + "; VEND_REQUIRE_TOOLS=1 makes that a failure")
    pytest.skip(message)


def need_index() -> None:
    """Skip (naming why) a test that fetches from the Python package index when the index cannot be reached;
    VEND_REQUIRE_INDEX=1 makes that a failure. The probe fetches one small wheel the way the test will."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                  "--only-binary=:all:", "--dest", tmp, "pyserial==3.5"],
                                 capture_output=True, text=True, timeout=120)
            why = "" if out.returncode == 0 else (out.stderr.strip().splitlines() or ["pip failed"])[-1]
        except subprocess.TimeoutExpired:
            why = "pip download timed out after 120 s"
    if not why:
        return
    missing.add("the package index")
    message = f"the Python package index cannot be reached: {why}"
    if os.environ.get("VEND_REQUIRE_INDEX") == "1":
        pytest.fail(message + "; VEND_REQUIRE_INDEX=1 makes that a failure")
    pytest.skip(message)
