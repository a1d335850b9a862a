"""Repository-root pytest setup: lets the helpers that are still imported by bare name keep working now
that ``tests/`` is a package.

tests/conftest.py and the cloud's tests say ``from cloud_fixtures import ...`` and ``from tools import ...``;
the machine's tests say ``from tests.tools import ...``. The folder goes at the end of the path, never the
front: ``tests/controller`` and ``tests/hw`` must not hide the real ``controller`` and ``hw`` packages. Once
every test imports ``tests.X``, this file goes.
"""

import os
import sys

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))

import tests.tools  # noqa: E402

# One module under both names, so the report's list of missing system tools counts every test's skips.
sys.modules.setdefault("tools", tests.tools)
