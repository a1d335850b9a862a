"""A Debian root of another CPU (arm64: a 64-bit Raspberry Pi's), run on this computer under qemu-user, for
rehearsing a machine's first boot without a Pi.

The root is made once per machine and kept (``~/.cache/vend-tests/``, keyed by release, architecture and
package list; ``VEND_TEST_CACHE`` moves it): ``debootstrap --foreign``, then its second stage inside the
root under qemu, with the packages Raspberry Pi OS Lite has that a card's first boot uses. The network is
needed only then. A lock keeps two runs from building it at once. Each test works on a copy; the cache is
never written after it is made.

Running anything inside needs root (chroot, mount, unshare), ``qemu-user-static`` registered with
binfmt_misc (the ``F`` flag, so the emulator is found from inside the root), and ``debootstrap``.
``VEND_REQUIRE_FIRST_BOOT=1`` (set by .ci/run) makes a missing one a failure instead of a skip.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest

from tests.tools import missing, need

# What Raspberry Pi OS Lite has that a card's first boot uses: Python with venv (the controller's venv),
# cloud-init (reads the card), systemd (systemctl enable/mask), systemd-timesyncd (cloud-init's ntp module
# with the card's --ntp), openssh-server (the recovery login), sudo (the login's sudo rule).
PACKAGES = ("python3", "python3-venv", "cloud-init", "systemd", "systemd-sysv", "systemd-timesyncd",
            "openssh-server", "sudo")
QEMU = {"arm64": "aarch64", "armhf": "arm"}
CACHE = os.environ.get("VEND_TEST_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vend-tests")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def require(ok: bool, why: str) -> None:
    """Skip naming ``why``, or fail with VEND_REQUIRE_FIRST_BOOT=1."""
    if ok:
        return
    missing.add("an arm64 root under qemu")
    if os.environ.get("VEND_REQUIRE_FIRST_BOOT") == "1":
        pytest.fail(f"{why}; VEND_REQUIRE_FIRST_BOOT=1 makes that a failure")
    pytest.skip(why)


def need_emulation(arch: str = "arm64") -> None:
    """Everything running a root of ``arch`` here needs, or skip/fail naming what is missing and how to get it."""
    require(os.geteuid() == 0, "rehearsing a first boot needs root (chroot, mount, unshare), as CI runs")
    for tool in ("debootstrap", "chroot", "unshare", "mount", f"qemu-{QEMU[arch]}-static"):
        need(tool)
    entry = f"/proc/sys/fs/binfmt_misc/qemu-{QEMU[arch]}"
    try:
        with open(entry) as f:
            registered = f.read()
    except OSError:
        registered = ""
    require(registered.startswith("enabled"),
            f"{arch} programs do not run here: {entry} is not enabled (apt-get install qemu-user-static "
            "binfmt-support; mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable "
            f"qemu-{QEMU[arch]})")
    require("flags: " in registered and "F" in registered.split("flags: ", 1)[1].split()[0],
            f"{entry} lacks the F flag: the emulator is not found from inside a root (use Debian's "
            "qemu-user-static, whose binfmt entries have it)")


def mirror() -> str:
    """The Debian mirror this computer's apt uses (a CI box's own), else deb.debian.org."""
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        found = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", text, re.M)
        if found:
            return found.group(1)
    return DEFAULT_MIRROR


def _key(release: str, arch: str) -> str:
    return f"debian-{release}-{arch}-" + hashlib.sha256(" ".join(PACKAGES).encode()).hexdigest()[:8]


def cached_root(release: str = "bookworm", arch: str = "arm64") -> str:
    """The path of a ready root (made now if this machine has none); never to be written to."""
    os.makedirs(CACHE, exist_ok=True)
    key = _key(release, arch)
    root, ready = os.path.join(CACHE, key), os.path.join(CACHE, key + ".ready")
    with open(os.path.join(CACHE, key + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits here for the first one's root
        if not os.path.exists(ready):
            _build(root, release, arch)
            with open(ready, "w") as f:
                f.write(f"{release} {arch} {' '.join(PACKAGES)}\n")
    return root


def _build(root: str, release: str, arch: str) -> None:
    work = root + ".building"
    for path in (work, root):
        if os.path.exists(path):
            shutil.rmtree(path)
    log = root + ".log"
    started = time.monotonic()
    with open(log, "w") as out:
        first = subprocess.run(["debootstrap", "--variant=minbase", f"--arch={arch}", "--foreign", release, work,
                                mirror()], stdout=out, stderr=subprocess.STDOUT)
    if first.returncode != 0:
        require(False, f"debootstrap could not fetch Debian {release} {arch} from {mirror()} (the network is "
                       f"needed once, to make the cached root): {_tail(log)}")
    # The second stage, then the packages with apt (debootstrap's own resolver does not follow virtual
    # packages such as python3-cryptography's), both inside the root under qemu.
    steps = (["chroot", work, "/debootstrap/debootstrap", "--second-stage"],
             ["chroot", work, "apt-get", "update", "-q"],
             ["chroot", work, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
             ["chroot", work, "apt-get", "clean"])
    for argv in steps:
        if argv[2] == "apt-get":
            shutil.copy("/etc/resolv.conf", os.path.join(work, "etc/resolv.conf"))  # this computer's DNS, for apt
            with open(os.path.join(work, "usr/sbin/policy-rc.d"), "w") as f:
                f.write("#!/bin/sh\nexit 101\n")  # no service starts in the root while it is being made
            os.chmod(os.path.join(work, "usr/sbin/policy-rc.d"), 0o755)
        with open(log, "a") as out:
            out.write(f"$ {shlex.join(argv)}\n")
            out.flush()
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                                       "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            raise AssertionError(f"making the {arch} root: {shlex.join(argv[2:])} failed (log {log}):\n{_tail(log)}")
    os.unlink(os.path.join(work, "usr/sbin/policy-rc.d"))
    os.rename(work, root)
    with open(log, "a") as out:
        out.write(f"built in {time.monotonic() - started:.0f} s\n")


def _tail(path: str, lines: int = 15) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def copy_root(cached: str, dest: str) -> str:
    """A throwaway copy of the cached root to boot (owners, modes, links and device nodes kept)."""
    subprocess.run(["cp", "-a", cached, dest], check=True)
    return dest


def _script(root: str, command: str, network: bool, user: str = "") -> list[str]:
    """argv that runs ``command`` (sh) inside ``root`` in a mount namespace of its own, so the mounts go
    away with it; without the network (a namespace with only a loopback that is down) unless ``network``."""
    r = shlex.quote(root)
    mounts = (f"mount -t proc proc {r}/proc && mount -t sysfs sysfs {r}/sys && mount --rbind /dev {r}/dev && "
              f"mount -t tmpfs -o mode=0755 tmpfs {r}/run && mkdir -p {r}/run/systemd/system")
    # /run/systemd/system: what a system booted by systemd has, and how cloud-init tells (it then uses systemctl)
    chroot = ["chroot", *([f"--userspec={user}:{user}"] if user else []), root, "/bin/sh", "-c", command]
    # Its own host name (cloud-init sets one), processes and IPC too; sh stays PID 1 outside the root, so
    # systemctl inside sees a chroot and only edits files (enable, mask), as it does in an image build.
    return ["unshare", "--mount", "--propagation", "private", "--uts", "--ipc", "--pid", "--fork",
            *(() if network else ("--net",)),
            "sh", "-c", f"{mounts} && {shlex.join(chroot)}"]


def run_in(root: str, command: str, *, network: bool = False, user: str = "",
           timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``command`` inside the root as it would on the Pi (emulated), and wait for it."""
    return subprocess.run(_script(root, command, network, user), capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                               "LANG": "C.UTF-8"})


class Running:
    """A long-lived process inside the root, in a process group of its own so that stopping it stops the
    emulated program too."""

    def __init__(self, root: str, command: str, log_path: str, *, network: bool = True, user: str = ""):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(_script(root, command, network, user), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
