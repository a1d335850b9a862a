"""The offline card's Python packages: a wheelhouse for the Pi's CPU and Python, so its first boot needs no
package index and no apt.

The wheels are fetched once into a folder on the technician's (or the cloud's) side with ``pip download
--only-binary=:all:`` for the Pi's platform, and kept there. Before a card is written, pip's own resolver
installs the controller from that folder in a dry run for the Pi's platform, with no index; what it would
install is exactly what goes on the card, and the first boot runs the same install with ``--no-index``.

PyPI has no 32-bit ARM (armv7l) build of pillow; piwheels (``PIWHEELS``) builds armv7l wheels for Raspberry Pi
OS's Pythons. ``--wheel-index URL`` adds such an index to the download (``pip download --extra-index-url``),
with the same ``--only-binary=:all:`` and the Pi's platform tags; what it brings is kept in the wheelhouse like
the rest.

The pin libraries (lgpio, RPi.GPIO or rpi-lgpio) are not fetched: PyPI has no ARM wheel of lgpio 0.2 (an
``--only-binary`` download silently takes the empty placeholder lgpio 0.0.0.2), and Raspberry Pi OS ships
them (``python3-lgpio``, ``python3-rpi-lgpio``); the card's venv is made with ``--system-site-packages``.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

from cloud.provisioning.cloudinit import CardError

# Raspberry Pi OS releases: their Python and glibc (what manylinux tags a wheel may carry to run there).
RELEASES = {"bookworm": ("3.11", 36), "trixie": ("3.13", 41)}
# Debian's architecture name -> the wheel tags' machine name.
ARCHES = {"arm64": "aarch64", "armhf": "armv7l"}
# From the OS, never the wheelhouse (see the module's docstring).
OS_PIN_LIBRARIES = {"lgpio", "rpi-gpio", "rpi-lgpio"}
PIWHEELS = "https://www.piwheels.org/simple"
DEFAULT_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                             "vend-fleet", "wheelhouse")


@dataclass(frozen=True)
class Target:
    """The Pi a card is for: its Raspberry Pi OS release and CPU architecture."""

    release: str
    arch: str

    @property
    def python(self) -> str:
        return RELEASES[self.release][0]

    def describe(self) -> str:
        return f"Raspberry Pi OS {self.release} {self.arch} (CPython {self.python}, {ARCHES[self.arch]})"

    def pip_options(self) -> list[str]:
        """pip's options that make it pick wheels for this Pi instead of this computer."""
        machine, glibc = ARCHES[self.arch], RELEASES[self.release][1]
        # pip does not widen a manylinux_2_Y platform to older glibc levels: every level is named.
        platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(17, glibc + 1)]
        platforms += [f"manylinux2014_{machine}", f"linux_{machine}"]  # linux_*: a wheel built on a Pi (piwheels)
        options = ["--only-binary=:all:", "--python-version", self.python, "--implementation", "cp"]
        for platform in platforms:
            options += ["--platform", platform]
        return options


def _requires(wheel: str, extra: str) -> list[str]:
    """The wheel's requirements for ``extra`` ("" for the ones without an extra), from its METADATA."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(name).decode())
    found = []
    for line in meta.get_all("Requires-Dist") or ():
        spec, _, marker = line.partition(";")
        of_extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if (of_extra.group(1) if of_extra else "") == extra:
            found.append(spec.strip().replace(" ", ""))
    return found


def _project(spec: str) -> str:
    return _canonical(re.match(r"[A-Za-z0-9._-]+", spec).group(0))


def requirements(wheel: str) -> list[str]:
    """What the controller needs on a machine: the wheel with its ``controller`` extra, and the ``pi`` extra's
    requirements but the pin libraries, which come from the OS."""
    return [f"{wheel}[controller]", *(r for r in _requires(wheel, "pi") if _project(r) not in OS_PIN_LIBRARIES)]


def _canonical(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()


def _isolated_env() -> dict:
    """pip without this computer's own configuration: only the wheelhouse counts, as on the Pi."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _pip(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)


