"""Session-wide test settings: say which broker and which databases the tests run against."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "e2e"))

from cloud_fixtures import db_url, engine, postgres_reachable  # noqa: E402,F401  (fixtures for every module)
from harness import broker_kind  # noqa: E402
from tools import missing  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    if missing:
        terminalreporter.write_line(f"skipped for want of system tools: {', '.join(sorted(missing))} "
                                    "(CI installs them and sets VEND_REQUIRE_TOOLS=1)", yellow=True)


def pytest_report_header(config):
    kind = broker_kind()
    note = "" if kind == "mosquitto" else " (mosquitto not found; VEND_REQUIRE_MOSQUITTO=1 makes that a failure)"
    why = postgres_reachable()
    return [f"end-to-end broker: {kind}{note}",
            "databases: SQLite and PostgreSQL" if not why else f"databases: SQLite only ({why})"]
