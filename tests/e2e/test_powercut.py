"""The power-cut library (bench/powercut.c) loses exactly the writes that were not synced, so the fault
run's power cuts prove something: the controller's ledger, written through its own code, keeps every event
``append`` returned; the same ledger with fsync turned down loses them, and the cut shows it."""

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import _powercut as powercut  # noqa: E402

# A child process: the controller's Ledger appends events, says each one it got back, then the power goes.
CHILD = """
import os, signal, sys
from datetime import datetime, timezone
sys.path.insert(0, {root!r})
from controller.ledger import Ledger
ledger = Ledger(sys.argv[1])
if sys.argv[2] != "FULL":
    ledger.db.execute("PRAGMA synchronous=" + sys.argv[2])  # what a careless change would do
ledger.start_boot()
for i in range(40):
    event = ledger.append("restock", {{"slot": "A1", "count": i}}, datetime.now(timezone.utc), False)
    print(event.seq, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    if not (shutil.which("cc") or shutil.which("gcc")):
        if os.environ.get("VEND_REQUIRE_TOOLS") == "1":
            pytest.fail("VEND_REQUIRE_TOOLS=1 but there is no C compiler (apt install gcc)")
        pytest.skip("the power-cut library needs a C compiler (apt install gcc)")
    return powercut.build(str(tmp_path_factory.mktemp("lib")))


def cut(library, tmp_path, synchronous: str) -> tuple[list[int], list[int]]:
    """(seqs the ledger said it wrote, seqs on disk after the power cut)."""
    path = str(tmp_path / "ledger.db")
    shadow = str(tmp_path / "shadow")
    child = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT), path, synchronous], capture_output=True,
                           text=True, env={**os.environ, **powercut.env(library, path, shadow)}, timeout=60)
    assert child.returncode == -9, child.stderr
    written = [int(line) for line in child.stdout.split()]
    assert len(written) == 40
    powercut.restore(path, shadow)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        on_disk = [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
    except sqlite3.OperationalError:  # the table itself was never synced
        on_disk = []
    finally:
        conn.close()
    return written, on_disk


def test_the_ledger_keeps_every_event_append_returned_through_a_power_cut(library, tmp_path):
    written, on_disk = cut(library, tmp_path, "FULL")
    assert on_disk == written


def test_a_ledger_that_does_not_sync_loses_events_to_the_power_cut(library, tmp_path):
    # SIGKILL alone would keep them all (the page cache survives a process): the cut is what tells.
    written, on_disk = cut(library, tmp_path, "OFF")
    assert len(on_disk) < len(written)
