"""A tiny wheelhouse for the provisioning tests: wheels that pip's resolver takes (name, version, tags,
requirements), with nothing inside, so no test downloads from the package index."""

from __future__ import annotations

import os
import zipfile

# What the controller's wheel needs on a machine (setup.cfg: install_requires, [controller], [pi] less the pin
# libraries), with pillow as the one wheel built per Python and CPU, as on PyPI.
PURE = [("paho_mqtt", "2.2.0"), ("sqlite_utils", "4.2.1"), ("qrcode", "8.2"), ("pyserial", "3.5"),
        ("gpiozero", "2.0.1")]
PILLOW = "11.3.0"


def fake_wheel(folder: str, name: str, version: str, tag: str = "py3-none-any", requires: tuple[str, ...] = ()) -> str:
    """One wheel file with only its metadata."""
    path = os.path.join(folder, f"{name}-{version}-{tag}.whl")
    info = f"{name}-{version}.dist-info"
    extras = sorted({r.split("extra ==")[1].strip(' "\'') for r in requires if "extra ==" in r})
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Provides-Extra: {e}\n" for e in extras) + "".join(f"Requires-Dist: {r}\n" for r in requires)
    python, abi, platform = tag.split("-")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{info}/METADATA", meta)
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: "
                                    f"{'true' if platform == 'any' else 'false'}\nTag: {tag}\n")
        z.writestr(f"{info}/RECORD", f"{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    return path


def make_wheelhouse(folder: str, pillow_tags=("cp313-cp313-manylinux_2_28_aarch64",
                                              "cp311-cp311-manylinux_2_28_aarch64")) -> str:
    """The controller's requirements as fake wheels; pillow only for the tags given (arm64 by default)."""
    os.makedirs(folder, exist_ok=True)
    for name, version in PURE:
        fake_wheel(folder, name, version)
    for tag in pillow_tags:
        fake_wheel(folder, "pillow", PILLOW, tag)
    return folder
