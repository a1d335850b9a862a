"""System tools some tests need (zbarimg, mtools, cloud-init...): CI installs them all and sets
VEND_REQUIRE_TOOLS=1, which turns a missing one into a failure; on a developer's machine the test is
skipped with the package to install, and the report header lists what was missing."""

from __future__ import annotations

import os
import shutil

import pytest

PACKAGES = {  # tool -> the Debian package that has it
    "zbarimg": "zbar-tools",
}
missing: set[str] = set()


def need(tool: str) -> str:
    """The tool's path; or fail (in CI) or skip (elsewhere) naming the package to install."""
    path = shutil.which(tool) or (os.path.exists(f"/usr/sbin/{tool}") and f"/usr/sbin/{tool}")
    if path:
        return path
    missing.add(tool)
    message = f"{tool} is not installed (sudo apt install {PACKAGES.get(tool, tool)})"
    if os.environ.get("VEND_REQUIRE_TOOLS") == "1":
        pytest.fail(message + "; VEND_REQUIRE_TOOLS=1 makes that a failure")
    pytest.skip(message)
