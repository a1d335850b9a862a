"""What ``bench/chaos.py`` checks, in plain SQL over every machine's ledger and the cloud's database.

Each check adds anomalies (a kind and its evidence) to the run; none raises. ``after_power_cut`` runs at
each power cut, before the controller boots again; ``settle`` waits for the fleet to come to rest after the
faults stop; ``final`` runs over the files once every process is stopped.
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import time

import httpx

from protocol.messages import GENESIS_HASH, event_hash

OPEN = ("created", "authorising", "authorised", "vending")
CAPTURED = ("succeeded", "dropped_charged")
NOT_SOLD = ("failed", "unknown", "rejected", "expired")


def tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def ledger_rows(path: str) -> tuple[str, list[tuple]]:
    """(ledger id, [(seq, ts, boot, clock_synced, kind, data, prev_hash, hash)]) of one ledger file."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        ledger_id = conn.execute("SELECT ledger_id FROM identity").fetchone()[0]
        rows = conn.execute("SELECT seq, ts, boot, clock_synced, kind, data, prev_hash, hash FROM events "
                            "ORDER BY seq").fetchall()
        return ledger_id, rows
    finally:
        conn.close()


def integrity(run, path: str) -> None:
    conn = sqlite3.connect(path, timeout=30)
    try:
        result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    finally:
        conn.close()
    if result != ["ok"]:
        run.anomaly("integrity_check", file=path, result=result[:10])


def verify_chain(run, where: str, rows: list[tuple]) -> None:
    """Seq gapless from 1, each event's hash its content's, each prev_hash the hash before it."""
    prev, expected = GENESIS_HASH, 1
    for seq, ts, boot, synced, kind, data, prev_hash, digest in rows:
        if seq != expected:
            run.anomaly("ledger_gap", ledger=where, expected=expected, found=seq)
            return
        if prev_hash != prev or event_hash(seq, ts, boot, bool(synced), kind, json.loads(data), prev_hash) != digest:
            run.anomaly("hash_chain_broken", ledger=where, seq=seq)
            return
        prev, expected = digest, expected + 1


def bases(run, machine_id: str, first_ledger: str) -> dict[str, int]:
    """Where the cloud stores each of the machine's ledgers: ledger id -> base (its seq n is base + n)."""
    found = {first_ledger: 0}
    for _old, new, base in run.sql("SELECT old_ledger, new_ledger, base FROM ledger_changes WHERE machine_id = :m "
                                   "ORDER BY number", {"m": machine_id}):
        found[new] = base
    return found


def after_power_cut(run, m) -> None:
    """The power went and came back, before the controller boots: nothing it had written and logged is lost,
    nothing the cloud stored (and so acked) is missing, every motor turn has its ``vend.started`` on disk."""
    path = m.m.ledger_path
    integrity(run, path)
    ledger_id, rows = ledger_rows(path)
    verify_chain(run, f"{m.id} after a power cut", rows)
    on_disk = {r[0]: r for r in rows}
    logged = m.logged_events()
    lost = [(seq, kind) for seq, kind in logged if seq not in on_disk or on_disk[seq][4] != kind]
    if lost:
        run.anomaly("power_cut_lost_written_event", machine=m.id, lost=lost[:20], logged=len(logged),
                    on_disk=len(rows))
    base = bases(run, m.id, ledger_rows(m.generations[0])[0] if m.generations else ledger_id).get(ledger_id)
    if base is not None:
        stored = run.sql("SELECT seq, hash FROM events WHERE machine_id = :m AND seq > :b ORDER BY seq",
                         {"m": m.id, "b": base})
        missing = [seq - base for seq, digest in stored if on_disk.get(seq - base, (None,) * 8)[7] != digest]
        if missing:
            run.anomaly("power_cut_lost_acked_event", machine=m.id, seqs=missing[:20], cloud_has=len(stored),
                        on_disk=len(rows))
        run.figures["power_cut_acked_events_checked"] = run.figures.get("power_cut_acked_events_checked", 0) + len(stored)
    turns = collections.Counter()
    try:
        with open(m.trace) as f:
            for line in f:
                turns[line.split()[1]] += 1
    except OSError:
        pass
    started = collections.Counter()
    for generation in [*m.generations, path]:
        for r in ledger_rows(generation)[1]:
            if r[4] == "vend.started":
                started[json.loads(r[5])["slot"]] += 1
    for slot, n in turns.items():
        # A vend turns its motor once, or twice when no drop is seen (the jammed slot): never more.
        if n > 2 * started[slot]:
            run.anomaly("motor_turn_without_vend_started", machine=m.id, slot=slot, motor_turns=n,
                        vend_started_on_disk=started[slot])
    run.figures["power_cut_logged_events_checked"] = run.figures.get("power_cut_logged_events_checked", 0) + len(logged)