def _missing(stderr: str) -> str:
    """The requirement pip could not satisfy, from its error text."""
    found = re.search(r"satisfies the requirement (\S+(?: \(from [^)]*\))?)", stderr)
    return found.group(1) if found else stderr.strip().splitlines()[-1] if stderr.strip() else "(pip said nothing)"


def resolve(folder: str, wheel: str, target: Target) -> list[str]:
    """The wheel files of ``folder`` that installing the controller on ``target`` takes, found by pip's resolver
    with no index; CardError naming what is missing otherwise."""
    with tempfile.TemporaryDirectory(prefix="vend-resolve-") as tmp:
        report = os.path.join(tmp, "report.json")
        out = _pip(["install", "--dry-run", "--ignore-installed", "--no-index", "--find-links", folder,
                    "--target", os.path.join(tmp, "target"), "--report", report, "--quiet",
                    *target.pip_options(), *requirements(wheel)], env=_isolated_env())
        if out.returncode != 0:
            raise CardError(f"the wheelhouse {folder} has no wheel of {_missing(out.stderr)} for "
                            f"{target.describe()}{_hint(target)}")
        with open(report) as f:
            installs = json.load(f)["install"]
    files = []
    for item in installs:
        url = item["download_info"]["url"]
        if not url.startswith("file://"):
            raise CardError(f"pip would fetch {url} for {target.describe()}: not from the wheelhouse")
        path = url[len("file://"):]
        if os.path.abspath(path) == os.path.abspath(wheel):
            continue
        if _canonical(item["metadata"]["name"]) in OS_PIN_LIBRARIES:
            raise CardError(f"the controller's requirements pull in {item['metadata']['name']}, a pin library that "
                            "must come from Raspberry Pi OS (PyPI's ARM lgpio is an empty placeholder)")
        files.append(path)
    return sorted(files)


def check_indexes(urls: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The extra wheel indexes, as http(s) URLs of a simple index (PEP 503)."""
    for url in urls:
        if not re.match(r"^https?://[^\s/]+(/\S*)?\Z", url):
            raise CardError(f"--wheel-index {url!r}: give the URL of a simple package index, such as {PIWHEELS}")
    return tuple(urls)


def _hint(target: Target, indexes: tuple[str, ...] = ()) -> str:
    if target.arch == "armhf" and PIWHEELS not in (url.rstrip("/") for url in indexes):
        return (f". PyPI has no 32-bit ARM (armv7l) pillow: add --wheel-index {PIWHEELS} (piwheels builds them), or "
                "make an --online card")
    return ""


def download(folder: str, wheel: str, target: Target, indexes: tuple[str, ...] = ()) -> None:
    """Fetch into ``folder`` the wheels the controller needs on ``target`` (pip keeps what is there), from the
    package index and the extra ``indexes``."""
    os.makedirs(folder, exist_ok=True)
    # The controller's own wheel is not on the index: its requirements are fetched, with theirs.
    wanted = _requires(wheel, "") + _requires(wheel, "controller") + requirements(wheel)[1:]
    extra = [option for url in indexes for option in ("--extra-index-url", url)]
    out = _pip(["download", "--quiet", "--dest", folder, *extra, *target.pip_options(), *wanted])
    if out.returncode != 0:
        where = "the package index" + "".join(f" or {url}" for url in indexes)
        raise CardError(f"fetching the wheels for {target.describe()} failed: {_missing(out.stderr)} "
                        f"has no wheel for that platform on {where}, or it cannot be reached{_hint(target, indexes)}. "
                        "Put the wheels in the wheelhouse by hand (--wheelhouse), or make a card that installs "
                        "from the internet at first boot (--online)")


def wheels_for(folder: str, wheel: str, target: Target, fetch: bool, indexes: tuple[str, ...] = ()) -> list[str]:
    """The wheel files for the card: from the wheelhouse as it is, or after fetching what it lacks."""
    if os.path.isdir(folder):
        try:
            return resolve(folder, wheel, target)
        except CardError:
            if not fetch:
                raise
    elif not fetch:
        raise CardError(f"no wheelhouse {folder}: make it by running vendctl provision without --no-download, "
                        "on a computer that reaches the package index")
    download(folder, wheel, target, indexes)
    return resolve(folder, wheel, target)
