"""What ``make demo`` brings with it: 90 days of a machine's own ledger, and product pictures drawn here.

The history is written as the machine's ledger file (``controller/ledger.py``: the same events, the same
hash chain, the same slot projection) before its controller first starts; the controller then syncs it to
the cloud as it would any events it had not sent yet, and the cloud stores it through its ordinary ingest.
No row of the cloud's is written behind its back.

Its sales are the machine's **prior** sales: their order ids start with ``prior:``
(``cloud.sales.records.PRIOR_PREFIX``), because no order of this cloud paid for them (they are what the
machine sold before it was sold through this cloud). The cloud stores them as sales at the slot's price,
with no incident, and reconciliation leaves them out: no provider of ours took that money. Every other
morning a technician opens the door and fills the slots that are running low; now and then a spiral jams (a
``vend.failed``), which keeps that slot out of service until the next visit, as on a real machine.
"""

from __future__ import annotations

import io
import os
import random
from datetime import datetime, timedelta, timezone

from controller.ledger import Ledger

DAYS = 90
FIRMWARE = "demo-history"
# Local time of the demo's machines (the cloud runs with --time-zone Asia/Shanghai): UTC+8, no DST.
LOCAL = timezone(timedelta(hours=8))


def write_ledger(path: str, machine_index: int, slots: list[tuple[str, int]], capacity: int, now: datetime,
                 days: int = DAYS) -> dict:
    """Write a new ledger at ``path`` with ``days`` days of one machine's life up to ``now``; refuse to
    touch an existing one. ``slots``: (slot code, popularity weight). Returns counts of what it wrote."""
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists: a machine's ledger is never rewritten")
    rng = random.Random(f"demo-{machine_index}")  # the same history for the same machine, run after run
    tmp = path + ".new"
    for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
        if os.path.exists(leftover):
            os.unlink(leftover)  # a run killed while writing: start that file again
    ledger = Ledger(tmp)
    # The file is renamed into place only when whole; each append's own fsync would make this take
    # seconds for nothing.
    ledger.db.execute("PRAGMA synchronous=OFF")
    counts = {"sales": 0, "jams": 0, "restocks": 0}
    count = {slot: 0 for slot, _ in slots}
    jammed: set[str] = set()
    codes, weights = [slot for slot, _ in slots], [w for _, w in slots]
    busy = 0.6 + 0.25 * machine_index  # some places sell more than others
    first_day = (now.astimezone(LOCAL) - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    ledger.start_boot()
    ledger.append("boot", {"firmware": FIRMWARE}, first_day.replace(hour=7).astimezone(timezone.utc), True)
    n = 0

    def add(kind: str, data: dict, when: datetime) -> None:
        ledger.append(kind, data, when.astimezone(timezone.utc), True)

    def visit(when: datetime) -> None:
        """The technician fills the slots that are below two thirds, and frees a jammed spiral."""
        add("door.opened", {}, when)
        for slot in codes:
            if count[slot] < capacity * 2 // 3 or slot in jammed:
                when += timedelta(seconds=rng.randrange(30, 90))
                add("restock", {"slot": slot, "count": capacity}, when)
                count[slot] = capacity
                counts["restocks"] += 1
        jammed.clear()
        add("door.closed", {}, when + timedelta(seconds=20))

    for day in range(days + 1):
        date = first_day + timedelta(days=day)
        if day % 2 == 0 or day == days:  # the route comes by every other morning, and this morning
            visit(date.replace(hour=8, minute=rng.randrange(0, 30)))
        if day == days:
            break  # today: the morning visit, then the live machine sells
        weekend = date.weekday() >= 5
        sold_today = max(0, int(rng.gauss(14 * busy * (0.7 if weekend else 1.0), 3)))
        minutes = sorted(rng.randrange(9 * 60, 22 * 60) for _ in range(sold_today))
        for minute in minutes:
            when = date + timedelta(minutes=minute, seconds=rng.randrange(60))
            slot = rng.choices(codes, weights)[0]
            if count[slot] == 0 or slot in jammed:
                continue  # a customer who found it sold out or out of service walks away
            n += 1
            order_id, cmd_id = f"prior:{machine_index}-{n}", f"prior-{machine_index}-{n}"
            add("vend.started", {"order_id": order_id, "cmd_id": cmd_id, "slot": slot}, when)
            if rng.random() < 0.004:  # a spiral that jams: nothing drops, the slot is out until the next visit
                add("vend.failed", {"order_id": order_id, "cmd_id": cmd_id, "slot": slot,
                                    "reason": "no drop seen after 2 turns", "turns": 2}, when + timedelta(seconds=9))
                jammed.add(slot)
                counts["jams"] += 1
                continue
            add("vend.succeeded", {"order_id": order_id, "cmd_id": cmd_id, "slot": slot, "turns": 1,
                                   "ms": rng.randrange(900, 1600)}, when + timedelta(seconds=2))
            count[slot] -= 1
            counts["sales"] += 1
    ledger.verify()
    ledger.close()  # the last connection: SQLite folds the WAL into the file
    os.rename(tmp, path)
    return counts


# How each demo product looks: shape, body colour, label colour.
LOOKS = {
    "bottle": ("#2f80c8", "#e8f4ff"),
    "can": ("#c0392b", "#ffffff"),
    "packet": ("#e0a21b", "#5a3200"),
}


def draw_picture(name: str, shape: str, colour: str) -> bytes:
    """A 240x240 PNG of the product: a bottle, a can or a packet in ``colour``, with the name's initial."""
    from PIL import Image, ImageDraw, ImageFont  # Pillow: only the demo draws pictures

    size = 240
    image = Image.new("RGB", (size, size), "#f4f1ea")
    draw = ImageDraw.Draw(image)
    label = LOOKS[shape][1]
    if shape == "bottle":
        draw.rounded_rectangle((100, 18, 140, 50), 6, fill="#dddddd", outline="#555555", width=3)  # cap
        draw.polygon([(96, 50), (144, 50), (170, 92), (70, 92)], fill=colour, outline="#333333")
        draw.rounded_rectangle((70, 88, 170, 222), 18, fill=colour, outline="#333333", width=3)
        box = (76, 120, 164, 190)
    elif shape == "can":
        draw.ellipse((62, 26, 178, 56), fill="#cfcfcf", outline="#555555", width=3)
        draw.rectangle((62, 41, 178, 204), fill=colour)
        draw.ellipse((62, 189, 178, 219), fill=colour, outline="#333333", width=3)
        draw.line((62, 41, 62, 204), fill="#333333", width=3)
        draw.line((178, 41, 178, 204), fill="#333333", width=3)
        box = (70, 90, 170, 170)
    else:
        draw.polygon([(50, 30), (190, 30), (200, 210), (40, 210)], fill=colour, outline="#333333")
        for x in range(54, 190, 12):  # the crimped seals
            draw.line((x, 30, x + 6, 40), fill="#333333", width=2)
            draw.line((x - 4, 210, x + 2, 200), fill="#333333", width=2)
        box = (66, 80, 174, 170)
    draw.ellipse(box, fill=label, outline="#333333", width=2)
    font = ImageFont.load_default(size=56)
    initial = name[:1].upper()
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    draw.text((cx, cy), initial, fill=colour if label != "#5a3200" else "#ffffff", font=font, anchor="mm")
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()