def settle(run, timeout: float = 150) -> None:
    """Bring every part back up and wait until every order is settled and every ledger synced."""
    if not run.broker.proc.alive():
        run.broker.start()
    for c in run.clouds:
        if not c.proc.alive():
            c.start()
    for m in run.machines:
        if not m.m.proc.alive():
            m.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_orders = run.sql("SELECT COUNT(*) FROM orders WHERE status IN ('created', 'authorising', 'authorised', "
                              "'vending')")[0][0]
        ops = run.sql("SELECT COUNT(*) FROM sandbox_ops WHERE status NOT IN ('succeeded', 'declined', 'failed', "
                      "'cancelled')")[0][0]
        behind = [m.id for m in run.machines if not run.synced(m)]
        if not open_orders and not ops and not behind:
            break
        time.sleep(1)
    run.figures["settle_s"] = round(timeout - max(0.0, deadline - time.monotonic()), 1)


def final(run) -> None:
    """Every check over the files, with every process stopped."""
    compared = 0
    for m in run.machines:
        files = [*m.generations, m.m.ledger_path]
        generations = []
        for path in files:
            integrity(run, path)
            ledger_id, rows = ledger_rows(path)
            verify_chain(run, path, rows)
            generations.append((ledger_id, rows))
        where = bases(run, m.id, generations[0][0])
        cloud = {r[0]: r for r in run.sql("SELECT seq, kind, hash, prev_hash FROM events WHERE machine_id = :m",
                                          {"m": m.id})}
        claimed = set()
        for (ledger_id, rows), path in zip(generations, files):
            base = where.get(ledger_id)
            if base is None:
                run.anomaly("ledger_unknown_to_cloud", machine=m.id, ledger=path, events=len(rows))
                continue
            for seq, _ts, _boot, _synced, kind, _data, _prev, digest in rows:
                stored = cloud.get(base + seq)
                claimed.add(base + seq)
                if stored is None:
                    run.anomaly("event_missing_in_cloud", machine=m.id, ledger=os.path.basename(path), seq=seq,
                                kind=kind)
                elif stored[2] != digest or stored[1] != kind:
                    run.anomaly("event_hash_mismatch", machine=m.id, ledger=os.path.basename(path), seq=seq,
                                cloud_seq=base + seq, ledger_hash=digest, cloud_hash=stored[2])
                else:
                    compared += 1
        extra = sorted(set(cloud) - claimed)
        if extra:
            run.anomaly("cloud_event_in_no_ledger", machine=m.id, seqs=extra[:20], count=len(extra))
    run.figures["events_compared"] = compared
    run.figures["ledgers"] = sum(len(m.generations) + 1 for m in run.machines)
    run.figures["ledger_changes"] = run.sql("SELECT COUNT(*) FROM ledger_changes")[0][0]
    if run.clouds[0].db_url.startswith("sqlite"):
        integrity(run, run.clouds[0].db_path)
    money(run)


