"""Session-wide test settings: say which broker and which databases the tests run against."""

from tests.cloud_fixtures import db_url, empty_db_url, engine, postgres_reachable  # noqa: F401  (fixtures for every module)
from tests.e2e.harness import broker_kind
from tests.tools import missing  # the one tests.tools every test's need() adds to


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
