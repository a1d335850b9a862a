"""A vend command is judged by a clock the machine can trust: a fresh card whose wall clock is unset must not
take a replayed command for a new one (the fault run's ledger_replace with a stepped clock: the new ledger
does not know the command's id, and its expiry was read against a clock days off, so it vended twice)."""

from datetime import datetime, timedelta, timezone

from controller.inbox import MqttMessage
from protocol import topics
from protocol.messages import Ack, Command, CommandResult, format_time

from .test_controller_planogram import Clock, Link, hear_cloud, make

A_WEEK = 7 * 24 * 3600


def vend_command(cmd_id: str, order_id: str, issued: datetime) -> Command:
    return Command(cmd_id, "vend", format_time(issued), format_time(issued + timedelta(seconds=30)),
                   {"order_id": order_id, "slot": "A1"})


def started(c, order_id: str) -> list:
    return [e for e in c.ledger.read(1, 1000) if e.kind == "vend.started" and e.data["order_id"] == order_id]


def test_a_fresh_card_with_its_clock_a_week_behind_refuses_a_replayed_command_until_the_cloud_speaks(tmp_path):
    clock = Clock()
    c = make(tmp_path, clock)
    c.link = Link()
    try:
        c.ledger.append("restock", {"slot": "A1", "count": 5}, datetime.now(timezone.utc), True)
        # A command the old card ran a week ago, replayed: by the unset clock it is fresh.
        old = vend_command("v-o-1", "o-1", datetime.fromtimestamp(clock.wallclock(), timezone.utc))
        c.handle(MqttMessage(topics.topic("pm-1", "cmd"), old.encode()))
        assert started(c, "o-1") == []
        (rejected,) = [e.data for e in c.ledger.read(1, 1000) if e.kind == "command.rejected"]
        assert rejected["cmd_id"] == "v-o-1"
        assert rejected["reason"] == "clock not set: no word from the cloud or NTP since the start"
        result = CommandResult.decode([p for k, p, _ in c.link.sent if k == "cmd/result"][-1])
        assert (result.status, result.reason) == ("rejected", rejected["reason"])

        # The cloud's time arrives (a week ahead of the card's clock): the same replay is now expired...
        hear_cloud(c, clock, ahead_s=A_WEEK)
        again = vend_command("v-o-2", "o-2", datetime.fromtimestamp(clock.wallclock(), timezone.utc))
        assert c.refusal(again) == "expired"
        # ...and a command the cloud issues now runs.
        now = datetime.fromtimestamp(clock.wallclock() + A_WEEK, timezone.utc)
        c.handle(MqttMessage(topics.topic("pm-1", "cmd"), vend_command("v-o-3", "o-3", now).encode()))
        assert len(started(c, "o-3")) == 1
        c.safe_state()
    finally:
        c.hardware.close()
        c.ledger.close()


def test_ntp_alone_is_enough_to_judge_a_command(tmp_path):
    clock = Clock()
    c = make(tmp_path, clock)
    try:
        c.ledger.append("restock", {"slot": "A1", "count": 5}, datetime.now(timezone.utc), True)
        (tmp_path / "no-ntp-flag").write_text("")  # systemd-timesyncd's flag: NTP has set the clock
        cmd = vend_command("v-o-4", "o-4", datetime.fromtimestamp(clock.wallclock(), timezone.utc))
        assert c.refusal(cmd) == ""
    finally:
        c.hardware.close()
        c.ledger.close()


def test_a_new_card_refuses_a_command_issued_before_it_started_which_the_old_card_may_have_run(tmp_path):
    clock = Clock()
    clock.t = 5000.0
    c = make(tmp_path, clock)  # a new card: its ledger is made now
    try:
        c.ledger.append("restock", {"slot": "A1", "count": 5}, datetime.now(timezone.utc), True)
        start = datetime.fromtimestamp(clock.wallclock(), timezone.utc)
        # An ack queued in the broker for the card it replaced (another ledger), then one of this ledger from
        # before this process wrote anything: neither proves the time, so vends are still refused.
        c.on_ack(Ack(40, format_time(start - timedelta(seconds=20)), "f" * 32))
        c.on_ack(Ack(0, format_time(start - timedelta(seconds=20))))
        assert c.refusal(vend_command("v-o-4", "o-4", start)).startswith("clock not set")
        clock.t += 3
        hear_cloud(c, clock)  # the ack of the events this process wrote: sent after the start
        # Sent to the old card 5 s before the new one started, still inside its 30 s: replayed now.
        old = vend_command("v-o-5", "o-5", start - timedelta(seconds=5))
        assert c.refusal(old) == "issued before this ledger began: the card it replaced may have run it"
        assert c.ledger.commands_from == int(start.timestamp()) + 3
        # One the cloud sent after that ack is this card's own.
        assert c.refusal(vend_command("v-o-6", "o-6", start + timedelta(seconds=4))) == ""
    finally:
        c.hardware.close()
        c.ledger.close()
    # The same card restarted: a command issued while it was down, never seen, is still its own to run.
    clock.t += 60
    again = make(tmp_path, clock)
    try:
        again.record("boot", {"firmware": "test", "slots": ["A1"]})
        hear_cloud(again, clock)
        queued = vend_command("v-o-7", "o-7", datetime.fromtimestamp(clock.wallclock() - 10, timezone.utc))
        assert again.refusal(queued) == ""
    finally:
        again.hardware.close()
        again.ledger.close()


def test_a_ledger_that_held_events_before_the_mark_existed_refuses_nothing_for_it(tmp_path):
    import sqlite_utils
    from controller.ledger import Ledger, migrations

    path = str(tmp_path / "old.db")
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="0005_commands_from")
    db.execute("INSERT INTO events VALUES (1, '2024-05-01T12:00:00.000000+00:00', 1, 1, 'boot', '{}', ?, ?)",
               ["0" * 64, "f" * 64])
    db.conn.commit()
    db.close()
    ledger = Ledger(path)
    try:
        assert ledger.commands_from == 1
        assert ledger.pin_commands_from(2_000_000_000) == 1  # pinned already: kept
    finally:
        ledger.close()
    fresh = Ledger(str(tmp_path / "new.db"))
    try:
        assert fresh.commands_from == 0
        assert fresh.pin_commands_from(1_700_000_000.7) == 1_700_000_000
    finally:
        fresh.close()
