"""Time to read a big machine's DEX audit, and to write one from a ledger's events.

    python bench/dex.py --selections 500 --runs 5

The audit is the writer's own, of a ledger with ``--selections`` slots that each sold ``--sales`` times
(every PA1/PA2/PA7 line, an EA1 line per restock); it is read back ``--runs`` times. The baseline, measured
in the same run on the same bytes, is what no reader can avoid: splitting the lines and the G85 CRC.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dex  # noqa: E402
from dex.crc import g85  # noqa: E402
from dex.writer import SlotInfo, write  # noqa: E402
from protocol.messages import GENESIS_HASH, Event  # noqa: E402


def ledger(selections: int, sales: int) -> tuple[list[Event], dict[str, SlotInfo]]:
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    slots = {f"{chr(65 + i // 100 % 26)}{i % 100}": SlotInfo(f"product {i}", 100 + i) for i in range(selections)}
    events, prev, seq = [], GENESIS_HASH, 0
    for code in slots:
        for kind, data in [("restock", {"slot": code, "count": 10})] + \
                [("vend.succeeded", {"order_id": f"o{code}-{n}", "slot": code, "turns": 1}) for n in range(sales)]:
            seq += 1
            e = Event.make(seq, t0 + timedelta(seconds=seq), 1, True, kind, data, prev)
            events.append(e)
            prev = e.hash
    return events, slots


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--selections", type=int, default=500)
    ap.add_argument("--sales", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    events, slots = ledger(args.selections, args.sales)
    now = datetime(2026, 11, 2, tzinfo=timezone.utc)
    write_s = timed(lambda: write(events, machine_id="m-1", slots=slots, currency="EUR", read_at=now), args.runs)
    data = write(events, machine_id="m-1", slots=slots, currency="EUR", read_at=now).encode()
    audit = dex.read(data)
    assert audit.crc == "matched" and audit.paid.count_init == args.selections * args.sales
    read_s = timed(lambda: dex.read(data), args.runs)
    base_s = timed(lambda: g85(data.decode("latin-1").split("\r\n")), args.runs)
    print(json.dumps({
        "benchmark": "dex", "python": platform.python_version(), "selections": args.selections,
        "events": len(events), "bytes": len(data), "lines": len(audit.segments), "runs": args.runs,
        "read_s": round(read_s, 4), "read_mb_per_s": round(len(data) / read_s / 1e6, 2),
        "write_s": round(write_s, 4), "events_written_per_s": round(len(events) / write_s),
        "baseline_split_and_crc_s": round(base_s, 4), "read_over_baseline": round(read_s / base_s, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
