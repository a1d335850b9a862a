"""What every benchmark starts: a broker and a cloud in a scratch folder, stopped and removed at the end."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))

from harness import Broker, Cloud, broker_kind  # noqa: E402,F401  (broker_kind: for the benchmarks)


@contextmanager
def fleet(kind: str, **cloud_options):
    """Yield (work folder, broker, cloud), all running; stop and remove them whatever happens."""
    work = tempfile.mkdtemp(prefix="vend-bench-")
    broker = Broker(kind, os.path.join(work, "broker"))
    cloud = Cloud(broker, work, **cloud_options)
    try:
        broker.start()
        cloud.start()
        yield work, broker, cloud
    finally:
        cloud.stop()
        broker.stop()
        if not os.environ.get("VEND_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