def money(run) -> None:
    """Orders against the machines' events and the payments; wallets against top-ups and captures."""
    orders = {r[0]: r for r in run.sql("SELECT id, customer_id, machine_id, amount, provider, status FROM orders")}
    run.figures["orders"] = dict(collections.Counter(r[5] for r in orders.values()))
    run.figures["orders_total"] = len(orders)
    run.figures["orders_by_provider"] = dict(collections.Counter(r[4] for r in orders.values()))
    vends: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    succeeded_at = {}
    for machine_id, seq, kind, data in run.sql("SELECT machine_id, seq, kind, data FROM events WHERE kind IN "
                                               "('vend.started', 'vend.succeeded', 'vend.failed', 'vend.unknown', "
                                               "'command.rejected')"):
        order_id = json.loads(data).get("order_id")
        if isinstance(order_id, str):
            vends[order_id][kind] += 1
            if kind == "vend.succeeded":
                succeeded_at[(machine_id, seq)] = order_id
    wallet_txns: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for kind, order_id in run.sql("SELECT kind, order_id FROM txns WHERE order_id IS NOT NULL"):
        wallet_txns[order_id][kind] += 1
    sandbox_ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for op, order_id, status in run.sql("SELECT op, order_id, status FROM sandbox_ops"):
        sandbox_ops[order_id][f"{op}:{status}"] += 1
    incidents = {(r[0], r[1]): r for r in run.sql("SELECT machine_id, seq, kind, order_id FROM vend_incidents")}
    drops: dict[str, list] = collections.defaultdict(list)
    for (machine_id, seq), order_id in sorted(succeeded_at.items()):
        drops[order_id].append((machine_id, seq))
    for order_id, seqs in drops.items():
        # One drop of a captured order is its sale; every other drop must be an incident a person sees.
        order = orders.get(order_id)
        paid = 1 if order is not None and order[5] in CAPTURED else 0
        unexplained = [s for s in seqs if s not in incidents]
        if len(unexplained) > paid:
            run.anomaly("drop_unpaid_without_incident", order=order_id, status=order[5] if order else None,
                        drops=[list(s) for s in seqs], incidents=[list(s) for s in seqs if s in incidents])
        if len(seqs) > 1:
            # Goods for free, even when charged once and seen as an incident: a machine must never run one
            # order's vend twice (a new card taking a replayed command for a new one did).
            run.anomaly("order_dropped_twice", order=order_id, status=order[5] if order else None,
                        drops=[list(s) for s in seqs])
    run.figures["incidents"] = dict(collections.Counter(r[2] for r in incidents.values()))
    sandbox_http = httpx.Client(base_url=run.sandbox.url, timeout=10)
    for order_id, (_, customer_id, machine_id, amount, provider, status) in orders.items():
        if status in OPEN:
            run.anomaly("order_left_open", order=order_id, status=status, machine=machine_id)
        if provider == "wallet":
            t = wallet_txns[order_id]
            captures, voids, holds = t["capture"], t["void"], t["authorise"]
        else:
            s = sandbox_ops[order_id]
            captures, voids, holds = s["capture:succeeded"], s["void:succeeded"], s["authorise:succeeded"]
            held = sandbox_http.get(f"/v1/payments/{order_id}")
            platform = held.json().get("status") if held.status_code == 200 else None
            expect = {"captured": status in CAPTURED, "voided": status in NOT_SOLD + ("declined",)}
            if platform == "captured" and not expect["captured"] or status in CAPTURED and platform != "captured":
                run.anomaly("sandbox_disagrees", order=order_id, status=status, sandbox=platform)
            if platform == "authorised" and status not in OPEN:
                run.anomaly("sandbox_hold_never_released", order=order_id, status=status)
        if captures > 1:
            run.anomaly("captured_twice", order=order_id, captures=captures)
        if captures and not vends[order_id]["vend.succeeded"]:
            run.anomaly("capture_without_drop", order=order_id, status=status, events=dict(vends[order_id]))
        if status in CAPTURED and not captures and provider == "wallet":
            run.anomaly("sale_not_captured", order=order_id, status=status)
        if status in NOT_SOLD + ("declined",) and captures:
            run.anomaly("charged_without_sale", order=order_id, status=status)
        if status in NOT_SOLD and holds and not voids:
            run.anomaly("hold_not_voided", order=order_id, status=status, provider=provider)
        if status in NOT_SOLD and vends[order_id]["vend.succeeded"]:
            run.anomaly("dropped_but_marked_not_sold", order=order_id, status=status)
    sandbox_http.close()
    wallets(run, orders)


def wallets(run, orders: dict) -> None:
    """Each wallet customer: wallet + hold = top-ups (and credits) - captures + refunds, and nothing held."""
    balance = collections.defaultdict(int)
    for kind, customer_id, total in run.sql("SELECT a.kind, a.customer_id, SUM(e.amount) FROM entries e JOIN accounts a "
                                            "ON a.id = e.account_id GROUP BY a.kind, a.customer_id"):
        balance[(kind, customer_id)] = int(total)
    paid_in = collections.defaultdict(int)
    refunds = collections.defaultdict(int)
    for kind, customer_id, total in run.sql(
            "SELECT t.kind, a.customer_id, SUM(e.amount) FROM entries e JOIN txns t ON t.id = e.txn_id "
            "JOIN accounts a ON a.id = e.account_id WHERE a.kind = 'wallet' AND t.kind IN ('topup', 'credit', "
            "'refund') GROUP BY t.kind, a.customer_id"):
        (refunds if kind == "refund" else paid_in)[customer_id] += int(total)
    captured = collections.defaultdict(int)
    for _, customer_id, _m, amount, provider, status in orders.values():
        if provider == "wallet" and status in CAPTURED:
            captured[customer_id] += amount
    customers = {c for (kind, c) in balance if kind in ("wallet", "hold")}
    for c in sorted(customers):
        have = balance[("wallet", c)] + balance[("hold", c)]
        expected = paid_in[c] - captured[c] + refunds[c]
        if have != expected or balance[("hold", c)] != 0:
            run.anomaly("wallet_does_not_add_up", customer=c, wallet=balance[("wallet", c)],
                        hold=balance[("hold", c)], topups=paid_in[c], captured=captured[c], refunds=refunds[c])
    unbalanced = run.sql("SELECT txn_id, SUM(amount) FROM entries GROUP BY txn_id HAVING SUM(amount) <> 0")
    if unbalanced:
        run.anomaly("journal_unbalanced", txns=[list(r) for r in unbalanced[:20]])
    run.figures["wallets_checked"] = len(customers)
    run.figures["topped_up"] = sum(paid_in.values())
    run.figures["captured_from_wallets"] = sum(captured.values())
