"""The fault run, short: ``bench/chaos.py`` for about a minute with every fault kind at least once, and not
one anomaly in its checks (every ledger event in the cloud once with its hash, every capture with its drop,
every unsold order voided, wallets that add up, chains and SQLite files intact, nothing lost to a power
cut). The long runs (``--minutes 20``, on PostgreSQL, with two clouds) are in docs/benchmarks.md."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys

from datetime import datetime, timezone

import pytest

from controller.ledger import Ledger
from tests.e2e.harness import broker_kind

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import _chaos_checks as checks  # noqa: E402  (bench/ is not a package)
KINDS = ("controller_kill", "cloud_kill", "broker_restart", "broker_outage", "replay", "garbage", "clock_jump",
         "ledger_replace", "power_cut")


def test_a_minute_of_every_fault_leaves_no_anomaly():
    if broker_kind() != "mosquitto":
        if os.environ.get("VEND_REQUIRE_MOSQUITTO") == "1":
            pytest.fail("VEND_REQUIRE_MOSQUITTO=1 but mosquitto is not installed")
        pytest.skip("the fault run restarts Mosquitto (apt install mosquitto)")
    if not (shutil.which("cc") or shutil.which("gcc")):
        if os.environ.get("VEND_REQUIRE_TOOLS") == "1":
            pytest.fail("VEND_REQUIRE_TOOLS=1 but there is no C compiler for the power-cut library (apt install gcc)")
        pytest.skip("the power-cut library needs a C compiler (apt install gcc)")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "chaos.py"), "--minutes", "0.9",
                           "--machines", "2", "--seed", "13", "--pace", "2", "--every-kind-first"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.stdout.strip(), f"no summary (exit {done.returncode}):\n{done.stderr[-3000:]}"
    summary = json.loads(done.stdout)
    assert summary["anomalies"] == [], json.dumps(summary["anomalies"], indent=2)[:6000]
    assert done.returncode == 0, done.stderr[-3000:]
    missing = [k for k in KINDS if not summary["faults"].get(k)]
    assert not missing, f"fault kinds never injected: {missing} (skipped: {summary['faults_skipped']})"
    assert summary["faults"].get("controller_kill_mid_vend", 0) + summary["faults"].get("power_cut_mid_vend", 0) >= 1
    # The checks had something to check: sales captured, failures voided, events compared, a cut checked.
    assert summary["orders"].get("succeeded", 0) > 0 and summary["events_compared"] > 100
    assert summary["power_cut_logged_events_checked"] > 0 and summary["ledger_changes"] >= 1


class Run:
    """What the checks need of a run: somewhere to put anomalies."""

    def __init__(self):
        self.anomalies = []

    def anomaly(self, kind, **evidence):
        self.anomalies.append({"kind": kind, **evidence})


def test_the_checks_see_a_ledger_tampered_with_or_cut_short(tmp_path):
    path = str(tmp_path / "ledger.db")
    ledger = Ledger(path)
    for n in range(3):
        ledger.append("restock", {"slot": "A1", "count": n}, datetime.now(timezone.utc), False)
    ledger.close()
    run = Run()
    checks.verify_chain(run, path, checks.ledger_rows(path)[1])
    checks.integrity(run, path)
    assert run.anomalies == []
    conn = sqlite3.connect(path)
    conn.execute("UPDATE events SET data = '{\"slot\":\"A1\",\"count\":7}' WHERE seq = 2")
    conn.commit()
    checks.verify_chain(run, path, checks.ledger_rows(path)[1])
    conn.execute("DELETE FROM events WHERE seq = 2")
    conn.commit()
    conn.close()
    checks.verify_chain(run, path, checks.ledger_rows(path)[1])
    assert [a["kind"] for a in run.anomalies] == ["hash_chain_broken", "ledger_gap"]
